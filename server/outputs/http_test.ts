import assert from "node:assert/strict";
import { type Clock, FakeClock, realClock } from "../../shared/clock.ts";
import { HttpOutput } from "../../shared/config/outputs.ts";
import { isJwError } from "../../shared/errors.ts";
import { createLogger, silentLogger } from "../../shared/log.ts";
import type { BackendDeps, OutboxItem } from "./backend.ts";
import { createHttpBackend } from "./http.ts";

let nextSeq = 1;

function items(n: number): OutboxItem[] {
  return Array.from({ length: n }, () => {
    const seq = nextSeq++;
    const mid = `s1-${seq}`;
    const body = JSON.stringify({ mid, type: "output", agent: "a1", data: `line ${seq} é` });
    return { seq, mid, type: "output" as const, agent: "a1", key: null, tags: {}, body };
  });
}

function deps(clock: Clock = realClock): BackendDeps {
  return { serverId: "s1", clock, logger: silentLogger };
}

function config(url: string, extra: Record<string, unknown> = {}) {
  return HttpOutput.parse({ name: "h", type: "http", url, ...extra });
}

interface Received {
  method: string;
  url: URL;
  headers: Headers;
  body: string;
}

type Answer = (req: Received) => Response | Promise<Response>;

/** A loopback HTTP receiver that records requests and answers from a script (default 200). */
class Receiver implements AsyncDisposable {
  readonly requests: Received[] = [];
  /** Answers for the next requests, in order; then 200. */
  readonly answers: Answer[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;
  #arrived: (() => void)[] = [];

  constructor(port = 0) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port, onListen: () => {} },
      async (req) => {
        const rec = {
          method: req.method,
          url: new URL(req.url),
          headers: req.headers,
          body: await req.text(),
        };
        this.requests.push(rec);
        for (const f of this.#arrived.splice(0)) f();
        const answer = this.answers.shift();
        return answer ? answer(rec) : new Response("ok");
      },
    );
  }

  get port(): number {
    return this.#server.addr.port;
  }

  url(path = "/ingest"): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Resolves when the next request has arrived. */
  nextRequest(): Promise<void> {
    return new Promise((resolve) => this.#arrived.push(resolve));
  }

  async stop(): Promise<void> {
    await this.#server.shutdown();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

Deno.test("http backend POSTs NDJSON with the configured headers and X-Jw-Batch", async () => {
  await using rx = new Receiver();
  await using backend = createHttpBackend(
    config(rx.url("/ingest?src=jw"), { headers: { "X-Env": "test" } }),
    deps(),
  );
  const batch = items(3);
  await backend.send(batch);
  assert.equal(rx.requests.length, 1);
  const req = rx.requests[0];
  assert.equal(req.method, "POST");
  assert.equal(req.url.pathname, "/ingest");
  assert.equal(req.url.searchParams.get("src"), "jw");
  assert.equal(req.headers.get("content-type"), "application/x-ndjson");
  assert.equal(req.headers.get("x-env"), "test");
  assert.equal(req.headers.get("x-jw-batch"), `${batch[0].mid}-${batch[2].mid}`);
  assert.equal(req.headers.get("authorization"), null);
  assert.equal(req.body, batch.map((i) => i.body + "\n").join(""));
  assert.deepEqual(
    req.body.trimEnd().split("\n").map((l) => JSON.parse(l).mid),
    batch.map((i) => i.mid),
  );
});

Deno.test("http backend POSTs a JSON array with body: json", async () => {
  await using rx = new Receiver();
  await using backend = createHttpBackend(config(rx.url(), { body: "json" }), deps());
  const batch = items(4);
  await backend.send(batch);
  await backend.send(items(1));
  const req = rx.requests[0];
  assert.equal(req.headers.get("content-type"), "application/json");
  assert.deepEqual(JSON.parse(req.body), batch.map((i) => JSON.parse(i.body)));
  assert.deepEqual(JSON.parse(rx.requests[1].body).length, 1);
});

Deno.test("http backend authenticates with bearer, basic, or credentials in the URL", async (t) => {
  await using rx = new Receiver();
  await t.step("bearer", async () => {
    await using backend = createHttpBackend(config(rx.url(), { bearer: "tok-123" }), deps());
    await backend.send(items(1));
    assert.equal(rx.requests.at(-1)!.headers.get("authorization"), "Bearer tok-123");
  });
  await t.step("basic (UTF-8)", async () => {
    await using backend = createHttpBackend(
      config(rx.url(), { basic: { user: "jw", password: "pässword" } }),
      deps(),
    );
    await backend.send(items(1));
    const auth = rx.requests.at(-1)!.headers.get("authorization")!;
    assert.match(auth, /^Basic /);
    const bytes = Uint8Array.from(atob(auth.slice(6)), (c) => c.charCodeAt(0));
    assert.equal(new TextDecoder().decode(bytes), "jw:pässword");
  });
  await t.step("user:password@ in the URL, never in errors", async () => {
    const url = `http://jw:s3cret@127.0.0.1:${rx.port}/ingest`;
    await using backend = createHttpBackend(config(url), deps());
    await backend.send(items(1));
    const auth = rx.requests.at(-1)!.headers.get("authorization")!;
    assert.equal(atob(auth.slice(6)), "jw:s3cret");
    rx.answers.push(() => new Response("nope", { status: 400 }));
    await assert.rejects(
      backend.send(items(1)),
      (e) => isJwError(e, "rejected") && !e.message.includes("s3cret"),
    );
  });
});

Deno.test("http backend: 5xx and 429 are unavailable; the retry delivers the same batch", async () => {
  await using rx = new Receiver();
  await using backend = createHttpBackend(config(rx.url()), deps());
  const batch = items(2);
  rx.answers.push(() => new Response("database is down", { status: 500 }));
  rx.answers.push(() => new Response("slow down", { status: 429 }));
  await assert.rejects(
    backend.send(batch),
    (e) =>
      isJwError(e, "unavailable") && /HTTP 500/.test(e.message) &&
      e.message.includes("database is down"),
  );
  await assert.rejects(
    backend.send(batch),
    (e) => isJwError(e, "unavailable") && /429/.test(e.message),
  );
  await backend.send(batch);
  assert.equal(rx.requests.length, 3);
  assert.equal(rx.requests[2].body, rx.requests[0].body);
});

Deno.test("http backend: other 4xx reject the whole batch with status and a body excerpt", async (t) => {
  await using rx = new Receiver();
  await using backend = createHttpBackend(config(rx.url()), deps());
  await t.step("400", async () => {
    rx.answers.push(() => new Response('{"error":"bad field mid"}', { status: 400 }));
    await assert.rejects(backend.send(items(3)), (e) => {
      assert.ok(isJwError(e, "rejected"));
      assert.match(e.message, /HTTP 400: \{"error":"bad field mid"\}/);
      assert.equal(e.detail?.seqs, undefined, "the whole batch");
      assert.equal(e.detail?.status, 400);
      return true;
    });
  });
  await t.step("413 with a long body: the excerpt is short", async () => {
    rx.answers.push(() => new Response("too large ".repeat(10_000), { status: 413 }));
    await assert.rejects(
      backend.send(items(1)),
      (e) => isJwError(e, "rejected") && /HTTP 413/.test(e.message) && e.message.length < 400,
    );
  });
  await t.step("a redirect is unavailable (configuration), not rejected", async () => {
    rx.answers.push(() =>
      new Response(null, { status: 301, headers: { location: "https://elsewhere.test/" } })
    );
    await assert.rejects(
      backend.send(items(1)),
      (e) => isJwError(e, "unavailable") && e.message.includes("elsewhere.test"),
    );
  });
});

Deno.test("http backend: a slow receiver times out as unavailable (Clock)", async () => {
  await using rx = new Receiver();
  const clock = new FakeClock();
  await using backend = createHttpBackend(config(rx.url(), { timeout: "5s" }), deps(clock));
  const { promise: release, resolve: releaseHandler } = Promise.withResolvers<void>();
  rx.answers.push(async () => {
    await release;
    return new Response("late");
  });
  const arrived = rx.nextRequest();
  const sending = backend.send(items(1));
  await arrived;
  await clock.advance(4999);
  let settled = false;
  sending.then(() => settled = true, () => settled = true);
  await Promise.resolve();
  assert.equal(settled, false, "still waiting before the timeout");
  await clock.advance(1);
  await assert.rejects(
    sending,
    (e) => isJwError(e, "unavailable") && /no answer within 5000 ms/.test(e.message),
  );
  releaseHandler();
  await backend.send(items(1));
  assert.equal(rx.requests.length, 2);
  assert.equal(clock.pending, 0, "no timer left behind");
});

Deno.test("http backend: receiver down is unavailable; back up, the next send delivers", async () => {
  let rx = new Receiver();
  const port = rx.port;
  await using backend = createHttpBackend(config(rx.url()), deps());
  await backend.send(items(1));
  await rx.stop();
  const start = performance.now();
  await assert.rejects(backend.send(items(1)), (e) => isJwError(e, "unavailable"));
  assert.ok(performance.now() - start < 5000, "failed fast");
  rx = new Receiver(port);
  try {
    const batch = items(2);
    await backend.send(batch);
    assert.equal(rx.requests.length, 1);
    assert.equal(rx.requests[0].headers.get("x-jw-batch"), `${batch[0].mid}-${batch[1].mid}`);
  } finally {
    await rx.stop();
  }
});

Deno.test("http backend: bad configuration is refused at creation", () => {
  assert.throws(
    () =>
      createHttpBackend(
        config("http://127.0.0.1:1/", { bearer: "t", basic: { user: "u", password: "p" } }),
        deps(),
      ),
    (e) => isJwError(e, "config") && /bearer or basic/.test(e.message),
  );
  assert.throws(
    () =>
      createHttpBackend(config("http://127.0.0.1:1/", { headers: { "bad name": "x" } }), deps()),
    (e) => isJwError(e, "config") && /headers/.test(e.message),
  );
});

Deno.test("http backend close() is idempotent; send after close is refused", async () => {
  await using rx = new Receiver();
  const backend = createHttpBackend(config(rx.url()), deps());
  await backend.send(items(1));
  await backend.close();
  await backend.close();
  await assert.rejects(backend.send(items(1)), (e) => isJwError(e, "closed"));
  assert.equal(rx.requests.length, 1);
});

Deno.test("http backend logs connects and disconnects once each, without the password", async () => {
  const lines: string[] = [];
  const logger = createLogger("test", { sink: (l) => lines.push(l) });
  let rx = new Receiver();
  const port = rx.port;
  const url = `http://jw:s3cret@127.0.0.1:${port}/ingest`;
  await using backend = createHttpBackend(config(url), {
    serverId: "s1",
    clock: realClock,
    logger,
  });
  await backend.send(items(1));
  await backend.send(items(1));
  await rx.stop();
  for (let i = 0; i < 3; i++) {
    await assert.rejects(
      backend.send(items(1)),
      (e) => isJwError(e, "unavailable") && !e.message.includes("s3cret"),
    );
  }
  rx = new Receiver(port);
  try {
    await backend.send(items(1));
  } finally {
    await rx.stop();
  }
  const events = lines.map((l) => / (INFO|WARN) +test: (output \w+)/.exec(l)?.slice(1).join(" "));
  assert.deepEqual(events, [
    "INFO output connected",
    "WARN output disconnected",
    "INFO output connected",
  ]);
  assert.ok(lines.every((l) => !l.includes("s3cret")), lines.join("\n"));
});
