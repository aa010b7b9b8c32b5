//! A waio test plugin that does what a hostile or careless plugin would, through WASI and the
//! logging import, for the host's sandbox tests. It uses wit-bindgen directly, not the SDK, so it
//! has no panic hook: a panic is only a trap and whatever the guest wrote to stderr.
//!
//! Config (`[operator.config]`), acted on in `open`:
//! - `print` / `eprint`: a line written to stdout / stderr.
//! - `sleep_ms`: sleeps that long.
//! - `panic`: panics with this message.
//!
//! Record fields (a JSON object), acted on in `async-invoke`; the record completes with
//! `{"id"}` unless the mode stops it:
//! - `id`: any JSON, echoed in the output.
//! - `mode`: `ok` (default), `sleep` (`ms` milliseconds, std's sleep: `pollable.block`),
//!   `poll` (`ms` milliseconds through libc's `poll`: wasi:io/poll `poll`), `sleep_forever`,
//!   `panic` (with `message`), `log` (`message` through the logging import at `level`, default
//!   info, `repeat` times), `print` / `eprint` (`message` to stdout / stderr), `stderr` (`bytes` bytes to
//!   stderr, in lines of 100).

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Map, Value};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "enricher-plugin",
});

use exports::waio::enricher::enricher::Guest;
use waio::enricher::completion::{hold, ResultFuture};
use waio::enricher::logging::log;
use waio::enricher::types::{
    BatchCompletions, CallId, Event, EventColumns, Failure, FailureKind, HttpError, HttpResponse,
    LogLevel,
};

struct Hostile;

fn fields(payload: &[u8]) -> Map<String, Value> {
    serde_json::from_slice(payload).unwrap_or_default()
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> &'a str {
    fields.get(name).and_then(Value::as_str).unwrap_or("")
}

fn number(fields: &Map<String, Value>, name: &str) -> u64 {
    fields.get(name).and_then(Value::as_u64).unwrap_or(0)
}

fn poll_for(ms: u64) {
    // No descriptors: libc's poll waits on a clock pollable through wasi:io/poll `poll`.
    let timeout = i32::try_from(ms).unwrap_or(i32::MAX);
    // SAFETY: a null array of zero descriptors is valid for poll(2).
    unsafe {
        libc::poll(std::ptr::null_mut(), 0, timeout);
    }
}

impl Guest for Hostile {
    fn open(config: String) -> Result<(), String> {
        let config = fields(config.as_bytes());
        if let Some(line) = config.get("print").and_then(Value::as_str) {
            println!("{line}");
        }
        if let Some(line) = config.get("eprint").and_then(Value::as_str) {
            eprintln!("{line}");
        }
        if let Some(ms) = config.get("sleep_ms").and_then(Value::as_u64) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(message) = config.get("panic").and_then(Value::as_str) {
            panic!("{message}");
        }
        Ok(())
    }

    fn async_invoke(input: Event, output: ResultFuture) {
        let record = fields(&input.payload);
        match text(&record, "mode") {
            "sleep" => std::thread::sleep(Duration::from_millis(number(&record, "ms"))),
            "poll" => poll_for(number(&record, "ms")),
            "sleep_forever" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "panic" => panic!("{}", text(&record, "message")),
            "log" => {
                let level = match text(&record, "level") {
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    _ => LogLevel::Info,
                };
                for _ in 0..number(&record, "repeat").max(1) {
                    log(level, text(&record, "message"));
                }
            }
            "print" => println!("{}", text(&record, "message")),
            "eprint" => eprintln!("{}", text(&record, "message")),
            "stderr" => {
                let line = format!("{}\n", "x".repeat(99));
                let mut left = number(&record, "bytes") as usize;
                let mut stderr = std::io::stderr().lock();
                while left > 0 {
                    let n = left.min(line.len());
                    let _ = stderr.write_all(&line.as_bytes()[..n]);
                    left -= n;
                }
            }
            _ => {}
        }
        let id = record.get("id").cloned().unwrap_or(Value::Null);
        output.complete(&[Event {
            key: input.key,
            timestamp: input.timestamp,
            payload: json!({ "id": id }).to_string().into_bytes(),
        }]);
    }

    fn invoke_columns(inputs: EventColumns) -> BatchCompletions {
        // Each record in turn with a future of its own, the host told which one is served.
        let mut start = 0;
        let records = inputs
            .payload_ends
            .iter()
            .zip(inputs.keys)
            .zip(inputs.timestamps);
        for (index, ((&end, key), timestamp)) in records.enumerate() {
            let payload = inputs.payloads[start..end as usize].to_vec();
            start = end as usize;
            let output = hold(index as u32);
            output.begin();
            let input = Event {
                key,
                timestamp,
                payload,
            };
            Self::async_invoke(input, output);
        }
        BatchCompletions {
            completed: vec![],
            output_ends: vec![],
            outputs: EventColumns {
                payloads: vec![],
                payload_ends: vec![],
                keys: vec![],
                timestamps: vec![],
            },
            failed: vec![],
        }
    }

    fn timeout(_input: Event, output: ResultFuture) {
        output.complete_exceptionally(&Failure {
            kind: FailureKind::Retriable,
            message: "timed out".into(),
        });
    }

    fn on_response(_id: CallId, _response: Result<HttpResponse, HttpError>) {}

    fn close() {}
}

export!(Hostile);
