import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import { isJwError } from "../../shared/errors.ts";
import { seededRandom } from "../../shared/random.ts";
import {
  COMPOUND_HEADER_OVERHEAD,
  COMPOUND_PART_OVERHEAD,
  decodeMessage,
  decodePacket,
  decodePushPull,
  encodeCompound,
  encodeMessage,
  encodePushPull,
  META_LIMIT,
  type PushPullMessage,
  type SingleMessage,
} from "./messages.ts";

const meta = new TextEncoder().encode("http://10.0.0.1:7400");
const SAMPLES: SingleMessage[] = [
  { type: "ping", seq: 1, node: "n1" },
  { type: "indirect-ping", seq: 0xffff_ffff, target: "n2", address: "10.0.0.2:7946", nack: true },
  { type: "ack", seq: 7 },
  { type: "ack", seq: 8, payload: new Uint8Array([1, 2, 3]) },
  { type: "nack", seq: 9 },
  { type: "suspect", incarnation: 3, node: "n2", from: "n1" },
  { type: "alive", incarnation: 4, node: "n2", address: "10.0.0.2:7946", meta },
  { type: "alive", incarnation: 1, node: "n3", address: "h:1", meta: new Uint8Array() },
  { type: "dead", incarnation: 5, node: "n2", from: "n2" },
  { type: "user", id: new Uint8Array(8).fill(1), data: new Uint8Array([9, 9]) },
];

const isInvalid = (e: unknown) => isJwError(e, "invalid_message");

Deno.test("messages: every message type round-trips", () => {
  for (const m of SAMPLES) {
    assert.deepEqual(decodeMessage(encodeMessage(m)), m, m.type);
    assert.deepEqual(decodePacket(encodeMessage(m)), [m], m.type);
  }
});

Deno.test("messages: a compound packet carries several messages within its overhead bound", () => {
  const parts = SAMPLES.map(encodeMessage);
  const packet = encodeCompound(parts);
  assert.deepEqual(decodePacket(packet), SAMPLES);
  const bound = COMPOUND_HEADER_OVERHEAD +
    parts.reduce((s, p) => s + p.length + COMPOUND_PART_OVERHEAD, 0);
  assert.ok(packet.length <= bound, `${packet.length} > ${bound}`);
  assert.throws(() => encodeCompound([]));
});

Deno.test("messages: push-pull state round-trips", () => {
  const state: PushPullMessage = {
    type: "push-pull",
    join: true,
    members: [
      { name: "n1", address: "10.0.0.1:7946", meta, incarnation: 2, state: "alive" },
      {
        name: "n2",
        address: "10.0.0.2:7946",
        meta: new Uint8Array(),
        incarnation: 1,
        state: "suspect",
      },
      {
        name: "n3",
        address: "10.0.0.3:7946",
        meta: new Uint8Array(),
        incarnation: 9,
        state: "dead",
      },
      {
        name: "n4",
        address: "10.0.0.4:7946",
        meta: new Uint8Array(),
        incarnation: 3,
        state: "left",
      },
    ],
    userState: new Uint8Array([1, 2, 3]),
  };
  assert.deepEqual(decodePushPull(encodePushPull(state)), state);
  assert.throws(() => decodePushPull(encodeMessage(SAMPLES[0])), isInvalid);
  assert.throws(() => decodePacket(encodePushPull(state)), isInvalid);
});

Deno.test("messages: decoded bytes are copies, not views into the packet", () => {
  const packet = encodeMessage(SAMPLES[6]);
  const m = decodeMessage(packet) as { meta: Uint8Array };
  packet.fill(0);
  assert.deepEqual(m.meta, meta);
});

Deno.test("messages: strict decoding rejects malformed input", async (t) => {
  const cases: [string, unknown][] = [
    ["not an array", { t: 0 }],
    ["empty array", []],
    ["unknown tag", [42, 1]],
    ["float tag", [0.5, 1, "n"]],
    ["ping missing a field", [0, 1]],
    ["ping extra field", [0, 1, "n", 2]],
    ["negative seq", [0, -1, "n"]],
    ["seq over 32 bits", [0, 2 ** 32, "n"]],
    ["float seq", [0, 1.5, "n"]],
    ["empty node name", [0, 1, ""]],
    ["overlong node name", [0, 1, "x".repeat(129)]],
    ["node name not a string", [0, 1, 7]],
    ["nack flag not boolean", [1, 1, "n", "a:1", 1]],
    ["ack payload not bytes", [2, 1, "x"]],
    ["suspect incarnation string", [4, "1", "n", "m"]],
    ["alive meta over limit", [5, 1, "n", "a:1", new Uint8Array(META_LIMIT + 1)]],
    ["alive meta not bytes", [5, 1, "n", "a:1", [1, 2]]],
    ["alive empty address", [5, 1, "n", "", new Uint8Array()]],
    ["dead missing from", [6, 1, "n"]],
    ["user short id", [7, new Uint8Array(7), new Uint8Array()]],
    ["user data not bytes", [7, new Uint8Array(8), "x"]],
    ["compound of nothing", [8, []]],
    ["compound part not bytes", [8, [[0, 1, "n"]]]],
    ["nested compound", [8, [encodeCompound([encodeMessage(SAMPLES[0])])]]],
    ["compound with a bad part", [8, [encodeMessage(SAMPLES[0]), new Uint8Array([0xc1])]]],
    ["timestamp extension", [0, new Date(0), "n"]],
    ["null", null],
  ];
  for (const [name, value] of cases) {
    await t.step(name, () => {
      assert.throws(() => decodePacket(encode(value)), isInvalid);
    });
  }
  await t.step("push-pull with a bad member state", () => {
    const bad = encode([9, false, [["n", "a:1", new Uint8Array(), 1, 4]], new Uint8Array()]);
    assert.throws(() => decodePushPull(bad), isInvalid);
  });
  await t.step("push-pull with a member missing a field", () => {
    const bad = encode([9, false, [["n", "a:1", new Uint8Array(), 1]], new Uint8Array()]);
    assert.throws(() => decodePushPull(bad), isInvalid);
  });
  await t.step("trailing bytes", () => {
    const ok = encodeMessage(SAMPLES[0]);
    assert.throws(() => decodePacket(new Uint8Array([...ok, 0])), isInvalid);
  });
  await t.step("lying lengths", () => {
    for (
      const bytes of [
        [0xdd, 0xff, 0xff, 0xff, 0xff], // array32 of 4G
        [0xdc, 0xff, 0xff, 0x00], // array16, nothing follows
        [0xc6, 0x7f, 0xff, 0xff, 0xff, 1], // bin32 of 2 GiB
        [0xdb, 0x00, 0x10, 0x00, 0x00, 0x41], // str32 of 1 MiB
        [0xdf, 0, 0, 0, 1, 0xa1, 0x61, 1], // a map
      ]
    ) assert.throws(() => decodePacket(new Uint8Array(bytes)), isInvalid);
  });
});

Deno.test("messages: fuzzed input decodes or fails with invalid_message, never anything else", () => {
  const random = seededRandom(1234);
  const valid = [
    ...SAMPLES.map(encodeMessage),
    encodeCompound(SAMPLES.map(encodeMessage)),
  ];
  const inputs: Uint8Array[] = [];
  for (let i = 0; i < 2000; i++) inputs.push(random.bytes(Math.floor(random.float() * 64)));
  for (const v of valid) {
    for (let cut = 0; cut < v.length; cut++) inputs.push(v.slice(0, cut));
    for (let i = 0; i < 200; i++) {
      const flipped = v.slice();
      flipped[Math.floor(random.float() * v.length)] ^= 1 << Math.floor(random.float() * 8);
      inputs.push(flipped);
    }
  }
  let rejected = 0;
  for (const input of inputs) {
    for (const decode of [decodePacket, decodePushPull]) {
      try {
        decode(input);
      } catch (err) {
        assert.ok(isInvalid(err), `unexpected ${err}`);
        rejected++;
      }
    }
  }
  assert.ok(rejected > inputs.length, "most inputs are rejected");
});
