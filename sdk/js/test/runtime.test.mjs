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
// `hold` is set by invokeColumns (below) for the duration of one `invoke-columns` call.
const noHold = (i) => {
  throw new Error(`hold(${i}) with no invoke-columns call running`);
};
const host = (globalThis.__host = { sent: [], usage: [], logs: [], nextId: 100n, hold: noHold });
const fakes = {
  "waio:enricher/http@0.5.0": "export function send(r) { const id = globalThis.__host.nextId++; globalThis.__host.sent.push([id, r]); return id; }",
  "waio:enricher/usage@0.5.0": "export function report(u) { globalThis.__host.usage.push(u); }",
  "waio:enricher/logging@0.5.0": "export function log(l, m) { globalThis.__host.logs.push([l, m]); }",
  "waio:enricher/completion@0.5.0": "export function hold(i) { return globalThis.__host.hold(i); }",
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

// The host's result-future. With a `journal` (shared by the futures of a batch) it also writes
// its `begin` and completions there, under its name, so that their order shows.
class Output {
  constructor(name = null, journal = null) {
    this.name = name;
    this.journal = journal;
    this.calls = [];
    this.disposed = false;
  }
  begin() {
    this.calls.push(["begin"]);
    this.journal?.push(["begin", this.name]);
  }
  complete(events) {
    this.calls.push(["complete", events]);
    this.journal?.push(["complete", this.name, events.map(json)]);
  }
  completeExceptionally(failure) {
    this.calls.push(["fail", failure]);
    this.journal?.push(["fail", this.name, failure.kind, failure.message]);
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

// Events as `invoke-columns` takes them: all payloads in one byte list, cut by their ends.
function columns(events) {
  const payloadEnds = new Uint32Array(events.length);
  let total = 0;
  events.forEach((e, i) => (payloadEnds[i] = total += e.payload.length));
  const payloads = new Uint8Array(total);
  events.forEach((e, i) => payloads.set(e.payload, payloadEnds[i] - e.payload.length));
  return { payloads, payloadEnds, keys: events.map((e) => e.key), timestamps: events.map((e) => e.timestamp) };
}

// A batch as the host hands it: the records' columns, and for each record the result-future
// that `hold(i)` gives (named after the record).
function batch(journal, ...records) {
  const events = records.map(([name, fields = {}]) => event({ name, ...fields }, `key-${name}`));
  return { columns: columns(events), outputs: records.map(([name]) => new Output(name, journal)) };
}

// The outputs of completed record `j` of a result, as events.
function resultEvents(result, j) {
  const out = result.outputs;
  const from = j === 0 ? 0 : result.outputEnds[j - 1];
  const events = [];
  for (let k = from; k < result.outputEnds[j]; k++) {
    const start = k === 0 ? 0 : out.payloadEnds[k - 1];
    events.push({ key: out.keys[k], timestamp: out.timestamps[k], payload: out.payloads.slice(start, out.payloadEnds[k]) });
  }
  return events;
}

// Calls the `invoke-columns` export as the host does, with `hold` handing out the batch's
// futures (only during the call), then completes the records of the call's result as the host
// does (through the same `Output`s, so the journals show them after the call's own host calls).
// Every record is either held or in the result, never both, at most once. Returns the result,
// the indexes held, in order, and whether the export returned a promise (`deferred`: some
// handler returned one), awaited here as componentize-js does.
async function invokeColumns(e, { columns, outputs }) {
  const held = [];
  host.hold = (i) => {
    assert.ok(Number.isInteger(i) && i >= 0 && i < outputs.length, `hold(${i}) out of the batch`);
    assert.ok(!held.includes(i), `hold(${i}) twice`);
    held.push(i);
    return outputs[i];
  };
  let result;
  let deferred;
  try {
    const returned = e.invokeColumns(columns);
    deferred = returned instanceof Promise;
    result = await returned;
  } finally {
    host.hold = noHold;
  }
  assert.ok(result.completed instanceof Uint32Array && result.outputEnds instanceof Uint32Array);
  assert.ok(result.outputs.payloads instanceof Uint8Array && result.outputs.payloadEnds instanceof Uint32Array);
  const n = result.outputs.keys.length;
  assert.equal(result.outputEnds.length, result.completed.length);
  assert.equal(result.outputEnds.at(-1) ?? 0, n);
  assert.equal(result.outputs.payloadEnds.length, n);
  assert.equal(result.outputs.timestamps.length, n);
  assert.equal(result.outputs.payloadEnds.at(-1) ?? 0, result.outputs.payloads.length);
  const named = [...held, ...result.completed, ...result.failed.map(([i]) => i)];
  assert.deepEqual(named.toSorted((a, b) => a - b), outputs.map((_, i) => i));
  result.completed.forEach((i, j) => {
    outputs[i].complete(resultEvents(result, j));
    outputs[i].disposed = true; // never a handle in the plugin
  });
  for (const [i, failure] of result.failed) {
    outputs[i].completeExceptionally(failure);
    outputs[i].disposed = true;
  }
  return { result, held, deferred };
}

test("invoke-columns slices each record's payload, key and timestamp; hold(i) is record i's", async () => {
  const dec = new TextDecoder();
  const events = [
    { key: "a", timestamp: 1n, payload: enc.encode("first") },
    { key: undefined, timestamp: undefined, payload: new Uint8Array(0) },
    { key: "", timestamp: 0n, payload: enc.encode("é!") },
    { key: "d", timestamp: undefined, payload: new Uint8Array(0) },
    { key: undefined, timestamp: 1700000000000n, payload: enc.encode("x") },
    { key: "f", timestamp: 5n, payload: new Uint8Array(0) },
  ];
  const names = ["a", "b", "c", "d", "e", "f"];
  const view = (r) => ({ key: r.key ?? null, ts: r.timestamp ?? null, text: dec.decode(r.payload) });
  const expected = [
    { key: "a", ts: 1, text: "first" },
    { key: null, ts: null, text: "" },
    { key: "", ts: 0, text: "é!" },
    { key: "d", ts: null, text: "" },
    { key: null, ts: 1700000000000, text: "x" },
    { key: "f", ts: 5, text: "" },
  ];
  const seen = [];
  const perRecord = plugin({ asyncInvoke: (r) => [r.withJson(view(r))] });
  const batched = plugin({
    asyncInvokeBatch(records) {
      seen.push(records.map(view));
      return records.map((r) => [r.withJson(view(r))]);
    },
  });
  for (const e of [perRecord, batched]) {
    const journal = [];
    const outputs = names.map((name) => new Output(name, journal));
    await invokeColumns(e, { columns: columns(events), outputs });
    await settle();
    assert.deepEqual(
      journal.filter(([k]) => k === "complete"),
      names.map((name, i) => ["complete", name, [expected[i]]]),
    );
    // The outputs keep their own record's key and timestamp.
    outputs.forEach((output, i) => {
      const [out] = output.calls.at(-1)[1];
      assert.equal(out.key, events[i].key);
      assert.equal(out.timestamp, events[i].timestamp);
      assert.ok(output.disposed);
    });
  }
  assert.deepEqual(seen, [expected]);
  // An empty batch holds nothing and completes nothing.
  await invokeColumns(perRecord, { columns: columns([]), outputs: [] });
});

test("default batch: asyncInvoke for each record in order, begin only for the record that sends", async () => {
  const journal = [];
  const e = plugin(class {
    async asyncInvoke(r) {
      const { name, later } = r.json();
      journal.push(["invoke", name]);
      if (later) {
        const resp = await sdk.http.get(`http://x/${name}`);
        sdk.reportUsage("m", resp.json().n, 0);
      }
      return [r.withJson({ out: name })];
    }
  });
  const sent = host.sent.length;
  const usage = host.usage.length;
  const b = batch(journal, ["a"], ["b", { later: true }], ["c"]);
  const { held, result, deferred } = await invokeColumns(e, b);
  // Each record runs up to its first wait before the next starts; b's request is sent inside,
  // after b's future is held and begun. The call waits for the promises that settle without the
  // host: a and c are in its result; b, waiting for its answer, stays held.
  assert.ok(deferred);
  assert.deepEqual(journal.slice(0, 4), [["invoke", "a"], ["invoke", "b"], ["begin", "b"], ["invoke", "c"]]);
  assert.deepEqual(held, [1]);
  assert.deepEqual([...result.completed], [0, 2]);
  assert.deepEqual(result.failed, []);
  assert.deepEqual(journal.slice(4), [["complete", "a", [{ out: "a" }]], ["complete", "c", [{ out: "c" }]]]);
  assert.equal(host.sent.length, sent + 1);
  const [id, req] = host.sent.at(-1);
  assert.equal(req.url, "http://x/b");
  await settle();
  assert.equal(journal.length, 6);
  // b goes on from its answer, in onResponse, without a begin (the host knows the record).
  e.onResponse(id, { tag: "ok", val: { status: 200, headers: [], body: enc.encode('{"n":5}') } });
  await settle();
  assert.deepEqual(journal.slice(6), [["complete", "b", [{ out: "b" }]]]);
  assert.deepEqual(host.usage.slice(usage), [{ model: "m", inputTokens: 5, outputTokens: 0 }]);
  b.outputs.forEach((output, i) => {
    assert.ok(output.disposed);
    assert.equal(output.calls.at(-1)[1][0].key, b.columns.keys[i]); // key and timestamp kept
    assert.equal(output.calls.at(-1)[1][0].timestamp, 9n);
  });
});

test("default batch: a plain function's records complete in the call's result, with no host call", async () => {
  const journal = [];
  const e = plugin({ asyncInvoke: (r) => [r.withJson({ n: 1 })] });
  const { held, deferred } = await invokeColumns(e, batch(journal, ["a"], ["b"]));
  assert.deepEqual(held, []);
  assert.ok(!deferred); // no promise, no timer: the export returns its result at once
  assert.deepEqual(journal, [["complete", "a", [{ n: 1 }]], ["complete", "b", [{ n: 1 }]]]);
});

test("default batch: one record's exception fails only that record", async () => {
  const journal = [];
  const e = plugin(class {
    async asyncInvoke(r) {
      const { name, mode } = r.json();
      if (mode === "throw") throw new TypeError(`boom ${name}`);
      if (mode === "retriable") throw sdk.Failure.retriable("later, please");
      if (mode === "bad") return "not an array";
      if (mode === "throw_later") {
        await sdk.http.get("http://x/");
        throw new RangeError("gone");
      }
      return [r.withJson({ ok: name })];
    }
  });
  const syncThrow = plugin({
    asyncInvoke(r) {
      if (r.json().mode === "throw") throw new Error("sync boom");
      return [];
    },
  });
  await invokeColumns(
    e,
    batch(journal, ["a", { mode: "throw" }], ["b"], ["c", { mode: "retriable" }], ["d", { mode: "throw_later" }], ["e", { mode: "bad" }], ["f"]),
  );
  await invokeColumns(syncThrow, batch(journal, ["g", { mode: "throw" }], ["h"]));
  const [id] = host.sent.at(-1);
  e.onResponse(id, { tag: "ok", val: { status: 200, headers: [], body: enc.encode("{}") } });
  await settle();
  const done = Object.fromEntries(journal.filter(([k]) => k !== "begin").map(([, name, ...rest]) => [name, rest]));
  assert.deepEqual(done, {
    a: ["fatal", "TypeError: boom a"],
    b: [[{ ok: "b" }]],
    c: ["retriable", "later, please"],
    d: ["fatal", "RangeError: gone"],
    e: ["fatal", "TypeError: asyncInvoke must return an array of records (or a Promise of one), got string"],
    f: [[{ ok: "f" }]],
    g: ["fatal", "Error: sync boom"],
    h: [[]],
  });
  // Only d sends a request: only d is begun.
  assert.deepEqual(journal.filter(([k]) => k === "begin").map(([, name]) => name), ["d"]);
});

test("a plugin's own asyncInvokeBatch gets all records; its results complete the right futures", async () => {
  const journal = [];
  const seen = [];
  const e = plugin(class {
    asyncInvoke() {
      throw new Error("a batch must not go through asyncInvoke");
    }
    async asyncInvokeBatch(records) {
      seen.push(records.map((r) => [r.key, r.json().name]));
      // One request for the whole batch, its answer fanned out.
      const resp = await sdk.http.post("http://x/embed", { json: records.map((r) => r.json().name) });
      return resp.json().map((v, i) => {
        if (v === null) return sdk.Failure.fatal(`no vector for ${records[i].json().name}`);
        if (v === "skip") return [];
        if (v === "error") return new TypeError("bad vector");
        return [records[i].withJson({ v })];
      });
    }
  });
  const b = batch(journal, ["a"], ["b"], ["c"], ["d"], ["e"]);
  await invokeColumns(e, b);
  assert.deepEqual(seen, [[["key-a", "a"], ["key-b", "b"], ["key-c", "c"], ["key-d", "d"], ["key-e", "e"]]]);
  assert.deepEqual(journal, []); // no begin: the request serves no single record
  const [id, req] = host.sent.at(-1);
  assert.equal(new TextDecoder().decode(req.body), '["a","b","c","d","e"]');
  e.onResponse(id, { tag: "ok", val: { status: 200, headers: [], body: enc.encode('[[1,2],null,"skip",[3],"error"]') } });
  await settle();
  assert.deepEqual(journal, [
    ["complete", "a", [{ v: [1, 2] }]],
    ["fail", "b", "fatal", "no vector for b"],
    ["complete", "c", []],
    ["complete", "d", [{ v: [3] }]],
    ["fail", "e", "fatal", "TypeError: bad vector"],
  ]);
  assert.equal(b.outputs[0].calls.at(-1)[1][0].key, "key-a");
  assert.ok(b.outputs.every((output) => output.disposed));
});

test("a plugin's asyncInvokeBatch that throws, rejects or returns the wrong shape fails every record", async () => {
  const e = plugin(class {
    asyncInvoke() {
      return [];
    }
    asyncInvokeBatch(records) {
      switch (records[0].json().mode) {
        case "throw":
          throw new RangeError("batch down");
        case "reject":
          return Promise.reject(sdk.Failure.retriable("try later"));
        case "short":
          return [[]];
        case "entry":
          return [[], "nope"];
        default:
          return undefined;
      }
    }
  });
  const cases = [
    ["throw", ["fatal", "RangeError: batch down"]],
    ["reject", ["retriable", "try later"]],
    ["short", ["fatal", "TypeError: asyncInvokeBatch returned 1 results for 2 records"]],
    ["none", ["fatal", "TypeError: asyncInvokeBatch must return an array with one result per record (or a Promise of one), got undefined"]],
  ];
  for (const [mode, failure] of cases) {
    const journal = [];
    await invokeColumns(e, batch(journal, ["a", { mode }], ["b"]));
    await settle();
    assert.deepEqual(journal, [["fail", "a", ...failure], ["fail", "b", ...failure]], mode);
  }
  const journal = [];
  await invokeColumns(e, batch(journal, ["a", { mode: "entry" }], ["b"]));
  assert.deepEqual(journal, [
    ["complete", "a", []],
    ["fail", "b", "fatal", "TypeError: asyncInvokeBatch's result 1 is neither an array of records nor an Error, got string"],
  ]);
});

test("a plugin with only asyncInvokeBatch takes a single record as a batch of one", async () => {
  const journal = [];
  const sizes = [];
  const e = plugin({
    asyncInvokeBatch(records) {
      sizes.push(records.length);
      return records.map((r) => [r.withJson({ n: records.length })]);
    },
  });
  await invokeColumns(e, batch(journal, ["a"], ["b"]));
  e.asyncInvoke(event({ name: "c" }, "key-c"), new Output("c", journal));
  assert.deepEqual(sizes, [2, 1]);
  assert.deepEqual(journal, [["complete", "a", [{ n: 2 }]], ["complete", "b", [{ n: 2 }]], ["complete", "c", [{ n: 1 }]]]);
  const none = sdk.enricherExport(class {});
  assert.throws(() => none.open("{}"), (err) => err === "TypeError: the plugin has no asyncInvoke(record) or asyncInvokeBatch(records) method");
});

// A result-future whose record came with `headers`; counts the host calls for them.
class HeadersOutput extends Output {
  constructor(headers) {
    super();
    this.headers = headers;
    this.asked = 0;
  }
  inputHeaders() {
    if (this.disposed) throw new Error("resource dropped");
    this.asked++;
    return this.headers;
  }
}

test("record.headers() asks the record's own future once; made records have none", async () => {
  const dec = new TextDecoder();
  const e = plugin(
    class {
      async asyncInvoke(r) {
        const first = r.headers();
        assert.equal(r.headers(), first);
        const made = r.withJson({});
        return [
          r.withJson({
            headers: first.map(([n, v]) => [n, dec.decode(v)]),
            trace: r.header("trace") && dec.decode(r.header("trace")),
            missing: r.header("missing") ?? null,
            made: made.headers(),
          }),
        ];
      }
    },
  );
  const a = new HeadersOutput([["trace", enc.encode("t-1")], ["trace", enc.encode("t-2")]]);
  const b = new HeadersOutput([]);
  await invokeColumns(e, { columns: columns([event({}), event({})]), outputs: [a, b] });
  await settle();
  assert.deepEqual(json(a.calls.at(-1)[1][0]), { headers: [["trace", "t-1"], ["trace", "t-2"]], trace: "t-1", missing: null, made: [] });
  assert.deepEqual(json(b.calls.at(-1)[1][0]), { headers: [], missing: null, made: [] });
  assert.equal(a.asked, 1);
  assert.equal(b.asked, 1);
  // Not asking costs no host call; the timeout and a batch handler see their records' headers.
  const quiet = new HeadersOutput([["x", enc.encode("y")]]);
  plugin(class { asyncInvoke(r) { return [r]; } }).asyncInvoke(event({}), quiet);
  assert.equal(quiet.asked, 0);
  const seen = [];
  const both = plugin({
    asyncInvokeBatch(records) {
      for (const r of records) seen.push(dec.decode(r.header("id")));
      return records.map(() => []);
    },
    timeout(r) {
      seen.push(dec.decode(r.header("id")));
      return [];
    },
  });
  await invokeColumns(both, {
    columns: columns([event({}), event({})]),
    outputs: [new HeadersOutput([["id", enc.encode("1")]]), new HeadersOutput([["id", enc.encode("2")]])],
  });
  both.timeout(event({}), new HeadersOutput([["id", enc.encode("3")]]));
  assert.deepEqual(seen, ["1", "2", "3"]);
});

// The fast scheme of `invoke-columns`: a record completed in the call costs no host call.

test("a batch completed at once returns exact columns and holds nothing", async () => {
  const e = plugin({
    asyncInvoke(r) {
      const { name } = r.json();
      if (name === "none") return [];
      if (name === "two") {
        return [new sdk.Record("k1", 5, enc.encode("one")), new sdk.Record(undefined, undefined, enc.encode(""))];
      }
      if (name === "boom") throw sdk.Failure.retriable("busy");
      if (name === "bad") return "nope";
      return [r.withPayload("x!")];
    },
  });
  const b = batch(null, ["none"], ["two"], ["boom"], ["one"], ["bad"]); // payloads not JSON: no journal
  const { held, result } = await invokeColumns(e, b);
  assert.deepEqual(held, []);
  assert.deepEqual(result, {
    completed: Uint32Array.from([0, 1, 3]),
    outputEnds: Uint32Array.from([0, 2, 3]),
    outputs: {
      payloads: enc.encode("onex!"),
      payloadEnds: Uint32Array.from([3, 3, 5]),
      keys: ["k1", undefined, "key-one"],
      timestamps: [5n, undefined, 9n],
    },
    failed: [
      [2, { kind: "retriable", message: "busy" }],
      [4, { kind: "fatal", message: "TypeError: asyncInvoke must return an array of records (or a Promise of one), got string" }],
    ],
  });
  // The same plugin again: a new call starts with empty columns.
  const again = await invokeColumns(e, batch(null, ["one"]));
  assert.deepEqual(again.held, []);
  assert.deepEqual([...again.result.completed], [0]);
  assert.deepEqual(new TextDecoder().decode(again.result.outputs.payloads), "x!");
});

test("a record completed after the call is held at its end and completed through its handle", async () => {
  const later = [];
  let slot;
  const e = plugin({
    asyncInvoke(r) {
      if (r.json().name !== "kept") return [r.withJson({ now: true })];
      slot = r[sdk.SOURCE];
      return new Promise((resolve) => later.push(() => resolve([r.withJson({ later: true })])));
    },
  });
  const journal = [];
  const b = batch(journal, ["a"], ["kept"], ["c"]);
  const { held, result } = await invokeColumns(e, b);
  assert.deepEqual(held, [1]);
  assert.deepEqual([...result.completed], [0, 2]);
  assert.deepEqual(b.outputs[1].calls, []);
  // A later call does not take the kept record for one of its own.
  const second = await invokeColumns(e, batch(journal, ["x"]));
  assert.deepEqual(second.held, []);
  later[0]();
  await settle();
  assert.deepEqual(b.outputs[1].calls.map(([k]) => k), ["complete"]);
  assert.deepEqual(json(b.outputs[1].calls[0][1][0]), { later: true });
  assert.ok(b.outputs[1].disposed);
  // Completing again (first completion wins) reaches the host's future, never a call's result.
  slot.complete([]);
  const third = await invokeColumns(e, batch([], ["y"]));
  assert.deepEqual([...third.result.completed], [0]);
  assert.equal(third.result.outputEnds[0], 1);
});

test("begin and headers inside the call hold that record only; it then completes through its handle", async () => {
  const e = plugin({
    asyncInvoke(r) {
      const { name } = r.json();
      if (name === "headers") return [r.withJson({ n: r.headers().length })];
      if (name === "usage") {
        sdk.reportUsage("m", 1, 2);
        sdk.reportUsage("m", 3, 4); // one begin per record
        return [];
      }
      if (name === "send") return sdk.http.get("http://x/").then(() => [r.withJson({ sent: true })]);
      return [r.withJson({ plain: name })];
    },
  });
  const outputs = ["plain", "headers", "usage", "send", "plain2"].map(() => new HeadersOutput([["h", enc.encode("v")]]));
  const events = ["plain", "headers", "usage", "send", "plain2"].map((name) => event({ name }));
  const { held, result } = await invokeColumns(e, { columns: columns(events), outputs });
  assert.deepEqual(held, [1, 2, 3]);
  assert.deepEqual([...result.completed], [0, 4]);
  assert.deepEqual(result.failed, []);
  assert.equal(outputs[1].asked, 1);
  assert.deepEqual(outputs[1].calls.map(([k]) => k), ["complete"]);
  assert.deepEqual(json(outputs[1].calls[0][1][0]), { n: 1 });
  assert.deepEqual(outputs[2].calls.map(([k]) => k), ["begin", "complete"]);
  assert.deepEqual(outputs[3].calls.map(([k]) => k), ["begin"]);
  for (const i of [0, 4]) assert.equal(outputs[i].asked, 0);
  const [id] = host.sent.at(-1);
  e.onResponse(id, { tag: "ok", val: { status: 200, headers: [], body: new Uint8Array(0) } });
  await settle();
  assert.deepEqual(outputs[3].calls.map(([k]) => k), ["begin", "complete"]);
  assert.ok([1, 2, 3].every((i) => outputs[i].disposed));
});

test("a plugin's asyncInvokeBatch: settled in the call, its results are the call's; later, through handles", async () => {
  const sync = plugin({
    asyncInvokeBatch(records) {
      return records.map((r, i) => (i === 1 ? new RangeError("no") : i === 2 ? [] : [r.withJson({ i }), r.withJson({ again: i })]));
    },
  });
  const { held, result } = await invokeColumns(sync, batch([], ["a"], ["b"], ["c"]));
  assert.deepEqual(held, []);
  assert.deepEqual([...result.completed], [0, 2]);
  assert.deepEqual([...result.outputEnds], [2, 2]);
  assert.deepEqual(result.outputs.keys, ["key-a", "key-a"]);
  assert.deepEqual(result.failed, [[1, { kind: "fatal", message: "RangeError: no" }]]);
  const throws = plugin({ asyncInvokeBatch() { throw new Error("down"); } });
  const thrown = await invokeColumns(throws, batch([], ["a"], ["b"]));
  assert.deepEqual(thrown.held, []);
  assert.deepEqual(thrown.result.failed.map(([i]) => i), [0, 1]);
  // An async handler that needs no host: still the call's result.
  const settled = plugin({ async asyncInvokeBatch(records) { return records.map(() => []); } });
  const now = await invokeColumns(settled, batch([], ["a"], ["b"]));
  assert.ok(now.deferred);
  assert.deepEqual(now.held, []);
  assert.deepEqual([...now.result.completed], [0, 1]);
  // One waiting for the host's answer: every record held, completed in onResponse.
  const journal = [];
  const later = plugin({
    async asyncInvokeBatch(records) {
      await sdk.http.get("http://x/batch");
      return records.map(() => []);
    },
  });
  const b = batch(journal, ["a"], ["b"]);
  const kept = await invokeColumns(later, b);
  assert.deepEqual(kept.held, [0, 1]);
  assert.deepEqual(journal, []);
  const [id] = host.sent.at(-1);
  later.onResponse(id, { tag: "ok", val: { status: 200, headers: [], body: new Uint8Array(0) } });
  await settle();
  assert.deepEqual(journal, [["complete", "a", []], ["complete", "b", []]]);
});

// An async handler's promise settles in a microtask, after the handler returned: the call waits
// for the microtask queue to drain (one timer) so that such records are in its result too.

test("async handlers that need no host complete in the call's result, however many awaits", async () => {
  const step = async (v) => {
    await null;
    return v;
  };
  const e = plugin(class {
    async asyncInvoke(r) {
      const { name, awaits = 0 } = r.json();
      let n = 0;
      for (let i = 0; i < awaits; i++) n += await step(1);
      await Promise.resolve();
      return [r.withJson({ name, n })];
    }
  });
  const journal = [];
  const b = batch(journal, ["a"], ["b", { awaits: 3 }], ["c", { awaits: 50 }]);
  const { held, result, deferred } = await invokeColumns(e, b);
  assert.ok(deferred);
  assert.deepEqual(held, []);
  assert.deepEqual([...result.completed], [0, 1, 2]);
  assert.deepEqual(journal, [
    ["complete", "a", [{ name: "a", n: 0 }]],
    ["complete", "b", [{ name: "b", n: 3 }]],
    ["complete", "c", [{ name: "c", n: 50 }]],
  ]);
  assert.equal(result.outputs.keys[1], "key-b");
  // A mix with a synchronous handler's records: one result, in completion order.
  const mixed = plugin({
    asyncInvoke(r) {
      const { name } = r.json();
      return name === "sync" ? [r.withJson({ name })] : step([r.withJson({ name })]);
    },
  });
  const m = await invokeColumns(mixed, batch([], ["async"], ["sync"]));
  assert.deepEqual(m.held, []);
  assert.deepEqual([...m.result.completed], [1, 0]);
});

test("async handlers waiting for the host, or for nothing, are still held and complete later", async () => {
  const e = plugin(class {
    async asyncInvoke(r) {
      const { name } = r.json();
      if (name === "never") return new Promise(() => {});
      if (name === "http") {
        await null;
        const resp = await sdk.http.get("http://x/");
        return [r.withJson({ name, status: resp.status })];
      }
      return [r.withJson({ name })];
    }
  });
  const journal = [];
  const b = batch(journal, ["now"], ["never"], ["http"]);
  const sent = host.sent.length;
  const { held, result } = await invokeColumns(e, b);
  // The request is sent after an await: no `begin`, as when continuations ran after the call.
  assert.equal(host.sent.length, sent + 1);
  assert.deepEqual(held, [1, 2]);
  assert.deepEqual([...result.completed], [0]);
  assert.deepEqual(journal, [["complete", "now", [{ name: "now" }]]]);
  const [id] = host.sent.at(-1);
  e.onResponse(id, { tag: "ok", val: { status: 204, headers: [], body: new Uint8Array(0) } });
  await settle();
  assert.deepEqual(journal.slice(1), [["complete", "http", [{ name: "http", status: 204 }]]]);
  assert.deepEqual(b.outputs[1].calls, []); // in flight until its timeout
  assert.ok(b.outputs[2].disposed);
});

test("an async handler's error fails its record in the call's result", async () => {
  const e = plugin(class {
    async asyncInvoke(r) {
      const { name } = r.json();
      await null;
      if (name === "type") throw new TypeError("boom");
      if (name === "retry") throw sdk.Failure.retriable("later");
      if (name === "bad") return "nope";
      return [r.withJson({ name })];
    }
  });
  const { held, result } = await invokeColumns(e, batch([], ["type"], ["ok"], ["retry"], ["bad"]));
  assert.deepEqual(held, []);
  assert.deepEqual([...result.completed], [1]);
  assert.deepEqual(result.failed, [
    [0, { kind: "fatal", message: "TypeError: boom" }],
    [2, { kind: "retriable", message: "later" }],
    [3, { kind: "fatal", message: "TypeError: asyncInvoke must return an array of records (or a Promise of one), got string" }],
  ]);
});

test("after an await, headers hold the record, which completes through its handle", async () => {
  const e = plugin(class {
    async asyncInvoke(r) {
      await null;
      return [r.withJson({ n: r.headers().length })];
    }
  });
  const outputs = [new HeadersOutput([["h", enc.encode("v")]])];
  const { held, result } = await invokeColumns(e, { columns: columns([event({})]), outputs });
  assert.deepEqual(held, [0]);
  assert.deepEqual([...result.completed, ...result.failed], []);
  assert.equal(outputs[0].asked, 1);
  assert.deepEqual(outputs[0].calls.map(([k]) => k), ["complete"]);
  assert.deepEqual(json(outputs[0].calls[0][1][0]), { n: 1 });
  assert.ok(outputs[0].disposed);
});
