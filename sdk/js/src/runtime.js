// Turns a plugin class (or object) into the `enricher` export of the WIT world `enricher-plugin`.
// The build's generated entry module does `export const enricher = enricherExport(Plugin)`.
//
// Every export returns synchronously: componentize-js would run its event loop until a returned
// promise settled, and a record waiting for an HTTP answer can only settle in a later
// `on-response` call. Promise continuations still run before each export call returns, because
// componentize-js drains the microtask queue after every export call.

import { hold } from "waio:enricher/completion@0.5.0";
import { Failure, Record, SOURCE, bytes, describeError, deliver, log } from "./waio.js";

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

// Takes the columns of an `invoke-columns` call apart into [event, output] pairs, each output the
// record's future held from the host, so that the batch runs as the per-record code expects.
function heldInputs(columns) {
  const { payloads, payloadEnds, keys, timestamps } = columns;
  const n = payloadEnds.length;
  const inputs = new Array(n);
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = payloadEnds[i];
    // A view, not a copy: the bindings already copied the batch's bytes out of linear memory.
    const event = { key: keys[i], timestamp: timestamps[i], payload: payloads.subarray(start, end) };
    inputs[i] = [event, hold(i)];
    start = end;
  }
  return inputs;
}

// What `invoke-columns` returns: nothing completed in the result, every record goes through its
// held future (completed before the call returns or later).
function noCompletions() {
  return {
    completed: new Uint32Array(0),
    outputEnds: new Uint32Array(0),
    outputs: { payloads: new Uint8Array(0), payloadEnds: new Uint32Array(0), keys: [], timestamps: [] },
    failed: [],
  };
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
      const inputs = heldInputs(columns);
      if (invokeBatch !== null) {
        runBatch(plugin, invokeBatch, inputs);
        return noCompletions();
      }
      // For each record: `begin`, then exactly what `asyncInvoke` does.
      const p = plugin;
      const method = invoke;
      for (let i = 0, n = inputs.length; i < n; i++) {
        const pair = inputs[i];
        const output = pair[1];
        output.begin();
        run(p, method, pair[0], output);
      }
      return noCompletions();
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
