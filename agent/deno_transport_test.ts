import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import { createDenoTransport } from "./deno_transport.ts";

/** A loopback port nobody listens on (bound, then released). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

Deno.test("DenoTransport.connect() rejects with closed when nothing listens", async () => {
  const transport = createDenoTransport();
  await assert.rejects(transport.connect(`ws://127.0.0.1:${closedPort()}/v1/agent`), (err) => {
    assert.ok(isJwError(err, "closed"));
    assert.match(err.message, /cannot connect/);
    return true;
  });
});

Deno.test("DenoTransport.connect() rejects at once for an aborted signal", async () => {
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(
    createDenoTransport().connect("ws://127.0.0.1:1/v1/agent", controller.signal),
    (e) => isJwError(e, "closed"),
  );
});

Deno.test("DenoTransport socket sends, receives, and ends iteration on close", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`echo:${e.data}`);
    return response;
  });
  try {
    const socket = await createDenoTransport().connect(
      `ws://127.0.0.1:${server.addr.port}/v1/agent`,
    );
    assert.equal(socket.send("one"), true);
    const received: string[] = [];
    for await (const text of socket) {
      received.push(text);
      socket.close(1000, "bye");
    }
    assert.deepEqual(received, ["echo:one"]);
    assert.deepEqual(await socket.closed, { code: 1000, reason: "bye" });
    assert.equal(socket.send("late"), false);
  } finally {
    await server.shutdown();
  }
});
