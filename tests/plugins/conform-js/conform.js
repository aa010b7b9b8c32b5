// The waio conformance plugin in JavaScript: each record chooses its behaviour (see
// docs/specs/LANGUAGES.md, "CONFORMANCE PROTOCOL"; the Rust twin is tests/plugins/behave).
//
// Config: {"echo_url": "http://127.0.0.1:PORT/echo"}. Record fields: id, mode (now, later, fail,
// never, raise, raise_later, headers), results, delay_ms, on_timeout (fail, fallback), tokens, log, message.

import { Failure, http, log, reportUsage } from "waio";

function outputs(record, fields) {
  const n = fields.results ?? 1;
  const out = [];
  for (let i = 0; i < n; i++) out.push(record.withJson({ id: fields.id ?? null, n: i }));
  return out;
}

export default class Conform {
  open(config) {
    this.echoUrl = config.echo_url;
  }

  // GET the echo server with the record's delay; an HTTP error fails the record as retriable.
  async echo(fields) {
    if (typeof this.echoUrl !== "string") throw Failure.fatal("mode needs `echo_url` in the plugin config");
    try {
      await http.get(`${this.echoUrl}?delay_ms=${fields.delay_ms ?? 0}`);
    } catch (e) {
      throw Failure.retriable(e.message);
    }
  }

  async asyncInvoke(record) {
    const fields = record.json();
    if (fields.tokens !== undefined) reportUsage("conform", fields.tokens, fields.tokens);
    if (typeof fields.log === "string") log.info(fields.log);
    switch (fields.mode ?? "now") {
      case "now":
        return outputs(record, fields);
      case "later":
        await this.echo(fields);
        return outputs(record, fields);
      case "fail":
        throw Failure.fatal(fields.message ?? "failed on purpose");
      case "never":
        return new Promise(() => {});
      case "raise":
        throw new TypeError("boom " + fields.id);
      case "raise_later":
        await this.echo(fields);
        throw new TypeError("boom " + fields.id);
      case "headers": {
        const text = new TextDecoder();
        const headers = record.headers().map(([name, value]) => [name, text.decode(value)]);
        return [record.withJson({ id: fields.id ?? null, headers })];
      }
      default:
        throw Failure.fatal(`unknown mode "${fields.mode}"`);
    }
  }

  async timeout(record) {
    const fields = record.json();
    if (fields.on_timeout === "fallback") return [record.withJson({ id: fields.id ?? null, fallback: true })];
    throw Failure.retriable("timed out");
  }
}
