//! What happens as time passes: deadlines and `timeout` (FLINK-SEMANTICS 12-15), the grace of a
//! timeout handler's request, the retry strategy's next attempts (19-26), and the batches held
//! for `batch.max_wait`. Time is always passed in.

use std::time::Instant;

use super::{Cause, OperatorCore};
use crate::operator::retry::{self, AttemptEnded, AttemptResult};
use crate::operator::timers::TimerKind;
use crate::operator::OperatorError;
use crate::plugin::function::{AsyncFunction, Failure, FailureKind, OutputList};

impl<F: AsyncFunction> OperatorCore<F> {
    /// Schedules the next attempt of a record whose attempt ended with `result`, if the retry
    /// strategy wants one (FLINK-SEMANTICS 20); false when this attempt is final.
    pub(super) fn retry_later(&mut self, seq: u64, result: &Result<OutputList, Failure>) -> bool {
        if !self.config.async_retry.is_active() {
            return false; // no lookup per record without a retry strategy
        }
        let Some(entry) = self.records.pending(seq) else {
            return false;
        };
        let ended = AttemptEnded {
            result: match result {
                Ok(outputs) if outputs.is_empty() => AttemptResult::Empty,
                Ok(_) => AttemptResult::Values,
                Err(failure) => AttemptResult::Failed(failure.kind),
            },
            retries_made: entry.retries,
            now: self.now,
            deadline: self.config.timeout.map(|t| entry.entered + t),
            input_ended: self.input_ended,
        };
        let Some(at) = retry::next_attempt_at(&self.config.async_retry, &ended) else {
            return false;
        };
        tracing::debug!(
            operator = %self.config.name,
            line = entry.input.line,
            retry = entry.retries + 1,
            "attempt ended with {:?}: invoked again in {:?}",
            ended.result,
            at.saturating_duration_since(self.now)
        );
        entry.retry_at = Some(at);
        self.timers.push(at, seq, TimerKind::Retry);
        true
    }

    /// Invokes a record again for its next attempt, if the retry due `at` is still the one it
    /// waits for (a timeout cancels it). It keeps its place and timestamp (FLINK-SEMANTICS 23).
    pub(super) fn retry_now(&mut self, seq: u64, at: Instant) -> Result<(), OperatorError> {
        let Some(entry) = self.records.pending(seq) else {
            return Ok(());
        };
        if entry.retry_at != Some(at) {
            return Ok(());
        }
        entry.retry_at = None;
        entry.retries += 1;
        entry.attempt += 1;
        self.telemetry.record_retries.inc();
        self.invoke(seq)
    }

    /// Every input has been admitted (FLINK-SEMANTICS 26): pending retries fire at once, in
    /// input order, and every result from now on is final. Called again, does nothing.
    pub fn input_ended(&mut self, now: Instant) -> Result<(), OperatorError> {
        if self.input_ended {
            return Ok(());
        }
        self.input_ended = true;
        self.now = now;
        // Nothing more will join a batch held for `batch.max_wait`.
        self.release_held()?;
        for (seq, at) in self.records.awaiting_retry() {
            self.retry_now(seq, at)?;
        }
        Ok(())
    }

    /// When the next timer of a pending record is due.
    pub fn next_timer(&mut self) -> Option<Instant> {
        while let Some(timer) = self.timers.peek() {
            if self.records.is_pending(timer.seq)
                || (timer.kind == TimerKind::BatchDue && self.holding_batch())
            {
                return Some(timer.at);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires every timer due at `now`.
    pub fn fire_timers(&mut self, now: Instant) -> Result<(), OperatorError> {
        self.now = now;
        while let Some(timer) = self.timers.pop_due(now) {
            if timer.kind == TimerKind::BatchDue {
                self.batch_due(now)?;
                continue;
            }
            let Some(entry) = self.records.pending(timer.seq) else {
                continue;
            };
            match (timer.kind, entry.grace_until) {
                (TimerKind::Retry, _) => self.retry_now(timer.seq, timer.at)?,
                // Its deadline came and went: the handler's request is what it waits for now.
                (TimerKind::Deadline, Some(_)) => {}
                (TimerKind::Grace, Some(until)) => {
                    if until <= now {
                        let grace = humantime::format_duration(self.config.timeout_grace);
                        self.fail(
                            timer.seq,
                            Cause::Timeout,
                            FailureKind::Retriable,
                            format!("the plugin's timeout handler did not complete the record within timeout_grace ({grace})"),
                        )?;
                    }
                }
                // A grace timer of a record re-invoked since (its instance was replaced): its
                // time is still up.
                (TimerKind::Deadline | TimerKind::Grace, None) => self.time_out(timer.seq, now)?,
                (TimerKind::BatchDue, _) => {}
            }
        }
        Ok(())
    }

    /// Calls the plugin's `timeout` for a pending record whose time is up (FLINK-SEMANTICS
    /// 12-15). A handler that sent a request (a fallback call) may complete the record from its
    /// answer within `timeout_grace`; otherwise a record the handler left open has timed out.
    pub(super) fn time_out(&mut self, seq: u64, now: Instant) -> Result<(), OperatorError> {
        let Some(entry) = self.records.pending(seq) else {
            return Ok(());
        };
        entry.timed_out = true;
        // A pending retry is cancelled: the plugin's `timeout` decides (FLINK-SEMANTICS 24).
        entry.retry_at = None;
        let (slot, attempt) = (entry.slot, entry.attempt);
        let calls_before = self.calls_started;
        let result = self.function.timeout(slot, seq, attempt, &mut entry.input);
        self.after_call(slot, result, Some((seq, Cause::Timeout)))?;
        let sent_request = self.calls_started > calls_before;
        let grace = self.config.timeout_grace;
        let Some(entry) = self.records.pending(seq) else {
            return Ok(());
        };
        if sent_request && !grace.is_zero() && entry.attempt == attempt {
            entry.grace_until = Some(now + grace);
            self.timers.push(now + grace, seq, TimerKind::Grace);
            Ok(())
        } else {
            // The plugin's `timeout` left the record open: it has timed out (13).
            self.fail(
                seq,
                Cause::Timeout,
                FailureKind::Retriable,
                "the plugin's timeout handler did not complete the record".into(),
            )
        }
    }
}
