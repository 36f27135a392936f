/**
 * Loads one component's config: schema defaults < YAML/JSON file < `JW_*` environment <
 * command-line flags. Unknown keys are errors naming their path; every failure is a
 * {@link JwError} `config` with a one-line message.
 *
 * @module
 */
import type { z } from "zod";
import YAML from "yaml";
import { JwError } from "../errors.ts";

/** How one environment variable maps onto a config path. */
export interface EnvBinding {
  /** Dotted config path, e.g. "agents.heartbeat". */
  path: string;
  /** "list" splits on commas; "json" parses the value as JSON. Default: string. */
  kind?: "string" | "list" | "json";
}

/** Sources to merge, lowest precedence first. */
export interface ConfigSources {
  /** Parsed file contents (see {@link parseConfigText}); `undefined` when no file. */
  file?: unknown;
  /** Where the file came from, for messages. */
  fileName?: string;
  /** The process environment. */
  env?: Record<string, string | undefined>;
  /** Environment variable name → binding. */
  envMap?: Record<string, EnvBinding>;
  /** Flags already keyed by config path ("agents.heartbeat": "10s"); `undefined` values skipped. */
  flags?: Record<string, unknown>;
}

/** A plain object, not an array or null. */
function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, everything else (arrays included) replaces. */
export function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = deepMerge(base[k], v);
  return out;
}

/** Sets `value` at a dotted `path`, creating objects on the way. */
export function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split(".");
  let node = target;
  for (const p of parts.slice(0, -1)) {
    if (!isPlainObject(node[p])) node[p] = {};
    node = node[p] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]] = value;
}

/**
 * Parses a config file's text (YAML; JSON is valid YAML).
 * @throws JwError `config` with the file name and line.
 */
export function parseConfigText(text: string, fileName: string): unknown {
  try {
    const value = YAML.parse(text);
    if (value === null || value === undefined) return {};
    if (!isPlainObject(value)) throw new Error("the top level must be a mapping of keys to values");
    return value;
  } catch (err) {
    const msg = (err as Error).message.split("\n")[0];
    throw new JwError("config", `${fileName}: ${msg}`, { cause: err });
  }
}

/**
 * Merges the sources and checks them against `schema`.
 * @throws JwError `config`: "`<source>`: `<key.path>`: `<what is wrong>`".
 */
export function loadConfig<S extends z.ZodType>(schema: S, sources: ConfigSources): z.output<S> {
  let merged: unknown = sources.file ?? {};
  const fromEnv: Record<string, unknown> = {};
  for (const [name, binding] of Object.entries(sources.envMap ?? {})) {
    const raw = sources.env?.[name];
    if (raw === undefined || raw === "") continue;
    let value: unknown = raw;
    if (binding.kind === "list") value = raw.split(",").map((s) => s.trim()).filter(Boolean);
    if (binding.kind === "json") {
      try {
        value = JSON.parse(raw);
      } catch {
        throw new JwError("config", `${name}: not valid JSON`);
      }
    }
    setPath(fromEnv, binding.path, value);
  }
  merged = deepMerge(merged, fromEnv);
  const fromFlags: Record<string, unknown> = {};
  for (const [path, value] of Object.entries(sources.flags ?? {})) {
    if (value !== undefined) setPath(fromFlags, path, value);
  }
  merged = deepMerge(merged, fromFlags);
  const result = schema.safeParse(merged);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue.path.join(".") || "(top level)";
  let message = issue.message;
  if (issue.code === "invalid_type" && message.endsWith("received undefined")) {
    message = "is required";
  }
  if (issue.code === "unrecognized_keys") {
    message = `unknown key${issue.keys.length > 1 ? "s" : ""} ${
      issue.keys.map((k) => `"${k}"`).join(", ")
    }`;
  }
  const where = sources.fileName ? ` (from ${sources.fileName}, env or flags)` : "";
  throw new JwError("config", `config ${path}: ${message}${where}`, { detail: { path } });
}
