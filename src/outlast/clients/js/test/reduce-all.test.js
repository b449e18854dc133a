// reduceAll(state, events) must equal reducing the events one by one, and never change `state`
// or any state reduce() returned before (it edits in place only what it created itself).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { initialState, reduce, reduceAll } from "../outlast.js";

const FIXTURES = fileURLToPath(new URL("../../../../../tests/fixtures/protocol/", import.meta.url));

function deepFreeze(value) {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

// A run with streamed steps, a lost attempt (its partial output discarded), a retried step,
// objects and a wait: every path of the reducer that copies a container.
function syntheticRun(steps) {
  const events = [];
  let seq = 0;
  const ev = (type, attempt, step, data = {}) => events.push({ v: 1, seq: ++seq, type, run_id: "r", attempt, step, ts: seq, data });
  ev("run.queued", 0, null, { workflow: "w", version: "v", input: {} });
  ev("run.started", 1, null, { attempt: 1 });
  for (let i = 0; i < steps; i++) {
    const id = `say#${i}`;
    ev("step.started", 1, id, { name: "say", position: String(i) });
    ev("output", 1, id, { text: `s${i} ` });
    if (i % 7 === 3) {
      ev("step.retrying", 1, id, { try: 1, error: { type: "E", message: "x" } });
      ev("output", 1, id, { text: `r${i} `, try: 2 });
    }
    ev("output", 1, id, { text: "a " });
    ev("object", 1, id, { name: "o", patch: i === 0 ? [{ op: "add", path: "", value: { n: 0 } }] : [{ op: "replace", path: "/n", value: i }] });
    if (i < steps - 1) ev("step.completed", 1, id, { name: "say", result: null });
  }
  ev("run.started", 2, null, { attempt: 2 }); // the last step had not completed: its output dies
  ev("step.started", 2, `say#${steps - 1}`, { name: "say", position: String(steps - 1) });
  ev("output", 2, `say#${steps - 1}`, { text: "again " });
  ev("input.requested", 2, "input:ok#0", { key: "ok", schema: null, prompt: "ok?" });
  ev("input.received", 2, "input:ok#0", { key: "ok", value: true });
  ev("step.completed", 2, `say#${steps - 1}`, { name: "say", result: "again " });
  ev("run.completed", 2, null, { result: 1 });
  return events;
}

function oneByOne(state, events) {
  return events.reduce((s, e) => reduce(s, e), state);
}

test("reduceAll equals reduce one by one, in one batch or many", () => {
  const events = deepFreeze(syntheticRun(300));
  const expected = oneByOne(initialState("r"), events);
  assert.deepEqual(reduceAll(initialState("r"), events), expected);
  let state = initialState("r");
  for (let i = 0; i < events.length; i += 37) state = reduceAll(state, events.slice(i, i + 37));
  assert.deepEqual(state, expected);
  assert.equal(expected.output.includes("s299 a again"), false); // the lost attempt's text is gone
  assert.ok(expected.output.endsWith("again "));
  assert.equal(expected.objects.o.n, 299);
});

test("reduceAll leaves the states it was given, and those reduce returned, untouched", () => {
  const events = syntheticRun(50);
  const half = deepFreeze(oneByOne(initialState("r"), events.slice(0, 120)));
  const snapshot = JSON.stringify(half);
  // Frozen: an in-place edit of anything reachable from `half` would throw in strict mode.
  const after = reduceAll(half, events.slice(120));
  assert.equal(JSON.stringify(half), snapshot);
  assert.deepEqual(after, oneByOne(half, events.slice(120)));
  // And a batch's result is not edited by the next batch.
  const frozen = JSON.stringify(after);
  reduceAll(after, syntheticRun(60).slice(events.length - 5));
  assert.equal(JSON.stringify(after), frozen);
});

test("reduceAll over the golden protocol logs equals reduce", () => {
  for (const name of readdirSync(FIXTURES).filter((f) => f.endsWith(".jsonl"))) {
    const events = readFileSync(FIXTURES + name, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    assert.deepEqual(reduceAll(initialState(), events), oneByOne(initialState(), events), name);
  }
});
