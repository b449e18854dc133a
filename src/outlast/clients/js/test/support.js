// Test helpers: the real servers (through tests/clients/launcher.py), a sessionStorage stand-in,
// and a way to await a state of a stream instead of sleeping.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { EventSource } from "eventsource";

import { createClient } from "../outlast.js";

export const ROOT = fileURLToPath(new URL("../../../../../", import.meta.url));

export function python() {
  if (process.env.OUTLAST_PYTHON) return process.env.OUTLAST_PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** Valkey + worker + API, started by the Python launcher; `command()` drives it. */
export async function startServers() {
  const proc = spawn(python(), ["-m", "tests.clients.launcher"], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: proc.stdout });
  const waiting = [];
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  lines.on("line", (line) => waiting.shift()?.resolve(JSON.parse(line)));
  proc.on("exit", (code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`the launcher exited (${code})`));
  });
  const next = () => new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  const hello = await next();
  return {
    api: hello.api,
    token: hello.token,
    async command(cmd, args = {}) {
      const reply = next();
      proc.stdin.write(`${JSON.stringify({ cmd, ...args })}\n`);
      const answer = await reply;
      if (answer.error) throw new Error(`launcher ${cmd}: ${answer.error}`);
    },
    async stop() {
      proc.stdin.end();
      await exited;
    },
  };
}

/** What a page's sessionStorage offers, in memory (survives a "refresh": a new client and stream). */
export class MemoryStorage {
  #items = new Map();
  getItem(key) {
    return this.#items.has(key) ? this.#items.get(key) : null;
  }
  setItem(key, value) {
    this.#items.set(key, String(value));
  }
  removeItem(key) {
    this.#items.delete(key);
  }
  get length() {
    return this.#items.size;
  }
}

export function client(servers, options = {}) {
  return createClient({ baseUrl: servers.api, token: servers.token, EventSource, retryMs: 50, ...options });
}

/**
 * Stream options that record every event, plus `until(predicate)`: a promise resolved with the
 * first state for which predicate(state) holds (checked on every change).
 */
export function recorder() {
  const events = [];
  const pending = [];
  let latest = null;
  const check = (state) => {
    latest = state;
    for (const p of [...pending]) {
      if (p.predicate(state)) {
        pending.splice(pending.indexOf(p), 1);
        p.resolve(state);
      }
    }
  };
  return {
    events,
    options: {
      onEvent: (event) => events.push(event),
      onState: check,
      onError: (error) => {
        for (const p of pending.splice(0)) p.reject(error);
      },
    },
    until(predicate) {
      if (latest && predicate(latest)) return Promise.resolve(latest);
      return new Promise((resolve, reject) => pending.push({ predicate, resolve, reject }));
    },
  };
}

export function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
