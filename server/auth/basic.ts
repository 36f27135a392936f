/**
 * HTTP basic authentication of operators against the fixed users in the server config
 * (bcrypt hashes). A hono middleware factory.
 *
 * @module
 */
import bcrypt from "bcryptjs";
import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import type { AuditLog } from "../../shared/db/mod.ts";
import type { Logger } from "../../shared/log.ts";
import { silentLogger } from "../../shared/log.ts";

/** The hono environment of operator routes. */
export interface AuthEnv {
  Variables: {
    /** The authenticated operator's name (audit actor `operator:NAME`). */
    operator: string;
  };
  Bindings: {
    /** The peer's `host:port`, when the runtime adapter knows it. */
    remoteAddress?: string;
  } | undefined;
}

/** An operator with a bcrypt password hash, as in `ServerConfig.auth.users`. */
export interface BasicUser {
  name: string;
  bcrypt: string;
}

/** Options for {@link createBasicAuth}. */
export interface BasicAuthOptions {
  /** Who may log in. Empty: nobody. */
  users: readonly BasicUser[];
  /** Where failures are recorded (`auth.failed`). */
  audit: AuditLog;
  /** `realm` of the challenge header. Default "jw". */
  realm?: string;
  logger?: Logger;
}

/** Compared against when the user name is unknown, so timing does not reveal names. */
const DUMMY_HASH = "$2b$10$o6aQ1Wi2lnxaTgYeOCFlMO7UggV2Cp9bn.X5I9B5BAJSc5DkltJ/6";

/** Longest user name or password looked at; longer ones fail. */
const MAX_CREDENTIAL_CHARS = 1024;

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

/** Constant-time string equality (compares SHA-256 digests, so lengths do not leak). */
function sameText(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/** `{name, password}` from an `Authorization: Basic …` header, or undefined. */
export function parseBasicAuthorization(
  header: string | undefined,
): { name: string; password: string } | undefined {
  const m = header ? /^Basic[ \t]+([A-Za-z0-9+/]+=*)[ \t]*$/i.exec(header) : null;
  if (!m || m[1].length > MAX_CREDENTIAL_CHARS * 3) return undefined;
  let text: string;
  try {
    const binary = atob(m[1]);
    text = new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(binary, (c) => c.charCodeAt(0)),
    );
  } catch {
    return undefined;
  }
  const colon = text.indexOf(":");
  if (colon < 0) return undefined;
  return { name: text.slice(0, colon), password: text.slice(colon + 1) };
}

/**
 * Creates middleware that lets a request through only with valid basic credentials.
 *
 * Guarantees: the password is checked with bcrypt on every request (no credential cache);
 * user names are compared in constant time and an unknown name still costs one bcrypt
 * comparison; on success the name is set as `operator` on the context; on failure the
 * response is 401 with `WWW-Authenticate: Basic realm="jw"` and
 * `{error: {code: "unauthorized", message}}`, and an `auth.failed` audit record whose actor
 * is `operator:NAME` (the name tried) or the peer address.
 */
export function createBasicAuth(options: BasicAuthOptions): MiddlewareHandler<AuthEnv> {
  const users = options.users.map((u) => ({ name: u.name, bcrypt: u.bcrypt }));
  for (const u of users) {
    if (!/^\$2[aby]\$\d\d\$/.test(u.bcrypt)) {
      throw new TypeError(`user "${u.name}" has no bcrypt hash`);
    }
  }
  const realm = (options.realm ?? "jw").replaceAll('"', "");
  const logger = options.logger ?? silentLogger;
  const decoyHash = users[0]?.bcrypt ?? DUMMY_HASH;

  return async (c, next) => {
    const creds = parseBasicAuthorization(c.req.header("authorization"));
    let failure: string;
    if (!creds) {
      failure = "missing or malformed basic credentials";
    } else if (
      creds.name.length > MAX_CREDENTIAL_CHARS || creds.password.length > MAX_CREDENTIAL_CHARS
    ) {
      failure = "credentials too long";
    } else {
      let match: BasicUser | undefined;
      for (const u of users) {
        if (sameText(u.name, creds.name) && !match) match = u;
      }
      let ok = false;
      try {
        ok = await bcrypt.compare(creds.password, match?.bcrypt ?? decoyHash);
      } catch (err) {
        logger.error("bcrypt comparison failed", { error: String(err) });
      }
      if (match && ok) {
        c.set("operator", match.name);
        await next();
        return;
      }
      failure = match ? "wrong password" : "unknown user";
    }
    const address = c.env?.remoteAddress ?? "unknown";
    const tried = creds?.name.slice(0, 64);
    options.audit.append({
      actor: tried ? `operator:${tried}` : address,
      action: "auth.failed",
      target: `${c.req.method} ${new URL(c.req.url).pathname}`.slice(0, 256),
      outcome: "denied",
      reason: tried ? `${failure} (from ${address})` : failure,
    });
    c.header("WWW-Authenticate", `Basic realm="${realm}"`);
    return c.json({ error: { code: "unauthorized", message: "valid credentials required" } }, 401);
  };
}
