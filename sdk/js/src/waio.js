// The waio JavaScript SDK: what a plugin imports as "waio".
//
// A plugin module default-exports a class (or an object) with `asyncInvoke(record)` returning
// (or resolving to) an array of output records; the build (sdk/js/build.sh) wraps it into the
// `enricher` export of the WIT world with `runtime.js`. Nothing here names a call-id or a WIT
// type.

import { send as hostSend } from "waio:enricher/http@0.5.0";
import { report } from "waio:enricher/usage@0.5.0";
import { log as hostLog } from "waio:enricher/logging@0.5.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes of a body: a string (UTF-8), a Uint8Array, another typed array or an ArrayBuffer. */
export function bytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return encoder.encode(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError("a body must be a string, a Uint8Array or an ArrayBuffer");
}

// The result-future of the input a record was handed over with (not enumerable, not JSON).
export const SOURCE = Symbol("waio.source");
const HEADERS = Symbol("waio.headers");

/** One stream record: `key` (string or undefined), `timestamp` (ms or undefined), `payload` bytes. */
export class Record {
  constructor(key, timestamp, payload) {
    this.key = key;
    this.timestamp = timestamp;
    this.payload = payload;
  }

  /** A record with this payload (a JSON value, serialized) and no key or timestamp. */
  static fromJson(value) {
    return new Record(undefined, undefined, encoder.encode(JSON.stringify(value)));
  }

  /** The payload as text (UTF-8). */
  text() {
    return decoder.decode(this.payload);
  }

  /** The payload parsed as JSON; a payload that is not JSON throws a SyntaxError. */
  json() {
    return JSON.parse(decoder.decode(this.payload));
  }

  /** A new record with the same key and timestamp whose payload is `value` as JSON. */
  withJson(value) {
    return new Record(this.key, this.timestamp, encoder.encode(JSON.stringify(value)));
  }

  /** A new record with the same key and timestamp and this payload (string or bytes). */
  withPayload(payload) {
    return new Record(this.key, this.timestamp, bytes(payload));
  }

  /**
   * The input record's headers as `[name, Uint8Array]` pairs in the order they came (a name may
   * repeat): a Kafka record's headers; `[]` for records of other sources and records the plugin
   * made. The first call asks the host (a record that never asks pays nothing); call it before
   * the record is completed.
   */
  headers() {
    if (this[HEADERS] === undefined) {
      const source = this[SOURCE];
      let headers = [];
      if (source !== undefined) {
        try {
          headers = source.inputHeaders();
        } catch (e) {
          throw new TypeError(`record.headers() after the record was completed: ${describeError(e).message}`);
        }
      }
      this[HEADERS] = headers;
    }
    return this[HEADERS];
  }

  /** The value (Uint8Array) of the first input header named `name` (compared exactly), or undefined. */
  header(name) {
    const found = this.headers().find((h) => h[0] === name);
    return found === undefined ? undefined : found[1];
  }
}

/**
 * Why a record failed. Throw one to complete the record exceptionally with this kind and message;
 * any other exception fails the record as fatal with the message `Name: message`.
 */
export class Failure extends Error {
  constructor(message, kind = "fatal") {
    super(message);
    if (kind !== "fatal" && kind !== "retriable") {
      throw new TypeError(`failure kind must be "fatal" or "retriable", got ${JSON.stringify(kind)}`);
    }
    this.kind = kind;
  }

  get name() {
    return "Failure";
  }

  /** A passing fault (rate limited, server error, timeout): the host may try the record again. */
  static retriable(message) {
    return new Failure(message, "retriable");
  }

  /** A fault of the record or the plugin: a retry gives the same answer. */
  static fatal(message) {
    return new Failure(message, "fatal");
  }
}

/**
 * Why an HTTP request got no answer: `reason` is "denied", "invalid-request", "timeout",
 * "connection" or "unavailable" (the host failed it fast: the endpoint's circuit breaker is open).
 * The last three are retriable.
 */
export class HttpError extends Failure {
  constructor(reason, detail) {
    const retriable = reason === "timeout" || reason === "connection" || reason === "unavailable";
    super(httpErrorText(reason, detail), retriable ? "retriable" : "fatal");
    this.reason = reason;
    this.detail = detail;
  }

  get name() {
    return "HttpError";
  }
}

function httpErrorText(reason, detail) {
  switch (reason) {
    case "denied":
      return `request denied: ${detail}`;
    case "invalid-request":
      return `invalid request: ${detail}`;
    case "timeout":
      return "request timed out";
    case "connection":
      return `connection failed: ${detail}`;
    case "unavailable":
      return `unavailable: ${detail}`;
    default:
      return `HTTP error ${reason}: ${detail}`;
  }
}

/** An HTTP answer; any status counts as an answer. */
/**
 * Whether an answer with this status is worth retrying: 408, 429 and 5xx (the server is busy or
 * failing). The host applies the same rule (wit/retriable-statuses.txt).
 */
export function isRetriableStatus(status) {
  return status === 408 || status === 429 || (status >= 500 && status < 600);
}

export class Response {
  constructor(status, headers, body) {
    this.status = status;
    /** Array of [name, value] pairs as the server sent them. */
    this.headers = headers;
    /** The body bytes (Uint8Array). */
    this.body = body;
  }

  /** True for a 2xx status. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  /** The first value of header `name` (case-insensitive), or undefined. */
  header(name) {
    const wanted = name.toLowerCase();
    for (const [n, v] of this.headers) {
      if (n.toLowerCase() === wanted) return v;
    }
    return undefined;
  }

  text() {
    return decoder.decode(this.body);
  }

  json() {
    return JSON.parse(decoder.decode(this.body));
  }

  /**
   * Returns this response if its status is 2xx; else throws a Failure: retriable for 408, 429 and
   * 5xx (`isRetriableStatus`), fatal for other statuses, with the start of the body in the message.
   */
  throwForStatus() {
    if (this.ok) return this;
    let excerpt = this.text();
    if (excerpt.length > 200) excerpt = excerpt.slice(0, 200) + "...";
    const kind = isRetriableStatus(this.status) ? "retriable" : "fatal";
    throw new Failure(`HTTP status ${this.status}: ${excerpt}`, kind);
  }
}

// Set by the runtime: called before a request is sent or usage reported, so that inside an
// `invoke-columns` call the host learns which record the work is for (`begin`).
export const hostWork = { before: null };

function beforeHostWork() {
  const before = hostWork.before;
  if (before !== null) before();
}

// call-id -> [resolve, reject] of the promise `http.send` returned.
const pending = new Map();

function headerList(headers) {
  if (headers === undefined || headers === null) return [];
  if (Array.isArray(headers)) return headers.map(([n, v]) => [String(n), String(v)]);
  return Object.entries(headers).map(([n, v]) => [n, String(v)]);
}

/**
 * Non-blocking HTTP through the host. `send` returns a Promise of a `Response`; it rejects with an
 * `HttpError` when there is no answer (denied, invalid, timeout, connection).
 */
export const http = {
  /**
   * `request`: `{ url, method = "GET", headers (object or [name, value] pairs), body (string or
   * bytes), json (a value sent as a JSON body), timeoutMs }`. Header values may hold
   * `${secret:NAME}` placeholders that the host fills in.
   */
  send(request) {
    let body = request.body;
    const headers = headerList(request.headers);
    if (request.json !== undefined) {
      body = JSON.stringify(request.json);
      if (!headers.some(([n]) => n.toLowerCase() === "content-type")) {
        headers.push(["content-type", "application/json"]);
      }
    }
    beforeHostWork();
    const id = hostSend({
      method: request.method || "GET",
      url: String(request.url),
      headers,
      body: bytes(body),
      timeoutMs: request.timeoutMs === undefined || request.timeoutMs === null ? undefined : request.timeoutMs,
    });
    return new Promise((resolve, reject) => {
      pending.set(id, [resolve, reject]);
    });
  },

  get(url, options = {}) {
    return http.send({ ...options, method: "GET", url });
  },

  post(url, options = {}) {
    return http.send({ ...options, method: "POST", url });
  },
};

/** Called by the runtime with an `on-response` delivery. */
export function deliver(id, answer) {
  const waiter = pending.get(id);
  if (waiter === undefined) return;
  pending.delete(id);
  if (answer.tag === "ok") {
    const r = answer.val;
    waiter[0](new Response(r.status, r.headers, r.body));
  } else {
    const e = answer.val;
    waiter[1](new HttpError(e.tag, e.val));
  }
}

function clampU32(n) {
  const v = Math.trunc(Number(n));
  if (!(v > 0)) return 0;
  return v > 0xffffffff ? 0xffffffff : v;
}

/** Reports tokens used for the record being processed (cost metrics and budgets). */
export function reportUsage(model, inputTokens, outputTokens) {
  beforeHostWork();
  report({ model: String(model), inputTokens: clampU32(inputTokens), outputTokens: clampU32(outputTokens) });
}

function logAt(level) {
  return (...parts) => hostLog(level, parts.map((p) => (typeof p === "string" ? p : safeString(p))).join(" "));
}

function safeString(value) {
  try {
    return typeof value === "object" && value !== null && !(value instanceof Error)
      ? JSON.stringify(value)
      : String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** Lines in the host's log: `log.info("fetched", n, "rows")`. */
export const log = {
  trace: logAt("trace"),
  debug: logAt("debug"),
  info: logAt("info"),
  warn: logAt("warn"),
  error: logAt("error"),
};

/** The message a thrown value fails its record with. */
export function describeError(e) {
  if (e instanceof Failure) return { kind: e.kind, message: e.message };
  if (e instanceof Error) return { kind: "fatal", message: `${e.name}: ${e.message}` };
  return { kind: "fatal", message: `uncaught exception: ${safeString(e)}` };
}
