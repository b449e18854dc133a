// One run: live output per step, status line, progress, objects, input requests as forms,
// cancel, attempt history and the trace waterfall. Everything live comes from the browser
// client's streamRun, which resumes from the cursor it saved in sessionStorage: a reload shows
// the full history and continues after the last seq it rendered, with no duplicates.
import { h, clear, duration, when, money, json, badge, perFrame, toast } from "./dom.js";
import { schemaForm } from "./form.js";
import { waterfall, spanDetail } from "./trace.js";

const TRACE_EVERY_MS = 1000;
const ENDED = new Set(["completed", "failed", "cancelled"]);

export function runView(root, { client, onAuthError, runId }) {
  const t0 = performance.now();
  let state = null;
  let trace = null;
  let traceTimer = null;
  let traceBusy = false;
  let traceKey = null;
  let traceFinal = false; // the trace of an ended run: no need to read it again
  let lastOutput = null;
  let lastStep = null;
  const forms = new Map(); // wait step → its form element
  let gone = false;

  const status = h("span", { id: "run-status" });
  const statusLine = h("p", { id: "status-line", class: "status-line", "aria-live": "polite" });
  const meta = h("p", { class: "muted small" });
  const cancel = h("button", { type: "button", id: "cancel", class: "danger" }, "Cancel run");
  const prog = h("progress", { id: "progress", max: "1", value: "0", "aria-labelledby": "progress-label" });
  const progLabel = h("span", { id: "progress-label", class: "small" });
  const progBox = h("div", { class: "progress", hidden: true }, prog, progLabel);
  const waits = h("section", { id: "waits", "aria-label": "Waiting for", hidden: true });
  const stepFilter = h("select", { id: "step-filter" }, h("option", { value: "" }, "All steps"));
  const output = h("pre", { id: "output", class: "output", tabindex: "0", "aria-label": "Output" });
  const outcome = h("div", { id: "outcome" });
  const objects = h("div", { id: "objects" });
  const attempts = h("tbody", { id: "attempts" });
  const usage = h("p", { id: "usage", class: "small" });
  const wfBox = h("div", { id: "waterfall", class: "waterfall" });
  const detail = h("aside", { id: "detail", class: "detail card", hidden: true, "aria-labelledby": "detail-title" });

  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("span", { class: "mono" }, runId)),
    h("div", { class: "bar" }, h("h1", {}, h("span", { id: "run-workflow" }, "Run"), " ", status), cancel),
    meta, statusLine, progBox, waits,
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "out-title" },
        h("div", { class: "bar" }, h("h2", { id: "out-title" }, "Output"),
          h("label", { for: "step-filter", class: "sr-only" }, "Show output of"), stepFilter),
        output, outcome),
      h("section", { class: "card", "aria-labelledby": "obj-title" }, h("h2", { id: "obj-title" }, "Objects"), objects)),
    h("section", { class: "card", "aria-labelledby": "att-title" },
      h("h2", { id: "att-title" }, "Attempts"), usage,
      h("div", { class: "scroll-x" }, h("table", {},
        h("thead", {}, h("tr", {}, ["#", "Worker", "Started", "Ended", "Outcome", "Why"].map((c) => h("th", { scope: "col" }, c)))),
        attempts))),
    h("section", { class: "card", "aria-labelledby": "tr-title" },
      h("h2", { id: "tr-title" }, "Trace"), h("div", { class: "trace-layout" }, wfBox, detail)),
  );

  const wf = waterfall(wfBox, {
    onSelect: (span) => spanDetail(detail, span, state?.steps?.[span.step_id]?.text || ""),
  });

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const r = await client.cancelRun(runId);
      toast(`Run ${r.status}`);
    } catch (err) {
      if (!onAuthError(err)) toast(err.message);
    }
  });
  stepFilter.addEventListener("change", () => { lastOutput = null; render(); });

  function renderWaits() {
    const pending = (state.waits || []).filter((w) => w.kind === "input" || w.kind === "sleep" || w.kind === "child");
    const live = new Set(pending.map((w) => w.step));
    for (const [step, el] of forms) if (!live.has(step)) { el.remove(); forms.delete(step); }
    for (const w of pending) {
      if (forms.has(w.step)) continue;
      let el;
      if (w.kind === "input") el = inputForm(w);
      else if (w.kind === "sleep") el = h("div", { class: "card wait" }, `Sleeping until ${when(w.deadline)}`);
      else el = h("div", { class: "card wait" }, "Waiting for child run ",
        w.child_run_id ? h("a", { href: `#/runs/${encodeURIComponent(w.child_run_id)}`, class: "mono" }, w.child_run_id) : "…");
      forms.set(w.step, el);
      waits.append(el);
    }
    waits.hidden = forms.size === 0;
  }

  function inputForm(w) {
    const box = h("div", {});
    const message = h("p", { class: "error", role: "alert" });
    const send = h("button", { type: "submit" }, "Send");
    const form = h("form", { class: "card wait input-request", "aria-label": `Input ${w.key}`, "data-key": w.key },
      h("h2", {}, "Input requested: ", h("span", { class: "mono" }, w.key)),
      w.prompt ? h("p", { class: "prompt" }, w.prompt) : null,
      w.deadline ? h("p", { class: "muted small" }, `Times out ${when(w.deadline)}`) : null,
      box, message, send);
    const schema = w.schema || (w.secret ? { type: "string", title: "Value" } : { title: "Value (JSON)" });
    const f = schemaForm(box, schema, { secret: w.secret, idPrefix: `w-${w.key}` });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      message.textContent = "";
      let value;
      try { value = f.value(); } catch (err) { message.textContent = err.message; return; }
      send.disabled = true;
      try {
        await client.sendInput(runId, w.key, value);
        toast(`Input ${w.key} sent`);
        form.replaceChildren(h("p", {}, `Input ${w.key} sent.`));
      } catch (err) {
        if (onAuthError(err)) return;
        const placed = err.status === 422 ? f.setErrors(err.details) : 0;
        message.textContent = placed ? "The value is not valid: see the messages next to the fields." : err.message;
        send.disabled = false;
      }
    });
    return form;
  }

  // The step picker's options are built when it is about to open (a 2,000-step run would
  // otherwise rebuild 2,000 options on every frame while it catches up).
  function fillStepFilter() {
    const ids = state.stepOrder.filter((id) => state.steps[id].text);
    if (ids.length === stepFilter.options.length - 1) return;
    const chosen = stepFilter.value;
    clear(stepFilter).append(h("option", { value: "" }, "All steps"), ...ids.map((id) => h("option", { value: id }, id)));
    stepFilter.value = ids.includes(chosen) ? chosen : "";
  }
  stepFilter.addEventListener("focus", fillStepFilter);
  stepFilter.addEventListener("pointerdown", fillStepFilter);

  function renderOutput() {
    const text = stepFilter.value ? state.outputBySteps[stepFilter.value] || "" : state.output;
    if (text !== lastOutput || stepFilter.value !== lastStep) {
      const stick = output.scrollTop + output.clientHeight >= output.scrollHeight - 8;
      output.textContent = text;
      if (stick) output.scrollTop = output.scrollHeight;
      lastOutput = text;
      lastStep = stepFilter.value;
    }
  }

  function renderObjects() {
    const names = Object.keys(state.objects || {});
    clear(objects);
    if (!names.length) objects.append(h("p", { class: "muted" }, "None published."));
    for (const name of names) objects.append(h("h3", { class: "mono" }, name), h("pre", { class: "json", "data-object": name }, json(state.objects[name])));
  }

  function render() {
    if (gone || !state) return;
    document.getElementById("run-workflow").textContent = state.workflow || "Run";
    clear(status).append(badge(state.status));
    meta.textContent = `attempt ${state.attempt} · seq ${state.lastSeq}${state.version ? ` · version ${state.version}` : ""}`;
    statusLine.textContent = state.statusMessage || "";
    cancel.disabled = state.done;
    const p = state.progress;
    progBox.hidden = !p;
    if (p) {
      prog.max = p.total || 1;
      prog.value = p.total ? p.done : 0;
      if (!p.total) prog.removeAttribute("value");
      progLabel.textContent = `${p.label ? `${p.label}: ` : ""}${p.done}${p.total ? ` / ${p.total}` : ""}`;
    }
    renderWaits();
    renderOutput();
    renderObjects();
    clear(outcome);
    if (state.done) {
      outcome.append(state.error
        ? h("div", {}, h("h3", {}, "Error"), h("pre", { class: "json error", id: "run-error" }, json(state.error)))
        : h("div", {}, h("h3", {}, "Result"), h("pre", { class: "json", id: "run-result" }, json(state.result))));
    }
    root.dataset.done = state.done ? "true" : "false";
    if (state.done && !root.dataset.streamed) root.dataset.streamed = String(Math.round(performance.now() - t0));
    scheduleTrace();
    markRendered();
  }
  const renderSoon = perFrame(render);

  function renderTrace() {
    if (!trace || gone) return;
    wf.update(trace.spans);
    clear(attempts);
    for (const a of trace.attempts) {
      attempts.append(h("tr", {},
        h("td", { class: "num" }, String(a.attempt)), h("td", { class: "mono" }, a.worker || "–"),
        h("td", {}, when(a.started_at)), h("td", {}, a.ended_at ? `${when(a.ended_at)} (${duration(a.ended_at - a.started_at)})` : "–"),
        h("td", {}, badge(a.outcome)), h("td", {}, a.reason || "")));
    }
    const u = trace.usage;
    usage.textContent = u.tokens_in || u.tokens_out ? `LLM: ${u.tokens_in} tokens in, ${u.tokens_out} out, ${money(u.cost)}` : "";
    markRendered();
  }

  // Once the final state and the final trace are both on the page: how long it took (the test reads it).
  function markRendered() {
    if (state?.done && traceFinal && !root.dataset.rendered) {
      root.dataset.rendered = String(Math.round(performance.now() - t0));
      performance.mark("outlast:run-rendered");
    }
  }

  const traceKeyOf = (s) => `${s.stepOrder.length}:${s.attempt}:${s.status}:${s.waits.length}:${s.lastSeq}`;

  // The trace is a snapshot (GET /trace): re-read when steps or attempts changed, at most once a second.
  function scheduleTrace() {
    if (traceFinal) return;
    const key = traceKeyOf(state);
    if (key === traceKey || traceTimer || traceBusy) return;
    const wait = trace && !state.done ? TRACE_EVERY_MS : 0;
    traceTimer = setTimeout(async () => {
      traceTimer = null;
      traceBusy = true;
      const asOf = key;
      try {
        trace = await client.getTrace(runId);
        traceKey = asOf;
        traceFinal = ENDED.has(trace.attempts.at(-1)?.outcome);
        if (traceFinal) root.dataset.traced = String(Math.round(performance.now() - t0));
        renderTrace();
      } catch (err) {
        onAuthError(err);
      } finally {
        traceBusy = false;
      }
      if (!gone && state && traceKeyOf(state) !== traceKey) scheduleTrace();
    }, wait);
  }

  const stream = client.streamRun(runId, {
    catchUp: true,
    onState: (s) => { state = s; renderSoon(); },
    onEnd: (s) => { state = s; renderSoon(); },
    onError: (err) => {
      if (!onAuthError(err)) {
        clear(root).append(h("h1", {}, "Run not available"), h("p", { class: "error", role: "alert" }, err.message), h("a", { href: "#/runs" }, "Back to runs"));
      }
    },
  });
  state = stream.state;
  scheduleTrace(); // at once, alongside the stream: an ended run's trace is final already
  renderSoon();

  return {
    unmount() {
      gone = true;
      clearTimeout(traceTimer);
      stream.close();
    },
  };
}
