/**
 * Human-readable rendering of replies, run summaries, agent lists and stored scripts.
 *
 * @module
 */
import type {
  AgentInfo,
  AgentOutcome,
  ClusterMemberInfo,
  OutputInfo,
  RelayedReply,
  ScriptInfo,
  SummaryEvent,
  TargetState,
} from "../shared/protocol/operator.ts";
import { formatDuration } from "../shared/units.ts";

/** One line (or none) for a reply, as `jw client run` and `tail` print it. */
export function renderReply(r: RelayedReply): string | undefined {
  const who = `[${r.agent}]`;
  switch (r.type) {
    case "output": {
      const lines: string[] = [];
      if (r.text !== undefined) lines.push(`${who} ${(r.stream ?? "out").padEnd(6)} ${r.text}`);
      const installed = r.data?.installed as Record<string, unknown> | undefined;
      if (installed) {
        const next = typeof installed.next === "number"
          ? new Date(installed.next).toISOString()
          : "on its event";
        lines.push(`${who} installed job ${installed.id} (${installed.key}); next run: ${next}`);
      } else if (r.data !== undefined) lines.push(`${who} data   ${JSON.stringify(r.data)}`);
      if (r.done && !(installed && !r.error)) {
        const parts = [r.error ? `failed ${r.error.code}: ${r.error.message}` : "done  "];
        if (r.exitCode !== undefined) {
          // null: the process was killed (a timeout, the agent stopping), so it has none.
          parts.push(r.exitCode === null ? "(no exit code)" : `exit ${r.exitCode}`);
        }
        if (r.durationMs !== undefined) parts.push(`in ${formatDuration(r.durationMs)}`);
        parts.push(`(job ${r.job.id})`);
        lines.push(`${who} ${parts.join(" ")}`);
      }
      return lines.length ? lines.join("\n") : undefined;
    }
    case "log":
      return `${who} ${r.level.padEnd(6)} ${r.message}${
        r.fields ? " " + JSON.stringify(r.fields) : ""
      }`;
    case "setTag":
      return `${who} tags   ${
        Object.entries(r.tags).map(([k, v]) => (v === null ? `-${k}` : `${k}=${v}`)).join(" ")
      }`;
  }
}

/** True when an agent's part of a run counts as success: no error and exit code 0 (or none). */
export function succeeded(o: AgentOutcome): boolean {
  return o.status === "ok" && (o.exitCode === undefined || o.exitCode === null || o.exitCode === 0);
}

/** Lines describing agents that did not finish cleanly and did not say so in a reply. */
export function renderSummary(s: SummaryEvent): string[] {
  const out: string[] = [];
  const entries = Object.entries(s.agents);
  for (const [agent, o] of entries) {
    if (
      o.status === "timeout" || o.status === "not_connected" ||
      (o.status === "error" && o.error?.code === "closed")
    ) {
      out.push(`[${agent}] ${o.status}: ${o.error?.message ?? "no answer before the timeout"}`);
    }
  }
  const ok = entries.filter(([, o]) => succeeded(o)).length;
  out.push(
    `${entries.length} agent${entries.length === 1 ? "" : "s"}: ${ok} ok, ${
      entries.length - ok
    } failed`,
  );
  return out;
}

const STATE_ORDER: readonly TargetState[] = [
  "done",
  "error",
  "running",
  "delivered",
  "pending",
  "offline",
  "expired",
];

/**
 * One line per target state that has targets: the count and the agents (the first few),
 * and for `offline` when the queued command expires.
 */
export function renderStates(s: SummaryEvent, max = 8): string[] {
  const by = new Map<TargetState, string[]>();
  let until = 0;
  for (const [agent, o] of Object.entries(s.agents)) {
    const state: TargetState = o.state ??
      (o.status === "ok" ? "done" : o.status === "offline" ? "offline" : "error");
    by.set(state, [...(by.get(state) ?? []), agent]);
    if (state === "offline" && o.until !== undefined) until = Math.max(until, o.until);
  }
  const out: string[] = [];
  for (const state of STATE_ORDER) {
    const agents = by.get(state);
    if (!agents) continue;
    const shown = agents.slice(0, max).join(", ") + (agents.length > max ? ", …" : "");
    let line = `${state.padEnd(9)} ${String(agents.length).padStart(5)}  ${shown}`;
    if (state === "offline") {
      line += until ? ` (queued until ${new Date(until).toISOString()})` : " (not queued: --ttl 0)";
    }
    out.push(line);
  }
  return out;
}

function ago(ts: number | null, now: number): string {
  if (ts === null) return "never";
  return `${formatDuration(Math.max(0, now - ts))} ago`;
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function renderTable(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  "))
    .join("\n");
}

/** A table of outputs and their counters. */
export function renderOutputs(outputs: OutputInfo[], now = Date.now()): string {
  return renderTable(
    ["NAME", "TYPE", "STATE", "QUEUED", "DELIVERED", "FAILED", "DROPPED", "DEAD", "LAST ERROR"],
    outputs.map((o) => [
      o.name,
      o.type,
      o.state,
      `${o.queued} (${formatBytes(o.bytes)})`,
      String(o.delivered),
      String(o.failed),
      String(o.dropped),
      String(o.dead),
      o.lastError ? `${ago(o.lastErrorAt, now)}: ${o.lastError}` : "-",
    ]),
  );
}

/** A table of agents. */
export function renderAgents(agents: AgentInfo[], now = Date.now()): string {
  return renderTable(
    ["ID", "CONNECTED", "SERVER", "LAST SEEN", "TAGS"],
    agents.map((a) => [
      a.id,
      a.connected ? "yes" : "no",
      a.server ?? "-",
      a.connected ? "now" : ago(a.lastSeen, now),
      Object.entries(a.tags).map(([k, v]) => `${k}=${v}`).join(",") || "-",
    ]),
  );
}

/** The `jw client members` table: this server first, marked with `*`. */
export function renderMembers(members: ClusterMemberInfo[]): string {
  return renderTable(
    ["ID", "STATE", "HEALTH", "INCARNATION", "GOSSIP", "URL"],
    members.map((m) => [
      m.self ? `${m.id} *` : m.id,
      m.state,
      m.health === null ? "-" : String(m.health),
      String(m.incarnation),
      m.gossip ?? "-",
      m.url ?? "-",
    ]),
  );
}

/** One line for how an agent's part of a run ended: `[a1] ok`, `[a2] error code: message`. */
export function renderOutcome(agent: string, o: AgentOutcome): string {
  if (succeeded(o)) return `[${agent}] ok`;
  const parts: string[] = [o.status];
  if (o.exitCode !== undefined && o.exitCode !== null && o.exitCode !== 0) {
    parts.push(`exit ${o.exitCode}`);
  }
  const why = o.error
    ? `: ${o.error.code === o.status ? "" : `${o.error.code}: `}${o.error.message}`
    : "";
  return `[${agent}] ${parts.join(" ")}${why}`;
}

/** `1536` → `1.5 KiB`. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** A script's permissions in a few words: `read=2 net=1`, or `none`. */
export function summarisePermissions(p: ScriptInfo["permissions"]): string {
  const parts = (["run", "read", "write", "net"] as const)
    .filter((k) => p[k].length > 0)
    .map((k) => `${k}=${p[k].length}`);
  return parts.length ? parts.join(" ") : "none";
}

/** An ISO time without milliseconds, or `-`. */
function isoSeconds(value: number | string | undefined): string {
  if (value === undefined) return "-";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace(/\.\d+Z$/, "Z");
}

/** Length of the signer key id shown in tables (enough to tell keys apart by eye). */
const SHORT_SIGNER = 12;

/** A table of stored scripts. */
export function renderScripts(scripts: ScriptInfo[]): string {
  return renderTable(
    ["NAME", "VERSION", "SIGNER", "SIGNED AT", "SIZE", "PERMISSIONS", "UPLOADED"],
    scripts.map((s) => [
      s.name,
      String(s.version),
      s.signer.length > SHORT_SIGNER ? `${s.signer.slice(0, SHORT_SIGNER)}…` : s.signer,
      isoSeconds(s.signedAt),
      formatBytes(s.size),
      summarisePermissions(s.permissions),
      `${s.uploadedBy} at ${isoSeconds(s.uploadedAt)}`,
    ]),
  );
}

/** A few lines describing one stored script (what `scripts show` prints before the file). */
export function renderScriptInfo(s: ScriptInfo): string {
  const lines = [`${s.name} version ${s.version} (${formatBytes(s.size)}, ${s.sha256})`];
  if (s.description !== undefined) lines.push(`  ${s.description}`);
  lines.push(`signed by ${s.signer} at ${isoSeconds(s.signedAt)}`);
  const perms = (["run", "read", "write", "net"] as const)
    .filter((k) => s.permissions[k].length > 0)
    .map((k) => `${k}: ${s.permissions[k].join(", ")}`);
  lines.push(`permissions: ${perms.length ? perms.join("; ") : "none"}`);
  lines.push(`uploaded by ${s.uploadedBy} at ${isoSeconds(s.uploadedAt)}`);
  return lines.join("\n");
}
