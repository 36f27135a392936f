import assert from "node:assert/strict";
import { decodeMulti, decodeMultiStream, encode } from "@msgpack/msgpack";
import { delay } from "./_proc.ts";
import {
  encodeRequest,
  formatAddr,
  parseMembers,
  type SerfMember,
  SerfRpc,
  startSerfAgent,
} from "./_serf.ts";

async function hasSerf(): Promise<boolean> {
  try {
    return (await new Deno.Command("serf", { args: ["version"] }).output()).success;
  } catch {
    return false;
  }
}

Deno.test("encodeRequest() writes the header, then the body only for commands with one", () => {
  assert.deepEqual([...decodeMulti(encodeRequest("members", 3))], [{
    Command: "members",
    Seq: 3,
  }]);
  assert.deepEqual([...decodeMulti(encodeRequest("join", 4, { Existing: ["a:1"] }))], [
    { Command: "join", Seq: 4 },
    { Existing: ["a:1"] },
  ]);
  assert.throws(() => encodeRequest("stream", 1), /unsupported command "stream"/);
});

Deno.test("formatAddr() reads IPv4, IPv4-mapped and IPv6 addresses", () => {
  assert.equal(formatAddr(new Uint8Array([127, 0, 0, 1])), "127.0.0.1");
  const mapped = new Uint8Array(16);
  mapped.set([0xff, 0xff, 10, 0, 0, 7], 10);
  assert.equal(formatAddr(mapped), "10.0.0.7");
  const v6 = new Uint8Array(16);
  v6[15] = 1;
  assert.equal(formatAddr(v6), "[0:0:0:0:0:0:0:1]");
  assert.equal(formatAddr(42), "?");
});

Deno.test("parseMembers() keeps name, address, status and tags", () => {
  const members = parseMembers({
    Members: [{
      Name: "n1",
      Addr: new Uint8Array([127, 0, 0, 1]),
      Port: 7946,
      Tags: { role: "x" },
      Status: "failed",
    }],
  });
  assert.deepEqual(members, [
    {
      name: "n1",
      address: "127.0.0.1:7946",
      status: "failed",
      tags: { role: "x" },
    } satisfies SerfMember,
  ]);
  assert.throws(() => parseMembers({}), /without Members/);
  assert.throws(() => parseMembers({ Members: [{ Name: "n1" }] }), /without Name or Status/);
});

/** A scripted serf RPC peer: answers handshake, members and join; fails a join to "bad". */
async function fakeAgent(listener: Deno.TcpListener, seen: unknown[]): Promise<void> {
  const conn = await listener.accept();
  const send = async (...objects: unknown[]) => {
    for (const o of objects) await conn.write(encode(o));
  };
  let pending: { Command: string; Seq: number } | undefined;
  try {
    for await (const object of decodeMultiStream(conn.readable)) {
      seen.push(object);
      const header = pending ?? object as { Command: string; Seq: number };
      if (!pending && (header.Command === "handshake" || header.Command === "join")) {
        pending = header; // its body comes next
        continue;
      }
      pending = undefined;
      const body = object as { Existing?: string[] };
      switch (header.Command) {
        case "handshake":
          await send({ Seq: header.Seq, Error: "" });
          break;
        case "members":
          await send({ Seq: header.Seq, Error: "" }, {
            Members: [{
              Name: "a",
              Addr: new Uint8Array([127, 0, 0, 1]),
              Port: 1,
              Status: "alive",
            }],
          });
          break;
        case "join": {
          const bad = body.Existing?.includes("bad");
          await send({ Seq: header.Seq, Error: bad ? "no route" : "" }, { Num: bad ? 0 : 1 });
          break;
        }
      }
    }
  } catch {
    // the client closed the connection
  }
}

Deno.test("SerfRpc speaks the handshake, members and join, in order, over one connection", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: unknown[] = [];
  const agent = fakeAgent(listener, seen);
  try {
    const rpc = await SerfRpc.connect(`127.0.0.1:${listener.addr.port}`);
    try {
      // Two calls at once: answers must not be mixed up.
      const [members, joined] = await Promise.all([rpc.members(), rpc.join(["127.0.0.1:2"])]);
      assert.deepEqual(members.map((m) => [m.name, m.address, m.status]), [
        ["a", "127.0.0.1:1", "alive"],
      ]);
      assert.equal(joined, 1);
      await assert.rejects(rpc.join(["bad"]), /serf rpc join: no route/);
      // The connection is still usable after an error answer.
      assert.equal((await rpc.members()).length, 1);
    } finally {
      rpc.close();
    }
    await agent;
    assert.deepEqual(seen.slice(0, 2), [{ Command: "handshake", Seq: 0 }, { Version: 1 }]);
    assert.deepEqual(seen[2], { Command: "members", Seq: 1 });
  } finally {
    listener.close();
  }
});

Deno.test("SerfRpc.connect() fails clearly when nothing listens", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await assert.rejects(SerfRpc.connect(`127.0.0.1:${port}`), /serf rpc 127\.0\.0\.1:\d+/);
});

Deno.test({
  name: "startSerfAgent() runs serf: a join over RPC, then a graceful leave seen as left",
  ignore: !(await hasSerf()),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "jw-serf-test-" });
    try {
      await using a = await startSerfAgent({ name: "a", dir });
      await using b = await startSerfAgent({ name: "b", dir });
      assert.equal(await b.rpc.join([a.gossip]), 1);
      const status = async (name: string) =>
        (await a.rpc.members()).find((m) => m.name === name)?.status;
      let seen: string | undefined;
      for (let i = 0; i < 100 && seen !== "alive"; i++) {
        seen = await status("b");
        if (seen !== "alive") await delay(50);
      }
      assert.equal(seen, "alive");
      assert.equal((await a.rpc.members()).find((m) => m.name === "b")?.address, b.gossip);
      await b.close("SIGINT");
      for (let i = 0; i < 100 && seen !== "left"; i++) {
        seen = await status("b");
        if (seen !== "left") await delay(50);
      }
      assert.equal(seen, "left");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
