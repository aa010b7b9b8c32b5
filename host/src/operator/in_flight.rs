//! The records inside the operator, by sequence number: in flight, or completed and waiting to
//! be emitted.

use std::time::Instant;

use crate::connectors::dead_letter::Attempts;
use crate::record::Record;

/// A record inside the operator.
pub struct Entry {
    pub input: Record,
    pub attempt: u32,
    /// The instance slot that serves it.
    pub slot: usize,
    /// Its watermark segment (unordered mode).
    pub segment: u64,
    pub entered: Instant,
    /// Its timeout fired: a failure now is a timeout.
    pub timed_out: bool,
    /// Completed (or dead-lettered): later completions are ignored (FLINK-SEMANTICS 7).
    pub done: bool,
    /// The dead letter this record became; it leaves at the record's position, so a checkpoint
    /// that still holds the record's input never also holds its dead letter.
    pub dead_letter: Option<Vec<u8>>,
    /// Times its instance trapped under it (see `MAX_REINVOCATIONS`).
    pub reinvocations: u32,
    /// Waiting for its turn to be invoked again on a fresh instance.
    pub reinvoke_queued: bool,
    /// The plugin's `timeout` sent a request for it: it may still complete until this instant.
    pub grace_until: Option<Instant>,
    /// Retries made by the retry strategy (`[operator.async_retry]`).
    pub retries: u32,
    /// A retry is scheduled for then; completions of the current attempt are ignored meanwhile
    /// (FLINK-SEMANTICS 25).
    pub retry_at: Option<Instant>,
    /// Its invocations and the last HTTP status, for its dead letter.
    pub attempts: Attempts,
    /// Tokens a rate limit charged for its requests and not yet settled with reported usage.
    pub tokens_charged: u64,
    /// With a result cache: the key of its input, while it makes the call for it (or waits
    /// for another record's call, with `cache_waiting`).
    pub cache_key: Option<crate::cache::CacheKey>,
    /// Waits for another record's call for the same input: not invoked itself.
    pub cache_waiting: bool,
    /// Usage its plugin reported (kept with its result by the result cache).
    pub usage: Vec<crate::plugin::function::TokenUsage>,
}

impl Entry {
    pub fn new(input: Record, slot: usize, segment: u64, entered: Instant) -> Self {
        Entry {
            input,
            attempt: 0,
            slot,
            segment,
            entered,
            timed_out: false,
            done: false,
            dead_letter: None,
            reinvocations: 0,
            reinvoke_queued: false,
            grace_until: None,
            retries: 0,
            retry_at: None,
            attempts: Attempts::default(),
            tokens_charged: 0,
            cache_key: None,
            cache_waiting: false,
            usage: Vec::new(),
        }
    }
}

#[derive(Default)]
pub struct InFlight {
    /// By sequence number. Fx: one multiply a lookup, several lookups a record; the keys are
    /// the host's own counters, so nobody can pick them to collide.
    entries: rustc_hash::FxHashMap<u64, Entry>,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn insert(&mut self, seq: u64, entry: Entry) {
        self.entries.insert(seq, entry);
    }

    pub fn remove(&mut self, seq: u64) -> Option<Entry> {
        self.entries.remove(&seq)
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        self.entries.get(&seq)
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&seq)
    }

    /// The record if it is still waiting for its result.
    pub fn pending(&mut self, seq: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&seq).filter(|e| !e.done)
    }

    pub fn is_pending(&self, seq: u64) -> bool {
        self.entries.get(&seq).is_some_and(|e| !e.done)
    }

    /// Every record, in sequence order.
    pub fn in_order(&self) -> Vec<(u64, &Entry)> {
        let mut records: Vec<(u64, &Entry)> = self.entries.iter().map(|(s, e)| (*s, e)).collect();
        records.sort_unstable_by_key(|(seq, _)| *seq);
        records
    }

    /// The records waiting for a retry, in sequence order, with when it is due.
    pub fn awaiting_retry(&self) -> Vec<(u64, Instant)> {
        let mut waiting: Vec<(u64, Instant)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.done)
            .filter_map(|(seq, e)| e.retry_at.map(|at| (*seq, at)))
            .collect();
        waiting.sort_unstable();
        waiting
    }

    /// Marks every pending record served by `slot` and not already waiting for re-invocation
    /// (one waiting never ran in the instance that went) as queued for it; returns them in order.
    /// A record waiting for a retry holds nothing in the instance: its retry invokes it anew.
    pub fn orphans_of(&mut self, slot: usize, after_trap: bool) -> Vec<u64> {
        let mut orphans: Vec<u64> = Vec::new();
        for (seq, entry) in self.entries.iter_mut() {
            // A record waiting for another's call for its input never ran in an instance.
            if entry.done
                || entry.slot != slot
                || entry.reinvoke_queued
                || entry.retry_at.is_some()
                || entry.cache_waiting
            {
                continue;
            }
            if after_trap {
                entry.reinvocations += 1;
            }
            entry.reinvoke_queued = true;
            orphans.push(*seq);
        }
        orphans.sort_unstable();
        orphans
    }
}
