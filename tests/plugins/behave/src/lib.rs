//! A waio test plugin whose behaviour each record chooses, for the host's end-to-end tests.
//!
//! Config: `echo_url` (e.g. `http://127.0.0.1:PORT/echo`, needed by the `*_later` modes) and
//! `on_timeout` (default for records that do not set it: `"fail"`, `"fallback"` or `"ignore"`).
//!
//! Record fields (a JSON object):
//! - `id`: any JSON, echoed in every output.
//! - `mode`: `now` (default), `later`, `fail`, `fail_later`, `twice`, `twice_later`, `never`,
//!   `panic`, `panic_later`, `loop`, `alloc`, `http`, `sandbox`, `hold` (keeps `hold_kib` KiB
//!   of memory while it waits for the echo server, then completes), `fanout` (sends `requests`
//!   requests to the echo server at once, completes when all are answered), `late_panic`
//!   (panics when invoked at or after the wall-clock time `after_ms`, ms since the epoch, else
//!   like `later`: a record that traps when it is invoked again into a fresh instance), `text`
//!   (one output: the record's `text` field as the raw payload, not JSON), `flaky` (fails
//!   retriably, or as `kind` says, the first `fail_times` invocations of its `id`, then
//!   completes; with `then_empty: true` each failing invocation also completes with nothing
//!   right after failing, a second completion the host must ignore), `empty_first` (completes
//!   with nothing the first `empty_times` invocations of its `id`, then completes), `http_fail`
//!   (sends a GET to `url` with `headers`; completes on a 2xx answer, else fails retriably
//!   with the status or the HTTP error). These three count invocations per `id` inside the
//!   instance, complete with one output `{"id", "invocation": N}` (1 = the first call) and say
//!   `(invocation N)` in their failures.
//! - `results`: number of outputs (default 1; 0 completes with none), each `{"id", "n"}`.
//! - `delay_ms`: delay asked from the echo server by the `*_later` modes (default 0).
//! - `kind` / `message`: the failure of `fail` and `fail_later` (default fatal,
//!   "failed on purpose").
//! - `tokens`: reports `tokens` input and output tokens for model `behave`.
//! - `log`: logged at info level.
//! - `on_timeout`: `fail` (the SDK default), `fallback` (one output `{"id", "fallback": true}`),
//!   `fallback_later` (the same, once the echo server answered a request sent from `timeout`)
//!   or `ignore` (leave the record uncompleted).
//! - `url`, `method`, `headers`, `body`: the request of modes `http` and `call`.
//! - mode `call`: like `http`, but a final answer that is not a success fails the record the
//!   way an enricher would (`Response::error_for_status`: 408, 429 and 5xx retriable, other
//!   statuses fatal; an `HttpError` by its own rule).
//! - mode `headers`: one output `{"id", "headers": [[name, value], ...]}`, the input record's
//!   headers (`input-headers`) in order, values as UTF-8 (lossy).

use std::hint::black_box;

use waio_sdk::http::{self, HttpError, Request, Response};
use waio_sdk::serde_json::{json, Map, Value};
use waio_sdk::{
    export_enricher, log, report_usage, Config, Enricher, Event, Failure, FailureKind, ResultFuture,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnTimeout {
    Fail,
    Fallback,
    FallbackLater,
    Ignore,
}

impl OnTimeout {
    fn parse(value: &str) -> Result<OnTimeout, String> {
        match value {
            "fail" => Ok(OnTimeout::Fail),
            "fallback" => Ok(OnTimeout::Fallback),
            "fallback_later" => Ok(OnTimeout::FallbackLater),
            "ignore" => Ok(OnTimeout::Ignore),
            other => Err(format!(
                "on_timeout must be \"fail\", \"fallback\", \"fallback_later\" or \"ignore\", got \"{other}\""
            )),
        }
    }
}

struct Behave {
    echo_url: Option<String>,
    on_timeout: OnTimeout,
    /// Invocations so far per record `id` (modes `flaky`, `empty_first`, `http_fail`).
    invocations: std::cell::RefCell<std::collections::HashMap<String, u64>>,
}

/// The parsed record, shared by invoke and the callbacks.
struct Record {
    id: Value,
    fields: Map<String, Value>,
}

impl Record {
    fn parse(input: &Event) -> Result<Record, Failure> {
        let fields = input.json_object()?;
        Ok(Record {
            id: fields.get("id").cloned().unwrap_or(Value::Null),
            fields,
        })
    }

    fn str(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    fn u64(&self, field: &str) -> Option<u64> {
        self.fields.get(field).and_then(Value::as_u64)
    }

    fn mode(&self) -> &str {
        self.str("mode").unwrap_or("now")
    }

    /// The `results` outputs of modes `now` and `later`.
    fn outputs(&self, input: &Event) -> Result<Vec<Event>, Failure> {
        (0..self.u64("results").unwrap_or(1))
            .map(|n| input.with_json(&json!({"id": self.id, "n": n})))
            .collect()
    }

    fn one(&self, input: &Event, mut value: Value) -> Vec<Event> {
        value["id"] = self.id.clone();
        vec![input.with_payload(value.to_string())]
    }

    /// The failure of mode `flaky`: retriable unless `kind` says `fatal`.
    fn failure_or_retriable(&self) -> Failure {
        let message = self.str("message").unwrap_or("failed on purpose");
        match self.str("kind") {
            Some("fatal") => Failure::fatal(message),
            _ => Failure::retriable(message),
        }
    }

    fn failure(&self) -> Failure {
        let message = self.str("message").unwrap_or("failed on purpose");
        match self.str("kind") {
            Some("retriable") => Failure::retriable(message),
            _ => Failure::fatal(message),
        }
    }

    /// complete, complete again, fail: the host must keep only the first.
    fn three_completions(&self, input: &Event, output: &ResultFuture) {
        output.complete_with(self.outputs(input));
        output.complete(self.one(input, json!({"second": true})));
        output.fail(Failure {
            kind: FailureKind::Fatal,
            message: "third completion".into(),
        });
    }
}

impl Behave {
    /// GET the echo server with the record's delay, then run `then` with the answer.
    fn later(
        &self,
        record: Record,
        input: Event,
        output: ResultFuture,
        then: impl FnOnce(Record, Event, ResultFuture) + 'static,
    ) {
        let Some(echo_url) = self.echo_url.as_deref() else {
            return output.fail(Failure::fatal("mode needs `echo_url` in the plugin config"));
        };
        let delay = record.u64("delay_ms").unwrap_or(0);
        http::send(
            Request::get(format!("{echo_url}?delay_ms={delay}")),
            move |answer| match answer {
                Ok(_) => then(record, input, output),
                Err(e) => output.fail(Failure::retriable(e.to_string())),
            },
        );
    }

    /// Mode `fanout`: `requests` requests to the echo server at once; completes with one output
    /// once every answer is back.
    fn fanout(&self, record: Record, input: Event, output: ResultFuture) {
        let Some(echo_url) = self.echo_url.as_deref() else {
            return output.fail(Failure::fatal("mode needs `echo_url` in the plugin config"));
        };
        let requests = record.u64("requests").unwrap_or(1).max(1);
        let delay = record.u64("delay_ms").unwrap_or(0);
        let left = std::rc::Rc::new(std::cell::Cell::new(requests));
        let shared = std::rc::Rc::new((record, input, output));
        for _ in 0..requests {
            let left = left.clone();
            let shared = shared.clone();
            http::send(
                Request::get(format!("{echo_url}?delay_ms={delay}")),
                move |_| {
                    left.set(left.get() - 1);
                    if left.get() == 0 {
                        let (record, input, output) = &*shared;
                        output.complete_with(record.outputs(input));
                    }
                },
            );
        }
    }
}

impl Behave {
    /// Counts an invocation of the record's `id`; returns its number (1 = the first).
    fn count_invocation(&self, record: &Record) -> u64 {
        let mut invocations = self.invocations.borrow_mut();
        let n = invocations.entry(record.id.to_string()).or_default();
        *n += 1;
        *n
    }
}

/// Modes `flaky`, `empty_first` and `http_fail`, at their `invocation`-th call for the record.
fn counted(record: Record, input: Event, output: ResultFuture, invocation: u64) {
    let with_invocation = move |record: &Record, input: &Event| {
        vec![input.with_payload(json!({"id": record.id, "invocation": invocation}).to_string())]
    };
    match record.mode() {
        "flaky" if invocation <= record.u64("fail_times").unwrap_or(1) => {
            let mut failure = record.failure_or_retriable();
            failure.message = format!("{} (invocation {invocation})", failure.message);
            output.fail(failure);
            if record.fields.get("then_empty") == Some(&Value::Bool(true)) {
                output.complete(Vec::new());
            }
        }
        "empty_first" if invocation <= record.u64("empty_times").unwrap_or(1) => {
            output.complete(Vec::new())
        }
        "http_fail" => {
            let Some(url) = record.str("url") else {
                return output.fail(Failure::fatal("mode http_fail needs a `url` field"));
            };
            let mut request = Request::get(url);
            if let Some(Value::Object(headers)) = record.fields.get("headers") {
                for (name, value) in headers {
                    request = request.header(name, value.as_str().unwrap_or_default());
                }
            }
            http::send(request, move |answer| match answer {
                Ok(response) if (200..300).contains(&response.status) => {
                    output.complete(with_invocation(&record, &input))
                }
                Ok(response) => output.fail(Failure::retriable(format!(
                    "HTTP {} (invocation {invocation})",
                    response.status
                ))),
                Err(e) => output.fail(Failure::retriable(format!("{e} (invocation {invocation})"))),
            });
        }
        _ => output.complete(with_invocation(&record, &input)),
    }
}

impl Enricher for Behave {
    fn open(config: Config) -> Result<Self, String> {
        config.deny_unknown(&["echo_url", "on_timeout"])?;
        let on_timeout = match config.opt_str("on_timeout")? {
            Some(value) => OnTimeout::parse(value)?,
            None => OnTimeout::Fail,
        };
        Ok(Behave {
            echo_url: config.opt_str("echo_url")?.map(str::to_string),
            on_timeout,
            invocations: Default::default(),
        })
    }

    fn invoke(&self, input: Event, output: ResultFuture) {
        let record = match Record::parse(&input) {
            Ok(record) => record,
            Err(failure) => return output.fail(failure),
        };
        if let Some(tokens) = record.u64("tokens") {
            let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
            report_usage("behave", tokens, tokens);
        }
        if let Some(line) = record.fields.get("log") {
            match line {
                Value::String(line) => log::info(line),
                other => log::info(other.to_string()),
            }
        }
        match record.mode() {
            "now" => output.complete_with(record.outputs(&input)),
            "later" => self.later(record, input, output, |record, input, output| {
                output.complete_with(record.outputs(&input))
            }),
            "fail" => output.fail(record.failure()),
            "fail_later" => self.later(record, input, output, |record, _, output| {
                output.fail(record.failure())
            }),
            "twice" => record.three_completions(&input, &output),
            "twice_later" => self.later(record, input, output, |record, input, output| {
                record.three_completions(&input, &output)
            }),
            "never" => drop(output),
            "panic" => panic!("boom {}", record.id),
            "panic_later" => self.later(record, input, output, |record, _, _| {
                panic!("boom {}", record.id)
            }),
            "loop" => spin(),
            "alloc" => hog_memory(),
            "http" => send_request(record, input, output, false),
            "call" => send_request(record, input, output, true),
            "sandbox" => output.complete(record.one(&input, sandbox())),
            "hold" => {
                let held = black_box(touched(
                    record.u64("hold_kib").unwrap_or(1024) as usize * 1024,
                ));
                self.later(record, input, output, move |record, input, output| {
                    black_box(&held);
                    output.complete_with(record.outputs(&input))
                })
            }
            "fanout" => self.fanout(record, input, output),
            "late_panic" => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if now_ms >= record.u64("after_ms").unwrap_or(0) {
                    panic!("late {}", record.id);
                }
                self.later(record, input, output, |record, input, output| {
                    output.complete_with(record.outputs(&input))
                })
            }
            "text" => output.complete_one(input.with_payload(record.str("text").unwrap_or(""))),
            "headers" => {
                let headers: Vec<Value> = output
                    .input_headers()
                    .into_iter()
                    .map(|(name, value)| json!([name, String::from_utf8_lossy(&value)]))
                    .collect();
                output.complete(record.one(&input, json!({ "headers": headers })))
            }
            "flaky" | "empty_first" | "http_fail" => {
                let invocation = self.count_invocation(&record);
                counted(record, input, output, invocation)
            }
            other => output.fail(Failure::fatal(format!("unknown mode \"{other}\""))),
        }
    }

    fn timeout(&self, input: Event, output: ResultFuture) {
        let record = Record::parse(&input).ok();
        let policy = match record.as_ref().and_then(|r| r.str("on_timeout")) {
            Some(value) => match OnTimeout::parse(value) {
                Ok(policy) => policy,
                Err(message) => return output.fail(Failure::fatal(message)),
            },
            None => self.on_timeout,
        };
        match (policy, record) {
            (OnTimeout::Fallback, Some(record)) => {
                output.complete(record.one(&input, json!({"fallback": true})))
            }
            (OnTimeout::FallbackLater, Some(record)) => {
                self.later(record, input, output, |record, input, output| {
                    output.complete(record.one(&input, json!({"fallback": "later"})))
                })
            }
            (OnTimeout::Ignore, _) => {}
            _ => output.fail(Failure::retriable("timed out")),
        }
    }
}

/// Never returns; `black_box` keeps the optimizer from proving the loop useless.
fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Grabs memory 1 MiB at a time, writing every page, until the host's limit stops it.
fn hog_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for (i, byte) in chunk.iter_mut().enumerate().step_by(4096) {
            *byte = i as u8 | 1;
        }
        hoard.push(black_box(chunk));
        black_box(&hoard);
    }
}

/// `bytes` of memory with every page written, so the instance really grows.
fn touched(bytes: usize) -> Vec<u8> {
    let mut memory = vec![0u8; bytes];
    for (i, byte) in memory.iter_mut().enumerate().step_by(4096) {
        *byte = i as u8 | 1;
    }
    memory
}

/// Mode `http`: the answer, or the HTTP error, as an output (never a failure).
/// Modes `http` (`strict` false: any answer is an output) and `call` (`strict`: a failed
/// answer fails the record).
fn send_request(record: Record, input: Event, output: ResultFuture, strict: bool) {
    let Some(url) = record.str("url") else {
        return output.fail(Failure::fatal("mode http needs a `url` field"));
    };
    let mut request = Request::new(record.str("method").unwrap_or("GET"), url);
    if let Some(Value::Object(headers)) = record.fields.get("headers") {
        for (name, value) in headers {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            request = request.header(name, value);
        }
    }
    if let Some(body) = record.str("body") {
        request = request.body(body);
    }
    if let Some(timeout_ms) = record.u64("timeout_ms") {
        request = request.timeout_ms(u32::try_from(timeout_ms).ok());
    }
    http::send(request, move |answer| {
        if strict {
            let checked = answer
                .map_err(Failure::from)
                .and_then(Response::error_for_status);
            return match checked {
                Ok(response) => {
                    output.complete(record.one(&input, json!({"status": response.status})))
                }
                Err(failure) => output.fail(failure),
            };
        }
        output.complete(record.one(&input, http_result(answer)));
    });
}

fn http_result(answer: Result<Response, HttpError>) -> Value {
    match answer {
        Ok(response) => json!({"status": response.status, "body": response.text()}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Mode `sandbox`: what the plugin can see of its environment, files and network.
fn sandbox() -> Value {
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let file = match std::fs::read_to_string("/etc/hostname") {
        Ok(text) => format!("ok:{text}"),
        Err(e) => format!("err:{e}"),
    };
    let net = match std::net::TcpStream::connect("127.0.0.1:1") {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("err:{e}"),
    };
    json!({"env": env, "file": file, "net": net})
}

export_enricher!(Behave);

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &str) -> (Record, Event) {
        let input = Event {
            key: Some("k".into()),
            timestamp: Some(9),
            payload: payload.as_bytes().to_vec(),
        };
        (Record::parse(&input).unwrap(), input)
    }

    #[test]
    fn outputs_echo_the_id() {
        let (r, input) = record(r#"{"id": "a", "results": 3}"#);
        let out = r.outputs(&input).unwrap();
        let values: Vec<Value> = out.iter().map(|e| e.json().unwrap()).collect();
        assert_eq!(
            values,
            vec![
                json!({"id": "a", "n": 0}),
                json!({"id": "a", "n": 1}),
                json!({"id": "a", "n": 2})
            ]
        );
        assert!(out
            .iter()
            .all(|e| e.key.as_deref() == Some("k") && e.timestamp == Some(9)));
        let (r, input) = record(r#"{"id": 1, "results": 0}"#);
        assert!(r.outputs(&input).unwrap().is_empty());
        let (r, input) = record(r#"{"id": {"x": 1}}"#);
        assert_eq!(r.outputs(&input).unwrap().len(), 1);
    }

    #[test]
    fn failures_follow_the_record() {
        let (r, _) = record(r#"{"kind": "retriable", "message": "try again"}"#);
        assert_eq!(r.failure(), Failure::retriable("try again"));
        let (r, _) = record(r#"{}"#);
        assert_eq!(r.failure(), Failure::fatal("failed on purpose"));
    }

    #[test]
    fn http_results_are_outputs() {
        let v = http_result(Ok(Response {
            status: 418,
            headers: vec![],
            body: b"teapot".to_vec(),
        }));
        assert_eq!(v, json!({"status": 418, "body": "teapot"}));
        let v = http_result(Err(HttpError::Denied("host 10.0.0.1 not allowed".into())));
        assert_eq!(
            v,
            json!({"error": "request denied: host 10.0.0.1 not allowed"})
        );
    }

    #[test]
    fn one_output_carries_the_id() {
        let (r, input) = record(r#"{"id": 7}"#);
        let out = r.one(&input, json!({"fallback": true}));
        assert_eq!(
            out[0].json::<Value>().unwrap(),
            json!({"fallback": true, "id": 7})
        );
    }
}
