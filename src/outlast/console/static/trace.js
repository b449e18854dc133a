// The trace waterfall: every span (steps, waits, children) on a time axis, nested, with retries
// and fallbacks marked; rows are virtualised (only the visible ones exist), so a 2,000-step
// trace costs what 30 rows cost. Click (or Enter on) a row for its detail panel.
import { h, clear, duration, json, money, badge } from "./dom.js";

const ROW = 26; // px, fixed: the virtual list computes positions from it
const OVERSCAN = 8;

/** Spans as rows in call order, each with its depth. */
export function flatten(spans) {
  const rows = [];
  const walk = (list, depth) => {
    for (const span of list) {
      rows.push({ span, depth });
      if (span.children?.length) walk(span.children, depth + 1);
    }
  };
  walk(spans, 0);
  return rows;
}

export function waterfall(container, { onSelect }) {
  let rows = [];
  let t0 = 0;
  let t1 = 1;
  let selected = null;
  const axis = h("div", { class: "axis", "aria-hidden": "true" });
  const inner = h("div", { class: "wf-inner", role: "presentation" });
  const viewport = h("div", {
    class: "wf-viewport", tabindex: "0", role: "listbox", "aria-label": "Trace: steps on a time axis (arrow keys move, Enter opens)",
  }, inner);
  const count = h("p", { class: "muted small" });
  container.append(count, axis, viewport);
  viewport.addEventListener("scroll", () => paint());
  viewport.addEventListener("keydown", (e) => {
    if (!rows.length) return;
    let i = rows.findIndex((r) => r.span.step_id === selected);
    if (e.key === "ArrowDown") i = Math.min(rows.length - 1, i + 1);
    else if (e.key === "ArrowUp") i = Math.max(0, i - 1);
    else if (e.key === "Home") i = 0;
    else if (e.key === "End") i = rows.length - 1;
    else if (e.key === "Enter" && i >= 0) { onSelect(rows[i].span); return; }
    else return;
    e.preventDefault();
    select(rows[i].span, false);
    const top = i * ROW;
    if (top < viewport.scrollTop) viewport.scrollTop = top;
    else if (top + ROW > viewport.scrollTop + viewport.clientHeight) viewport.scrollTop = top + ROW - viewport.clientHeight;
    paint();
  });

  function select(span, open = true) {
    selected = span.step_id;
    viewport.setAttribute("aria-activedescendant", rowId(span));
    if (open) onSelect(span);
    paint();
  }

  function rowId(span) {
    return `wf-${span.step_id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  }

  function bar(span) {
    const end = span.ended_at ?? Date.now() / 1000;
    const left = ((span.started_at - t0) / (t1 - t0)) * 100;
    const width = Math.max(0.4, ((end - span.started_at) / (t1 - t0)) * 100);
    const kind = span.kind === "step" ? "" : ` k-${span.kind}`;
    const marks = [];
    if (span.retries?.length) marks.push(h("span", { class: "mark retry", title: `${span.retries.length} retr${span.retries.length > 1 ? "ies" : "y"}` }, `↻${span.retries.length}`));
    if (span.fallback) marks.push(h("span", { class: "mark fallback", title: "answered by its fallback" }, "fallback"));
    return h("div", { class: `wf-bar s-${span.status}${kind}`, style: { left: `${left}%`, width: `${Math.min(width, 100 - left)}%` } }, marks);
  }

  function paint() {
    const height = viewport.clientHeight || 400;
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((viewport.scrollTop + height) / ROW) + OVERSCAN);
    clear(inner);
    inner.style.height = `${rows.length * ROW}px`;
    viewport.style.height = `${Math.max(3, Math.min(rows.length, 16)) * ROW + 2}px`; // no empty acres
    for (let i = first; i < last; i++) {
      const { span, depth } = rows[i];
      const el = h("div", {
        class: `wf-row${span.step_id === selected ? " selected" : ""}`, id: rowId(span), role: "option",
        "aria-selected": span.step_id === selected ? "true" : "false", style: { top: `${i * ROW}px` },
        onclick: () => select(span),
      },
        h("span", { class: "wf-name", style: { paddingLeft: `${depth * 14 + 4}px` }, title: span.step_id }, span.name),
        h("span", { class: "wf-track" }, bar(span)),
        h("span", { class: "wf-dur" }, duration((span.ended_at ?? Date.now() / 1000) - span.started_at)));
      inner.append(el);
    }
  }

  return {
    update(spans) {
      rows = flatten(spans);
      t0 = Infinity;
      t1 = -Infinity;
      for (const { span } of rows) {
        t0 = Math.min(t0, span.started_at);
        t1 = Math.max(t1, span.ended_at ?? Date.now() / 1000);
      }
      if (!rows.length) { t0 = 0; t1 = 1; }
      if (t1 - t0 < 0.001) t1 = t0 + 0.001;
      count.textContent = `${rows.length} span${rows.length === 1 ? "" : "s"} over ${duration(t1 - t0)}`;
      clear(axis);
      for (let k = 0; k <= 4; k++) axis.append(h("span", { style: { left: `${k * 25}%` } }, duration(((t1 - t0) * k) / 4)));
      paint();
    },
    rowCount: () => rows.length,
  };
}

/** The detail panel of one span: masked inputs, output, error, retries, tokens and cost. */
export function spanDetail(panel, span, stepText) {
  clear(panel);
  const usage = span.usage;
  const child = span.args?.child_run_id ?? span.result?.child_run_id ?? null;
  const dl = h("dl", { class: "kv" },
    h("dt", {}, "Step"), h("dd", { class: "mono" }, span.step_id),
    h("dt", {}, "Kind"), h("dd", {}, span.kind),
    h("dt", {}, "Status"), h("dd", {}, badge(span.status)),
    h("dt", {}, "Attempt"), h("dd", {}, String(span.attempt)),
    h("dt", {}, "Tries"), h("dd", {}, String(span.tries)),
    h("dt", {}, "Duration"), h("dd", {}, duration((span.ended_at ?? Date.now() / 1000) - span.started_at)),
    usage ? [h("dt", {}, "Tokens"), h("dd", {}, `${usage.tokens_in} in · ${usage.tokens_out} out`),
      h("dt", {}, "Cost"), h("dd", {}, money(usage.cost))] : null,
    span.fallback ? [h("dt", {}, "Fallback"), h("dd", {}, "yes: the result is the fallback's")] : null,
    child ? [h("dt", {}, "Child run"), h("dd", {}, h("a", { href: `#/runs/${encodeURIComponent(child)}`, class: "mono" }, child))] : null);
  panel.append(h("div", {},
    h("h3", { id: "detail-title", tabindex: "-1" }, span.name), dl,
    h("h4", {}, "Inputs (secrets masked)"), h("pre", { class: "json" }, json(span.args)),
    stepText ? [h("h4", {}, "Streamed output"), h("pre", { class: "json" }, stepText)] : null,
    span.result !== null && span.result !== undefined ? [h("h4", {}, "Output"), h("pre", { class: "json" }, json(span.result))] : null,
    span.error ? [h("h4", {}, "Error"), h("pre", { class: "json error" }, json(span.error))] : null,
    span.retries?.length ? [h("h4", {}, "Retries"), h("pre", { class: "json" }, json(span.retries))] : null));
  panel.hidden = false;
  panel.querySelector("#detail-title").focus();
}
