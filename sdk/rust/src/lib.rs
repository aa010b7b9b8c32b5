//! Write [waio](https://github.com/) enricher plugins in Rust.
//!
//! A plugin is a WebAssembly component that enriches stream records, shaped after Flink's
//! `AsyncFunction`: the host calls [`Enricher::invoke`] once per record with a [`ResultFuture`];
//! the plugin returns at once and completes the future now, or later from the callback of an
//! [`http::send`]. The host performs every request, so it owns timeouts, retries, caching, rate
//! limits, the network allowlist and secrets; a plugin never blocks and never sees an API key.
//!
//! ```no_run
//! use waio_sdk::{export_enricher, http, Config, Enricher, Event, Failure, ResultFuture};
//!
//! struct Shout {
//!     field: String,
//! }
//!
//! impl Enricher for Shout {
//!     fn open(config: Config) -> Result<Self, String> {
//!         Ok(Shout { field: config.get_or("field", "text".to_string())? })
//!     }
//!
//!     fn invoke(&self, input: Event, output: ResultFuture) {
//!         let result = input.json_object().and_then(|mut record| {
//!             let text = record.get(&self.field).and_then(|v| v.as_str()).unwrap_or("");
//!             let loud = text.to_uppercase();
//!             record.insert(self.field.clone(), loud.into());
//!             Ok(vec![input.with_json(&record)?])
//!         });
//!         output.complete_with(result);
//!     }
//! }
//!
//! export_enricher!(Shout);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`: the output is a component.
//!
//! A panic inside [`Enricher::invoke`], [`Enricher::timeout`] or an HTTP callback fails the
//! record being processed (a fatal failure whose message starts with `plugin panicked:`) before
//! the instance traps; the host then discards the instance and makes a fresh one.

#![warn(missing_docs)]

mod columns;
mod config;
mod event;
mod future;
pub mod http;
pub mod log;
mod runtime;
pub mod template;

pub use config::{Config, ConfigError};
pub use event::{Event, Failure, FailureKind};
pub use future::ResultFuture;
pub use runtime::{invoke_each, report_usage};

/// Re-exported so plugins can name JSON values without a direct dependency.
pub use serde_json;

/// Compiles the example of README.md.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The bindings generated from `wit/waio.wit`. Not part of the API: use the types above.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "enricher-plugin",
        pub_export_macro: true,
        default_bindings_module: "waio_sdk::bindings",
        export_macro_name: "__export_enricher_plugin",
    });
}

/// Glue used by [`export_enricher!`]. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::waio::enricher::enricher::Guest;
    pub use crate::bindings::waio::enricher::completion::ResultFuture as WitResultFuture;
    pub use crate::bindings::waio::enricher::types::{
        BatchCompletions, CallId, Event as WitEvent, EventColumns, HttpError as WitHttpError,
        HttpResponse as WitHttpResponse,
    };
    pub use crate::runtime::{async_invoke, close, invoke_columns, on_response, open, timeout};
}

/// A plugin: one value per instance, made by [`Enricher::open`].
///
/// The host never calls an instance concurrently, so methods take `&self`; keep mutable state in
/// a `Cell` or `RefCell`. Callbacks passed to [`http::send`] must be `'static`: clone what they
/// need (wrap shared settings in an `Rc`).
pub trait Enricher: Sized + 'static {
    /// Makes the plugin from the operator's `config` table of the pipeline manifest. An error
    /// stops the job before it reads any input, so say which field is wrong.
    fn open(config: Config) -> Result<Self, String>;

    /// Starts enriching one record (Flink's `asyncInvoke`). Must return at once: complete
    /// `output` now, or keep it (it is `Clone` and `'static`) and complete it from the callback
    /// of an [`http::send`]. The first completion wins; the host ignores later ones.
    fn invoke(&self, input: Event, output: ResultFuture);

    /// Starts enriching several records the host hands over in one call (it batches what is
    /// waiting; `batch.max_size` in the manifest caps it). Each record keeps its own
    /// [`ResultFuture`] and the contract of [`Enricher::invoke`]. The default calls `invoke`
    /// for each record in turn, which is what almost every plugin wants. Override it to serve
    /// many records with one request (an embeddings API takes a list of inputs): the requests
    /// sent from here are on no single record's behalf, and a panic here fails no record by
    /// itself (the host invokes the records again one by one).
    fn invoke_batch(&self, batch: Vec<(Event, ResultFuture)>) {
        crate::runtime::invoke_each(self, batch)
    }

    /// Called when the record's time is up before it completed, with a fresh handle to the same
    /// record's result. The default fails the record as retriable with `timed out`, like
    /// Flink's default. Complete it with fallback outputs to keep the job going.
    fn timeout(&self, input: Event, output: ResultFuture) {
        let _ = input;
        output.fail(Failure::retriable("timed out"));
    }

    /// Called once before the instance is dropped at the end of the job.
    fn close(&self) {}
}

/// Exports a type implementing [`Enricher`] as the plugin of this component.
///
/// Use it once, at the root of the plugin crate: `waio_sdk::export_enricher!(MyPlugin);`
#[macro_export]
macro_rules! export_enricher {
    ($plugin:ty) => {
        const _: () = {
            struct __WaioEnricherExport;

            impl $crate::__private::Guest for __WaioEnricherExport {
                fn open(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::open::<$plugin>(config)
                }
                fn async_invoke(
                    input: $crate::__private::WitEvent,
                    output: $crate::__private::WitResultFuture,
                ) {
                    $crate::__private::async_invoke(input, output)
                }
                fn invoke_columns(
                    inputs: $crate::__private::EventColumns,
                ) -> $crate::__private::BatchCompletions {
                    $crate::__private::invoke_columns(inputs)
                }
                fn timeout(
                    input: $crate::__private::WitEvent,
                    output: $crate::__private::WitResultFuture,
                ) {
                    $crate::__private::timeout(input, output)
                }
                fn on_response(
                    id: $crate::__private::CallId,
                    response: ::std::result::Result<
                        $crate::__private::WitHttpResponse,
                        $crate::__private::WitHttpError,
                    >,
                ) {
                    $crate::__private::on_response(id, response)
                }
                fn close() {
                    $crate::__private::close()
                }
            }

            $crate::bindings::__export_enricher_plugin!(
                __WaioEnricherExport with_types_in $crate::bindings
            );
        };
    };
}
