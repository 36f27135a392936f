/**
 * Operator authentication. Today: HTTP basic against fixed bcrypt credentials.
 *
 * @module
 */
export * from "./basic.ts";
