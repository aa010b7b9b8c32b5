//! The rate-limit slot of the outbound stack: every attempt waits for its request and its
//! estimated tokens before it goes. The wait holds the request, so the record stays in flight
//! and the operator's capacity fills up: the operator stops reading input (backpressure).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::ServiceExt;

use super::{used_its_tokens, RateLimit};
use crate::outbound::{OutboundError, OutboundStats, PreparedRequest, Response, Sending};

/// Waits shorter than this are not waits: an allowance that grants at once still takes a
/// lock, and tokio's timer sleeps in whole milliseconds.
const NOT_A_WAIT: Duration = Duration::from_millis(1);

/// Paces the requests below it by `limit`, counting waits in `stats`.
#[derive(Clone)]
pub struct RateLimitLayer {
    limit: Arc<RateLimit>,
    stats: Arc<OutboundStats>,
}

impl RateLimitLayer {
    pub fn new(limit: Arc<RateLimit>, stats: Arc<OutboundStats>) -> Self {
        RateLimitLayer { limit, stats }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> RateLimitService<S> {
        RateLimitService {
            limit: Arc::clone(&self.limit),
            stats: Arc::clone(&self.stats),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct RateLimitService<S> {
    limit: Arc<RateLimit>,
    stats: Arc<OutboundStats>,
    inner: S,
}

impl<S> tower::Service<PreparedRequest> for RateLimitService<S>
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

    /// Ready at once: the wait is per request, in `call`, so that it holds that request only.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OutboundError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PreparedRequest) -> Sending {
        let inner = self.inner.clone();
        let limit = Arc::clone(&self.limit);
        let stats = Arc::clone(&self.stats);
        Box::pin(async move {
            let estimate = request.token_estimate();
            // A request whose deadline passes while it waits is not sent late: it fails as
            // timed out, and what it was waiting for is left to the others (the tokens drawn
            // from credits stay spent: the limit errs on the safe side).
            let waited = match request.deadline() {
                Some(deadline) => tokio::time::timeout_at(
                    tokio::time::Instant::from_std(deadline),
                    limit.acquire(estimate),
                )
                .await
                .map_err(|_| OutboundError::Timeout)?,
                None => limit.acquire(estimate).await,
            };
            if waited >= NOT_A_WAIT {
                stats.rate_limit_waited(waited);
            }
            let answer = inner.oneshot(request).await;
            // A refused attempt used no tokens: its charge goes back now (a retry charges
            // again), and the operator settles only what an answer used.
            if !used_its_tokens(&answer) {
                limit.settle(estimate, 0);
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::{Acquiring, Algorithm, Allowance, LocalAllowance, RateLimitOptions};
    use super::*;
    use crate::outbound::fake;

    /// An allowance that records what it is asked for and never waits.
    #[derive(Default)]
    struct Counting(Mutex<Vec<u64>>);

    impl Allowance for Counting {
        fn acquire(&self, _requests: u32, tokens: u64) -> Acquiring<'_> {
            self.0.lock().unwrap().push(tokens);
            Box::pin(async {})
        }
    }

    fn request(estimate: u64) -> PreparedRequest {
        request_until(estimate, None)
    }

    fn request_until(estimate: u64, deadline: Option<std::time::Instant>) -> PreparedRequest {
        let policy = crate::outbound::Policy::new(
            vec![crate::outbound::HostPattern::new("127.0.0.1", None)],
            vec![],
            Duration::from_secs(5),
        );
        policy
            .prepare(crate::outbound::Request {
                method: "POST".into(),
                url: "http://127.0.0.1:1/".into(),
                headers: vec![],
                body: vec![],
                timeout: None,
                deadline,
            })
            .unwrap()
            .with_token_estimate(estimate)
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_holds_the_request_and_is_counted() {
        let allowance = LocalAllowance::new(&RateLimitOptions {
            requests_per_second: Some(2.0),
            burst: Some(1),
            algorithm: Algorithm::TokenBucket,
            ..RateLimitOptions::default()
        });
        let limit = Arc::new(RateLimit::new(Arc::new(allowance), "op".into()));
        let stats = Arc::new(OutboundStats::default());
        let (transport, seen) = fake::service(|| Ok(fake::ok(200, &[], "")));
        let service = tower::ServiceBuilder::new()
            .layer(RateLimitLayer::new(limit, Arc::clone(&stats)))
            .service(transport);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            service.clone().oneshot(request(0)).await.unwrap();
        }
        // The first goes at once, then one every half second.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(stats.rate_limited_requests(), 2);
        assert_eq!(stats.rate_limit_wait(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_attempt_gives_its_tokens_back() {
        let counting = Arc::new(Counting::default());
        let limit = Arc::new(RateLimit::new(
            Arc::clone(&counting) as Arc<dyn Allowance>,
            "op".into(),
        ));
        let stats = Arc::new(OutboundStats::default());
        let (transport, _) = fake::script(vec![
            Ok(fake::ok(429, &[], "slow down")),
            Ok(fake::ok(200, &[], "")),
        ]);
        let service = tower::ServiceBuilder::new()
            .layer(RateLimitLayer::new(Arc::clone(&limit), stats))
            .service(transport);
        service.clone().oneshot(request(100)).await.unwrap();
        service.clone().oneshot(request(100)).await.unwrap();
        // The 429 used nothing: the second request draws on its 100 tokens.
        service.clone().oneshot(request(100)).await.unwrap();
        assert_eq!(*counting.0.lock().unwrap(), [100, 0, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_deadline_passes_while_it_waits_is_not_sent() {
        let allowance = LocalAllowance::new(&RateLimitOptions {
            requests_per_second: Some(1.0),
            burst: Some(1),
            algorithm: Algorithm::TokenBucket,
            ..RateLimitOptions::default()
        });
        let limit = Arc::new(RateLimit::new(Arc::new(allowance), "op".into()));
        let stats = Arc::new(OutboundStats::default());
        let (transport, seen) = fake::service(|| Ok(fake::ok(200, &[], "")));
        let service = tower::ServiceBuilder::new()
            .layer(RateLimitLayer::new(limit, stats))
            .service(transport);
        let deadline = Some(std::time::Instant::now() + Duration::from_millis(1500));
        service
            .clone()
            .oneshot(request_until(0, deadline))
            .await
            .unwrap();
        service
            .clone()
            .oneshot(request_until(0, deadline))
            .await
            .unwrap();
        // The third could go at 2 s, after its deadline: it fails at the deadline, unsent.
        let third = service.clone().oneshot(request_until(0, deadline)).await;
        assert!(matches!(third, Err(OutboundError::Timeout)));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
