/**
 * Test helpers for the file service: a temp directory with a root and a handler over it, and
 * a fake upstream on loopback that counts requests.
 *
 * @module
 */
import { FakeClock } from "../../shared/clock.ts";
import { FilesConfig } from "../../shared/config/files.ts";
import { silentLogger } from "../../shared/log.ts";
import { createFilesHandler, type FilesHandler } from "./handler.ts";

/** A temp directory holding `root/`, `outside/` and `cache/`, and a handler serving `root/`. */
export interface Fixture extends AsyncDisposable {
  /** The temp directory (real path). */
  base: string;
  root: string;
  cache: string;
  clock: FakeClock;
  handler: FilesHandler;
  /** `handler.handle()` for raw path `path` (as it comes after `/files/`). */
  get(path: string, init?: RequestInit): Promise<Response>;
  /** Writes `root/<path>`, creating directories. */
  write(path: string, content: string | Uint8Array): Promise<void>;
  /** Files under `cache/` (recursively), relative paths. */
  cacheFiles(): Promise<string[]>;
}

/** Builds a {@link Fixture}; `config` is merged over `{root}` and parsed. */
export async function fixture(
  config: Record<string, unknown> = {},
  fetchFn?: typeof fetch,
): Promise<Fixture> {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "jw-files-" }));
  const root = `${base}/root`;
  const cache = `${base}/cache`;
  await Deno.mkdir(root);
  await Deno.mkdir(`${base}/outside`);
  await Deno.writeTextFile(`${base}/outside/secret.txt`, "top secret\n");
  const clock = new FakeClock();
  const handler = createFilesHandler({
    config: FilesConfig.parse({ root, ...config }),
    cacheDir: cache,
    clock,
    logger: silentLogger,
    fetch: fetchFn,
  });
  const write = async (path: string, content: string | Uint8Array) => {
    const full = `${root}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    if (typeof content === "string") await Deno.writeTextFile(full, content);
    else await Deno.writeFile(full, content);
  };
  const cacheFiles = async () => {
    const out: string[] = [];
    const walk = async (dir: string, prefix: string) => {
      try {
        for await (const e of Deno.readDir(dir)) {
          if (e.isDirectory) await walk(`${dir}/${e.name}`, `${prefix}${e.name}/`);
          else out.push(prefix + e.name);
        }
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    };
    await walk(cache, "");
    return out.sort();
  };
  return {
    base,
    root,
    cache,
    clock,
    handler,
    get: (path, init) => handler.handle(new Request(`http://x/files/${path}`, init), path),
    write,
    cacheFiles,
    async [Symbol.asyncDispose]() {
      await handler.close();
      await Deno.remove(base, { recursive: true });
    },
  };
}

/** How the fake upstream answers one path. */
export type UpstreamAnswer = (req: Request) => Response | Promise<Response>;

/**
 * An HTTP server on 127.0.0.1 (free port) serving `files` by path (`/a/b.txt` → `a/b.txt`),
 * 404 for the rest, and counting every request per path.
 */
export class FakeUpstream implements AsyncDisposable {
  /** Content or answer by path (without the leading `/`, still percent-encoded). */
  readonly files = new Map<string, string | UpstreamAnswer>();
  /** Requests received, by path. */
  readonly hits = new Map<string, number>();
  #server: Deno.HttpServer<Deno.NetAddr>;
  #waiters: (() => void)[] = [];
  #closed = false;

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => {
        const path = new URL(req.url).pathname.slice(1);
        this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
        for (const wake of this.#waiters.splice(0)) wake();
        const file = this.files.get(path);
        if (file === undefined) return new Response("no such file\n", { status: 404 });
        return typeof file === "string" ? new Response(file) : file(req);
      },
    );
  }

  /** The base URL. */
  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** All requests received. */
  get total(): number {
    let n = 0;
    for (const v of this.hits.values()) n += v;
    return n;
  }

  /** Resolves when the next request arrives. */
  nextRequest(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#server.shutdown();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** A loopback URL where nothing listens (a server was started there and stopped). */
export async function deadUrl(): Promise<string> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(),
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  await server.shutdown();
  return url;
}

/** A promise and its resolver. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Lower-case hex sha256 of text. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
