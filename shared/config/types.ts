/**
 * zod building blocks for config: durations and sizes as human strings that parse to
 * numbers, host:port addresses.
 *
 * @module
 */
import { z } from "zod";
import { parseDuration, parseSize } from "../units.ts";

/** A duration: "30s", "1m", "250ms" or a number of ms. Parses to milliseconds. */
export const Duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({
      code: "custom",
      message: `expected a duration like "30s" or "250ms", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return ms;
});

/** A size: "1MiB", "64KiB", "1000" bytes. Parses to bytes. */
export const Size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === undefined || n <= 0) {
    ctx.addIssue({
      code: "custom",
      message: `expected a size like "1MiB" or "512KiB", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return n;
});

/** "HOST:PORT" (IPv6 in brackets). Parses to `{hostname, port}`. */
export const HostPort = z.string().transform((v, ctx) => {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : -1;
  if (!m || port > 65535) {
    ctx.addIssue({
      code: "custom",
      message: `expected HOST:PORT like "127.0.0.1:7400", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port };
});

/** An http(s) or ws(s) URL. */
export const ServerUrl = z.string().refine((v) => {
  try {
    return ["http:", "https:", "ws:", "wss:"].includes(new URL(v).protocol);
  } catch {
    return false;
  }
}, "expected an http://, https://, ws:// or wss:// URL");

/** Log verbosity. */
export const LogLevelSetting = z.enum(["error", "warn", "info", "debug"]);
