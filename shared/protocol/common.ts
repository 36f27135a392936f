/**
 * Building blocks shared by the agent and operator schemas.
 *
 * @module
 */
import { z } from "zod";
import { PROTOCOL_VERSION } from "./version.ts";

/** An identifier: agent ids, job ids, envelope ids. */
export const Id = z.string().regex(
  /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/,
  "must be 1-128 characters of letters, digits and . _ : @ - (not starting with a symbol)",
);

/** A command key, `category.name` (nested categories allowed). */
export const CommandKey = z.string().regex(
  /^[a-z][a-zA-Z0-9_]*(\.[a-z][a-zA-Z0-9_]*)+$/,
  'must look like "category.name"',
);

/** A JSON object (never a top-level array). */
export const JsonObject = z.record(z.string(), z.unknown());

/** Opaque operator metadata, copied verbatim onto every reply. */
export const Meta = JsonObject;

/** The protocol version literal. */
export const Version = z.literal(PROTOCOL_VERSION);

/** Epoch milliseconds. */
export const Millis = z.number().int().nonnegative();

/** `{code, message}` as carried in frames and HTTP bodies. */
export const ErrorInfoSchema = z.object({
  code: z.string().min(1),
  message: z.string(),
  detail: JsonObject.optional(),
}).strict();

/** Tag names and values. Values are strings; `null` in a `setTag` deletes the tag. */
export const TagName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$/, "bad tag name");
export const Tags = z.record(TagName, z.string().max(256));
