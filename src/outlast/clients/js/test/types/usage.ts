// Typed usage of the package through its exports map: `tsc --noEmit` must accept it, and each
// line marked as an expected error must be one.
import {
  OutlastError,
  applyPatch,
  createClient,
  initialState,
  reduce,
  type RunDetail,
  type RunEvent,
  type RunState,
  type Wait,
} from "@outlast/client";
import { useRun, type UseRunResult } from "@outlast/client/react";

const client = createClient({ baseUrl: "https://api.example", token: "k", storage: null, retryMs: 100 });

export async function start(): Promise<string> {
  const run = await client.startRun("story", { parts: 3 }, { idempotencyKey: "k1" });
  const detail: RunDetail = await client.getRun(run.run_id);
  const waits: Wait[] = detail.waiting_for;
  if (waits[0]?.kind === "input" && waits[0].key) await client.sendInput(run.run_id, waits[0].key, { ok: true });
  const cancelled = await client.cancelRun(run.run_id);
  const status: "cancelled" | "cancelling" = cancelled.status;
  return status;
}

export function follow(runId: string): Promise<RunState> {
  const stream = client.streamRun(runId, {
    after: 0,
    onEvent: (event: RunEvent, state: RunState) => console.log(event.seq, state.output),
    onError: (error: OutlastError) => console.log(error.code, error.status),
  });
  const cursor: number = stream.cursor;
  console.log(cursor);
  return stream.done;
}

export function fold(events: RunEvent[]): string {
  const state = events.reduce(reduce, initialState("r"));
  const doc = applyPatch<{ n: number }>(state.objects.doc, [{ op: "replace", path: "/n", value: 1 }]);
  return `${state.status} ${doc.n} ${state.steps["w#0"]?.text ?? ""} ${state.progress?.done ?? 0}`;
}

export function View(runId: string | null): string {
  const run: UseRunResult = useRun(runId, { client });
  return `${run.status}: ${run.output} ${Object.keys(run.outputBySteps).length} ${run.waits.length}`;
}

// @ts-expect-error: the input of a run is an object
client.startRun("story", "not an object");
// @ts-expect-error: there is no such option
client.streamRun("r", { afterSeq: 3 });
// @ts-expect-error: statuses are typed
const bad: RunState["status"] = "exploded";
console.log(bad);
