// Start a run: pick a workflow, fill the form generated from its input schema (or raw JSON).
import { h, clear } from "./dom.js";
import { schemaForm } from "./form.js";

export function startView(root, { client, onAuthError, workflow }) {
  const select = h("select", { id: "s-workflow" });
  const desc = h("p", { class: "muted" });
  const formBox = h("div");
  const rawToggle = h("input", { type: "checkbox", id: "s-raw" });
  const message = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit" }, "Start run");
  const form = h("form", { class: "card", "aria-labelledby": "s-title", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "s-workflow" }, "Workflow"), select),
    desc, formBox,
    h("div", { class: "field check" }, rawToggle, h("label", { for: "s-raw" }, "Edit as raw JSON")),
    message, submit);
  root.append(h("h1", { id: "s-title" }, "Start a run"), form);
  let workflows = [];
  let generated = null;

  function show(name) {
    const wf = workflows.find((w) => w.name === name);
    clear(formBox);
    message.textContent = "";
    rawToggle.checked = false;
    if (!wf) return;
    desc.textContent = wf.description || "";
    generated = schemaForm(formBox, wf.input_schema, { idPrefix: "in" });
  }

  select.addEventListener("change", () => {
    history.replaceState(null, "", `#/start/${encodeURIComponent(select.value)}`);
    show(select.value);
  });
  rawToggle.addEventListener("change", () => generated?.setRaw(rawToggle.checked));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!generated) return;
    message.textContent = "";
    let input;
    try {
      input = generated.value();
    } catch (err) {
      message.textContent = err.message;
      return;
    }
    if (input === null || typeof input !== "object" || Array.isArray(input)) {
      message.textContent = "The input must be a JSON object.";
      return;
    }
    submit.disabled = true;
    try {
      const started = await client.startRun(select.value, input);
      location.hash = `#/runs/${encodeURIComponent(started.run_id)}`;
    } catch (err) {
      if (onAuthError(err)) return;
      const placed = err.status === 422 ? generated.setErrors(err.details, 1) : 0;
      message.textContent = placed ? "Some fields are not valid: see the messages next to them." : err.message;
    } finally {
      submit.disabled = false;
    }
  });

  client.listWorkflows().then((list) => {
    workflows = list.workflows;
    if (!workflows.length) {
      select.append(h("option", { value: "" }, "No workflows: start a worker"));
      return;
    }
    for (const wf of workflows) select.append(h("option", { value: wf.name }, wf.name));
    select.value = workflow && workflows.some((w) => w.name === workflow) ? workflow : workflows[0].name;
    show(select.value);
  }, (err) => { if (!onAuthError(err)) message.textContent = err.message; });
  return { unmount() {} };
}
