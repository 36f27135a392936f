import assert from "node:assert/strict";
import { createLogger } from "../shared/log.ts";
import type { Output, Reply } from "../shared/protocol/mod.ts";
import { createOutbox } from "./outbox.ts";

/** A send function that accepts everything, recording seqs. */
function into(sent: number[]): (f: Reply) => boolean {
  return (f) => {
    sent.push(f.seq ?? -1);
    return true;
  };
}

function frame(seq: number): Output {
  return {
    v: 1,
    id: "env",
    type: "output",
    job: { id: "j", key: "exec.run" },
    seq,
    ts: 0,
    text: `${seq}`,
  };
}

Deno.test("Outbox.drain() sends queued frames oldest first and keeps the rest when send fails", () => {
  const outbox = createOutbox(createLogger("t", { sink: () => {} }));
  for (let i = 0; i < 5; i++) outbox.push(frame(i));
  const sent: number[] = [];
  assert.equal(outbox.drain((f) => (f.seq ?? 0) < 3 && into(sent)(f)), 3);
  assert.deepEqual(sent, [0, 1, 2]);
  assert.equal(outbox.size, 2);
  assert.equal(outbox.drain(into(sent)), 2);
  assert.deepEqual(sent, [0, 1, 2, 3, 4]);
  assert.equal(outbox.size, 0);
});

Deno.test("Outbox.push() drops the oldest frames past capacity with one warning", () => {
  const lines: string[] = [];
  const outbox = createOutbox(createLogger("t", { sink: (l) => lines.push(l) }), 3);
  for (let i = 0; i < 10; i++) outbox.push(frame(i));
  assert.equal(outbox.size, 3);
  assert.equal(outbox.dropped, 7);
  assert.equal(lines.filter((l) => l.includes("outbox full")).length, 1);
  const sent: number[] = [];
  outbox.drain(into(sent));
  assert.deepEqual(sent, [7, 8, 9]);
  assert.equal(outbox.dropped, 0);
  assert.ok(lines.some((l) => l.includes("dropped=7")));
});

Deno.test("Outbox keeps order over many pushes, drops and partial drains", () => {
  const outbox = createOutbox(createLogger("t", { sink: () => {} }), 100);
  for (let i = 0; i < 5000; i++) outbox.push(frame(i));
  assert.equal(outbox.size, 100);
  assert.equal(outbox.dropped, 4900);
  const sent: number[] = [];
  let budget = 40;
  outbox.drain((f) => budget-- > 0 && into(sent)(f));
  for (let i = 5000; i < 5010; i++) outbox.push(frame(i));
  outbox.drain(into(sent));
  assert.deepEqual(sent, Array.from({ length: 110 }, (_, i) => 4900 + i));
});
