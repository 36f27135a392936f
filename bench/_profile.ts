/**
 * Summaries of a V8 CPU profile: where the time went, by function (self and inclusive) and
 * by source file, with paths shortened to the repository or the npm package.
 *
 * @module
 */
import type { CpuProfile, ProfileNode } from "./_inspector.ts";

/** Time attributed to one function or file. */
export interface HotSpot {
  /** `name (file:line)` for functions, the shortened path for files. */
  name: string;
  /** Milliseconds sampled in it (self) or under it (inclusive). */
  ms: number;
  /** Share of all sampled time, 0..1. */
  share: number;
}

/** What {@link summarizeProfile} returns. */
export interface ProfileSummary {
  /** Sampled milliseconds in total. */
  totalMs: number;
  /** Milliseconds the process was idle (the `(idle)` node). */
  idleMs: number;
  /**
   * Milliseconds spent reporting to the attached inspector itself (Deno's network events
   * for every WebSocket frame): a cost of profiling, left out of the lists and shares.
   */
  inspectorMs: number;
  /** Functions by self time, most first. */
  self: HotSpot[];
  /** Functions by inclusive time (callees counted), most first; runtime roots left out. */
  inclusive: HotSpot[];
  /** Source files by self time, most first. */
  files: HotSpot[];
}

const ROOT = new URL("../", import.meta.url).href;

/** A readable location: repo-relative path, `npm:pkg@ver/…`, or the runtime's name. */
export function shortUrl(url: string): string {
  if (url === "") return "(native)";
  if (url.startsWith(ROOT)) return url.slice(ROOT.length);
  const npm = url.match(/\/npm\/registry\.npmjs\.org\/(.+)$/);
  if (npm) return `npm:${npm[1].replace(/\/(\d+\.\d+\.\d+[^/]*)\//, "@$1/")}`;
  const ext = url.match(/^ext:(.+)$/);
  if (ext) return `ext:${ext[1]}`;
  return url.replace(/^file:\/\//, "");
}

const sources = new Map<string, string[] | undefined>();

/**
 * The line (1-based) where `fn` is defined in the TypeScript source at `url`, if it is a
 * file of this repository and the name is found. Profile positions are in the transpiled
 * JavaScript, whose lines differ from the source, so the name is looked up instead.
 */
export function sourceLine(url: string, fn: string): number | undefined {
  if (!url.startsWith(ROOT) || !fn || fn === "(anonymous)") return undefined;
  if (!sources.has(url)) {
    try {
      sources.set(url, Deno.readTextFileSync(new URL(url)).split("\n"));
    } catch {
      sources.set(url, undefined);
    }
  }
  const lines = sources.get(url);
  if (!lines) return undefined;
  const name = fn.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const def = new RegExp(
    `^\\s*(?:export\\s+)?(?:(?:async|static|get|set|private|public|readonly)\\s+)*` +
      `(?:function\\*?\\s+)?\\*?${name}\\s*(?:<[^>]*>)?\\(|` +
      `^\\s*(?:export\\s+)?(?:const|let)\\s+${name}\\s*=|^\\s*${name}\\s*[:=]\\s*(?:async\\s*)?\\(`,
  );
  // A definition has a body: prefer a match that reaches "{" before ";" (an interface
  // member or an overload ends with ";").
  let first: number | undefined;
  for (let i = 0; i < lines.length; i++) {
    if (!def.test(lines[i])) continue;
    first ??= i + 1;
    const text = lines.slice(i, i + 8).join("\n");
    const brace = text.indexOf("{");
    const semi = text.indexOf(";");
    if (brace >= 0 && (semi < 0 || brace < semi)) return i + 1;
  }
  return first;
}

function frameName(node: ProfileNode): string {
  const f = node.callFrame;
  const fn = f.functionName || "(anonymous)";
  if (f.url === "") return fn;
  if (!f.url.startsWith(ROOT)) return `${fn} (${shortUrl(f.url)})`;
  const line = sourceLine(f.url, fn);
  return `${fn} (${shortUrl(f.url)}${line ? `:${line}` : ""})`;
}

const PSEUDO = new Set(["(root)", "(program)", "(idle)", "(garbage collector)"]);

/** Frames that only exist because an inspector session is attached. */
function isInspector(node: ProfileNode): boolean {
  const f = node.callFrame;
  return f.functionName.startsWith("op_inspector") || f.url.includes("inspector_network_bridge");
}

/** Time per node from the samples, falling back to hit counts × mean interval. */
function selfMsByNode(profile: CpuProfile): Map<number, number> {
  const out = new Map<number, number>();
  const { samples, timeDeltas } = profile;
  if (samples && timeDeltas && samples.length === timeDeltas.length) {
    // timeDeltas[i] is the time before sample i; charge it to the sample after it.
    for (let i = 0; i < samples.length; i++) {
      const dt = (timeDeltas[i + 1] ?? 0) / 1000;
      out.set(samples[i], (out.get(samples[i]) ?? 0) + Math.max(0, dt));
    }
    return out;
  }
  const hits = profile.nodes.reduce((n, node) => n + (node.hitCount ?? 0), 0);
  const per = hits > 0 ? (profile.endTime - profile.startTime) / 1000 / hits : 0;
  for (const node of profile.nodes) out.set(node.id, (node.hitCount ?? 0) * per);
  return out;
}

function top(map: Map<string, number>, total: number, n: number): HotSpot[] {
  return [...map.entries()]
    .filter((e) => e[1] > 0)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, ms]) => ({ name, ms, share: total > 0 ? ms / total : 0 }));
}

/** Summarizes `profile`, keeping the `n` largest entries of each list. */
export function summarizeProfile(profile: CpuProfile, n = 15): ProfileSummary {
  const selfByNode = selfMsByNode(profile);
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, ProfileNode>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node);
  }
  /** A native function (no URL) is named with the script function that called it. */
  const selfName = (node: ProfileNode): string => {
    const name = frameName(node);
    if (node.callFrame.url !== "" || PSEUDO.has(name)) return name;
    let caller = parent.get(node.id);
    while (caller && caller.callFrame.url === "" && !PSEUDO.has(frameName(caller))) {
      caller = parent.get(caller.id);
    }
    return caller && !PSEUDO.has(frameName(caller))
      ? `${name} [native] ← ${frameName(caller)}`
      : `${name} [native]`;
  };
  const self = new Map<string, number>();
  const files = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let totalMs = 0;
  let idleMs = 0;
  let inspectorMs = 0;
  for (const node of profile.nodes) {
    const ms = selfByNode.get(node.id) ?? 0;
    totalMs += ms;
    if (node.callFrame.functionName === "(idle)") idleMs += ms;
    if (isInspector(node)) {
      inspectorMs += ms;
      continue;
    }
    const name = selfName(node);
    self.set(name, (self.get(name) ?? 0) + ms);
    const fn = frameName(node);
    const file = node.callFrame.url !== ""
      ? shortUrl(node.callFrame.url)
      : PSEUDO.has(fn)
      ? fn
      : `(native) ${fn}`;
    files.set(file, (files.get(file) ?? 0) + ms);
  }
  // Inclusive time: each node's self time counts once for every distinct function on its
  // stack (recursion is not counted twice).
  const root = profile.nodes[0];
  const onStack = new Map<string, number>();
  const walk = (node: ProfileNode) => {
    const name = frameName(node);
    const depth = onStack.get(name) ?? 0;
    onStack.set(name, depth + 1);
    const ms = isInspector(node) ? 0 : selfByNode.get(node.id) ?? 0;
    if (ms > 0) {
      for (const key of onStack.keys()) inclusive.set(key, (inclusive.get(key) ?? 0) + ms);
    }
    for (const child of node.children ?? []) {
      const c = byId.get(child);
      if (c) walk(c);
    }
    if (depth === 0) onStack.delete(name);
    else onStack.set(name, depth);
  };
  if (root) walk(root);
  for (const name of [...inclusive.keys()]) if (PSEUDO.has(name)) inclusive.delete(name);
  self.delete("(idle)");
  files.delete("(idle)");
  const busy = totalMs - idleMs - inspectorMs;
  return {
    totalMs,
    idleMs,
    inspectorMs,
    self: top(self, busy, n),
    inclusive: top(inclusive, busy, n),
    files: top(files, busy, n),
  };
}
