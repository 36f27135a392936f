/**
 * Test helper: wait on a promise, but not forever.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";

/**
 * Resolves or rejects like `promise`, or rejects with JwError `timeout` naming `what` after
 * `ms` real milliseconds. Always clears its timer.
 */
export async function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new JwError("timeout", `${what} within ${ms}ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
