import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { FilesConfig } from "../../shared/config/files.ts";
import { silentLogger } from "../../shared/log.ts";
import { fixture } from "./_testing.ts";
import { createFilesHandler } from "./handler.ts";

const TEXT = "0123456789abcdefghij"; // 20 bytes

Deno.test("files: GET serves a file with its type, length, validators and ranges", async () => {
  await using f = await fixture();
  await f.write("dir/hello.txt", TEXT);
  const res = await f.get("dir/hello.txt");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), TEXT);
  assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(res.headers.get("content-length"), "20");
  assert.equal(res.headers.get("accept-ranges"), "bytes");
  assert.match(res.headers.get("etag") ?? "", /^"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"$/);
  const lastModified = res.headers.get("last-modified");
  assert.ok(lastModified && Number.isFinite(Date.parse(lastModified)), String(lastModified));
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
});

Deno.test("files: HEAD answers the same headers without a body", async () => {
  await using f = await fixture();
  await f.write("a.json", '{"a":1}');
  const get = await f.get("a.json");
  await get.body?.cancel();
  const head = await f.get("a.json", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.body, null);
  for (const h of ["content-type", "content-length", "etag", "last-modified", "accept-ranges"]) {
    assert.equal(head.headers.get(h), get.headers.get(h), h);
  }
  assert.equal(head.headers.get("content-type"), "application/json");
  assert.equal(head.headers.get("content-length"), "7");
});

Deno.test("files: content types by extension", async (t) => {
  await using f = await fixture();
  const cases: [string, string][] = [
    ["a.txt", "text/plain; charset=utf-8"],
    ["a.yaml", "application/yaml"],
    ["a.YML", "application/yaml"],
    ["install.sh", "application/x-sh"],
    ["a.tar", "application/x-tar"],
    ["a.tar.gz", "application/gzip"],
    ["a.tgz", "application/gzip"],
    ["a.zip", "application/zip"],
    ["a.deb", "application/vnd.debian.binary-package"],
    ["a.rpm", "application/x-rpm"],
    ["index.html", "text/html; charset=utf-8"],
    ["a.css", "text/css; charset=utf-8"],
    ["a.js", "text/javascript; charset=utf-8"],
    ["a.png", "image/png"],
    ["a.jpg", "image/jpeg"],
    ["a.svg", "image/svg+xml"],
    ["a.pdf", "application/pdf"],
    ["blob.bin", "application/octet-stream"],
    ["noext", "application/octet-stream"],
    [".hidden", "application/octet-stream"],
  ];
  for (const [name, type] of cases) {
    await t.step(name, async () => {
      await f.write(name, "x");
      const res = await f.get(name, { method: "HEAD" });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), type);
    });
  }
});

Deno.test("files: If-None-Match and If-Modified-Since answer 304", async () => {
  await using f = await fixture();
  await f.write("a.txt", TEXT);
  const first = await f.get("a.txt");
  await first.body?.cancel();
  const etag = first.headers.get("etag")!;
  const lastModified = first.headers.get("last-modified")!;

  const same = await f.get("a.txt", { headers: { "if-none-match": etag } });
  assert.equal(same.status, 304);
  assert.equal(same.body, null);
  assert.equal(same.headers.get("etag"), etag);
  const listed = await f.get("a.txt", { headers: { "if-none-match": `"nope", W/${etag}` } });
  assert.equal(listed.status, 304);

  const other = await f.get("a.txt", { headers: { "if-none-match": '"something-else"' } });
  assert.equal(other.status, 200);
  assert.equal(await other.text(), TEXT);

  const since = await f.get("a.txt", { headers: { "if-modified-since": lastModified } });
  assert.equal(since.status, 304);
  const before = new Date(Date.parse(lastModified) - 60_000).toUTCString();
  const older = await f.get("a.txt", { headers: { "if-modified-since": before } });
  assert.equal(older.status, 200);
  await older.body?.cancel();
  // If-None-Match wins over If-Modified-Since.
  const both = await f.get("a.txt", {
    headers: { "if-none-match": '"other"', "if-modified-since": lastModified },
  });
  assert.equal(both.status, 200);
  await both.body?.cancel();

  // A changed file gets a new ETag.
  await f.write("a.txt", TEXT + "more");
  const changed = await f.get("a.txt", { headers: { "if-none-match": etag } });
  assert.equal(changed.status, 200);
  assert.notEqual(changed.headers.get("etag"), etag);
  assert.equal(await changed.text(), TEXT + "more");
});

Deno.test("files: Range requests", async (t) => {
  await using f = await fixture();
  await f.write("r.bin", TEXT);
  const cases: [string, string, number, string | null, string][] = [
    ["first bytes", "bytes=0-4", 206, "bytes 0-4/20", "01234"],
    ["middle", "bytes=5-9", 206, "bytes 5-9/20", "56789"],
    ["suffix", "bytes=-3", 206, "bytes 17-19/20", "hij"],
    ["open end", "bytes=15-", 206, "bytes 15-19/20", "fghij"],
    ["end past the file", "bytes=18-100", 206, "bytes 18-19/20", "ij"],
    ["suffix longer than the file", "bytes=-50", 206, "bytes 0-19/20", TEXT],
    ["several ranges: whole file", "bytes=0-1,5-6", 200, null, TEXT],
    ["another unit: whole file", "items=0-1", 200, null, TEXT],
    ["malformed: whole file", "bytes=5-2", 200, null, TEXT],
  ];
  for (const [name, range, status, contentRange, body] of cases) {
    await t.step(name, async () => {
      const res = await f.get("r.bin", { headers: { range } });
      assert.equal(res.status, status);
      assert.equal(res.headers.get("content-range"), contentRange);
      assert.equal(res.headers.get("content-length"), String(body.length));
      assert.equal(await res.text(), body);
    });
  }
  await t.step("unsatisfiable: 416 with the size", async () => {
    for (const range of ["bytes=20-", "bytes=25-30", "bytes=-0"]) {
      const res = await f.get("r.bin", { headers: { range } });
      assert.equal(res.status, 416, range);
      assert.equal(res.headers.get("content-range"), "bytes */20");
      await res.body?.cancel();
    }
  });
  await t.step("If-Range with a stale ETag gets the whole file", async () => {
    const res = await f.get("r.bin", { headers: { range: "bytes=0-1", "if-range": '"old"' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), TEXT);
  });
  await t.step("If-Range with the current ETag gets the range", async () => {
    const head = await f.get("r.bin", { method: "HEAD" });
    const etag = head.headers.get("etag")!;
    const res = await f.get("r.bin", { headers: { range: "bytes=0-1", "if-range": etag } });
    assert.equal(res.status, 206);
    assert.equal(await res.text(), "01");
  });
  await t.step("HEAD with a range: 206 headers, no body", async () => {
    const res = await f.get("r.bin", { method: "HEAD", headers: { range: "bytes=2-3" } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get("content-length"), "2");
    assert.equal(res.body, null);
  });
});

Deno.test("files: a large file streams in chunks and a cancelled body closes the file", async () => {
  await using f = await fixture();
  const big = new Uint8Array(300_000).map((_, i) => i % 251);
  await f.write("big.bin", big);
  const res = await f.get("big.bin");
  let chunks = 0;
  const got: number[] = [];
  for await (const chunk of res.body!) {
    chunks++;
    got.push(...chunk);
  }
  assert.ok(chunks > 1, `${chunks} chunks`);
  assert.deepEqual(new Uint8Array(got), big);
  const cut = await f.get("big.bin");
  const reader = cut.body!.getReader();
  assert.equal((await reader.read()).done, false);
  await reader.cancel(); // the sanitizer fails the test if the file stayed open
});

Deno.test("files: directories are 404 without listing", async () => {
  await using f = await fixture();
  await f.write("dir/a.txt", "a");
  for (const path of ["", "dir", "dir/"]) {
    const res = await f.get(path);
    assert.equal(res.status, 404, path);
    assert.equal((await res.json()).error.code, "not_found");
  }
});

Deno.test("files: listing as JSON and as escaped HTML", async () => {
  await using f = await fixture({ listing: true });
  await f.write("dir/b.txt", "bb");
  await f.write("dir/sub/c.txt", "c");
  await f.write("dir/<x>&'y\".txt", "evil");
  await Deno.symlink(`${f.base}/outside`, `${f.root}/dir/out`);
  await Deno.symlink(`${f.root}/dir/b.txt`, `${f.root}/dir/link.txt`);

  const json = await f.get("dir/", { headers: { accept: "application/json" } });
  assert.equal(json.status, 200);
  assert.equal(json.headers.get("content-type"), "application/json");
  const listing = await json.json();
  assert.equal(listing.path, "/dir/");
  const names = listing.entries.map((e: { name: string }) => e.name);
  assert.deepEqual(names, ["<x>&'y\".txt", "b.txt", "link.txt", "sub"]);
  const b = listing.entries.find((e: { name: string }) => e.name === "b.txt");
  assert.equal(b.type, "file");
  assert.equal(b.size, 2);
  assert.ok(Number.isFinite(Date.parse(b.mtime)));
  const sub = listing.entries.find((e: { name: string }) => e.name === "sub");
  assert.deepEqual([sub.type, sub.size], ["directory", null]);

  const html = await f.get("dir/");
  assert.equal(html.status, 200);
  assert.equal(html.headers.get("content-type"), "text/html; charset=utf-8");
  const page = await html.text();
  assert.ok(page.includes("&#60;x&#62;&#38;&#39;y&#34;.txt"), page);
  assert.ok(!page.includes("<x>"), page);
  assert.ok(page.includes('href="sub/"'), page);
  assert.ok(page.includes('href="../"'), page);
  assert.ok(!page.includes("out"), "a symlink leaving the root is not listed");

  const top = await f.get("", { headers: { accept: "application/json" } });
  const topListing = await top.json();
  assert.equal(topListing.path, "/");
  assert.deepEqual(topListing.entries.map((e: { name: string }) => e.name), ["dir"]);

  const noSlash = await f.get("dir/sub");
  assert.equal(noSlash.status, 301);
  assert.equal(noSlash.headers.get("location"), "sub/");
});

Deno.test("files: methods other than GET and HEAD get 405", async () => {
  await using f = await fixture();
  await f.write("a.txt", "a");
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    const res = await f.get("a.txt", { method });
    assert.equal(res.status, 405, method);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    await res.body?.cancel();
  }
});

Deno.test("files: traversal attempts are refused without naming real paths", async (t) => {
  await using f = await fixture();
  await f.write("a/b.txt", "inside");
  const cases: [string, number][] = [
    ["../x", 400],
    ["../outside/secret.txt", 400],
    ["%2e%2e/x", 400],
    ["%2E%2E/outside/secret.txt", 400],
    ["a/%2e%2e/%2e%2e/outside/secret.txt", 400],
    ["a/./b.txt", 400],
    ["a%2f..%2f..%2foutside%2fsecret.txt", 400],
    ["a%2Fb.txt", 400],
    ["..%5cx", 400],
    ["a\\b.txt", 400],
    ["%2Fetc%2Fpasswd", 400],
    ["/etc/passwd", 400],
    ["%00", 400],
    ["a/b.txt%00.png", 400],
    ["a//b.txt", 400],
    ["%zz", 400],
    ["%ff", 400],
    ["a/%0a", 400],
    ["x".repeat(300), 400],
    // Decoded once: the name is literally "%2e%2e", which does not exist.
    ["%252e%252e/outside/secret.txt", 404],
  ];
  for (const [path, status] of cases) {
    await t.step(JSON.stringify(path), async () => {
      const res = await f.get(path);
      assert.equal(res.status, status);
      const text = await res.text();
      assert.ok(!text.includes(f.base), text);
      assert.ok(!text.includes("top secret"), text);
      const body = JSON.parse(text);
      assert.equal(body.error.code, status === 400 ? "usage" : "not_found");
    });
  }
  const ok = await f.get("a/b.txt");
  assert.equal(await ok.text(), "inside");
});

Deno.test("files: symlinks are followed only while they stay inside the root", async () => {
  await using f = await fixture({ listing: true });
  await f.write("real/inside.txt", "inside");
  await Deno.symlink(`${f.base}/outside/secret.txt`, `${f.root}/secret.txt`);
  await Deno.symlink(`${f.base}/outside`, `${f.root}/outdir`);
  await Deno.symlink(`${f.root}/real/inside.txt`, `${f.root}/in.txt`);
  await Deno.symlink("real", `${f.root}/indir`);
  await Deno.symlink("loop", `${f.root}/loop`);

  for (const path of ["secret.txt", "outdir/secret.txt", "outdir/", "outdir", "loop"]) {
    const res = await f.get(path);
    assert.equal(res.status, 404, path);
    const text = await res.text();
    assert.ok(!text.includes("top secret") && !text.includes(f.base), text);
  }
  const file = await f.get("in.txt");
  assert.equal(file.status, 200);
  assert.equal(await file.text(), "inside");
  const viaDir = await f.get("indir/inside.txt");
  assert.equal(viaDir.status, 200);
  assert.equal(await viaDir.text(), "inside");
});

Deno.test("files: the root itself may be a symlink", async () => {
  await using f = await fixture();
  await f.write("a.txt", "via link");
  const link = `${f.base}/rootlink`;
  await Deno.symlink(f.root, link);
  await using handler = createFilesHandler({
    config: FilesConfig.parse({ root: link }),
    cacheDir: `${f.base}/cache2`,
    clock: new FakeClock(),
    logger: silentLogger,
  });
  const res = await handler.handle(new Request("http://x/files/a.txt"), "a.txt");
  assert.equal(await res.text(), "via link");
});

Deno.test("files: missing files, files asked as directories and a missing root are 404", async () => {
  await using f = await fixture();
  await f.write("a.txt", "a");
  for (const path of ["nope.txt", "a.txt/", "a.txt/x", "d/e/f"]) {
    const res = await f.get(path);
    assert.equal(res.status, 404, path);
    await res.body?.cancel();
  }
  await Deno.remove(f.root, { recursive: true });
  const gone = await f.get("a.txt");
  assert.equal(gone.status, 404);
  await gone.body?.cancel();
});

Deno.test("files: without a root the service is off", async () => {
  await using handler = createFilesHandler({
    config: FilesConfig.parse({}),
    cacheDir: "/nonexistent/cache",
    clock: new FakeClock(),
    logger: silentLogger,
  });
  const res = await handler.handle(new Request("http://x/files/a.txt"), "a.txt");
  assert.equal(res.status, 404);
  assert.match((await res.json()).error.message, /file service is off: no files\.root/);
});

Deno.test("files: after close() requests get 503", async () => {
  await using f = await fixture();
  await f.write("a.txt", "a");
  await f.handler.close();
  const res = await f.get("a.txt");
  assert.equal(res.status, 503);
  assert.equal((await res.json()).error.code, "closed");
});
