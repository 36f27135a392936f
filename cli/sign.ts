/**
 * `jw sign` — make a signing key pair, sign scripts for agents, check a signature, and store
 * a signed script on a server.
 *
 * Files are written so that no reader ever sees a half-written one: a signed script goes to
 * a temporary file in the same directory that is then renamed over the target, and a new
 * private key file is created with mode 0600 (never wider, not even briefly).
 *
 * @module
 */
import { basename, dirname } from "node:path";
import { JwError } from "../shared/errors.ts";
import { type Clock, realClock } from "../shared/clock.ts";
import { loadConfig } from "../shared/config/load.ts";
import { ClientConfig, clientEnv } from "../shared/config/client.ts";
import {
  type Ed25519KeyPair,
  generateKeyPair,
  importKeyPair,
  type PrivateJwk,
  signScript,
  thumbprint,
  verifyScript,
} from "../shared/crypto/mod.ts";
import type { PublicJwk } from "../shared/protocol/agent.ts";
import type { ScriptUploaded } from "../shared/protocol/operator.ts";
import { MAX_SCRIPT_BYTES, parseScript } from "../shared/protocol/script.ts";
import { ApiClient } from "./_api.ts";
import { environment, list, type Parsed, parseFlags, readConfigFile, str } from "./_flags.ts";

const USAGE = `Usage: jw sign SCRIPT --key FILE [-o OUT] [--upload [connection options]]
       jw sign verify SCRIPT --pub FILE [--pub FILE ...]
       jw sign keygen --out FILE [--force]

Signs scripts for agents. Agents run a script only when it is signed by a key in their own
list of trusted signers. A script starts with a YAML header inside a comment:

  /*---
  name: disk-report
  version: 3
  permissions:
    read: [/var/log/app]
  timeout: 30s
  ---*/
  emit({ ok: true });

Signing sets signer (the key id), signedAt and signature in the header and changes no other
byte. The signature covers the header and the body: changing either after signing breaks it.

Commands:
  keygen --out FILE    make an Ed25519 key pair: FILE gets the private JWK (mode 0600, keep it
                       secret), FILE.pub the public JWK and its key id (mode 0644, give it to
                       agents); prints the key id
  SCRIPT --key FILE    sign SCRIPT with the private key in FILE, rewriting SCRIPT in place
  verify SCRIPT        check SCRIPT's signature against the public keys given with --pub

Options:
  --key FILE           private key file made by keygen; refused unless only its owner can
                       read it (chmod 600)
  -o, --out FILE       sign: write the signed script to FILE instead of rewriting SCRIPT;
                       "-" writes it to standard output. keygen: the private key file
  --force              keygen: replace existing key files
  --pub FILE           verify: a trusted public key file (FILE.pub from keygen); repeatable,
                       any of them may match
  --upload             sign, then store the signed script on the server (POST /v1/scripts)

Connection options for --upload (also in the config file or JW_* variables, as jw client):
  --server URL         server URL, default http://127.0.0.1:7400   (JW_SERVER)
  --user NAME          operator name, default admin                 (JW_USER)
  --password PASS      password; prefer JW_PASSWORD (flags show in ps)
  --config FILE        YAML or JSON config file                     (JW_CONFIG)

A script file named "keygen" or "verify" is signed as ./keygen or ./verify.

Exit codes: 0 success; 1 the script is malformed, unsigned, signed by a key not given with
--pub, or changed after signing, or the server refused the upload; 2 usage or configuration
error (including a key file others can read).`;

const OPTIONS = {
  key: { type: "string" },
  out: { type: "string", short: "o" },
  force: { type: "boolean" },
  pub: { type: "string", multiple: true },
  upload: { type: "boolean" },
  server: { type: "string" },
  user: { type: "string" },
  password: { type: "string" },
  config: { type: "string" },
} as const;

type Sub = "sign" | "verify" | "keygen";

const CONNECTION = ["server", "user", "password", "config"];
const PER_COMMAND: Record<Sub, string[]> = {
  sign: ["key", "out", "upload", ...CONNECTION],
  verify: ["pub"],
  keygen: ["out", "force"],
};

/** Mode of a private key file. */
const PRIVATE_KEY_MODE = 0o600;
/** Mode of a public key file. */
const PUBLIC_KEY_MODE = 0o644;
/** Mode of a new signed script when neither the target nor the source says otherwise. */
const SCRIPT_MODE = 0o644;

const encoder = new TextEncoder();

/** Where `jw sign` writes, and the time it signs at. Tests pass their own. */
export interface SignIo {
  /** Writes `text` to standard output exactly as given (no newline added). */
  stdout(text: string): Promise<void>;
  /** Writes one line to standard error. */
  stderr(line: string): void;
  /** The wall clock `signedAt` comes from. */
  clock: Pick<Clock, "now">;
}

/** The process's own standard output and error, and the real clock. */
export const processSignIo: SignIo = {
  async stdout(text) {
    const bytes = encoder.encode(text);
    let offset = 0;
    while (offset < bytes.length) offset += await Deno.stdout.write(bytes.subarray(offset));
  },
  stderr: (line) => console.error(line),
  clock: realClock,
};

/**
 * Entry point of `jw sign`: `keygen`, `verify`, or signing (with an optional upload).
 * Returns 0 on success.
 * @throws JwError `usage` for unknown flags or missing arguments; `config` for unusable key
 *   files or connection settings; `invalid_script`, `untrusted`, `bad_signature` from
 *   verification; `conflict` when keygen would overwrite a key; file and API errors as they
 *   come (`not_found`, `forbidden`, `unauthorized`, ...).
 */
export async function signCommand(argv: string[], io: SignIo = processSignIo): Promise<number> {
  const p = parseFlags(argv, OPTIONS);
  if (p.values.help) {
    await io.stdout(USAGE + "\n");
    return 0;
  }
  const [first, ...rest] = p.positionals;
  if (first === undefined) {
    throw new JwError(
      "usage",
      "missing SCRIPT: jw sign SCRIPT --key FILE, jw sign verify SCRIPT --pub FILE, " +
        "or jw sign keygen --out FILE",
    );
  }
  const sub: Sub = first === "verify" || first === "keygen" ? first : "sign";
  checkFlags(p, sub);
  switch (sub) {
    case "keygen":
      return await keygen(p, rest, io);
    case "verify":
      return await verify(p, rest, io);
    default:
      return await sign(p, p.positionals, io);
  }
}

function checkFlags(p: Parsed, sub: Sub): void {
  const name = sub === "sign" ? "sign SCRIPT" : `sign ${sub}`;
  for (const [flag, value] of Object.entries(p.values)) {
    if (value !== undefined && !PER_COMMAND[sub].includes(flag)) {
      throw new JwError("usage", `--${flag} does not apply to "jw ${name}"`);
    }
  }
  if (sub === "sign" && p.values.upload !== true) {
    const stray = CONNECTION.find((flag) => p.values[flag] !== undefined);
    if (stray) throw new JwError("usage", `--${stray} applies only with --upload`);
  }
}

function onePath(args: string[], what: string): string {
  if (args.length !== 1) {
    throw new JwError(
      "usage",
      args.length === 0
        ? `missing SCRIPT: jw ${what}`
        : `jw ${what} takes one script, got "${args.join(" ")}"`,
    );
  }
  return args[0];
}

// --- keygen ---

async function keygen(p: Parsed, args: string[], io: SignIo): Promise<number> {
  if (args.length) {
    throw new JwError("usage", `"jw sign keygen" takes no arguments, got "${args.join(" ")}"`);
  }
  const out = str(p, "out");
  if (out === undefined || out === "" || out === "-") {
    throw new JwError("usage", "jw sign keygen needs --out FILE, where the private key goes");
  }
  const pubPath = `${out}.pub`;
  const force = p.values.force === true;
  if (!force) {
    for (const path of [out, pubPath]) {
      if (await exists(path)) {
        throw new JwError(
          "conflict",
          `${path} exists already; jw sign keygen --force replaces it (and its key pair)`,
        );
      }
    }
  }
  const pair = await generateKeyPair();
  const privateText = JSON.stringify(pair.privateJwk) + "\n";
  const publicText = JSON.stringify({ ...pair.publicJwk, kid: pair.kid }) + "\n";
  if (force) {
    await replaceFile(out, encoder.encode(privateText), PRIVATE_KEY_MODE);
    await replaceFile(pubPath, encoder.encode(publicText), PUBLIC_KEY_MODE);
  } else {
    await createFile(out, encoder.encode(privateText), PRIVATE_KEY_MODE);
    try {
      await createFile(pubPath, encoder.encode(publicText), PUBLIC_KEY_MODE);
    } catch (err) {
      await Deno.remove(out).catch(() => {});
      throw err;
    }
  }
  await io.stdout(
    `key id:      ${pair.kid}\n` +
      `private key: ${out} (mode 0600; keep it secret)\n` +
      `public key:  ${pubPath} (give it to agents as a trusted signer)\n`,
  );
  return 0;
}

// --- sign ---

async function sign(p: Parsed, args: string[], io: SignIo): Promise<number> {
  const scriptPath = onePath(args, "sign SCRIPT --key FILE");
  const keyPath = str(p, "key");
  if (!keyPath) {
    throw new JwError(
      "usage",
      "jw sign SCRIPT needs --key FILE (make a key pair with: jw sign keygen --out FILE)",
    );
  }
  const out = str(p, "out");
  if (out === "") throw new JwError("usage", '-o expects a file name or "-"');
  // Connection settings are checked before any file changes.
  const remote = p.values.upload === true ? await connection(p) : undefined;
  const key = await loadSigningKey(keyPath);
  const script = await readScript(scriptPath);
  const signed = await signScript(script.text, key, new Date(io.clock.now()));
  const { header } = parseScript(signed);
  let shownAs: string;
  if (out === "-") {
    await io.stdout(signed);
    shownAs = "stdout";
  } else {
    const target = out ?? scriptPath;
    await writeScript(target, signed, script.mode);
    shownAs = target;
  }
  io.stderr(`signed ${header.name} v${header.version} as ${key.kid} -> ${shownAs}`);
  if (remote) {
    const uploaded = await new ApiClient(remote).uploadScript(signed);
    const report = describeUpload(uploaded, remote.server);
    if (out === "-") io.stderr(report);
    else await io.stdout(report + "\n");
  }
  return 0;
}

async function connection(p: Parsed): Promise<ClientConfig> {
  return loadConfig(ClientConfig, {
    ...(await readConfigFile(p)),
    env: environment(),
    envMap: clientEnv,
    flags: { server: str(p, "server"), user: str(p, "user"), password: str(p, "password") },
  });
}

function describeUpload({ script, created }: ScriptUploaded, server: string): string {
  const what = `${script.name} v${script.version} (${script.size} bytes, ${script.sha256}, ` +
    `signed by ${script.signer})`;
  return created
    ? `stored ${what} on ${server}`
    : `${server} already has ${what} with the same content, uploaded by ${script.uploadedBy}`;
}

/**
 * Loads the private key used for signing.
 * @throws JwError `config` when the file is accessible by group or others (with the
 *   `chmod 600` fix), is not JSON, or holds no Ed25519 private JWK.
 */
async function loadSigningKey(path: string): Promise<Ed25519KeyPair> {
  const info = await fsOp("read", path, () => Deno.stat(path));
  if (!info.isFile) throw new JwError("config", `private key ${path} is not a file`);
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    const mode = "0" + (info.mode & 0o777).toString(8).padStart(3, "0");
    throw new JwError(
      "config",
      `private key ${path} is accessible by group or others (mode ${mode}); ` +
        `fix it with: chmod 600 ${path}`,
      { detail: { path, mode } },
    );
  }
  const jwk = parseJson(await fsOp("read", path, () => Deno.readTextFile(path)), path);
  if (jwk.d === undefined && typeof jwk.x === "string") {
    throw new JwError(
      "config",
      `${path} holds a public key; sign with the private key file (the one without .pub)`,
    );
  }
  try {
    return await importKeyPair(jwk as unknown as PrivateJwk);
  } catch (err) {
    throw new JwError("config", `${path} is not an Ed25519 private JWK`, { cause: err });
  }
}

// --- verify ---

async function verify(p: Parsed, args: string[], io: SignIo): Promise<number> {
  const scriptPath = onePath(args, "sign verify SCRIPT --pub FILE");
  const pubs = list(p, "pub");
  if (!pubs?.length) {
    throw new JwError("usage", "jw sign verify needs --pub FILE (a trusted public key file)");
  }
  const trusted = await loadTrustedKeys(pubs);
  const script = await readScript(scriptPath);
  const verified = await verifyScript(script.text, (kid) => trusted.get(kid));
  const { name, version, signedAt } = verified.header;
  await io.stdout(
    `ok: ${name} v${version} signed by ${verified.signer} at ${signedAt ?? "an unknown time"}\n`,
  );
  return 0;
}

/**
 * Loads public key files into a map by key id.
 * @throws JwError `config` for a file that is not an Ed25519 public JWK, holds a private key,
 *   or names a `kid` that is not its key's thumbprint.
 */
async function loadTrustedKeys(paths: string[]): Promise<Map<string, PublicJwk>> {
  const keys = new Map<string, PublicJwk>();
  for (const path of paths) {
    const jwk = parseJson(await fsOp("read", path, () => Deno.readTextFile(path)), path);
    if (jwk.d !== undefined) {
      throw new JwError(
        "config",
        `${path} holds a private key; give the public key file (${path}.pub from jw sign keygen)`,
      );
    }
    if (
      jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string" ||
      !/^[A-Za-z0-9_-]{43}$/.test(jwk.x)
    ) {
      throw new JwError("config", `${path} is not an Ed25519 public JWK`);
    }
    const publicJwk: PublicJwk = { kty: "OKP", crv: "Ed25519", x: jwk.x };
    const kid = await thumbprint(publicJwk);
    if (jwk.kid !== undefined && jwk.kid !== kid) {
      throw new JwError(
        "config",
        `${path} says its kid is ${JSON.stringify(jwk.kid)}, but the key's thumbprint is ${kid}`,
      );
    }
    keys.set(kid, publicJwk);
  }
  return keys;
}

function parseJson(text: string, path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new JwError("config", `${path} is not a JSON key file`, { cause: err });
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new JwError("config", `${path} is not a JWK (a JSON object)`);
  }
  return value as Record<string, unknown>;
}

// --- files ---

/** A script file's text and permission bits. */
interface ScriptFile {
  text: string;
  /** Permission bits, or null where the platform has none. */
  mode: number | null;
}

/**
 * Reads a script as bytes and decodes it as strict UTF-8.
 * @throws JwError `invalid_script` for a file over the size limit, bytes that are not UTF-8,
 *   or a byte order mark.
 */
async function readScript(path: string): Promise<ScriptFile> {
  const info = await fsOp("read", path, () => Deno.stat(path));
  if (info.isDirectory) throw new JwError("usage", `${path} is a directory, not a script`);
  const bytes = await fsOp("read", path, () => Deno.readFile(path));
  if (bytes.length > MAX_SCRIPT_BYTES) {
    throw new JwError(
      "invalid_script",
      `${path} is ${bytes.length} bytes, more than the ${MAX_SCRIPT_BYTES}-byte limit`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new JwError("invalid_script", `${path} is not UTF-8 text (${badUtf8At(bytes)})`);
  }
  if (text.startsWith("\uFEFF")) {
    throw new JwError(
      "invalid_script",
      `${path} starts with a byte order mark: save it as UTF-8 without one`,
    );
  }
  return { text, mode: info.mode === null ? null : info.mode & 0o7777 };
}

/** Where the first byte sequence that is not UTF-8 starts: "line L, byte offset N". */
function badUtf8At(bytes: Uint8Array): string {
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  let line = 1;
  let start = 0;
  let remaining = 0; // continuation bytes the current character still needs
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (remaining === 0) start = i;
    try {
      decoder.decode(bytes.subarray(i, i + 1), { stream: true });
    } catch {
      return `line ${line}, byte offset ${start}`;
    }
    if (remaining > 0) remaining--;
    else remaining = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0;
    if (b === 0x0a) line++;
  }
  return `a character cut short at the end, byte offset ${start}`;
}

/**
 * Writes a signed script over `path` atomically. It keeps the mode of the file it replaces;
 * a new file gets the source script's mode.
 */
async function writeScript(path: string, text: string, sourceMode: number | null): Promise<void> {
  let target = path;
  let mode = sourceMode ?? SCRIPT_MODE;
  try {
    target = await Deno.realPath(path);
    const info = await Deno.stat(target);
    if (info.isDirectory) throw new JwError("usage", `${path} is a directory`);
    if (info.mode !== null) mode = info.mode & 0o7777;
  } catch (err) {
    if (err instanceof JwError) throw err;
    if (!(err instanceof Deno.errors.NotFound)) throw fileError("write", path, err);
  }
  await replaceFile(target, encoder.encode(text), mode);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw fileError("check", path, err);
  }
}

/** Creates `path` with `mode`; fails with `conflict` when it exists (even as a symlink). */
async function createFile(path: string, bytes: Uint8Array, mode: number): Promise<void> {
  await fsOp("create", path, async () => {
    // Created with at most `mode` (the umask can only narrow it), then set exactly.
    await Deno.writeFile(path, bytes, { createNew: true, mode });
    await Deno.chmod(path, mode);
  });
}

/**
 * Replaces `path` atomically: writes a temporary file in the same directory (created with
 * mode 0600), syncs it, sets `mode`, and renames it over `path`.
 */
async function replaceFile(path: string, bytes: Uint8Array, mode: number): Promise<void> {
  const dir = dirname(path);
  const tmp = await fsOp(
    "write",
    path,
    () => Deno.makeTempFile({ dir, prefix: `.${basename(path)}.`, suffix: ".tmp" }),
  );
  try {
    {
      using file = await Deno.open(tmp, { write: true, truncate: true });
      let offset = 0;
      while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
      await file.sync();
    }
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw fileError("write", path, err);
  }
}

async function fsOp<T>(op: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw fileError(op, path, err);
  }
}

/** Maps a Deno file error onto a {@link JwError} naming the operation and path. */
function fileError(op: string, path: string, err: unknown): JwError {
  if (err instanceof JwError) return err;
  // Deno appends the syscall and path ("...: readfile '/x'"); the message names them already.
  const reason = (err instanceof Error ? err.message : String(err))
    .replace(/: [a-z]+ '[^']*'( -> '[^']*')?$/, "");
  const message = `cannot ${op} ${path}: ${reason}`;
  if (err instanceof Deno.errors.NotFound) return new JwError("not_found", message, { cause: err });
  if (err instanceof Deno.errors.AlreadyExists) {
    return new JwError("conflict", message, { cause: err });
  }
  if (err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable) {
    return new JwError("forbidden", message, { cause: err });
  }
  if (err instanceof Deno.errors.IsADirectory) {
    return new JwError("usage", message, { cause: err });
  }
  return new JwError("internal", message, { cause: err });
}
