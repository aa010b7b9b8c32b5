//! Plugins built against `waio:enricher@0.1.0` still run. Their imports are served by the same
//! host code as the current version's, through conversions between the two versions' types (identical but for
//! `http-error`); the one answer 0.1.0 cannot express, `unavailable`, reaches such a plugin as
//! `connection("unavailable: ...")`, which it already treats as a passing fault.
//!
//! `wit/compat/0.1.0` is the contract as it was released; it never changes. It has no
//! `async-invoke-batch`: the host calls it one record at a time.

use wasmtime::component::Resource;

use crate::plugin::bindings as current;
use crate::plugin::host::{FutureRef, HostState};
// The current imports, which do the work.
use current::waio::enricher::completion::HostResultFuture;
use current::waio::enricher::http::Host as HttpHost;
use current::waio::enricher::logging::Host as LoggingHost;
use current::waio::enricher::usage::Host as UsageHost;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/compat/0.1.0",
        world: "enricher-plugin",
        with: {
            "waio:enricher/completion.result-future": crate::plugin::host::FutureRef,
        },
        imports: { default: trappable },
    });
}

use bindings::waio::enricher::{completion, http, logging, types, usage};
pub use bindings::{EnricherPlugin, EnricherPluginPre};

/// The version of the contract this module adapts.
pub const WIT_VERSION: &str = "0.1.0";

/// The world a 0.1.0 plugin implements, as `waio check` prints it.
pub const WORLD: &str = "waio:enricher/enricher-plugin@0.1.0";

impl From<types::Event> for current::Event {
    fn from(e: types::Event) -> Self {
        current::Event {
            key: e.key,
            timestamp: e.timestamp,
            payload: e.payload,
        }
    }
}

impl From<&current::Event> for types::Event {
    fn from(e: &current::Event) -> Self {
        types::Event {
            key: e.key.clone(),
            timestamp: e.timestamp,
            payload: e.payload.clone(),
        }
    }
}

impl From<types::Failure> for current::Failure {
    fn from(f: types::Failure) -> Self {
        let kind = match f.kind {
            types::FailureKind::Retriable => current::FailureKind::Retriable,
            types::FailureKind::Fatal => current::FailureKind::Fatal,
        };
        current::Failure {
            kind,
            message: f.message,
        }
    }
}

/// The answer to a request as a 0.1.0 plugin reads it.
pub fn answer(
    answer: Result<&current::HttpResponse, &current::HttpError>,
) -> Result<types::HttpResponse, types::HttpError> {
    use current::HttpError as New;
    use types::HttpError as Old;
    match answer {
        Ok(r) => Ok(types::HttpResponse {
            status: r.status,
            headers: r.headers.clone(),
            body: r.body.clone(),
        }),
        Err(e) => Err(match e {
            New::Denied(why) => Old::Denied(why.clone()),
            New::InvalidRequest(why) => Old::InvalidRequest(why.clone()),
            New::Timeout => Old::Timeout,
            New::Connection(why) => Old::Connection(why.clone()),
            // 0.1.0 has no such case; a connection failure is retriable too.
            New::Unavailable(_) => Old::Connection(e.to_string()),
        }),
    }
}

impl types::Host for HostState {}

impl completion::Host for HostState {}

impl completion::HostResultFuture for HostState {
    fn complete(
        &mut self,
        handle: Resource<FutureRef>,
        outputs: Vec<types::Event>,
    ) -> wasmtime::Result<()> {
        let outputs = outputs.into_iter().map(current::Event::from).collect();
        HostResultFuture::complete(self, handle, outputs)
    }

    fn complete_exceptionally(
        &mut self,
        handle: Resource<FutureRef>,
        error: types::Failure,
    ) -> wasmtime::Result<()> {
        HostResultFuture::complete_exceptionally(self, handle, error.into())
    }

    fn drop(&mut self, handle: Resource<FutureRef>) -> wasmtime::Result<()> {
        HostResultFuture::drop(self, handle)
    }
}

impl http::Host for HostState {
    fn send(&mut self, r: types::HttpRequest) -> wasmtime::Result<u64> {
        HttpHost::send(
            self,
            current::HttpRequest {
                method: r.method,
                url: r.url,
                headers: r.headers,
                body: r.body,
                timeout_ms: r.timeout_ms,
            },
        )
    }
}

impl usage::Host for HostState {
    fn report(&mut self, u: types::TokenUsage) -> wasmtime::Result<()> {
        UsageHost::report(
            self,
            current::TokenUsage {
                model: u.model,
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
            },
        )
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        let level = match level {
            types::LogLevel::Trace => current::LogLevel::Trace,
            types::LogLevel::Debug => current::LogLevel::Debug,
            types::LogLevel::Info => current::LogLevel::Info,
            types::LogLevel::Warn => current::LogLevel::Warn,
            types::LogLevel::Error => current::LogLevel::Error,
        };
        LoggingHost::log(self, level, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_endpoint_reaches_a_0_1_0_plugin_as_a_connection_failure() {
        let old = |new: current::HttpError| format!("{:?}", answer(Err(&new)));
        let why = "circuit breaker open for http://127.0.0.1:9".to_string();
        assert_eq!(
            old(current::HttpError::Unavailable(why)),
            format!(
                "{:?}",
                Err::<(), _>(types::HttpError::Connection(
                    "unavailable: circuit breaker open for http://127.0.0.1:9".into()
                ))
            )
        );
        // The other cases keep their case and text.
        for (new, expect) in [
            (current::HttpError::Timeout, types::HttpError::Timeout),
            (
                current::HttpError::Denied("no".into()),
                types::HttpError::Denied("no".into()),
            ),
            (
                current::HttpError::InvalidRequest("bad".into()),
                types::HttpError::InvalidRequest("bad".into()),
            ),
            (
                current::HttpError::Connection("reset".into()),
                types::HttpError::Connection("reset".into()),
            ),
        ] {
            assert_eq!(old(new), format!("{:?}", Err::<(), _>(expect)));
        }
    }

    #[test]
    fn the_versions_are_those_of_the_wit_packages() {
        let wit = include_str!("../../../../wit/compat/0.1.0/waio.wit");
        assert!(wit.contains(&format!("package waio:enricher@{WIT_VERSION};")));
        assert_eq!(
            WORLD,
            format!("waio:enricher/enricher-plugin@{WIT_VERSION}")
        );
    }
}
