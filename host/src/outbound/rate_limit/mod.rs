//! Rate limits: how many requests per second and tokens per minute an operator (or several
//! operators, or several processes) may send.
//!
//! The pieces, each in its own file:
//! - [`Allowance`]: what a limit hands out. `local` keeps it in this process (governor's GCRA
//!   for `token_bucket`, a sliding log for `sliding_window`); `redis` keeps it in a Redis
//!   server shared by several processes, and falls back to a local allowance of its share
//!   while Redis is unreachable.
//! - `RateLimit`: an allowance plus the ledger that settles the tokens charged in advance
//!   (an estimate per request) against the usage the plugin reports afterwards.
//! - `RateLimitLayer`: the tower layer in the outbound stack's rate-limit slot (below the
//!   retry, so that every attempt on the wire is paced). Waiting for permission holds the
//!   request, so the record stays in flight and the operator's capacity fills: backpressure.
//!
//! Nothing here knows the manifest: `pipeline::build` makes the limits from it.

pub mod estimate;
mod layer;
pub mod local;
pub mod redis;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use self::redis::{RedisAllowance, RedisLimitError};
pub use estimate::TokenEstimator;
pub use layer::{RateLimitLayer, RateLimitService};
pub use local::LocalAllowance;

/// How a limit spreads what it allows over time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// GCRA (a token bucket): a steady rate, with up to `burst` at once after a quiet spell.
    #[default]
    TokenBucket,
    /// At most the limit in any window (1 s for requests, 60 s for tokens), counted exactly.
    SlidingWindow,
}

/// One limit's figures. A limit with neither rate limits nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateLimitOptions {
    /// Requests per second; `None`: no request limit.
    pub requests_per_second: Option<f64>,
    /// Tokens (input + output) per minute; `None`: no token limit.
    pub tokens_per_minute: Option<u64>,
    pub algorithm: Algorithm,
    /// Requests the bucket holds (`token_bucket`); `None`: one second's worth. The token
    /// bucket's size follows from it (the same fraction of a minute's tokens).
    pub burst: Option<u32>,
}

impl RateLimitOptions {
    /// The same limit scaled to `share` (0 < share <= 1): what one of several processes may
    /// use on its own while the shared counter is out of reach.
    pub fn share(&self, share: f64) -> RateLimitOptions {
        let share = share.clamp(f64::MIN_POSITIVE, 1.0);
        RateLimitOptions {
            requests_per_second: self.requests_per_second.map(|r| r * share),
            tokens_per_minute: self
                .tokens_per_minute
                .map(|t| ((t as f64 * share).ceil() as u64).max(1)),
            algorithm: self.algorithm,
            burst: self
                .burst
                .map(|b| ((f64::from(b) * share).ceil() as u32).max(1)),
        }
    }
}

/// The future [`Allowance::acquire`] returns.
pub type Acquiring<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What a limit hands out: requests and tokens. One allowance may be shared by several
/// operators (`[rate_limits.NAME]`) and, through Redis, by several processes.
pub trait Allowance: Send + Sync + 'static {
    /// Waits until `requests` requests and `tokens` tokens fit within the limit, then takes
    /// them. Never fails: a backend that breaks falls back to a local share, never to no
    /// limit. Accepts any `tokens`, more than the bucket holds included (taken in pieces).
    /// Waits on tokio's clock, so tests run it on a paused one.
    fn acquire(&self, requests: u32, tokens: u64) -> Acquiring<'_>;
}

/// How long a credit (tokens charged but not used) may be drawn on: long enough for the
/// next request to use it, short enough that tokens reserved long ago are not spent now on top
/// of what the limit allows in the current window.
const CREDIT_LIFETIME: Duration = Duration::from_secs(1);

/// A limit as the outbound stack uses it: an [`Allowance`] plus a ledger that settles the
/// tokens charged in advance. Shared (`Arc`) by every operator that uses the limit.
pub struct RateLimit {
    allowance: Arc<dyn Allowance>,
    name: String,
    /// Whether it limits tokens: then requests are charged an estimate of theirs.
    tokens: bool,
    ledger: Mutex<Ledger>,
}

/// Tokens charged but not used (a credit, drawn on by later requests before the allowance,
/// as governor has no refund), and tokens used but not charged (a debt, added to the next).
#[derive(Default)]
struct Ledger {
    /// Credits with when they were settled, oldest first.
    credit: VecDeque<(Instant, u64)>,
    debt: u64,
}

impl RateLimit {
    /// `name` names the limit in logs: the operator's name, or the shared limit's.
    pub fn new(allowance: Arc<dyn Allowance>, name: String) -> RateLimit {
        RateLimit {
            allowance,
            name,
            tokens: true,
            ledger: Mutex::new(Ledger::default()),
        }
    }

    /// Says whether the limit counts tokens (by default it does); one that does not spares
    /// the operator estimating each request's tokens.
    pub fn counting_tokens(self, tokens: bool) -> RateLimit {
        RateLimit { tokens, ..self }
    }

    pub fn counts_tokens(&self) -> bool {
        self.tokens
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until one request and `tokens_estimate` tokens (less any credit, plus any debt)
    /// fit, and takes them; returns how long it waited.
    pub async fn acquire(&self, tokens_estimate: u64) -> Duration {
        let tokens = self.ledger().draw(tokens_estimate, Instant::now());
        let started = Instant::now();
        self.allowance.acquire(1, tokens).await;
        started.elapsed()
    }

    /// A request charged `charged` tokens used `used`: the difference is credited to later
    /// requests, or added to the next as a debt.
    pub fn settle(&self, charged: u64, used: u64) {
        let mut ledger = self.ledger();
        if used > charged {
            ledger.debt = ledger.debt.saturating_add(used - charged);
        } else if charged > used {
            ledger.credit.push_back((Instant::now(), charged - used));
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger is consistent after every statement: a panic elsewhere leaves it usable.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ledger {
    /// The tokens to take from the allowance for a request estimated at `estimate`: the debt
    /// is added, then live credits are drawn on, oldest first.
    fn draw(&mut self, estimate: u64, now: Instant) -> u64 {
        let mut need = estimate.saturating_add(std::mem::take(&mut self.debt));
        while let Some((at, _)) = self.credit.front() {
            if now.duration_since(*at) < CREDIT_LIFETIME {
                break;
            }
            self.credit.pop_front();
        }
        while need > 0 {
            let Some((_, credit)) = self.credit.front_mut() else {
                break;
            };
            let drawn = need.min(*credit);
            need -= drawn;
            *credit -= drawn;
            if *credit == 0 {
                self.credit.pop_front();
            }
        }
        need
    }
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("name", &self.name)
            .finish()
    }
}

/// Two limits are the same limit when they are one object (shared by `Arc`).
impl PartialEq for RateLimit {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

/// Whether a request's answer used the tokens charged for it. Providers charge for what they
/// answered; a refusal (429, 5xx, any non-2xx) or no answer used none, and its charge is
/// credited back at once by the layer.
pub fn used_its_tokens<E>(answer: &Result<super::Response, E>) -> bool {
    matches!(answer, Ok(response) if (200..300).contains(&response.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An allowance that records what it is asked for and never waits.
    #[derive(Default)]
    struct Counting(Mutex<Vec<(u32, u64)>>);

    impl Allowance for Counting {
        fn acquire(&self, requests: u32, tokens: u64) -> Acquiring<'_> {
            self.0.lock().unwrap().push((requests, tokens));
            Box::pin(async {})
        }
    }

    fn limit() -> (RateLimit, Arc<Counting>) {
        let counting = Arc::new(Counting::default());
        let limit = RateLimit::new(Arc::clone(&counting) as Arc<dyn Allowance>, "l".into());
        (limit, counting)
    }

    #[tokio::test(start_paused = true)]
    async fn over_estimates_are_credited_to_the_next_requests_and_under_estimates_charged() {
        let (limit, asked) = limit();
        limit.acquire(100).await;
        limit.settle(100, 30);
        // 70 credited: the next request of 100 takes 30 from the allowance.
        limit.acquire(100).await;
        limit.settle(100, 160);
        // 60 owed: added to the next.
        limit.acquire(10).await;
        // Usage with nothing charged (no record) is all debt.
        limit.settle(0, 5);
        limit.acquire(0).await;
        assert_eq!(
            *asked.0.lock().unwrap(),
            [(1, 100), (1, 30), (1, 70), (1, 5)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_credit_expires() {
        let (limit, asked) = limit();
        limit.settle(100, 0);
        tokio::time::sleep(CREDIT_LIFETIME).await;
        limit.acquire(50).await;
        assert_eq!(*asked.0.lock().unwrap(), [(1, 50)]);
    }

    #[test]
    fn only_an_answer_in_2xx_used_its_tokens() {
        let answer = |status| -> Result<super::super::Response, ()> {
            Ok(super::super::Response {
                status,
                headers: vec![],
                body: vec![],
                from_cache: false,
            })
        };
        assert!(used_its_tokens(&answer(200)));
        assert!(!used_its_tokens(&answer(429)));
        assert!(!used_its_tokens(&answer(503)));
        assert!(!used_its_tokens(&Err::<super::super::Response, ()>(())));
    }

    #[test]
    fn a_share_scales_every_figure_and_never_reaches_zero() {
        let options = RateLimitOptions {
            requests_per_second: Some(50.0),
            tokens_per_minute: Some(1000),
            algorithm: Algorithm::SlidingWindow,
            burst: Some(1),
        };
        let half = options.share(0.5);
        assert_eq!(half.requests_per_second, Some(25.0));
        assert_eq!(half.tokens_per_minute, Some(500));
        assert_eq!(half.burst, Some(1));
        assert_eq!(half.algorithm, Algorithm::SlidingWindow);
    }
}
