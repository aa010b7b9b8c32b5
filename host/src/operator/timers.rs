//! The operator's timers: (instant, record, kind), earliest first.
//!
//! A timer is never removed when its record completes: the operator skips timers whose record
//! is gone or done when they come up (cheaper than searching the heap on every completion).
//!
//! Every record sets a deadline as it enters, and records enter in time order with one timeout:
//! deadlines come in order, so they wait in a queue (O(1) a record) rather than the heap. A
//! deadline out of order (a reload shortened the timeout) goes to the heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// `batch.max_wait` is up for the records held to fill a batch. First, so that held
    /// records are invoked before a deadline due at the same instant times one out.
    BatchDue,
    /// The record's timeout (FLINK-SEMANTICS 12): the plugin's `timeout` is called.
    Deadline,
    /// The end of `timeout_grace` for a record whose `timeout` handler sent a request.
    Grace,
    /// The next attempt of a record (`[operator.async_retry]`). Last, so that a deadline due at
    /// the same instant fires first and cancels it (FLINK-SEMANTICS 24).
    Retry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at: Instant,
    pub seq: u64,
    pub kind: TimerKind,
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    /// Deadlines set in order, earliest first.
    in_order: VecDeque<Timer>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, seq: u64, kind: TimerKind) {
        let timer = Timer { at, seq, kind };
        if kind == TimerKind::Deadline && self.in_order.back().is_none_or(|last| *last <= timer) {
            self.in_order.push_back(timer);
        } else {
            self.heap.push(Reverse(timer));
        }
    }

    /// The earliest timer.
    pub fn peek(&self) -> Option<Timer> {
        let heap = self.heap.peek().map(|Reverse(t)| *t);
        let queue = self.in_order.front().copied();
        match (heap, queue) {
            (Some(h), Some(q)) => Some(h.min(q)),
            (h, q) => h.or(q),
        }
    }

    pub fn pop(&mut self) -> Option<Timer> {
        let from_queue = match (self.heap.peek(), self.in_order.front()) {
            (Some(Reverse(h)), Some(q)) => q < h,
            (None, Some(_)) => true,
            _ => false,
        };
        if from_queue {
            self.in_order.pop_front()
        } else {
            self.heap.pop().map(|Reverse(t)| t)
        }
    }

    /// The earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.peek() {
            Some(t) if t.at <= now => self.pop(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_come_due_earliest_first_whatever_order_they_were_set_in() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::default();
        timers.push(t0 + ms(30), 1, TimerKind::Deadline);
        timers.push(t0 + ms(10), 2, TimerKind::Grace);
        timers.push(t0 + ms(20), 3, TimerKind::Deadline);
        assert_eq!(timers.pop_due(t0 + ms(5)), None);
        let due: Vec<(u64, TimerKind)> = std::iter::from_fn(|| timers.pop_due(t0 + ms(25)))
            .map(|t| (t.seq, t.kind))
            .collect();
        assert_eq!(due, [(2, TimerKind::Grace), (3, TimerKind::Deadline)]);
        assert_eq!(timers.peek().map(|t| t.seq), Some(1));
    }

    #[test]
    fn deadlines_in_order_and_out_of_order_mix_with_other_timers_earliest_first() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::default();
        timers.push(t0 + ms(10), 1, TimerKind::Deadline);
        timers.push(t0 + ms(30), 2, TimerKind::Deadline);
        timers.push(t0 + ms(20), 3, TimerKind::Retry);
        // Out of order (a shorter timeout after a reload): still comes up in time.
        timers.push(t0 + ms(15), 4, TimerKind::Deadline);
        timers.push(t0 + ms(30), 5, TimerKind::Deadline);
        timers.push(t0 + ms(5), 6, TimerKind::BatchDue);
        let order: Vec<u64> = std::iter::from_fn(|| timers.pop()).map(|t| t.seq).collect();
        assert_eq!(order, [6, 1, 4, 3, 2, 5]);
        assert_eq!(timers.peek(), None);
    }
}
