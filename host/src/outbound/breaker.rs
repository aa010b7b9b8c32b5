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

impl BreakerState {
    /// As metrics and `/status.json` name it.
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// The breakers of one operator, one per endpoint it sends to, made on first use.
pub struct Breakers {
    options: BreakerOptions,
    endpoints: Mutex<HashMap<String, Breaker>>,
    stats: Arc<OutboundStats>,
}

impl Breakers {
    pub fn new(options: BreakerOptions, stats: Arc<OutboundStats>) -> Self {
        stats.breaker_on.set();
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
        let before = breaker.state.observed();
        let admitted = breaker.admit(&endpoint, &self.options, now);
        self.report_move(&endpoint, before, breaker.state.observed());
        match admitted {
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
        let before = breaker.state.observed();
        let opened = match breaker.state {
            State::Closed => breaker.count(&permit.endpoint, &self.options, now, failed),
            State::HalfOpen { .. } if permit.probe => {
                breaker.probe_done(&permit.endpoint, &self.options, now, failed)
            }
            _ => false,
        };
        self.report_move(&permit.endpoint, before, breaker.state.observed());
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

    /// Tells the endpoint's stats (metrics, status page) where its breaker went.
    fn report_move(&self, endpoint: &str, before: BreakerState, after: BreakerState) {
        if before != after {
            self.stats.endpoint(endpoint).breaker_moved(after);
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
pub(super) fn endpoint(url: &Url) -> String {
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
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::Semaphore;
    use tower::util::BoxCloneSyncService;
    use tower::{Layer, ServiceExt};

    use super::super::{fake, HostPattern, Policy, Request};
    use super::*;

    const A: &str = "http://127.0.0.1:9/a";

    type Transport = BoxCloneSyncService<PreparedRequest, Response, OutboundError>;

    fn options() -> BreakerOptions {
        BreakerOptions {
            failure_threshold: 0.5,
            window: Duration::from_secs(60),
            minimum_calls: 4,
            open_duration: Duration::from_secs(30),
            half_open_calls: 2,
            slow_call: None,
        }
    }

    fn request(url: &str) -> PreparedRequest {
        let policy = Policy::new(
            vec![HostPattern::new("127.0.0.1", None)],
            vec![],
            Duration::from_secs(5),
        );
        let request = Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: vec![],
            timeout: None,
            deadline: None,
        };
        policy.prepare(request).unwrap()
    }

    fn status(status: u16) -> Result<Response, OutboundError> {
        Ok(fake::ok(status, &[], ""))
    }

    /// A breaker layer over a fake transport, and what the test looks at.
    struct Rig {
        breakers: Arc<Breakers>,
        stats: Arc<OutboundStats>,
        seen: fake::Seen,
        service: BreakerService<Transport>,
    }

    impl Rig {
        /// Over a transport that answers with `answers` in turn (the last one again).
        fn new(options: BreakerOptions, answers: Vec<Result<Response, OutboundError>>) -> Self {
            let (transport, seen) = fake::script(answers);
            Rig::over(options, BoxCloneSyncService::new(transport), seen)
        }

        fn over(options: BreakerOptions, transport: Transport, seen: fake::Seen) -> Self {
            let stats = Arc::new(OutboundStats::default());
            let breakers = Arc::new(Breakers::new(options, Arc::clone(&stats)));
            let service = BreakerLayer::new(Arc::clone(&breakers)).layer(transport);
            Rig {
                breakers,
                stats,
                seen,
                service,
            }
        }

        async fn send(&self, url: &str) -> Result<Response, OutboundError> {
            self.service.clone().oneshot(request(url)).await
        }

        fn state(&self, url: &str) -> BreakerState {
            self.breakers.state(&Url::parse(url).unwrap())
        }

        fn sent(&self) -> usize {
            self.seen.lock().unwrap().len()
        }

        /// What the endpoint's stats (metrics, status page) saw of A's breaker: its state, and
        /// its moves into open, half-open and closed.
        fn moves(&self) -> (BreakerState, [u64; 3]) {
            let seen = self.stats.endpoint("http://127.0.0.1:9");
            let into = [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed,
            ];
            (seen.breaker(), into.map(|to| seen.transitions(to)))
        }
    }

    fn unavailable(result: Result<Response, OutboundError>) -> String {
        match result {
            Err(OutboundError::Unavailable(why)) => why,
            other => panic!("expected the request to fail fast, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_once_minimum_calls_reach_the_threshold_and_then_fails_fast() {
        let rig = Rig::new(
            options(),
            vec![
                status(503),
                status(429),
                Err(OutboundError::Timeout),
                status(200),
            ],
        );
        // Three failures are fewer calls than the minimum: no decision yet.
        for _ in 0..3 {
            let _ = rig.send(A).await;
        }
        assert_eq!(rig.state(A), BreakerState::Closed);
        // The fourth call succeeds, but 3 of 4 failed: 75% >= 50%.
        assert_eq!(rig.send(A).await.unwrap().status, 200);
        assert_eq!(rig.state(A), BreakerState::Open);
        assert_eq!(rig.stats.breaker_openings(), 1);
        // Open: requests fail at once and never reach the transport.
        let why = unavailable(rig.send(A).await);
        assert!(
            why.starts_with("the circuit breaker for http://127.0.0.1:9 is open until "),
            "{why}"
        );
        assert!(
            why.ends_with("(30.0s from now): 75% of the last 4 calls failed within 1m"),
            "{why}"
        );
        assert_eq!(rig.sent(), 4);
        assert_eq!(rig.stats.failed_fast(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_below_the_threshold_keeps_it_closed() {
        let rig = Rig::new(
            options(),
            vec![
                status(503),
                status(200),
                status(404),
                status(500),
                status(200),
            ],
        );
        for _ in 0..20 {
            let _ = rig.send(A).await;
        }
        // One transient failure in 20 calls; 404 and 500 are answers, not the endpoint failing.
        assert_eq!(rig.state(A), BreakerState::Closed);
        assert_eq!(rig.sent(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_older_than_the_window_are_forgotten() {
        let rig = Rig::new(options(), vec![status(503)]);
        for _ in 0..3 {
            let _ = rig.send(A).await;
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        let _ = rig.send(A).await;
        // Four failures, but never four within a minute.
        assert_eq!(rig.state(A), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn each_endpoint_has_its_own_breaker() {
        let rig = Rig::new(options(), vec![status(503)]);
        for _ in 0..4 {
            let _ = rig.send(A).await;
        }
        assert_eq!(rig.state(A), BreakerState::Open);
        // Another path on the same endpoint is the same breaker; another port is not.
        unavailable(rig.send("http://127.0.0.1:9/other").await);
        assert_eq!(rig.send("http://127.0.0.1:10/a").await.unwrap().status, 503);
        assert_eq!(rig.state("http://127.0.0.1:10/a"), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_counts_as_a_failure() {
        let (transport, seen) = fake::script(vec![status(200)]);
        let slow = tower::ServiceBuilder::new()
            .then(|answer| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                answer
            })
            .service(transport);
        let slow_call = BreakerOptions {
            slow_call: Some(Duration::from_secs(1)),
            ..options()
        };
        let rig = Rig::over(slow_call, BoxCloneSyncService::new(slow), seen);
        for _ in 0..4 {
            assert_eq!(rig.send(A).await.unwrap().status, 200);
        }
        assert_eq!(rig.state(A), BreakerState::Open);
    }

    /// Opens the breaker of `rig` (whose transport fails) and lets open_duration pass.
    async fn open_then_wait(rig: &Rig) {
        for _ in 0..4 {
            let _ = rig.send(A).await;
        }
        assert_eq!(rig.state(A), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(29)).await;
        unavailable(rig.send(A).await);
        tokio::time::advance(Duration::from_secs(1)).await;
    }

    /// A transport that answers 503 while the flag is set, then `after`; each answer waits for
    /// a permit of `gate`.
    fn gated(after: u16, gate: Arc<Semaphore>) -> (Rig, Arc<AtomicBool>) {
        let failing = Arc::new(AtomicBool::new(true));
        let fails = Arc::clone(&failing);
        let (transport, seen) = fake::service(move || {
            if fails.load(Ordering::Relaxed) {
                status(503)
            } else {
                status(after)
            }
        });
        let held = tower::ServiceBuilder::new()
            .then(move |answer| {
                let gate = Arc::clone(&gate);
                async move {
                    gate.acquire().await.unwrap().forget();
                    answer
                }
            })
            .service(transport);
        let rig = Rig::over(options(), BoxCloneSyncService::new(held), seen);
        (rig, failing)
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_only_half_open_calls_probes_through_and_closes_when_they_pass() {
        let gate = Arc::new(Semaphore::new(4));
        let (rig, failing) = gated(200, Arc::clone(&gate));
        open_then_wait(&rig).await;
        failing.store(false, Ordering::Relaxed);
        let rig = Arc::new(rig);
        // Two probes go out and hang; the third request fails at once.
        let probes: Vec<_> = (0..2)
            .map(|_| {
                let rig = Arc::clone(&rig);
                tokio::spawn(async move { rig.send(A).await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(rig.state(A), BreakerState::HalfOpen);
        let why = unavailable(rig.send(A).await);
        assert!(
            why.contains("is half-open: 2 probe requests are testing"),
            "{why}"
        );
        assert_eq!(rig.sent(), 6, "4 before it opened and the 2 probes");
        // The probes succeed: closed, and requests flow again.
        gate.add_permits(2);
        for probe in probes {
            assert_eq!(probe.await.unwrap().unwrap().status, 200);
        }
        assert_eq!(rig.state(A), BreakerState::Closed);
        gate.add_permits(1);
        assert_eq!(rig.send(A).await.unwrap().status, 200);
        assert_eq!(rig.stats.breaker_openings(), 1);
        // The endpoint's stats (metrics, status page) saw each move.
        assert_eq!(rig.moves(), (BreakerState::Closed, [1, 1, 1]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let gate = Arc::new(Semaphore::new(100));
        let (rig, _) = gated(503, gate);
        open_then_wait(&rig).await;
        assert_eq!(rig.send(A).await.unwrap().status, 503);
        assert_eq!(rig.state(A), BreakerState::Open);
        assert_eq!(rig.stats.breaker_openings(), 2);
        assert_eq!(rig.moves(), (BreakerState::Open, [2, 1, 0]));
        let why = unavailable(rig.send(A).await);
        assert!(why.ends_with("a probe request failed"), "{why}");
        assert_eq!(rig.sent(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_given_up_frees_its_place() {
        let gate = Arc::new(Semaphore::new(4));
        let (rig, failing) = gated(200, Arc::clone(&gate));
        open_then_wait(&rig).await;
        failing.store(false, Ordering::Relaxed);
        // Two probes that hang are given up (their futures dropped): two new ones may go.
        for _ in 0..2 {
            let hanging = rig.send(A);
            let given_up = tokio::time::timeout(Duration::from_secs(1), hanging).await;
            assert!(given_up.is_err());
        }
        gate.add_permits(2);
        assert_eq!(rig.send(A).await.unwrap().status, 200);
        assert_eq!(rig.send(A).await.unwrap().status, 200);
        assert_eq!(rig.state(A), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_counts_only_in_the_state_its_request_was_admitted_in() {
        let stats = Arc::new(OutboundStats::default());
        let breakers = Arc::new(Breakers::new(options(), stats));
        let url = Url::parse(A).unwrap();
        // Admitted while closed, answered after the breaker opened and went half-open.
        let late = breakers.admit(&url).unwrap();
        for _ in 0..4 {
            breakers.admit(&url).unwrap().settle(&status(503));
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let probe = breakers.admit(&url).unwrap();
        late.settle(&status(503));
        assert_eq!(breakers.state(&url), BreakerState::HalfOpen);
        probe.settle(&status(200));
        assert_eq!(
            breakers.state(&url),
            BreakerState::HalfOpen,
            "one of two probes passed"
        );
    }
}
