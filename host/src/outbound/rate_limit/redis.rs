//! A limit kept in Redis, shared by every process that names it: together they stay within it.
//!
//! Each acquisition runs one Lua script (`redis_token_bucket.lua`: GCRA; or
//! `redis_sliding_window.lua`: an exact window) that reads Redis's own clock (`TIME`), so the
//! processes' clocks never need to agree. The script takes what was asked or answers how long to
//! wait; the client sleeps that long on tokio's clock and asks again. Within a process one
//! acquisition at a time asks Redis (the others queue behind it, first come first served), so a
//! crowd of waiters costs one call per grant plus one per wait, not one per waiter.
//!
//! Requests or tokens beyond what the bucket (or window) holds are taken in pieces of at most
//! its size, each piece waiting its turn: a request larger than the bucket is allowed, and is
//! sent once its last piece is granted, so the limit holds over any window.
//!
//! When Redis is out of reach (at start or mid-run: a connection error, a call slower than
//! [`CALL_TIMEOUT`], a failing script), acquisitions go to the fallback allowance (this
//! process's share of the limit, kept locally), never to no limit; the switch is logged once,
//! and a background task tries Redis again every [`RETRY_EVERY`] and logs when it is back.
//! Keys expire (PX / PEXPIRE) as soon as they no longer matter; a Redis restarted empty starts
//! the limit afresh.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::{Acquiring, Algorithm, Allowance, RateLimitOptions};
use crate::redis_url::shown as shown_url;

/// The longest one Redis call (connecting included) may take before Redis counts as out of
/// reach: an acquisition never stalls longer on a broken Redis.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(200);
/// How often Redis is tried again while the fallback is in use.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The window of a token limit: tokens per minute.
const TOKEN_WINDOW_US: f64 = 60_000_000.0;

/// Why a Redis-backed limit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("bad redis_url {url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// An [`Allowance`] kept in Redis under the limit's name, with a local fallback share.
pub struct RedisAllowance {
    shared: Arc<Shared>,
}

struct Shared {
    /// The limit's name, as logged.
    name: String,
    /// The URL as logged: any password hidden.
    url: String,
    client: redis::Client,
    /// Made on the first acquisition (it needs a running tokio runtime); reconnects by itself.
    connection: Mutex<Option<ConnectionManager>>,
    plan: Plan,
    fallback: Arc<dyn Allowance>,
    /// What the fallback allows, for the log: the share and its figures.
    fallback_share: f64,
    fallback_options: RateLimitOptions,
    link: Mutex<Link>,
    /// One acquisition at a time asks Redis (tokio's mutex is fair: first come first served).
    turn: tokio::sync::Mutex<()>,
    fallback_acquisitions: AtomicU64,
}

/// Whether Redis is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not tried yet: the first acquisition tries.
    Untried,
    Up,
    /// Out of reach since then; a background task tries it again.
    Down {
        since: Instant,
    },
}

impl RedisAllowance {
    /// A limit of `options` kept in Redis at `url` under `name` (every process sharing the limit
    /// gives the same name and figures). `fallback` is what this process may use alone while
    /// Redis is out of reach, `fallback_share` of the limit (for the log). A bad URL is an
    /// error; an unreachable server is not: the first acquisitions then use the fallback.
    pub fn new(
        url: &str,
        name: &str,
        options: RateLimitOptions,
        fallback_share: f64,
        fallback: Arc<dyn Allowance>,
    ) -> Result<RedisAllowance, RedisLimitError> {
        let client = redis::Client::open(url).map_err(|source| RedisLimitError::BadUrl {
            url: shown_url(url),
            source,
        })?;
        let fallback_options = options.share(fallback_share);
        Ok(RedisAllowance {
            shared: Arc::new(Shared {
                name: name.to_string(),
                url: shown_url(url),
                client,
                connection: Mutex::new(None),
                plan: Plan::new(name, &options),
                fallback,
                fallback_share,
                fallback_options,
                link: Mutex::new(Link::Untried),
                turn: tokio::sync::Mutex::new(()),
                fallback_acquisitions: AtomicU64::new(0),
            }),
        })
    }

    /// Acquisitions (or their remaining pieces) that the fallback share served.
    pub fn fallback_acquisitions(&self) -> u64 {
        self.shared.fallback_acquisitions.load(Ordering::Relaxed)
    }

    /// Whether Redis is out of reach now (acquisitions go to the fallback share).
    pub fn on_fallback(&self) -> bool {
        matches!(self.shared.link(), Link::Down { .. })
    }
}

impl Allowance for RedisAllowance {
    fn acquire(&self, requests: u32, tokens: u64) -> Acquiring<'_> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut pieces = shared.plan.pieces(u64::from(requests), tokens);
            while let Some((piece_requests, piece_tokens)) = pieces.next() {
                if !Shared::take(shared, piece_requests, piece_tokens).await {
                    // Redis is out of reach: what is left comes from this process's share.
                    shared.fallback_acquisitions.fetch_add(1, Ordering::Relaxed);
                    let (left_requests, left_tokens) = pieces.left(piece_requests, piece_tokens);
                    let left_requests = u32::try_from(left_requests).unwrap_or(u32::MAX);
                    shared.fallback.acquire(left_requests, left_tokens).await;
                    return;
                }
            }
        })
    }
}

impl Shared {
    fn link(&self) -> Link {
        *self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one piece from Redis, waiting as it says; false: Redis is out of reach (nothing
    /// was taken there).
    async fn take(this: &Arc<Shared>, requests: u64, tokens: u64) -> bool {
        if matches!(this.link(), Link::Down { .. }) {
            return false;
        }
        let _turn = this.turn.lock().await;
        loop {
            if matches!(this.link(), Link::Down { .. }) {
                return false;
            }
            match this.ask(requests, tokens).await {
                Ok(None) => {
                    this.reached();
                    return true;
                }
                Ok(Some(wait)) => {
                    this.reached();
                    tokio::time::sleep(wait).await;
                }
                Err(cause) => {
                    Shared::lost(this, &cause);
                    return false;
                }
            }
        }
    }

    /// One run of the script: `None` when granted, else how long to wait before asking again.
    async fn ask(&self, requests: u64, tokens: u64) -> Result<Option<Duration>, String> {
        let mut connection = self.connection().map_err(|e| e.to_string())?;
        let call = self.plan.invocation(requests, tokens);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<u64>(&mut connection))
            .await
            .map_err(|_| {
                format!(
                    "no answer within {}",
                    humantime::format_duration(CALL_TIMEOUT)
                )
            })?
            .map_err(|e| e.to_string())?;
        Ok((answer > 0).then(|| Duration::from_millis(answer)))
    }

    fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        crate::redis_url::lazy_connection(&self.connection, &self.client, CALL_TIMEOUT)
    }

    /// Redis answered: the first time, say that the limit is shared through it.
    fn reached(&self) {
        let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        if *link == Link::Untried {
            *link = Link::Up;
            tracing::info!(limit = %self.name, url = %self.url, "rate limit shared through Redis");
        }
    }

    /// Redis failed: switch to the fallback (logged once per outage) and start trying again.
    fn lost(this: &Arc<Shared>, cause: &str) {
        {
            let mut link = this.link.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*link, Link::Down { .. }) {
                return;
            }
            *link = Link::Down {
                since: Instant::now(),
            };
        }
        tracing::warn!(
            limit = %this.name,
            url = %this.url,
            "Redis is out of reach ({cause}): rate limit '{}' falls back to this process's \
             share of it, {} = {}, until Redis answers again (tried every {})",
            this.name,
            this.fallback_share,
            Rates(&this.fallback_options),
            humantime::format_duration(RETRY_EVERY),
        );
        tokio::spawn(retry(Arc::downgrade(this)));
    }
}

/// Tries Redis every [`RETRY_EVERY`] until it answers, then puts the limit back on it. Ends
/// early when the allowance is dropped.
async fn retry(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // The first call after a failed reconnect may only report that failure (and start a
        // new connection): a second one sees the new connection.
        let answered = shared.ask(0, 0).await.is_ok() || shared.ask(0, 0).await.is_ok();
        if answered {
            let since = {
                let mut link = shared.link.lock().unwrap_or_else(|e| e.into_inner());
                let since = match *link {
                    Link::Down { since } => since,
                    _ => Instant::now(),
                };
                *link = Link::Up;
                since
            };
            tracing::warn!(
                limit = %shared.name,
                url = %shared.url,
                "Redis answers again: rate limit '{}' is shared through it again after {:.1} s \
                 on the fallback share ({} acquisitions took the fallback so far)",
                shared.name,
                since.elapsed().as_secs_f64(),
                shared.fallback_acquisitions.load(Ordering::Relaxed),
            );
            return;
        }
    }
}

/// A limit's figures as the scripts take them, and its keys.
struct Plan {
    script: redis::Script,
    keys: Vec<String>,
    requests: Option<Scale>,
    tokens: Option<Scale>,
}

/// One of a limit's two figures as a script sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scale {
    /// Token bucket: microseconds per unit; sliding window: the window in microseconds.
    span_us: f64,
    /// Units at once: the bucket's size, or the most units in a window. Pieces are never
    /// larger.
    most: u64,
}

impl Plan {
    /// The same figures as the local allowance: the bucket holds `burst` requests (one
    /// second's worth by default, at least one) and the same fraction of a minute's tokens; a
    /// sliding window holds a second's requests (below one per second: one per 1/rate) and a
    /// minute's tokens.
    fn new(name: &str, options: &RateLimitOptions) -> Plan {
        let rps = options
            .requests_per_second
            .filter(|r| r.is_finite() && *r > 0.0);
        let tpm = options
            .tokens_per_minute
            .filter(|t| *t > 0)
            .map(|t| t as f64);
        let prefix = format!("waio:rate_limit:{name}");
        match options.algorithm {
            Algorithm::TokenBucket => {
                let burst = options
                    .burst
                    .map(f64::from)
                    .unwrap_or_else(|| rps.map_or(1.0, f64::ceil))
                    .max(1.0);
                let fraction = rps.map_or(1.0, |r| burst / r);
                Plan {
                    script: redis::Script::new(include_str!("redis_token_bucket.lua")),
                    keys: vec![
                        format!("{prefix}:token_bucket:requests"),
                        format!("{prefix}:token_bucket:tokens"),
                    ],
                    requests: rps.map(|r| Scale {
                        span_us: 1e6 / r,
                        most: burst as u64,
                    }),
                    tokens: tpm.map(|t| Scale {
                        span_us: TOKEN_WINDOW_US / t,
                        most: ((t * fraction / 60.0).ceil() as u64).max(1),
                    }),
                }
            }
            Algorithm::SlidingWindow => Plan {
                script: redis::Script::new(include_str!("redis_sliding_window.lua")),
                keys: [
                    "requests:log",
                    "requests:sum",
                    "tokens:log",
                    "tokens:sum",
                    "seq",
                ]
                .iter()
                .map(|k| format!("{prefix}:sliding_window:{k}"))
                .collect(),
                requests: rps.map(|r| {
                    if r >= 1.0 {
                        Scale {
                            span_us: 1e6,
                            most: r.floor() as u64,
                        }
                    } else {
                        Scale {
                            span_us: 1e6 / r,
                            most: 1,
                        }
                    }
                }),
                tokens: tpm.map(|t| Scale {
                    span_us: TOKEN_WINDOW_US,
                    most: t as u64,
                }),
            },
        }
    }

    /// The script run that takes `requests` and `tokens` (each at most its scale's `most`).
    fn invocation(&self, requests: u64, tokens: u64) -> redis::ScriptInvocation<'_> {
        let mut call = self.script.prepare_invoke();
        for key in &self.keys {
            call.key(key);
        }
        for (scale, units) in [(self.requests, requests), (self.tokens, tokens)] {
            let (span, most) = scale.map_or((0.0, 0), |s| (s.span_us, s.most));
            call.arg(span).arg(most).arg(units);
        }
        call
    }

    /// The pieces `requests` and `tokens` are taken in; nothing when the limit limits
    /// neither.
    fn pieces(&self, requests: u64, tokens: u64) -> Pieces {
        Pieces {
            requests: if self.requests.is_some() { requests } else { 0 },
            tokens: if self.tokens.is_some() { tokens } else { 0 },
            most_requests: self.requests.map_or(u64::MAX, |s| s.most.max(1)),
            most_tokens: self.tokens.map_or(u64::MAX, |s| s.most.max(1)),
        }
    }
}

/// What is still to take, handed out in pieces no larger than the bucket or window.
#[derive(Debug)]
struct Pieces {
    requests: u64,
    tokens: u64,
    most_requests: u64,
    most_tokens: u64,
}

impl Pieces {
    /// What is left including a piece that was handed out but not taken.
    fn left(&self, piece_requests: u64, piece_tokens: u64) -> (u64, u64) {
        (self.requests + piece_requests, self.tokens + piece_tokens)
    }
}

impl Iterator for Pieces {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.requests == 0 && self.tokens == 0 {
            return None;
        }
        let requests = self.requests.min(self.most_requests);
        let tokens = self.tokens.min(self.most_tokens);
        self.requests -= requests;
        self.tokens -= tokens;
        Some((requests, tokens))
    }
}

/// A limit's figures for a log line: "25 requests/s and 5000 tokens/min".
struct Rates<'a>(&'a RateLimitOptions);

impl std::fmt::Display for Rates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = self.0.requests_per_second {
            parts.push(format!("{r} requests/s"));
        }
        if let Some(t) = self.0.tokens_per_minute {
            parts.push(format!("{t} tokens/min"));
        }
        if let Some(b) = self.0.burst {
            parts.push(format!("burst {b}"));
        }
        if parts.is_empty() {
            return f.write_str("no limit set");
        }
        f.write_str(&parts.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rps: Option<f64>, tpm: Option<u64>, algorithm: Algorithm) -> RateLimitOptions {
        RateLimitOptions {
            requests_per_second: rps,
            tokens_per_minute: tpm,
            algorithm,
            burst: None,
        }
    }

    #[test]
    fn a_token_bucket_holds_a_second_of_requests_and_the_same_share_of_tokens() {
        let mut opts = options(Some(50.0), Some(60_000), Algorithm::TokenBucket);
        let plan = Plan::new("x", &opts);
        assert_eq!(
            plan.requests,
            Some(Scale {
                span_us: 20_000.0,
                most: 50
            })
        );
        assert_eq!(
            plan.tokens,
            Some(Scale {
                span_us: 1_000.0,
                most: 1000
            })
        );
        opts.burst = Some(5);
        let plan = Plan::new("x", &opts);
        assert_eq!(plan.requests.map(|s| s.most), Some(5));
        assert_eq!(plan.tokens.map(|s| s.most), Some(100));
        assert_eq!(plan.keys[0], "waio:rate_limit:x:token_bucket:requests");
    }

    #[test]
    fn a_sliding_window_holds_a_second_of_requests_or_one_below_one_per_second() {
        let plan = Plan::new(
            "x",
            &options(Some(2.5), Some(600), Algorithm::SlidingWindow),
        );
        assert_eq!(
            plan.requests,
            Some(Scale {
                span_us: 1e6,
                most: 2
            })
        );
        assert_eq!(
            plan.tokens,
            Some(Scale {
                span_us: 60e6,
                most: 600
            })
        );
        let plan = Plan::new("x", &options(Some(0.5), None, Algorithm::SlidingWindow));
        assert_eq!(
            plan.requests,
            Some(Scale {
                span_us: 2e6,
                most: 1
            })
        );
        assert_eq!(plan.tokens, None);
    }

    #[test]
    fn large_requests_are_taken_in_pieces_no_larger_than_the_bucket() {
        let plan = Plan::new("x", &options(Some(1.0), Some(600), Algorithm::TokenBucket));
        // One request per second: the token bucket holds one second's worth, 10 tokens.
        let pieces: Vec<_> = plan.pieces(1, 25).collect();
        assert_eq!(pieces, [(1, 10), (0, 10), (0, 5)]);
        let mut pieces = plan.pieces(1, 25);
        let first = pieces.next().expect("a piece");
        assert_eq!(pieces.left(first.0, first.1), (1, 25));
    }

    #[test]
    fn a_limit_without_rates_has_nothing_to_take() {
        let plan = Plan::new("x", &options(None, None, Algorithm::TokenBucket));
        assert_eq!(plan.pieces(3, 1000).count(), 0);
        // Tokens only: requests are not asked for.
        let plan = Plan::new("x", &options(None, Some(60), Algorithm::SlidingWindow));
        assert_eq!(plan.pieces(3, 10).collect::<Vec<_>>(), [(0, 10)]);
    }

    #[test]
    fn a_bad_url_is_an_error_and_passwords_are_never_shown() {
        let fallback: Arc<dyn Allowance> = Arc::new(Unlimited);
        let opts = options(Some(1.0), None, Algorithm::TokenBucket);
        let error = RedisAllowance::new("http://nope", "x", opts.clone(), 1.0, fallback.clone())
            .err()
            .expect("an http URL is refused");
        assert!(
            error.to_string().contains("bad redis_url \"http://nope\""),
            "{error}"
        );
        assert_eq!(
            shown_url("redis://user:secret@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert!(RedisAllowance::new("redis://127.0.0.1:1", "x", opts, 1.0, fallback).is_ok());
    }

    struct Unlimited;

    impl Allowance for Unlimited {
        fn acquire(&self, _: u32, _: u64) -> Acquiring<'_> {
            Box::pin(async {})
        }
    }
}
