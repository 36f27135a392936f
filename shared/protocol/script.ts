/**
 * The signed script file format: a JavaScript (or TypeScript) file whose first lines are a YAML
 * header inside a comment, so editors see plain code.
 *
 * ```
 * /*---
 * name: disk-report
 * version: 3
 * permissions:
 *   read: [/var/log/app]
 * timeout: 30s
 * ---*\/
 * emit({ ok: true });
 * ```
 *
 * The header starts at the very first byte with the line `/*---` and ends with the line
 * `---*\/`; the body is every byte after that line's newline. Signing adds `signer`,
 * `signedAt` and `signature` to the header (see shared/crypto/script.ts).
 *
 * @module
 */
import { createHash } from "node:crypto";
import YAML from "yaml";
import { z } from "zod";
import { JwError } from "../errors.ts";
import { parseDuration } from "../units.ts";
import { describeIssues } from "./codec.ts";

/** Largest script file accepted anywhere: 512 KiB (it travels inside one command frame). */
export const MAX_SCRIPT_BYTES = 512 * 1024;

/** Longest timeout a script header may ask for. */
export const MAX_SCRIPT_TIMEOUT_MS = 24 * 3600_000;

/** Timeout when the header gives none. */
export const DEFAULT_SCRIPT_TIMEOUT_MS = 60_000;

/** A script name: lower-case letters, digits, `.`, `_`, `-`; 1–64 characters. */
export const ScriptName = z.string().regex(
  /^[a-z0-9][a-z0-9._-]{0,63}$/,
  "must be 1-64 of a-z 0-9 . _ - starting with a letter or digit",
);

/** An absolute path without `..` segments. */
export const AbsolutePath = z.string().max(4096).refine(
  (p) => p.startsWith("/") && !p.split("/").includes("..") && !p.includes("\0"),
  "must be an absolute path without .. segments",
);

/** A network permission as Deno spells it: `host`, `host:port`, `[v6]:port`. */
export const NetPermission = z.string().regex(
  /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/,
  'must be a host or host:port, like "example.com:443"',
);

/** What a script may touch. Each list defaults to empty (nothing). */
export const ScriptPermissions = z.object({
  /** Programs the script may start through `exec.run` (absolute paths). */
  run: z.array(AbsolutePath).max(256).default([]),
  /** Files and directories it may read. */
  read: z.array(AbsolutePath).max(256).default([]),
  /** Files and directories it may write. */
  write: z.array(AbsolutePath).max(256).default([]),
  /** Hosts it may reach with `fetch` or sockets. */
  net: z.array(NetPermission).max(256).default([]),
}).strict();
export type ScriptPermissions = z.output<typeof ScriptPermissions>;

const ScriptTimeout = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined || ms <= 0 || ms > MAX_SCRIPT_TIMEOUT_MS) {
    ctx.addIssue({
      code: "custom",
      message: `expected a positive duration up to 24h like "30s", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return ms;
});

/** The header of a script file; unknown fields are refused. */
export const ScriptHeader = z.object({
  name: ScriptName,
  /** A positive integer; a new version of a script needs a new number. */
  version: z.number().int().min(1).max(2 ** 31 - 1),
  description: z.string().max(1024).optional(),
  permissions: ScriptPermissions.prefault({}),
  /** The run is stopped after this long. Default "60s", at most "24h". Parsed to ms. */
  timeout: ScriptTimeout.prefault(DEFAULT_SCRIPT_TIMEOUT_MS),
  /** Key id (RFC 7638 thumbprint) of the signing key; added by `jw sign`. */
  signer: z.string().min(1).max(128).optional(),
  /** ISO 8601 time of signing; added by `jw sign`. */
  signedAt: z.string().max(64).optional(),
  /** Compact JWS with a detached payload (`header..signature`); added by `jw sign`. */
  signature: z.string().min(1).max(8192).optional(),
}).strict();
export type ScriptHeader = z.output<typeof ScriptHeader>;

/** A script split into its parts; nothing here says whether its signature is good. */
export interface ParsedScript {
  /** The whole file as given. */
  text: string;
  /** The header, checked and with defaults applied (timeout in ms). */
  header: ScriptHeader;
  /** The header as YAML parsed it, before defaults: what the signature covers. */
  rawHeader: Record<string, unknown>;
  /** The YAML between the header's first and last line. */
  headerYaml: string;
  /** Every byte after the header's closing line. */
  body: string;
  /** `sha256:` + hex of the whole file's UTF-8 bytes. */
  sha256: string;
}

const OPEN = "/*---\n";
/**
 * The closing line. Only `\n` ends a line (no `m` flag: JavaScript's multiline `^` and `$`
 * also match at `\r`, U+2028 and U+2029, which the format does not treat as line ends).
 */
const CLOSE = /(?:^|\n)---\*\/[ \t]*(?:\n|$)/;

/** `sha256:` + hex of the UTF-8 bytes of `text`. */
export function sha256Text(text: string): string {
  return "sha256:" + createHash("sha256").update(text, "utf8").digest("hex");
}

/**
 * Splits and checks a script file.
 * @throws JwError `invalid_script` naming what is wrong: no header, bad YAML (also aliases,
 *   duplicate keys, unknown tags), `*\/` inside the header, a field that fails its schema, or
 *   a file over {@link MAX_SCRIPT_BYTES}.
 */
export function parseScript(text: string): ParsedScript {
  const size = new TextEncoder().encode(text).length;
  if (size > MAX_SCRIPT_BYTES) {
    throw new JwError(
      "invalid_script",
      `script is ${size} bytes, more than the ${MAX_SCRIPT_BYTES}-byte limit`,
    );
  }
  if (!text.startsWith(OPEN)) {
    throw new JwError(
      "invalid_script",
      'a script must start with a "/*---" line, then its YAML header, then a "---*/" line' +
        (text.startsWith("/*---\r\n") ? " (with \\n line endings, not \\r\\n)" : ""),
    );
  }
  const rest = text.slice(OPEN.length);
  const close = CLOSE.exec(rest);
  if (!close) {
    throw new JwError("invalid_script", 'the script header has no closing "---*/" line');
  }
  // The header keeps its last newline; a match at index 0 (an empty header) has none.
  const headerEnd = close[0].startsWith("\n") ? close.index + 1 : close.index;
  const headerYaml = rest.slice(0, headerEnd);
  const body = rest.slice(close.index + close[0].length);
  if (headerYaml.includes("*/")) {
    throw new JwError(
      "invalid_script",
      'the script header must not contain "*/": it would end the comment early',
    );
  }
  const raw = parseHeaderYaml(headerYaml);
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new JwError("invalid_script", "script header must be a YAML mapping (name: ...)");
  }
  const result = ScriptHeader.safeParse(raw);
  if (!result.success) {
    throw new JwError("invalid_script", `bad script header: ${describeIssues(result.error)}`);
  }
  return {
    text,
    header: result.data,
    rawHeader: raw as Record<string, unknown>,
    headerYaml,
    body,
    sha256: sha256Text(text),
  };
}

/**
 * Parses the header's YAML: one document, unique keys, no aliases, and no warnings (an
 * unknown tag such as `!foo` is an error here rather than a line on stderr).
 */
function parseHeaderYaml(headerYaml: string): unknown {
  const bad = (message: string) =>
    new JwError("invalid_script", `script header is not valid YAML: ${message.split("\n")[0]}`);
  let doc: YAML.Document.Parsed;
  try {
    doc = YAML.parseDocument(headerYaml, { uniqueKeys: true });
  } catch (err) {
    throw bad((err as Error).message);
  }
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) throw bad(problem.message);
  try {
    return doc.toJS({ maxAliasCount: 0 });
  } catch (err) {
    throw bad((err as Error).message);
  }
}
