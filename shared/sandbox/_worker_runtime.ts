/**
 * The script's side of the sandbox. {@link workerMain} is the whole program of the module
 * Worker: the child process turns its source text into a module and starts the Worker with it,
 * so it must stay self-contained — no imports and no references to anything outside its own
 * body (only its text reaches the Worker).
 *
 * It waits for one {@link WorkerInit} message, installs the script's globals (`args`, `meta`,
 * `job`, `emit`, `log`, one object per builtin category), routes `console` output through the
 * private port (so it stays in order with `emit` and `log`), and imports the script from a blob
 * URL. The run ends with one `done` message when the module's evaluation has settled and no
 * builtin call is pending, or at the first uncaught exception or unhandled rejection, or when
 * the script calls `Deno.exit()` or `close()`.
 *
 * This layer arranges the script's surroundings; it is not a security boundary. The boundary is
 * the Worker's Deno permissions and the child process around it: whatever a script does to
 * these globals (or to the runtime's messages) can only change its own run's output.
 *
 * @module
 */

/** What the child sends the Worker once, with the port transferred. */
export interface WorkerInit {
  /** The private channel to the child; the script never sees it. */
  port: MessagePort;
  /** The URL of this runtime's module, dropped from stack traces. */
  runtimeUrl: string;
  name: string;
  source: string;
  typescript: boolean;
  commands: string[];
  globals: { args?: unknown; meta?: unknown; job?: unknown };
  reserved: readonly string[];
  logLevels: readonly string[];
  maxMessageChars: number;
  maxStackChars: number;
}

type Fn = (...values: unknown[]) => unknown;
interface Pending {
  resolve(value: unknown): void;
  reject(reason: unknown): void;
  /** The handler of a streaming call (`fs.watch(args, fn)`), given each event. */
  onEvent?: (value: unknown) => unknown;
}
interface WireError {
  code: string;
  message: string;
  detail?: Record<string, unknown>;
}

/** The Worker's program; see the module documentation. Never call it outside a Worker. */
export function workerMain(): void {
  const scope = globalThis as unknown as Record<string, unknown> & {
    onmessage: ((event: MessageEvent<WorkerInit>) => void) | null;
    addEventListener(type: string, listener: (event: Event) => void): void;
  };
  scope.onmessage = (event) => {
    scope.onmessage = null;
    start(event.data);
  };

  function start(init: WorkerInit): void {
    const { port, name } = init;
    const post = port.postMessage.bind(port);
    const later = setTimeout;
    const stringify = JSON.stringify;
    const parse = JSON.parse;
    const inspect = Deno.inspect;
    const pending = new Map<number, Pending>();
    let nextId = 0;
    let evaluated = false;
    let finished = false;
    let scriptUrl = "";

    // ---- ending the run --------------------------------------------------------------------

    const finish = (error: WireError | null): void => {
      if (finished) return;
      finished = true;
      post({ t: "done", error });
    };
    const fail = (err: unknown): void => {
      if (finished) return;
      let info: WireError;
      try {
        info = describe(err);
      } catch {
        info = { code: "script_failed", message: "Error: the script failed" };
      }
      finish(info);
    };
    const settleIfIdle = (): void => {
      if (!evaluated || finished || pending.size > 0) return;
      // A macrotask later: continuations of the last call (microtasks) may start new calls.
      later(() => {
        if (pending.size === 0) finish(null);
      }, 0);
    };
    // Deno.exit() and close() end the run; the thread then waits until the child process exits
    // (a plain close would stop the Worker before the `done` message is out).
    const halt = (): never => {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      throw new Error("unreachable");
    };

    const cleanText = (text: string): string => {
      let out = scriptUrl ? text.split(scriptUrl).join(name) : text;
      out = out.split("\n").filter((line) => !line.includes(init.runtimeUrl)).join("\n");
      return out;
    };
    const describe = (err: unknown): WireError => {
      if (typeof err !== "object" || err === null || typeof (err as Error).message !== "string") {
        return { code: "script_failed", message: `Uncaught ${cleanText(inspect(err))}` };
      }
      const e = err as Error & { code?: unknown };
      let errName = typeof e.name === "string" ? e.name : "Error";
      const lines = cleanText(e.message).split("\n");
      let first = lines[0];
      // Deno reports a module that does not parse as a TypeError whose message is
      // "SyntaxError: ...", a code frame, and the place.
      const syntax = errName === "TypeError" ? /^SyntaxError: (.*)$/.exec(first) : null;
      if (syntax) {
        errName = "SyntaxError";
        first = syntax[1];
      }
      if (lines.length > 1) {
        const at = lines.map((line) => /^\s+at (\S.*:\d+:\d+)$/.exec(line)).find((m) => m);
        if (at) first += ` at ${at[1]}`;
      }
      const detail: Record<string, unknown> = {};
      if (typeof e.stack === "string") {
        detail.stack = cleanText(e.stack).slice(0, init.maxStackChars);
      }
      if (typeof e.code === "string" && !syntax) detail.code = e.code;
      return { code: "script_failed", message: `${errName}: ${first}`, detail };
    };

    scope.addEventListener("error", (event) => {
      event.preventDefault();
      const e = event as ErrorEvent;
      fail(e.error ?? new Error(e.message));
    });
    scope.addEventListener("unhandledrejection", (event) => {
      event.preventDefault();
      fail((event as PromiseRejectionEvent).reason);
    });

    // ---- values crossing to the host -------------------------------------------------------

    const isPlainObject = (value: unknown): value is Record<string, unknown> => {
      if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
      const proto = Object.getPrototypeOf(value);
      return proto === Object.prototype || proto === null;
    };
    /** A JSON copy of `value`, or a TypeError/RangeError naming `what`. */
    const toJson = (what: string, value: unknown): unknown => {
      let text: string | undefined;
      try {
        text = stringify(value);
      } catch (err) {
        throw new TypeError(`${what} must be JSON: ${(err as Error).message}`);
      }
      if (text === undefined) return undefined;
      if (text.length > init.maxMessageChars) {
        throw new RangeError(
          `${what} is ${text.length} characters as JSON, more than the limit of ` +
            `${init.maxMessageChars}`,
        );
      }
      return parse(text);
    };
    const deepFreeze = <T>(value: T): T => {
      if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
        Object.freeze(value);
        for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
      }
      return value;
    };
    const define = (target: object, key: string, value: unknown): void => {
      Object.defineProperty(target, key, {
        value,
        writable: false,
        enumerable: true,
        configurable: false,
      });
    };

    // ---- console ---------------------------------------------------------------------------

    const show = (value: unknown): string =>
      typeof value === "string" ? value : inspect(value, { colors: false });
    const format = (values: unknown[]): string => {
      const [head] = values;
      if (typeof head !== "string" || values.length < 2 || !head.includes("%")) {
        return values.map(show).join(" ");
      }
      let next = 1;
      const text = head.replace(/%[sdifoOc%]/g, (spec) => {
        if (spec === "%%") return "%";
        if (next >= values.length) return spec;
        const value = values[next++];
        switch (spec) {
          case "%s":
            return typeof value === "string" ? value : inspect(value, { colors: false, depth: 2 });
          case "%d":
            return typeof value === "bigint" ? `${value}n` : String(Number(value));
          case "%i":
            return typeof value === "bigint" ? `${value}n` : String(parseInt(String(value)));
          case "%f":
            return String(parseFloat(String(value)));
          case "%c":
            return "";
          default:
            return inspect(value, { colors: false });
        }
      });
      return [text, ...values.slice(next).map(show)].join(" ");
    };
    const print = (stream: "stdout" | "stderr", text: string): void => {
      for (let i = 0; i === 0 || i < text.length; i += init.maxMessageChars) {
        post({ t: "print", stream, text: text.slice(i, i + init.maxMessageChars) });
      }
    };
    const to = (stream: "stdout" | "stderr") => (...values: unknown[]) =>
      print(stream, format(values));
    const console = globalThis.console as unknown as Record<string, Fn>;
    console.log = to("stdout");
    console.info = to("stdout");
    console.debug = to("stdout");
    console.error = to("stderr");
    console.warn = to("stderr");
    console.dir = (value: unknown) => print("stdout", inspect(value, { colors: false }));
    console.trace = (...values: unknown[]) => {
      const stack = cleanText(new Error().stack ?? "").split("\n").slice(1).join("\n");
      print("stderr", `Trace${values.length ? `: ${format(values)}` : ""}\n${stack}`);
    };
    console.assert = (condition: unknown, ...values: unknown[]) => {
      if (!condition) {
        print("stderr", `Assertion failed${values.length ? `: ${format(values)}` : ""}`);
      }
    };

    // ---- what scripts may not use ----------------------------------------------------------

    const hide = (target: object, key: string, what: string): void => {
      Object.defineProperty(target, key, {
        get() {
          throw new TypeError(`${what} is not available in scripts`);
        },
        configurable: false,
      });
    };
    // Host → child messages arrive on the process's stdin: the script must not read them.
    hide(Deno, "stdin", "Deno.stdin");
    define(Deno, "exit", (code?: number): never => {
      const status = code ?? 0;
      finish(
        status === 0
          ? null
          : { code: "script_failed", message: `Error: script exited with code ${status}` },
      );
      return halt();
    });
    define(globalThis, "close", (): never => {
      finish(null);
      return halt();
    });

    // ---- the script's globals --------------------------------------------------------------

    define(globalThis, "args", deepFreeze(init.globals.args));
    define(globalThis, "meta", deepFreeze(init.globals.meta));
    const emit = function emit(data: unknown): void {
      if (!isPlainObject(data)) {
        throw new TypeError("emit() takes a plain object (arrays are fine inside it)");
      }
      post({ t: "emit", data: toJson("emit() data", data) });
    };
    define(globalThis, "emit", emit);
    const log: Record<string, Fn> = {};
    for (const level of init.logLevels) {
      log[level] = (message: unknown, fields?: unknown): void => {
        if (fields !== undefined && !isPlainObject(fields)) {
          throw new TypeError(`log.${level}() fields must be a plain object`);
        }
        const text = typeof message === "string" ? message : format([message]);
        const body = toJson(`log.${level}() message and fields`, { message: text, fields });
        post({ t: "log", level, ...(body as Record<string, unknown>) });
      };
    }
    define(globalThis, "log", Object.freeze(log));

    const call = (key: string, args: unknown, onEvent?: unknown): Promise<unknown> => {
      let payload: unknown;
      try {
        payload = toJson(`${key}() arguments`, args);
        if (onEvent !== undefined && typeof onEvent !== "function") {
          throw new TypeError(`${key}(args, handler): the handler must be a function`);
        }
      } catch (err) {
        return Promise.reject(err);
      }
      // After the run ended nothing answers; the Worker is about to be stopped.
      if (finished) return new Promise(() => {});
      const id = ++nextId;
      const stream = typeof onEvent === "function";
      return new Promise((resolve, reject) => {
        pending.set(id, {
          resolve,
          reject,
          ...(stream ? { onEvent: onEvent as (value: unknown) => unknown } : {}),
        });
        post({ t: "call", id, key, args: payload, ...(stream ? { stream: true } : {}) });
      });
    };
    /**
     * One event of a streaming call: the handler's return value, if an object, is emitted (so
     * a handler filters by returning null and reshapes by returning something else); a throw
     * or a rejection fails the run like any uncaught exception.
     */
    const onEvent = (entry: Pending, value: unknown): void => {
      const handled = (out: unknown): void => {
        if (out === undefined || out === null || finished) return;
        try {
          emit(out);
        } catch (err) {
          fail(err);
        }
      };
      try {
        const out = entry.onEvent!(value);
        if (out instanceof Promise) out.then(handled, fail);
        else handled(out);
      } catch (err) {
        fail(err);
      }
    };
    port.onmessage = (event: MessageEvent) => {
      const msg = event.data as { t: string; id: number; value?: unknown; error?: WireError };
      if (msg.t === "event") {
        const streaming = pending.get(msg.id);
        if (streaming?.onEvent && !finished) onEvent(streaming, msg.value);
        return;
      }
      const entry = msg.t === "result" ? pending.get(msg.id) : undefined;
      if (!entry) return;
      pending.delete(msg.id);
      if (msg.error) {
        const err = new Error(msg.error.message) as Error & Record<string, unknown>;
        err.code = msg.error.code;
        if (msg.error.detail) err.detail = msg.error.detail;
        entry.reject(err);
      } else {
        entry.resolve(msg.value);
      }
      settleIfIdle();
    };

    const categories = new Map<string, Record<string, unknown>>();
    for (const key of init.commands) {
      const parts = key.split(".");
      if (parts.length < 2 || init.reserved.includes(parts[0])) continue;
      let node = categories.get(parts[0]);
      if (!node) categories.set(parts[0], node = {});
      for (const part of parts.slice(1, -1)) {
        const child: unknown = node[part];
        node = isPlainObject(child) ? child : (node[part] = {});
      }
      const method = parts[parts.length - 1];
      // A named function, so stack traces read `at exec.run`.
      node[method] = {
        [key]: (args?: unknown, onEvent?: unknown) => call(key, args, onEvent),
      }[key];
    }
    const job = init.globals.job;
    const jobMethods = categories.get("job");
    categories.delete("job");
    if (jobMethods) {
      const merged: Record<string, unknown> = isPlainObject(job) ? { ...job } : {};
      for (const [method, fn] of Object.entries(jobMethods)) {
        if (!(method in merged)) merged[method] = fn;
      }
      define(globalThis, "job", deepFreeze(merged));
    } else {
      define(globalThis, "job", deepFreeze(job));
    }
    for (const [category, methods] of categories) {
      const existing = scope[category];
      if (existing === undefined) {
        define(globalThis, category, deepFreeze(methods));
      } else if (
        (typeof existing === "object" && existing !== null) || typeof existing === "function"
      ) {
        // A category named like a global object (`crypto`): its methods join that object.
        for (const [method, fn] of Object.entries(methods)) {
          if (!(method in existing)) {
            try {
              define(existing, method, fn);
            } catch {
              // a frozen global keeps its shape
            }
          }
        }
      }
    }

    // ---- the script ------------------------------------------------------------------------

    const type = init.typescript ? "application/typescript" : "text/javascript";
    scriptUrl = URL.createObjectURL(new Blob([init.source], { type }));
    import(scriptUrl).then(
      () => {
        evaluated = true;
        settleIfIdle();
      },
      (err) => {
        evaluated = true;
        fail(err);
      },
    ).finally(() => URL.revokeObjectURL(scriptUrl));
  }
}
