//! Outgoing HTTP requests made by the host for plugins, as a stack of layers over a transport.
//!
//! A request goes through two steps:
//! 1. [`Outbound::prepare`] runs the request half of the [`policy`] synchronously: allowlist,
//!    header rules, secrets filled in. A refused request never leaves the machine, and the caller
//!    can answer it at once without spawning anything.
//! 2. [`Outbound::send`] hands the [`PreparedRequest`] to the [`stack`] of layers (tower
//!    [`Service`](tower::Service)s): the answer half of the policy (redaction) on top, then the
//!    [`breaker`] (fails fast while an endpoint keeps failing), the [`retry`] (sends again on a
//!    transient failure), the [`rate_limit`] (paces every attempt), the slots for cache and
//!    budget, and the [`transport`]
//!    (reqwest, the body size limit enforced while the body streams in) at the bottom.
//!
//! The types here are the host's own: the plugin bindings convert to and from them
//! (`plugin::http_convert`); the pipeline builds each operator's stack from its manifest section
//! (`pipeline::build`), so nothing here knows the manifest.

pub mod adaptive;
pub mod breaker;
pub mod policy;
pub mod rate_limit;
mod redact;
pub mod request_cache;
pub mod retry;
pub mod stack;
mod stats;
mod status;
pub mod transport;
mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tower::ServiceExt;

pub use breaker::{BreakerOptions, Breakers};
pub use policy::{HostPattern, Policy, PolicyLayer, PolicyService, PreparedRequest, SecretGrant};
pub use rate_limit::{RateLimit, TokenEstimator};
pub use request_cache::RequestCache;
pub use retry::RetryOptions;
pub use stack::{Resilience, Stack};
pub use stats::{state_index as breaker_state_index, EndpointStats, OutboundStats, Outcome};
pub use status::{retriable_status, transient_status};
pub use transport::{Protocol, Transport, MAX_BODY_BYTES};

/// A request as a plugin asks for it: nothing checked yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `None`: the operator's default request timeout.
    pub timeout: Option<Duration>,
    /// When the answer stops being of use (the record's timeout): no retry starts after it.
    /// `None`: no limit but the retries' own.
    pub deadline: Option<Instant>,
}

/// A whole answer: any status is an answer, 4xx and 5xx included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The request cache gave it (kept, or shared with an identical request in flight): it
    /// cost nothing this time.
    pub from_cache: bool,
}

/// Why a request got no answer. The texts are the ones plugins have always seen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// Refused by the host's policy; nothing left the machine.
    #[error("request denied: {0}")]
    Denied(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("request timed out")]
    Timeout,
    /// The connection failed, or the answer was refused (too large, undecodable).
    #[error("connection failed: {0}")]
    Connection(String),
    /// The endpoint's circuit breaker is open (or its half-open probes are all out): the
    /// request failed at once, and nothing left the machine.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl OutboundError {
    /// Whether sending the same request again may succeed: a timeout, a failed connection or
    /// an open breaker may (later), a refused or malformed request never will (the SDKs' rule
    /// for these errors).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            OutboundError::Timeout | OutboundError::Connection(_) | OutboundError::Unavailable(_)
        )
    }
}

/// The answer to a request handed to the stack, to await wherever it suits the caller.
pub type Sending = Pin<Box<dyn Future<Output = Result<Response, OutboundError>> + Send>>;

/// One operator's way out: its policy, the stack its requests travel through and what the
/// stack counts.
pub struct Outbound {
    policy: Arc<Policy>,
    stack: Stack,
    stats: Arc<OutboundStats>,
    /// The rate limit whose tokens this operator settles, and its guesser of a request's
    /// tokens; `None` without a limit on tokens.
    tokens: Option<(Arc<RateLimit>, TokenEstimator)>,
    /// `request_cache.*`: keys requests before their secrets are filled in.
    request_cache: Option<Arc<RequestCache>>,
}

/// What the stack sends requests through: the [`Transport`], or a fake in tests.
pub trait HttpService:
    tower::Service<PreparedRequest, Response = Response, Error = OutboundError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> HttpService for T where
    T: tower::Service<PreparedRequest, Response = Response, Error = OutboundError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

impl Outbound {
    /// The stack [`stack::build`] composes over `transport` (a [`Transport`], or a fake in
    /// tests), behind `policy`, with the retries and breaker of `resilience`
    /// ([`Resilience::default`]: neither).
    pub fn new<T: HttpService>(policy: Policy, resilience: Resilience, transport: T) -> Self {
        Self::compose(policy, resilience, None, transport, Arc::default())
    }

    /// [`Outbound::new`] with a request cache in the stack's cache slot, counting into `stats`
    /// (a hot reload's new stack goes on with the counters of the one it replaces).
    pub fn compose<T: HttpService>(
        policy: Policy,
        resilience: Resilience,
        request_cache: Option<Arc<RequestCache>>,
        transport: T,
        stats: Arc<OutboundStats>,
    ) -> Self {
        let policy = Arc::new(policy);
        let tokens = resilience
            .rate_limit
            .clone()
            .filter(|limit| limit.counts_tokens())
            .map(|limit| (limit, TokenEstimator::default()));
        let stack = stack::build(
            Arc::clone(&policy),
            resilience,
            request_cache.clone(),
            Arc::clone(&stats),
            transport,
        );
        Outbound {
            policy,
            stack,
            stats,
            tokens,
            request_cache,
        }
    }

    /// The request cache in the stack's cache slot, if any.
    pub fn request_cache(&self) -> Option<&Arc<RequestCache>> {
        self.request_cache.as_ref()
    }

    /// What the stack has counted so far (retries, breaker openings), shared and live.
    pub fn stats(&self) -> &Arc<OutboundStats> {
        &self.stats
    }

    /// Checks `request` against the policy and fills in its secrets, synchronously: an `Err`
    /// is the answer, and nothing was sent.
    /// Under a tokens-per-minute limit, the request carries the tokens it is charged in
    /// advance ([`PreparedRequest::token_estimate`]).
    pub fn prepare(&self, request: Request) -> Result<PreparedRequest, OutboundError> {
        // Keyed as written: secrets are still placeholders.
        let key = self.request_cache.as_ref().map(|c| c.key_of(&request));
        let prepared = self.policy.prepare(request)?.with_cache_key(key);
        Ok(match &self.tokens {
            Some((_, estimator)) => {
                let estimate = estimator.estimate(prepared.body());
                prepared.with_token_estimate(estimate)
            }
            None => prepared,
        })
    }

    /// A record's requests were charged `charged` tokens (the estimates of those whose answer
    /// used them: see [`rate_limit::used_its_tokens`]); its plugin reported using
    /// `input + output`. Settles the difference with the rate limit, if it limits tokens.
    pub fn settle_tokens(&self, charged: u64, input: u64, output: u64) {
        if let Some((limit, estimator)) = &self.tokens {
            estimator.observe_output(output);
            limit.settle(charged, input.saturating_add(output));
        }
    }

    /// Sends a prepared request through the stack. The future owns what it needs: spawn it.
    pub fn send(&self, request: PreparedRequest) -> Sending {
        // Timed here, around the whole stack: what the plugin waits for.
        let endpoint = self.stats.endpoint_of(request.url());
        let started = std::time::Instant::now();
        let sending = self.stack.clone().oneshot(request);
        Box::pin(async move {
            let answer = sending.await;
            let outcome = match &answer {
                Ok(response) => stats::Outcome::of_status(response.status),
                Err(_) => stats::Outcome::Error,
            };
            endpoint.answered(started.elapsed(), outcome);
            answer
        })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake inner service for layer tests: it records what it receives and answers from a
    //! script, without a network.

    use std::sync::{Arc, Mutex};

    use super::{OutboundError, PreparedRequest, Response, Sending};

    /// What the fake saw, shared with the test.
    pub type Seen = Arc<Mutex<Vec<PreparedRequest>>>;

    /// A service that records every request and answers each with `answer()`.
    pub fn service(
        answer: impl Fn() -> Result<Response, OutboundError> + Clone + Send + Sync + 'static,
    ) -> (
        impl tower::Service<
                PreparedRequest,
                Response = Response,
                Error = OutboundError,
                Future = Sending,
            > + Clone
            + Send
            + Sync
            + 'static,
        Seen,
    ) {
        let seen = Seen::default();
        let log = Arc::clone(&seen);
        let service = tower::service_fn(move |request: PreparedRequest| {
            log.lock().unwrap().push(request);
            let result = answer();
            Box::pin(async move { result }) as Sending
        });
        (service, seen)
    }

    /// A service that answers the requests it receives with `answers` in turn, the last one
    /// again once they are used up.
    pub fn script(
        answers: Vec<Result<Response, OutboundError>>,
    ) -> (
        impl tower::Service<
                PreparedRequest,
                Response = Response,
                Error = OutboundError,
                Future = Sending,
            > + Clone
            + Send
            + Sync
            + 'static,
        Seen,
    ) {
        let next = Arc::new(Mutex::new(0usize));
        service(move || {
            let mut next = next.lock().unwrap();
            let answer = answers[(*next).min(answers.len() - 1)].clone();
            *next += 1;
            answer
        })
    }

    pub fn ok(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            from_cache: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_broken_connections_are_retriable_refusals_are_not() {
        assert!(OutboundError::Timeout.is_retriable());
        assert!(OutboundError::Connection("reset".into()).is_retriable());
        assert!(OutboundError::Unavailable("breaker open".into()).is_retriable());
        assert!(!OutboundError::Denied("x".into()).is_retriable());
        assert!(!OutboundError::InvalidRequest("x".into()).is_retriable());
    }

    #[test]
    fn errors_read_as_plugins_have_always_seen_them() {
        assert_eq!(
            OutboundError::Denied("no".into()).to_string(),
            "request denied: no"
        );
        assert_eq!(
            OutboundError::InvalidRequest("bad".into()).to_string(),
            "invalid request: bad"
        );
        assert_eq!(OutboundError::Timeout.to_string(), "request timed out");
        assert_eq!(
            OutboundError::Connection("reset".into()).to_string(),
            "connection failed: reset"
        );
        assert_eq!(
            OutboundError::Unavailable("breaker open".into()).to_string(),
            "unavailable: breaker open"
        );
    }
}
