// The client against a real API, worker and Valkey: runs followed across an API crash and a
// page refresh, retries, waits for input, cancellation, trimmed streams, errors, and useRun.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import { StrictMode, act, createElement as h } from "react";
import { renderToString } from "react-dom/server";
import TestRenderer from "react-test-renderer";

import { OutlastError, SCHEMA_VERSION, initialState } from "../outlast.js";
import { useRun } from "../react.js";
import { MemoryStorage, client, range, recorder, startServers } from "./support.js";

let servers;

before(async () => {
  servers = await startServers();
});

after(async () => {
  await servers?.stop();
});

const gate = () => `gate:${randomUUID()}`;
const text = (parts) => range(0, parts - 1).map((i) => `part ${i}. `).join("");

test("a run is followed across a killed API and a page refresh, every seq exactly once", async () => {
  const storage = new MemoryStorage();
  const page1 = client(servers, { storage });
  const gates = [gate(), gate()];
  const input = { title: "resumable", parts: 30, gates, every: 10 };
  const key = randomUUID();
  const started = await page1.startRun("story", input, { idempotencyKey: key });
  const again = await page1.startRun("story", input, { idempotencyKey: key });
  assert.equal(again.run_id, started.run_id);
  assert.equal(again.created, false);

  const first = recorder();
  const stream1 = page1.streamRun(started.run_id, first.options);
  const held = await first.until((s) => s.progress?.done === 10); // held at the first gate
  assert.equal(held.output, text(10));
  await servers.command("kill_api");
  await servers.command("open", { gate: gates[0] }); // the run goes on while the API is down
  await servers.command("restart_api");
  const mid = await first.until((s) => s.progress?.done === 20); // the same stream reconnected
  assert.equal(mid.output, text(20));
  assert.deepEqual(mid.objects.doc, { title: "resumable", parts: 20, tags: ["durable", "streamed"] });
  stream1.close(); // the page goes away: its {cursor, state} stays in sessionStorage

  const page2 = client(servers, { storage }); // the refreshed page: new client, new stream
  const second = recorder();
  const stream2 = page2.streamRun(started.run_id, second.options);
  assert.equal(stream2.cursor, stream1.cursor);
  assert.equal(stream2.state.output, text(20)); // rendered at once from the saved state
  await servers.command("open", { gate: gates[1] });
  const final = await stream2.done;

  const seqs = [...first.events, ...second.events].map((e) => e.seq);
  assert.deepEqual(seqs, range(1, final.lastSeq));
  const detail = await page2.getRun(started.run_id);
  assert.equal(detail.last_seq, final.lastSeq);
  assert.equal(final.status, "completed");
  assert.equal(final.output, text(30));
  assert.equal(final.result, detail.result);
  assert.deepEqual(final.objects, detail.objects);
  assert.deepEqual(final.progress, { done: 30, total: 30, label: "parts", step: "chapter#0" });
  assert.equal(final.statusMessage, "writing");
  assert.deepEqual(final.outputBySteps, { "chapter#0": text(30) });
  assert.equal(final.steps["chapter#0"].status, "completed");
  assert.equal(JSON.parse(storage.getItem(page2.storageKey(started.run_id))).seq, final.lastSeq);
});

test("a failed try's partial output is discarded, not joined to the retry's", async () => {
  const c = client(servers, { storage: null });
  const run = await c.startRun("flaky", { text: "the real answer", counter: `n:${randomUUID()}` });
  const rec = recorder();
  const seen = [];
  const stream = c.streamRun(run.run_id, { ...rec.options, onState: (s) => (seen.push(s.output), rec.options.onState(s)) });
  const final = await stream.done;
  assert.ok(seen.includes("a draft that will fail "), "the first try's draft was shown while it was live");
  assert.ok(rec.events.some((e) => e.type === "step.retrying"));
  assert.equal(final.output, "the real answer");
  assert.equal(final.result, "the real answer");
  assert.equal(final.steps["shaky#0"].discarded, 1);
  assert.equal(final.steps["shaky#0"].try, 2);
});

test("a wait for input shows in state and sendInput answers it", async () => {
  const c = client(servers, { storage: null });
  const run = await c.startRun("approve", { draft: "post" });
  const rec = recorder();
  const stream = c.streamRun(run.run_id, rec.options);
  const waiting = await rec.until((s) => s.waits.length === 1);
  assert.equal(waiting.waits[0].kind, "input");
  assert.equal(waiting.waits[0].key, "approve");
  assert.equal(waiting.waits[0].prompt, "Publish this draft?");
  assert.ok(waiting.waits[0].schema.properties.ok);
  await assert.rejects(c.sendInput(run.run_id, "approve", { ok: [1] }), (err) => {
    assert.ok(err instanceof OutlastError);
    assert.equal(err.status, 422);
    assert.equal(err.code, "invalid_input");
    return true;
  });
  const accepted = await c.sendInput(run.run_id, "approve", { ok: true });
  assert.ok(["resumed", "delivered"].includes(accepted.status));
  const final = await stream.done;
  assert.equal(final.result, "post: approved");
  assert.deepEqual(final.waits, []);
});

test("cancelRun ends a running run; a second cancel is a 409", async () => {
  const c = client(servers, { storage: null });
  const run = await c.startRun("story", { parts: 5, gates: [gate()], every: 2 }); // the gate never opens
  const rec = recorder();
  const stream = c.streamRun(run.run_id, rec.options);
  await rec.until((s) => s.progress?.done === 2);
  const cancelled = await c.cancelRun(run.run_id);
  assert.ok(["cancelled", "cancelling"].includes(cancelled.status));
  const final = await stream.done;
  assert.equal(final.status, "cancelled");
  assert.equal(final.steps["chapter#0"].status, "cancelled");
  await assert.rejects(c.cancelRun(run.run_id), { status: 409, code: "run_finished" });
});

test("a cursor behind a trimmed stream gets a gap, and objects come from a snapshot", async () => {
  const c = client(servers, { storage: null });
  const run = await c.startRun("story", { parts: 12 });
  const whole = await c.streamRun(run.run_id).done;
  await servers.command("trim", { run_id: run.run_id, keep: 5 });
  const late = await c.streamRun(run.run_id, { after: 3 }).done;
  assert.deepEqual(late.gaps, [{ from: 4, to: whole.lastSeq - 5 }]);
  assert.deepEqual(late.objects, whole.objects);
  assert.equal(late.needsSnapshot, false);
  assert.equal(late.status, "completed");
  assert.equal(late.result, text(12));
  assert.equal(late.output, text(12)); // repaired by step.completed's result
});

test("a saved cursor past the run's end (another server's) starts over from seq 0", async () => {
  const storage = new MemoryStorage();
  const c = client(servers, { storage });
  const run = await c.startRun("story", { parts: 3 });
  const stale = { ...initialState(run.run_id), lastSeq: 999, output: "from elsewhere" };
  storage.setItem(c.storageKey(run.run_id), JSON.stringify({ v: SCHEMA_VERSION, seq: 999, state: stale }));
  const rec = recorder();
  const stream = c.streamRun(run.run_id, rec.options);
  assert.equal(stream.cursor, 999); // the API answers 400 bad_cursor to this one
  const final = await stream.done;
  assert.deepEqual(rec.events.map((e) => e.seq), range(1, final.lastSeq));
  assert.equal(final.output, text(3));
});

test("errors are OutlastErrors with the API's code", async () => {
  const c = client(servers, { storage: null });
  await assert.rejects(c.startRun("no-such-workflow", {}), { name: "OutlastError", status: 404 });
  await assert.rejects(c.getRun("no-such-run"), { status: 404, code: "run_not_found" });
  await assert.rejects(c.streamRun("no-such-run").done, { status: 404, code: "run_not_found" });
  const stranger = client(servers, { token: "wrong-key", storage: null });
  await assert.rejects(stranger.getRun("x"), { status: 401, code: "invalid_api_key" });
  const down = client({ api: "http://127.0.0.1:9", token: null }, { storage: null });
  await assert.rejects(down.getRun("x"), { status: 0, code: "network_error" });
});

// Resolves once predicate(state) holds for the watch's state.
function watchUntil(watch, predicate) {
  return new Promise((resolve) => {
    const check = () => {
      if (predicate(watch.getState())) {
        unsubscribe();
        resolve(watch.getState());
      }
    };
    const unsubscribe = watch.subscribe(check);
    check();
  });
}

test("useRun renders the run as it goes and to its final state (one shared stream per run)", async () => {
  globalThis.IS_REACT_ACT_ENVIRONMENT = true;
  const c = client(servers, { storage: new MemoryStorage() });
  const held = gate();
  const run = await c.startRun("story", { title: "react", parts: 6, gates: [held], every: 3 });
  function Run({ runId }) {
    const { status, output, objects, progress, error } = useRun(runId, { client: c });
    return h("p", null, `${status}|${output}|${objects.doc?.parts ?? "-"}|${progress?.done ?? "-"}|${error ?? "ok"}`);
  }
  const rendered = () => renderer.toJSON().children.map((p) => p.children.join(""));
  let renderer;
  await act(async () => {
    const page = h("div", null, h(Run, { runId: run.run_id }), h(Run, { runId: run.run_id }));
    renderer = TestRenderer.create(h(StrictMode, null, page)); // StrictMode subscribes twice

  });
  assert.equal(c._watches.size, 1, "two components, one stream");
  const opened = c.watch(run.run_id).stream;
  const watch = c.watch(run.run_id);
  await act(() => watchUntil(watch, (s) => s.progress?.done === 3));
  assert.equal(watch.stream, opened, "StrictMode's remount kept the stream");
  const midway = `running|${text(3)}|3|3|ok`;
  assert.deepEqual(rendered(), [midway, midway]);

  await act(async () => {
    await servers.command("open", { gate: held }); // inside act: the updates it causes are flushed by it
    await watch.done;
  });
  const expected = `completed|${text(6)}|6|6|ok`;
  assert.deepEqual(rendered(), [expected, expected]);
  // Server rendering reads the same store.
  assert.equal(renderToString(h(Run, { runId: run.run_id })), `<p>${expected}</p>`);
  await act(async () => renderer.unmount());
  await new Promise((resolve) => setTimeout(resolve, 0)); // the watch closes one tick after its last unsubscribe
  assert.equal(c._watches.size, 0);
});
