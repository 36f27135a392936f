import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { FilesConfig } from "../../shared/config/files.ts";
import { isJwError } from "../../shared/errors.ts";
import { silentLogger } from "../../shared/log.ts";
import { deadUrl, FakeUpstream, fixture, gate, sha256Hex } from "./_testing.ts";
import { createFilesHandler } from "./handler.ts";
import { UpstreamCache } from "./upstream.ts";

const CONTENT = "release 1.2.3 contents\n";

function digestOf(hex: string): string {
  return btoa(String.fromCharCode(...hex.match(/../g)!.map((h) => parseInt(h, 16))));
}

Deno.test("upstream: a missing file is fetched once, kept and served from the cache", async () => {
  await using up = new FakeUpstream();
  up.files.set("rel/app%201.2.tar.gz", CONTENT);
  await using f = await fixture({ upstreams: [up.url] });
  const hex = await sha256Hex(CONTENT);

  const first = await f.get("rel/app%201.2.tar.gz");
  assert.equal(first.status, 200);
  assert.equal(await first.text(), CONTENT);
  assert.equal(first.headers.get("content-type"), "application/gzip");
  assert.equal(first.headers.get("x-checksum-sha256"), hex);
  assert.equal(first.headers.get("digest"), `sha-256=${digestOf(hex)}`);
  assert.equal(first.headers.get("etag"), `"sha256-${hex}"`);
  assert.equal(up.hits.get("rel/app%201.2.tar.gz"), 1);

  const second = await f.get("rel/app%201.2.tar.gz");
  assert.equal(second.status, 200);
  assert.equal(await second.text(), CONTENT);
  assert.equal(second.headers.get("x-checksum-sha256"), hex);
  const ranged = await f.get("rel/app%201.2.tar.gz", { headers: { range: "bytes=0-6" } });
  assert.equal(ranged.status, 206);
  assert.equal(await ranged.text(), "release");
  const cond = await f.get("rel/app%201.2.tar.gz", {
    headers: { "if-none-match": `"sha256-${hex}"` },
  });
  assert.equal(cond.status, 304);
  const head = await f.get("rel/app%201.2.tar.gz", { method: "HEAD" });
  assert.equal(head.headers.get("content-length"), String(CONTENT.length));
  assert.equal(head.body, null);
  assert.equal(up.total, 1, "the upstream was asked once");

  // The cache directory holds the content and its sidecar.
  const files = await f.cacheFiles();
  assert.equal(files.filter((p) => p.startsWith("objects/")).length, 2, files.join(","));
  const sidecar = files.find((p) => p.endsWith(".json"))!;
  const meta = JSON.parse(await Deno.readTextFile(`${f.cache}/${sidecar}`));
  assert.equal(meta.path, "rel/app 1.2.tar.gz");
  assert.equal(meta.sha256, hex);
  assert.equal(meta.size, CONTENT.length);
  assert.equal(meta.upstream, `${up.url}/rel/app%201.2.tar.gz`);

  // A new handler over the same cache directory serves it with its upstream gone.
  await using again = createFilesHandler({
    config: FilesConfig.parse({ root: f.root, upstreams: [await deadUrl()] }),
    cacheDir: f.cache,
    clock: new FakeClock(),
    logger: silentLogger,
  });
  const kept = await again.handle(
    new Request("http://x/files/rel/app%201.2.tar.gz"),
    "rel/app%201.2.tar.gz",
  );
  assert.equal(kept.status, 200);
  assert.equal(await kept.text(), CONTENT);
  assert.equal(kept.headers.get("x-checksum-sha256"), hex);
});

Deno.test("upstream: files under the root win over the cache", async () => {
  await using up = new FakeUpstream();
  up.files.set("a.txt", "from upstream");
  await using f = await fixture({ upstreams: [up.url] });
  assert.equal(await (await f.get("a.txt")).text(), "from upstream");
  await f.write("a.txt", "from root");
  const res = await f.get("a.txt");
  assert.equal(await res.text(), "from root");
  assert.equal(res.headers.get("x-checksum-sha256"), null);
  assert.equal(up.total, 1);
});

Deno.test("upstream: concurrent requests for one missing file share one fetch", async () => {
  await using up = new FakeUpstream();
  const release = gate();
  up.files.set("slow.bin", async () => {
    await release.promise;
    return new Response(CONTENT);
  });
  await using f = await fixture({ upstreams: [up.url] });
  const arrived = up.nextRequest();
  const answers = Array.from({ length: 8 }, () => f.get("slow.bin"));
  await arrived;
  release.open();
  const responses = await Promise.all(answers);
  for (const res of responses) {
    assert.equal(res.status, 200);
    assert.equal(await res.text(), CONTENT);
  }
  assert.equal(up.hits.get("slow.bin"), 1);
});

Deno.test("UpstreamCache.get() joins a fetch in progress for the same path", async () => {
  await using up = new FakeUpstream();
  const release = gate();
  up.files.set("x", async () => {
    await release.promise;
    return new Response("x!");
  });
  const dir = await Deno.makeTempDir({ prefix: "jw-files-cache-" });
  try {
    await using cache = new UpstreamCache({
      dir,
      upstreams: [up.url],
      maxBytes: 1000,
      timeoutMs: 30_000,
      clock: new FakeClock(),
      logger: silentLogger,
    });
    const arrived = up.nextRequest();
    const gets = Array.from({ length: 5 }, () => cache.get("x", "x"));
    assert.equal(cache.inflight, 1);
    await arrived;
    release.open();
    const kept = await Promise.all(gets);
    assert.ok(kept.every((k) => k.path === kept[0].path && k.size === 2));
    assert.equal(cache.inflight, 0);
    assert.equal(up.hits.get("x"), 1);
    assert.equal((await cache.lookup("x"))?.sha256, await sha256Hex("x!"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("upstream: 404 moves on to the next upstream; all 404 is 404", async () => {
  await using one = new FakeUpstream();
  await using two = new FakeUpstream();
  two.files.set("only-two.txt", "two");
  await using f = await fixture({ upstreams: [one.url, two.url] });
  const res = await f.get("only-two.txt");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "two");
  assert.deepEqual([one.hits.get("only-two.txt"), two.hits.get("only-two.txt")], [1, 1]);

  const none = await f.get("nowhere.txt");
  assert.equal(none.status, 404);
  assert.equal((await none.json()).error.code, "not_found");
  assert.deepEqual([one.hits.get("nowhere.txt"), two.hits.get("nowhere.txt")], [1, 1]);
  assert.deepEqual(
    (await f.cacheFiles()).filter((p) => p.endsWith(".json")).length,
    1,
    "only the file found is kept",
  );
});

Deno.test("upstream: directories and refused paths never reach upstreams", async () => {
  await using up = new FakeUpstream();
  await using f = await fixture({ upstreams: [up.url] });
  for (const path of ["", "dir/", "../x", "%2e%2e/x"]) {
    const res = await f.get(path);
    assert.ok(res.status === 404 || res.status === 400, `${path}: ${res.status}`);
    await res.body?.cancel();
  }
  await Deno.symlink(`${f.base}/outside/secret.txt`, `${f.root}/secret.txt`);
  const res = await f.get("secret.txt");
  assert.equal(res.status, 404);
  await res.body?.cancel();
  assert.equal(up.total, 0);
});

Deno.test("upstream: an upstream that is down gives 502; the next one is tried", async () => {
  const dead = await deadUrl();
  await using up = new FakeUpstream();
  up.files.set("b.txt", "bee");
  {
    await using f = await fixture({ upstreams: [dead] });
    const res = await f.get("b.txt");
    assert.equal(res.status, 502);
    const body = await res.json();
    assert.equal(body.error.code, "unavailable");
    assert.match(body.error.message, /^http:\/\/127\.0\.0\.1:\d+: request failed/);
    assert.deepEqual(await f.cacheFiles(), []);
  }
  await using f = await fixture({ upstreams: [dead, up.url] });
  const res = await f.get("b.txt");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "bee");
});

Deno.test("upstream: an error status gives 502 and nothing is kept", async () => {
  await using up = new FakeUpstream();
  up.files.set("e.txt", () => new Response("boom", { status: 500 }));
  await using f = await fixture({ upstreams: [up.url] });
  const res = await f.get("e.txt");
  assert.equal(res.status, 502);
  assert.match((await res.json()).error.message, /answered HTTP 500/);
  assert.deepEqual(await f.cacheFiles(), []);
  // Not remembered as a failure: the next request asks again.
  const again = await f.get("e.txt");
  await again.body?.cancel();
  assert.equal(up.hits.get("e.txt"), 2);
});

Deno.test("upstream: no answer within upstreamTimeout gives 502", async () => {
  await using up = new FakeUpstream();
  const release = gate();
  up.files.set("hang.txt", async () => {
    await release.promise;
    return new Response("late");
  });
  await using f = await fixture({ upstreams: [up.url], upstreamTimeout: "5s" });
  try {
    const arrived = up.nextRequest();
    const pending = f.get("hang.txt");
    await arrived;
    await f.clock.advance(5000);
    const res = await pending;
    assert.equal(res.status, 502);
    const body = await res.json();
    assert.equal(body.error.code, "timeout");
    assert.match(body.error.message, /did not answer within 5000ms/);
  } finally {
    release.open();
  }
  assert.deepEqual(await f.cacheFiles(), []);
});

Deno.test("upstream: a body that stalls past upstreamTimeout gives 502, nothing kept", async () => {
  await using up = new FakeUpstream();
  const release = gate();
  up.files.set("stall.bin", () =>
    new Response(
      new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(new TextEncoder().encode("first part"));
          await release.promise;
          controller.close();
        },
      }),
    ));
  const answered = gate();
  const watching: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    answered.open();
    return res;
  };
  await using f = await fixture({ upstreams: [up.url], upstreamTimeout: "5s" }, watching);
  try {
    const pending = f.get("stall.bin");
    await answered.promise;
    await f.clock.advance(5000);
    const res = await pending;
    assert.equal(res.status, 502);
    assert.equal((await res.json()).error.code, "timeout");
  } finally {
    release.open();
  }
  assert.deepEqual(await f.cacheFiles(), []);
});

Deno.test("upstream: a file over maxBytes is refused and not kept", async (t) => {
  await using up = new FakeUpstream();
  const big = "x".repeat(100);
  up.files.set("declared.bin", big);
  up.files.set("streamed.bin", () =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < 10; i++) controller.enqueue(new TextEncoder().encode(big));
          controller.close();
        },
      }),
    ));
  up.files.set("fits.bin", "x".repeat(64));
  await using f = await fixture({ upstreams: [up.url], maxBytes: 64 });
  for (const path of ["declared.bin", "streamed.bin"]) {
    await t.step(path, async () => {
      const res = await f.get(path);
      assert.equal(res.status, 502);
      const body = await res.json();
      assert.equal(body.error.code, "resource_limit");
      assert.match(body.error.message, /larger than the 64 bytes allowed from upstreams/);
      assert.deepEqual(await f.cacheFiles(), []);
    });
  }
  await t.step("exactly maxBytes is kept", async () => {
    const res = await f.get("fits.bin");
    assert.equal(res.status, 200);
    assert.equal((await res.text()).length, 64);
    assert.equal((await f.cacheFiles()).filter((p) => p.endsWith(".json")).length, 1);
  });
});

Deno.test("upstream: a damaged cache entry is fetched again", async () => {
  await using up = new FakeUpstream();
  up.files.set("d.txt", CONTENT);
  await using f = await fixture({ upstreams: [up.url] });
  await (await f.get("d.txt")).body?.cancel();
  const data = (await f.cacheFiles()).find((p) =>
    p.startsWith("objects/") && !p.endsWith(".json")
  )!;
  await Deno.writeTextFile(`${f.cache}/${data}`, "truncated");
  const res = await f.get("d.txt");
  assert.equal(await res.text(), CONTENT);
  assert.equal(up.hits.get("d.txt"), 2);
});

Deno.test("upstream: close() stops a fetch in progress with 503", async () => {
  await using up = new FakeUpstream();
  const release = gate();
  up.files.set("c.txt", async () => {
    await release.promise;
    return new Response("late");
  });
  await using f = await fixture({ upstreams: [up.url] });
  try {
    const arrived = up.nextRequest();
    const pending = f.get("c.txt");
    await arrived;
    await f.handler.close();
    const res = await pending;
    assert.equal(res.status, 503);
    assert.equal((await res.json()).error.code, "closed");
  } finally {
    release.open();
  }
});

Deno.test("UpstreamCache.get() after close() is refused", async () => {
  const cache = new UpstreamCache({
    dir: "/nonexistent",
    upstreams: ["http://127.0.0.1:9"],
    maxBytes: 1,
    timeoutMs: 1,
    clock: new FakeClock(),
    logger: silentLogger,
  });
  await cache.close();
  await assert.rejects(cache.get("a", "a"), (err) => isJwError(err, "closed"));
});
