//! The operator's timers: one heap of (instant, record, kind), earliest first.
//!
//! A timer is never removed when its record completes: the operator skips timers whose record
//! is gone or done when they come up (cheaper than searching the heap on every completion).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
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
}

impl Timers {
    pub fn push(&mut self, at: Instant, seq: u64, kind: TimerKind) {
        self.heap.push(Reverse(Timer { at, seq, kind }));
    }

    /// The earliest timer.
    pub fn peek(&self) -> Option<Timer> {
        self.heap.peek().map(|Reverse(t)| *t)
    }

    pub fn pop(&mut self) -> Option<Timer> {
        self.heap.pop().map(|Reverse(t)| t)
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
}
