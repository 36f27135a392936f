import assert from "node:assert/strict";
import { isJwError } from "../errors.ts";
import { loadConfig, parseConfigText } from "./load.ts";
import { ServerConfig, serverEnv } from "./server.ts";
import { AgentConfig, agentEnv } from "./agent.ts";

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isJwError(err, "config"), String(err));
    return err.message;
  }
  assert.fail("expected a config error");
}

Deno.test("loadConfig() fills documented server defaults", () => {
  const c = loadConfig(ServerConfig, {});
  assert.deepEqual(c.http, { hostname: "127.0.0.1", port: 7400 });
  assert.equal(c.agents.challengeTtl, 30_000);
  assert.equal(c.agents.maxFrame, 1024 * 1024);
  assert.deepEqual(c.auth.users, []);
});

Deno.test("loadConfig() merges file < env < flags", () => {
  const file = parseConfigText(
    "http: 127.0.0.1:1000\ndata: /from/file\nagents:\n  heartbeat: 5s\n",
    "f.yaml",
  );
  const c = loadConfig(ServerConfig, {
    file,
    env: { JW_HTTP: "127.0.0.1:2000", JW_DATA: "/from/env" },
    envMap: serverEnv,
    flags: { data: "/from/flag", http: undefined },
  });
  assert.equal(c.http.port, 2000);
  assert.equal(c.data, "/from/flag");
  assert.equal(c.agents.heartbeat, 5000);
  assert.equal(c.agents.challengeTtl, 30_000);
});

Deno.test("loadConfig() rejects unknown keys and bad values with the key path", async (t) => {
  await t.step("unknown nested key", () => {
    const msg = configError(() =>
      loadConfig(ServerConfig, { file: { agents: { heartbeet: "1s" } } })
    );
    assert.match(msg, /agents: unknown key "heartbeet"/);
  });
  await t.step("bad duration", () => {
    const msg = configError(() =>
      loadConfig(ServerConfig, { file: { agents: { heartbeat: "soon" } } })
    );
    assert.match(msg, /agents\.heartbeat: expected a duration/);
  });
  await t.step("bad address", () => {
    assert.match(
      configError(() => loadConfig(ServerConfig, { flags: { http: "localhost" } })),
      /http: expected HOST:PORT/,
    );
  });
  await t.step("missing required agent id", () => {
    assert.match(
      configError(() => loadConfig(AgentConfig, { flags: { server: "http://x:1" } })),
      /config id: is required/,
    );
  });
  await t.step("relative whitelist path", () => {
    const msg = configError(() =>
      loadConfig(AgentConfig, {
        env: { JW_ALLOW_RUN: "/bin/echo,echo" },
        envMap: agentEnv,
        flags: { id: "a", server: "http://x:1" },
      })
    );
    assert.match(msg, /allowRun\.1: whitelisted programs must be absolute paths/);
  });
  await t.step("bad YAML", () => {
    assert.match(configError(() => parseConfigText("a: [1,", "bad.yaml")), /^bad\.yaml: /);
  });
  await t.step("top-level list", () => {
    assert.match(
      configError(() => parseConfigText("- 1\n- 2\n", "list.yaml")),
      /top level must be a mapping/,
    );
  });
});
