/**
 * The `jw` binary: `jw server | agent | client | sign | demo`. See README.md.
 *
 * @module
 */
import { main } from "./cli/main.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
