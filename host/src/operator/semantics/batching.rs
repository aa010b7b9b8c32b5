//! Batches across the Wasm boundary: the records the run loop admits together go to their
//! instance slot in one batch call (`invoke-columns`; `async-invoke-batch` for a plugin of 0.3.0
//! or 0.4.0), at most `batch.max_size` per call. One call instead of one per record is most of
//! what a cheap plugin costs (and far more for Python and JavaScript, whose every entry costs
//! tens of microseconds).
//!
//! No latency is added by default: a batch is what is waiting when the operator is ready to
//! invoke. With `batch.max_wait` the operator holds records (up to that long) until
//! `max_size` are waiting, so that a plugin can send one provider request for many (an
//! embeddings API). Held records have entered: their timeouts run, and a checkpoint keeps them
//! as it keeps any record inside. They go at once when the queue is full (no more can come),
//! when the input ends, or when their time is up.
//!
//! Each record keeps its own result: completions, timeouts, retries and ordering are per record
//! as before. A batch goes to one slot, hence one plugin version. A trap ends the call: the
//! records of the batch not completed by then are invoked again one by one on a fresh instance,
//! so that only the one that traps fails.

use std::time::{Instant, SystemTime};

use super::OperatorCore;
use crate::operator::timers::TimerKind;
use crate::operator::OperatorError;
use crate::plugin::function::{AsyncFunction, Invocation};

/// What the core knows of the batch being gathered.
#[derive(Default)]
pub(super) struct Batching {
    /// Invocations are collected (while the run loop admits) rather than made at once.
    collecting: bool,
    /// Records admitted and not yet invoked, in admission order.
    waiting: Vec<u64>,
    /// Since when records are held for `batch.max_wait`.
    held_since: Option<Instant>,
}

impl<F: AsyncFunction> OperatorCore<F> {
    /// From now until [`Self::invoke_collected`], records to invoke are gathered into batches.
    pub fn collect_invocations(&mut self) {
        self.batching.collecting = true;
    }

    /// Invokes the records gathered since [`Self::collect_invocations`], in batches. With
    /// `batch.max_wait`, only full batches go now; the rest is held for more to come.
    pub fn invoke_collected(&mut self, now: Instant) -> Result<(), OperatorError> {
        self.batching.collecting = false;
        self.now = now;
        let batch = self.config.batch;
        let waiting = self.batching.waiting.len();
        if waiting == 0 {
            return Ok(());
        }
        if batch.max_wait.is_zero() || self.is_full() || self.input_ended {
            return self.dispatch_waiting(waiting);
        }
        let full = waiting - waiting % batch.max_size;
        if full > 0 {
            self.dispatch_waiting(full)?;
        }
        if !self.batching.waiting.is_empty() && self.batching.held_since.is_none() {
            self.batching.held_since = Some(now);
            let first = self.batching.waiting[0];
            self.timers
                .push(now + batch.max_wait, first, TimerKind::BatchDue);
        }
        Ok(())
    }

    /// Whether records are held for `batch.max_wait` (their timer must not be dropped).
    pub(super) fn holding_batch(&self) -> bool {
        self.batching.held_since.is_some()
    }

    /// Whether `invoke` is to gather the record rather than call the plugin now.
    pub(super) fn gather(&mut self, seq: u64) -> bool {
        if self.batching.collecting {
            self.batching.waiting.push(seq);
        }
        self.batching.collecting
    }

    /// A `BatchDue` timer came up: the held records go if their time is up (a later timer
    /// may belong to a later hold).
    pub(super) fn batch_due(&mut self, now: Instant) -> Result<(), OperatorError> {
        match self.batching.held_since {
            Some(since) if since + self.config.batch.max_wait <= now => {
                self.dispatch_waiting(self.batching.waiting.len())
            }
            _ => Ok(()),
        }
    }

    /// Every input is in, or the queue is full: nothing more will join the held records.
    pub(super) fn release_held(&mut self) -> Result<(), OperatorError> {
        if self.batching.held_since.is_some() && !self.batching.collecting {
            return self.dispatch_waiting(self.batching.waiting.len());
        }
        Ok(())
    }

    /// The slot for the next admitted record: the current version's slots in turn. A batch
    /// is split by slot when it is invoked (with several instances, each gets its share).
    pub(super) fn assign_slot(&mut self) -> usize {
        let slot = self.next_slot;
        self.next_slot = if slot + 1 >= self.live.end {
            self.live.start
        } else {
            slot + 1
        };
        slot
    }

    /// Invokes the first `count` waiting records: grouped by slot (in admission order within a
    /// slot), in calls of at most `max_size`. Records left waiting stay held.
    fn dispatch_waiting(&mut self, count: usize) -> Result<(), OperatorError> {
        let mut waiting = std::mem::take(&mut self.batching.waiting);
        let rest = waiting.split_off(count.min(waiting.len()));
        if rest.is_empty() {
            self.batching.held_since = None;
        }
        self.batching.waiting = rest;
        let max_size = self.config.batch.max_size;
        if self.slots.len() == 1 {
            // One instance (and no reload under way): every record is slot 0's, in order.
            for chunk in waiting.chunks(max_size) {
                self.invoke_many(0, chunk)?;
            }
            return Ok(());
        }
        let mut by_slot: Vec<(usize, u64)> = waiting
            .iter()
            .filter_map(|&seq| Some((self.records.pending(seq)?.slot, seq)))
            .collect();
        // Stable: records keep their order within a slot.
        by_slot.sort_by_key(|&(slot, _)| slot);
        let mut seqs = Vec::with_capacity(max_size.min(by_slot.len()));
        for group in by_slot.chunk_by(|a, b| a.0 == b.0) {
            for chunk in group.chunks(max_size) {
                seqs.clear();
                seqs.extend(chunk.iter().map(|&(_, seq)| seq));
                self.invoke_many(chunk[0].0, &seqs)?;
            }
        }
        Ok(())
    }

    /// One batch call into `slot` for the records `seqs` still to invoke (a
    /// trap earlier in this dispatch may have queued some to be invoked again instead). A lone
    /// record goes through `async-invoke`, as without batches.
    fn invoke_many(&mut self, slot: usize, seqs: &[u64]) -> Result<(), OperatorError> {
        if !self.function.takes_batches(slot) {
            return self.invoke_each(seqs);
        }
        // Counted as invoked as they are picked: one lookup each.
        let invoked_at = SystemTime::now();
        let mut batch: Vec<u64> = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(entry) = self.still_to_invoke(seq) {
                entry.attempts.invoked(invoked_at);
                batch.push(seq);
            }
        }
        if let [lone] = batch[..] {
            return self.call_invoke(lone);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.telemetry.batch_calls.inc();
        self.telemetry.batched_records.add(batch.len() as u64);
        // The records are lent where they are: the call reads them, the core keeps them (a
        // dead letter holds its input).
        let records = &self.records;
        let lent: Vec<Invocation<'_>> = batch
            .iter()
            .filter_map(|&seq| {
                let entry = records.get(seq)?;
                Some(Invocation {
                    seq,
                    attempt: entry.attempt,
                    input: &entry.input,
                })
            })
            .collect();
        let result = self.function.invoke_batch(slot, &lent);
        drop(lent);
        self.after_call(slot, result, None)
    }

    /// One `async-invoke` each, as before batches: a trap fails the record it served (and
    /// queues the others of its instance to be invoked again instead).
    fn invoke_each(&mut self, seqs: &[u64]) -> Result<(), OperatorError> {
        for &seq in seqs {
            if self.still_to_invoke(seq).is_some() {
                self.invoke(seq)?;
            }
        }
        Ok(())
    }

    /// The record's entry if it is still to be invoked: pending, not queued to be invoked
    /// again after a trap, not waiting for another record's call for its input.
    fn still_to_invoke(&mut self, seq: u64) -> Option<&mut crate::operator::in_flight::Entry> {
        self.records
            .pending(seq)
            .filter(|e| !e.reinvoke_queued && !e.cache_waiting)
    }
}
