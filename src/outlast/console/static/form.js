// A form generated from a JSON Schema (workflow inputs, input requests), with a raw JSON mode.
// Strings, numbers, integers, booleans, enums, arrays, nested objects, $ref/$defs and
// optional (anyOf [X, null]) fields; anything else is edited as JSON. 422 errors from the API
// (`details: [{loc, msg}]`) are shown next to the field their loc names.
import { h, clear } from "./dom.js";

let uid = 0;

function resolve(schema, root) {
  let s = schema || {};
  for (let i = 0; i < 20 && s.$ref; i++) {
    const path = s.$ref.replace(/^#\//, "").split("/");
    let target = root;
    for (const p of path) target = target?.[p];
    s = { ...(target || {}), ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== "$ref")) };
  }
  const branches = s.anyOf || s.oneOf;
  if (branches) {
    const real = branches.filter((b) => b.type !== "null");
    if (real.length === 1) return { ...resolve(real[0], root), nullable: true, title: s.title ?? real[0].title, default: s.default, description: s.description };
  }
  return s;
}

function kindOf(s) {
  if (Array.isArray(s.enum)) return "enum";
  if (s.const !== undefined) return "enum";
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== "null") : s.type;
  if (t === "object" && s.properties) return "object";
  if (["string", "number", "integer", "boolean", "array"].includes(t)) return t;
  return "json";
}

/**
 * Build a form for `schema` into `container`. Returns {value(), setErrors(details), clearErrors(),
 * setRaw(on)}; value() throws an Error naming the field when a field cannot be read.
 */
export function schemaForm(container, schema, { secret = false, initial, idPrefix = "f" } = {}) {
  const root = schema || {};
  const fields = new Map(); // "a.b.0" → {errorEl, input}
  let raw = false;
  const tree = h("div", { class: "schema-form" });
  const rawArea = h("textarea", { id: `${idPrefix}-raw-${++uid}`, class: "mono", rows: 8, spellcheck: "false", "aria-label": "Value as JSON" });
  const rawError = h("p", { class: "error field-error", role: "alert" });
  const rawBox = h("div", { class: "raw", hidden: true }, rawArea, rawError);
  const top = build(resolve(root, root), [], initial, true);
  tree.append(top.el);
  container.append(tree, rawBox);

  function label(s, path) {
    return s.title || String(path[path.length - 1] ?? "value").replace(/_/g, " ");
  }

  function errorSlot(path) {
    const el = h("p", { class: "error field-error", id: `${idPrefix}-err-${++uid}`, role: "alert" });
    fields.set(path.join("."), { errorEl: el });
    return el;
  }

  function build(s, path, value, required) {
    const kind = kindOf(s);
    const id = `${idPrefix}-${++uid}`;
    const err = errorSlot(path);
    const help = s.description ? h("p", { class: "help", id: `${id}-help` }, s.description) : null;
    const described = [help ? `${id}-help` : null, err.id].filter(Boolean).join(" ");
    const start = value !== undefined ? value : s.default;
    const title = label(s, path);
    const mark = required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null;

    if (kind === "object") {
      const req = new Set(s.required || []);
      const children = Object.entries(s.properties).map(([name, sub]) => {
        const child = build(resolve(sub, root), [...path, name], start?.[name], req.has(name));
        return [name, child];
      });
      const body = children.map(([, c]) => c.el);
      const el = path.length === 0 ? h("div", {}, body, err) : h("fieldset", {}, h("legend", {}, title, mark), help, body, err);
      return {
        el,
        get() {
          const out = {};
          for (const [name, c] of children) {
            const v = c.get();
            if (v !== undefined) out[name] = v;
          }
          return out;
        },
      };
    }
    if (kind === "array") {
      const itemSchema = resolve(s.items || {}, root);
      const list = h("ol", { class: "items" });
      const items = [];
      const addItem = (v) => {
        const child = build(itemSchema, [...path, items.length], v, true);
        const entry = { child };
        const remove = h("button", { type: "button", class: "small", "aria-label": `Remove item from ${title}` }, "Remove");
        const li = h("li", {}, child.el, remove);
        remove.addEventListener("click", () => { items.splice(items.indexOf(entry), 1); li.remove(); });
        entry.li = li;
        items.push(entry);
        list.append(li);
      };
      for (const v of Array.isArray(start) ? start : []) addItem(v);
      const add = h("button", { type: "button", class: "small", onclick: () => addItem(undefined) }, `Add to ${title}`);
      return {
        el: h("fieldset", { class: "array" }, h("legend", {}, title, mark), help, list, add, err),
        get: () => items.map((e) => e.child.get()),
      };
    }
    let input;
    let get;
    if (kind === "boolean") {
      input = h("input", { id, type: "checkbox", "aria-describedby": described });
      input.checked = Boolean(start);
      get = () => input.checked;
      return { el: h("div", { class: "field check" }, input, h("label", { for: id }, title), help, err), get };
    }
    if (kind === "enum") {
      const options = s.enum ?? [s.const];
      input = h("select", { id, "aria-describedby": described },
        required ? null : h("option", { value: "" }, "—"),
        options.map((o, i) => h("option", { value: String(i) }, String(o))));
      const at = options.findIndex((o) => JSON.stringify(o) === JSON.stringify(start));
      if (at >= 0) input.value = String(at);
      get = () => (input.value === "" ? undefined : options[Number(input.value)]);
    } else if (kind === "number" || kind === "integer") {
      input = h("input", { id, type: "number", inputmode: kind === "integer" ? "numeric" : "decimal",
        step: kind === "integer" ? "1" : "any", "aria-describedby": described, min: s.minimum, max: s.maximum });
      if (start !== undefined && start !== null) input.value = String(start);
      get = () => {
        if (input.value.trim() === "") return undefined;
        const n = Number(input.value);
        if (!Number.isFinite(n)) throw fieldError(path, "is not a number");
        return n;
      };
    } else if (kind === "string") {
      const isSecret = secret || s.format === "password" || s.writeOnly;
      const long = !isSecret && (s.maxLength === undefined || s.maxLength > 200) && /text|body|prompt|content|description/i.test(path.join(" "));
      input = long
        ? h("textarea", { id, rows: 3, "aria-describedby": described })
        : h("input", { id, type: isSecret ? "password" : "text", autocomplete: isSecret ? "off" : undefined, "aria-describedby": described });
      if (start !== undefined && start !== null) input.value = String(start);
      get = () => (input.value === "" && !required ? undefined : input.value);
    } else {
      input = h("textarea", { id, rows: 3, class: "mono", "aria-describedby": described, spellcheck: "false" });
      if (start !== undefined) input.value = JSON.stringify(start, null, 2);
      get = () => {
        if (input.value.trim() === "") return undefined;
        try {
          return JSON.parse(input.value);
        } catch {
          throw fieldError(path, "is not valid JSON");
        }
      };
    }
    if (required) input.setAttribute("aria-required", "true");
    fields.get(path.join(".")).input = input;
    return { el: h("div", { class: "field" }, h("label", { for: id }, title, mark), input, help, err), get };
  }

  function fieldError(path, message) {
    const e = new Error(`${path.join(".") || "value"} ${message}`);
    e.path = path;
    return e;
  }

  const api = {
    value() {
      if (raw) {
        try {
          return JSON.parse(rawArea.value);
        } catch (e) {
          rawError.textContent = `Not valid JSON: ${e.message}`;
          throw e;
        }
      }
      return top.get();
    },
    clearErrors() {
      rawError.textContent = "";
      for (const f of fields.values()) {
        f.errorEl.textContent = "";
        f.input?.removeAttribute("aria-invalid");
      }
    },
    /** Show 422 details ([{loc, msg}]; `strip` leading loc parts, e.g. "input"). Returns how many found a field. */
    setErrors(details, strip = 0) {
      api.clearErrors();
      let placed = 0;
      for (const d of Array.isArray(details) ? details : []) {
        const loc = (Array.isArray(d.loc) ? d.loc : String(d.loc || "").split("/").filter(Boolean)).slice(strip);
        if (raw) {
          rawError.textContent += `${loc.join(".") || "value"}: ${d.msg}\n`;
          placed++;
          continue;
        }
        // The deepest field the loc names (a missing property's loc ends at that property).
        for (let n = loc.length; n >= 0; n--) {
          const f = fields.get(loc.slice(0, n).join("."));
          if (f) {
            f.errorEl.textContent += (f.errorEl.textContent ? " " : "") + d.msg;
            f.input?.setAttribute("aria-invalid", "true");
            placed++;
            break;
          }
        }
      }
      return placed;
    },
    setRaw(on) {
      if (on === raw) return;
      if (on) {
        let v = {};
        try { v = top.get(); } catch { /* keep {} */ }
        rawArea.value = JSON.stringify(v ?? null, null, 2);
        raw = true;
        tree.hidden = true;
        rawBox.hidden = false;
        rawArea.focus();
      } else {
        let v;
        try { v = JSON.parse(rawArea.value); } catch (e) { rawError.textContent = `Not valid JSON: ${e.message}`; return; }
        raw = false;
        clear(tree);
        fields.clear();
        const rebuilt = build(resolve(root, root), [], v, true);
        top.el = rebuilt.el;
        top.get = rebuilt.get;
        tree.append(rebuilt.el);
        tree.hidden = false;
        rawBox.hidden = true;
      }
    },
  };
  return api;
}
