//! The result of one record: Flink's `ResultFuture`.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use crate::bindings::waio::enricher::completion::ResultFuture as WitResultFuture;
use crate::bindings::waio::enricher::types as wit;
use crate::{Event, Failure};

/// Completes one record. Clone it freely (clones share the record) and move it into the
/// callbacks of [`crate::http::send`].
///
/// The first [`complete`](ResultFuture::complete) or [`fail`](ResultFuture::fail) wins; the host
/// ignores later calls. Dropping every clone without completing leaves the record in flight until
/// its timeout fires (then [`crate::Enricher::timeout`] runs).
#[derive(Clone)]
pub struct ResultFuture {
    inner: Rc<Inner>,
}

struct Inner {
    handle: WitResultFuture,
    done: Cell<bool>,
}

impl ResultFuture {
    pub(crate) fn from_host(handle: WitResultFuture) -> ResultFuture {
        ResultFuture {
            inner: Rc::new(Inner {
                handle,
                done: Cell::new(false),
            }),
        }
    }

    /// Emits `outputs` at the record's position: none filters the record out, several fan out.
    pub fn complete(&self, outputs: Vec<Event>) {
        let outputs: Vec<wit::Event> = outputs.into_iter().map(Into::into).collect();
        // Every call reaches the host, even after the first: "first wins" is the host's rule.
        self.inner.done.set(true);
        self.inner.handle.complete(&outputs);
    }

    /// Tells the host the code that runs next serves this record (see `begin_current`).
    pub(crate) fn begin(&self) {
        self.inner.handle.begin();
    }

    /// Whether both handles complete the same record.
    pub(crate) fn same_record(&self, other: &ResultFuture) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Emits exactly one output.
    pub fn complete_one(&self, output: Event) {
        self.complete(vec![output]);
    }

    /// Emits nothing: the record is filtered out.
    pub fn complete_none(&self) {
        self.complete(Vec::new());
    }

    /// Fails the record. The operator's policy decides what follows: retry, fail the job or
    /// send the record to the dead-letter output.
    pub fn fail(&self, failure: Failure) {
        self.inner.done.set(true);
        self.inner
            .handle
            .complete_exceptionally(&wit::Failure::from(failure));
    }

    /// Completes with `outputs` or fails with the failure: handy at the end of a function that
    /// returns `Result<Vec<Event>, Failure>`.
    pub fn complete_with(&self, result: Result<Vec<Event>, Failure>) {
        match result {
            Ok(outputs) => self.complete(outputs),
            Err(failure) => self.fail(failure),
        }
    }

    /// The headers of the input record, in the order they came (a name may repeat): a Kafka
    /// record's headers; empty for records of other sources. Each call asks the host, so call
    /// it once per record. The outputs carry the input's headers on to a Kafka sink whatever
    /// the plugin does.
    pub fn input_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.inner.handle.input_headers()
    }

    /// The value of the first input header named `name` (names are compared exactly, as Kafka
    /// does), if there is one.
    pub fn input_header(&self, name: &str) -> Option<Vec<u8>> {
        self.input_headers()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// Whether this plugin instance already completed or failed the record through this handle
    /// or one of its clones.
    pub fn is_done(&self) -> bool {
        self.inner.done.get()
    }
}

impl fmt::Debug for ResultFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultFuture")
            .field("done", &self.is_done())
            .finish_non_exhaustive()
    }
}
