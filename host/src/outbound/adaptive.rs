//! Adapting to the provider's rate limits: requests are paced by what the provider says it
//! still allows, so that they slow down before it refuses them.
//!
//! Per endpoint (scheme, host and port), from the answers that come back:
//! - Rate-limit headers ([`headers`]: OpenAI's `x-ratelimit-*`, Anthropic's
//!   `anthropic-ratelimit-*`). "`n` requests remain until `reset`": the `n` (less the
//!   requests sent since) may go; while at least half the limit remains they go at once (the
//!   provider has said there is plenty), below that they are spread evenly over `reset`, and
//!   with none left nothing goes until the reset.
//!   Once a reset passes with no newer answer, a fresh window of the stated limit is assumed
//!   (spread over the longest reset seen), so that the requests held for it do not all go at
//!   once. No tokens left holds every request until the tokens' reset (what a request will
//!   cost is not known here; the configured `rate_limit.tokens_per_minute` is for that).
//! - A 429 with `Retry-After` (or `retry-after-ms`) holds every request to the endpoint, not
//!   only the one refused, until it has passed.
//! - Without any rate-limit header, 429s alone drive an estimate of the rate the provider
//!   accepts (AIMD, as TCP does): the first 429 sets it to 0.9 of the requests the provider
//!   accepted over the last second, each later 429 (of a request sent after the last
//!   decrease, at least a second after it) cuts it to 0.7, and each success raises it by 1/20
//!   of its last ceiling per second; once it is twice that ceiling the estimate is dropped and
//!   requests go unpaced again.
//!
//! Until the provider has said anything, requests go unpaced: the operator's capacity bounds
//! the first burst. (Holding the others until the first answer would add one call's latency,
//! seconds for an LLM, to the start of every run, and fail records whose timeout is shorter.)
//! Requests wait their turn first come first served; only the first in line sleeps (a tokio sleep, never a
//! loop). No wait is longer than `max_wait` (the retry's `max_delay`), and a request whose
//! deadline would pass while it waits fails at once as timed out. When the provider says
//! plenty remains, nothing waits.
//!
//! The layer sits just above the transport, below the retry and the configured rate limit:
//! every attempt that goes on the wire is paced, and every answer is read.

mod headers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use reqwest::Url;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::ServiceExt;

use super::breaker::endpoint;
use super::retry::asked_wait;
use super::window::SlidingWindow;
use super::{OutboundError, OutboundStats, PreparedRequest, Response, Sending};

/// The share of the rate a 429 leaves (AIMD's multiplicative decrease).
const DECREASE: f64 = 0.7;
/// The share of the requests the provider accepted over the last second that the first 429
/// sets the estimate to: a little below, as a provider's windows need not line up with ours.
const FIRST_ESTIMATE: f64 = 0.9;
/// What each second of successes adds to the rate, as a share of its last ceiling.
const INCREASE: f64 = 0.05;
/// The least time between two decreases. Providers count their limits over windows of a
/// second or more: once a window is spent, every request until it resets is refused, and those
/// 429s are one piece of evidence, not one each (a decrease per round trip, as TCP makes,
/// would take the estimate to the floor within one spent window).
const DECREASE_EVERY: Duration = Duration::from_secs(1);
/// The slowest pace the estimate goes down to, requests per second.
const MIN_RATE: f64 = 0.5;
/// A wait shorter than this is not counted as holding a request (a lock taken in passing).
const HELD: Duration = Duration::from_millis(1);

/// Paces the requests to each endpoint by what its answers say. Clones share the endpoints
/// (one layer per operator).
#[derive(Clone)]
pub struct AdaptiveLayer {
    pacer: Arc<Pacer>,
}

impl AdaptiveLayer {
    /// No request waits longer than `max_wait`, whatever the provider asks.
    pub fn new(max_wait: Duration, stats: Arc<OutboundStats>) -> Self {
        AdaptiveLayer {
            pacer: Arc::new(Pacer {
                max_wait,
                endpoints: Mutex::new(HashMap::new()),
                stats,
            }),
        }
    }
}

impl<S> tower::Layer<S> for AdaptiveLayer {
    type Service = AdaptiveService<S>;

    fn layer(&self, inner: S) -> AdaptiveService<S> {
        AdaptiveService {
            pacer: Arc::clone(&self.pacer),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AdaptiveService<S> {
    pacer: Arc<Pacer>,
    inner: S,
}

impl<S> tower::Service<PreparedRequest> for AdaptiveService<S>
where
    S: tower::Service<PreparedRequest, Response = Response, Error = OutboundError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = OutboundError;
    type Future = Sending;

    /// Ready at once: the inner service is made ready when the request's turn comes.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OutboundError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PreparedRequest) -> Sending {
        let inner = self.inner.clone();
        let endpoint = self.pacer.endpoint(request.url());
        let pacer = Arc::clone(&self.pacer);
        Box::pin(async move {
            let ticket = pacer.admit(&endpoint, request.deadline()).await?;
            let outcome = inner.oneshot(request).await;
            ticket.observe(&outcome, &pacer);
            outcome
        })
    }
}

/// The endpoints of one operator.
struct Pacer {
    max_wait: Duration,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    stats: Arc<OutboundStats>,
}

/// One endpoint: the line requests wait in, and what its answers said.
struct Endpoint {
    /// Held by the request whose turn it is (tokio's mutex is fair: first come, first served).
    line: tokio::sync::Mutex<()>,
    /// Wakes the first in line when an answer comes (it may have changed what is allowed).
    answered: Notify,
    pace: Mutex<Pace>,
}

impl Endpoint {
    fn pace(&self) -> MutexGuard<'_, Pace> {
        // Plain numbers: a pace a panic left half-updated is still usable.
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pacer {
    fn endpoint(&self, url: &Url) -> Arc<Endpoint> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let endpoint = endpoints.entry(endpoint(url)).or_insert_with(|| {
            Arc::new(Endpoint {
                line: tokio::sync::Mutex::new(()),
                answered: Notify::new(),
                pace: Mutex::new(Pace::new(Instant::now())),
            })
        });
        Arc::clone(endpoint)
    }

    /// Waits for the request's turn and for the moment the pace lets it go.
    async fn admit(
        &self,
        endpoint: &Arc<Endpoint>,
        deadline: Option<std::time::Instant>,
    ) -> Result<Ticket, OutboundError> {
        let arrived = Instant::now();
        let deadline = deadline.map(Instant::from_std);
        let turn = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, endpoint.line.lock())
                .await
                .map_err(|_| OutboundError::Timeout)?,
            None => endpoint.line.lock().await,
        };
        loop {
            let now = Instant::now();
            let at = endpoint.pace().earliest(now);
            if at <= now {
                break;
            }
            if deadline.is_some_and(|deadline| at >= deadline) {
                return Err(OutboundError::Timeout);
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = endpoint.answered.notified() => {}
            }
        }
        let now = Instant::now();
        let number = endpoint.pace().take(now, self.max_wait);
        drop(turn);
        let held = now - arrived;
        if held >= HELD {
            self.stats.request_held(held);
        }
        Ok(Ticket {
            endpoint: Arc::clone(endpoint),
            number,
            observed: false,
        })
    }
}

/// A request let through: its answer is read when it comes; dropped unanswered (the record
/// timed out), it frees the line all the same.
struct Ticket {
    endpoint: Arc<Endpoint>,
    number: u64,
    observed: bool,
}

impl Ticket {
    fn observe(mut self, outcome: &Result<Response, OutboundError>, pacer: &Pacer) {
        self.observed = true;
        let now = Instant::now();
        let answer = outcome.as_ref().ok();
        if answer.is_some_and(|a| a.status == 429) {
            pacer.stats.rate_limited_answer();
        }
        self.endpoint
            .pace()
            .observe(self.number, answer, now, pacer.max_wait);
        self.endpoint.answered.notify_one();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.observed {
            self.endpoint
                .pace()
                .observe(self.number, None, Instant::now(), Duration::ZERO);
            self.endpoint.answered.notify_one();
        }
    }
}

/// So many requests may still go before `until`.
#[derive(Clone, Copy, Debug)]
struct Quota {
    remaining: f64,
    until: Instant,
}

impl Quota {
    /// The wait after one request that spreads what remains over the time left, once less
    /// than half of `limit` remains; none above.
    fn spacing(&self, now: Instant, limit: f64) -> Duration {
        if self.remaining < 1.0 || self.remaining >= limit / 2.0 {
            return Duration::ZERO;
        }
        self.until
            .saturating_duration_since(now)
            .div_f64(self.remaining)
    }
}

/// The estimate of the rate a provider without rate-limit headers accepts.
#[derive(Clone, Copy, Debug)]
struct Rate {
    per_second: f64,
    /// The rate the last decrease started from.
    ceiling: f64,
    /// Requests numbered below this were sent before the last decrease: their 429s do not
    /// decrease it again.
    decreased_at: u64,
    /// When the last decrease was made: no other is made within [`DECREASE_EVERY`].
    decreased_when: Instant,
}

/// What one endpoint's answers said, and when the next request may go.
struct Pace {
    /// Requests let through so far; each is numbered by its place in this count.
    sent: u64,
    /// The earliest the next request may go, by the spacing.
    next: Instant,
    /// A 429's Retry-After: nothing goes before it.
    paused_until: Option<Instant>,
    requests: Option<Quota>,
    /// The request limit: as stated, else the most ever said to remain.
    limit: f64,
    /// The longest request reset seen: how long a fresh window lasts.
    window: Duration,
    tokens_until: Option<Instant>,
    /// Whether the endpoint has sent rate-limit headers (then they, not 429s, drive the pace).
    headers_seen: bool,
    rate: Option<Rate>,
    /// Requests let through over the last second (the first count only).
    recent: SlidingWindow,
}

impl Pace {
    fn new(now: Instant) -> Pace {
        Pace {
            sent: 0,
            next: now,
            paused_until: None,
            requests: None,
            limit: 0.0,
            window: Duration::ZERO,
            tokens_until: None,
            headers_seen: false,
            rate: None,
            recent: SlidingWindow::new(Duration::from_secs(1), now),
        }
    }

    /// When the next request may go. Every hold was capped at `max_wait` when it was set.
    fn earliest(&self, now: Instant) -> Instant {
        let mut at = self.next.max(now);
        for until in [self.paused_until, self.tokens_until].into_iter().flatten() {
            at = at.max(until);
        }
        if let Some(quota) = self.requests {
            if quota.remaining < 1.0 {
                at = at.max(quota.until);
            }
        }
        at
    }

    /// Lets a request go now; returns its number.
    fn take(&mut self, now: Instant, max_wait: Duration) -> u64 {
        let number = self.sent;
        self.sent += 1;
        self.recent.add(now, [1, 0]);
        if self.requests.is_some_and(|q| q.until <= now) {
            // The window the quota was for has passed with no newer word: assume a fresh one.
            self.requests = (self.limit >= 1.0).then(|| Quota {
                remaining: self.limit,
                until: now + self.window,
            });
        }
        let mut interval = Duration::ZERO;
        if let Some(quota) = &mut self.requests {
            interval = quota.spacing(now, self.limit);
            quota.remaining = (quota.remaining - 1.0).max(0.0);
            if quota.remaining < 1.0 {
                // Used up: the rest waits for the reset, but no longer than `max_wait`.
                quota.until = quota.until.min(now + max_wait);
            }
        }
        if let Some(rate) = self.rate {
            interval = interval.max(Duration::from_secs_f64(1.0 / rate.per_second));
        }
        // A slot missed by a timer's rounding may be caught up, not more.
        let base = self.next.max(now - interval.min(Duration::from_millis(5)));
        self.next = base + interval.min(max_wait);
        number
    }

    /// Reads the answer (or failure: `None`) to request `number`, which came `now`.
    fn observe(
        &mut self,
        number: u64,
        answer: Option<&Response>,
        now: Instant,
        max_wait: Duration,
    ) {
        let Some(answer) = answer else { return };
        let reading = headers::read(&answer.headers, SystemTime::now());
        // The requests sent after this one are not in what the answer says remains.
        let sent_after = self.sent.saturating_sub(number + 1) as f64;
        if reading.any() {
            self.headers_seen = true;
            self.rate = None;
        }
        if let Some(requests) = reading.requests {
            let remaining = (requests.remaining - sent_after).max(0.0);
            // What remains is spread over the whole reset; none left holds at most `max_wait`.
            let reset = if remaining < 1.0 {
                requests.reset.min(max_wait)
            } else {
                requests.reset
            };
            self.requests = Some(Quota {
                remaining,
                until: now + reset,
            });
            self.limit = requests.limit.unwrap_or(self.limit.max(requests.remaining));
            self.window = self.window.max(requests.reset);
        }
        if let Some(tokens) = reading.tokens {
            self.tokens_until = (tokens.remaining < 1.0).then(|| now + tokens.reset.min(max_wait));
        }
        if answer.status == 429 {
            if let Some(wait) = asked_wait(&answer.headers, SystemTime::now()) {
                let until = now + wait.min(max_wait);
                self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
            }
            if !self.headers_seen {
                self.decrease(number, now);
            }
        } else if !self.headers_seen {
            if (200..300).contains(&answer.status) {
                self.recent.add(now, [0, 1]);
            }
            self.increase();
        }
    }

    fn decrease(&mut self, number: u64, now: Instant) {
        let from = match self.rate {
            Some(rate)
                if number < rate.decreased_at || now < rate.decreased_when + DECREASE_EVERY =>
            {
                return
            }
            Some(rate) => rate.per_second,
            // The first: what the provider accepted over the last second is the best word
            // of its limit there is (what was sent includes what it refused).
            None => {
                let [sent, accepted] = self.recent.totals(now);
                let from = if accepted > 0 { accepted } else { sent };
                self.rate = Some(Rate {
                    per_second: (from as f64 * FIRST_ESTIMATE).max(MIN_RATE),
                    ceiling: (from as f64).max(MIN_RATE),
                    decreased_at: self.sent,
                    decreased_when: now,
                });
                return;
            }
        };
        self.rate = Some(Rate {
            per_second: (from * DECREASE).max(MIN_RATE),
            ceiling: from.max(MIN_RATE),
            decreased_at: self.sent,
            decreased_when: now,
        });
    }

    fn increase(&mut self) {
        let Some(rate) = &mut self.rate else { return };
        // About `per_second` successes come each second: each adds its share of the step.
        rate.per_second += INCREASE * rate.ceiling / rate.per_second;
        if rate.per_second > 2.0 * rate.ceiling {
            self.rate = None;
        }
    }
}

#[cfg(test)]
mod tests;
