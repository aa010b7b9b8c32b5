//! An echo plugin built against `waio:enricher@0.1.0` (its own copy of that contract in `wit/`,
//! kept as it was released), so tests can check what the host says about a plugin built before
//! the contract's 0.2.0.

wit_bindgen::generate!({
    path: "wit",
    world: "enricher-plugin",
});

use exports::waio::enricher::enricher::Guest;
use waio::enricher::completion::ResultFuture;
use waio::enricher::types::{CallId, Event, HttpError, HttpResponse};

struct OldContract;

impl Guest for OldContract {
    fn open(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn async_invoke(input: Event, output: ResultFuture) {
        output.complete(&[input]);
    }

    fn timeout(input: Event, output: ResultFuture) {
        output.complete(&[input]);
    }

    fn on_response(_id: CallId, _response: Result<HttpResponse, HttpError>) {}

    fn close() {}
}

export!(OldContract);
