//! The result of one record: Flink's `ResultFuture`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use crate::bindings::waio::enricher::completion::{self, ResultFuture as WitResultFuture};
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
    handle: RefCell<Handle>,
    done: Cell<bool>,
}

/// Spare futures kept at most: a few batches' worth.
const MAX_SPARE: usize = 4096;

thread_local! {
    static SPARE: RefCell<Vec<Rc<Inner>>> = const { RefCell::new(Vec::new()) };
}

/// How the host knows the record.
enum Handle {
    /// By its own `result-future`.
    Host(WitResultFuture),
    /// As record `index` of `invoke-columns` call `call` (see [`crate::columns`]).
    InCall { call: u64, index: u32 },
}

impl ResultFuture {
    pub(crate) fn from_host(handle: WitResultFuture) -> ResultFuture {
        ResultFuture::with(Handle::Host(handle))
    }

    /// Record `index` of the running `invoke-columns` call `call`: a spare future of an earlier
    /// call if there is one (see [`Self::end_of_call`]).
    pub(crate) fn in_call(call: u64, index: u32) -> ResultFuture {
        let handle = Handle::InCall { call, index };
        match SPARE.with(|s| s.borrow_mut().pop()) {
            Some(inner) => {
                *inner.handle.borrow_mut() = handle;
                inner.done.set(false);
                ResultFuture { inner }
            }
            None => ResultFuture::with(handle),
        }
    }

    fn with(handle: Handle) -> ResultFuture {
        ResultFuture {
            inner: Rc::new(Inner {
                handle: RefCell::new(handle),
                done: Cell::new(false),
            }),
        }
    }

    /// Makes sure the host knows this record by a `result-future` of its own (taking one with
    /// `completion.hold` while its call runs), then runs `f` with it. `None` for a record of a
    /// call that has ended without it being held: nothing can reach that record any more.
    fn with_host<R>(&self, f: impl FnOnce(&WitResultFuture) -> R) -> Option<R> {
        let mut handle = self.inner.handle.borrow_mut();
        if let Handle::InCall { call, index } = *handle {
            if !crate::columns::is_running(call) {
                return None;
            }
            *handle = Handle::Host(completion::hold(index));
        }
        match &*handle {
            Handle::Host(future) => Some(f(future)),
            Handle::InCall { .. } => None,
        }
    }

    /// The record's index in the running call, while it is known only by that.
    fn running_index(&self) -> Option<u32> {
        match *self.inner.handle.borrow() {
            Handle::InCall { call, index } if crate::columns::is_running(call) => Some(index),
            _ => None,
        }
    }

    /// At the end of its call, for the SDK's own handle: a record still to complete that the
    /// plugin kept takes its own `result-future`, to be completed later. One nothing else holds
    /// is kept as a spare for a later call (an allocation per record costs as much as the rest
    /// of a cheap plugin's work).
    pub(crate) fn end_of_call(self) {
        if Rc::strong_count(&self.inner) > 1 {
            if !self.is_done() {
                self.with_host(|_| ());
            }
            return;
        }
        // Drops a `result-future` taken during the call now, as dropping the future would.
        *self.inner.handle.borrow_mut() = Handle::InCall { call: 0, index: 0 };
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < MAX_SPARE {
                spare.push(self.inner);
            }
        });
    }

    /// Emits `outputs` at the record's position: none filters the record out, several fan out.
    pub fn complete(&self, outputs: Vec<Event>) {
        self.complete_from(outputs);
    }

    fn complete_from(&self, outputs: impl IntoIterator<Item = Event>) {
        // Every call reaches the host, even after the first: "first wins" is the host's rule.
        self.inner.done.set(true);
        if let Some(index) = self.running_index() {
            crate::columns::complete(index, outputs);
            return;
        }
        let outputs: Vec<wit::Event> = outputs.into_iter().map(Into::into).collect();
        self.with_host(|future| future.complete(&outputs));
    }

    /// Tells the host the code that runs next serves this record (see `begin_current`).
    pub(crate) fn begin(&self) {
        self.with_host(|future| future.begin());
    }

    /// Whether both handles complete the same record.
    pub(crate) fn same_record(&self, other: &ResultFuture) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Emits exactly one output.
    pub fn complete_one(&self, output: Event) {
        self.complete_from(std::iter::once(output));
    }

    /// Emits nothing: the record is filtered out.
    pub fn complete_none(&self) {
        self.complete(Vec::new());
    }

    /// Fails the record. The operator's policy decides what follows: retry, fail the job or
    /// send the record to the dead-letter output.
    pub fn fail(&self, failure: Failure) {
        self.inner.done.set(true);
        if let Some(index) = self.running_index() {
            crate::columns::fail(index, failure.into());
            return;
        }
        let failure = wit::Failure::from(failure);
        self.with_host(|future| future.complete_exceptionally(&failure));
    }

    /// Fails the record through the host at once, even inside a call: a panic is about to trap
    /// the instance, and the call's result would be lost with it.
    pub(crate) fn fail_now(&self, failure: Failure) {
        self.inner.done.set(true);
        let failure = wit::Failure::from(failure);
        self.with_host(|future| future.complete_exceptionally(&failure));
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
        self.with_host(|future| future.input_headers())
            .unwrap_or_default()
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
