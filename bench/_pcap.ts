/**
 * Reads the classic pcap files `tcpdump -w` writes and sums the traffic of a set of ports:
 * UDP and TCP payload bytes (what the applications wrote to their sockets) and IP bytes
 * (payload plus IP, UDP and TCP headers, and TCP's bare ACKs). Only IPv4 is decoded; other
 * frames are counted as skipped.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";

/** One IPv4 UDP or TCP packet of a capture. */
export interface PcapPacket {
  /** Capture time, microseconds since the Unix epoch. */
  timeUs: number;
  protocol: "udp" | "tcp";
  srcPort: number;
  dstPort: number;
  /** The IP packet's total length (headers included), bytes. */
  ipBytes: number;
  /** UDP or TCP payload, bytes. */
  payload: number;
  /** TCP only: a SYN without ACK (a connection being opened). */
  syn?: boolean;
}

/** The packets of a capture, and how many frames were not IPv4 UDP/TCP. */
export interface PcapFile {
  packets: PcapPacket[];
  skipped: number;
}

/** Link-layer header types this reader knows (pcap LINKTYPE_* values). */
const LINK_ETHERNET = 1;
const LINK_RAW = 101;
const LINK_LINUX_SLL = 113;
const LINK_LINUX_SLL2 = 276;

/** Where the IPv4 header starts in a frame, or -1 when the frame is not IPv4. */
function ipOffset(link: number, frame: DataView): number {
  switch (link) {
    case LINK_ETHERNET:
      return frame.byteLength >= 14 && frame.getUint16(12) === 0x0800 ? 14 : -1;
    case LINK_LINUX_SLL:
      return frame.byteLength >= 16 && frame.getUint16(14) === 0x0800 ? 16 : -1;
    case LINK_LINUX_SLL2:
      return frame.byteLength >= 20 && frame.getUint16(0) === 0x0800 ? 20 : -1;
    case LINK_RAW:
      return frame.byteLength >= 1 && frame.getUint8(0) >> 4 === 4 ? 0 : -1;
    default:
      throw new JwError("unsupported", `pcap: link type ${link} is not supported`);
  }
}

/** Decodes one frame; undefined when it is not an IPv4 UDP/TCP packet or was cut too short. */
function decodeFrame(link: number, frame: DataView, timeUs: number): PcapPacket | undefined {
  const ip = ipOffset(link, frame);
  if (ip < 0 || frame.byteLength < ip + 20) return undefined;
  const first = frame.getUint8(ip);
  if (first >> 4 !== 4) return undefined;
  const ihl = (first & 0x0f) * 4;
  const ipBytes = frame.getUint16(ip + 2);
  const protocol = frame.getUint8(ip + 9);
  const l4 = ip + ihl;
  if (protocol === 17) {
    if (frame.byteLength < l4 + 8) return undefined;
    return {
      timeUs,
      protocol: "udp",
      srcPort: frame.getUint16(l4),
      dstPort: frame.getUint16(l4 + 2),
      ipBytes,
      payload: frame.getUint16(l4 + 4) - 8,
    };
  }
  if (protocol === 6) {
    if (frame.byteLength < l4 + 13) return undefined;
    const tcpHeader = (frame.getUint8(l4 + 12) >> 4) * 4;
    const flags = frame.getUint8(l4 + 13);
    return {
      timeUs,
      protocol: "tcp",
      srcPort: frame.getUint16(l4),
      dstPort: frame.getUint16(l4 + 2),
      ipBytes,
      payload: ipBytes - ihl - tcpHeader,
      ...((flags & 0x12) === 0x02 ? { syn: true } : {}),
    };
  }
  return undefined;
}

/**
 * Parses a pcap file (either byte order, microsecond or nanosecond timestamps). Frames only
 * need their headers: a small snap length is enough, since lengths come from the headers.
 * @throws JwError `invalid_message` when the file is not a pcap file.
 */
export function parsePcap(bytes: Uint8Array): PcapFile {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 24) throw new JwError("invalid_message", "pcap: file too short");
  const magic = view.getUint32(0, true);
  let little: boolean;
  let nanos: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) {
    little = true;
    nanos = magic === 0xa1b23c4d;
  } else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) {
    little = false;
    nanos = magic === 0x4d3cb2a1;
  } else {
    throw new JwError("invalid_message", `pcap: bad magic 0x${magic.toString(16)}`);
  }
  const link = view.getUint32(20, little) & 0x0fffffff;
  const packets: PcapPacket[] = [];
  let skipped = 0;
  // A file cut short (tcpdump stopped mid-write) ends at the last whole record.
  for (let at = 24; at + 16 <= bytes.byteLength;) {
    const seconds = view.getUint32(at, little);
    const fraction = view.getUint32(at + 4, little);
    const captured = view.getUint32(at + 8, little);
    if (at + 16 + captured > bytes.byteLength) break;
    const timeUs = seconds * 1e6 + (nanos ? Math.floor(fraction / 1000) : fraction);
    const frame = new DataView(bytes.buffer, bytes.byteOffset + at + 16, captured);
    const packet = decodeFrame(link, frame, timeUs);
    if (packet) packets.push(packet);
    else skipped++;
    at += 16 + captured;
  }
  return { packets, skipped };
}

/** Traffic of some ports over a time window. */
export interface TrafficSummary {
  /** The window, microseconds. */
  windowUs: number;
  udpPackets: number;
  /** UDP payload bytes. */
  udpPayload: number;
  tcpPackets: number;
  /** TCP payload bytes. */
  tcpPayload: number;
  /** TCP segments that carried payload. */
  tcpDataSegments: number;
  /** TCP connections opened (SYN without ACK). */
  tcpConnections: number;
  /** IP bytes of all those packets (headers included). */
  ipBytes: number;
}

/**
 * Sums the packets sent from or to any of `ports` with a capture time in
 * [`fromUs`, `toUs`). Every packet on the loopback interface is captured once.
 */
export function summarizeTraffic(
  packets: readonly PcapPacket[],
  ports: ReadonlySet<number>,
  fromUs: number,
  toUs: number,
): TrafficSummary {
  const sum: TrafficSummary = {
    windowUs: toUs - fromUs,
    udpPackets: 0,
    udpPayload: 0,
    tcpPackets: 0,
    tcpPayload: 0,
    tcpDataSegments: 0,
    tcpConnections: 0,
    ipBytes: 0,
  };
  for (const p of packets) {
    if (p.timeUs < fromUs || p.timeUs >= toUs) continue;
    if (!ports.has(p.srcPort) && !ports.has(p.dstPort)) continue;
    sum.ipBytes += p.ipBytes;
    if (p.protocol === "udp") {
      sum.udpPackets++;
      sum.udpPayload += p.payload;
    } else {
      sum.tcpPackets++;
      sum.tcpPayload += p.payload;
      if (p.payload > 0) sum.tcpDataSegments++;
      if (p.syn) sum.tcpConnections++;
    }
  }
  return sum;
}
