/**
 * Which backend each output `type` gets: the one place that knows them all.
 *
 * @module
 */
import type { OutputConfig } from "../../shared/config/outputs.ts";
import { createAmqpBackend } from "./amqp.ts";
import type { Backend, BackendDeps } from "./backend.ts";
import { createFileBackend } from "./file.ts";
import { createHttpBackend } from "./http.ts";
import { createMqttBackend } from "./mqtt.ts";
import { createNsqBackend } from "./nsq.ts";

/**
 * The backend for `config`.
 * @throws JwError `config` for a bad template or option.
 */
export function createBackend(config: OutputConfig, deps: BackendDeps): Backend {
  switch (config.type) {
    case "file":
      return createFileBackend(config, deps);
    case "amqp":
      return createAmqpBackend(config, deps);
    case "mqtt":
      return createMqttBackend(config, deps);
    case "nsq":
      return createNsqBackend(config, deps);
    case "http":
      return createHttpBackend(config, deps);
  }
}
