// The pure run-state reducer: docs/protocol.md §6 (partial output), objects, waits, gaps.
import assert from "node:assert/strict";
import { test } from "node:test";

import { applySnapshot, initialState, isTerminal, reduce } from "../outlast.js";

let seq = 0;
function ev(type, fields = {}) {
  const { step = null, attempt = 1, ...data } = fields;
  seq += 1;
  return { v: 1, seq, type, run_id: "r", attempt, step, ts: 0, data };
}
function run(events, state = initialState("r")) {
  return events.reduce(reduce, state);
}
function fresh() {
  seq = 0;
}

function deepFreeze(value) {
  if (value && typeof value === "object") {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

// docs/protocol.md §16: the run killed with SIGKILL after seq 8, resumed as attempt 2.
const KILLED = [
  { seq: 1, type: "run.queued", attempt: 0, step: null, data: { workflow: "post", input: { topic: "t" }, version: "dev" } },
  { seq: 2, type: "run.started", attempt: 1, step: null, data: { attempt: 1, checkpoints: 0, worker: "w1" } },
  { seq: 3, type: "status", attempt: 1, step: null, data: { message: "planning" } },
  { seq: 4, type: "step.started", attempt: 1, step: "outline#0", data: { name: "outline", parent: null, position: "0", args: { topic: "t" } } },
  { seq: 5, type: "step.completed", attempt: 1, step: "outline#0", data: { name: "outline", result: ["Intro", "Body"], tries: 1, duration: 3.6e-5 } },
  { seq: 6, type: "step.started", attempt: 1, step: "write#1", data: { name: "write", parent: null, position: "1", args: { heading: "Intro" } } },
  { seq: 7, type: "output", attempt: 1, step: "write#1", data: { try: 1, text: "Hello " } },
  { seq: 8, type: "output", attempt: 1, step: "write#1", data: { try: 1, text: "durable " } },
  { seq: 9, type: "run.started", attempt: 2, step: null, data: { attempt: 2, checkpoints: 1, worker: "w1" } },
  { seq: 10, type: "step.started", attempt: 2, step: "write#1", data: { name: "write", parent: null, position: "1", args: { heading: "Intro" } } },
  { seq: 11, type: "output", attempt: 2, step: "write#1", data: { try: 1, text: "Hello " } },
  { seq: 12, type: "output", attempt: 2, step: "write#1", data: { try: 1, text: "durable " } },
  { seq: 13, type: "output", attempt: 2, step: "write#1", data: { try: 1, text: "world." } },
  { seq: 14, type: "step.completed", attempt: 2, step: "write#1", data: { name: "write", result: "Hello durable world.", tries: 1, duration: 0.15318 } },
  { seq: 15, type: "object", attempt: 2, step: null, data: { name: "doc", patch: [{ op: "replace", path: "", value: { title: "t", words: 3 } }] } },
  { seq: 16, type: "run.completed", attempt: 2, step: null, data: { result: "Hello durable world." } },
].map((e) => ({ v: 1, run_id: "run-a", ts: 0, ...e }));

test("rule 1: a new attempt discards the output of steps that had not completed (protocol §16)", () => {
  const states = [];
  KILLED.reduce((s, e) => (states.push(reduce(s, e)), states.at(-1)), initialState("run-a"));
  assert.equal(states[7].output, "Hello durable ");
  assert.equal(states[8].output, ""); // seq 9: run.started attempt 2
  assert.equal(states[8].steps["write#1"].status, "interrupted");
  assert.equal(states[8].steps["outline#0"].status, "completed");
  const final = states.at(-1);
  assert.equal(final.output, "Hello durable world.");
  assert.equal(final.status, "completed");
  assert.equal(final.result, "Hello durable world.");
  assert.equal(final.attempt, 2);
  assert.equal(final.statusMessage, "planning");
  assert.deepEqual(final.objects, { doc: { title: "t", words: 3 } });
  assert.deepEqual(final.stepOrder, ["outline#0", "write#1"]);
  assert.equal(final.steps["write#1"].discarded, 1);
  assert.equal(final.done, true);
  assert.ok(isTerminal(KILLED.at(-1)));
});

test("rule 2: step.retrying discards the step's output and its unfinished descendants'", () => {
  fresh();
  const s = run([
    ev("run.started"),
    ev("step.started", { step: "a#0", name: "a" }),
    ev("output", { step: "a#0", try: 1, text: "A1 " }),
    ev("step.started", { step: "a#0/done#0", name: "done", parent: "a#0" }),
    ev("output", { step: "a#0/done#0", try: 1, text: "kept " }),
    ev("step.completed", { step: "a#0/done#0", result: "kept " }),
    ev("step.started", { step: "a#0/open#1", name: "open", parent: "a#0" }),
    ev("output", { step: "a#0/open#1", try: 1, text: "lost " }),
    ev("step.started", { step: "b#1", name: "b" }),
    ev("output", { step: "b#1", try: 1, text: "B " }),
    ev("step.retrying", { step: "a#0", try: 1, error: { type: "E", message: "x" }, delay: 0 }),
  ]);
  assert.equal(s.steps["a#0"].text, "");
  assert.equal(s.steps["a#0"].status, "retrying");
  assert.equal(s.steps["a#0"].try, 2);
  assert.equal(s.steps["a#0/open#1"].text, "");
  assert.equal(s.steps["a#0/done#0"].text, "kept ");
  assert.equal(s.output, "kept B ");
  assert.deepEqual(s.outputBySteps, { "a#0/done#0": "kept ", "b#1": "B " });
  const next = run([ev("output", { step: "a#0", try: 2, text: "A2 " })], s);
  assert.equal(next.output, "A2 kept B ");
});

test("only the latest (attempt, try) is live: late frames are dropped, newer ones replace", () => {
  fresh();
  let s = run([
    ev("run.started"),
    ev("step.started", { step: "w#0", name: "w" }),
    ev("output", { step: "w#0", try: 2, text: "second " }),
  ]);
  s = run([ev("output", { step: "w#0", try: 1, text: "stale " })], s);
  assert.equal(s.output, "second ");
  s = run([ev("output", { step: "w#0", try: 3, text: "third " })], s);
  assert.equal(s.output, "third ");
  s = run([ev("output", { step: "w#0", attempt: 2, try: 1, text: "new attempt " })], s);
  assert.equal(s.output, "new attempt ");
  assert.equal(s.steps["w#0"].discarded, 2);
});

test("run.retrying discards what unfinished steps streamed; a step started again starts empty", () => {
  fresh();
  const s = run([
    ev("run.started"),
    ev("step.started", { step: "done#0", name: "done" }),
    ev("output", { step: "done#0", try: 1, text: "keep " }),
    ev("step.completed", { step: "done#0", result: "keep " }),
    ev("step.started", { step: "w#1", name: "w" }),
    ev("output", { step: "w#1", try: 1, text: "half" }),
    ev("run.retrying", { try: 1, error: { type: "E", message: "x" }, delay: 0 }),
  ]);
  assert.equal(s.output, "keep ");
  const after = run([ev("step.started", { step: "w#1", name: "w" }), ev("output", { step: "w#1", try: 1, text: "whole" })], s);
  assert.equal(after.output, "keep whole");
});

test("rules 3-5: results are final, FINISH's terminal event ends the run, a cancelled step is not final", () => {
  fresh();
  let s = run([
    ev("run.started"),
    ev("step.started", { step: "w#0", name: "w" }),
    ev("output", { step: "w#0", try: 1, text: "Hel" }),
    // seq 4 (more text) was lost to a gap; step.completed's result repairs the text.
    { ...ev("stream.gap", { from: 4, to: 4 }), attempt: 0 },
    ev("step.completed", { step: "w#0", result: "Hello", tries: 1 }),
    ev("output", { step: "w#0", try: 1, text: " late" }),
  ]);
  assert.equal(s.output, "Hello");
  assert.deepEqual(s.gaps, [{ from: 4, to: 4 }]);
  assert.equal(s.needsSnapshot, true);
  s = run([
    ev("step.started", { step: "x#1", name: "x" }),
    ev("step.failed", { step: "x#1", error: { type: "CancelledError", message: "cancelled" }, cancelled: true }),
  ], s);
  assert.equal(s.steps["x#1"].status, "cancelled");
  s = run([ev("run.failed", { attempt: 7, error: { type: "AttemptsExhausted", message: "m", reason: "attempts_exhausted" }, reason: "attempts_exhausted" })], s);
  assert.equal(s.status, "failed");
  assert.equal(s.done, true);
  assert.equal(s.error.reason, "attempts_exhausted");
  assert.equal(s.attempt, 7);
});

test("events at or below the cursor change nothing; the input state is never mutated", () => {
  const frozen = deepFreeze(KILLED.slice(0, 8).reduce(reduce, initialState("run-a")));
  const next = reduce(frozen, KILLED[8]);
  assert.notEqual(next, frozen);
  assert.equal(frozen.output, "Hello durable ");
  for (const old of KILLED.slice(0, 8)) assert.equal(reduce(frozen, old), frozen);
  // All of it again, in any overlap, gives the same state.
  const once = KILLED.reduce(reduce, initialState("run-a"));
  const twice = [...KILLED.slice(0, 12), ...KILLED].reduce(reduce, initialState("run-a"));
  assert.deepEqual(twice, once);
});

test("state survives JSON (sessionStorage) midway: resuming gives the same final state", () => {
  const once = KILLED.reduce(reduce, initialState("run-a"));
  for (let cut = 0; cut <= KILLED.length; cut++) {
    const saved = JSON.parse(JSON.stringify(KILLED.slice(0, cut).reduce(reduce, initialState("run-a"))));
    assert.deepEqual(KILLED.slice(cut).reduce(reduce, saved), once, `cut at ${cut}`);
  }
});

test("waits open on request and close on the settling event of the same step", () => {
  fresh();
  let s = run([
    ev("run.started"),
    ev("input.requested", { step: "input:ok#0", key: "ok", schema: { type: "boolean" }, prompt: "Sure?", deadline: null, secret: false }),
    ev("run.waiting", { waits: [{ position: "0", kind: "input", step: "input:ok#0", key: "ok" }] }),
  ]);
  assert.equal(s.status, "waiting");
  assert.deepEqual(s.waits, [{
    kind: "input", step: "input:ok#0", key: "ok", schema: { type: "boolean" }, prompt: "Sure?", secret: false,
    deadline: null, child_run_id: null,
  }]);
  s = run([
    ev("input.received", { step: "input:ok#0", key: "ok", value: true }),
    ev("run.started", { attempt: 2 }),
    ev("input.requested", { step: "input:ok#1", key: "ok", schema: null, prompt: "", deadline: 99, secret: true }),
    ev("sleep.started", { step: "sleep#2", seconds: 5, until: 123 }),
    ev("child.waiting", { step: "child:c#3", child_run_id: "r.c3", workflow: "c" }),
  ], s);
  assert.deepEqual(s.waits.map((w) => [w.kind, w.step, w.deadline]), [
    ["input", "input:ok#1", 99], ["sleep", "sleep#2", 123], ["child", "child:c#3", null],
  ]);
  assert.equal(s.waits[0].secret, true);
  s = run([ev("sleep.ended", { step: "sleep#2" }), ev("input.timeout", { step: "input:ok#1", key: "ok" })], s);
  assert.deepEqual(s.waits.map((w) => w.child_run_id), ["r.c3"]);
  s = run([ev("run.cancelled", { reason: "cancelled" })], s);
  assert.deepEqual(s.waits, []);
  assert.equal(s.status, "cancelled");
});

test("objects: patches apply in order; a snapshot replaces them and older patches are skipped", () => {
  fresh();
  let s = run([
    ev("object", { name: "doc", patch: [{ op: "replace", path: "", value: { n: 1, tags: ["a"] } }] }),
    ev("object", { name: "doc", patch: [{ op: "replace", path: "/n", value: 2 }, { op: "add", path: "/tags/-", value: "b" }] }),
    ev("progress", { done: 1, total: null, label: null }),
  ]);
  assert.deepEqual(s.objects, { doc: { n: 2, tags: ["a", "b"] } });
  assert.deepEqual(s.progress, { done: 1, total: null, label: null, step: null });
  // A patch that does not apply (its base was lost) asks for a snapshot instead of throwing.
  const broken = run([ev("object", { name: "doc", patch: [{ op: "remove", path: "/missing" }] })], s);
  assert.equal(broken.needsSnapshot, true);
  assert.deepEqual(broken.objects, s.objects);
  // Snapshot as of seq 6; events 5 and 6 arrive afterwards and must not apply twice.
  const e5 = ev("object", { name: "doc", patch: [{ op: "replace", path: "/n", value: 3 }] });
  const e6 = ev("object", { name: "doc", patch: [{ op: "add", path: "/tags/-", value: "c" }] });
  const e7 = ev("object", { name: "doc", patch: [{ op: "replace", path: "/n", value: 4 }] });
  const snap = applySnapshot(broken, {
    run_id: "r", status: "running", last_seq: 6, attempt: 1, objects: { doc: { n: 3, tags: ["a", "b", "c"] } },
    progress: null, status_message: "s", waiting_for: [],
  });
  assert.equal(snap.needsSnapshot, false);
  assert.equal(snap.lastSeq, 4); // the stream position is not moved by a snapshot
  const final = [e5, e6, e7].reduce(reduce, snap);
  assert.deepEqual(final.objects, { doc: { n: 4, tags: ["a", "b", "c"] } });
});

test("a terminal snapshot ends a state; a later one does not undo a terminal event", () => {
  const snap = applySnapshot(initialState("r"), {
    run_id: "r", workflow: "w", status: "completed", last_seq: 9, attempt: 1, objects: {}, result: 42,
    error: null, progress: null, status_message: null, waiting_for: [],
  });
  assert.equal(snap.done, true);
  assert.equal(snap.result, 42);
  assert.equal(snap.lastSeq, 9);
  assert.equal(snap.workflow, "w");
});

test("items output is kept per step, apart from text", () => {
  fresh();
  const s = run([
    ev("step.started", { step: "i#0", name: "i" }),
    ev("output", { step: "i#0", try: 1, items: [{ a: 1 }] }),
    ev("output", { step: "i#0", try: 1, items: [{ a: 2 }] }),
  ]);
  assert.deepEqual(s.steps["i#0"].items, [{ a: 1 }, { a: 2 }]);
  assert.equal(s.output, "");
  assert.equal(s.status, "running");
});
