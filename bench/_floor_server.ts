/**
 * The runtime floor: the least a Deno WebSocket server can do for the same clients. Run as
 * its own process (`deno run --allow-net bench/_floor_server.ts`); it prints
 * `floor listening on http://127.0.0.1:PORT` on stdout.
 *
 * - `GET /ws` — a WebSocket that idles; it is only written to by a broadcast.
 * - `GET /count` — `{"open": N}`.
 * - `POST /broadcast` — sends one ~150-byte `ping:ROUND:…` text to every open socket and
 *   answers `{"replies": N}` once every socket has answered with `pong:ROUND:…` (or after
 *   60 s with the count so far). No parsing, no auth, no storage: the floor.
 *
 * @module
 */

const sockets = new Set<WebSocket>();
let round = 0;
let expected = 0;
let replies = 0;
let finish: (() => void) | undefined;

function onMessage(e: MessageEvent): void {
  const text = typeof e.data === "string" ? e.data : "";
  if (!finish || !text.startsWith(`pong:${round}:`)) return;
  if (++replies >= expected) finish();
}

async function broadcast(): Promise<Response> {
  if (finish) return Response.json({ error: "a broadcast is running" }, { status: 409 });
  round++;
  replies = 0;
  expected = sockets.size;
  const text = `ping:${round}:`.padEnd(150, "x");
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 60_000);
    finish = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  for (const socket of sockets) {
    if (socket.readyState === WebSocket.OPEN) socket.send(text);
  }
  if (expected === 0) finish!();
  await done;
  finish = undefined;
  return Response.json({ replies, expected });
}

function accept(request: Request): Response {
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onerror = () => {};
  socket.onmessage = onMessage;
  return response;
}

if (import.meta.main) {
  Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ hostname, port }) => console.log(`floor listening on http://${hostname}:${port}`),
  }, (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/ws") return accept(request);
    if (path === "/count") return Response.json({ open: sockets.size });
    if (path === "/broadcast" && request.method === "POST") return broadcast();
    return new Response("not found", { status: 404 });
  });
}
