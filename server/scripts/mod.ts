/**
 * Signed scripts stored on the server: the `scripts` table and the expansion of
 * `script.register {name, version?}` commands into the stored file.
 *
 * @module
 */
export * from "./store.ts";
export * from "./expand.ts";
