//! A circuit breaker per endpoint (scheme, host and port), one registry per operator.
//!
//! ```text
//!   closed ──(failure rate >= threshold over the window, at least minimum_calls)──> open
//!   open ──(open_duration passed, on the next request)──> half-open
//!   half-open ──(half_open_calls probes succeeded)──> closed
//!   half-open ──(a probe failed)──> open
//! ```
//!
//! A failure is what the host would retry ([`transient`](super::status::transient): 429,
//! 502-504, a timeout, a failed connection) or a call slower than `slow_call`, counted once
//! per request, after its retries. While open, requests fail at once with
//! [`OutboundError::Unavailable`]: nothing leaves the machine. While half-open at most
//! `half_open_calls` probes are in flight and the others fail at once too: a half-open breaker
//! that lets everything through hands a hanging server the whole load again.
//!
//! An outcome counts only in the state its request was admitted in: a request admitted while
//! closed that ends after the breaker opened is not a probe, and one admitted before a
//! recovery does not count against the fresh window.
//!
//! tower has no breaker (tower#102); this is the small state machine over a sliding window
//! that resilience4j and failsafe describe.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use reqwest::Url;
use tokio::time::Instant;

use super::status::transient;
use super::window::SlidingWindow;
use super::{OutboundError, OutboundStats, PreparedRequest, Response, Sending};

/// When an endpoint's breaker opens and how it recovers.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerOptions {
    /// Failure rate (0 < rate <= 1) over the window that opens the breaker.
    pub failure_threshold: f64,
    /// The sliding window the rate is measured over.
    pub window: Duration,
    /// No decision on fewer calls than this in the window.
    pub minimum_calls: u32,
    /// How long it stays open before it lets probes through.
    pub open_duration: Duration,
    /// Probes in flight at once while half-open; that many successes close it.
    pub half_open_calls: u32,
    /// A call slower than this counts as a failure, whatever its answer.
    pub slow_call: Option<Duration>,
}

impl Default for BreakerOptions {
    /// The manifest's defaults.
    fn default() -> Self {
        BreakerOptions {
            failure_threshold: 0.5,
            window: Duration::from_secs(60),
            minimum_calls: 20,
            open_duration: Duration::from_secs(30),
            half_open_calls: 3,
            slow_call: None,
        }
    }
}

/// Where a breaker is, as an observer (a test, a status page) sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// The breakers of one operator, one per endpoint it sends to, made on first use.
pub struct Breakers {
    options: BreakerOptions,
    endpoints: Mutex<HashMap<String, Breaker>>,
    stats: Arc<OutboundStats>,
}

impl Breakers {
    pub fn new(options: BreakerOptions, stats: Arc<OutboundStats>) -> Self {
        Breakers {
            options,
            endpoints: Mutex::new(HashMap::new()),
            stats,
        }
    }

    /// Lets a request to `url` through, or fails it at once while the endpoint's breaker is
    /// open (or half-open with every probe out). The permit must be settled with the request's
    /// outcome; dropped unsettled, it counts as nothing.
    pub fn admit(self: &Arc<Self>, url: &Url) -> Result<Permit, OutboundError> {
        let endpoint = endpoint(url);
        let now = Instant::now();
        let mut endpoints = self.lock();
        let breaker = endpoints
            .entry(endpoint.clone())
            .or_insert_with(|| Breaker::new(self.options.window, now));
        match breaker.admit(&endpoint, &self.options, now) {
            Ok(probe) => Ok(Permit {
                breakers: Arc::clone(self),
                endpoint,
                generation: breaker.generation,
                probe,
                started: now,
                settled: false,
            }),
            Err(why) => {
                self.stats.request_failed_fast();
                Err(OutboundError::Unavailable(why))
            }
        }
    }

    /// Whether a request to `url` may be sent again now: only while its breaker is closed.
    pub fn allows_retry(&self, url: &Url) -> bool {
        self.state(url) == BreakerState::Closed
    }

    /// The state of the breaker for `url`'s endpoint (closed if it has none yet).
    pub fn state(&self, url: &Url) -> BreakerState {
        self.lock()
            .get(&endpoint(url))
            .map_or(BreakerState::Closed, |b| b.state.observed())
    }

    fn settle(&self, permit: &Permit, failed: bool) {
        let now = Instant::now();
        let mut endpoints = self.lock();
        let Some(breaker) = endpoints.get_mut(&permit.endpoint) else {
            return;
        };
        if breaker.generation != permit.generation {
            return; // admitted in an earlier state: its outcome says nothing about this one
        }
        let opened = match breaker.state {
            State::Closed => breaker.count(&permit.endpoint, &self.options, now, failed),
            State::HalfOpen { .. } if permit.probe => {
                breaker.probe_done(&permit.endpoint, &self.options, now, failed)
            }
            _ => false,
        };
        if opened {
            self.stats.breaker_opened();
        }
    }

    /// A permit dropped without an outcome gives its probe slot back.
    fn release(&self, permit: &Permit) {
        let mut endpoints = self.lock();
        let Some(breaker) = endpoints.get_mut(&permit.endpoint) else {
            return;
        };
        if let State::HalfOpen { in_flight, .. } = &mut breaker.state {
            if permit.probe && breaker.generation == permit.generation {
                *in_flight = in_flight.saturating_sub(1);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Breaker>> {
        // Plain state: one a panic left behind is still usable.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request let through by a breaker, waiting for its outcome.
pub struct Permit {
    breakers: Arc<Breakers>,
    endpoint: String,
    /// The breaker's generation when admitted: its outcome counts only in that state.
    generation: u64,
    probe: bool,
    started: Instant,
    settled: bool,
}

impl Permit {
    /// Counts the outcome of the request (after its retries): a transient failure, or any
    /// answer slower than `slow_call`, is a failure.
    pub fn settle(mut self, outcome: &Result<Response, OutboundError>) {
        let slow = self
            .breakers
            .options
            .slow_call
            .is_some_and(|limit| self.started.elapsed() > limit);
        self.settled = true;
        self.breakers.settle(&self, transient(outcome) || slow);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            self.breakers.release(self);
        }
    }
}

/// One endpoint's breaker.
struct Breaker {
    state: State,
    /// Calls and failures while closed.
    window: SlidingWindow,
    /// Grows at every change of state.
    generation: u64,
}

enum State {
    Closed,
    Open {
        until: Instant,
        rate: f64,
        why: String,
    },
    HalfOpen {
        in_flight: u32,
        passed: u32,
    },
}

impl State {
    fn observed(&self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

impl Breaker {
    fn new(window: Duration, now: Instant) -> Self {
        Breaker {
            state: State::Closed,
            window: SlidingWindow::new(window, now),
            generation: 0,
        }
    }

    /// `Ok(probe)`: the request may go (as a half-open probe or not); `Err`: why it may not.
    fn admit(
        &mut self,
        endpoint: &str,
        options: &BreakerOptions,
        now: Instant,
    ) -> Result<bool, String> {
        if let State::Open { until, rate, why } = &self.state {
            if now < *until {
                return Err(open_message(endpoint, *until - now, why));
            }
            let rate = *rate;
            self.generation += 1;
            self.state = State::HalfOpen {
                in_flight: 0,
                passed: 0,
            };
            tracing::info!(
                endpoint,
                failure_rate = %Percent(rate),
                probes = options.half_open_calls,
                "circuit breaker half-open: probe requests test whether the endpoint recovered"
            );
        }
        match &mut self.state {
            State::HalfOpen { in_flight, .. } => {
                if *in_flight >= options.half_open_calls {
                    return Err(format!(
                        "the circuit breaker for {endpoint} is half-open: {in_flight} probe \
                         requests are testing whether it recovered, and the others fail at once \
                         until they tell"
                    ));
                }
                *in_flight += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Counts the outcome of a half-open probe: a failure opens the breaker again (true), and
    /// enough successes close it.
    fn probe_done(
        &mut self,
        endpoint: &str,
        options: &BreakerOptions,
        now: Instant,
        failed: bool,
    ) -> bool {
        let State::HalfOpen { in_flight, passed } = &mut self.state else {
            return false;
        };
        *in_flight = in_flight.saturating_sub(1);
        if failed {
            let rate = 1.0 / f64::from(*passed + 1);
            self.open(endpoint, options, now, rate, "a probe request failed");
            return true;
        }
        *passed += 1;
        if *passed >= options.half_open_calls {
            self.close(endpoint);
        }
        false
    }

    /// Counts a call made while closed; opens (and says so) if the failure rate reached the
    /// threshold.
    fn count(
        &mut self,
        endpoint: &str,
        options: &BreakerOptions,
        now: Instant,
        failed: bool,
    ) -> bool {
        self.window.add(now, [1, u64::from(failed)]);
        let [calls, failures] = self.window.totals(now);
        if calls < u64::from(options.minimum_calls) {
            return false;
        }
        let rate = failures as f64 / calls as f64;
        if rate < options.failure_threshold {
            return false;
        }
        let why = format!(
            "{} of the last {calls} calls failed within {}",
            Percent(rate),
            humantime::format_duration(options.window)
        );
        self.open(endpoint, options, now, rate, &why);
        true
    }

    fn open(
        &mut self,
        endpoint: &str,
        options: &BreakerOptions,
        now: Instant,
        rate: f64,
        why: &str,
    ) {
        self.generation += 1;
        self.window.clear();
        self.state = State::Open {
            until: now + options.open_duration,
            rate,
            why: why.to_string(),
        };
        tracing::warn!(
            endpoint,
            failure_rate = %Percent(rate),
            open_for = %humantime::format_duration(options.open_duration),
            "circuit breaker opened: {why}; requests to the endpoint fail at once"
        );
    }

    fn close(&mut self, endpoint: &str) {
        self.generation += 1;
        self.window.clear();
        self.state = State::Closed;
        tracing::info!(
            endpoint,
            failure_rate = %Percent(0.0),
            "circuit breaker closed: the probe requests succeeded"
        );
    }
}

/// What a request refused by an open breaker reads: the endpoint, until when, and why.
fn open_message(endpoint: &str, left: Duration, why: &str) -> String {
    let until = httpdate::fmt_http_date(SystemTime::now() + left);
    format!(
        "the circuit breaker for {endpoint} is open until {until} ({:.1}s from now): {why}",
        left.as_secs_f64()
    )
}

/// A rate as a whole percentage.
struct Percent(f64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.0}%", self.0 * 100.0)
    }
}

/// The endpoint a URL goes to: `scheme://host:port`, the port always written.
fn endpoint(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// Puts `breakers` in front of the layers below: a request is admitted (or fails at once) and
/// its outcome, after the retries below, is counted.
#[derive(Clone)]
pub struct BreakerLayer {
    breakers: Arc<Breakers>,
}

impl BreakerLayer {
    pub fn new(breakers: Arc<Breakers>) -> Self {
        BreakerLayer { breakers }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            breakers: Arc::clone(&self.breakers),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct BreakerService<S> {
    breakers: Arc<Breakers>,
    inner: S,
}

impl<S> tower::Service<PreparedRequest> for BreakerService<S>
where
    S: tower::Service<PreparedRequest, Response = Response, Error = OutboundError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = OutboundError;
    type Future = Sending;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OutboundError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: PreparedRequest) -> Sending {
        let permit = match self.breakers.admit(request.url()) {
            Ok(permit) => permit,
            Err(unavailable) => return Box::pin(std::future::ready(Err(unavailable))),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let outcome = answer.await;
            permit.settle(&outcome);
            outcome
        })
    }
}

#[cfg(test)]
mod tests {}
