/**
 * Building a run request from `jw client` arguments and streaming its replies: shared by
 * `client run` and `client jobs install`.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import { JobSpec } from "../shared/protocol/agent.ts";
import { describeIssues } from "../shared/protocol/codec.ts";
import { parseTarget } from "../shared/protocol/operator.ts";
import { parseDuration } from "../shared/units.ts";
import type { ApiClient } from "./_api.ts";
import { renderReply, renderSummary, succeeded } from "./_render.ts";
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
  const job = JobSpec.safeParse({ id: str(p, "id"), key, args: jobArgs, ...extra });
  if (!job.success) throw new JwError("usage", `bad job: ${describeIssues(job.error)}`);
  return { target, job: job.data, meta, timeoutMs };
}

/**
 * Sends a run and prints its replies (human text, or one JSON object per line), then the
 * summary. Returns the exit code: 0 when every agent finished without error and exit 0.
 */
export async function streamRun(
  api: ApiClient,
  request: ReturnType<typeof buildRunRequest>,
  json: boolean,
): Promise<number> {
  const abort = new AbortController();
  // The server ends the stream at the timeout; this is a backstop for a silent server.
  const backstop = setTimeout(
    () => abort.abort(new JwError("timeout", "server did not finish the run")),
    request.timeoutMs + 15_000,
  );
  try {
    let forwarded = false;
    for await (const event of api.run(request, abort.signal)) {
      if (event.type === "dispatched") {
        forwarded = (event.servers?.length ?? 0) > 0;
        if (!json) {
          console.error(
            `sent ${request.job.key} to ${event.agents.length} agent(s) as ${event.id}`,
          );
          if (event.servers?.length) {
            console.error(
              `also handed to ${event.servers.length} other server(s) (${
                event.servers.join(", ")
              }): their agents' replies show in jw client tail on each`,
            );
          }
        }
        continue;
      }
      if (event.type === "summary") {
        const outcomes = Object.values(event.agents);
        if (outcomes.length === 0) {
          console.error(
            `no agent matched ${request.target}` +
              (forwarded ? " on this server" : ""),
          );
          return 1;
        }
        // In --json mode stdout carries only replies; the summary goes to stderr.
        for (const line of renderSummary(event)) (json ? console.error : console.log)(line);
        return outcomes.every(succeeded) ? 0 : 1;
      }
      if (json) console.log(JSON.stringify(event));
      else {
        const line = renderReply(event);
        if (line) console.log(line);
      }
    }
    throw new JwError("closed", "the server ended the run without a summary");
  } finally {
    clearTimeout(backstop);
  }
}
