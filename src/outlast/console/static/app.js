// The console's entry: key handling, the browser client, and a router on the URL's fragment.
//   #/runs?workflow=&status=   runs list          #/start/<workflow>   start a run
//   #/runs/<id>                one run            #/workers            workers & deploys
import { createClient, OutlastError } from "/client.js";
import { h, clear } from "./dom.js";
import { runsView } from "./runs.js";
import { startView } from "./start.js";
import { runView } from "./run.js";
import { fleetView } from "./fleet.js";

const KEY = "outlast:console:key";
const main = document.getElementById("main");
let current = null; // the mounted view's {unmount}
let client = makeClient(sessionStorage.getItem(KEY));

function makeClient(token) {
  return createClient({ token: token || null });
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "runs" && parts[1]) return { view: runView, name: "runs", args: { runId: parts[1] } };
  if (parts[0] === "start") return { view: startView, name: "start", args: { workflow: parts[1] || null } };
  if (parts[0] === "workers") return { view: fleetView, name: "workers", args: {} };
  return { view: runsView, name: "runs", args: { workflow: params.get("workflow") || "", status: params.get("status") || "" } };
}

function navigate() {
  current?.unmount?.();
  current = null;
  const { view, name, args } = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clear(main);
  current = view(main, { client, onAuthError, ...args });
}

/** A 401 anywhere: ask for a key (the page keeps it in this tab's sessionStorage only). */
function onAuthError(error) {
  if (!(error instanceof OutlastError) || error.status !== 401) return false;
  current?.unmount?.();
  current = null;
  clear(main);
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const message = h("p", { class: "error", role: "alert" }, sessionStorage.getItem(KEY) ? error.message : "");
  const form = h("form", { class: "card narrow", "aria-labelledby": "key-title" },
    h("h1", { id: "key-title" }, "API key"),
    h("p", {}, "This API needs a key. It stays in this tab (sessionStorage) and is sent only to this API."),
    h("label", { for: "api-key" }, "Key"), input, message,
    h("button", { type: "submit" }, "Continue"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const candidate = makeClient(input.value.trim());
    try {
      await candidate.listWorkflows();
    } catch (err) {
      message.textContent = err.message;
      return;
    }
    sessionStorage.setItem(KEY, input.value.trim());
    client = candidate;
    document.getElementById("signout").hidden = false;
    navigate();
  });
  main.append(form);
  input.focus();
  return true;
}

document.getElementById("signout").hidden = !sessionStorage.getItem(KEY);
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  client = makeClient(null);
  document.getElementById("signout").hidden = true;
  navigate();
});
window.addEventListener("hashchange", navigate);
navigate();
