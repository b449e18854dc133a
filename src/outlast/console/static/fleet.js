// Workers & deploys: live workers (version, slots, draining), the active version, the queue
// depth per version, and promote / rollback when this key may (GET /v1/deploy says so).
import { h, clear, badge, toast } from "./dom.js";

const REFRESH_MS = 2000;

export function fleetView(root, { client, onAuthError }) {
  let timer = null;
  let gone = false;
  const workers = h("tbody", { id: "workers" });
  const versions = h("tbody", { id: "versions" });
  const active = h("p", { id: "active-version" });
  const rollback = h("button", { type: "button", id: "rollback", hidden: true }, "Roll back");
  const message = h("p", { class: "error", role: "alert" });
  root.append(
    h("h1", {}, "Workers & deploys"),
    h("section", { class: "card", "aria-labelledby": "dep-title" },
      h("div", { class: "bar" }, h("h2", { id: "dep-title" }, "Versions"), rollback), active, message,
      h("div", { class: "scroll-x" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Version", "State", "Workers", "In flight", "Queued", ""].map((c) => h("th", { scope: "col" }, c)))),
        versions))),
    h("section", { class: "card", "aria-labelledby": "wk-title" }, h("h2", { id: "wk-title" }, "Live workers"),
      h("div", { class: "scroll-x" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Worker", "Host", "Version", "Slots in use", "State", "Heartbeat"].map((c) => h("th", { scope: "col" }, c)))),
        workers))),
  );

  async function change(action, version) {
    message.textContent = "";
    try {
      const r = action === "promote" ? await client.promote(version) : await client.rollback();
      toast(`Active version: ${r.active}`);
      load();
    } catch (err) {
      if (!onAuthError(err)) message.textContent = err.message;
    }
  }
  rollback.addEventListener("click", () => change("rollback"));

  async function load() {
    clearTimeout(timer);
    let fleet;
    let deploy;
    try {
      [fleet, deploy] = await Promise.all([client.listWorkers(), client.getDeploy()]);
    } catch (err) {
      if (!onAuthError(err)) message.textContent = err.message;
      return;
    }
    if (gone) return;
    active.textContent = deploy.active ? `New runs go to version ${deploy.active}.` : "No version promoted yet: runs go to the version they name.";
    rollback.hidden = !deploy.can_deploy;
    clear(versions);
    for (const v of deploy.versions) {
      const promote = deploy.can_deploy && v.version !== deploy.active
        ? h("button", { type: "button", class: "small", "aria-label": `Promote ${v.version}`, onclick: () => change("promote", v.version) }, "Promote")
        : null;
      versions.append(h("tr", {}, h("td", { class: "mono" }, v.version), h("td", {}, badge(v.state)),
        h("td", { class: "num" }, String(v.workers)), h("td", { class: "num" }, String(v.in_flight)),
        h("td", { class: "num" }, String(v.queued)), h("td", {}, promote)));
    }
    clear(workers);
    if (!fleet.workers.length) workers.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No live workers.")));
    for (const w of fleet.workers) {
      workers.append(h("tr", {}, h("td", { class: "mono" }, w.id), h("td", {}, `${w.host} (${w.pid})`),
        h("td", { class: "mono" }, w.version),
        h("td", {}, h("meter", { min: "0", max: String(w.slots || 1), value: String(w.running), "aria-label": `${w.running} of ${w.slots} slots` }), ` ${w.running} / ${w.slots}`),
        h("td", {}, badge(w.draining ? "draining" : "live")), h("td", {}, `${w.heartbeat_age.toFixed(1)} s ago`)));
    }
    timer = setTimeout(load, REFRESH_MS);
  }
  load();
  return { unmount() { gone = true; clearTimeout(timer); } };
}
