/**
 * Encoding and checked decoding of JSON frames. Decoding never throws anything but a
 * {@link JwError} with code `frame_too_large`, `bad_json`, `unknown_type` or
 * `invalid_message`, whose message names the offending field.
 *
 * @module
 */
import type { z } from "zod";
import { JwError } from "../errors.ts";

/** Default limit on one frame: 1 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

const encoder = new TextEncoder();

/** Byte length of a string in UTF-8, without allocating for pure-ASCII strings. */
export function utf8Length(text: string): number {
  // Fast path: most frames are ASCII; fall back to an exact count otherwise.
  // deno-lint-ignore no-control-regex
  return /^[\x00-\x7f]*$/.test(text) ? text.length : encoder.encode(text).length;
}

/** Serialises a frame. */
export function encodeFrame(frame: object): string {
  return JSON.stringify(frame);
}

/** Schemas by `type`, as exported from agent.ts. */
export type FrameSchemas = Record<string, z.ZodType>;

/** The frame type decoded from a schema map. */
export type FrameOf<S extends FrameSchemas> = z.output<S[keyof S]>;

/** The `id` of a raw frame if it has a usable one, for error replies. */
export function peekId(raw: unknown): string | undefined {
  if (raw && typeof raw === "object" && "id" in raw) {
    const id = (raw as { id: unknown }).id;
    if (typeof id === "string" && id.length <= 128) return id;
  }
  return undefined;
}

/**
 * Parses and checks one frame against the schema for its `type`.
 * @throws JwError on any problem; `detail.ref` carries the frame's id when it had one.
 */
export function decodeFrame<S extends FrameSchemas>(
  data: string | ArrayBuffer | Uint8Array,
  schemas: S,
  maxBytes: number = DEFAULT_MAX_FRAME_BYTES,
): FrameOf<S> {
  const size = typeof data === "string" ? utf8Length(data) : data.byteLength;
  if (size > maxBytes) {
    throw new JwError(
      "frame_too_large",
      `frame of ${size} bytes exceeds the ${maxBytes}-byte limit`,
      {
        detail: { size, limit: maxBytes },
      },
    );
  }
  const text = typeof data === "string" ? data : new TextDecoder().decode(data);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new JwError("bad_json", `frame is not valid JSON: ${(err as Error).message}`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new JwError("invalid_message", "frame must be a JSON object");
  }
  const ref = peekId(raw);
  const type = (raw as { type?: unknown }).type;
  if (typeof type !== "string") {
    throw new JwError("invalid_message", 'frame has no string "type"', { detail: refDetail(ref) });
  }
  const schema = Object.hasOwn(schemas, type) ? schemas[type] : undefined;
  if (!schema) {
    throw new JwError("unknown_type", `unknown frame type "${type.slice(0, 64)}"`, {
      detail: refDetail(ref),
    });
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new JwError("invalid_message", `bad "${type}" frame: ${describeIssues(result.error)}`, {
      detail: refDetail(ref),
    });
  }
  return result.data as FrameOf<S>;
}

function refDetail(ref: string | undefined): Record<string, unknown> | undefined {
  return ref === undefined ? undefined : { ref };
}

/** One line naming each failing path: `job.key: must look like "category.name"; ...`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join(".") : "(root)"}: ${i.message}`)
    .join("; ");
}
