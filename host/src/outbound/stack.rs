//! The order of the layers between the policy and the transport.
//!
//! ```text
//!   policy (answers screened: encoding, redaction)      PolicyLayer
//!   request cache         a kept answer, or one in flight, answers    RequestCacheLayer
//!   breaker               fails fast while an endpoint keeps failing   BreakerLayer
//!   [slot] budget         refuses what would exceed the operator's allowance
//!   retry                 sends again on a transient failure          RetryLayer
//!   rate limit            paces the attempts that go out              RateLimitLayer
//!   adaptive              paces them by what the provider says remains  AdaptiveLayer
//!   transport             reqwest; the body limit enforced while it streams
//! ```
//!
//! Why this order: answers are screened above everything else, so no layer can hand a plugin
//! an answer that skipped redaction (a cache hit included). A cache hit costs nothing and needs
//! no endpoint, so it comes first, and answers even while a breaker is open. The breaker sits
//! above the retry: it counts each request once, with the outcome its retries ended with, and
//! a request it fails fast costs nothing further down (no budget, no retries). Below it, the
//! retry would keep sending to an endpoint whose breaker opened while a request waited between
//! attempts; so the retry is handed the same [`Breakers`] and asks them before each retry, and
//! sends again only while the endpoint's breaker is closed (a half-open probe is sent once).
//! The budget is charged once per request, before the retries it allows. The rate limit sits
//! below the retry so that it paces every attempt that goes on the wire. The adaptive layer
//! is last before the transport: it reads every answer (the provider's rate-limit headers,
//! its 429s) and paces what the configured limit lets through by what the provider still
//! allows. The remaining slot
//! (budget) is empty today: each later issue adds its layer at its place in [`build`], as a tower
//! [`Layer`](tower::Layer) unit-tested on its own with a fake inner service.
//!
//! Which failures are retried and counted by the breaker is one rule,
//! [`transient`](super::status::transient); the plugin contract's wider one,
//! [`retriable_status`](super::retriable_status), is for plugins and record retries.

use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use super::adaptive::AdaptiveLayer;
use super::breaker::BreakerLayer;
use super::rate_limit::{RateLimit, RateLimitLayer};
use super::request_cache::{RequestCache, RequestCacheLayer};
use super::retry::RetryLayer;
use super::{
    BreakerOptions, Breakers, OutboundError, OutboundStats, Policy, PolicyLayer, PreparedRequest,
    Response, RetryOptions,
};

/// The composed stack, boxed so that its type does not change as layers are added.
pub type Stack = BoxCloneSyncService<PreparedRequest, Response, OutboundError>;

/// How an operator's requests survive failures: request retries and a circuit breaker; and
/// how they are paced: a rate limit, and the provider's own rate-limit answers. The default
/// has none: each request is sent once, at once, as before any existed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resilience {
    pub retry: RetryOptions,
    /// `None`: no breaker.
    pub breaker: Option<BreakerOptions>,
    /// `None`: no rate limit. Shared by the operators that share the limit.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Pace requests by the provider's rate-limit headers and 429s ([`AdaptiveLayer`]).
    pub adaptive: bool,
}

/// Composes the layers over `transport` (the real one, or a fake in tests); the layers count
/// what they do in `stats`.
pub fn build<T: super::HttpService>(
    policy: Arc<Policy>,
    resilience: Resilience,
    request_cache: Option<Arc<RequestCache>>,
    stats: Arc<OutboundStats>,
    transport: T,
) -> Stack {
    let breakers = resilience
        .breaker
        .map(|options| Arc::new(Breakers::new(options, Arc::clone(&stats))));
    // No wait for the provider is longer than the retries' own longest.
    let adaptive = resilience
        .adaptive
        .then(|| AdaptiveLayer::new(resilience.retry.max_delay, Arc::clone(&stats)));
    let request_cache = request_cache.map(|c| RequestCacheLayer::new(c, Arc::clone(&policy)));
    let stack = ServiceBuilder::new()
        .layer(PolicyLayer::new(policy))
        .option_layer(request_cache)
        .option_layer(breakers.clone().map(BreakerLayer::new))
        // Slot: budget.
        .layer(RetryLayer::new(
            resilience.retry,
            breakers,
            Arc::clone(&stats),
        ))
        .option_layer(
            resilience
                .rate_limit
                .map(|limit| RateLimitLayer::new(limit, Arc::clone(&stats))),
        )
        .option_layer(adaptive)
        .service(transport);
    BoxCloneSyncService::new(stack)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{fake, HostPattern, Outbound, Request, SecretGrant};
    use super::*;

    fn policy() -> Policy {
        Policy::new(
            vec![HostPattern::new("127.0.0.1", None)],
            vec![SecretGrant {
                name: "key".into(),
                value: "sk-very-secret".into(),
                hosts: vec![HostPattern::new("127.0.0.1", None)],
            }],
            Duration::from_secs(5),
        )
    }

    fn request(url: &str) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![("authorization".into(), "Bearer ${secret:key}".into())],
            body: vec![],
            timeout: None,
            deadline: None,
        }
    }

    #[tokio::test]
    async fn a_request_goes_down_once_and_its_answer_comes_up_screened() {
        let (transport, seen) =
            fake::service(|| Ok(fake::ok(200, &[], "echo: Bearer sk-very-secret")));
        let outbound = Outbound::new(policy(), Resilience::default(), transport);
        let prepared = outbound.prepare(request("http://127.0.0.1:1/a")).unwrap();
        let answer = outbound.send(prepared).await.unwrap();
        assert_eq!(answer.body, b"echo: Bearer [redacted]");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].url().as_str(), "http://127.0.0.1:1/a");
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_transport() {
        let (transport, seen) = fake::service(|| Ok(fake::ok(200, &[], "")));
        let outbound = Outbound::new(policy(), Resilience::default(), transport);
        let refused = outbound.prepare(request("http://example.com/"));
        assert!(matches!(refused, Err(OutboundError::Denied(_))));
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_stack_adds_no_waiting_of_its_own() {
        // A transport that takes 30 s: the answer comes after exactly that, on a paused clock.
        let (slow, seen) = fake::service(|| Ok(fake::ok(503, &[], "busy")));
        let slow = tower::ServiceBuilder::new()
            .then(|answer| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                answer
            })
            .service(slow);
        let outbound = Outbound::new(policy(), Resilience::default(), slow);
        let started = tokio::time::Instant::now();
        let prepared = outbound.prepare(request("http://127.0.0.1:1/")).unwrap();
        let answer = outbound.send(prepared).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // Without retries (the default) a transient status comes back as it is, after one try.
        assert_eq!(answer.status, 503);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_counts_a_request_once_after_its_retries_and_then_stops_them() {
        let (failing, seen) = fake::service(|| Ok(fake::ok(503, &[], "down")));
        let resilience = Resilience {
            retry: RetryOptions {
                max_retries: 2,
                ..RetryOptions::default()
            },
            breaker: Some(BreakerOptions {
                minimum_calls: 2,
                ..BreakerOptions::default()
            }),
            rate_limit: None,
            adaptive: false,
        };
        let outbound = Outbound::new(policy(), resilience, failing);
        let send = || outbound.send(outbound.prepare(request("http://127.0.0.1:1/")).unwrap());
        // Each request is sent 3 times; the breaker sees one failure per request.
        assert_eq!(send().await.unwrap().status, 503);
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(send().await.unwrap().status, 503);
        assert_eq!(seen.lock().unwrap().len(), 6);
        // Two failed requests of two: open. The next fails at once, untried and unretried.
        let refused = send().await;
        assert!(
            matches!(refused, Err(OutboundError::Unavailable(_))),
            "{refused:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 6);
        let stats = outbound.stats();
        assert_eq!(
            (
                stats.retries(),
                stats.breaker_openings(),
                stats.failed_fast()
            ),
            (4, 1, 1)
        );
    }
}
