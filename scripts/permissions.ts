/**
 * The Deno permissions `jw` runs with: `deno task jw`, the compiled binary and the e2e
 * tests all use this list (deno.json's `jw` and `demo` tasks repeat it literally).
 *
 * @module
 */
export const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-sys",
  "--unstable-worker-options",
  "--unstable-net",
];
