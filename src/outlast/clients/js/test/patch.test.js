// RFC 6902 JSON Patch: the RFC's own examples, and patches made by the server's library.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";

import { PatchError, applyPatch } from "../outlast.js";
import { ROOT, python } from "./support.js";

// RFC 6902 appendix A (A.1-A.16), as [doc, patch, expected or the error].
const RFC = [
  [{ foo: "bar" }, [{ op: "add", path: "/baz", value: "qux" }], { baz: "qux", foo: "bar" }],
  [{ foo: ["bar", "baz"] }, [{ op: "add", path: "/foo/1", value: "qux" }], { foo: ["bar", "qux", "baz"] }],
  [{ baz: "qux", foo: "bar" }, [{ op: "remove", path: "/baz" }], { foo: "bar" }],
  [{ foo: ["bar", "qux", "baz"] }, [{ op: "remove", path: "/foo/1" }], { foo: ["bar", "baz"] }],
  [{ baz: "qux", foo: "bar" }, [{ op: "replace", path: "/baz", value: "boo" }], { baz: "boo", foo: "bar" }],
  [{ foo: { bar: "baz", waldo: "fred" }, qux: { corge: "grault" } },
    [{ op: "move", from: "/foo/waldo", path: "/qux/thud" }],
    { foo: { bar: "baz" }, qux: { corge: "grault", thud: "fred" } }],
  [{ foo: ["all", "grass", "cows", "eat"] }, [{ op: "move", from: "/foo/1", path: "/foo/3" }],
    { foo: ["all", "cows", "eat", "grass"] }],
  [{ baz: "qux", foo: ["a", 2, "c"] },
    [{ op: "test", path: "/baz", value: "qux" }, { op: "test", path: "/foo/1", value: 2 }],
    { baz: "qux", foo: ["a", 2, "c"] }],
  [{ baz: "qux" }, [{ op: "test", path: "/baz", value: "bar" }], PatchError],
  [{ foo: "bar" }, [{ op: "add", path: "/child", value: { grandchild: {} } }], { foo: "bar", child: { grandchild: {} } }],
  [{ foo: "bar" }, [{ op: "add", path: "/baz/bat", value: "qux" }], PatchError],
  [{ "/": 9, "~1": 10 }, [{ op: "test", path: "/~01", value: 10 }], { "/": 9, "~1": 10 }],
  [{ "/": 9, "~1": 10 }, [{ op: "test", path: "/~01", value: "10" }], PatchError],
  [{ foo: ["bar"] }, [{ op: "add", path: "/foo/-", value: ["abc", "def"] }], { foo: ["bar", ["abc", "def"]] }],
  [{ a: 1 }, [{ op: "replace", path: "", value: [1] }], [1]],
  [undefined, [{ op: "replace", path: "", value: { first: true } }], { first: true }],
  [{ a: [1] }, [{ op: "copy", from: "/a", path: "/b" }], { a: [1], b: [1] }],
  [{ a: [1] }, [{ op: "remove", path: "/a/1" }], PatchError],
  [{ a: [1] }, [{ op: "add", path: "/a/01", value: 2 }], PatchError],
  [{ a: { b: 1 } }, [{ op: "move", from: "/a", path: "/a/b/c" }], PatchError],
];

test("RFC 6902 appendix A", () => {
  for (const [doc, patch, expected] of RFC) {
    const before = JSON.stringify(doc);
    if (expected === PatchError) {
      assert.throws(() => applyPatch(doc, patch), PatchError, JSON.stringify(patch));
    } else {
      assert.deepEqual(applyPatch(doc, patch), expected, JSON.stringify(patch));
    }
    assert.equal(JSON.stringify(doc), before, "the document given is never mutated");
  }
});

// The worker makes object patches with Python's jsonpatch.make_patch (core/emit.py): any patch
// it makes must take the old value to the new one here.
const GENERATE = `
import json, random, jsonpatch
rng = random.Random(17)
def value(depth):
    kind = rng.random()
    if depth > 3 or kind < 0.3:
        return rng.choice([0, 1, -2.5, "a", "b/c", "~d", "", True, None])
    if kind < 0.65:
        return [value(depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["x", "y", "z", "a/b", "m~n", ""]): value(depth + 1) for _ in range(rng.randint(0, 4))}
def mutate(v, depth=0):
    if isinstance(v, list):
        v = [mutate(x, depth + 1) if rng.random() < 0.5 else x for x in v]
        if v and rng.random() < 0.4: v.pop(rng.randrange(len(v)))
        if rng.random() < 0.4: v.insert(rng.randint(0, len(v)), value(depth + 1))
        if len(v) > 1 and rng.random() < 0.3: v.insert(rng.randint(0, len(v)), v.pop(0))
        return v
    if isinstance(v, dict):
        v = {k: mutate(x, depth + 1) if rng.random() < 0.5 else x for k, x in v.items()}
        if v and rng.random() < 0.4: v.pop(rng.choice(list(v)))
        if rng.random() < 0.4: v[rng.choice(["p", "q", "x", "~1"])] = value(depth + 1)
        return v
    return value(depth) if rng.random() < 0.5 else v
cases = []
for _ in range(400):
    a = value(0); b = mutate(json.loads(json.dumps(a)))
    cases.append([a, b, jsonpatch.make_patch(a, b).patch])
print(json.dumps(cases))
`;

test("patches made by the server's jsonpatch apply", () => {
  const cases = JSON.parse(execFileSync(python(), ["-c", GENERATE], { cwd: ROOT, encoding: "utf8" }));
  assert.equal(cases.length, 400);
  const ops = new Set();
  for (const [a, b, patch] of cases) {
    for (const op of patch) ops.add(op.op);
    assert.deepEqual(applyPatch(a, patch), b, JSON.stringify({ a, patch }));
  }
  for (const op of ["add", "remove", "replace", "move"]) assert.ok(ops.has(op), `the cases include ${op}`);
});
