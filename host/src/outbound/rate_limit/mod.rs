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

use std::future::Future;
use std::pin::Pin;

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

#[cfg(test)]
mod tests {
    use super::*;

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
