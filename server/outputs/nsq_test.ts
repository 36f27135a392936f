/**
 * The NSQ output against a recorded-contract nsqd: a loopback HTTP server that accepts
 * exactly what nsqd's HTTP API accepts for /pub and /mpub (nsq.io/components/nsqd.html;
 * nsqd/http.go doPUB/doMPUB, nsqd/protocol_v2.go readMPUB) and answers like nsqd with
 * `Accept: application/vnd.nsq; version=1.0` (200 "OK", or the status and
 * `{"message":"CODE"}`). It is stricter than nsqd in one place: trailing bytes after a
 * binary /mpub body are a contract violation here.
 */
import assert from "node:assert/strict";
import { type Clock, FakeClock, realClock } from "../../shared/clock.ts";
import { NsqOutput } from "../../shared/config/outputs.ts";
import { isJwError } from "../../shared/errors.ts";
import { silentLogger } from "../../shared/log.ts";
import type { BackendDeps, OutboxItem } from "./backend.ts";
import { createNsqBackend, encodeBinaryMpub } from "./nsq.ts";

let nextSeq = 1;

function item(type: OutboxItem["type"], extra: Partial<OutboxItem> = {}): OutboxItem {
  const seq = nextSeq++;
  const mid = `s1-${seq}`;
  const body = JSON.stringify({ mid, type, agent: "a1", data: `message ${seq} é` });
  return { seq, mid, type, agent: "a1", key: null, tags: {}, body, ...extra };
}

function deps(clock: Clock = realClock): BackendDeps {
  return { serverId: "s1", clock, logger: silentLogger };
}

function config(url: string, extra: Record<string, unknown> = {}) {
  return NsqOutput.parse({ name: "n", type: "nsq", url, ...extra });
}

/** One request the fake nsqd accepted. */
interface Accepted {
  path: "/pub" | "/mpub";
  topic: string;
  binary: boolean;
  accept: string | null;
  bodyBytes: number;
  messages: string[];
}

const TOPIC = /^[.a-zA-Z0-9_-]{1,64}(#ephemeral)?$/;
/** nsqd's boolParams for `binary`; any other value means true (deprecated). */
const BOOL: Record<string, boolean> = { true: true, "1": true, false: false, "0": false };

interface FakeNsqdOptions {
  port?: number;
  /** nsqd --max-msg-size. Default 1048576. */
  maxMsgSize?: number;
  /** nsqd --max-body-size. Default 5242880. */
  maxBodySize?: number;
}

class FakeNsqd implements AsyncDisposable {
  readonly accepted: Accepted[] = [];
  /** Contract violations seen (the test asserts there are none). */
  readonly violations: string[] = [];
  /** Set to answer the next request with this status and code (e.g. 503 EXITING). */
  failNext: { status: number; code: string } | null = null;
  /** Set to hold requests until it resolves. */
  hold: Promise<void> | null = null;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #maxMsg: number;
  #maxBody: number;
  #arrived: (() => void)[] = [];

  constructor(opts: FakeNsqdOptions = {}) {
    this.#maxMsg = opts.maxMsgSize ?? 1_048_576;
    this.#maxBody = opts.maxBodySize ?? 5_242_880;
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: opts.port ?? 0, onListen: () => {} },
      (req) => this.#handle(req),
    );
  }

  get port(): number {
    return this.#server.addr.port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** All messages accepted for `topic`, in order. */
  messages(topic: string): string[] {
    return this.accepted.filter((a) => a.topic === topic).flatMap((a) => a.messages);
  }

  nextRequest(): Promise<void> {
    return new Promise((resolve) => this.#arrived.push(resolve));
  }

  async #handle(req: Request): Promise<Response> {
    for (const f of this.#arrived.splice(0)) f();
    if (this.hold) await this.hold;
    const url = new URL(req.url);
    const path = url.pathname;
    if (path !== "/pub" && path !== "/mpub") return this.#error(404, "NOT_FOUND", true);
    if (req.method !== "POST") return this.#error(405, "METHOD_NOT_ALLOWED", true);
    const body = new Uint8Array(await req.arrayBuffer());
    if (this.failNext) {
      const { status, code } = this.failNext;
      this.failNext = null;
      return this.#error(status, code);
    }
    const topic = url.searchParams.get("topic");
    if (topic === null) return this.#error(400, "MISSING_ARG_TOPIC", true);
    if (!TOPIC.test(topic)) return this.#error(400, "INVALID_TOPIC", true);
    const accept = req.headers.get("accept");
    const decode = (b: Uint8Array) => new TextDecoder("utf-8", { fatal: true }).decode(b);
    if (path === "/pub") {
      if (body.length > this.#maxMsg) return this.#error(413, "MSG_TOO_BIG");
      if (body.length === 0) return this.#error(400, "MSG_EMPTY", true);
      this.#accept({
        path,
        topic,
        binary: false,
        accept,
        bodyBytes: body.length,
        messages: [decode(body)],
      });
      return this.#ok();
    }
    if (body.length > this.#maxBody) return this.#error(413, "BODY_TOO_BIG");
    const binaryParam = url.searchParams.get("binary");
    const binary = binaryParam === null ? false : (BOOL[binaryParam] ?? true);
    let messages: string[];
    if (binary) {
      const parsed = this.#readMpub(body);
      if (typeof parsed === "string") return this.#error(413, parsed);
      messages = parsed.map(decode);
    } else {
      // Newline-separated; empty lines are skipped silently.
      messages = [];
      for (const line of decode(body).split("\n")) {
        if (line.length === 0) continue;
        if (new TextEncoder().encode(line).length > this.#maxMsg) {
          return this.#error(413, "MSG_TOO_BIG");
        }
        messages.push(line);
      }
    }
    this.#accept({ path, topic, binary, accept, bodyBytes: body.length, messages });
    return this.#ok();
  }

  /** [4-byte count] then per message [4-byte size][bytes], big-endian. */
  #readMpub(body: Uint8Array): Uint8Array[] | string {
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    if (body.length < 4) return "BAD_BODY";
    const count = view.getInt32(0);
    if (count <= 0 || count > (this.#maxBody - 4) / 5) return "BAD_BODY";
    const out: Uint8Array[] = [];
    let at = 4;
    for (let i = 0; i < count; i++) {
      if (at + 4 > body.length) return "BAD_MESSAGE";
      const size = view.getInt32(at);
      if (size <= 0) return "BAD_MESSAGE";
      if (size > this.#maxMsg) return "BAD_MESSAGE";
      if (at + 4 + size > body.length) return "BAD_MESSAGE";
      out.push(body.subarray(at + 4, at + 4 + size));
      at += 4 + size;
    }
    if (at !== body.length) {
      this.violations.push(`binary /mpub: ${body.length - at} trailing bytes`);
      return "BAD_BODY";
    }
    return out;
  }

  #accept(a: Accepted): void {
    this.accepted.push(a);
  }

  #ok(): Response {
    return new Response("OK", { headers: { "x-nsq-content-type": "nsq; version=1.0" } });
  }

  #error(status: number, code: string, violation = false): Response {
    if (violation) this.violations.push(`${status} ${code}`);
    return new Response(`{"message":"${code}"}`, {
      status,
      headers: {
        "content-type": "application/json; charset=utf-8",
        "x-nsq-content-type": "nsq; version=1.0",
      },
    });
  }

  async stop(): Promise<void> {
    await this.#server.shutdown();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

Deno.test("encodeBinaryMpub writes nsqd's binary /mpub format", () => {
  const enc = new TextEncoder();
  const out = encodeBinaryMpub([enc.encode("ab"), enc.encode("c\nd")]);
  assert.deepEqual(
    [...out],
    [0, 0, 0, 2, 0, 0, 0, 2, 0x61, 0x62, 0, 0, 0, 3, 0x63, 0x0a, 0x64],
  );
});

Deno.test("nsq backend publishes one message with /pub, raw body, versioned Accept", async () => {
  await using nsqd = new FakeNsqd();
  await using backend = createNsqBackend(config(nsqd.url), deps());
  const it = item("output");
  await backend.send([it]);
  assert.deepEqual(nsqd.violations, []);
  assert.equal(nsqd.accepted.length, 1);
  const a = nsqd.accepted[0];
  assert.equal(a.path, "/pub");
  assert.equal(a.topic, "jw_output");
  assert.equal(a.accept, "application/vnd.nsq; version=1.0");
  assert.deepEqual(a.messages, [it.body]);
  assert.equal(JSON.parse(a.messages[0]).mid, it.mid);
});

Deno.test("nsq backend publishes a same-topic batch with one newline /mpub, in order", async () => {
  await using nsqd = new FakeNsqd();
  await using backend = createNsqBackend(config(nsqd.url), deps());
  const batch = Array.from({ length: 50 }, () => item("log"));
  await backend.send(batch);
  assert.deepEqual(nsqd.violations, []);
  assert.equal(nsqd.accepted.length, 1);
  assert.equal(nsqd.accepted[0].path, "/mpub");
  assert.equal(nsqd.accepted[0].binary, false);
  assert.deepEqual(nsqd.messages("jw_log"), batch.map((i) => i.body));
});

Deno.test("nsq backend groups consecutive items by topic and keeps their order", async () => {
  await using nsqd = new FakeNsqd();
  await using backend = createNsqBackend(
    config(nsqd.url, { topic: "jw.{type}.{tag.zone}" }),
    deps(),
  );
  const zone = (z: string) => ({ tags: { zone: z } });
  const batch = [
    item("output", zone("a")),
    item("output", zone("a")),
    item("log", zone("a")),
    item("output", zone("a")),
    item("output", zone("b/c")),
    item("output", zone("b/c")),
  ];
  await backend.send(batch);
  assert.deepEqual(nsqd.violations, []);
  assert.deepEqual(
    nsqd.accepted.map((a) => [a.path, a.topic, a.messages.length]),
    [
      ["/mpub", "jw.output.a", 2],
      ["/pub", "jw.log.a", 1],
      ["/pub", "jw.output.a", 1],
      ["/mpub", "jw.output.b_c", 2],
    ],
  );
  assert.deepEqual(nsqd.accepted.flatMap((a) => a.messages), batch.map((i) => i.body));
});

Deno.test("nsq backend uses binary /mpub when a body contains a newline", async () => {
  await using nsqd = new FakeNsqd();
  await using backend = createNsqBackend(config(nsqd.url), deps());
  const pretty = item("output");
  pretty.body = JSON.stringify(JSON.parse(pretty.body), null, 2);
  assert.ok(pretty.body.includes("\n"));
  const batch = [item("output"), pretty, item("output")];
  await backend.send(batch);
  assert.deepEqual(nsqd.violations, []);
  assert.equal(nsqd.accepted.length, 1);
  assert.equal(nsqd.accepted[0].path, "/mpub");
  assert.equal(nsqd.accepted[0].binary, true);
  assert.deepEqual(nsqd.messages("jw_output"), batch.map((i) => i.body));
});

Deno.test("nsq backend splits a group so each /mpub body stays under 1 MiB", async () => {
  await using nsqd = new FakeNsqd({ maxBodySize: 1024 * 1024 });
  await using backend = createNsqBackend(config(nsqd.url), deps());
  const big = () => {
    const it = item("output");
    it.body = JSON.stringify({ mid: it.mid, data: "z".repeat(300_000) });
    return it;
  };
  const batch = [big(), big(), big(), big(), big()];
  await backend.send(batch);
  assert.deepEqual(nsqd.violations, []);
  assert.deepEqual(nsqd.accepted.map((a) => [a.path, a.messages.length]), [
    ["/mpub", 3],
    ["/mpub", 2],
  ]);
  assert.ok(nsqd.accepted.every((a) => a.bodyBytes <= 1024 * 1024));
  assert.deepEqual(nsqd.messages("jw_output"), batch.map((i) => i.body));
});

Deno.test("nsq backend topic names: safe characters, no #ephemeral, 64 characters", async (t) => {
  await t.step("unsafe characters from values become _", async () => {
    await using nsqd = new FakeNsqd();
    await using backend = createNsqBackend(config(nsqd.url, { topic: "jw.{agent}" }), deps());
    await backend.send([item("output", { agent: "web/1#ephemeral é" })]);
    assert.deepEqual(nsqd.violations, []);
    assert.equal(nsqd.accepted[0].topic, "jw.web_1_ephemeral__");
  });
  await t.step("a template with characters nsqd refuses is a config error", () => {
    for (const topic of ["jw/{type}", "jw_{type}#ephemeral", "jw {type}", "{typo}"]) {
      assert.throws(
        () => createNsqBackend(config("http://127.0.0.1:1", { topic }), deps()),
        (e) => isJwError(e, "config"),
        topic,
      );
    }
    assert.throws(
      () => createNsqBackend(config("http://127.0.0.1:1", { topic: "x".repeat(65) }), deps()),
      (e) => isJwError(e, "config") && /64/.test(e.message),
    );
  });
  await t.step("a topic over 64 characters refuses those items before sending", async () => {
    await using nsqd = new FakeNsqd();
    await using backend = createNsqBackend(config(nsqd.url, { topic: "jw.{agent}" }), deps());
    const ok = item("output");
    const long = item("output", { agent: "a".repeat(70) });
    await assert.rejects(backend.send([ok, long]), (e) => {
      assert.ok(isJwError(e, "rejected"));
      assert.deepEqual(e.detail?.seqs, [long.seq]);
      assert.match(e.message, /longer than 64/);
      return true;
    });
    assert.equal(nsqd.accepted.length, 0);
    await backend.send([ok]);
    assert.deepEqual(nsqd.messages("jw.a1"), [ok.body]);
  });
});

Deno.test("nsq backend: nsqd's 4xx rejects that request's items, 5xx is unavailable", async (t) => {
  await using nsqd = new FakeNsqd({ maxMsgSize: 1000 });
  await using backend = createNsqBackend(config(nsqd.url), deps());
  await t.step("413 MSG_TOO_BIG", async () => {
    const small = item("log");
    const huge = item("output");
    huge.body = JSON.stringify({ mid: huge.mid, data: "q".repeat(2000) });
    await assert.rejects(backend.send([small, huge]), (e) => {
      assert.ok(isJwError(e, "rejected"));
      assert.deepEqual(e.detail?.seqs, [huge.seq]);
      assert.equal(e.detail?.status, 413);
      assert.match(e.message, /MSG_TOO_BIG/);
      return true;
    });
    assert.deepEqual(nsqd.messages("jw_log"), [small.body]);
  });
  await t.step("503 EXITING, then the retry delivers", async () => {
    const batch = [item("alive"), item("alive")];
    nsqd.failNext = { status: 503, code: "EXITING" };
    await assert.rejects(
      backend.send(batch),
      (e) => isJwError(e, "unavailable") && /503.*EXITING/.test(e.message),
    );
    await backend.send(batch);
    assert.deepEqual(nsqd.messages("jw_alive"), batch.map((i) => i.body));
  });
  assert.deepEqual(nsqd.violations, []);
});

Deno.test("nsq backend: nsqd down is unavailable; restarted, the next send delivers", async () => {
  let nsqd = new FakeNsqd();
  const port = nsqd.port;
  await using backend = createNsqBackend(config(nsqd.url), deps());
  await backend.send([item("output")]);
  await nsqd.stop();
  await assert.rejects(backend.send([item("output")]), (e) => isJwError(e, "unavailable"));
  nsqd = new FakeNsqd({ port });
  try {
    const batch = [item("output"), item("output")];
    await backend.send(batch);
    assert.deepEqual(nsqd.messages("jw_output"), batch.map((i) => i.body));
    assert.deepEqual(nsqd.violations, []);
  } finally {
    await nsqd.stop();
  }
});

Deno.test("nsq backend: a hung nsqd times out as unavailable; close() aborts cleanly", async () => {
  await using nsqd = new FakeNsqd();
  const clock = new FakeClock();
  const backend = createNsqBackend(config(nsqd.url, { timeout: "2s" }), deps(clock));
  const { promise, resolve } = Promise.withResolvers<void>();
  nsqd.hold = promise;
  try {
    let arrived = nsqd.nextRequest();
    const first = backend.send([item("output")]);
    await arrived;
    await clock.advance(2000);
    await assert.rejects(
      first,
      (e) => isJwError(e, "unavailable") && /no answer within 2000 ms/.test(e.message),
    );
    arrived = nsqd.nextRequest();
    const second = backend.send([item("output")]);
    await arrived;
    await backend.close();
    await assert.rejects(second, (e) => isJwError(e, "closed"));
    await backend.close();
    assert.equal(clock.pending, 0);
  } finally {
    resolve();
    await backend.close();
  }
});
