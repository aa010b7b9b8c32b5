//! A plugin built against `waio:enricher@0.4.0` (`wit/compat/0.4.0`, the contract as it was
//! released), so tests can check that the host still runs plugins built before 0.5.0 (which
//! replaced `async-invoke-batch` with `invoke-columns`), with batches through
//! `async-invoke-batch`.
//!
//! A record with a string field `url` is answered by a GET of that URL: the output is the record's
//! `id` with `status` (an answer) or `error` (the `http-error` case and its text); any other record
//! is echoed.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({
    path: "../../../wit/compat/0.4.0",
    world: "enricher-plugin",
});

use exports::waio::enricher::enricher::Guest;
use waio::enricher::completion::ResultFuture;
use waio::enricher::http::send;
use waio::enricher::types::{CallId, Event, HttpError, HttpRequest, HttpResponse};

thread_local! {
    /// Records waiting for the answer to their request, by call id.
    static WAITING: RefCell<HashMap<CallId, (Event, ResultFuture)>> = RefCell::new(HashMap::new());
}

/// The value of the string field `name` in a flat JSON object, without a JSON parser (the
/// fixture stays tiny): enough for `{"id":"a","url":"http://..."}`.
fn field(payload: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_string())
}

struct Contract04;

impl Guest for Contract04 {
    fn open(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn async_invoke(input: Event, output: ResultFuture) {
        let Some(url) = field(&input.payload, "url") else {
            return output.complete(&[input]);
        };
        let id = send(&HttpRequest {
            method: "GET".into(),
            url,
            headers: vec![],
            body: vec![],
            timeout_ms: None,
        });
        WAITING.with(|w| w.borrow_mut().insert(id, (input, output)));
    }

    fn async_invoke_batch(inputs: Vec<(Event, ResultFuture)>) {
        for (input, output) in inputs {
            output.begin();
            Self::async_invoke(input, output);
        }
    }

    fn timeout(input: Event, output: ResultFuture) {
        output.complete(&[input]);
    }

    fn on_response(id: CallId, response: Result<HttpResponse, HttpError>) {
        let Some((input, output)) = WAITING.with(|w| w.borrow_mut().remove(&id)) else {
            return;
        };
        let answer = match response {
            Ok(r) => format!("\"status\":{}", r.status),
            Err(e) => {
                let (case, text) = match e {
                    HttpError::Denied(m) => ("denied", m),
                    HttpError::InvalidRequest(m) => ("invalid-request", m),
                    HttpError::Timeout => ("timeout", String::new()),
                    HttpError::Connection(m) => ("connection", m),
                    HttpError::Unavailable(m) => ("unavailable", m),
                };
                let text = text.replace(['"', '\\'], "'");
                format!("\"error\":\"{case}: {text}\"")
            }
        };
        let id = field(&input.payload, "id").unwrap_or_default();
        output.complete(&[Event {
            payload: format!("{{\"id\":\"{id}\",{answer}}}").into_bytes(),
            ..input
        }]);
    }

    fn close() {}
}

export!(Contract04);
