/**
 * Stable digests of JSON values (for audit args digests).
 *
 * @module
 */
import { createHash } from "node:crypto";

/** JSON with object keys sorted at every level, so equal values give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    return v;
  }) ?? "null";
}

/** `sha256:` + hex SHA-256 of the canonical JSON of `value`. */
export function digestJson(value: unknown): string {
  return "sha256:" + createHash("sha256").update(canonicalJson(value)).digest("hex");
}
