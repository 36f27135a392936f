/**
 * The agent endpoint URL from a configured or redirected server URL.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";

/** The WebSocket path agents connect to. */
export const AGENT_PATH = "/v1/agent";

/**
 * Maps http→ws and https→wss (ws/wss kept) and appends `/v1/agent` when the URL has no
 * path; an explicit path, query and port are kept.
 * @throws JwError `config` for anything but an http(s)/ws(s) URL.
 */
export function agentUrl(server: string): string {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new JwError("config", `server URL ${JSON.stringify(server)} is not a URL`);
  }
  const scheme = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" }[url.protocol];
  if (!scheme) {
    throw new JwError("config", `server URL ${server} must be http://, https://, ws:// or wss://`);
  }
  url.protocol = scheme;
  if (url.pathname === "" || url.pathname === "/") url.pathname = AGENT_PATH;
  return url.href;
}

/** The HTTP(S) origin of a server from its agent (ws/wss) or HTTP URL: `ws://h:1/v1/agent` → `http://h:1`. */
export function httpOrigin(server: string): string {
  const url = new URL(server);
  const scheme = { "ws:": "http:", "wss:": "https:" }[url.protocol];
  if (scheme) url.protocol = scheme;
  return url.origin;
}
