/**
 * Packet capture on the loopback interface with `tcpdump` (needs root or CAP_NET_RAW):
 * UDP and TCP to or from a set of ports, headers only, written to a pcap file and read
 * back with _pcap.ts once the capture stops.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import { type BenchProcess, delay, spawnProcess } from "./_proc.ts";
import { parsePcap, type PcapFile } from "./_pcap.ts";

/** Bytes kept of each frame: enough for Ethernet, an IPv4 header with options and TCP's. */
const SNAP_LENGTH = 160;

/** Kernel buffer for the capture, KiB (tcpdump -B), so bursts are not dropped. */
const BUFFER_KIB = 8192;

/** The tcpdump filter for UDP and TCP to or from any of `ports`. */
export function portFilter(ports: readonly number[]): string {
  if (ports.length === 0) throw new JwError("usage", "capture: no ports to capture");
  const unique = [...new Set(ports)].sort((a, b) => a - b);
  for (const p of unique) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      throw new JwError("usage", `capture: bad port ${p}`);
    }
  }
  return `(udp or tcp) and (${unique.map((p) => `port ${p}`).join(" or ")})`;
}

/** "N packets dropped by kernel" from tcpdump's closing statistics; 0 when absent. */
export function parseDropped(stderr: string): number {
  const m = stderr.match(/(\d+) packets? dropped by kernel/);
  return m ? Number(m[1]) : 0;
}

/** The result of a stopped capture. */
export interface CaptureResult extends PcapFile {
  /** Packets the kernel dropped before tcpdump read them (should be 0). */
  dropped: number;
}

/** A running capture. */
export interface Capture extends AsyncDisposable {
  /** The pcap file being written (each packet is written as it is captured). */
  readonly file: string;
  /**
   * Stops tcpdump (SIGINT, so it flushes) and reads what it wrote. Packets the kernel had
   * not yet handed to tcpdump may be lost: keep capturing a little past the window of
   * interest. Idempotent.
   */
  stop(): Promise<CaptureResult>;
}

/** Options for {@link startCapture}. */
export interface CaptureOptions {
  /** Ports whose UDP and TCP traffic is captured. */
  ports: readonly number[];
  /** Directory for the pcap file and tcpdump's log (must exist). */
  dir: string;
  /** File name prefix. Default "capture". */
  name?: string;
  /** Interface. Default "lo". */
  iface?: string;
  /** How long to wait for tcpdump to start listening, ms. Default 10000. */
  timeoutMs?: number;
}

/**
 * Starts tcpdump and resolves once it is listening (from then on every matching packet is
 * in the file).
 * @throws JwError `spawn_failed` when tcpdump is missing, not permitted, or does not start.
 */
export async function startCapture(options: CaptureOptions): Promise<Capture> {
  const name = options.name ?? "capture";
  const file = `${options.dir}/${name}.pcap`;
  const stderrFile = `${options.dir}/${name}.log`;
  const proc: BenchProcess = spawnProcess("tcpdump", [
    "tcpdump",
    "-i",
    options.iface ?? "lo",
    "-nn",
    "-s",
    String(SNAP_LENGTH),
    "-B",
    String(BUFFER_KIB),
    // Hand each packet over as it arrives (no block timeout), and write it out at once.
    "--immediate-mode",
    "-U",
    "-w",
    file,
    portFilter(options.ports),
  ], { stderrFile });
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    const text = await Deno.readTextFile(stderrFile).catch(() => "");
    if (/listening on/.test(text)) break;
    const exited = await Promise.race([proc.status.then(() => true), delay(20).then(() => false)]);
    if (exited || Date.now() > deadline) {
      await proc.stop("SIGKILL");
      const log = await Deno.readTextFile(stderrFile).catch(() => "");
      throw new JwError(
        "spawn_failed",
        `tcpdump did not start (it needs root or CAP_NET_RAW): ${log.trim() || "no output"}`,
      );
    }
  }
  let result: Promise<CaptureResult> | undefined;
  const stop = () =>
    result ??= (async () => {
      await proc.stop("SIGINT");
      const log = await Deno.readTextFile(stderrFile).catch(() => "");
      const parsed = parsePcap(await Deno.readFile(file));
      return { ...parsed, dropped: parseDropped(log) };
    })();
  return {
    file,
    stop,
    async [Symbol.asyncDispose]() {
      await stop().catch(() => {});
    },
  };
}

/** `tcpdump --version`'s first line, e.g. "tcpdump version 4.99.3"; "not installed". */
export async function tcpdumpVersion(): Promise<string> {
  try {
    const out = await new Deno.Command("tcpdump", { args: ["--version"] }).output();
    return new TextDecoder().decode(out.stdout).split("\n")[0].trim();
  } catch {
    return "not installed";
  }
}
