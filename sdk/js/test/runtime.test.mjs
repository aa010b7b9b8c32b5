// Unit tests of the SDK runtime under node, with the WIT imports replaced by recorders:
//   node --test sdk/js/test/   (after scripts/setup-js, which installs esbuild)
// The real engine (componentize-js) is covered end to end by the conform-js plugin.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import os from "node:os";

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.WAIO_NODE || path.join(os.homedir(), ".cache/waio/node");
const esbuild = createRequire(path.join(nodeDir, "package.json"))("esbuild");

// The host side: what the plugin called, and the call-ids it got.
const host = (globalThis.__host = { sent: [], usage: [], logs: [], nextId: 100n });
const fakes = {
  "waio:enricher/http@0.2.0": "export function send(r) { const id = globalThis.__host.nextId++; globalThis.__host.sent.push([id, r]); return id; }",
  "waio:enricher/usage@0.2.0": "export function report(u) { globalThis.__host.usage.push(u); }",
  "waio:enricher/logging@0.2.0": "export function log(l, m) { globalThis.__host.logs.push([l, m]); }",
};

async function load() {
  const result = await esbuild.build({
    stdin: {
      contents: `export * from "./src/waio.js"; export { enricherExport } from "./src/runtime.js";`,
      resolveDir: path.join(here, ".."),
    },
    bundle: true,
    format: "esm",
    write: false,
    plugins: [
      {
        name: "fake-wit",
        setup(build) {
          build.onResolve({ filter: /^waio:/ }, (args) => ({ path: args.path, namespace: "fake" }));
          build.onLoad({ filter: /.*/, namespace: "fake" }, (args) => ({ contents: fakes[args.path] }));
        },
      },
    ],
  });
  const code = result.outputFiles[0].text;
  return import("data:text/javascript;base64," + Buffer.from(code).toString("base64"));
}

const sdk = await load();
const enc = new TextEncoder();
const event = (obj, key = "k", timestamp = 9n) => ({ key, timestamp, payload: enc.encode(JSON.stringify(obj)) });

class Output {
  constructor() {
    this.calls = [];
    this.disposed = false;
  }
  complete(events) {
    this.calls.push(["complete", events]);
  }
  completeExceptionally(failure) {
    this.calls.push(["fail", failure]);
  }
  [Symbol.dispose || Symbol.for("dispose")]() {
    this.disposed = true;
  }
}

const settle = () => new Promise((resolve) => setImmediate(resolve));
const json = (e) => JSON.parse(new TextDecoder().decode(e.payload));

function plugin(cls, config = {}) {
  const e = sdk.enricherExport(cls);
  e.open(JSON.stringify(config));
  return e;
}

test("outputs keep key and timestamp, sync and async", async () => {
  for (const cls of [
    class { asyncInvoke(r) { return [r.withJson({ a: r.json().a })]; } },
    class { async asyncInvoke(r) { return [r.withJson({ a: r.json().a })]; } },
  ]) {
    const e = plugin(cls);
    const out = new Output();
    e.asyncInvoke(event({ a: 1 }), out);
    await settle();
    assert.equal(out.calls.length, 1);
    const [kind, events] = out.calls[0];
    assert.equal(kind, "complete");
    assert.deepEqual(json(events[0]), { a: 1 });
    assert.equal(events[0].key, "k");
    assert.equal(events[0].timestamp, 9n);
    assert.ok(out.disposed);
  }
});

test("thrown exceptions fail the record with their name, Failures keep their kind", async () => {
  const e = plugin(class {
    async asyncInvoke(r) {
      const m = r.json().m;
      if (m === "type") throw new TypeError("boom 1");
      if (m === "retry") throw sdk.Failure.retriable("later");
      if (m === "str") throw "text";
      return "not an array";
    }
  });
  const cases = { type: ["fatal", "TypeError: boom 1"], retry: ["retriable", "later"], str: ["fatal", "uncaught exception: text"] };
  for (const [m, [kind, message]] of Object.entries(cases)) {
    const out = new Output();
    e.asyncInvoke(event({ m }), out);
    await settle();
    assert.deepEqual(out.calls, [["fail", { kind, message }]]);
  }
  const out = new Output();
  e.asyncInvoke(event({ m: "other" }), out);
  await settle();
  assert.equal(out.calls[0][0], "fail");
  assert.match(out.calls[0][1].message, /^TypeError: asyncInvoke must return an array/);
});

test("http.send resolves from onResponse, errors reject with HttpError", async () => {
  const e = plugin(class {
    async asyncInvoke(r) {
      try {
        const resp = await sdk.http.post("http://x/y", { json: { q: 1 }, headers: { a: "b" } });
        sdk.reportUsage("m", 3, 4);
        return [r.withJson({ status: resp.status, body: resp.json() })];
      } catch (err) {
        return [r.withJson({ err: err.message, kind: err.kind, name: err.name })];
      }
    }
  });
  const ok = new Output();
  const bad = new Output();
  e.asyncInvoke(event({}), ok);
  e.asyncInvoke(event({}), bad);
  const [[id1, req], [id2]] = host.sent.slice(-2);
  assert.equal(req.method, "POST");
  assert.deepEqual(req.headers, [["a", "b"], ["content-type", "application/json"]]);
  assert.equal(new TextDecoder().decode(req.body), '{"q":1}');
  // Answers out of order.
  e.onResponse(id2, { tag: "err", val: { tag: "timeout" } });
  e.onResponse(id1, { tag: "ok", val: { status: 200, headers: [], body: enc.encode('{"v":2}') } });
  await settle();
  assert.deepEqual(json(ok.calls[0][1][0]), { status: 200, body: { v: 2 } });
  assert.deepEqual(json(bad.calls[0][1][0]), { err: "request timed out", kind: "retriable", name: "HttpError" });
  assert.deepEqual(host.usage.at(-1), { model: "m", inputTokens: 3, outputTokens: 4 });
});

test("every http-error case rejects with its reason, text and kind; unavailable is retriable", async () => {
  const e = plugin(class {
    async asyncInvoke(r) {
      try {
        await sdk.http.get("http://x/y");
        return [];
      } catch (err) {
        return [r.withJson({ err: err.message, kind: err.kind, reason: err.reason })];
      }
    }
  });
  const cases = [
    [{ tag: "denied", val: "host x not allowed" }, "request denied: host x not allowed", "fatal"],
    [{ tag: "invalid-request", val: "bad url" }, "invalid request: bad url", "fatal"],
    [{ tag: "timeout" }, "request timed out", "retriable"],
    [{ tag: "connection", val: "refused" }, "connection failed: refused", "retriable"],
    [{ tag: "unavailable", val: "circuit breaker open for http://x" }, "unavailable: circuit breaker open for http://x", "retriable"],
  ];
  for (const [error, message, kind] of cases) {
    const out = new Output();
    e.asyncInvoke(event({}), out);
    const [id] = host.sent.at(-1);
    e.onResponse(id, { tag: "err", val: error });
    await settle();
    assert.deepEqual(json(out.calls[0][1][0]), { err: message, kind, reason: error.tag });
  }
});

test("default timeout fails retriable, open errors name the exception", async () => {
  const e = plugin(class { asyncInvoke() { return []; } });
  const out = new Output();
  e.timeout(event({}), out);
  assert.deepEqual(out.calls, [["fail", { kind: "retriable", message: "timed out" }]]);
  const bad = sdk.enricherExport(class { open() { throw new RangeError("no url"); } asyncInvoke() {} });
  assert.throws(() => bad.open("{}"), (err) => err === "RangeError: no url");
});

test("Response.throwForStatus sorts statuses into retriable and fatal", () => {
  const r = (status) => new sdk.Response(status, [], enc.encode("x"));
  assert.equal(r(200).throwForStatus().status, 200);
  assert.throws(() => r(429).throwForStatus(), (err) => err.kind === "retriable");
  assert.throws(() => r(503).throwForStatus(), (err) => err.kind === "retriable");
  assert.throws(() => r(404).throwForStatus(), (err) => err.kind === "fatal" && err.message === "HTTP status 404: x");
});

test("the retriable statuses are those of the host's shared table", async () => {
  const { readFile } = await import("node:fs/promises");
  const table = await readFile(path.join(here, "../../../wit/retriable-statuses.txt"), "utf8");
  const ranges = table
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => l.split("-").map(Number));
  const listed = (s) => ranges.some(([low, high = low]) => s >= low && s <= high);
  for (let status = 100; status < 700; status++) {
    assert.equal(sdk.isRetriableStatus(status), listed(status), `status ${status}`);
    if (status >= 300) {
      const kind = listed(status) ? "retriable" : "fatal";
      assert.throws(() => new sdk.Response(status, [], enc.encode("x")).throwForStatus(), (err) => err.kind === kind);
    }
  }
});
