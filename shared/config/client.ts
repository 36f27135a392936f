/**
 * `jw client` configuration.
 *
 * @module
 */
import { z } from "zod";
import { ServerUrl } from "./types.ts";
import type { EnvBinding } from "./load.ts";

/** The client config schema. */
export const ClientConfig = z.object({
  /** Server URL. Default "http://127.0.0.1:7400". */
  server: ServerUrl.default("http://127.0.0.1:7400"),
  /** Operator name. Default "admin". */
  user: z.string().min(1).default("admin"),
  /** Password; prefer JW_PASSWORD over the flag, which shows in `ps`. */
  password: z.string().optional(),
}).strict();
export type ClientConfig = z.output<typeof ClientConfig>;

/** `JW_*` variables for the client. */
export const clientEnv: Record<string, EnvBinding> = {
  JW_SERVER: { path: "server" },
  JW_USER: { path: "user" },
  JW_PASSWORD: { path: "password" },
};
