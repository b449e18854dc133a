// Outlast browser client: start, inspect, steer and follow durable runs. No dependencies.
//
// Three layers, each usable alone:
//   * applyPatch: RFC 6902 JSON Patch, immutable (published objects arrive as patches).
//   * reduce(state, event): the pure run-state reducer. It applies docs/protocol.md §6 (a failed
//     attempt's or try's partial output is discarded) and gives status, per-step output,
//     objects, progress and pending waits. Same events in, same state out.
//   * createClient(options): fetch calls to the HTTP API, and streamRun, which feeds the reducer
//     from an EventSource and keeps {cursor, state} per run in sessionStorage, so a refreshed
//     page resumes after the last seq it rendered instead of from the start (EventSource only
//     sends Last-Event-ID on its own reconnects, never after a refresh).

export const SCHEMA_VERSION = 1;

/** Every event type of protocol v1 (docs/protocol.md §3). EventSource needs a listener per type. */
export const EVENT_TYPES = Object.freeze([
  "run.queued", "run.started", "run.retrying", "run.waiting",
  "run.completed", "run.failed", "run.cancelled",
  "step.started", "step.retrying", "step.completed", "step.failed",
  "output", "status", "progress", "object", "log", "custom",
  "input.requested", "input.received", "input.timeout",
  "sleep.started", "sleep.ended",
  "child.started", "child.waiting", "child.completed",
  "stream.gap",
]);

const TERMINAL = { "run.completed": "completed", "run.failed": "failed", "run.cancelled": "cancelled" };
const TERMINAL_STATUSES = new Set(["completed", "failed", "cancelled"]);

/** An API answer other than 2xx (`status`, `code` and `details` from its error body), or a network failure (`status` 0). */
export class OutlastError extends Error {
  constructor(message, { status = 0, code = "error", details = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "OutlastError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** A JSON Patch that does not apply to the document it was given. */
export class PatchError extends Error {
  constructor(message) {
    super(message);
    this.name = "PatchError";
  }
}

// ---------------------------------------------------------------- RFC 6902 JSON Patch

const INDEX = /^(0|[1-9][0-9]*)$/;

function pointer(path) {
  if (path === "") return [];
  if (typeof path !== "string" || path[0] !== "/") throw new PatchError(`not a JSON pointer: ${JSON.stringify(path)}`);
  return path.slice(1).split("/").map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function isContainer(value) {
  return value !== null && typeof value === "object";
}

function childKey(container, token, forInsert) {
  if (!Array.isArray(container)) return token;
  if (forInsert && token === "-") return container.length;
  if (!INDEX.test(token)) throw new PatchError(`not an array index: ${JSON.stringify(token)}`);
  const index = Number(token);
  if (index > container.length || (!forInsert && index === container.length)) {
    throw new PatchError(`array index ${index} out of range (length ${container.length})`);
  }
  return index;
}

function has(container, key) {
  return Array.isArray(container) ? key < container.length : Object.prototype.hasOwnProperty.call(container, key);
}

function getAt(doc, tokens) {
  let node = doc;
  for (const token of tokens) {
    if (!isContainer(node)) throw new PatchError(`path does not exist: /${tokens.join("/")}`);
    const key = childKey(node, token, false);
    if (!has(node, key)) throw new PatchError(`path does not exist: /${tokens.join("/")}`);
    node = node[key];
  }
  return node;
}

// A copy of `doc` in which `edit(parentCopy, lastToken)` was applied: only the containers on the
// path are copied, everything else is shared (values are never mutated in place).
function editAt(doc, tokens, edit, depth = 0) {
  if (!isContainer(doc)) throw new PatchError(`path does not exist: /${tokens.join("/")}`);
  const copy = Array.isArray(doc) ? doc.slice() : { ...doc };
  if (depth === tokens.length - 1) {
    edit(copy, tokens[depth]);
    return copy;
  }
  const key = childKey(doc, tokens[depth], false);
  if (!has(doc, key)) throw new PatchError(`path does not exist: /${tokens.join("/")}`);
  copy[key] = editAt(doc[key], tokens, edit, depth + 1);
  return copy;
}

function add(doc, tokens, value) {
  if (tokens.length === 0) return value;
  return editAt(doc, tokens, (parent, token) => {
    if (Array.isArray(parent)) parent.splice(childKey(parent, token, true), 0, value);
    else parent[token] = value;
  });
}

function remove(doc, tokens) {
  if (tokens.length === 0) return undefined;
  return editAt(doc, tokens, (parent, token) => {
    const key = childKey(parent, token, false);
    if (!has(parent, key)) throw new PatchError(`cannot remove a missing member: /${tokens.join("/")}`);
    if (Array.isArray(parent)) parent.splice(key, 1);
    else delete parent[key];
  });
}

function replace(doc, tokens, value) {
  if (tokens.length === 0) return value;
  return editAt(doc, tokens, (parent, token) => {
    const key = childKey(parent, token, false);
    if (!has(parent, key)) throw new PatchError(`cannot replace a missing member: /${tokens.join("/")}`);
    parent[key] = value;
  });
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (!isContainer(a) || !isContainer(b) || Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => has(b, Array.isArray(b) ? Number(k) : k) && deepEqual(a[k], b[k]));
}

/** Apply an RFC 6902 patch without mutating `doc`; returns the new document. Throws PatchError. */
export function applyPatch(doc, patch) {
  if (!Array.isArray(patch)) throw new PatchError("a JSON Patch is an array of operations");
  let result = doc;
  for (const op of patch) {
    const path = pointer(op.path);
    switch (op.op) {
      case "add": result = add(result, path, op.value); break;
      case "remove": result = remove(result, path); break;
      case "replace": result = replace(result, path, op.value); break;
      case "move": {
        const from = pointer(op.from);
        if (path.length > from.length && from.every((t, i) => t === path[i])) {
          throw new PatchError(`cannot move ${op.from} into itself`);
        }
        const value = getAt(result, from);
        result = add(remove(result, from), path, value);
        break;
      }
      case "copy": result = add(result, path, getAt(result, pointer(op.from))); break;
      case "test":
        if (!deepEqual(getAt(result, path), op.value)) throw new PatchError(`test failed at ${op.path}`);
        break;
      default: throw new PatchError(`unknown JSON Patch op: ${JSON.stringify(op.op)}`);
    }
  }
  return result;
}

// ---------------------------------------------------------------- the run-state reducer

/** The state of a run before any event: feed it events with reduce(). */
export function initialState(runId = null) {
  return {
    v: SCHEMA_VERSION,
    runId,
    workflow: null,
    version: null,
    input: null,
    status: "unknown",
    attempt: 0,
    lastSeq: 0,
    done: false,
    steps: {},
    stepOrder: [],
    output: "",
    outputBySteps: {},
    objects: {},
    objectsSeq: 0,
    progress: null,
    statusMessage: null,
    waits: [],
    result: null,
    error: null,
    gaps: [],
    needsSnapshot: false,
  };
}

const INTERRUPTIBLE = new Set(["running", "retrying", "cancelled"]);

// Containers (steps map, stepOrder, outputBySteps) created by the reduceAll call in progress:
// it may change them in place. Empty outside reduceAll, so reduce() copies on every write and
// never touches a state it was given; reduceAll copies each container once per batch instead of
// once per event (a 2,000-step run's 10,000 events otherwise copy a 2,000-key map 10,000 times).
let owned = null;

function own(container, copy) {
  if (owned === null) return copy(container);
  if (owned.has(container)) return container;
  const mine = copy(container);
  owned.add(mine);
  return mine;
}

const copyObject = (o) => ({ ...o });
const copyArray = (a) => a.slice();

function isLive(step) {
  return step.status !== "completed";
}

function joinOutput(steps, order) {
  let text = "";
  const bySteps = {};
  for (const id of order) {
    const step = steps[id];
    if (step.text) {
      text += step.text;
      bySteps[id] = step.text;
    }
  }
  return [text, bySteps];
}

function withOutput(state) {
  const [output, outputBySteps] = joinOutput(state.steps, state.stepOrder);
  state.output = output;
  state.outputBySteps = outputBySteps;
  owned?.add(outputBySteps);
  return state;
}

function newStep(id, event) {
  return {
    id,
    name: id.replace(/#\d+$/, "").split("/").pop(),
    parent: null,
    position: null,
    status: "running",
    attempt: event.attempt,
    try: 1,
    text: "",
    items: [],
    args: null,
    result: null,
    error: null,
    tries: 0,
    fallback: false,
    discarded: 0,
  };
}

// Drop the output of every step `which(step)` selects: protocol §6 rules 1 and 2.
function discardWhere(state, which) {
  let changed = false;
  const steps = { ...state.steps };
  for (const id of state.stepOrder) {
    const step = steps[id];
    if (which(step) && (step.text || step.items.length)) {
      steps[id] = { ...step, text: "", items: [], discarded: step.discarded + 1 };
      changed = true;
    }
  }
  if (changed) {
    state.steps = steps;
    withOutput(state);
  }
  return changed;
}

function putStep(state, id, step) {
  const isNew = !Object.prototype.hasOwnProperty.call(state.steps, id);
  state.steps = own(state.steps, copyObject);
  state.steps[id] = step;
  if (isNew && !state.stepOrder.includes(id)) {
    state.stepOrder = own(state.stepOrder, copyArray);
    state.stepOrder.push(id);
  }
}

function addWait(state, wait) {
  state.waits = [...state.waits.filter((w) => w.step !== wait.step), wait];
}

function dropWait(state, step) {
  state.waits = state.waits.filter((w) => w.step !== step);
}

// Whether no step after `id` in start order has text: appending to it appends to `output`.
function isLastText(state, id) {
  for (let i = state.stepOrder.length - 1; i >= 0; i--) {
    const other = state.stepOrder[i];
    if (other === id) return true;
    if (state.steps[other].text) return false;
  }
  return true; // a new step goes last
}

function onOutput(state, event) {
  const id = event.step;
  if (!id) return;
  const data = event.data || {};
  const tryNo = data.try ?? 1;
  let step = state.steps[id] || newStep(id, event);
  if (event.attempt < step.attempt || (event.attempt === step.attempt && tryNo < step.try)) return; // stale frame
  if (step.status === "completed") return; // the result is final (rule 3)
  let reset = false;
  if (event.attempt > step.attempt || tryNo > step.try) {
    // Frames of a newer (attempt, try) make the older ones dead (§6: only the latest is live).
    reset = Boolean(step.text || step.items.length);
    step = { ...step, attempt: event.attempt, try: tryNo, text: "", items: [], discarded: step.discarded + (reset ? 1 : 0) };
  }
  if (typeof data.text === "string") {
    const last = isLastText(state, id);
    step = { ...step, text: step.text + data.text };
    putStep(state, id, step);
    if (last && !reset) {
      state.output += data.text; // the common case: the newest streaming step grows
      state.outputBySteps = own(state.outputBySteps, copyObject);
      state.outputBySteps[id] = step.text;
      return;
    }
  } else if (Array.isArray(data.items)) {
    putStep(state, id, { ...step, items: [...step.items, ...data.items] });
  } else {
    putStep(state, id, step);
  }
  if (reset || typeof data.text === "string") withOutput(state);
}

/**
 * The pure run-state reducer: returns the state after `event` (never mutates `state`).
 * Events at or below `state.lastSeq` are ignored, so replays and overlapping reconnects are harmless.
 */
export function reduce(state, event) {
  if (!event || typeof event.seq !== "number" || event.seq <= state.lastSeq) return state;
  const s = { ...state, lastSeq: event.seq };
  const data = event.data || {};
  const id = event.step;
  switch (event.type) {
    case "run.queued":
      s.runId = s.runId ?? event.run_id;
      s.workflow = data.workflow ?? null;
      s.version = data.version ?? null;
      s.input = data.input ?? null;
      if (s.status === "unknown") s.status = "queued";
      break;
    case "run.started": {
      const attempt = data.attempt ?? event.attempt;
      s.runId = s.runId ?? event.run_id;
      s.status = "running";
      if (attempt > 1) {
        // Rule 1: output of a step without step.completed came from an earlier attempt.
        discardWhere(s, isLive);
        s.steps = Object.fromEntries(
          Object.entries(s.steps).map(([k, st]) => [k, INTERRUPTIBLE.has(st.status) ? { ...st, status: "interrupted" } : st]),
        );
      }
      s.attempt = Math.max(s.attempt, attempt);
      break;
    }
    case "run.retrying":
      // Like step.retrying for every step that had not completed (protocol §3).
      discardWhere(s, isLive);
      break;
    case "run.waiting":
      s.status = "waiting";
      for (const w of data.waits || []) {
        if (!s.waits.some((x) => x.step === w.step)) {
          addWait(s, {
            kind: w.kind, step: w.step, key: w.key ?? null, schema: null, prompt: null, secret: false,
            deadline: w.deadline ?? null, child_run_id: w.child ?? null,
          });
        }
      }
      break;
    case "step.started": {
      if (!id) break;
      // A new execution of the step (a new attempt, or the body run again after run.retrying):
      // whatever it streamed before is dead.
      const old = s.steps[id];
      const dead = Boolean(old && (old.text || old.items.length));
      const step = newStep(id, event);
      Object.assign(step, {
        name: data.name ?? step.name, parent: data.parent ?? null, position: data.position ?? null,
        args: data.args ?? null, discarded: (old?.discarded ?? 0) + (dead ? 1 : 0),
      });
      putStep(s, id, step);
      if (dead) withOutput(s);
      if (s.status === "queued" || s.status === "unknown") s.status = "running";
      break;
    }
    case "step.retrying": {
      if (!id) break;
      const step = s.steps[id] || newStep(id, event);
      // Rule 2: S's output so far is dead, and so is that of its unfinished descendants.
      putStep(s, id, { ...step, status: "retrying", try: (data.try ?? step.try) + 1, error: data.error ?? null });
      discardWhere(s, (st) => st.id === id || (st.id.startsWith(`${id}/`) && isLive(st)));
      break;
    }
    case "step.completed": {
      if (!id) break;
      let step = { ...(s.steps[id] || newStep(id, event)) };
      Object.assign(step, {
        status: "completed", result: data.result ?? null, tries: data.tries ?? step.tries,
        fallback: Boolean(data.fallback), error: data.error ?? null,
      });
      // Rule 3: the result is the final value; a streamed text step's result is its joined text,
      // which also repairs text lost to a stream.gap.
      if (step.text && typeof data.result === "string" && data.result !== step.text) {
        step = { ...step, text: data.result };
        putStep(s, id, step);
        withOutput(s);
      } else {
        putStep(s, id, step);
      }
      break;
    }
    case "step.failed": {
      if (!id) break;
      const step = s.steps[id] || newStep(id, event);
      // Rule 5: a cancelled step is not final; a later attempt may start it again.
      putStep(s, id, {
        ...step, status: data.cancelled ? "cancelled" : "failed", error: data.error ?? null, tries: data.tries ?? step.tries,
      });
      break;
    }
    case "output":
      onOutput(s, event);
      break;
    case "status":
      s.statusMessage = data.message ?? null;
      break;
    case "progress":
      s.progress = { done: data.done ?? 0, total: data.total ?? null, label: data.label ?? null, step: id ?? null };
      break;
    case "object": {
      if (event.seq <= s.objectsSeq) break; // already in the snapshot the objects came from
      try {
        s.objects = { ...s.objects, [data.name]: applyPatch(s.objects[data.name], data.patch) };
      } catch (err) {
        if (!(err instanceof PatchError)) throw err;
        s.needsSnapshot = true; // a patch we cannot apply: take the objects from a snapshot
      }
      break;
    }
    case "input.requested":
      addWait(s, {
        kind: "input", step: id, key: data.key ?? null, schema: data.schema ?? null, prompt: data.prompt || null,
        secret: Boolean(data.secret), deadline: data.deadline ?? null, child_run_id: null,
      });
      break;
    case "sleep.started":
      addWait(s, {
        kind: "sleep", step: id, key: null, schema: null, prompt: null, secret: false,
        deadline: data.until ?? null, child_run_id: null,
      });
      break;
    case "child.waiting":
      addWait(s, {
        kind: "child", step: id, key: null, schema: null, prompt: null, secret: false,
        deadline: null, child_run_id: data.child_run_id ?? null,
      });
      break;
    case "input.received":
    case "input.timeout":
    case "sleep.ended":
    case "child.completed":
      dropWait(s, id); // match on step, not key: a key may be asked for again (§15.10)
      break;
    case "run.completed":
    case "run.failed":
    case "run.cancelled":
      // Rule 4: a terminal event ends the run whatever its attempt.
      s.status = TERMINAL[event.type];
      s.done = true;
      s.waits = [];
      s.attempt = Math.max(s.attempt, event.attempt);
      if (event.type === "run.completed") s.result = data.result ?? null;
      else if (event.type === "run.failed") s.error = data.error ?? { type: "Error", message: "failed", reason: data.reason };
      else s.error = { type: "Cancelled", message: data.reason || "cancelled", reason: data.reason || "cancelled" };
      break;
    case "stream.gap":
      // Events from..to were trimmed away: objects can no longer be patched forward.
      s.gaps = [...s.gaps, { from: data.from, to: data.to }];
      s.needsSnapshot = true;
      break;
    default:
      break; // log, custom, child.started and future types change no state
  }
  return s;
}

/**
 * `events` applied in order: the same state as reducing them one by one (and, like reduce,
 * `state` is left untouched), at a fraction of the cost for long batches (a page catching up
 * with thousands of events).
 */
export function reduceAll(state, events) {
  owned = new WeakSet();
  try {
    let s = state;
    for (const event of events) s = reduce(s, event);
    return s;
  } finally {
    owned = null;
  }
}

/**
 * Merge a run snapshot (GET /v1/runs/{id}) into `state`: objects as of its last_seq (later
 * object events apply on top, earlier ones are skipped), status, progress and waits.
 */
export function applySnapshot(state, detail) {
  const s = { ...state, needsSnapshot: false };
  if (detail.last_seq >= s.objectsSeq) {
    s.objects = { ...(detail.objects || {}) };
    s.objectsSeq = detail.last_seq;
  }
  if (detail.last_seq >= state.lastSeq && !state.done) {
    s.status = detail.status;
    s.progress = detail.progress ?? s.progress;
    s.statusMessage = detail.status_message ?? s.statusMessage;
    s.waits = (detail.waiting_for || []).map((w) => ({
      kind: w.kind, step: w.step ?? null, key: w.key ?? null, schema: w.schema ?? null, prompt: w.prompt ?? null,
      secret: Boolean(w.secret), deadline: w.deadline ?? null, child_run_id: w.child_run_id ?? null,
    }));
    if (TERMINAL_STATUSES.has(detail.status)) {
      s.done = true;
      s.result = detail.result ?? null;
      s.error = detail.error ?? null;
      s.lastSeq = detail.last_seq;
    }
  }
  s.runId = s.runId ?? detail.run_id;
  s.workflow = s.workflow ?? detail.workflow ?? null;
  s.version = s.version ?? detail.version ?? null;
  s.input = s.input ?? detail.input ?? null;
  s.attempt = Math.max(s.attempt, detail.attempt ?? 0);
  return s;
}

/** Whether `event` ends its run. */
export function isTerminal(event) {
  return Boolean(event && Object.prototype.hasOwnProperty.call(TERMINAL, event.type));
}

// ---------------------------------------------------------------- the HTTP client

function trimSlash(url) {
  return url.endsWith("/") ? url.slice(0, -1) : url;
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // sandboxed frames throw on access
  }
}

/**
 * A client for one Outlast API.
 * Options: baseUrl ("" = the page's origin), token (sent as `Authorization: Bearer` to fetch and
 * as `?token=` to EventSource), fetch, EventSource, storage (default sessionStorage; null: none),
 * retryMs (first reconnect delay after a refused stream).
 */
export class OutlastClient {
  constructor(options = {}) {
    this.baseUrl = trimSlash(options.baseUrl ?? "");
    this.token = options.token ?? null;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.storage = options.storage === undefined ? defaultStorage() : options.storage;
    this.retryMs = options.retryMs ?? 500;
    this._watches = new Map();
  }

  /** The API's URL for `path` (which starts with "/"). */
  url(path) {
    return `${this.baseUrl}${path}`;
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this.fetch(this.url(path), init);
    } catch (cause) {
      throw new OutlastError(`${method} ${path}: the API is unreachable (${cause?.message ?? cause})`, {
        code: "network_error", cause,
      });
    }
    const text = await response.text();
    let payload = null;
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch {
        payload = null;
      }
    }
    if (!response.ok) {
      const err = payload?.error;
      throw new OutlastError(err?.message ?? `${method} ${path}: HTTP ${response.status}`, {
        status: response.status, code: err?.code ?? `http_${response.status}`, details: err?.details ?? null,
      });
    }
    return payload;
  }

  /** Start a run of `workflow`; the same idempotencyKey returns the same run for 24 h; a
   * fairnessKey queues it fairly behind that key (maxConcurrency: the key's cap across the fleet). */
  startRun(workflow, input = {}, { idempotencyKey, version, fairnessKey, maxConcurrency } = {}) {
    const body = { input };
    if (idempotencyKey != null) body.idempotency_key = idempotencyKey;
    if (version != null) body.version = version;
    if (fairnessKey != null) body.fairness_key = fairnessKey;
    if (maxConcurrency != null) body.max_concurrency = maxConcurrency;
    return this.request("POST", `/v1/workflows/${encodeURIComponent(workflow)}/runs`, body);
  }

  /** The run's snapshot: status, result/error, objects and progress as of `last_seq`, pending waits. */
  getRun(runId) {
    return this.request("GET", `/v1/runs/${encodeURIComponent(runId)}`);
  }

  /** Runs newest first: {runs, next_cursor}. */
  listRuns({ workflow, status, limit, cursor } = {}) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries({ workflow, status, limit, cursor })) if (v != null) query.set(k, String(v));
    const qs = query.toString();
    return this.request("GET", `/v1/runs${qs ? `?${qs}` : ""}`);
  }

  /** The registered workflows with their input schemas. */
  listWorkflows() {
    return this.request("GET", "/v1/workflows");
  }

  /** The run's span tree. */
  getTrace(runId) {
    return this.request("GET", `/v1/runs/${encodeURIComponent(runId)}/trace`);
  }

  /** Supply the value a run waits for under `key` (any JSON value); {status: "resumed" | "delivered"}. */
  sendInput(runId, key, value) {
    return this.request("POST", `/v1/runs/${encodeURIComponent(runId)}/inputs/${encodeURIComponent(key)}`, value);
  }

  /** Cancel a run: {status: "cancelled" | "cancelling"}; 409 (an OutlastError) if it already ended. */
  cancelRun(runId) {
    return this.request("POST", `/v1/runs/${encodeURIComponent(runId)}/cancel`);
  }

  /** Live workers: {workers: [{id, host, pid, version, slots, running, draining, heartbeat_age}]}. */
  listWorkers() {
    return this.request("GET", "/v1/workers");
  }

  /** The active version and, per version, workers, runs in flight and queue depth; `can_deploy`. */
  getDeploy() {
    return this.request("GET", "/v1/deploy");
  }

  /** Send new runs to `version` (403 unless this key's tenant is an admin): {active, previous}. */
  promote(version) {
    return this.request("POST", "/v1/deploy/promote", { version });
  }

  /** Make the previously active version active again: {active, previous}; 409 if there was none. */
  rollback() {
    return this.request("POST", "/v1/deploy/rollback");
  }

  /**
   * The run's events stored now after `after`, in one response (NDJSON, `follow=false`): the
   * cheap way to catch up with a long history before following the rest live.
   */
  async readEvents(runId, after = 0) {
    const headers = { Accept: "application/x-ndjson" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const path = `/v1/runs/${encodeURIComponent(runId)}/events?after=${after}&follow=false`;
    let response;
    try {
      response = await this.fetch(this.url(path), { headers });
    } catch (cause) {
      throw new OutlastError(`GET ${path}: the API is unreachable (${cause?.message ?? cause})`, { code: "network_error", cause });
    }
    const text = await response.text();
    if (!response.ok) {
      let err = null;
      try { err = JSON.parse(text)?.error; } catch { /* not JSON */ }
      throw new OutlastError(err?.message ?? `GET ${path}: HTTP ${response.status}`, {
        status: response.status, code: err?.code ?? `http_${response.status}`, details: err?.details ?? null,
      });
    }
    const events = [];
    for (const line of text.split("\n")) if (line.trim()) events.push(JSON.parse(line));
    return events;
  }

  /** The SSE URL of a run's events after `after` (the token rides in the query: EventSource cannot send headers). */
  eventsUrl(runId, after = 0) {
    const query = new URLSearchParams({ after: String(after) });
    if (this.token) query.set("token", this.token);
    return this.url(`/v1/runs/${encodeURIComponent(runId)}/events?${query}`);
  }

  /** The sessionStorage key holding a run's {seq, state}. */
  storageKey(runId) {
    return `outlast:${this.baseUrl}:${runId}`;
  }

  /** The saved state of a run (null if none or unreadable). */
  loadState(runId) {
    if (!this.storage) return null;
    try {
      const saved = JSON.parse(this.storage.getItem(this.storageKey(runId)) ?? "null");
      if (saved && saved.v === SCHEMA_VERSION && saved.state?.lastSeq === saved.seq) return saved.state;
    } catch {
      // unreadable or from another version: start over
    }
    return null;
  }

  saveState(state) {
    if (!this.storage || !state.runId) return;
    const key = this.storageKey(state.runId);
    try {
      this.storage.setItem(key, JSON.stringify({ v: SCHEMA_VERSION, seq: state.lastSeq, state }));
    } catch {
      // Over quota: forget it rather than keep a stale one (a refresh then replays from seq 0).
      try { this.storage.removeItem(key); } catch { /* nothing more to do */ }
    }
  }

  forgetState(runId) {
    try { this.storage?.removeItem(this.storageKey(runId)); } catch { /* nothing to do */ }
  }

  /**
   * Follow a run's events (see RunStream). Without `after`, resumes from the state saved in
   * storage for this run, or from the start.
   */
  streamRun(runId, options = {}) {
    return new RunStream(this, runId, options);
  }

  /**
   * A shared, reference-counted view of a run for UI frameworks: one stream however many
   * components subscribe; it opens on the first subscribe and closes after the last unsubscribe.
   */
  watch(runId) {
    let watch = this._watches.get(runId);
    if (!watch) {
      watch = new RunWatch(this, runId);
      this._watches.set(runId, watch);
    }
    return watch;
  }
}

/** `new OutlastClient(options)`. */
export function createClient(options = {}) {
  return new OutlastClient(options);
}

// ---------------------------------------------------------------- following a run

const SAVE_EVERY_MS = 100;

/**
 * One run's event stream feeding the reducer. `state` is always current; `done` resolves with
 * the final state after the terminal event (or rejects with an OutlastError when the run cannot
 * be followed: not found, not authorised). Call `close()` to stop early.
 */
export class RunStream {
  constructor(client, runId, options = {}) {
    this.client = client;
    this.runId = runId;
    this.options = options;
    this.persist = options.persist ?? true;
    let state = options.state ?? null;
    if (!state && options.after === undefined && this.persist) state = client.loadState(runId);
    if (!state) state = { ...initialState(runId), lastSeq: options.after ?? 0 };
    this.state = state;
    this.closed = false;
    this._source = null;
    this._timer = null;
    this._saveTimer = null;
    this._delay = client.retryMs;
    this._resyncing = null;
    this._queue = []; // events received, not yet applied (see _flush)
    this.done = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.done.catch(() => {}); // a caller that never awaits `done` gets onError instead
    this._onPageHide = () => this.save();
    globalThis.addEventListener?.("pagehide", this._onPageHide);
    if (state.done) queueMicrotask(() => this._finish());
    else this._connect();
  }

  /** The seq of the last event applied (the resume cursor). */
  get cursor() {
    return this.state.lastSeq;
  }

  /** Persist {cursor, state} now (also done every 100 ms while events arrive, on pagehide and on close). */
  save() {
    if (this._saveTimer) {
      clearTimeout(this._saveTimer);
      this._saveTimer = null;
    }
    if (this.persist) this.client.saveState(this.state);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this._teardown();
    this.save();
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
  }

  _teardown() {
    if (this._source) {
      this._source.close();
      this._source = null;
    }
    if (this._timer) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  _connect() {
    if (this.closed) return;
    if (this.options.catchUp && !this._caughtUp && this.client.fetch) {
      this._catchUp();
      return;
    }
    const ES = this.client.EventSource;
    if (!ES) {
      this._fail(new OutlastError("no EventSource here: pass {EventSource} to createClient (e.g. from the 'eventsource' package)", {
        code: "no_eventsource",
      }));
      return;
    }
    const source = new ES(this.client.eventsUrl(this.runId, this.state.lastSeq));
    this._source = source;
    const onMessage = (message) => this._onMessage(source, message);
    for (const type of EVENT_TYPES) source.addEventListener(type, onMessage);
    source.addEventListener("message", onMessage);
    source.addEventListener("open", () => {
      this._delay = this.client.retryMs;
    });
    source.addEventListener("error", () => {
      // CONNECTING: the EventSource reconnects by itself, with Last-Event-ID. CLOSED: the
      // server refused the stream (a non-2xx answer); find out why before trying again.
      if (source === this._source && source.readyState === 2) this._refused();
    });
  }

  _onMessage(source, message) {
    if (source !== this._source || this.closed) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!this.options.onEvent) {
      // Nobody needs the state after each event: apply what arrives together in one batch
      // (a catch-up of thousands of events costs one state change, not thousands).
      this._queue.push(event);
      if (this._queue.length === 1) setTimeout(() => this._flush(source), 0);
      return;
    }
    const before = this.state;
    const after = reduce(before, event);
    if (after === before) return; // a seq already applied
    this.state = after;
    this.options.onEvent(event, after);
    this._applied(after);
  }

  // History in one NDJSON response, reduced as one batch, then EventSource from the new cursor
  // (a page opening a 10,000-event run skips 10,000 message dispatches). Once per stream: an
  // EventSource reconnect resumes with Last-Event-ID, a refused one from the cursor.
  async _catchUp() {
    this._caughtUp = true;
    try {
      const events = await this.client.readEvents(this.runId, this.state.lastSeq);
      if (this.closed) return;
      const after = this.options.onEvent ? events.reduce((s, e) => {
        const next = reduce(s, e);
        if (next !== s) this.options.onEvent(e, next);
        return next;
      }, this.state) : reduceAll(this.state, events);
      if (after !== this.state) this._applied(after);
    } catch {
      // Whatever failed (a 404, the network), the EventSource path finds out and reports it.
    }
    if (!this.closed && !this.state.done) this._connect(); // (a done state is finishing)
  }

  _flush(source) {
    const events = this._queue;
    this._queue = [];
    if (source !== this._source || this.closed || !events.length) return;
    const before = this.state;
    const after = reduceAll(before, events);
    if (after !== before) this._applied(after);
  }

  _applied(after) {
    this.state = after;
    this.options.onState?.(after);
    if (after.done) {
      this._finish();
      return;
    }
    if (after.needsSnapshot) this._resync();
    if (this.persist && !this._saveTimer) this._saveTimer = setTimeout(() => this.save(), SAVE_EVERY_MS);
  }

  async _finish() {
    this._teardown(); // later messages are ignored; `closed` waits for a pending snapshot
    if (this.state.needsSnapshot) await this._resync();
    if (this.closed) return; // the snapshot failed for good: _fail has rejected `done`
    this.save();
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    this.closed = true;
    this.options.onEnd?.(this.state);
    this._resolve(this.state);
  }

  _fail(error) {
    if (this.closed) return;
    this.close();
    this.options.onError?.(error);
    this._reject(error);
  }

  // Objects as of a snapshot, after a gap or a patch that did not apply. Concurrent callers
  // share one request; a failed request leaves needsSnapshot set, so the next event asks again.
  _resync() {
    this._resyncing ??= (async () => {
      try {
        const detail = await this.client.getRun(this.runId);
        if (this.closed) return;
        this.state = applySnapshot(this.state, detail);
        this.options.onState?.(this.state);
      } catch (error) {
        if (!(error instanceof OutlastError && error.code === "network_error")) this._fail(error);
      } finally {
        this._resyncing = null;
      }
    })();
    return this._resyncing;
  }

  async _refused() {
    this._teardown();
    let detail;
    try {
      detail = await this.client.getRun(this.runId);
    } catch (error) {
      if (error instanceof OutlastError && [400, 401, 403, 404].includes(error.status)) {
        this.client.forgetState(this.runId);
        this._fail(error);
        return;
      }
      this._retry(); // down or restarting: try again later
      return;
    }
    if (this.closed) return;
    if (detail.last_seq < this.state.lastSeq) {
      // Our cursor is past the run's end (a saved state from another server, say): start over.
      this.state = initialState(this.runId);
      this.client.forgetState(this.runId);
    }
    this._retry();
  }

  _retry() {
    if (this.closed) return;
    const delay = this._delay;
    this._delay = Math.min(this._delay * 2, 5000);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._connect();
    }, delay);
  }
}

// ---------------------------------------------------------------- shared watches (React & co.)

/** See OutlastClient.watch. `subscribe(listener)` returns an unsubscribe function; `getState()` the current state. */
export class RunWatch {
  constructor(client, runId) {
    this.client = client;
    this.runId = runId;
    this.state = client.loadState(runId) ?? initialState(runId);
    this.error = null;
    this.stream = null;
    this._listeners = new Set();
    this._closeTimer = null;
    this.done = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.done.catch(() => {});
    this.subscribe = this.subscribe.bind(this);
    this.getState = this.getState.bind(this);
  }

  getState() {
    return this.state;
  }

  subscribe(listener) {
    this._listeners.add(listener);
    if (this._closeTimer) {
      clearTimeout(this._closeTimer);
      this._closeTimer = null;
    }
    if (!this.stream) this._open();
    return () => {
      this._listeners.delete(listener);
      // Closed a tick later: React's StrictMode unsubscribes and subscribes again at once.
      if (this._listeners.size === 0 && !this._closeTimer) {
        this._closeTimer = setTimeout(() => this._close(), 0);
      }
    };
  }

  _open() {
    this.stream = this.client.streamRun(this.runId, {
      state: this.state,
      onState: (state) => this._set(state),
      onError: (error) => {
        this.error = error;
        this._set({ ...this.state });
        this._reject(error);
      },
    });
    this.stream.done.then((state) => this._resolve(state), () => {});
  }

  _set(state) {
    this.state = state;
    for (const listener of [...this._listeners]) listener();
  }

  _close() {
    this._closeTimer = null;
    if (this._listeners.size) return;
    this.stream?.close();
    this.stream = null;
    if (this.client._watches.get(this.runId) === this) this.client._watches.delete(this.runId);
  }
}
