import assert from "node:assert/strict";
import { isJwError } from "../../shared/errors.ts";
import type { ScriptPermissions } from "../../shared/protocol/mod.ts";
import { checkPermissions, netAllowed, pathWithin, type ScriptPolicy } from "./policy.ts";

Deno.test("pathWithin() covers a directory's subtree and nothing beside it", () => {
  assert.equal(pathWithin("/var/log/syslog", "/var/log"), true);
  assert.equal(pathWithin("/var/log", "/var/log/"), true);
  assert.equal(pathWithin("/var/logs", "/var/log"), false);
  assert.equal(pathWithin("/var/log/../../etc/shadow", "/var/log"), false);
  assert.equal(pathWithin("/etc/shadow", "/"), true);
});

Deno.test("netAllowed() matches hosts exactly, with any port unless one is given", () => {
  assert.equal(netAllowed("example.com:443", "example.com"), true);
  assert.equal(netAllowed("example.com", "example.com"), true);
  assert.equal(netAllowed("example.com:80", "example.com:443"), false);
  assert.equal(netAllowed("example.com", "example.com:443"), false);
  assert.equal(netAllowed("evil-example.com", "example.com"), false);
  assert.equal(netAllowed("[::1]:8080", "[::1]"), true);
  assert.equal(netAllowed("EXAMPLE.com:443", "example.COM:443"), true);
});

Deno.test("checkPermissions() names the first permission the policy does not cover", () => {
  const policy: ScriptPolicy = { run: ["/usr/bin/df"], read: ["/proc"], write: [], net: [] };
  const asked: ScriptPermissions = {
    run: ["/usr/bin/df"],
    read: ["/proc/mounts"],
    write: [],
    net: [],
  };
  checkPermissions("disk", asked, policy);
  const cases: [Partial<ScriptPermissions>, string][] = [
    [{ run: ["/bin/sh"] }, "asks for run /bin/sh"],
    [{ read: ["/etc"] }, "asks for read /etc"],
    [{ write: ["/tmp/x"] }, "asks for write /tmp/x"],
    [{ net: ["example.com:443"] }, "asks for net example.com:443"],
  ];
  for (const [change, message] of cases) {
    assert.throws(
      () => checkPermissions("disk", { ...asked, ...change }, policy),
      (err) => isJwError(err, "forbidden") && err.message.includes(message),
    );
  }
});
