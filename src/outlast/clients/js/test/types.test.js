// The .d.ts files describe the module: a typed usage through the exports map compiles, and
// misuse does not (its lines carry @ts-expect-error, which fails if no error is reported).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import * as client from "../outlast.js";
import * as react from "../react.js";

test("tsc --noEmit accepts the typed usage", () => {
  const tsc = fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url));
  const project = fileURLToPath(new URL("./types/tsconfig.json", import.meta.url));
  const result = spawnSync(process.execPath, [tsc, "-p", project], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stdout + result.stderr);
});

test("every runtime export is declared", async () => {
  const { readFile } = await import("node:fs/promises");
  const declared = await readFile(new URL("../outlast.d.ts", import.meta.url), "utf8");
  for (const name of Object.keys(client)) {
    assert.match(declared, new RegExp(`export declare (const|class|function) ${name}\\b`), name);
  }
  const reactDeclared = await readFile(new URL("../react.d.ts", import.meta.url), "utf8");
  for (const name of Object.keys(react)) assert.match(reactDeclared, new RegExp(`export declare function ${name}\\b`));
});
