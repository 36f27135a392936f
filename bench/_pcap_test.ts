import assert from "node:assert/strict";
import { parsePcap, summarizeTraffic } from "./_pcap.ts";

/** An Ethernet + IPv4 frame carrying UDP or TCP with `payload` bytes (headers only kept). */
function frame(
  protocol: "udp" | "tcp",
  src: number,
  dst: number,
  payload: number,
  tcpFlags = 0x10,
): Uint8Array {
  const l4 = protocol === "udp" ? 8 : 32; // TCP with 12 bytes of options
  const ipTotal = 20 + l4 + payload;
  const bytes = new Uint8Array(14 + 20 + l4);
  const v = new DataView(bytes.buffer);
  v.setUint16(12, 0x0800);
  v.setUint8(14, 0x45);
  v.setUint16(16, ipTotal);
  v.setUint8(23, protocol === "udp" ? 17 : 6);
  v.setUint16(34, src);
  v.setUint16(36, dst);
  if (protocol === "udp") v.setUint16(38, 8 + payload);
  else {
    v.setUint8(46, (l4 / 4) << 4);
    v.setUint8(47, tcpFlags);
  }
  return bytes;
}

/** A pcap file (little-endian, microseconds, Ethernet) of `frames` at `times` (µs). */
function pcap(frames: Uint8Array[], times: number[], magic = 0xa1b2c3d4): Uint8Array {
  const size = 24 + frames.reduce((n, f) => n + 16 + f.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint32(0, magic, true);
  v.setUint16(4, 2, true);
  v.setUint16(6, 4, true);
  v.setUint32(16, 160, true);
  v.setUint32(20, 1, true);
  let at = 24;
  frames.forEach((f, i) => {
    const t = times[i];
    v.setUint32(at, Math.floor(t / 1e6), true);
    v.setUint32(at + 4, magic === 0xa1b23c4d ? (t % 1e6) * 1000 : t % 1e6, true);
    v.setUint32(at + 8, f.length, true);
    v.setUint32(at + 12, f.length + 100, true);
    out.set(f, at + 16);
    at += 16 + f.length;
  });
  return out;
}

Deno.test("parsePcap() reads UDP and TCP ports, IP length and payload from the headers", () => {
  const t0 = 1_700_000_000_000_000;
  const file = parsePcap(pcap([
    frame("udp", 7946, 7947, 206),
    frame("tcp", 40000, 7946, 1000),
    frame("tcp", 7946, 40000, 0, 0x12),
  ], [t0, t0 + 10, t0 + 20]));
  assert.equal(file.skipped, 0);
  assert.deepEqual(file.packets, [
    { timeUs: t0, protocol: "udp", srcPort: 7946, dstPort: 7947, ipBytes: 234, payload: 206 },
    {
      timeUs: t0 + 10,
      protocol: "tcp",
      srcPort: 40000,
      dstPort: 7946,
      ipBytes: 1052,
      payload: 1000,
    },
    { timeUs: t0 + 20, protocol: "tcp", srcPort: 7946, dstPort: 40000, ipBytes: 52, payload: 0 },
  ]);
});

Deno.test("parsePcap() handles nanosecond files, skips other frames, stops at a cut record", () => {
  const arp = new Uint8Array(42);
  new DataView(arp.buffer).setUint16(12, 0x0806);
  const bytes = pcap([frame("udp", 1, 2, 5), arp, frame("udp", 1, 2, 9)], [
    5_000_001,
    5_000_002,
    5_000_003,
  ], 0xa1b23c4d);
  const file = parsePcap(bytes.slice(0, bytes.length - 3));
  assert.equal(file.skipped, 1);
  assert.equal(file.packets.length, 1);
  assert.equal(file.packets[0].timeUs, 5_000_001);
  assert.throws(() => parsePcap(new Uint8Array(24)), /bad magic/);
  assert.throws(() => parsePcap(new Uint8Array(3)), /too short/);
});

Deno.test("summarizeTraffic() sums the packets of the ports inside the window", () => {
  const packets = parsePcap(pcap([
    frame("udp", 7946, 7947, 100), // before the window
    frame("udp", 7946, 7947, 50),
    frame("tcp", 40000, 7947, 0, 0x02), // SYN: a connection opened
    frame("tcp", 40000, 7947, 300),
    frame("tcp", 7947, 40000, 0), // a bare ACK: IP bytes, no payload
    frame("udp", 9000, 9001, 70), // other ports
    frame("udp", 7947, 7946, 60), // at the window's end: excluded
  ], [0, 1000, 1400, 1500, 1600, 1700, 2000])).packets;
  const sum = summarizeTraffic(packets, new Set([7946, 7947]), 1000, 2000);
  assert.deepEqual(sum, {
    windowUs: 1000,
    udpPackets: 1,
    udpPayload: 50,
    tcpPackets: 3,
    tcpPayload: 300,
    tcpDataSegments: 1,
    tcpConnections: 1,
    ipBytes: 78 + 52 + 352 + 52,
  });
});
