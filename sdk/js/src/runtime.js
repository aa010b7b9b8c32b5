// Turns a plugin class (or object) into the `enricher` export of the WIT world `enricher-plugin`.
// The build's generated entry module does `export const enricher = enricherExport(Plugin)`.
//
// componentize-js awaits what an export returns and runs its event loop until that settles; it
// also drains the microtask queue before every export call returns. So an export must never
// return a promise that waits for the host (a record waiting for an HTTP answer settles only in
// a later `on-response` call). `invoke-columns` returns one only to wait for a timer, which runs
// once the microtask queue is empty (see `finishLater`).

import { hold } from "waio:enricher/completion@0.5.0";
import { Failure, Record, SOURCE, bytes, describeError, deliver, hostWork, log } from "./waio.js";

// The plugin's view of an input: `output` answers `record.headers()`.
function toRecord(event, output) {
  const ts = event.timestamp;
  const record = new Record(event.key, ts === undefined || ts === null ? undefined : Number(ts), event.payload);
  record[SOURCE] = output;
  return record;
}

function toEvent(out, index) {
  if (out instanceof Record || (out !== null && typeof out === "object" && "payload" in out)) {
    const ts = out.timestamp;
    const key = out.key;
    if (key !== undefined && key !== null && typeof key !== "string") {
      throw new TypeError(`output ${index}: key must be a string, got ${typeof key}`);
    }
    return {
      key: key === null ? undefined : key,
      timestamp: ts === undefined || ts === null ? undefined : BigInt(Math.trunc(Number(ts))),
      payload: out instanceof Record && out.payload instanceof Uint8Array ? out.payload : bytes(out.payload),
    };
  }
  throw new TypeError(`output ${index} is not a Record (make outputs with record.withJson(value)), got ${describe(out)}`);
}

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? `a ${value.constructor?.name ?? "object"}` : typeof value;
}

function toEvents(value) {
  if (Array.isArray(value)) {
    const events = new Array(value.length);
    for (let i = 0; i < value.length; i++) events[i] = toEvent(value[i], i);
    return events;
  }
  if (value instanceof Record) return [toEvent(value, 0)];
  throw new TypeError(`asyncInvoke must return an array of records (or a Promise of one), got ${describe(value)}`);
}

// The key componentize-js's resource bindings use for their drop method.
const dispose = Symbol.dispose || Symbol.for("dispose");

// Drops the handle at once rather than when the garbage collector gets to it, so that the host
// can forget the record's result-future.
function release(output) {
  try {
    output[dispose]();
  } catch {
    // Already dropped: nothing to free.
  }
}

function fail(output, error) {
  try {
    output.completeExceptionally(describeError(error));
  } catch (e) {
    // Never let an exception out of an export: componentize-js turns it into a trap.
    log.error(`waio: could not fail a record: ${describeError(e).message}`);
  }
  release(output);
}

function complete(output, value) {
  let events;
  try {
    events = toEvents(value);
  } catch (e) {
    fail(output, e);
    return;
  }
  try {
    output.complete(events);
  } catch (e) {
    fail(output, e);
    return;
  }
  release(output);
}

// Runs a plugin method on a record and completes `output` with what it returns or throws.
function run(plugin, method, input, output) {
  let result;
  try {
    result = method.call(plugin, toRecord(input, output));
  } catch (e) {
    fail(output, e);
    return;
  }
  if (result !== null && typeof result === "object" && typeof result.then === "function") {
    result.then(
      (value) => complete(output, value),
      (error) => fail(output, error),
    );
  } else {
    complete(output, result);
  }
}

// Fails every record of a batch with the same error.
function failAll(outputs, error) {
  for (let i = 0; i < outputs.length; i++) fail(outputs[i], error);
}

// Completes each record of a batch with its entry of `value`, the plugin's array of results.
function completeBatch(outputs, value) {
  if (!Array.isArray(value)) {
    failAll(
      outputs,
      new TypeError(`asyncInvokeBatch must return an array with one result per record (or a Promise of one), got ${describe(value)}`),
    );
    return;
  }
  if (value.length !== outputs.length) {
    failAll(outputs, new TypeError(`asyncInvokeBatch returned ${value.length} results for ${outputs.length} records`));
    return;
  }
  for (let i = 0; i < outputs.length; i++) {
    const result = value[i];
    if (result instanceof Error) {
      fail(outputs[i], result);
    } else if (Array.isArray(result) || result instanceof Record) {
      complete(outputs[i], result);
    } else {
      fail(
        outputs[i],
        new TypeError(`asyncInvokeBatch's result ${i} is neither an array of records nor an Error, got ${describe(result)}`),
      );
    }
  }
}

// Runs the plugin's own batch handler on all the records of `inputs` ([event, output] pairs).
// No `begin`: its requests serve the batch, no single record.
function runBatch(plugin, method, inputs) {
  const n = inputs.length;
  if (n === 0) return;
  const records = new Array(n);
  const outputs = new Array(n);
  for (let i = 0; i < n; i++) {
    const pair = inputs[i];
    records[i] = toRecord(pair[0], pair[1]);
    outputs[i] = pair[1];
  }
  let result;
  try {
    result = method.call(plugin, records);
  } catch (e) {
    failAll(outputs, e);
    return;
  }
  if (result !== null && typeof result === "object" && typeof result.then === "function") {
    result.then(
      (value) => completeBatch(outputs, value),
      (error) => failAll(outputs, error),
    );
  } else {
    completeBatch(outputs, result);
  }
}

// The `invoke-columns` call running now (null between calls): what its records completed so
// far, in the columns of its result. `generation` tells a call from the ones after it.
let call = null;
let generation = 0;
// Inside `invoke-columns`, the record whose code runs now (per-record code only) and the record
// the host was last told of with `begin`.
let current = null;
let begun = null;

function beginCall() {
  generation++;
  call = {
    generation,
    completed: [],
    outputEnds: [],
    payloads: [],
    payloadLength: 0,
    payloadEnds: [],
    keys: [],
    timestamps: [],
    failed: [],
  };
  return call;
}

// The call's result; ends the call.
function endCall(state) {
  call = null;
  current = null;
  begun = null;
  const payloads = new Uint8Array(state.payloadLength);
  let at = 0;
  for (const chunk of state.payloads) {
    payloads.set(chunk, at);
    at += chunk.length;
  }
  return {
    completed: Uint32Array.from(state.completed),
    outputEnds: Uint32Array.from(state.outputEnds),
    outputs: {
      payloads,
      payloadEnds: Uint32Array.from(state.payloadEnds),
      keys: state.keys,
      timestamps: state.timestamps,
    },
    failed: state.failed,
  };
}

// The future of record `index` of an `invoke-columns` call, with the methods of the host's
// result-future. While its call runs it completes into the call's result and costs no host
// call; it takes the host's future (`completion.hold`) only when it needs one: to `begin`, to
// read the input's headers, or to be completed after the call.
class Slot {
  constructor(state, index) {
    this.state = state;
    this.index = index;
    this.handle = null;
    this.done = false;
  }

  // Whether the call this record came with is still running.
  inCall() {
    return call === this.state && call.generation === this.state.generation;
  }

  // The host's future for this record, held once (only possible while its call runs).
  host() {
    if (this.handle === null) {
      if (!this.inCall()) throw new Error("the record is no longer in flight");
      this.handle = hold(this.index);
    }
    return this.handle;
  }

  // At the end of the call: a record not completed yet keeps a host future for later.
  holdIfOpen() {
    if (!this.done && this.handle === null) this.handle = hold(this.index);
  }

  begin() {
    this.host().begin();
  }

  inputHeaders() {
    if (this.done && this.handle === null) throw new Error("the record was completed");
    return this.host().inputHeaders();
  }

  complete(events) {
    if (this.handle !== null) {
      this.done = true;
      this.handle.complete(events);
      return;
    }
    if (this.done || !this.inCall()) return; // first completion wins
    this.done = true;
    const state = this.state;
    for (const event of events) {
      state.payloads.push(event.payload);
      state.payloadLength += event.payload.length;
      state.payloadEnds.push(state.payloadLength);
      state.keys.push(event.key);
      state.timestamps.push(event.timestamp);
    }
    state.completed.push(this.index);
    state.outputEnds.push(state.keys.length);
  }

  completeExceptionally(failure) {
    if (this.handle !== null) {
      this.done = true;
      this.handle.completeExceptionally(failure);
      return;
    }
    if (this.done || !this.inCall()) return;
    this.done = true;
    this.state.failed.push([this.index, failure]);
  }

  [dispose]() {
    if (this.handle !== null) release(this.handle);
  }
}

// Inside a batch, tells the host which record the request or usage about to be made is for,
// once per record and only for records that make one: a record that completes at once costs
// no host call.
hostWork.before = () => {
  if (call === null || current === null || current === begun) return;
  if (!current.inCall()) return;
  current.begin();
  begun = current;
};

// Takes the columns of an `invoke-columns` call apart into [event, slot] pairs.
function slotInputs(columns, state) {
  const { payloads, payloadEnds, keys, timestamps } = columns;
  const n = payloadEnds.length;
  const inputs = new Array(n);
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = payloadEnds[i];
    // A view, not a copy: the bindings already copied the batch's bytes out of linear memory.
    const event = { key: keys[i], timestamp: timestamps[i], payload: payloads.subarray(start, end) };
    inputs[i] = [event, new Slot(state, i)];
    start = end;
  }
  return inputs;
}

// Ends the call: the records still open keep a host future for later; returns the result.
function finishCall(state, inputs) {
  for (let i = 0, n = inputs.length; i < n; i++) inputs[i][1].holdIfOpen();
  return endCall(state);
}

// Whether a record is still open with no host future: its handler returned a promise (a
// handler that returns anything else has completed its record already).
function hasUnheldOpen(inputs) {
  for (let i = 0, n = inputs.length; i < n; i++) {
    const slot = inputs[i][1];
    if (!slot.done && slot.handle === null) return true;
  }
  return false;
}

// Ends the call once the promises that settle without the host have settled, so that their
// records complete in the call's result rather than through a held future each (`hold` and
// `complete` are host calls, costly in SpiderMonkey). A timer task runs only when the microtask
// queue is empty, however many `await`s the handlers chain; a promise still pending then waits
// for the host (or for nothing) and its record is held as before. The returned promise settles
// within this export call: componentize-js runs its event loop until it does. Costs one timer
// (a few WASI calls) per call that needs it.
function finishLater(state, inputs) {
  if (typeof setTimeout !== "function") return finishCall(state, inputs);
  return new Promise((resolve, reject) => {
    setTimeout(() => {
      try {
        resolve(finishCall(state, inputs));
      } catch (e) {
        reject(e);
      }
    }, 0);
  });
}

/** The `enricher` export for a plugin class (instantiated in `open`) or a plain object. */
export function enricherExport(Plugin) {
  let plugin = null;
  // The plugin's `asyncInvoke` and `asyncInvokeBatch`, or null (it has at least one of them).
  let invoke = null;
  let invokeBatch = null;

  return {
    open(configJson) {
      let config;
      try {
        config = JSON.parse(configJson);
        plugin = typeof Plugin === "function" ? new Plugin(config) : Plugin;
        if (plugin === null || typeof plugin !== "object") {
          throw new TypeError("the plugin module's default export must be a class or an object");
        }
        invoke = typeof plugin.asyncInvoke === "function" ? plugin.asyncInvoke : null;
        invokeBatch = typeof plugin.asyncInvokeBatch === "function" ? plugin.asyncInvokeBatch : null;
        if (invoke === null && invokeBatch === null) {
          throw new TypeError("the plugin has no asyncInvoke(record) or asyncInvokeBatch(records) method");
        }
        if (typeof plugin.open === "function") {
          const opened = plugin.open(config);
          if (opened !== null && typeof opened === "object" && typeof opened.then === "function") {
            // componentize-js runs the event loop until a returned promise settles.
            return opened.then(
              () => undefined,
              (e) => {
                throw openError(e);
              },
            );
          }
        }
      } catch (e) {
        throw openError(e);
      }
      return undefined;
    },

    asyncInvoke(input, output) {
      if (invoke !== null) {
        run(plugin, invoke, input, output);
      } else {
        // Only a batch handler: a single record (a retry, ...) is a batch of one.
        runBatch(plugin, invokeBatch, [[input, output]]);
      }
    },

    invokeColumns(columns) {
      const state = beginCall();
      const inputs = slotInputs(columns, state);
      if (invokeBatch !== null) {
        // No `begin`: its requests serve the batch, no single record.
        runBatch(plugin, invokeBatch, inputs);
      } else {
        // For each record exactly what `asyncInvoke` does, as the current record (`begin` is
        // called when it sends a request or reports usage).
        const p = plugin;
        const method = invoke;
        for (let i = 0, n = inputs.length; i < n; i++) {
          const pair = inputs[i];
          current = pair[1];
          run(p, method, pair[0], pair[1]);
        }
        current = null;
      }
      return hasUnheldOpen(inputs) ? finishLater(state, inputs) : finishCall(state, inputs);
    },

    timeout(input, output) {
      if (typeof plugin.timeout === "function") {
        run(plugin, plugin.timeout, input, output);
      } else {
        // Flink's default: the record fails as timed out.
        fail(output, Failure.retriable("timed out"));
      }
    },

    onResponse(id, answer) {
      deliver(id, answer);
    },

    close() {
      if (plugin !== null && typeof plugin.close === "function") {
        try {
          plugin.close();
        } catch (e) {
          log.error(`waio: close failed: ${describeError(e).message}`);
        }
      }
    },
  };
}

// open's error is the string of result<_, string>.
function openError(e) {
  return describeError(e).message;
}
