/**
 * `jw sign` — sign a script for agents. Script signing lands with the script runtime;
 * until then the command says so plainly instead of pretending.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";

/** Entry point of `jw sign`. */
export function signCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log("Usage: jw sign ...\n\nScript signing is not available in this version of jw.");
    return Promise.resolve(0);
  }
  throw new JwError("unsupported", "script signing is not available in this version of jw");
}
