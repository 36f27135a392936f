/**
 * Test helper: which processes are alive, from /proc, or from `ps` when the test runs
 * without --allow-all (Deno only lets --allow-all read /proc). Linux only.
 *
 * @module
 */

interface ProcInfo {
  pid: number;
  pgid: number;
  /** First letter of the state: R, S, D, Z, T... */
  state: string;
}

function fromProc(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
    } catch {
      continue; // exited while we looked
    }
    // Fields after "(comm) ": state ppid pgrp ...
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out.push({ pid: Number(entry.name), pgid: Number(pgrp), state });
  }
  return out;
}

async function fromPs(): Promise<ProcInfo[]> {
  const { stdout } = await new Deno.Command("ps", {
    args: ["-e", "-o", "pid=,pgid=,stat="],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(stdout).trim().split("\n").map((line) => {
    const [pid, pgid, stat] = line.trim().split(/\s+/);
    return { pid: Number(pid), pgid: Number(pgid), state: stat[0] };
  });
}

async function processes(): Promise<ProcInfo[]> {
  try {
    return fromProc();
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) return await fromPs();
    throw err;
  }
}

/** True when `pid` exists and is not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  return (await processes()).some((p) => p.pid === pid && p.state !== "Z");
}

/** Live (non-zombie) processes whose process group is `pgid`. */
export async function liveGroupMembers(pgid: number): Promise<number[]> {
  return (await processes()).filter((p) => p.pgid === pgid && p.state !== "Z").map((p) => p.pid);
}
