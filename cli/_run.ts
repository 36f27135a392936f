/**
 * Building a run request from `jw client` arguments and streaming its replies: shared by
 * `client run` and `client jobs install`.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import { JobSpec } from "../shared/protocol/agent.ts";
import { describeIssues } from "../shared/protocol/codec.ts";
import {
  type AgentOutcome,
  type DispatchedEvent,
  parseTarget,
  type RunEvent,
  type SummaryEvent,
} from "../shared/protocol/operator.ts";
import { parseDuration } from "../shared/units.ts";
import type { ApiClient } from "./_api.ts";
import { renderReply, renderStates, renderSummary, succeeded } from "./_render.ts";
import { keyValues, list, type Parsed, str } from "./_flags.ts";

/**
 * Parses `run`'s positionals and flags into a request body; `extra` adds job fields
 * (schedule, persistence) for `jobs install`.
 */
export function buildRunRequest(p: Parsed, args: string[], extra: Partial<JobSpec> = {}) {
  if (args.length < 2 || args.length > 3) {
    throw new JwError(
      "usage",
      'run needs TARGET KEY [ARGS_JSON], e.g. run all exec.run \'{"cmd":"/bin/echo"}\'',
    );
  }
  const [target, key, argsJson] = args;
  parseTarget(target);
  let jobArgs: unknown = {};
  if (argsJson !== undefined) {
    try {
      jobArgs = JSON.parse(argsJson);
    } catch (err) {
      throw new JwError("usage", `ARGS_JSON is not valid JSON: ${(err as Error).message}`);
    }
    if (!jobArgs || typeof jobArgs !== "object" || Array.isArray(jobArgs)) {
      throw new JwError("usage", "ARGS_JSON must be a JSON object");
    }
  }
  let meta: Record<string, unknown> | undefined;
  const metaJson = str(p, "meta-json");
  if (metaJson !== undefined) {
    try {
      meta = JSON.parse(metaJson);
    } catch (err) {
      throw new JwError("usage", `--meta-json is not valid JSON: ${(err as Error).message}`);
    }
    if (!meta || typeof meta !== "object" || Array.isArray(meta)) {
      throw new JwError("usage", "--meta-json must be a JSON object");
    }
  }
  const pairs = keyValues(list(p, "meta"), "meta");
  if (pairs) meta = { ...meta, ...pairs };
  const timeoutText = str(p, "timeout") ?? "30s";
  const timeoutMs = parseDuration(timeoutText);
  if (timeoutMs !== undefined && timeoutMs > 3_600_000) {
    throw new JwError("usage", `--timeout may be at most 1h, got "${timeoutText}"`);
  }
  if (!timeoutMs || timeoutMs <= 0) {
    throw new JwError("usage", `--timeout expects a duration like "30s", got "${timeoutText}"`);
  }
  const ttlText = str(p, "ttl");
  let ttlMs: number | undefined;
  if (ttlText !== undefined) {
    ttlMs = ttlText === "0" ? 0 : parseDuration(ttlText);
    if (ttlMs === undefined || ttlMs < 0 || ttlMs > 7 * 24 * 3_600_000) {
      throw new JwError("usage", `--ttl expects a duration up to 7d (or 0), got "${ttlText}"`);
    }
  }
  const job = JobSpec.safeParse({ id: str(p, "id"), key, args: jobArgs, ...extra });
  if (!job.success) throw new JwError("usage", `bad job: ${describeIssues(job.error)}`);
  return { target, job: job.data, meta, timeoutMs, ...(ttlMs === undefined ? {} : { ttlMs }) };
}

/**
 * Sends a run and prints its replies (human text, or one JSON object per line), then a
 * summary with a line per target state. Targets handled by other servers of the cluster
 * (listed in the `dispatched` event) are followed on those servers (`GET /v1/runs/ID`), so
 * the replies and the summary cover every target. Returns the exit code: 0 when every
 * target finished without error and exit 0.
 */
export function streamRun(
  api: ApiClient,
  request: ReturnType<typeof buildRunRequest>,
  json: boolean,
): Promise<number> {
  return streamEvents(
    api,
    (signal) => api.run(request, signal),
    { json, waitMs: request.timeoutMs, target: request.target, key: request.job.key },
  );
}

/**
 * Shows a command given earlier (`jw client show ID`): its replies so far and to come, on
 * every server that handles targets of it, and the state of each target. Ask the server the
 * command was given to: it knows where every target is.
 */
export function showRun(api: ApiClient, id: string, json: boolean): Promise<number> {
  return streamEvents(api, (signal) => api.follow(id, 0, signal), { json, waitMs: 3_600_000 });
}

async function streamEvents(
  api: ApiClient,
  open: (signal: AbortSignal) => AsyncIterable<RunEvent>,
  options: { json: boolean; waitMs: number; target?: string; key?: string },
): Promise<number> {
  const { json } = options;
  const abort = new AbortController();
  // The servers end their streams at the timeout; this is a backstop for a silent server.
  const backstop = setTimeout(
    () => abort.abort(new JwError("timeout", "server did not finish the run")),
    options.waitMs + 15_000,
  );
  const print = (event: RunEvent) => {
    if (event.type === "dispatched" || event.type === "part" || event.type === "summary") return;
    if (json) console.log(JSON.stringify(event));
    else {
      const line = renderReply(event);
      if (line) console.log(line);
    }
  };
  try {
    let dispatched: DispatchedEvent | undefined;
    const summaries: SummaryEvent[] = [];
    const others: Promise<void>[] = [];
    for await (const event of open(abort.signal)) {
      if (event.type === "dispatched") {
        dispatched = event;
        if (!json) {
          console.error(
            options.key === undefined
              ? `${event.id}: ${event.target}, ${event.agents.length} target(s)`
              : `sent ${options.key} to ${event.agents.length} agent(s) as ${event.id}`,
          );
        }
        others.push(...followOthers(api, event, abort.signal, print, summaries));
        continue;
      }
      if (event.type === "part") {
        throw new JwError(
          "usage",
          `command ${event.id} was given to server ${event.origin}: ask that server`,
        );
      }
      if (event.type === "summary") {
        summaries.push(event);
        break;
      }
      print(event);
    }
    if (!dispatched || summaries.length === 0) {
      throw new JwError("closed", "the server ended the run without a summary");
    }
    await Promise.all(others);
    const merged = mergeSummaries(dispatched, summaries);
    const outcomes = Object.values(merged.agents);
    if (outcomes.length === 0) {
      console.error(`no agent matched ${options.target ?? dispatched.target}`);
      return 1;
    }
    // In --json mode stdout carries only replies; the summary goes to stderr.
    const out = json ? console.error : console.log;
    for (const line of renderSummary(merged)) out(line);
    for (const line of renderStates(merged)) out(line);
    return outcomes.every(succeeded) ? 0 : 1;
  } finally {
    clearTimeout(backstop);
  }
}

/**
 * Follows the part of each other server that handles targets of `dispatched`, printing
 * replies as they come and collecting each server's summary. A server that cannot be read
 * leaves its targets without a summary (they show as pending) and a warning.
 */
function followOthers(
  api: ApiClient,
  dispatched: DispatchedEvent,
  signal: AbortSignal,
  print: (event: RunEvent) => void,
  summaries: SummaryEvent[],
): Promise<void>[] {
  const servers = new Set(Object.values(dispatched.owners ?? {}));
  return [...servers].map(async (server) => {
    const url = dispatched.urls?.[server];
    const count = Object.values(dispatched.owners ?? {}).filter((s) => s === server).length;
    if (!url) {
      console.error(`cannot follow ${count} target(s) on server ${server}: its URL is unknown`);
      return;
    }
    console.error(`following ${count} target(s) on ${server} at ${url}`);
    try {
      for await (const event of api.withServer(url).follow(dispatched.id, 10_000, signal)) {
        if (event.type === "summary") {
          summaries.push(event);
          return;
        }
        print(event);
      }
    } catch (err) {
      if (signal.aborted) return;
      console.error(`cannot follow the targets on ${server} (${url}): ${(err as Error).message}`);
    }
  });
}

/**
 * One summary for the whole command: every server's outcomes, and `pending` for a target no
 * server reported on.
 */
export function mergeSummaries(
  dispatched: DispatchedEvent,
  summaries: readonly SummaryEvent[],
): SummaryEvent {
  const agents: Record<string, AgentOutcome> = {};
  for (const s of summaries) Object.assign(agents, s.agents);
  for (const id of dispatched.agents) {
    agents[id] ??= {
      status: "error",
      error: {
        code: "pending",
        message: `no server reported on it (owner ${dispatched.owners?.[id] ?? "unknown"})`,
      },
      state: "pending",
    };
  }
  const sorted = Object.fromEntries(Object.entries(agents).sort(([a], [b]) => (a < b ? -1 : 1)));
  return { type: "summary", id: dispatched.id, agents: sorted };
}
