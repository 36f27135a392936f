/**
 * Test helper: real journal files, written with systemd's own `systemd-journal-remote` from
 * entries in journald's export format (the Debian package systemd-journal-remote, installed
 * by scripts/install-test-deps.sh).
 *
 * @module
 */
import assert from "node:assert/strict";

/** One entry in journal export format: text fields, or bytes (written with a length). */
export type ExportEntry = Record<string, string | Uint8Array>;

const enc = new TextEncoder();

/** Serialises entries in the journal export format (blank-line separated, binary-safe). */
export function exportFormat(entries: ExportEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const entry of entries) {
    for (const [name, value] of Object.entries(entry)) {
      if (typeof value === "string") {
        parts.push(enc.encode(`${name}=${value}\n`));
      } else {
        const size = new Uint8Array(8);
        new DataView(size.buffer).setBigUint64(0, BigInt(value.length), true);
        parts.push(enc.encode(`${name}\n`), size, value, enc.encode("\n"));
      }
    }
    parts.push(enc.encode("\n"));
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const REMOTE_CANDIDATES = [
  "/lib/systemd/systemd-journal-remote",
  "/usr/lib/systemd/systemd-journal-remote",
];

/** systemd-journal-remote's path; fails the test clearly when it is not installed. */
export async function journalRemote(): Promise<string> {
  for (const path of REMOTE_CANDIDATES) {
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch {
      // try the next one
    }
  }
  throw new Error(
    `systemd-journal-remote is not installed (looked for ${REMOTE_CANDIDATES.join(", ")}): ` +
      "run scripts/install-test-deps.sh (it installs the Debian package systemd-journal-remote)",
  );
}

/** Writes `entries` to the journal file `path` (created, or appended to) with journal-remote. */
export async function writeJournal(path: string, entries: ExportEntry[]): Promise<void> {
  const child = new Deno.Command(await journalRemote(), {
    args: [`--output=${path}`, "-"],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(exportFormat(entries));
  await writer.close();
  const { code, stderr } = await child.output();
  assert.equal(code, 0, `systemd-journal-remote failed: ${new TextDecoder().decode(stderr)}`);
}
