// Types of @outlast/client/react (react.js).
import type { ErrorInfo, OutlastClient, OutlastError, Progress, RunState, Wait } from "./outlast.js";

export interface UseRunOptions {
  /** A shared client (one stream per run however many components watch it). */
  client?: OutlastClient;
  /** Without `client`: the API to talk to ("" = this page's origin). */
  baseUrl?: string;
  token?: string | null;
}

export interface UseRunResult {
  status: RunState["status"];
  /** Every step's live text, joined in start order. */
  output: string;
  outputBySteps: Record<string, string>;
  objects: Record<string, unknown>;
  progress: Progress | null;
  waits: Wait[];
  /** The run's error, or the stream's (an OutlastError) when the run cannot be followed. */
  error: ErrorInfo | OutlastError | null;
  result: unknown;
  done: boolean;
  state: RunState;
}

export declare function useRun(runId: string | null | undefined, options?: UseRunOptions): UseRunResult;
