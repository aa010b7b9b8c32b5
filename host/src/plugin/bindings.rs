//! Host bindings generated from `wit/waio.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "enricher-plugin",
    with: {
        "waio:enricher/completion.result-future": super::host::FutureRef,
    },
    imports: { default: trappable },
});

pub use self::waio::enricher::types::{
    BatchCompletions, Event, EventColumns, Failure, FailureKind, HttpError, HttpRequest,
    HttpResponse, LogLevel, TokenUsage,
};
