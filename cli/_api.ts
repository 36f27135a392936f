/**
 * A small client for the operator HTTP API (see shared/protocol/operator.ts), used by
 * `jw client` and `jw demo`.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import type {
  AgentInfo,
  AuditRecord,
  MembersAnswer,
  OutputInfo,
  RelayedReply,
  RunEvent,
  RunRequest,
  ScriptDeleted,
  ScriptInfo,
  ScriptUploaded,
} from "../shared/protocol/operator.ts";

/** Where and as whom to connect. */
export interface ApiOptions {
  /** Server base URL, e.g. http://127.0.0.1:7400. */
  server: string;
  user: string;
  password?: string;
}

/** Filters for the live stream. */
export interface StreamFilter {
  agent?: string;
  /** "NAME=VALUE". */
  tag?: string;
  /** An envelope id. */
  id?: string;
  /** Reply types, comma-separated: output, log, setTag. */
  type?: string;
}

/** Operator API calls. Stateless; safe to share. */
export class ApiClient {
  readonly #base: string;
  readonly #auth: string;
  readonly #options: ApiOptions;

  constructor(options: ApiOptions) {
    this.#options = options;
    this.#base = options.server.replace(/^ws/, "http").replace(/\/+$/, "");
    this.#auth = "Basic " + base64Utf8(`${options.user}:${options.password ?? ""}`);
  }

  /** The server this client talks to. */
  get server(): string {
    return this.#base;
  }

  /** A client for another server of the cluster, with the same credentials. */
  withServer(server: string): ApiClient {
    return new ApiClient({ ...this.#options, server });
  }

  /**
   * `GET /v1/runs/ID`: one server's part of a command — its `part` (or `dispatched`)
   * event, the replies of the targets it handles so far and to come, then its summary.
   * Waits up to `waitMs` for a command that has not reached that server yet.
   */
  async *follow(id: string, waitMs = 10_000, signal?: AbortSignal): AsyncGenerator<RunEvent> {
    const res = await this.#fetch(
      `/v1/runs/${encodeURIComponent(id)}?wait=${Math.min(30_000, Math.max(0, waitMs))}`,
      { signal },
    );
    yield* ndjson<RunEvent>(res);
  }

  /** `GET /v1/agents`. */
  async agents(): Promise<AgentInfo[]> {
    const res = await this.#fetch("/v1/agents");
    return (await res.json()).agents;
  }

  /** `GET /v1/outputs`. */
  async outputs(): Promise<OutputInfo[]> {
    const res = await this.#fetch("/v1/outputs");
    return (await res.json()).outputs;
  }

  /** `GET /v1/audit`. */
  async audit(query: { limit?: number; action?: string } = {}): Promise<AuditRecord[]> {
    const qs = new URLSearchParams();
    if (query.limit !== undefined) qs.set("limit", String(query.limit));
    if (query.action) qs.set("action", query.action);
    const res = await this.#fetch(`/v1/audit?${qs}`);
    return (await res.json()).entries;
  }

  /** `POST /v1/run`: yields the dispatched event, each reply, then the summary. */
  async *run(request: RunRequest, signal?: AbortSignal): AsyncGenerator<RunEvent> {
    const res = await this.#fetch("/v1/run", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(request),
      signal,
    });
    yield* ndjson<RunEvent>(res);
  }

  /**
   * `GET /v1/stream`: resolves once the server is streaming (so nothing sent after this
   * resolves is missed), to an iterator of live replies that ends when the server ends or
   * `signal` aborts.
   */
  async stream(
    filter: StreamFilter = {},
    signal?: AbortSignal,
  ): Promise<AsyncGenerator<RelayedReply>> {
    const qs = new URLSearchParams(
      Object.entries(filter).filter((e): e is [string, string] => e[1] !== undefined),
    );
    const res = await this.#fetch(`/v1/stream?${qs}`, { signal });
    return ndjson<RelayedReply>(res);
  }

  /** `POST /v1/scripts`: stores a signed script on the server. */
  async uploadScript(text: string): Promise<ScriptUploaded> {
    const res = await this.#fetch("/v1/scripts", {
      method: "POST",
      headers: { "content-type": "application/javascript; charset=utf-8" },
      body: text,
    });
    return await res.json();
  }

  /** `GET /v1/scripts`: every stored script version, by name then version. */
  async scripts(): Promise<ScriptInfo[]> {
    const res = await this.#fetch("/v1/scripts");
    return (await res.json()).scripts;
  }

  /** `GET /v1/scripts/NAME[?version=V]` (the newest version by default): its info and text. */
  async script(name: string, version?: number): Promise<{ script: ScriptInfo; text: string }> {
    const qs = version === undefined ? "" : `?version=${version}`;
    const res = await this.#fetch(`/v1/scripts/${encodeURIComponent(name)}${qs}`);
    return await res.json();
  }

  /**
   * `DELETE /v1/scripts/NAME[?version=V]`: removes it (every version by default) from the
   * server and sends `script.delete` to connected agents.
   */
  async deleteScript(name: string, version?: number): Promise<ScriptDeleted> {
    const qs = version === undefined ? "" : `?version=${version}`;
    const res = await this.#fetch(`/v1/scripts/${encodeURIComponent(name)}${qs}`, {
      method: "DELETE",
    });
    return await res.json();
  }

  /** `GET /v1/members`: the servers of the cluster as this server sees them. */
  async members(): Promise<MembersAnswer> {
    const res = await this.#fetch("/v1/members");
    return await res.json();
  }

  /** `GET /v1/cluster/stats`: membership and security counters of a gossiping server. */
  async clusterStats(): Promise<Record<string, unknown>> {
    const res = await this.#fetch("/v1/cluster/stats");
    return await res.json();
  }

  /** `POST /v1/cluster/join`: asks the server to join servers at gossip addresses. */
  async join(addresses: string[]): Promise<{ joined: number }> {
    const res = await this.#fetch("/v1/cluster/join", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ addresses }),
    });
    return await res.json();
  }

  async #fetch(path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    let url = this.#base + path;
    // Redirects (another server streams that agent) are followed here, so the credentials
    // go along to the server of the same cluster (fetch drops them across origins).
    for (let hops = 0;; hops++) {
      try {
        res = await fetch(url, {
          ...init,
          redirect: "manual",
          headers: { ...init.headers as Record<string, string>, authorization: this.#auth },
        });
      } catch (err) {
        if (init.signal?.aborted) throw err;
        throw new JwError("not_connected", `cannot reach ${url}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const location = res.headers.get("location");
      if ((res.status !== 307 && res.status !== 308) || !location || hops >= 3) break;
      await res.body?.cancel();
      url = new URL(location, url).href;
    }
    if (res.ok) return res;
    let body: { error?: { code?: string; message?: string } } = {};
    try {
      body = await res.json();
    } catch {
      // not JSON: fall through to the status line
    }
    const code =
      (body.error?.code ?? (res.status === 401 ? "unauthorized" : "internal")) as JwError["code"];
    throw new JwError(code, body.error?.message ?? `${res.status} ${res.statusText}`);
  }
}

/** Base64 of the UTF-8 bytes of `text` (HTTP basic credentials, RFC 7617 charset UTF-8). */
export function base64Utf8(text: string): string {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Reads a newline-delimited JSON body, one value per line. */
export async function* ndjson<T>(res: Response): AsyncGenerator<T> {
  if (!res.body) return;
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of res.body) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) yield JSON.parse(line) as T;
    }
  }
  if (buffered.trim()) yield JSON.parse(buffered) as T;
}
