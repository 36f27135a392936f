import assert from "node:assert/strict";
import dgram from "node:dgram";
import { parseDropped, portFilter, startCapture } from "./_capture.ts";
import { parsePcap, summarizeTraffic } from "./_pcap.ts";
import { delay } from "./_proc.ts";
import { freePort } from "./_serf.ts";

async function canCapture(): Promise<boolean> {
  try {
    const out = await new Deno.Command("tcpdump", { args: ["--version"] }).output();
    return out.success && Deno.uid() === 0;
  } catch {
    return false;
  }
}

Deno.test("portFilter() selects UDP and TCP of each port once", () => {
  assert.equal(portFilter([7946, 80, 7946]), "(udp or tcp) and (port 80 or port 7946)");
  assert.throws(() => portFilter([]), /no ports/);
  assert.throws(() => portFilter([70000]), /bad port 70000/);
});

Deno.test("parseDropped() reads tcpdump's closing statistics", () => {
  const log = "12 packets captured\n12 packets received by filter\n3 packets dropped by kernel\n";
  assert.equal(parseDropped(log), 3);
  assert.equal(parseDropped("tcpdump: listening on lo\n"), 0);
});

Deno.test({
  name: "startCapture() counts each loopback packet once, with its exact payload",
  ignore: !(await canCapture()),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "jw-capture-test-" });
    const [portA, portB, other] = [await freePort(), await freePort(), await freePort()];
    const a = dgram.createSocket("udp4");
    const b = dgram.createSocket("udp4");
    const c = dgram.createSocket("udp4");
    try {
      await Promise.all([
        new Promise<void>((r) => a.bind(portA, "127.0.0.1", () => r())),
        new Promise<void>((r) => b.bind(portB, "127.0.0.1", () => r())),
        new Promise<void>((r) => c.bind(other, "127.0.0.1", () => r())),
      ]);
      let received = 0;
      const all = new Promise<void>((resolve) =>
        b.on("message", () => {
          if (++received === 3) resolve();
        })
      );
      const capture = await startCapture({ ports: [portA, portB], dir });
      const from = Date.now() * 1000;
      const send = (s: dgram.Socket, size: number, port: number) =>
        new Promise<void>((r) => s.send(new Uint8Array(size), port, "127.0.0.1", () => r()));
      await send(a, 100, portB);
      await send(a, 40, portB);
      await send(c, 7, other); // not a captured port
      await send(c, 1000, portB);
      await all;
      // Each packet is written as it is captured: wait until the three are in the file.
      for (let i = 0; i < 250; i++) {
        const seen = parsePcap(await Deno.readFile(capture.file)).packets;
        if (seen.filter((p) => p.dstPort === portB).length >= 3) break;
        await delay(20);
      }
      const result = await capture.stop();
      const to = Date.now() * 1000 + 1;
      const sum = summarizeTraffic(result.packets, new Set([portA, portB]), from, to);
      assert.equal(sum.udpPackets, 3);
      assert.equal(sum.udpPayload, 1140);
      assert.equal(sum.ipBytes, 1140 + 3 * 28);
      assert.equal(sum.tcpPackets, 0);
      assert.equal(result.dropped, 0);
    } finally {
      a.close();
      b.close();
      c.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
