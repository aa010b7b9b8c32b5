//! Answer delays precise to a fraction of a millisecond.
//!
//! tokio's timer counts whole milliseconds and rounds up, so a 20 ms latency came out at 21-22 ms,
//! and benchmarks divide by the latency the mock was asked for. A thread of its own keeps the
//! pending deadlines in a heap and wakes at the earliest one (the kernel's timer slack, 50 µs by
//! default, is the error). With one fixed latency every new deadline is the latest, so adding one
//! takes a lock and a heap push and wakes nobody.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Owns the timer thread; dropping it stops the thread.
pub(crate) struct PreciseTimer {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    pending: BinaryHeap<Reverse<Deadline>>,
    next_seq: u64,
    stopped: bool,
}

struct Deadline {
    at: Instant,
    /// Ties in `at` keep their arrival order.
    seq: u64,
    fire: oneshot::Sender<()>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent if a holder panicked: every change is one push or pop.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PreciseTimer {
    pub(crate) fn start() -> std::io::Result<PreciseTimer> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread_inner = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("mock-timer".into())
            .spawn(move || fire_loop(&thread_inner))?;
        Ok(PreciseTimer { inner })
    }

    /// Waits `duration` from now.
    pub(crate) async fn sleep(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let (fire, fired) = oneshot::channel();
        let at = Instant::now() + duration;
        {
            let mut state = self.inner.lock();
            let seq = state.next_seq;
            state.next_seq += 1;
            let earliest = state.pending.peek().is_none_or(|Reverse(d)| at < d.at);
            state.pending.push(Reverse(Deadline { at, seq, fire }));
            if earliest {
                self.inner.wake.notify_one();
            }
        }
        // An error means the timer stopped: the server is shutting down, answer at once.
        let _ = fired.await;
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.inner.lock().stopped = true;
        self.inner.wake.notify_one();
    }
}

fn fire_loop(inner: &Inner) {
    let mut due = Vec::new();
    let mut state = inner.lock();
    loop {
        if state.stopped {
            // Dropping the senders releases every sleeper.
            state.pending.clear();
            return;
        }
        let now = Instant::now();
        while state.pending.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(deadline)) = state.pending.pop() {
                due.push(deadline.fire);
            }
        }
        if !due.is_empty() {
            // Wake the waiting answers without holding the lock new deadlines need.
            drop(state);
            for fire in due.drain(..) {
                // The answer's connection may be gone; nobody is waiting then.
                let _ = fire.send(());
            }
            state = inner.lock();
            continue;
        }
        state = match state.pending.peek().map(|Reverse(d)| d.at) {
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                inner
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => inner.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sleeps_end_in_deadline_order_and_not_early() {
        let timer = Arc::new(PreciseTimer::start().unwrap());
        let started = Instant::now();
        let mut tasks = Vec::new();
        // 100 ms apart: the tasks start one after the other, and a busy machine may hold one back
        // for a while before it sets its deadline.
        for ms in [300u64, 100, 200] {
            let timer = Arc::clone(&timer);
            tasks.push(tokio::spawn(async move {
                timer.sleep(Duration::from_millis(ms)).await;
                (ms, started.elapsed())
            }));
        }
        let mut ended = Vec::new();
        for task in tasks {
            ended.push(task.await.unwrap());
        }
        for (ms, elapsed) in &ended {
            assert!(
                *elapsed >= Duration::from_millis(*ms),
                "a {ms} ms sleep ended after {elapsed:?}"
            );
        }
        ended.sort_by_key(|(_, elapsed)| *elapsed);
        let order: Vec<u64> = ended.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(order, vec![100, 200, 300]);
    }

    #[tokio::test]
    async fn a_stopped_timer_releases_its_sleepers() {
        let timer = Arc::new(PreciseTimer::start().unwrap());
        let sleeper = {
            let timer = Arc::clone(&timer);
            tokio::spawn(async move { timer.sleep(Duration::from_secs(3600)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // What Drop does; the sleeper's handle keeps the timer itself alive.
        timer.inner.lock().stopped = true;
        timer.inner.wake.notify_one();
        tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("the sleeper was not released")
            .unwrap();
    }
}
