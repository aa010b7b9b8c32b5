//! Counts over a sliding time window, for the retry budget and the circuit breaker.
//!
//! The window is kept as ten buckets, each a tenth of it long: a count leaves the window
//! between 0.9 and 1 window length after it was added. Memory and work stay constant however
//! many events come, and an idle window costs nothing until it is next touched.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: u64 = 10;

/// Two counts (what they mean is the owner's: calls and failures, successes and retries)
/// summed over the last window.
#[derive(Debug)]
pub(super) struct SlidingWindow {
    origin: Instant,
    bucket: Duration,
    /// Oldest first; only buckets that counted something.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Which tenth of a window since `origin` it covers.
    index: u64,
    counts: [u64; 2],
}

impl SlidingWindow {
    pub(super) fn new(window: Duration, now: Instant) -> Self {
        let bucket = (window / BUCKETS as u32).max(Duration::from_millis(1));
        SlidingWindow {
            origin: now,
            bucket,
            buckets: VecDeque::with_capacity(BUCKETS as usize),
        }
    }

    pub(super) fn add(&mut self, now: Instant, counts: [u64; 2]) {
        let index = self.forget_old(now);
        match self.buckets.back_mut() {
            Some(last) if last.index == index => {
                last.counts[0] += counts[0];
                last.counts[1] += counts[1];
            }
            _ => self.buckets.push_back(Bucket { index, counts }),
        }
    }

    /// Both counts summed over the window that ends `now`.
    pub(super) fn totals(&mut self, now: Instant) -> [u64; 2] {
        self.forget_old(now);
        self.buckets.iter().fold([0, 0], |sum, b| {
            [sum[0] + b.counts[0], sum[1] + b.counts[1]]
        })
    }

    /// Starts afresh, as if nothing had been counted.
    pub(super) fn clear(&mut self) {
        self.buckets.clear();
    }

    /// Drops the buckets that have left the window; returns the index of the current one.
    fn forget_old(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        let index = (elapsed.as_nanos() / self.bucket.as_nanos()) as u64;
        while self
            .buckets
            .front()
            .is_some_and(|b| b.index + BUCKETS <= index)
        {
            self.buckets.pop_front();
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_leave_the_window_after_it_has_passed() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(Duration::from_secs(10), start);
        window.add(start, [1, 0]);
        window.add(start + Duration::from_secs(5), [2, 1]);
        assert_eq!(window.totals(start + Duration::from_secs(9)), [3, 1]);
        // The first count is older than the window now; the second is not.
        assert_eq!(window.totals(start + Duration::from_secs(10)), [2, 1]);
        assert_eq!(window.totals(start + Duration::from_secs(15)), [0, 0]);
        window.add(start + Duration::from_secs(60), [4, 4]);
        assert_eq!(window.totals(start + Duration::from_secs(61)), [4, 4]);
        window.clear();
        assert_eq!(window.totals(start + Duration::from_secs(61)), [0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_count_stays_at_least_nine_tenths_of_the_window() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(Duration::from_secs(10), start);
        window.add(start + Duration::from_millis(999), [1, 1]);
        assert_eq!(window.totals(start + Duration::from_millis(9_999)), [1, 1]);
        assert_eq!(window.totals(start + Duration::from_millis(10_000)), [0, 0]);
    }
}
