//! The running `invoke-columns` call (contract 0.5.0): its records arrive as columns, and those
//! completed before it returns go back in its result instead of one host call each. A record's
//! [`crate::ResultFuture`] stays a plain index into the call until the plugin needs the host to
//! know it (a request sent for it, its headers) or keeps it past the call: then it takes a real
//! `result-future` with `completion.hold`.

use std::cell::{Cell, RefCell};

use crate::bindings::waio::enricher::types::{
    BatchCompletions, EventColumns, Failure as WitFailure,
};
use crate::Event;

/// What the running call has completed so far.
struct Done {
    completed: Vec<u32>,
    output_ends: Vec<u32>,
    payloads: Vec<u8>,
    payload_ends: Vec<u32>,
    keys: Vec<Option<String>>,
    timestamps: Vec<Option<i64>>,
    failed: Vec<(u32, WitFailure)>,
}

impl Done {
    const EMPTY: Done = Done {
        completed: Vec::new(),
        output_ends: Vec::new(),
        payloads: Vec::new(),
        payload_ends: Vec::new(),
        keys: Vec::new(),
        timestamps: Vec::new(),
        failed: Vec::new(),
    };
}

thread_local! {
    /// Which call is running (0: none). Each call gets a new number, so that a future kept past
    /// its call never mistakes a later call for its own.
    static RUNNING: Cell<u64> = const { Cell::new(0) };
    static LAST: Cell<u64> = const { Cell::new(0) };
    static DONE: RefCell<Done> = const { RefCell::new(Done::EMPTY) };
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Spare payload buffers kept at most, and the largest kept: at most 1 MiB in all.
const MAX_SPARE: usize = 1024;
const MAX_SPARE_BYTES: usize = 1024;

/// A copy of `bytes` in a spare buffer if there is one: the payloads of the outputs completed in
/// a call hold the inputs of the next (an allocation and a free per record cost as much as the
/// rest of a cheap plugin's work).
fn payload_of(bytes: &[u8]) -> Vec<u8> {
    match SPARE.with(|s| s.borrow_mut().pop()) {
        Some(mut buffer) => {
            buffer.extend_from_slice(bytes);
            buffer
        }
        None => bytes.to_vec(),
    }
}

/// Keeps an output's payload buffer (emptied) for [`payload_of`], if it is small and there is
/// room.
fn recycle(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > MAX_SPARE_BYTES {
        return;
    }
    buffer.clear();
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(buffer);
        }
    });
}

/// Starts a call of `records` records whose payloads add up to `bytes`: returns its number.
/// The result's columns are sized for one output per record, the common case, so that they
/// do not grow record by record (the host frees them after each call).
pub(crate) fn begin_call(records: usize, bytes: usize) -> u64 {
    let call = LAST.with(|l| l.get()) + 1;
    LAST.with(|l| l.set(call));
    RUNNING.with(|r| r.set(call));
    DONE.with(|d| {
        let mut d = d.borrow_mut();
        d.completed.reserve(records);
        d.output_ends.reserve(records);
        d.payloads.reserve(bytes);
        d.payload_ends.reserve(records);
        d.keys.reserve(records);
        d.timestamps.reserve(records);
    });
    call
}

/// Whether `call` is the one running.
pub(crate) fn is_running(call: u64) -> bool {
    call != 0 && RUNNING.with(Cell::get) == call
}

/// Ends the running call: what it completed, for its result.
pub(crate) fn end_call() -> BatchCompletions {
    RUNNING.with(|r| r.set(0));
    let done = DONE.with(|d| std::mem::replace(&mut *d.borrow_mut(), Done::EMPTY));
    BatchCompletions {
        completed: done.completed,
        output_ends: done.output_ends,
        outputs: EventColumns {
            payloads: done.payloads,
            payload_ends: done.payload_ends,
            keys: done.keys,
            timestamps: done.timestamps,
        },
        failed: done.failed,
    }
}

/// Record `index` of the running call completes with `outputs`.
pub(crate) fn complete(index: u32, outputs: impl IntoIterator<Item = Event>) {
    DONE.with(|d| {
        let mut d = d.borrow_mut();
        for output in outputs {
            d.payloads.extend_from_slice(&output.payload);
            recycle(output.payload);
            let end = d.payloads.len() as u32;
            d.payload_ends.push(end);
            d.keys.push(output.key);
            d.timestamps.push(output.timestamp);
        }
        let end = d.payload_ends.len() as u32;
        d.completed.push(index);
        d.output_ends.push(end);
    });
}

/// Record `index` of the running call fails.
pub(crate) fn fail(index: u32, failure: WitFailure) {
    DONE.with(|d| d.borrow_mut().failed.push((index, failure)));
}

/// The records of the columns, in order, as they are taken (the caller collects them with their
/// futures in one pass: no list of events in between).
pub(crate) fn events(inputs: EventColumns) -> impl Iterator<Item = Event> {
    let EventColumns {
        payloads,
        payload_ends,
        keys,
        timestamps,
    } = inputs;
    let mut start = 0usize;
    payload_ends
        .into_iter()
        .zip(keys)
        .zip(timestamps)
        .map(move |((end, key), timestamp)| {
            let end = (end as usize).clamp(start, payloads.len());
            let payload = payload_of(&payloads[start..end]);
            start = end;
            Event {
                key,
                timestamp,
                payload,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_payload_buffer_holds_a_later_input() {
        let output = b"an output".to_vec();
        let at = output.as_ptr();
        recycle(output);
        let input = payload_of(b"in");
        assert_eq!(input, b"in", "nothing of the output is left");
        assert_eq!(input.as_ptr(), at, "the same buffer");
        // A large buffer is not kept.
        recycle(vec![0u8; 64 * 1024]);
        assert!(payload_of(b"x").capacity() < 64 * 1024);
    }
}
