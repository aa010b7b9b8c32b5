//! The core's side of the result cache: look up at admission, keep a result when the record
//! that made the call ends, hand it to the records that waited for it, and count what the
//! request cache saved. Every record still completes through the queue, in its place.

use super::{Cause, OperatorCore, OperatorError};
use crate::cache::now_ms;
use crate::operator::result_cache::{Admitted, ResultCache};
use crate::plugin::function::{AsyncFunction, FailureKind, Output, OutputList, TokenUsage};

/// How a record that made the call for its input ended.
pub enum Ending<'a> {
    /// With outputs: kept, and the waiting records complete with them.
    Outputs(&'a [Output]),
    /// With a fatal failure: kept for `negative_ttl`, and the waiting records fail alike.
    Fatal(&'a str),
    /// Otherwise (a timeout, a retriable failure, a trap): nothing is kept, and the first
    /// record still waiting makes the call itself.
    Other,
}

impl<F: AsyncFunction> OperatorCore<F> {
    /// Turns the result cache on, before any record is admitted.
    pub fn use_result_cache(&mut self, mut cache: ResultCache) {
        cache.price_with(std::sync::Arc::clone(&self.cost));
        self.result_cache = Some(cache);
    }

    /// A record just admitted (its entry made): completes it from the cache, makes it wait for
    /// a call in flight for the same input, or invokes it.
    pub(super) fn admit_cached(&mut self, seq: u64) -> Result<(), OperatorError> {
        let (Some(cache), Some(entry)) = (self.result_cache.as_mut(), self.records.get_mut(seq))
        else {
            return self.invoke(seq);
        };
        match cache.admit(seq, &entry.input, now_ms()) {
            Admitted::Hit(outputs) => self.complete(seq, OutputList::from_vec(outputs)),
            Admitted::Failed(message) => {
                self.fail(seq, Cause::Failure, FailureKind::Fatal, message)
            }
            Admitted::Lead(key) => {
                entry.cache_key = Some(key);
                self.invoke(seq)
            }
            Admitted::Wait(key) => {
                entry.cache_key = Some(key);
                entry.cache_waiting = true;
                Ok(())
            }
        }
    }

    /// Record `seq` ended: if it made the call for its input, keeps what `ending` says and
    /// settles the records that waited for it. Does nothing for any other record, or twice.
    pub(super) fn leader_ended(
        &mut self,
        seq: u64,
        ending: Ending<'_>,
    ) -> Result<(), OperatorError> {
        if self.result_cache.is_none() {
            return Ok(()); // no lookup per record without a result cache
        }
        let Some(entry) = self.records.get_mut(seq) else {
            return Ok(());
        };
        if entry.cache_waiting {
            return Ok(());
        }
        let (Some(key), Some(cache)) = (entry.cache_key.take(), self.result_cache.as_mut()) else {
            return Ok(());
        };
        let usage = std::mem::take(&mut entry.usage);
        let now = now_ms();
        match ending {
            Ending::Outputs(outputs) => {
                let leader_input = entry.input.clone();
                let waiters = cache.completed(&key, &leader_input, outputs, &usage, now);
                let mut shared = Vec::with_capacity(waiters.len());
                for waiter in waiters {
                    let Some(w) = self.records.pending(waiter) else {
                        continue;
                    };
                    w.cache_waiting = false;
                    w.cache_key = None;
                    shared.push((waiter, cache.outputs_for(&leader_input, outputs, &w.input)));
                }
                for (waiter, outputs) in shared {
                    self.complete(waiter, OutputList::from_vec(outputs))?;
                }
            }
            Ending::Fatal(message) => {
                let waiters = cache.failed(&key, message, now);
                for waiter in waiters {
                    let Some(w) = self.records.pending(waiter) else {
                        continue;
                    };
                    w.cache_waiting = false;
                    w.cache_key = None;
                    let message = format!(
                        "{message} (the same input failed so in another record just before)"
                    );
                    self.fail(waiter, Cause::Failure, FailureKind::Fatal, message)?;
                }
            }
            Ending::Other => {
                let records = &self.records;
                let next = cache.next_leader(&key, |s| {
                    records.get(s).is_some_and(|e| !e.done && !e.timed_out)
                });
                if let Some(next) = next {
                    // It leads from now on (its own timeout ends it like any leader's).
                    if let Some(e) = self.records.get_mut(next) {
                        e.cache_waiting = false;
                    }
                    self.cache_leaders.push_back(next);
                }
            }
        }
        Ok(())
    }

    /// A record that waited for another's call makes its own (that call ended without a
    /// result worth keeping).
    pub(super) fn lead_instead(&mut self, seq: u64) -> Result<(), OperatorError> {
        let Some(entry) = self.records.pending(seq) else {
            return Ok(());
        };
        if entry.timed_out {
            return Ok(());
        }
        self.invoke(seq)
    }

    /// Usage the plugin reported from an answer of the request cache: counted as saved.
    pub(super) fn saved_by_request_cache(&mut self, usage: &TokenUsage) {
        let Some(stats) = self.telemetry.request_cache.get() else {
            return;
        };
        stats
            .tokens_saved
            .add(usage.input_tokens.saturating_add(usage.output_tokens));
        if let Some(usd) = self
            .cost
            .price(&usage.model, usage.input_tokens, usage.output_tokens)
        {
            stats.add_cost_saved(usd);
        }
    }
}
