import assert from "node:assert/strict";
import { type ErrorCode, isJwError } from "../shared/errors.ts";
import { importKeyPair, thumbprint, verifyScript } from "../shared/crypto/mod.ts";
import type { PublicJwk } from "../shared/protocol/agent.ts";
import type { ScriptInfo } from "../shared/protocol/operator.ts";
import { parseScript, sha256Text } from "../shared/protocol/script.ts";
import { runJw } from "../tests/helpers/process.ts";
import { base64Utf8 } from "./_api.ts";
import { signCommand, type SignIo } from "./sign.ts";

const NOW = Date.parse("2030-05-06T07:08:09.000Z");
const SCRIPT = "/*---\nname: disk-report\nversion: 3\npermissions:\n  read: [/proc/mounts]\n" +
  "timeout: 30s\n---*/\nemit({ ok: true }); // ✓\n";

/** Standard output and error of one in-process run. */
interface Captured extends SignIo {
  out: string;
  err: string[];
}

function capture(): Captured {
  const io: Captured = {
    out: "",
    err: [],
    stdout: (text) => {
      io.out += text;
      return Promise.resolve();
    },
    stderr: (line) => io.err.push(line),
    clock: { now: () => NOW },
  };
  return io;
}

/** Runs `jw sign ARGV` in this process. */
async function sign(...argv: string[]): Promise<Captured> {
  const io = capture();
  assert.equal(await signCommand(argv, io), 0);
  return io;
}

async function fails(code: ErrorCode, pattern: RegExp, ...argv: string[]): Promise<void> {
  await assert.rejects(
    signCommand(argv, capture()),
    (e) => isJwError(e, code) && pattern.test(e.message),
  );
}

/** A temporary directory, removed with everything in it on dispose. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "jw-sign-test-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

async function mode(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o777;
}

/** A directory with a key pair (`key`, `key.pub`) and the sample script (`s.js`). */
async function workspace() {
  const dir = await tempDir();
  const key = `${dir.path}/key`;
  const script = `${dir.path}/s.js`;
  await sign("keygen", "--out", key);
  await Deno.writeTextFile(script, SCRIPT);
  const pub = JSON.parse(await Deno.readTextFile(`${key}.pub`));
  return { dir, key, pub: `${key}.pub`, kid: pub.kid as string, script };
}

async function trustedBy(pubPath: string) {
  const jwk = JSON.parse(await Deno.readTextFile(pubPath)) as PublicJwk;
  const kid = await thumbprint(jwk);
  return (id: string) => (id === kid ? jwk : undefined);
}

Deno.test("jw sign keygen writes a private key (0600) and a public key with its kid (0644)", async () => {
  await using dir = await tempDir();
  const key = `${dir.path}/signer.jwk`;
  const io = await sign("keygen", "--out", key);
  assert.equal(await mode(key), 0o600);
  assert.equal(await mode(`${key}.pub`), 0o644);
  const pair = await importKeyPair(JSON.parse(await Deno.readTextFile(key)));
  const pub = JSON.parse(await Deno.readTextFile(`${key}.pub`));
  assert.deepEqual(pub, { ...pair.publicJwk, kid: pair.kid });
  assert.equal(pub.kid, await thumbprint(pub));
  assert.match(io.out, new RegExp(`key id: +${pair.kid}\n`));
  assert.ok(io.out.includes(`private key: ${key} `));
  assert.ok(io.out.includes(`public key:  ${key}.pub `));
  assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name).sort(), [
    "signer.jwk",
    "signer.jwk.pub",
  ]);
});

Deno.test("jw sign keygen refuses to overwrite either key file unless --force", async () => {
  await using dir = await tempDir();
  const key = `${dir.path}/k`;
  await sign("keygen", "--out", key);
  const before = await Deno.readTextFile(key);
  const beforePub = await Deno.readTextFile(`${key}.pub`);
  await fails("conflict", /k exists already.*--force/, "keygen", "--out", key);
  assert.equal(await Deno.readTextFile(key), before);

  // Only the .pub left over: still refused, and no private key is written.
  await Deno.remove(key);
  await fails("conflict", /k\.pub exists already/, "keygen", "-o", key);
  await assert.rejects(Deno.stat(key), Deno.errors.NotFound);
  assert.equal(await Deno.readTextFile(`${key}.pub`), beforePub);

  // --force replaces both, with the right modes even where the old files had others.
  await Deno.writeTextFile(key, before, { mode: 0o644 });
  await Deno.chmod(key, 0o644);
  await Deno.chmod(`${key}.pub`, 0o600);
  await sign("keygen", "--out", key, "--force");
  assert.notEqual(await Deno.readTextFile(key), before);
  assert.notEqual(await Deno.readTextFile(`${key}.pub`), beforePub);
  assert.equal(await mode(key), 0o600);
  assert.equal(await mode(`${key}.pub`), 0o644);
  const pair = await importKeyPair(JSON.parse(await Deno.readTextFile(key)));
  assert.equal(JSON.parse(await Deno.readTextFile(`${key}.pub`)).kid, pair.kid);
  assert.equal([...Deno.readDirSync(dir.path)].length, 2, "no temporary files left");
});

Deno.test("jw sign SCRIPT --key FILE signs in place, keeping the file's mode", async () => {
  const w = await workspace();
  await using _ = w.dir;
  await Deno.chmod(w.script, 0o640);
  const io = await sign(w.script, "--key", w.key);
  const signed = await Deno.readTextFile(w.script);
  assert.ok(signed.startsWith(SCRIPT.slice(0, SCRIPT.indexOf("---*/"))));
  assert.ok(signed.endsWith("---*/\nemit({ ok: true }); // ✓\n"));
  const verified = await verifyScript(signed, await trustedBy(w.pub));
  assert.equal(verified.signer, w.kid);
  assert.equal(verified.header.signedAt, new Date(NOW).toISOString());
  assert.deepEqual(io.err, [`signed disk-report v3 as ${w.kid} -> ${w.script}`]);
  assert.equal(io.out, "");
  assert.equal(await mode(w.script), 0o640);
  assert.deepEqual(
    [...Deno.readDirSync(w.dir.path)].map((e) => e.name).sort(),
    ["key", "key.pub", "s.js"],
    "no temporary files left",
  );
  // Signing again replaces the signature rather than adding one.
  await sign(w.script, "--key", w.key);
  assert.equal(await Deno.readTextFile(w.script), signed);
});

Deno.test("jw sign -o OUT writes elsewhere and -o - writes to stdout, leaving SCRIPT alone", async () => {
  const w = await workspace();
  await using _ = w.dir;
  const out = `${w.dir.path}/signed.js`;
  const io = await sign(w.script, "--key", w.key, "-o", out);
  assert.equal(await Deno.readTextFile(w.script), SCRIPT);
  const signed = await Deno.readTextFile(out);
  assert.equal((await verifyScript(signed, await trustedBy(w.pub))).signer, w.kid);
  assert.deepEqual(io.err, [`signed disk-report v3 as ${w.kid} -> ${out}`]);

  const piped = await sign(w.script, "--key", w.key, "-o", "-");
  assert.equal(piped.out, signed);
  assert.deepEqual(piped.err, [`signed disk-report v3 as ${w.kid} -> stdout`]);
  assert.equal(await Deno.readTextFile(w.script), SCRIPT);

  await fails("usage", /is a directory/, w.script, "--key", w.key, "--out", w.dir.path);
});

Deno.test("jw sign refuses a script that is not UTF-8, or has a byte order mark", async () => {
  const w = await workspace();
  await using _ = w.dir;
  const bytes = new TextEncoder().encode(SCRIPT);
  const bad = new Uint8Array([...bytes.slice(0, 40), 0xc3, 0x28, ...bytes.slice(40)]);
  await Deno.writeFile(w.script, bad);
  await fails(
    "invalid_script",
    /not UTF-8 text \(line 4, byte offset 40\)/,
    w.script,
    "--key",
    w.key,
  );
  assert.deepEqual(await Deno.readFile(w.script), bad);
  await Deno.writeFile(w.script, new Uint8Array([...bytes, 0x80]));
  await fails("invalid_script", /\(line 9, byte offset 117\)/, w.script, "--key", w.key);
  await Deno.writeFile(w.script, new Uint8Array([...bytes, 0xe2, 0x9c]));
  await fails("invalid_script", /cut short at the end, byte offset 117/, w.script, "--key", w.key);

  await Deno.writeFile(w.script, new Uint8Array([0xef, 0xbb, 0xbf, ...bytes]));
  await fails("invalid_script", /byte order mark/, w.script, "--key", w.key);

  await Deno.writeTextFile(w.script, "emit({});\n");
  await fails("invalid_script", /must start with/, w.script, "--key", w.key);
  await fails("not_found", /cannot read .*missing\.js/, `${w.dir.path}/missing.js`, "--key", w.key);
});

Deno.test("jw sign refuses a private key that group or others can read", async () => {
  const w = await workspace();
  await using _ = w.dir;
  for (const bits of [0o640, 0o604, 0o620]) {
    await Deno.chmod(w.key, bits);
    await fails(
      "config",
      new RegExp(`accessible by group or others \\(mode 0${bits.toString(8)}\\).*chmod 600`),
      w.script,
      "--key",
      w.key,
    );
  }
  assert.equal(await Deno.readTextFile(w.script), SCRIPT);
  await Deno.chmod(w.key, 0o400);
  await sign(w.script, "--key", w.key);
  // The public key is no signing key.
  await Deno.chmod(w.pub, 0o600);
  await fails("config", /holds a public key/, w.script, "--key", w.pub);
});

Deno.test("jw sign refuses bad usage with usage errors", async (t) => {
  const w = await workspace();
  await using _ = w.dir;
  const cases: [string, string[], RegExp][] = [
    ["nothing", [], /missing SCRIPT/],
    ["no key", [w.script], /needs --key FILE/],
    ["two scripts", [w.script, w.script, "--key", w.key], /takes one script/],
    ["unknown flag", [w.script, "--key", w.key, "--sloppy"], /sloppy/],
    ["--pub when signing", [w.script, "--key", w.key, "--pub", w.pub], /--pub does not apply/],
    ["--force when signing", [w.script, "--key", w.key, "--force"], /--force does not apply/],
    ["--server without --upload", [w.script, "--key", w.key, "--server", "http://x"], /--upload/],
    ["empty -o", [w.script, "--key", w.key, "-o", ""], /-o expects/],
    ["keygen without --out", ["keygen"], /needs --out FILE/],
    ["keygen to stdout", ["keygen", "-o", "-"], /needs --out FILE/],
    ["keygen with a script", ["keygen", "x.js", "--out", "k"], /takes no arguments/],
    ["keygen --key", ["keygen", "--out", "k", "--key", w.key], /--key does not apply/],
    ["verify without --pub", ["verify", w.script], /needs --pub FILE/],
    ["verify without a script", ["verify", "--pub", w.pub], /missing SCRIPT/],
    ["verify --upload", ["verify", w.script, "--pub", w.pub, "--upload"], /--upload does not/],
  ];
  for (const [name, argv, pattern] of cases) {
    await t.step(name, () => fails("usage", pattern, ...argv));
  }
  assert.equal(await Deno.readTextFile(w.script), SCRIPT);
  await t.step("--help prints the usage", async () => {
    for (const argv of [["--help"], ["keygen", "-h"], ["verify", "--help"]]) {
      assert.match((await sign(...argv)).out, /^Usage: jw sign SCRIPT --key FILE/);
    }
  });
});

Deno.test("jw sign verify accepts a good signature from any of the given keys", async () => {
  const w = await workspace();
  await using _ = w.dir;
  const other = `${w.dir.path}/other`;
  await sign("keygen", "--out", other);
  await sign(w.script, "--key", w.key);
  const io = await sign("verify", w.script, "--pub", `${other}.pub`, "--pub", w.pub);
  assert.equal(
    io.out,
    `ok: disk-report v3 signed by ${w.kid} at ${new Date(NOW).toISOString()}\n`,
  );
  await fails("untrusted", /not a trusted signer/, "verify", w.script, "--pub", `${other}.pub`);
  await fails("config", /holds a private key/, "verify", w.script, "--pub", w.key);
  // A .pub whose kid is not its key's thumbprint is refused, not trusted under either id.
  const pub = JSON.parse(await Deno.readTextFile(w.pub));
  await Deno.writeTextFile(w.pub, JSON.stringify({ ...pub, kid: "someone-else" }));
  await fails("config", /but the key.s thumbprint is/, "verify", w.script, "--pub", w.pub);
});

Deno.test("jw sign verify exits 0 when good, 1 when tampered or signed by another key, 2 on usage", async () => {
  const w = await workspace();
  await using _ = w.dir;
  await sign(w.script, "--key", w.key);
  const good = await runJw(["sign", "verify", w.script, "--pub", w.pub]);
  assert.equal(good.code, 0, good.stderr);
  assert.equal(
    good.stdout,
    `ok: disk-report v3 signed by ${w.kid} at ${new Date(NOW).toISOString()}\n`,
  );

  const other = `${w.dir.path}/other`;
  await sign("keygen", "--out", other);
  const wrongKey = await runJw(["sign", "verify", w.script, "--pub", `${other}.pub`]);
  assert.equal(wrongKey.code, 1);
  assert.match(wrongKey.stderr, /^jw sign: untrusted: .*not a trusted signer/);

  const signed = await Deno.readTextFile(w.script);
  await Deno.writeTextFile(w.script, signed.replace("read: [/proc/mounts]", "read: [/]"));
  const tampered = await runJw(["sign", "verify", w.script, "--pub", w.pub]);
  assert.equal(tampered.code, 1);
  assert.match(tampered.stderr, /^jw sign: bad_signature: /);
  assert.equal(tampered.stdout, "");

  const usage = await runJw(["sign", "verify", w.script]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /needs --pub FILE/);
});

Deno.test("jw sign -o - keeps stdout to the signed script; a readable key exits 2", async () => {
  const w = await workspace();
  await using _ = w.dir;
  const piped = await runJw(["sign", w.script, "--key", w.key, "-o", "-"]);
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(parseScript(piped.stdout).header.signer, w.kid);
  assert.ok(piped.stdout.endsWith("---*/\nemit({ ok: true }); // ✓\n"));
  assert.match(piped.stderr, new RegExp(`^signed disk-report v3 as ${w.kid} -> stdout\n$`));
  assert.equal(await Deno.readTextFile(w.script), SCRIPT);

  await Deno.chmod(w.key, 0o644);
  const readable = await runJw(["sign", w.script, "--key", w.key]);
  assert.equal(readable.code, 2);
  assert.match(readable.stderr, /chmod 600/);
});

/** What the stub server saw of one request. */
interface SeenRequest {
  method: string;
  path: string;
  authorization: string | null;
  contentType: string | null;
  body: string;
}

/**
 * A stand-in for `POST /v1/scripts` on 127.0.0.1: it records each request and answers like
 * the real API (201 and `{script, created: true}`), or with `answer` when given.
 */
function stubServer(answer?: (req: SeenRequest) => Response | undefined) {
  const seen: SeenRequest[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const request: SeenRequest = {
      method: req.method,
      path: new URL(req.url).pathname,
      authorization: req.headers.get("authorization"),
      contentType: req.headers.get("content-type"),
      body: await req.text(),
    };
    seen.push(request);
    return answer?.(request) ??
      Response.json({ script: stubInfo(request.body), created: true }, { status: 201 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

Deno.test("jw sign --upload signs, then posts the file with the operator's credentials", async () => {
  const w = await workspace();
  await using _ = w.dir;
  await using server = stubServer();
  const io = await sign(
    w.script,
    "--key",
    w.key,
    "--upload",
    "--server",
    server.url,
    "--user",
    "ops",
    "--password",
    "pä55:word",
  );
  const signed = await Deno.readTextFile(w.script);
  assert.equal(server.seen.length, 1);
  assert.deepEqual(server.seen[0], {
    method: "POST",
    path: "/v1/scripts",
    authorization: "Basic " + base64Utf8("ops:pä55:word"),
    contentType: "application/javascript; charset=utf-8",
    body: signed,
  });
  const size = new TextEncoder().encode(signed).length;
  assert.equal(
    io.out,
    `stored disk-report v3 (${size} bytes, ${sha256Text(signed)}, signed by ${w.kid}) on ` +
      `${server.url}\n`,
  );
  assert.deepEqual(io.err, [`signed disk-report v3 as ${w.kid} -> ${w.script}`]);
});

Deno.test("jw sign --upload reads the connection from a config file, -o - reports on stderr", async () => {
  const w = await workspace();
  await using _ = w.dir;
  await using server = stubServer();
  const config = `${w.dir.path}/client.yaml`;
  await Deno.writeTextFile(config, `server: ${server.url}\nuser: deployer\npassword: s3cret\n`);
  const io = await sign(w.script, "--key", w.key, "-o", "-", "--upload", "--config", config);
  assert.equal(server.seen[0].authorization, "Basic " + base64Utf8("deployer:s3cret"));
  assert.equal(server.seen[0].body, io.out);
  assert.equal(await Deno.readTextFile(w.script), SCRIPT);
  assert.equal(io.err.length, 2);
  assert.match(io.err[1], /^stored disk-report v3 \(/);

  // A bad config is refused before anything is signed or sent.
  await Deno.writeTextFile(config, "server: not a url\n");
  await fails("config", /server/, w.script, "--key", w.key, "--upload", "--config", config);
  assert.equal(server.seen.length, 1);
  assert.equal(await Deno.readTextFile(w.script), SCRIPT);
});

Deno.test("jw sign --upload takes JW_* credentials and exits 1 when the server refuses", async () => {
  const w = await workspace();
  await using _ = w.dir;
  let refuse = false;
  await using server = stubServer((req) => {
    if (!refuse) return Response.json({ script: stubInfo(req.body), created: false });
    return Response.json(
      { error: { code: "conflict", message: "disk-report v3 is stored with other content" } },
      { status: 409 },
    );
  });
  const env = { JW_SERVER: server.url, JW_USER: "env-user", JW_PASSWORD: "env-pass" };
  const same = await runJw(["sign", w.script, "--key", w.key, "--upload"], env);
  assert.equal(same.code, 0, same.stderr);
  assert.equal(server.seen[0].authorization, "Basic " + base64Utf8("env-user:env-pass"));
  assert.match(same.stdout, /already has disk-report v3 .* with the same content, uploaded by ops/);

  refuse = true;
  const refused = await runJw(["sign", w.script, "--key", w.key, "--upload"], env);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /jw sign: conflict: disk-report v3 is stored with other content/);
  assert.equal(server.seen.length, 2);
});

function stubInfo(text: string): ScriptInfo {
  const { header } = parseScript(text);
  return {
    name: header.name,
    version: header.version,
    sha256: sha256Text(text),
    signer: header.signer!,
    signedAt: header.signedAt,
    permissions: header.permissions,
    size: new TextEncoder().encode(text).length,
    uploadedBy: "ops",
    uploadedAt: NOW,
  };
}
