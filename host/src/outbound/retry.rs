//! Request retries: a request whose attempt failed transiently is sent again, and the plugin
//! sees only the final answer.
//!
//! What is sent again: an answer with a [`transient_status`](super::transient_status) (429,
//! 502, 503, 504), a timeout, a failed connection; nothing else. Each wait is the backoff's
//! (exponential or fixed, with jitter), or longer if the server asked for more with
//! `retry-after-ms` or `Retry-After` (seconds or an HTTP date), and never more than
//! `max_delay`. A retry is not sent, and the plugin gets the last answer, when:
//! - `max_retries` have been sent;
//! - it could not start before the request's deadline (the record's timeout);
//! - the endpoint's circuit breaker is no longer closed (checked before and after the wait);
//! - the retry budget is spent: over a sliding window of [`BUDGET_WINDOW`], retries may be at
//!   most `budget_ratio` of the attempts that succeeded, plus `min_retries_per_second` so that
//!   a quiet operator can still retry now and then. The budget is what keeps retries from
//!   multiplying the load on a server that is failing for everyone (Envoy's retry budgets,
//!   gRPC's retry throttling, Finagle's `RetryBudget`).
//!
//! Time is tokio's, so the tests run on a paused clock.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tower::ServiceExt;

use super::breaker::Breakers;
use super::status::transient;
use super::window::SlidingWindow;
use super::{OutboundError, OutboundStats, PreparedRequest, Response, Sending};

/// The window the retry budget is measured over.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// How an operator's requests are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryOptions {
    /// Retries after the first attempt; 0: none (the layer only passes requests on).
    pub max_retries: u32,
    /// The first wait (the nominal one: jitter draws each wait between half of it and all).
    pub initial_delay: Duration,
    /// No wait is longer, whatever the backoff or the server ask.
    pub max_delay: Duration,
    /// Each wait doubles (up to `max_delay`); else every wait is `initial_delay`.
    pub exponential_backoff: bool,
    /// Retries allowed per successful attempt over the budget window.
    pub budget_ratio: f64,
    /// Retries allowed per second of the budget window whatever the successes, so that an
    /// operator with little traffic can still retry (not a manifest key).
    pub min_retries_per_second: u32,
}

impl Default for RetryOptions {
    /// No retries; the other values are the manifest's defaults.
    fn default() -> Self {
        RetryOptions {
            max_retries: 0,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            exponential_backoff: true,
            budget_ratio: 0.2,
            min_retries_per_second: 10,
        }
    }
}

/// Sends again what failed transiently. Clones share one budget (one per operator).
#[derive(Clone)]
pub struct RetryLayer {
    retrying: Arc<Retrying>,
}

impl RetryLayer {
    /// Retries as `options` say; `breakers` (the ones above this layer) are consulted before
    /// each retry, so that no retry goes to an endpoint whose breaker has opened.
    pub fn new(
        options: RetryOptions,
        breakers: Option<Arc<Breakers>>,
        stats: Arc<OutboundStats>,
    ) -> Self {
        let budget = RetryBudget::new(&options, Instant::now());
        RetryLayer {
            retrying: Arc::new(Retrying {
                options,
                budget,
                breakers,
                stats,
            }),
        }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = RetryService<S>;

    fn layer(&self, inner: S) -> RetryService<S> {
        RetryService {
            retrying: Arc::clone(&self.retrying),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct RetryService<S> {
    retrying: Arc<Retrying>,
    inner: S,
}

impl<S> tower::Service<PreparedRequest> for RetryService<S>
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

    /// Ready at once: each attempt waits for the inner service to be ready itself.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OutboundError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PreparedRequest) -> Sending {
        let inner = self.inner.clone();
        if self.retrying.options.max_retries == 0 {
            return Box::pin(inner.oneshot(request));
        }
        Box::pin(Arc::clone(&self.retrying).send(inner, request))
    }
}

/// What every request of the operator shares: its options, budget and breakers.
struct Retrying {
    options: RetryOptions,
    budget: RetryBudget,
    breakers: Option<Arc<Breakers>>,
    stats: Arc<OutboundStats>,
}

impl Retrying {
    async fn send<S>(
        self: Arc<Self>,
        inner: S,
        request: PreparedRequest,
    ) -> Result<Response, OutboundError>
    where
        S: tower::Service<PreparedRequest, Response = Response, Error = OutboundError> + Clone,
    {
        let mut backoff = self.backoff();
        loop {
            let outcome = inner.clone().oneshot(request.clone()).await;
            if !transient(&outcome) {
                self.budget.succeeded(Instant::now());
                return outcome;
            }
            let Some(wait) = self.next_wait(&outcome, &mut backoff, &request) else {
                return outcome;
            };
            tracing::debug!(
                url = %request.url(),
                wait_ms = wait.as_millis() as u64,
                "request failed transiently; sending it again"
            );
            tokio::time::sleep(wait).await;
            // The breaker may have opened during the wait: then this answer is the last.
            if !self.endpoint_closed(&request) {
                return outcome;
            }
            self.stats.retry_sent();
        }
    }

    /// The waits of one request, jittered: each is drawn between half the nominal delay and
    /// all of it ("equal jitter"), so that requests that failed together spread out without
    /// any waiting longer than the schedule says. backon adds its jitter on top of a delay
    /// (up to twice it), so it is given half of each delay.
    fn backoff(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        let o = &self.options;
        let times = o.max_retries as usize;
        let max = o.max_delay;
        if o.exponential_backoff {
            let builder = ExponentialBuilder::new()
                .with_min_delay(o.initial_delay / 2)
                .with_max_delay(max / 2)
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(times);
            Box::new(builder.build().map(move |d| d.min(max)))
        } else {
            let builder = ConstantBuilder::new()
                .with_delay(o.initial_delay.min(max) / 2)
                .with_jitter()
                .with_max_times(times);
            Box::new(builder.build().map(move |d| d.min(max)))
        }
    }

    /// How long to wait before sending `request` again after `outcome`, or `None` if it is
    /// not to be sent again.
    fn next_wait(
        &self,
        outcome: &Result<Response, OutboundError>,
        backoff: &mut dyn Iterator<Item = Duration>,
        request: &PreparedRequest,
    ) -> Option<Duration> {
        let planned = backoff.next()?;
        let asked = match outcome {
            Ok(answer) => asked_wait(&answer.headers, SystemTime::now()),
            Err(_) => None,
        };
        let wait = asked.map_or(planned, |asked| asked.max(planned));
        let wait = wait.min(self.options.max_delay);
        let now = Instant::now();
        if let Some(deadline) = request.deadline() {
            if (now + wait).into_std() >= deadline {
                return None;
            }
        }
        if !self.endpoint_closed(request) {
            return None;
        }
        if !self.budget.withdraw(now) {
            self.stats.retry_refused();
            tracing::debug!(
                url = %request.url(),
                "retry budget spent: the failure goes to the plugin"
            );
            return None;
        }
        Some(wait)
    }

    /// Whether the endpoint's breaker (if any) lets retries through: only while closed.
    fn endpoint_closed(&self, request: &PreparedRequest) -> bool {
        self.breakers
            .as_ref()
            .is_none_or(|b| b.allows_retry(request.url()))
    }
}

/// How long the server asked to wait before the next attempt: `retry-after-ms` (milliseconds,
/// as OpenAI and Azure send it, more precise, so it wins) or `Retry-After` (RFC 9110 10.2.3:
/// seconds, or an HTTP date, read against `now`). Values that do not parse are ignored.
pub(super) fn asked_wait(headers: &[(String, String)], now: SystemTime) -> Option<Duration> {
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim())
    };
    let millis = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
    if millis.is_some() {
        return millis;
    }
    let value = header("retry-after")?;
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 seconds is a very long wait all the same.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How many retries the operator may still send: `ratio` per attempt that succeeded and
/// `min_per_window` anyway, over the last [`BUDGET_WINDOW`].
struct RetryBudget {
    ratio: f64,
    min_per_window: f64,
    /// Successful attempts, retries sent.
    window: Mutex<SlidingWindow>,
}

impl RetryBudget {
    fn new(options: &RetryOptions, now: Instant) -> Self {
        RetryBudget {
            ratio: options.budget_ratio,
            min_per_window: f64::from(options.min_retries_per_second) * BUDGET_WINDOW.as_secs_f64(),
            window: Mutex::new(SlidingWindow::new(BUDGET_WINDOW, now)),
        }
    }

    fn succeeded(&self, now: Instant) {
        self.lock().add(now, [1, 0]);
    }

    /// Takes one retry from the budget, if it has one left.
    fn withdraw(&self, now: Instant) -> bool {
        let mut window = self.lock();
        let [successes, retries] = window.totals(now);
        let allowed = self.min_per_window + self.ratio * successes as f64;
        if (retries as f64) + 1.0 > allowed {
            return false;
        }
        window.add(now, [0, 1]);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlidingWindow> {
        // The window holds plain counts: one a panic left half-updated is still usable.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, Ordering};

    use reqwest::Url;
    use tower::{Layer, ServiceBuilder};

    use super::super::{fake, BreakerOptions, HostPattern, Policy, Request};
    use super::*;

    const URL: &str = "http://127.0.0.1:9/v1";

    fn request(deadline: Option<std::time::Instant>) -> PreparedRequest {
        let policy = Policy::new(
            vec![HostPattern::new("127.0.0.1", None)],
            vec![],
            Duration::from_secs(5),
        );
        let request = Request {
            method: "POST".into(),
            url: URL.into(),
            headers: vec![],
            body: b"{}".to_vec(),
            timeout: None,
            deadline,
        };
        policy.prepare(request).unwrap()
    }

    fn retries(max_retries: u32) -> RetryOptions {
        RetryOptions {
            max_retries,
            ..RetryOptions::default()
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)]) -> Result<Response, OutboundError> {
        Ok(fake::ok(status, headers, &format!("answer {status}")))
    }

    /// When each attempt reached the transport.
    type Times = Arc<Mutex<Vec<Instant>>>;

    /// `layer` over `transport`, with the time of each attempt recorded.
    fn timed<T>(
        layer: RetryLayer,
        transport: T,
    ) -> (
        impl tower::Service<PreparedRequest, Response = Response, Error = OutboundError> + Clone,
        Times,
    )
    where
        T: tower::Service<
                PreparedRequest,
                Response = Response,
                Error = OutboundError,
                Future = Sending,
            > + Clone
            + Send
            + 'static,
    {
        let times = Times::default();
        let log = Arc::clone(&times);
        let service = ServiceBuilder::new()
            .layer(layer)
            .map_request(move |r: PreparedRequest| {
                log.lock().unwrap().push(Instant::now());
                r
            })
            .service(transport);
        (service, times)
    }

    fn gaps(times: &Times) -> Vec<Duration> {
        let times = times.lock().unwrap();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn retry_layer(options: RetryOptions) -> (RetryLayer, Arc<OutboundStats>) {
        let stats = Arc::new(OutboundStats::default());
        (RetryLayer::new(options, None, Arc::clone(&stats)), stats)
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_sent_again_after_a_jittered_backoff() {
        let (transport, seen) =
            fake::script(vec![answer(503, &[]), answer(502, &[]), answer(200, &[])]);
        let (layer, stats) = retry_layer(retries(3));
        let (service, times) = timed(layer, transport);
        let result = service.oneshot(request(None)).await.unwrap();
        assert_eq!((result.status, result.body), (200, b"answer 200".to_vec()));
        assert_eq!(seen.lock().unwrap().len(), 3);
        // Nominal waits 100 ms then 200 ms, each drawn between half of it and all of it.
        let gaps = gaps(&times);
        assert!(gaps[0] >= Duration::from_millis(50), "{gaps:?}");
        assert!(gaps[0] <= Duration::from_millis(100), "{gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(100), "{gaps:?}");
        assert!(gaps[1] <= Duration::from_millis(200), "{gaps:?}");
        assert_eq!(stats.retries(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn when_retries_run_out_the_plugin_gets_the_last_answer() {
        let (transport, seen) = fake::script(vec![answer(503, &[]), answer(429, &[])]);
        let (layer, stats) = retry_layer(retries(2));
        let result = layer.layer(transport).oneshot(request(None)).await;
        assert_eq!(result.unwrap().status, 429);
        assert_eq!(
            seen.lock().unwrap().len(),
            3,
            "the first attempt and 2 retries"
        );
        assert_eq!(stats.retries(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_and_broken_connections_are_sent_again() {
        let (transport, seen) = fake::script(vec![
            Err(OutboundError::Timeout),
            Err(OutboundError::Connection("reset".into())),
            answer(204, &[]),
        ]);
        let (layer, _) = retry_layer(retries(5));
        let result = layer.layer(transport).oneshot(request(None)).await;
        assert_eq!(result.unwrap().status, 204);
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_about_the_request_itself_are_never_sent_again() {
        for status in [200, 400, 401, 404, 408, 409, 422, 500, 501, 505] {
            let (transport, seen) = fake::script(vec![answer(status, &[]), answer(200, &[])]);
            let (layer, stats) = retry_layer(retries(3));
            let result = layer.layer(transport).oneshot(request(None)).await;
            assert_eq!(result.unwrap().status, status);
            assert_eq!(seen.lock().unwrap().len(), 1, "status {status}");
            assert_eq!(stats.retries(), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_retries_a_request_is_sent_once() {
        let (transport, seen) = fake::script(vec![answer(503, &[]), answer(200, &[])]);
        let (layer, _) = retry_layer(RetryOptions::default());
        let result = layer.layer(transport).oneshot(request(None)).await;
        assert_eq!(result.unwrap().status, 503);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_for_but_never_longer_than_max_delay() {
        let cases: [(&[(&str, &str)], Duration); 4] = [
            (&[("retry-after", "2")], Duration::from_secs(2)),
            // More than max_delay (5 s): capped.
            (&[("Retry-After", "60")], Duration::from_secs(5)),
            // Milliseconds are more precise, and win.
            (
                &[("retry-after-ms", "1500"), ("retry-after", "3")],
                Duration::from_millis(1500),
            ),
            (&[("retry-after-ms", "250")], Duration::from_millis(250)),
        ];
        for (headers, expected) in cases {
            let (transport, _) = fake::script(vec![answer(429, headers), answer(200, &[])]);
            let (layer, _) = retry_layer(retries(1));
            let (service, times) = timed(layer, transport);
            let result = service.oneshot(request(None)).await;
            assert_eq!(result.unwrap().status, 200);
            assert_eq!(gaps(&times), [expected], "{headers:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_retry_after_does_not_shorten_the_backoff() {
        let (transport, _) =
            fake::script(vec![answer(503, &[("retry-after", "0")]), answer(200, &[])]);
        let (layer, _) = retry_layer(retries(1));
        let (service, times) = timed(layer, transport);
        service.oneshot(request(None)).await.unwrap();
        let gap = gaps(&times)[0];
        assert!(gap >= Duration::from_millis(50), "{gap:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_that_could_not_before_the_deadline() {
        let in_secs = |s| Some((Instant::now() + Duration::from_secs(s)).into_std());
        // The server asks for 2 s; the record has 1 s left: the plugin gets the 429 at once.
        let (transport, seen) =
            fake::script(vec![answer(429, &[("retry-after", "2")]), answer(200, &[])]);
        let (layer, _) = retry_layer(retries(3));
        let started = Instant::now();
        let result = layer.layer(transport).oneshot(request(in_secs(1))).await;
        assert_eq!(result.unwrap().status, 429);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(seen.lock().unwrap().len(), 1);
        // With 3 s left the retry goes.
        let (transport, seen) =
            fake::script(vec![answer(429, &[("retry-after", "2")]), answer(200, &[])]);
        let (layer, _) = retry_layer(retries(3));
        let result = layer.layer(transport).oneshot(request(in_secs(3))).await;
        assert_eq!(result.unwrap().status, 200);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn exponential_waits_double_up_to_max_delay_and_fixed_ones_do_not() {
        let stats = Arc::new(OutboundStats::default());
        let options = RetryOptions {
            max_retries: 7,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryOptions::default()
        };
        let retrying = RetryLayer::new(options.clone(), None, Arc::clone(&stats)).retrying;
        let waits: Vec<Duration> = retrying.backoff().collect();
        let nominal = [100, 200, 400, 800, 1000, 1000, 1000].map(Duration::from_millis);
        assert_eq!(waits.len(), nominal.len());
        for (wait, nominal) in waits.iter().zip(nominal) {
            assert!(*wait >= nominal / 2 && *wait <= nominal, "{waits:?}");
        }
        let fixed = RetryOptions {
            exponential_backoff: false,
            ..options
        };
        let retrying = RetryLayer::new(fixed, None, stats).retrying;
        let waits: Vec<Duration> = retrying.backoff().collect();
        assert_eq!(waits.len(), 7);
        for wait in &waits {
            let nominal = Duration::from_millis(100);
            assert!(*wait >= nominal / 2 && *wait <= nominal, "{waits:?}");
        }
        // Jitter: the waits of one schedule are not all the same.
        assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
    }

    /// A transport that answers with the status the test sets.
    fn switchable() -> (
        impl tower::Service<
                PreparedRequest,
                Response = Response,
                Error = OutboundError,
                Future = Sending,
            > + Clone
            + Send
            + Sync
            + 'static,
        fake::Seen,
        Arc<AtomicU16>,
    ) {
        let status = Arc::new(AtomicU16::new(200));
        let current = Arc::clone(&status);
        let (service, seen) = fake::service(move || answer(current.load(Ordering::Relaxed), &[]));
        (service, seen, status)
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_retries_in_proportion_to_successes() {
        let (transport, seen, status) = switchable();
        let options = RetryOptions {
            max_retries: 5,
            budget_ratio: 0.5,
            min_retries_per_second: 0,
            ..RetryOptions::default()
        };
        let (layer, stats) = retry_layer(options);
        let service = layer.layer(transport);
        let sent = || seen.lock().unwrap().len();
        // Nothing succeeded yet: no retry.
        status.store(503, Ordering::Relaxed);
        service.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(
            (sent(), stats.retries(), stats.retries_refused()),
            (1, 0, 1)
        );
        // Four successes earn two retries.
        status.store(200, Ordering::Relaxed);
        for _ in 0..4 {
            service.clone().oneshot(request(None)).await.unwrap();
        }
        status.store(503, Ordering::Relaxed);
        let before = sent();
        let result = service.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(result.status, 503);
        assert_eq!(
            sent() - before,
            3,
            "the first attempt and the 2 retries the budget allows"
        );
        assert_eq!((stats.retries(), stats.retries_refused()), (2, 2));
        // Once the window has passed, the successes no longer count.
        status.store(200, Ordering::Relaxed);
        for _ in 0..4 {
            service.clone().oneshot(request(None)).await.unwrap();
        }
        tokio::time::advance(BUDGET_WINDOW).await;
        status.store(503, Ordering::Relaxed);
        let before = sent();
        service.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(sent() - before, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_operator_may_still_retry_a_little() {
        let (transport, seen, status) = switchable();
        status.store(503, Ordering::Relaxed);
        let options = RetryOptions {
            max_retries: 1,
            budget_ratio: 0.2,
            min_retries_per_second: 1,
            ..RetryOptions::default()
        };
        let (layer, stats) = retry_layer(options);
        let service = layer.layer(transport);
        // One retry a second over the 10 s window, without a single success.
        for _ in 0..12 {
            service.clone().oneshot(request(None)).await.unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 12 + 10);
        assert_eq!((stats.retries(), stats.retries_refused()), (10, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_goes_to_an_endpoint_whose_breaker_opened_meanwhile() {
        let stats = Arc::new(OutboundStats::default());
        let breaker = BreakerOptions {
            minimum_calls: 1,
            ..BreakerOptions::default()
        };
        let breakers = Arc::new(Breakers::new(breaker, Arc::clone(&stats)));
        let options = RetryOptions {
            initial_delay: Duration::from_secs(1),
            ..retries(3)
        };
        let layer = RetryLayer::new(options, Some(Arc::clone(&breakers)), stats);
        let (transport, seen) = fake::script(vec![answer(503, &[]), answer(200, &[])]);
        let sending = tokio::spawn(layer.layer(transport).oneshot(request(None)));
        // While the request waits to be sent again, another one opens the breaker.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let url = Url::parse(URL).unwrap();
        breakers
            .admit(&url)
            .unwrap()
            .settle(&Err(OutboundError::Timeout));
        let result = sending.await.unwrap();
        assert_eq!(result.unwrap().status, 503);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let wait = |headers: &[(&str, &str)]| {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            asked_wait(&headers, now)
        };
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(wait(&[("retry-after", " 7 ")]), secs(7));
        // The three date formats HTTP allows.
        assert_eq!(
            wait(&[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")]),
            secs(30)
        );
        assert_eq!(
            wait(&[("retry-after", "Sunday, 06-Nov-94 08:50:07 GMT")]),
            secs(30)
        );
        assert_eq!(
            wait(&[("retry-after", "Sun Nov  6 08:50:07 1994")]),
            secs(30)
        );
        // A date in the past: at once.
        assert_eq!(
            wait(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
            secs(0)
        );
        assert_eq!(
            wait(&[("retry-after-ms", "20")]),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "0.5")]),
            Some(Duration::from_micros(500))
        );
        // What does not parse is ignored, down to the next header.
        assert_eq!(
            wait(&[("retry-after-ms", "-5"), ("retry-after", "1")]),
            secs(1)
        );
        assert_eq!(wait(&[("retry-after-ms", "NaN")]), None);
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[("retry-after", "-1")]), None);
        assert_eq!(wait(&[("retry-after", "")]), None);
        assert_eq!(wait(&[]), None);
        assert_eq!(
            wait(&[("retry-after", "99999999999999999999999")]),
            secs(u64::MAX)
        );
    }
}
