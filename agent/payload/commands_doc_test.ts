/**
 * docs/commands.md documents every built-in command: a `### key` section per command with an
 * args table whose rows are exactly its schema's top-level fields, and a `console` example
 * running it through `jw client`. A command or argument added without docs fails here.
 *
 * @module
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { openAgentDatabase } from "../db.ts";
import { createScriptStore } from "../scripts/mod.ts";
import { createRegistry, registerBuiltins, type Registry } from "./mod.ts";

const DOC_PATH = new URL("../../docs/commands.md", import.meta.url);
const DOC_NAME = "docs/commands.md";

/** Keys the registry under test must hold (so that it has the `script.*` commands too). */
const KNOWN_KEYS = [
  "exec.run",
  "file.fetch",
  "file.tail",
  "fs.watch",
  "job.delete",
  "job.list",
  "job.runs",
  "journal.watch",
  "script.delete",
  "script.list",
  "script.register",
  "script.run",
  "tags.set",
];

/** A registry with every built-in command, the `script.*` ones included. */
function builtinRegistry(): Registry & Disposable {
  const db = openAgentDatabase(":memory:");
  const registry = createRegistry();
  registerBuiltins(registry, {
    exec: { defaultTimeoutMs: 1000 },
    jobs: { list: () => [], delete: () => {}, runs: () => [] },
    scripts: {
      agentId: "a1",
      store: createScriptStore(db),
      trusted: { kids: [], lookup: () => undefined },
      policy: { run: [], read: [], write: [], net: [] },
      memoryMb: 64,
      registry,
      audit: { append: () => {} },
      sandbox: () => Promise.reject(new Error("no sandbox in this test")),
    },
  });
  return Object.assign(registry, { [Symbol.dispose]: () => db.close() });
}

/**
 * The top-level field names of an args schema: an object's `shape`, looking through pipes
 * (a transform's input) and wrappers (optional, default, …).
 * @throws Error when the schema holds no object.
 */
function argNames(schema: z.ZodType): string[] {
  let current: unknown = schema;
  for (let depth = 0; depth < 16; depth++) {
    const s = current as { shape?: Record<string, unknown>; def?: Record<string, unknown> };
    if (s.shape !== undefined && typeof s.shape === "object") return Object.keys(s.shape);
    const def = s.def ?? {};
    if (def.type === "pipe") current = def.in;
    else if (def.innerType !== undefined) current = def.innerType;
    else if (def.type === "lazy" && typeof def.getter === "function") current = def.getter();
    else break;
  }
  throw new Error(`the args schema is not an object schema (type ${describeType(current)})`);
}

function describeType(schema: unknown): string {
  return String((schema as { def?: { type?: unknown } })?.def?.type ?? typeof schema);
}

/** One `### …` section of the page: its heading text (backticks removed) and body. */
interface Section {
  title: string;
  body: string;
}

/** The page's `###` sections; each ends at the next `##` or `###` heading. */
function sections(markdown: string): Section[] {
  const out: Section[] = [];
  let current: Section | undefined;
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^(#{2,3})\s+(.*?)\s*$/.exec(line);
    if (heading) {
      current = heading[1] === "###"
        ? { title: heading[2].replaceAll("`", ""), body: "" }
        : undefined;
      if (current) out.push(current);
      continue;
    }
    if (current) current.body += `${line}\n`;
  }
  return out;
}

/**
 * The names in the first column of a section's args table: the table whose header row's
 * first cell is `arg`. Empty when the section has no such table.
 */
function tableArgs(body: string): string[] {
  const lines = body.split("\n");
  const start = lines.findIndex((l) => /^\|\s*arg\s*\|/i.test(l));
  if (start < 0) return [];
  const names: string[] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith("|")) break;
    const cell = /^\|\s*`([^`]+)`/.exec(line);
    names.push(cell ? cell[1] : line.split("|")[1].trim());
  }
  return names;
}

/** The contents of the section's ```console blocks. */
function consoleBlocks(body: string): string[] {
  return [...body.matchAll(/^```console\n([\s\S]*?)^```/gm)].map((m) => m[1]);
}

/** The page's text, or "" when it is missing (every command's check then says so). */
async function readDoc(): Promise<string> {
  try {
    return await Deno.readTextFile(DOC_PATH);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "";
    throw err;
  }
}

const doc = await readDoc();
const bySection = new Map(sections(doc).map((s) => [s.title, s]));

Deno.test("the registry under test holds every built-in command, scripts included", () => {
  using registry = builtinRegistry();
  const keys = registry.keys();
  assert.deepEqual(KNOWN_KEYS.filter((key) => !keys.includes(key)), []);
});

Deno.test("argNames() looks through pipes and wrappers to the object's fields", () => {
  const object = z.object({ a: z.string(), b: z.number().default(1) }).strict();
  assert.deepEqual(argNames(object), ["a", "b"]);
  assert.deepEqual(argNames(object.refine(() => true)), ["a", "b"]);
  assert.deepEqual(argNames(object.transform((v) => v)), ["a", "b"]);
  assert.deepEqual(argNames(object.optional()), ["a", "b"]);
  assert.throws(() => argNames(z.string()), /not an object schema/);
});

Deno.test(`${DOC_NAME} documents every command, each argument and an example`, async (t) => {
  using registry = builtinRegistry();
  for (const key of registry.keys()) {
    await t.step(key, () => {
      const section = bySection.get(key);
      assert.ok(
        section,
        `${DOC_NAME} has no "### ${key}" section: add one (what it does, an args table, ` +
          `outputs, errors and a console example)`,
      );
      const schemaArgs = argNames(registry.get(key).args);
      const documented = tableArgs(section.body);
      const missing = schemaArgs.filter((name) => !documented.includes(name));
      assert.deepEqual(
        missing,
        [],
        `${DOC_NAME} "### ${key}": the args table (header "| arg | …") has no row for ` +
          `${missing.map((n) => `\`${n}\``).join(", ")}`,
      );
      const extra = documented.filter((name) => !schemaArgs.includes(name));
      assert.deepEqual(
        extra,
        [],
        `${DOC_NAME} "### ${key}": the args table lists ${
          extra.map((n) => `\`${n}\``).join(", ")
        }, which ${key}'s args schema does not have`,
      );
      assert.ok(
        consoleBlocks(section.body).some((block) => block.includes("jw client")),
        `${DOC_NAME} "### ${key}" has no \`\`\`console block with a "jw client" command line`,
      );
    });
  }
});

Deno.test(`${DOC_NAME} has no section for a command the agent does not have`, () => {
  using registry = builtinRegistry();
  const keys = new Set(registry.keys());
  const stale = [...bySection.keys()].filter((title) =>
    /^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_.-]*$/.test(title) && !keys.has(title)
  );
  assert.deepEqual(
    stale,
    [],
    `${DOC_NAME} has sections for commands the agent does not register: ${stale.join(", ")}`,
  );
});
