// The runs list: newest first, filtered by workflow and status, cursor pages, refreshed live.
import { h, clear, duration, when, money, tokens, badge } from "./dom.js";

const STATUSES = ["", "queued", "running", "waiting", "completed", "failed", "cancelled"];
const REFRESH_MS = 1500;

export function runsView(root, { client, onAuthError, workflow, status }) {
  let cursors = [null]; // cursors[i] opens page i
  let page = 0;
  let timer = null;
  let gone = false;

  const wfSelect = h("select", { id: "f-workflow", name: "workflow" }, h("option", { value: "" }, "All workflows"));
  const stSelect = h("select", { id: "f-status", name: "status" },
    STATUSES.map((s) => h("option", { value: s }, s || "All statuses")));
  stSelect.value = status;
  const body = h("tbody");
  const table = h("table", { class: "runs" },
    h("caption", { class: "sr-only" }, "Runs, newest first"),
    h("thead", {}, h("tr", {},
      ["Run", "Workflow", "Status", "Started", "Duration", "Attempts", "Tokens", "Cost"].map((c) => h("th", { scope: "col" }, c)))),
    body);
  const prev = h("button", { type: "button", onclick: () => go(page - 1) }, "← Newer");
  const next = h("button", { type: "button", onclick: () => go(page + 1) }, "Older →");
  const info = h("span", { class: "muted", "aria-live": "polite" });

  root.append(
    h("div", { class: "bar" },
      h("h1", {}, "Runs"),
      h("a", { class: "button", href: "#/start" }, "Start a run")),
    h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "f-workflow" }, "Workflow"), wfSelect,
      h("label", { for: "f-status" }, "Status"), stSelect),
    h("div", { class: "scroll-x" }, table),
    h("div", { class: "pager" }, prev, info, next),
  );

  const onFilter = () => {
    const q = new URLSearchParams();
    if (wfSelect.value) q.set("workflow", wfSelect.value);
    if (stSelect.value) q.set("status", stSelect.value);
    history.replaceState(null, "", `#/runs${q.toString() ? `?${q}` : ""}`);
    cursors = [null];
    go(0);
  };
  wfSelect.addEventListener("change", onFilter);
  stSelect.addEventListener("change", onFilter);

  client.listWorkflows().then((list) => {
    for (const wf of list.workflows) wfSelect.append(h("option", { value: wf.name }, wf.name));
    if (workflow && !list.workflows.some((w) => w.name === workflow)) wfSelect.append(h("option", { value: workflow }, workflow));
    wfSelect.value = workflow;
  }, (err) => onAuthError(err));

  function row(run) {
    const end = run.finished_at ?? (["completed", "failed", "cancelled"].includes(run.status) ? run.updated_at : Date.now() / 1000);
    return h("tr", {},
      h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.run_id)}`, class: "mono" }, run.run_id)),
      h("td", {}, run.workflow, h("span", { class: "muted small" }, ` ${run.version}`)),
      h("td", {}, badge(run.status)),
      h("td", {}, when(run.created_at)),
      h("td", {}, duration(end - run.created_at)),
      h("td", { class: "num" }, String(run.attempt)),
      h("td", { class: "num" }, tokens(run.tokens)),
      h("td", { class: "num" }, money(run.cost)));
  }

  async function load() {
    clearTimeout(timer);
    let result;
    try {
      result = await client.listRuns({ workflow: wfSelect.value || workflow || undefined, status: stSelect.value || undefined, limit: 25, cursor: cursors[page] ?? undefined });
    } catch (err) {
      if (!onAuthError(err)) info.textContent = `Could not list runs: ${err.message}`;
      return;
    }
    if (gone) return;
    clear(body);
    if (!result.runs.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No runs match.")));
    for (const run of result.runs) body.append(row(run));
    cursors[page + 1] = result.next_cursor;
    prev.disabled = page === 0;
    next.disabled = !result.next_cursor;
    info.textContent = `Page ${page + 1}`;
    timer = setTimeout(load, REFRESH_MS); // live: statuses, durations and new runs
  }

  function go(p) {
    if (p < 0 || (p > 0 && !cursors[p])) return;
    page = p;
    load();
  }

  load();
  return { unmount() { gone = true; clearTimeout(timer); } };
}
