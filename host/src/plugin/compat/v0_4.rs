//! Plugins built against `waio:enricher@0.4.0`. Its types are the current version's to the byte
//! (0.5.0 added `event-columns`, `batch-completions` and `completion.hold`, and replaced
//! `async-invoke-batch` with `invoke-columns`), so the bindings share them and each import only
//! forwards to the current host code. Such a plugin is called with batches through
//! `async-invoke-batch`, a `result-future` per record.

use wasmtime::component::Resource;

use crate::plugin::bindings as current;
use crate::plugin::host::{FutureRef, HostState};
use current::waio::enricher::completion::HostResultFuture as CurrentFuture;
use current::waio::enricher::http::Host as CurrentHttp;
use current::waio::enricher::logging::Host as CurrentLogging;
use current::waio::enricher::usage::Host as CurrentUsage;
use current::{Event, Failure, HttpRequest, LogLevel, TokenUsage};

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/compat/0.4.0",
        world: "enricher-plugin",
        with: {
            "waio:enricher/types": crate::plugin::bindings::waio::enricher::types,
            "waio:enricher/completion.result-future": crate::plugin::host::FutureRef,
        },
        imports: { default: trappable },
    });
}

use bindings::waio::enricher::{completion, http, logging, usage};
pub use bindings::{EnricherPlugin, EnricherPluginPre};

/// The version of the contract this module adapts.
pub const WIT_VERSION: &str = "0.4.0";

/// The world a 0.4.0 plugin implements, as `waio check` prints it.
pub const WORLD: &str = "waio:enricher/enricher-plugin@0.4.0";

impl completion::Host for HostState {}

impl completion::HostResultFuture for HostState {
    fn complete(
        &mut self,
        handle: Resource<FutureRef>,
        outputs: Vec<Event>,
    ) -> wasmtime::Result<()> {
        CurrentFuture::complete(self, handle, outputs)
    }

    fn complete_exceptionally(
        &mut self,
        handle: Resource<FutureRef>,
        error: Failure,
    ) -> wasmtime::Result<()> {
        CurrentFuture::complete_exceptionally(self, handle, error)
    }

    fn begin(&mut self, handle: Resource<FutureRef>) -> wasmtime::Result<()> {
        CurrentFuture::begin(self, handle)
    }

    fn input_headers(
        &mut self,
        handle: Resource<FutureRef>,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        CurrentFuture::input_headers(self, handle)
    }

    fn drop(&mut self, handle: Resource<FutureRef>) -> wasmtime::Result<()> {
        CurrentFuture::drop(self, handle)
    }
}

impl http::Host for HostState {
    fn send(&mut self, request: HttpRequest) -> wasmtime::Result<u64> {
        CurrentHttp::send(self, request)
    }
}

impl usage::Host for HostState {
    fn report(&mut self, usage: TokenUsage) -> wasmtime::Result<()> {
        CurrentUsage::report(self, usage)
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        CurrentLogging::log(self, level, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_versions_are_those_of_the_wit_packages() {
        let wit = include_str!("../../../../wit/compat/0.4.0/waio.wit");
        assert!(wit.contains(&format!("package waio:enricher@{WIT_VERSION};")));
        assert_eq!(
            WORLD,
            format!("waio:enricher/enricher-plugin@{WIT_VERSION}")
        );
    }
}
