/**
 * OS errors of the file commands as JwErrors, and `stat` that answers null for a missing path.
 *
 * @module
 */
import { isJwError, JwError } from "../../shared/errors.ts";

/**
 * An OS error about `path` as a JwError with the message "`doing` PATH: why": `forbidden` for
 * a permission error, `not_found` for a missing file when `missing` is `"not_found"`, else
 * `unavailable`. A JwError is returned as it is.
 */
export function osError(
  err: unknown,
  doing: string,
  path: string,
  missing: "not_found" | "unavailable" = "unavailable",
): JwError {
  if (isJwError(err)) return err;
  const why = err instanceof Error ? err.message : String(err);
  const options = { cause: err, detail: { path } };
  if (err instanceof Deno.errors.NotFound && missing === "not_found") {
    return new JwError("not_found", `${doing} ${path}: no such file or directory`, options);
  }
  const code = err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable
    ? "forbidden"
    : "unavailable";
  return new JwError(code, `${doing} ${path}: ${why}`, options);
}

/** `Deno.stat(path)`, or null when the path (or a directory on it) does not exist. */
export async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      return null;
    }
    throw osError(err, "cannot stat", path);
  }
}
