// React binding: useRun(runId) follows a run and re-renders on every change of its state.
import { useMemo, useSyncExternalStore } from "react";
import { createClient, initialState } from "./outlast.js";

const EMPTY = initialState(null);
const noSubscribe = () => () => {};
const emptyState = () => EMPTY;

/**
 * Follow a run: `{status, output, outputBySteps, objects, progress, waits, error, result, state}`.
 * Components that watch the same run through the same client share one stream; pass `client`
 * (from createClient) to share it across the app, or `baseUrl`/`token` to make one here.
 * A null/undefined runId renders the empty state and opens nothing.
 */
export function useRun(runId, options = {}) {
  const { client: given, baseUrl, token } = options;
  const client = useMemo(() => given ?? createClient({ baseUrl, token }), [given, baseUrl, token]);
  const watch = runId ? client.watch(runId) : null;
  const state = useSyncExternalStore(
    watch ? watch.subscribe : noSubscribe,
    watch ? watch.getState : emptyState,
    watch ? watch.getState : emptyState,
  );
  return {
    status: state.status,
    output: state.output,
    outputBySteps: state.outputBySteps,
    objects: state.objects,
    progress: state.progress,
    waits: state.waits,
    error: state.error ?? watch?.error ?? null,
    result: state.result,
    done: state.done,
    state,
  };
}
