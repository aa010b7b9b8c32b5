//! A limit kept in this process: governor's GCRA for `token_bucket`, an exact sliding log for
//! `sliding_window`. Both wait on tokio's clock (governor through [`TokioClock`]), so a paused
//! clock drives them in tests, and a wait is a tokio sleep, never a busy loop.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use super::{Acquiring, Algorithm, Allowance, RateLimitOptions};

/// The window of a token limit: tokens per minute.
const TOKEN_WINDOW: Duration = Duration::from_secs(60);
/// The shortest sleep between two tries: governor's answer is in nanoseconds, tokio's timer
/// in milliseconds, and a zero wait must not turn into a spin.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Governor's clock: nanoseconds since the allowance was made, read from tokio's clock.
#[derive(Clone, Copy, Debug)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// A token bucket (GCRA): `per_unit` replenishes one unit; at most `burst` units at once.
struct Bucket {
    limiter: Gcra,
    clock: TokioClock,
    burst: u32,
}

impl Bucket {
    fn new(per_unit: Duration, burst: u32) -> Option<Bucket> {
        let burst = NonZeroU32::new(burst.max(1))?;
        let quota = Quota::with_period(per_unit.max(Duration::from_nanos(1)))?.allow_burst(burst);
        let clock = TokioClock {
            origin: Instant::now(),
        };
        Some(Bucket {
            limiter: RateLimiter::direct_with_clock(quota, clock),
            clock,
            burst: burst.get(),
        })
    }

    /// Takes `units`, in pieces of at most the bucket's size (governor refuses more at once).
    async fn take(&self, mut units: u64) {
        while units > 0 {
            let piece = units.min(u64::from(self.burst)) as u32;
            let Some(n) = NonZeroU32::new(piece) else {
                return;
            };
            loop {
                match self.limiter.check_n(n) {
                    Ok(Ok(())) | Err(_) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        tokio::time::sleep(wait.max(MIN_WAIT)).await;
                    }
                }
            }
            units -= u64::from(piece);
        }
    }
}

/// An exact sliding log: at most `limit` units in any `window`.
struct SlidingLog {
    limit: u64,
    window: Duration,
    /// What was taken and when, oldest first, and its sum.
    taken: Mutex<(VecDeque<(Instant, u64)>, u64)>,
}

impl SlidingLog {
    fn new(limit: u64, window: Duration) -> SlidingLog {
        SlidingLog {
            limit: limit.max(1),
            window,
            taken: Mutex::new((VecDeque::new(), 0)),
        }
    }

    /// Takes `units`, in pieces of at most the limit (more could never fit in one window).
    async fn take(&self, mut units: u64) {
        while units > 0 {
            let piece = units.min(self.limit);
            while let Some(at) = self.try_take(piece) {
                tokio::time::sleep_until(at.max(Instant::now() + MIN_WAIT)).await;
            }
            units -= piece;
        }
    }

    /// Takes `piece` now if it fits (`None`), else says when enough of the log will have left
    /// the window.
    fn try_take(&self, piece: u64) -> Option<Instant> {
        let now = Instant::now();
        let mut guard = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let (log, sum) = &mut *guard;
        while let Some(&(at, units)) = log.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            log.pop_front();
            *sum -= units;
        }
        if *sum + piece <= self.limit {
            log.push_back((now, piece));
            *sum += piece;
            return None;
        }
        // The oldest entries leave first: wait until enough of them have.
        let mut left = *sum;
        for &(at, units) in log.iter() {
            left -= units;
            if left + piece <= self.limit {
                return Some(at + self.window);
            }
        }
        Some(now + self.window)
    }
}

/// One dimension of a limit (requests or tokens), by algorithm.
enum Limiter {
    Bucket(Bucket),
    Window(SlidingLog),
}

impl Limiter {
    async fn take(&self, units: u64) {
        match self {
            Limiter::Bucket(bucket) => bucket.take(units).await,
            Limiter::Window(log) => log.take(units).await,
        }
    }
}

/// A limit kept in this process (see the module's doc).
pub struct LocalAllowance {
    requests: Option<Limiter>,
    tokens: Option<Limiter>,
}

impl LocalAllowance {
    /// The allowance `options` describe. A rate that is not a positive number limits nothing
    /// (the manifest refuses those).
    pub fn new(options: &RateLimitOptions) -> LocalAllowance {
        let rps = options
            .requests_per_second
            .filter(|r| r.is_finite() && *r > 0.0);
        let tpm = options.tokens_per_minute.filter(|t| *t > 0);
        match options.algorithm {
            Algorithm::TokenBucket => {
                // The bucket holds `burst` requests, one second's worth by default; the token
                // bucket holds the same fraction of a minute's tokens.
                let burst = options
                    .burst
                    .unwrap_or_else(|| rps.map_or(1, |r| r.ceil().min(f64::from(u32::MAX)) as u32))
                    .max(1);
                let fraction = rps.map_or(1.0, |r| f64::from(burst) / r);
                let requests = rps.and_then(|r| {
                    Bucket::new(Duration::from_secs_f64(1.0 / r), burst).map(Limiter::Bucket)
                });
                let tokens = tpm.and_then(|t| {
                    let size = (t as f64 * fraction / 60.0).ceil().min(f64::from(u32::MAX));
                    let per_token = TOKEN_WINDOW.as_secs_f64() / t as f64;
                    Bucket::new(Duration::from_secs_f64(per_token), size as u32)
                        .map(Limiter::Bucket)
                });
                LocalAllowance { requests, tokens }
            }
            Algorithm::SlidingWindow => {
                // At most N in any second; below one request per second, one per 1/rate.
                let requests = rps.map(|r| {
                    let log = if r >= 1.0 {
                        SlidingLog::new(r.floor() as u64, Duration::from_secs(1))
                    } else {
                        SlidingLog::new(1, Duration::from_secs_f64(1.0 / r))
                    };
                    Limiter::Window(log)
                });
                let tokens = tpm.map(|t| Limiter::Window(SlidingLog::new(t, TOKEN_WINDOW)));
                LocalAllowance { requests, tokens }
            }
        }
    }
}

impl Allowance for LocalAllowance {
    fn acquire(&self, requests: u32, tokens: u64) -> Acquiring<'_> {
        Box::pin(async move {
            if let Some(limiter) = &self.requests {
                limiter.take(u64::from(requests)).await;
            }
            if let Some(limiter) = &self.tokens {
                limiter.take(tokens).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn options(rps: Option<f64>, tpm: Option<u64>, algorithm: Algorithm) -> RateLimitOptions {
        RateLimitOptions {
            requests_per_second: rps,
            tokens_per_minute: tpm,
            algorithm,
            burst: None,
        }
    }

    /// Starts `tasks` tasks that each acquire (1 request, `tokens`) as fast as they may and log
    /// when they got it; returns the log after `run` of simulated time.
    async fn grants(
        allowance: LocalAllowance,
        tasks: usize,
        tokens: u64,
        run: Duration,
    ) -> Vec<(Duration, u64)> {
        let allowance = Arc::new(allowance);
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (allowance, log) = (Arc::clone(&allowance), Arc::clone(&log));
            handles.push(tokio::spawn(async move {
                loop {
                    allowance.acquire(1, tokens).await;
                    log.lock().unwrap().push((start.elapsed(), tokens));
                }
            }));
        }
        tokio::time::sleep(run).await;
        for handle in handles {
            handle.abort();
        }
        let log = log.lock().unwrap().clone();
        log
    }

    /// The most tokens granted within any `window` of the log.
    fn most_in_any(log: &[(Duration, u64)], window: Duration) -> u64 {
        most_within(log, window, |tokens| tokens)
    }

    /// The most requests granted within any `window` of the log.
    fn most_requests_in_any(log: &[(Duration, u64)], window: Duration) -> u64 {
        most_within(log, window, |_| 1)
    }

    fn most_within(log: &[(Duration, u64)], window: Duration, weight: fn(u64) -> u64) -> u64 {
        let mut most = 0;
        for (i, (start, _)) in log.iter().enumerate() {
            let within: u64 = log[i..]
                .iter()
                .take_while(|(at, _)| *at < *start + window)
                .map(|(_, units)| weight(*units))
                .sum();
            most = most.max(within);
        }
        most
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_bucket_grants_the_rate_plus_the_burst_and_no_more() {
        let mut opts = options(Some(10.0), None, Algorithm::TokenBucket);
        opts.burst = Some(5);
        let log = grants(LocalAllowance::new(&opts), 8, 0, Duration::from_secs(20)).await;
        // Over N seconds at most rate * N + burst, and the bucket is kept busy (not starved).
        let granted = log.len() as u64;
        assert!(granted <= 10 * 20 + 5, "{granted}");
        assert!(granted >= 10 * 20 - 1, "{granted}");
        // The burst comes at once, then the steady rate.
        assert_eq!(log.iter().filter(|(at, _)| at.is_zero()).count(), 5);
        assert!(most_requests_in_any(&log, Duration::from_secs(1)) <= 10 + 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fractional_rate_spaces_requests_out() {
        let opts = options(Some(0.5), None, Algorithm::TokenBucket);
        let log = grants(LocalAllowance::new(&opts), 2, 0, Duration::from_secs(9)).await;
        // One at once (the default burst is one second's worth, at least 1), then one per 2 s.
        let times: Vec<u64> = log.iter().map(|(at, _)| at.as_secs()).collect();
        assert_eq!(times, [0, 2, 4, 6, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_hold_over_any_minute_with_requests_larger_than_the_bucket() {
        // 6000 tokens/min: a bucket of 100 tokens (one second's worth); each request takes 700.
        let opts = options(None, Some(6000), Algorithm::TokenBucket);
        let log = grants(LocalAllowance::new(&opts), 4, 700, Duration::from_secs(180)).await;
        let most = most_in_any(&log, Duration::from_secs(60));
        // Within the limit plus one request's worth (and the one-second bucket).
        assert!(most <= 6000 + 700 + 100, "{most}");
        let total: u64 = log.iter().map(|(_, t)| t).sum();
        assert!(total >= 3 * 6000 - 700, "{total}");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_and_tokens_are_both_held() {
        let opts = options(Some(100.0), Some(600), Algorithm::TokenBucket);
        let log = grants(LocalAllowance::new(&opts), 4, 60, Duration::from_secs(60)).await;
        // Tokens bind: 600/min at 60 a request is 10 requests a minute, not 100 a second.
        assert!(log.len() <= 11 + 1, "{}", log.len());
        assert!(log.len() >= 9, "{}", log.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sliding_window_is_exact() {
        let opts = options(Some(5.0), None, Algorithm::SlidingWindow);
        let log = grants(LocalAllowance::new(&opts), 8, 0, Duration::from_secs(10)).await;
        // At most 5 in any second: all five at the start of each second, none in between.
        assert_eq!(most_requests_in_any(&log, Duration::from_secs(1)), 5);
        assert_eq!(log.len(), 50);
        assert!(log.iter().all(|(at, _)| at.subsec_nanos() == 0), "{log:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sliding_token_window_takes_large_requests_in_pieces() {
        let opts = options(None, Some(1000), Algorithm::SlidingWindow);
        let log = grants(LocalAllowance::new(&opts), 3, 400, Duration::from_secs(300)).await;
        // Grants are logged whole; the window counts pieces, so one request may straddle.
        let most = most_in_any(&log, Duration::from_secs(60));
        assert!(most <= 1000 + 400, "{most}");
        let total: u64 = log.iter().map(|(_, t)| t).sum();
        assert!(total >= 4000, "{total}");
        // A request larger than the whole window still goes, over several windows.
        let huge = LocalAllowance::new(&opts);
        let start = Instant::now();
        huge.acquire(1, 2500).await;
        assert_eq!(start.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_without_rates_never_waits() {
        let allowance = LocalAllowance::new(&RateLimitOptions::default());
        let start = Instant::now();
        for _ in 0..1000 {
            allowance.acquire(1, 1_000_000).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
