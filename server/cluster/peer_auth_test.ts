import assert from "node:assert/strict";
import { isJwError } from "../../shared/errors.ts";
import { seededRandom } from "../../shared/random.ts";
import { createKeyring, generateClusterKey } from "./keyring.ts";
import { peerToken, verifyPeerToken } from "./peer_auth.ts";

const random = seededRandom(3);
const key = generateClusterKey(random);
const other = generateClusterKey(random);
const T = Date.UTC(2026, 0, 1);

Deno.test("peer tokens verify for their subject only, within their time, with a known key", () => {
  const ring = createKeyring({ cluster: "jw", keys: [key] });
  const token = peerToken(ring, "s1", "script:report@1", T);
  assert.equal(verifyPeerToken(ring, token, "script:report@1", T + 5_000), "s1");
  // A ring that also knows another key (rotation) still accepts it.
  const rotating = createKeyring({ cluster: "jw", keys: [other, key], primary: other });
  assert.equal(verifyPeerToken(rotating, token, "script:report@1", T), "s1");
  const refused = (ringUsed: typeof ring, t: string, subject: string, at: number, why: RegExp) =>
    assert.throws(
      () => verifyPeerToken(ringUsed, t, subject, at),
      (e) => isJwError(e, "unauthorized") && why.test(e.message),
    );
  refused(ring, token, "script:other@1", T, /another resource/);
  refused(ring, token, "script:report@1", T + 31_000, /expired/);
  refused(
    createKeyring({ cluster: "jw", keys: [other] }),
    token,
    "script:report@1",
    T,
    /unknown key/,
  );
  refused(
    createKeyring({ cluster: "xx", keys: [key] }),
    token,
    "script:report@1",
    T,
    /another cluster/,
  );
  const [h, p, sig] = token.split(".");
  refused(ring, `${h}.${p}.${sig.slice(0, -2)}AA`, "script:report@1", T, /bad signature/);
  refused(ring, "a.b", "script:report@1", T, /not a JWT/);
  refused(ring, "!!.!!.!!", "script:report@1", T, /malformed|not a peer token/);
});
