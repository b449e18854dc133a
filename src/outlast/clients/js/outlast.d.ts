// Types of @outlast/client (outlast.js). Event shapes: docs/protocol.md §3 of the Outlast repo.

export declare const SCHEMA_VERSION: 1;
export declare const EVENT_TYPES: readonly EventType[];

export type RunStatus = "queued" | "running" | "waiting" | "completed" | "failed" | "cancelled";

export type EventType =
  | "run.queued" | "run.started" | "run.retrying" | "run.waiting"
  | "run.completed" | "run.failed" | "run.cancelled"
  | "step.started" | "step.retrying" | "step.completed" | "step.failed"
  | "output" | "status" | "progress" | "object" | "log" | "custom"
  | "input.requested" | "input.received" | "input.timeout"
  | "sleep.started" | "sleep.ended"
  | "child.started" | "child.waiting" | "child.completed"
  | "stream.gap";

/** One event of a run's stream (schema v1). `data` depends on `type`. */
export interface RunEvent {
  v: number;
  seq: number;
  type: EventType | (string & {});
  run_id: string;
  attempt: number;
  step: string | null;
  ts: number;
  data: Record<string, any>;
}

export interface ErrorInfo {
  type: string;
  message: string;
  reason?: string;
  step?: string;
  [extra: string]: unknown;
}

export interface Progress {
  done: number;
  total: number | null;
  label: string | null;
  /** The step that reported it (null: the workflow body). */
  step?: string | null;
}

/** Something a run waits for (an input request, a durable sleep, a child run). */
export interface Wait {
  kind: "input" | "sleep" | "child";
  step: string | null;
  key: string | null;
  schema: Record<string, unknown> | null;
  prompt: string | null;
  secret: boolean;
  /** Unix seconds (server clock), or null. */
  deadline: number | null;
  child_run_id: string | null;
}

export type StepStatus = "running" | "retrying" | "completed" | "failed" | "cancelled" | "interrupted";

export interface StepState {
  id: string;
  name: string;
  parent: string | null;
  position: string | null;
  status: StepStatus;
  /** The attempt and try whose output is live (older frames were discarded). */
  attempt: number;
  try: number;
  /** Live text output of the step. */
  text: string;
  /** Live non-text output chunks of the step. */
  items: unknown[];
  args: Record<string, unknown> | null;
  result: unknown;
  error: ErrorInfo | null;
  tries: number;
  fallback: boolean;
  /** How many times partial output of this step was thrown away (failed tries, lost attempts). */
  discarded: number;
}

/** What the reducer knows about a run. Plain JSON: it is what sessionStorage keeps. */
export interface RunState {
  v: 1;
  runId: string | null;
  workflow: string | null;
  version: string | null;
  input: Record<string, unknown> | null;
  status: RunStatus | "unknown";
  attempt: number;
  /** Seq of the last event applied: the resume cursor. */
  lastSeq: number;
  /** A terminal event (or snapshot) was seen. */
  done: boolean;
  steps: Record<string, StepState>;
  /** Step ids in the order they first appeared. */
  stepOrder: string[];
  /** Every step's live text, joined in stepOrder. */
  output: string;
  /** Live text per step id (steps with text only). */
  outputBySteps: Record<string, string>;
  /** Current value of each published object. */
  objects: Record<string, unknown>;
  /** Objects came from a snapshot as of this seq; object events at or below it are skipped. */
  objectsSeq: number;
  progress: Progress | null;
  statusMessage: string | null;
  /** Pending waits, oldest first (empty once the run ended). */
  waits: Wait[];
  result: unknown;
  error: ErrorInfo | null;
  /** Trimmed ranges reported by stream.gap events. */
  gaps: { from: number; to: number }[];
  /** A gap or an unappliable patch: objects must be re-read from a snapshot (RunStream does it). */
  needsSnapshot: boolean;
}

export declare class OutlastError extends Error {
  constructor(message: string, options?: { status?: number; code?: string; details?: unknown; cause?: unknown });
  /** HTTP status; 0 for a network failure. */
  status: number;
  /** The API's error code (e.g. "run_not_found", "invalid_input"), or "network_error". */
  code: string;
  details: unknown;
}

export declare class PatchError extends Error {}

export type JsonPatchOperation =
  | { op: "add" | "replace" | "test"; path: string; value: unknown }
  | { op: "remove"; path: string }
  | { op: "move" | "copy"; path: string; from: string };

/** Apply an RFC 6902 patch without mutating `doc`. Throws PatchError. */
export declare function applyPatch<T = unknown>(doc: unknown, patch: readonly JsonPatchOperation[]): T;
export declare function initialState(runId?: string | null): RunState;
/** The pure reducer: the state after `event` (events at or below state.lastSeq change nothing). */
export declare function reduce(state: RunState, event: RunEvent): RunState;
/** Merge a GET /v1/runs/{id} snapshot (objects as of its last_seq, status, waits). */
/** `events` reduced in order, as one batch: the same state as reduce() one by one, much cheaper for long batches. */
export declare function reduceAll(state: RunState, events: readonly RunEvent[]): RunState;
export declare function applySnapshot(state: RunState, detail: RunDetail): RunState;
export declare function isTerminal(event: RunEvent | null | undefined): boolean;

export interface StartedRun {
  run_id: string;
  status: string;
  /** false when an idempotency key returned an existing run. */
  created: boolean;
  url: string;
  events_url: string;
}

export interface RunSummary {
  run_id: string;
  /** LLM tokens (in + out) of its completed steps, and their estimated cost in US dollars. */
  tokens: number;
  cost: number;
  workflow: string;
  version: string;
  status: RunStatus;
  attempt: number;
  created_at: number;
  updated_at: number | null;
  finished_at: number | null;
  last_seq: number;
}

export interface RunDetail extends RunSummary {
  input: Record<string, unknown>;
  result: unknown;
  error: ErrorInfo | null;
  started_at: number | null;
  progress: Progress | null;
  status_message: string | null;
  cancel_requested: boolean;
  waiting_for: Wait[];
  objects: Record<string, unknown>;
  url: string;
  events_url: string;
}

export interface RunPage {
  runs: RunSummary[];
  next_cursor: string | null;
}

export interface WorkflowInfo {
  name: string;
  description: string;
  input_schema: Record<string, unknown>;
  output_schema: Record<string, unknown>;
  secret_args: string[];
  version: string;
  versions: string[];
}

export interface WorkflowList {
  active_version: string | null;
  versions: string[];
  workflows: WorkflowInfo[];
}

export interface Span {
  step_id: string;
  name: string;
  parent: string | null;
  position: string;
  /** "step", or a wait of the workflow body: "input", "sleep", "child", "child_start". */
  kind: string;
  args: Record<string, unknown>;
  status: string;
  result: unknown;
  error: ErrorInfo | null;
  fallback: boolean;
  tries: number;
  retries: { try: number; error: ErrorInfo | null; delay: number | null }[];
  attempt: number;
  started_at: number;
  ended_at: number | null;
  usage: { tokens_in: number; tokens_out: number; cost: number | null } | null;
  children: Span[];
}

export interface Attempt {
  attempt: number;
  worker: string | null;
  started_at: number;
  ended_at: number | null;
  outcome: "running" | "waiting" | "lost" | "completed" | "failed" | "cancelled";
  reason: string | null;
}

export interface Trace {
  run_id: string;
  spans: Span[];
  attempts: Attempt[];
  usage: { tokens_in: number; tokens_out: number; cost: number };
}

export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  version: string;
  /** Runs it may execute at once. */
  slots: number;
  running: number;
  draining: boolean;
  /** Seconds since its last heartbeat. */
  heartbeat_age: number;
}

export interface DeployStatus {
  active: string | null;
  versions: { version: string; workers: number; in_flight: number; queued: number; state: "active" | "draining" | "drained" }[];
  /** Whether this key may promote and roll back. */
  can_deploy: boolean;
}

/** What sessionStorage offers (getItem/setItem/removeItem). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: any) => void): void;
  close(): void;
}

export interface ClientOptions {
  /** The API's origin and prefix, e.g. "https://api.example.com" ("" = this page's origin). */
  baseUrl?: string;
  /** API key: `Authorization: Bearer` for fetch, `?token=` for EventSource. */
  token?: string | null;
  fetch?: typeof globalThis.fetch;
  EventSource?: new (url: string) => EventSourceLike;
  /** Where each run's {cursor, state} is kept (default sessionStorage; null: nowhere). */
  storage?: StorageLike | null;
  /** First delay before reconnecting a refused stream, ms (doubles up to 5 s). Default 500. */
  retryMs?: number;
}

export interface StreamOptions {
  /** Start after this seq, with an empty state (default: the saved state of this run, or 0). */
  after?: number;
  /** Start from this state instead. */
  state?: RunState;
  /** First read the stored history in one NDJSON request (readEvents), then follow live (default false). */
  catchUp?: boolean;
  /** Keep {cursor, state} in the client's storage (default true). */
  persist?: boolean;
  /** Each new event, once, with the state after it. */
  onEvent?: (event: RunEvent, state: RunState) => void;
  /** Every change of state (events and snapshots). */
  onState?: (state: RunState) => void;
  /** The run ended (also called at once for a saved state that had ended). */
  onEnd?: (state: RunState) => void;
  /** The run cannot be followed (not found, not authorised, no EventSource). */
  onError?: (error: OutlastError) => void;
}

export declare class RunStream {
  readonly runId: string;
  /** The current state (replaced, never mutated, on each change). */
  readonly state: RunState;
  /** The seq of the last event applied. */
  readonly cursor: number;
  readonly closed: boolean;
  /** The final state, after the terminal event. Rejects with an OutlastError if the run cannot be followed. */
  readonly done: Promise<RunState>;
  /** Persist {cursor, state} now (also done every 100 ms while events arrive, on pagehide and on close). */
  save(): void;
  close(): void;
}

export declare class RunWatch {
  readonly runId: string;
  readonly error: OutlastError | null;
  readonly done: Promise<RunState>;
  subscribe(listener: () => void): () => void;
  getState(): RunState;
}

export declare class OutlastClient {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;
  readonly token: string | null;
  url(path: string): string;
  startRun(
    workflow: string,
    input?: Record<string, unknown>,
    options?: { idempotencyKey?: string; version?: string; fairnessKey?: string; maxConcurrency?: number },
  ): Promise<StartedRun>;
  getRun(runId: string): Promise<RunDetail>;
  listRuns(query?: { workflow?: string; status?: RunStatus; limit?: number; cursor?: string }): Promise<RunPage>;
  listWorkflows(): Promise<WorkflowList>;
  getTrace(runId: string): Promise<Trace>;
  sendInput(runId: string, key: string, value: unknown): Promise<{ run_id: string; key: string; status: "resumed" | "delivered" }>;
  cancelRun(runId: string): Promise<{ run_id: string; status: "cancelled" | "cancelling" }>;
  listWorkers(): Promise<{ workers: WorkerInfo[] }>;
  getDeploy(): Promise<DeployStatus>;
  promote(version: string): Promise<{ active: string; previous: string | null }>;
  rollback(): Promise<{ active: string; previous: string | null }>;
  /** The events stored now after `after` (one NDJSON response, follow=false). */
  readEvents(runId: string, after?: number): Promise<RunEvent[]>;
  eventsUrl(runId: string, after?: number): string;
  storageKey(runId: string): string;
  loadState(runId: string): RunState | null;
  saveState(state: RunState): void;
  forgetState(runId: string): void;
  streamRun(runId: string, options?: StreamOptions): RunStream;
  watch(runId: string): RunWatch;
}

export declare function createClient(options?: ClientOptions): OutlastClient;
