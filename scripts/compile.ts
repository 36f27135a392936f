/**
 * `deno task compile [--target TRIPLE]... [--all]` — builds self-contained `jw`
 * binaries into dist/jw-<target>. `deno compile` needs the `denort` runtime for each
 * target: it downloads it, or uses the file named by DENORT_BIN (for the host target).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { PERMISSIONS } from "./permissions.ts";

const ALL_TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      target: { type: "string", multiple: true },
      all: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      `Usage: deno task compile [--target TRIPLE]... [--all]\nTargets: ${ALL_TARGETS.join(", ")}`,
    );
    return 0;
  }
  const targets = values.all ? ALL_TARGETS : values.target ?? [Deno.build.target];
  let failures = 0;
  for (const target of targets) {
    const output = `dist/jw-${target}`;
    console.log(`compiling ${output}`);
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: ["compile", ...PERMISSIONS, "--target", target, "--output", output, "main.ts"],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (code !== 0) {
      failures++;
      console.error(
        `compile for ${target} failed. deno compile downloads the denort runtime; without network, ` +
          `set DENORT_BIN=/path/to/denort (a denort of the same Deno version and target).`,
      );
    }
  }
  return failures ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
