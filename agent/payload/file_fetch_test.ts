import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FakeClock } from "../../shared/clock.ts";
import type { Output, Reply } from "../../shared/protocol/mod.ts";
import { seededRandom } from "../../shared/random.ts";
import { FakeExecutor } from "../_fake_executor.ts";
import { type JobHarness, jobHarness, type JobHarnessOptions } from "../_job_harness.ts";
import type { ServerLink } from "./commands.ts";

const executor = new FakeExecutor((p) => p.exit(0));

const MiB = 1024 * 1024;

/** A temp directory (its real path), removed after `fn`. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "jw-fetch-" }));
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A loopback HTTP server that records each request's path and Authorization header. */
interface TestServer extends AsyncDisposable {
  origin: string;
  requests: { path: string; auth: string | null }[];
}

function serve(handler: (url: URL, req: Request) => Response | Promise<Response>): TestServer {
  const requests: TestServer["requests"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    requests.push({ path: url.pathname, auth: req.headers.get("authorization") });
    return handler(url, req);
  });
  return {
    origin: `http://127.0.0.1:${server.addr.port}`,
    requests,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

function bytesOf(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  return new Uint8Array(seededRandom(seed).bytes(n));
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function harness(dir: string, options: Partial<JobHarnessOptions> = {}): JobHarness {
  return jobHarness({
    executor,
    paths: { read: [], write: [dir] },
    ...options,
  });
}

/** Runs file.fetch now; returns its done output and its other replies. */
async function fetchNow(
  h: JobHarness,
  args: Record<string, unknown>,
): Promise<{ done: Output; replies: Reply[] }> {
  const replies = await h.run({ id: `f-${crypto.randomUUID()}`, job: { key: "file.fetch", args } });
  const done = replies.at(-1) as Output;
  assert.equal(done.done, true);
  return { done, replies };
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Polls `cond` every 10 ms until it holds; fails after `ms`. */
async function waitFor(cond: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const BODY = bytesOf(100 * 1024);
const BODY_SHA = sha256(BODY);

/** Serves BODY at /blob and /files/tools/app.bin, 404 elsewhere. */
function blobServer(): TestServer {
  return serve((url) =>
    url.pathname === "/blob" || url.pathname === "/files/tools/app.bin"
      ? new Response(BODY)
      : new Response("no such file", { status: 404 })
  );
}

Deno.test("file.fetch downloads a URL to dest, with and without sha256", async () => {
  await withDir(async (dir) => {
    await using srv = blobServer();
    await using h = harness(dir);
    const dest = `${dir}/app.bin`;
    const first = await fetchNow(h, { url: `${srv.origin}/blob`, dest });
    assert.equal(first.done.error, null, JSON.stringify(first.done.error));
    assert.deepEqual(first.done.data, {
      dest,
      bytes: BODY.length,
      sha256: BODY_SHA,
      url: `${srv.origin}/blob`,
    });
    assert.deepEqual(await Deno.readFile(dest), BODY);
    assert.equal((await Deno.stat(dest)).mode! & 0o777, 0o600, "a new file is 0600");
    assert.ok(first.replies.every((f) => f.type !== "output" || !f.data?.progress), "small");

    await Deno.remove(dest);
    const second = await fetchNow(h, { url: `${srv.origin}/blob`, dest, sha256: BODY_SHA });
    assert.equal(second.done.error, null);
    assert.equal(second.done.data?.sha256, BODY_SHA);
    assert.deepEqual(await Deno.readFile(dest), BODY);
    assert.deepEqual(await listDir(dir), ["app.bin"], "no temporary file left");
    assert.equal(srv.requests.length, 2);
    assert.ok(srv.requests.every((r) => r.auth === null));
  });
});

Deno.test("file.fetch refuses content with another sha256 and leaves nothing behind", async () => {
  await withDir(async (dir) => {
    await using srv = blobServer();
    await using h = harness(dir);
    const wrong = "ab".repeat(32);
    const { done } = await fetchNow(h, {
      url: `${srv.origin}/blob`,
      dest: `${dir}/x`,
      sha256: wrong,
    });
    assert.equal(done.error?.code, "checksum_mismatch");
    assert.match(done.error!.message, new RegExp(`${BODY_SHA}.*expected ${wrong}`));
    assert.deepEqual(await listDir(dir), [], "neither dest nor a temporary file");

    // An existing dest is left as it was.
    await Deno.writeTextFile(`${dir}/x`, "old");
    const again = await fetchNow(h, { url: `${srv.origin}/blob`, dest: `${dir}/x`, sha256: wrong });
    assert.equal(again.done.error?.code, "checksum_mismatch");
    assert.equal(await Deno.readTextFile(`${dir}/x`), "old");
    assert.deepEqual(await listDir(dir), ["x"]);
  });
});

Deno.test("file.fetch refuses a dest outside the allowed write paths, before any request", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/ok`);
    await using srv = blobServer();
    await using h = harness(`${dir}/ok`);
    const outside = await fetchNow(h, { url: `${srv.origin}/blob`, dest: `${dir}/evil` });
    assert.equal(outside.done.error?.code, "forbidden");
    assert.match(outside.done.error!.message, /--allow-write/);
    const dotdot = await fetchNow(h, { url: `${srv.origin}/blob`, dest: `${dir}/ok/../evil` });
    assert.equal(dotdot.done.error?.code, "forbidden");
    const noDir = await fetchNow(h, { url: `${srv.origin}/blob`, dest: `${dir}/ok/sub/x` });
    assert.equal(noDir.done.error?.code, "not_found");
    assert.match(noDir.done.error!.message, /directory .*\/ok\/sub does not exist/);
    assert.equal(srv.requests.length, 0);
    assert.equal(await exists(`${dir}/evil`), false);
  });
});

Deno.test("file.fetch path: uses the server link and its token, never off its origin or with url", async () => {
  await withDir(async (dir) => {
    let home = "";
    // Another origin; its /back sends the request back to the server.
    await using other = serve((url) =>
      url.pathname === "/back"
        ? new Response(null, { status: 302, headers: { location: `${home}/files/tools/app.bin` } })
        : new Response(BODY)
    );
    await using srv = serve((url) => {
      switch (url.pathname) {
        case "/files/tools/app.bin":
          return new Response(BODY);
        case "/files/moved":
          return new Response(null, { status: 302, headers: { location: "/files/tools/app.bin" } });
        case "/files/away":
          return new Response(null, { status: 307, headers: { location: `${other.origin}/x` } });
        case "/files/away-and-back":
          return new Response(null, {
            status: 301,
            headers: { location: `${other.origin}/back` },
          });
        default:
          return new Response("missing", { status: 404 });
      }
    });
    home = srv.origin;
    const link: ServerLink = {
      url: () => srv.origin,
      authorization: () => Promise.resolve("Bearer test-token"),
    };
    await using h = harness(dir, { server: link });
    const dest = `${dir}/app.bin`;
    const token = "Bearer test-token";

    const direct = await fetchNow(h, { path: "tools/app.bin", dest });
    assert.equal(direct.done.error, null, JSON.stringify(direct.done.error));
    assert.equal(direct.done.data?.url, `${srv.origin}/files/tools/app.bin`);
    assert.deepEqual(srv.requests.splice(0), [{ path: "/files/tools/app.bin", auth: token }]);

    const leading = await fetchNow(h, { path: "/tools/app.bin", dest });
    assert.equal(leading.done.error, null);
    assert.deepEqual(srv.requests.splice(0), [{ path: "/files/tools/app.bin", auth: token }]);

    const moved = await fetchNow(h, { path: "moved", dest });
    assert.equal(moved.done.error, null);
    assert.deepEqual(srv.requests.splice(0), [
      { path: "/files/moved", auth: token },
      { path: "/files/tools/app.bin", auth: token },
    ], "same origin: the token goes along");

    await Deno.remove(dest);
    const away = await fetchNow(h, { path: "away", dest });
    assert.equal(away.done.error, null, JSON.stringify(away.done.error));
    assert.deepEqual(srv.requests.splice(0), [{ path: "/files/away", auth: token }]);
    assert.deepEqual(other.requests.splice(0), [{ path: "/x", auth: null }], "no token elsewhere");
    assert.deepEqual(await Deno.readFile(dest), BODY);

    const back = await fetchNow(h, { path: "away-and-back", dest });
    assert.equal(back.done.error, null);
    assert.deepEqual(srv.requests.splice(0), [
      { path: "/files/away-and-back", auth: token },
      { path: "/files/tools/app.bin", auth: null },
    ], "once dropped, the token stays dropped");
    assert.deepEqual(other.requests.splice(0), [{ path: "/back", auth: null }]);

    const viaUrl = await fetchNow(h, { url: `${srv.origin}/files/tools/app.bin`, dest });
    assert.equal(viaUrl.done.error, null);
    assert.deepEqual(srv.requests.splice(0), [{ path: "/files/tools/app.bin", auth: null }]);
  });
});

Deno.test("file.fetch url: credentials in it go to its origin only, and are not reported", async () => {
  await withDir(async (dir) => {
    await using other = blobServer();
    await using srv = serve((url) =>
      url.pathname === "/away"
        ? new Response(null, { status: 302, headers: { location: `${other.origin}/blob` } })
        : new Response(BODY)
    );
    await using h = harness(dir);
    const withCreds = srv.origin.replace("http://", "http://me:s%40cret@");
    const { done } = await fetchNow(h, { url: `${withCreds}/blob`, dest: `${dir}/a` });
    assert.equal(done.error, null);
    assert.equal(done.data?.url, `${srv.origin}/blob`);
    assert.deepEqual(srv.requests.splice(0), [{
      path: "/blob",
      auth: `Basic ${btoa("me:s@cret")}`,
    }]);
    const away = await fetchNow(h, { url: `${withCreds}/away`, dest: `${dir}/a` });
    assert.equal(away.done.error, null);
    assert.equal(srv.requests[0].auth, `Basic ${btoa("me:s@cret")}`);
    assert.deepEqual(other.requests, [{ path: "/blob", auth: null }]);
  });
});

Deno.test("file.fetch path: without a server is unavailable", async () => {
  await withDir(async (dir) => {
    await using h = harness(dir);
    const { done } = await fetchNow(h, { path: "tools/app.bin", dest: `${dir}/a` });
    assert.equal(done.error?.code, "unavailable");
    assert.match(done.error!.message, /not connected/);
  });
});

Deno.test("file.fetch follows at most 5 redirects", async () => {
  await withDir(async (dir) => {
    await using srv = serve((url) => {
      const n = Number(url.pathname.slice(1));
      return n === 0
        ? new Response(BODY)
        : new Response(null, { status: 302, headers: { location: `/${n - 1}` } });
    });
    await using h = harness(dir);
    const five = await fetchNow(h, { url: `${srv.origin}/5`, dest: `${dir}/a` });
    assert.equal(five.done.error, null);
    assert.equal(srv.requests.length, 6);
    const six = await fetchNow(h, { url: `${srv.origin}/6`, dest: `${dir}/b` });
    assert.equal(six.done.error?.code, "unavailable");
    assert.match(six.done.error!.message, /more than 5 redirects/);
    assert.equal(await exists(`${dir}/b`), false);
  });
});

Deno.test("file.fetch: 404 is not_found, other failures name their status", async () => {
  await withDir(async (dir) => {
    await using srv = serve((url) =>
      url.pathname === "/boom"
        ? new Response("boom", { status: 503 })
        : new Response("missing", { status: 404 })
    );
    await using h = harness(dir);
    const missing = await fetchNow(h, { url: `${srv.origin}/nope`, dest: `${dir}/a` });
    assert.equal(missing.done.error?.code, "not_found");
    assert.match(missing.done.error!.message, /\/nope answered 404/);
    const boom = await fetchNow(h, { url: `${srv.origin}/boom`, dest: `${dir}/a` });
    assert.equal(boom.done.error?.code, "unavailable");
    assert.match(boom.done.error!.message, /answered 503/);
    assert.deepEqual(await listDir(dir), []);
  });
});

Deno.test("file.fetch stops at maxBytes, by Content-Length or while streaming", async () => {
  await withDir(async (dir) => {
    const kib = bytesOf(1024);
    await using srv = serve((url) => {
      if (url.pathname === "/sized") return new Response(bytesOf(2048));
      // No Content-Length: three chunks of 1 KiB.
      let sent = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent++ < 3) controller.enqueue(kib);
            else controller.close();
          },
        }),
      );
    });
    await using h = harness(dir);
    const sized = await fetchNow(h, {
      url: `${srv.origin}/sized`,
      dest: `${dir}/a`,
      maxBytes: 1024,
    });
    assert.equal(sized.done.error?.code, "resource_limit");
    assert.match(sized.done.error!.message, /Content-Length is 2048/);
    const streamed = await fetchNow(h, {
      url: `${srv.origin}/streamed`,
      dest: `${dir}/a`,
      maxBytes: "2KiB",
    });
    assert.equal(streamed.done.error?.code, "resource_limit");
    assert.match(streamed.done.error!.message, /larger than maxBytes \(2048 bytes\)/);
    assert.deepEqual(await listDir(dir), [], "no temporary file left");
    const fits = await fetchNow(h, {
      url: `${srv.origin}/streamed`,
      dest: `${dir}/a`,
      maxBytes: "3KiB",
    });
    assert.equal(fits.done.error, null);
    assert.equal(fits.done.data?.bytes, 3072);
  });
});

Deno.test("file.fetch reports progress for a large body, at most once a second", async () => {
  await withDir(async (dir) => {
    const clock = new FakeClock(0);
    const chunk = bytesOf(64 * 1024);
    const chunks = 48; // 3 MiB; the clock moves 250 ms per chunk served
    await using srv = serve(() => {
      let sent = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (sent++ === chunks) return controller.close();
            await clock.advance(250);
            await new Promise((resolve) => setTimeout(resolve, 2)); // served slowly
            controller.enqueue(chunk);
          },
        }),
        { headers: { "content-length": String(chunks * chunk.length) } },
      );
    });
    await using h = harness(dir, { clock });
    const { done, replies } = await fetchNow(h, { url: `${srv.origin}/big`, dest: `${dir}/big` });
    assert.equal(done.error, null, JSON.stringify(done.error));
    assert.equal(done.data?.bytes, 3 * MiB);
    const progress = replies.filter((f): f is Output => f.type === "output" && !!f.data?.progress);
    assert.ok(progress.length >= 2 && progress.length <= 12, `${progress.length} progress outputs`);
    let last = { bytes: 0, percent: -1, ts: -Infinity };
    for (const frame of progress) {
      const p = frame.data!.progress as { bytes: number; total: number; percent: number };
      assert.equal(p.total, 3 * MiB);
      assert.ok(p.bytes > last.bytes && p.percent > last.percent, JSON.stringify(p));
      assert.equal(p.percent, Math.floor(p.bytes * 100 / p.total));
      assert.ok(frame.ts - last.ts >= 1000, "at most once a second");
      last = { bytes: p.bytes, percent: p.percent, ts: frame.ts };
    }
  });
});

Deno.test("file.fetch applies mode; keeps a replaced file's mode when none is given", async () => {
  await withDir(async (dir) => {
    await using srv = blobServer();
    await using h = harness(dir);
    const url = `${srv.origin}/blob`;
    const cases: { mode?: string | number; want: number }[] = [
      { mode: "0640", want: 0o640 },
      { mode: 0o755, want: 0o755 },
      { mode: "600", want: 0o600 },
      { want: 0o600 }, // replaced: keeps its mode
    ];
    for (const c of cases) {
      const { done } = await fetchNow(h, { url, dest: `${dir}/m`, mode: c.mode });
      assert.equal(done.error, null);
      assert.equal((await Deno.stat(`${dir}/m`)).mode! & 0o777, c.want, JSON.stringify(c));
    }
    await Deno.chmod(`${dir}/m`, 0o644);
    await fetchNow(h, { url, dest: `${dir}/m` });
    assert.equal((await Deno.stat(`${dir}/m`)).mode! & 0o777, 0o644);
  });
});

Deno.test("file.fetch does not download when dest already has the sha256", async () => {
  await withDir(async (dir) => {
    await using srv = blobServer();
    await using h = harness(dir);
    await Deno.writeFile(`${dir}/have`, BODY, { mode: 0o600 });
    const { done } = await fetchNow(h, {
      url: `${srv.origin}/blob`,
      dest: `${dir}/have`,
      sha256: BODY_SHA.toUpperCase(),
      mode: "0644",
    });
    assert.equal(done.error, null);
    assert.deepEqual(done.data, {
      dest: `${dir}/have`,
      bytes: BODY.length,
      sha256: BODY_SHA,
      url: `${srv.origin}/blob`,
      unchanged: true,
    });
    assert.equal(srv.requests.length, 0, "no request");
    assert.equal((await Deno.stat(`${dir}/have`)).mode! & 0o777, 0o644, "mode still applied");

    // Other content: downloaded.
    await Deno.writeTextFile(`${dir}/have`, "stale");
    const again = await fetchNow(h, {
      url: `${srv.origin}/blob`,
      dest: `${dir}/have`,
      sha256: BODY_SHA,
    });
    assert.equal(again.done.data?.unchanged, undefined);
    assert.equal(srv.requests.length, 1);
    assert.deepEqual(await Deno.readFile(`${dir}/have`), BODY);
  });
});

Deno.test("file.fetch timeout and stop abort the download and remove the temporary file", async (t) => {
  await withDir(async (dir) => {
    const clock = new FakeClock(0);
    // Sends one chunk, then nothing until the client goes away.
    await using srv = serve(() =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(bytesOf(1024));
          },
        }),
      )
    );
    const part = async () => (await listDir(dir)).some((n) => n.endsWith(".part"));

    await t.step("timeout", async () => {
      await using h = harness(dir, { clock });
      const run = fetchNow(h, { url: `${srv.origin}/hang`, dest: `${dir}/t`, timeout: "30s" });
      await waitFor(part, "the temporary file");
      await clock.advance(30_000);
      const { done } = await run;
      assert.equal(done.error?.code, "timeout");
      assert.match(done.error!.message, /took longer than 30s/);
      assert.deepEqual(await listDir(dir), []);
    });

    await t.step("agent stops", async () => {
      await using h = harness(dir, { clock });
      const run = fetchNow(h, { url: `${srv.origin}/hang`, dest: `${dir}/s` });
      await waitFor(part, "the temporary file");
      await h.runner.close();
      const { done } = await run;
      assert.equal(done.error?.code, "closed");
      assert.deepEqual(await listDir(dir), []);
    });
  });
});

Deno.test("file.fetch refuses bad arguments", async (t) => {
  await using h = harness("/tmp");
  const cases: { name: string; args: Record<string, unknown>; msg: RegExp }[] = [
    { name: "neither", args: { dest: "/tmp/x" }, msg: /exactly one of url and path/ },
    {
      name: "both",
      args: { url: "http://127.0.0.1/x", path: "x", dest: "/tmp/x" },
      msg: /exactly one of url and path/,
    },
    { name: "ftp", args: { url: "ftp://h/x", dest: "/tmp/x" }, msg: /http:\/\/ or https:\/\// },
    { name: "relative dest", args: { path: "x", dest: "x" }, msg: /absolute/ },
    { name: "dot-dot path", args: { path: "a/../b", dest: "/tmp/x" }, msg: /\.\. segments/ },
    { name: "sha256", args: { path: "x", dest: "/tmp/x", sha256: "abc" }, msg: /64 hex/ },
    { name: "mode", args: { path: "x", dest: "/tmp/x", mode: "0999" }, msg: /octal/ },
    { name: "setuid", args: { path: "x", dest: "/tmp/x", mode: "4755" }, msg: /setuid/ },
    { name: "maxBytes", args: { path: "x", dest: "/tmp/x", maxBytes: "lots" }, msg: /size/ },
    { name: "timeout", args: { path: "x", dest: "/tmp/x", timeout: "soon" }, msg: /duration/ },
    { name: "unknown", args: { path: "x", dest: "/tmp/x", force: true }, msg: /force/ },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { done } = await fetchNow(h, c.args);
      assert.equal(done.error?.code, "invalid_args");
      assert.match(done.error!.message, c.msg);
    });
  }
});
