/**
 * `jw client jobs …`: install, list, delete and inspect the jobs agents keep. Each is a
 * run of a command on the targeted agents: `jobs install` sends the job itself with a
 * schedule and `persistent: true`; `list`, `delete` and `runs` send `job.list`,
 * `job.delete` and `job.runs`.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import type { Schedule } from "../shared/protocol/agent.ts";
import { parseDuration } from "../shared/units.ts";
import type { ApiClient } from "./_api.ts";
import { checkSubcommand, type Parsed, str } from "./_flags.ts";
import { renderTable, succeeded } from "./_render.ts";
import { buildRunRequest, streamRun } from "./_run.ts";

/** Usage of `jw client jobs`. */
export const JOBS_USAGE = `jobs commands:
  jobs install TARGET KEY [ARGS_JSON] --id ID (--every DUR | --cron EXPR [--tz ZONE] |
               --on start|connect|disconnect|stop) [--now] [--overlap skip|allow]
               [--meta K=V]...
      install (or replace) a persistent job on the agents; it survives restarts; an
      offline agent gets it when it connects (within --ttl, default 1h). --now also runs
      it once right away: a watcher (fs.watch, file.tail, journal.watch) installed with
      --on start --now starts now and again whenever the agent starts
  jobs list [--agent ID]            jobs per agent: trigger, next run, last result
  jobs delete TARGET ID             remove a job and its run history
  jobs runs TARGET ID [--limit N]   the job's last runs, newest first`;

const ON: Record<string, Schedule["trigger"]> = {
  start: "onStart",
  connect: "onConnect",
  disconnect: "onDisconnect",
  stop: "onStop",
};

/** Flags each jobs subcommand accepts (besides the connection flags). */
export const JOBS_FLAGS: Record<string, string[]> = {
  install: [
    "id",
    "meta",
    "meta-json",
    "timeout",
    "ttl",
    "every",
    "cron",
    "tz",
    "on",
    "now",
    "overlap",
  ],
  list: ["agent", "timeout"],
  delete: ["timeout"],
  runs: ["limit", "timeout"],
};

/** Every flag some jobs subcommand takes. */
export const JOBS_FLAG_NAMES: readonly string[] = [...new Set(Object.values(JOBS_FLAGS).flat())];

/** The schedule named by `--every`, `--cron`/`--tz` or `--on`; exactly one is required. */
export function scheduleFromFlags(p: Parsed): Schedule {
  const every = str(p, "every");
  const cron = str(p, "cron");
  const on = str(p, "on");
  const given = [every, cron, on].filter((v) => v !== undefined).length;
  if (given !== 1) {
    throw new JwError(
      "usage",
      "jobs install needs exactly one of --every DUR, --cron EXPR, --on EVENT",
    );
  }
  if (str(p, "tz") !== undefined && cron === undefined) {
    throw new JwError("usage", "--tz only applies with --cron");
  }
  if (every !== undefined) {
    const ms = parseDuration(every);
    if (ms === undefined || ms < 1000) {
      throw new JwError(
        "usage",
        `--every expects a duration of at least 1s like "30s", got "${every}"`,
      );
    }
    return { trigger: "interval", every };
  }
  if (cron !== undefined) {
    const tz = str(p, "tz");
    return tz === undefined ? { trigger: "cron", cron } : { trigger: "cron", cron, tz };
  }
  const trigger = ON[on!];
  if (!trigger) {
    throw new JwError("usage", `--on expects start, connect, disconnect or stop, got "${on}"`);
  }
  return { trigger } as Schedule;
}

/** One agent's structured answer to a job.* command, or its error. */
interface AgentAnswer {
  agent: string;
  data?: Record<string, unknown>;
  error?: { code: string; message: string } | null;
}

/** Runs `key` on `target` and collects each agent's data output and outcome. */
async function ask(
  api: ApiClient,
  target: string,
  key: string,
  args: Record<string, unknown>,
  timeoutMs: number,
): Promise<{ answers: AgentAnswer[]; ok: boolean }> {
  const answers = new Map<string, AgentAnswer>();
  let ok = true;
  let matched = 0;
  for await (const event of api.run({ target, job: { key, args }, timeoutMs })) {
    if (event.type === "dispatched") continue;
    if (event.type === "summary") {
      const outcomes = Object.entries(event.agents);
      matched = outcomes.length;
      for (const [agent, outcome] of outcomes) {
        if (!succeeded(outcome)) ok = false;
        const answer = answers.get(agent) ?? { agent };
        if (outcome.error) answer.error = outcome.error;
        answers.set(agent, answer);
      }
      continue;
    }
    if (event.type === "output" && event.data !== undefined) {
      answers.set(event.agent, {
        ...answers.get(event.agent),
        agent: event.agent,
        data: event.data,
      });
    }
  }
  if (matched === 0) throw new JwError("not_found", `no agent matched ${target}`);
  return { answers: [...answers.values()].sort((a, b) => a.agent.localeCompare(b.agent)), ok };
}

function when(ms: unknown): string {
  return typeof ms === "number" ? new Date(ms).toISOString().replace(/\.\d+Z$/, "Z") : "-";
}

/** Text form of a stored trigger. */
export function describeTrigger(t: unknown): string {
  const s = t as Schedule | undefined;
  if (!s) return "now";
  switch (s.trigger) {
    case "interval":
      return `every ${s.every}`;
    case "cron":
      return `cron "${s.cron}"${s.tz ? ` ${s.tz}` : ""}`;
    case "now":
      return "now";
    default:
      return `on ${s.trigger.slice(2).toLowerCase()}`;
  }
}

/** The LAST RUN column, or why a job cannot run at all. */
function statusOf(job: Record<string, unknown>): string {
  const blocked = job.blocked as { code: string; message: string } | undefined;
  return blocked ? `blocked ${blocked.code}: ${blocked.message}` : lastResult(job.last);
}

function lastResult(last: unknown): string {
  if (!last || typeof last !== "object") return "-";
  const l = last as { error?: { code: string } | null; exitCode?: number | null; finish?: number };
  const outcome = l.error
    ? `error ${l.error.code}`
    : l.exitCode !== undefined && l.exitCode !== null && l.exitCode !== 0
    ? `exit ${l.exitCode}`
    : "ok";
  return `${outcome} at ${when(l.finish)}`;
}

function timeoutOf(p: Parsed): number {
  const text = str(p, "timeout") ?? "30s";
  const ms = parseDuration(text);
  if (!ms || ms <= 0 || ms > 3_600_000) {
    throw new JwError("usage", `--timeout expects a duration up to 1h, got "${text}"`);
  }
  return ms;
}

/** The objects of `data[field]` from every agent, each with an `agent` column added. */
function rowsOf(answers: AgentAnswer[], field: "jobs" | "runs"): Record<string, unknown>[] {
  return answers.flatMap((a) => {
    const items = a.data?.[field];
    return Array.isArray(items) ? items.map((item) => ({ agent: a.agent, ...item })) : [];
  });
}

function printErrors(answers: AgentAnswer[]): void {
  for (const a of answers) {
    if (a.error) console.error(`[${a.agent}] ${a.error.code}: ${a.error.message}`);
  }
}

/** Entry point of `jw client jobs SUB …`. */
export async function jobsCommand(
  api: ApiClient,
  p: Parsed,
  args: string[],
  json: boolean,
): Promise<number> {
  const [sub, ...rest] = args;
  checkSubcommand("jobs", sub, JOBS_FLAGS, JOBS_FLAG_NAMES, p);
  switch (sub) {
    case "install": {
      if (str(p, "id") === undefined) {
        throw new JwError(
          "usage",
          "jobs install needs --id ID (installing the same id again replaces the job)",
        );
      }
      const overlap = str(p, "overlap");
      if (overlap !== undefined && overlap !== "skip" && overlap !== "allow") {
        throw new JwError("usage", `--overlap expects skip or allow, got "${overlap}"`);
      }
      const request = buildRunRequest(p, rest, {
        schedule: scheduleFromFlags(p),
        persistent: true,
        ...(overlap ? { overlap } : {}),
        ...(p.values.now === true ? { runNow: true } : {}),
      });
      return await streamRun(api, request, json);
    }
    case "list": {
      if (rest.length) throw new JwError("usage", `jobs list takes no arguments (use --agent ID)`);
      const agent = str(p, "agent");
      const { answers, ok } = await ask(
        api,
        agent ? `agent:${agent}` : "all",
        "job.list",
        {},
        timeoutOf(p),
      );
      const rows = rowsOf(answers, "jobs");
      if (json) console.log(JSON.stringify(rows));
      else if (rows.length === 0 && answers.every((a) => !a.error)) console.log("no jobs");
      else {
        console.log(renderTable(
          ["AGENT", "JOB", "KEY", "TRIGGER", "NEXT RUN", "LAST RUN / STATUS"],
          rows.map((
            r,
          ) => [
            String(r.agent),
            String(r.id),
            String(r.key),
            describeTrigger(r.trigger),
            when(r.next),
            statusOf(r),
          ]),
        ));
      }
      printErrors(answers);
      return ok ? 0 : 1;
    }
    case "delete": {
      if (rest.length !== 2) throw new JwError("usage", "jobs delete needs TARGET ID");
      const [target, id] = rest;
      const { answers, ok } = await ask(api, target, "job.delete", { id }, timeoutOf(p));
      if (json) console.log(JSON.stringify(answers));
      else for (const a of answers) if (!a.error) console.log(`[${a.agent}] deleted job ${id}`);
      printErrors(answers);
      return ok ? 0 : 1;
    }
    default: {
      if (rest.length !== 2) throw new JwError("usage", "jobs runs needs TARGET ID");
      const [target, id] = rest;
      const limitText = str(p, "limit");
      const limit = limitText === undefined ? undefined : Number(limitText);
      if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 1000)) {
        throw new JwError("usage", `--limit expects an integer from 1 to 1000, got "${limitText}"`);
      }
      const { answers, ok } = await ask(
        api,
        target,
        "job.runs",
        limit ? { id, limit } : { id },
        timeoutOf(p),
      );
      const rows = rowsOf(answers, "runs");
      if (json) console.log(JSON.stringify(rows));
      else if (rows.length === 0 && answers.every((a) => !a.error)) console.log("no runs yet");
      else if (rows.length) {
        console.log(renderTable(
          ["AGENT", "RUN", "START", "DURATION", "RESULT"],
          rows.map((
            r,
          ) => [
            String(r.agent),
            String(r.run),
            when(r.start),
            r.durationMs === undefined ? "-" : `${r.durationMs}ms`,
            lastResult(r),
          ]),
        ));
      }
      printErrors(answers);
      return ok ? 0 : 1;
    }
  }
}
