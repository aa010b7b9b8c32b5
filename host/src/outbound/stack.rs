//! The order of the layers between the policy and the transport.
//!
//! ```text
//!   policy (answers screened: encoding, redaction)      PolicyLayer
//!   [slot] cache          a hit answers without going further
//!   [slot] budget         refuses what would exceed the operator's allowance
//!   [slot] retry          sends again on a retriable status or error
//!   [slot] breaker        fails fast while a host keeps failing
//!   [slot] rate limit     paces the attempts that go out
//!   transport             reqwest; the body limit enforced while it streams
//! ```
//!
//! Why this order: answers are screened above everything else, so no layer can hand a plugin
//! an answer that skipped redaction (a cache hit included). A cache hit costs nothing, so it
//! comes before the budget; the budget is charged once per request, before the retries it
//! allows. The breaker and the rate limit sit below the retry so that they see, and pace, every
//! attempt that goes on the wire. The slots are empty today: each later issue adds its layer
//! at its place in [`build`], as a tower [`Layer`](tower::Layer) unit-tested on its own with a
//! fake inner service, and decides whether [`retriable_status`](super::retriable_status) or
//! its own rule drives it.

use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use super::{OutboundError, Policy, PolicyLayer, PreparedRequest, Response};

/// The composed stack, boxed so that its type does not change as layers are added.
pub type Stack = BoxCloneSyncService<PreparedRequest, Response, OutboundError>;

/// Composes the layers over `transport` (the real one, or a fake in tests).
pub fn build<T>(policy: Arc<Policy>, transport: T) -> Stack
where
    T: tower::Service<PreparedRequest, Response = Response, Error = OutboundError>
        + Clone
        + Send
        + Sync
        + 'static,
    T::Future: Send + 'static,
{
    let stack = ServiceBuilder::new()
        .layer(PolicyLayer::new(policy))
        // Slot: cache.
        // Slot: budget.
        // Slot: retry.
        // Slot: breaker.
        // Slot: rate limit.
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
        }
    }

    #[tokio::test]
    async fn a_request_goes_down_once_and_its_answer_comes_up_screened() {
        let (transport, seen) =
            fake::service(|| Ok(fake::ok(200, &[], "echo: Bearer sk-very-secret")));
        let outbound = Outbound::new(policy(), transport);
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
        let outbound = Outbound::new(policy(), transport);
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
        let outbound = Outbound::new(policy(), slow);
        let started = tokio::time::Instant::now();
        let prepared = outbound.prepare(request("http://127.0.0.1:1/")).unwrap();
        let answer = outbound.send(prepared).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // No retry slot is filled yet: a retriable status comes back as it is, after one try.
        assert_eq!(answer.status, 503);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
