//! What the stack counts as it goes: retries, breaker decisions and rate-limit waits, for the
//! run summary; and per endpoint, the time requests took, their outcomes and the breaker's
//! state, for the metrics endpoint and the status page.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::breaker::BreakerState;
use crate::counters::{Counter, Flag};
use crate::histogram::Histogram;

/// One operator's outbound counts. Shared (`Arc`) between its layers and the pipeline, which
/// reads them at any time.
#[derive(Debug, Default)]
pub struct OutboundStats {
    retries: AtomicU64,
    retries_refused: AtomicU64,
    failed_fast: AtomicU64,
    breaker_openings: AtomicU64,
    // rate limit
    rate_limit_waits: AtomicU64,
    rate_limit_wait_micros: AtomicU64,
    // adaptive
    held: AtomicU64,
    held_us: AtomicU64,
    rate_limited: AtomicU64,
    /// Per endpoint (`scheme://host:port`), made on first use.
    endpoints: Mutex<BTreeMap<String, Arc<EndpointStats>>>,
    /// The operator has a circuit breaker (its endpoints have a breaker state).
    pub breaker_on: Flag,
}

/// How a request ended, as `waio_http_responses_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    /// No answer: a timeout, a broken connection, or a refusal by the policy or a breaker.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Status2xx,
        Outcome::Status3xx,
        Outcome::Status4xx,
        Outcome::Status5xx,
        Outcome::Error,
    ];

    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Status2xx,
            300..=399 => Outcome::Status3xx,
            400..=499 => Outcome::Status4xx,
            500..=599 => Outcome::Status5xx,
            _ => Outcome::Error,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Status2xx => "2xx",
            Outcome::Status3xx => "3xx",
            Outcome::Status4xx => "4xx",
            Outcome::Status5xx => "5xx",
            Outcome::Error => "error",
        }
    }
}

/// What one endpoint of one operator saw.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// From the plugin's request to its answer (host retries and limit waits included),
    /// microseconds.
    pub latency_us: Histogram,
    outcomes: [Counter; 5],
    /// [`BreakerState`] as 0 closed, 1 half-open, 2 open.
    breaker: AtomicU8,
    /// Transitions into closed, half-open and open.
    transitions: [Counter; 3],
}

impl EndpointStats {
    pub fn answered(&self, took: Duration, outcome: Outcome) {
        self.latency_us
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        self.outcomes[outcome as usize].inc();
    }

    pub fn outcomes(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].get()
    }

    pub(crate) fn breaker_moved(&self, to: BreakerState) {
        self.breaker.store(state_index(to), Ordering::Relaxed);
        self.transitions[usize::from(state_index(to))].inc();
    }

    pub fn breaker(&self) -> BreakerState {
        match self.breaker.load(Ordering::Relaxed) {
            1 => BreakerState::HalfOpen,
            2 => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }

    /// Transitions into `to` so far.
    pub fn transitions(&self, to: BreakerState) -> u64 {
        self.transitions[usize::from(state_index(to))].get()
    }
}

/// The breaker state as a number (the `waio_breaker_state` gauge's value).
pub fn state_index(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

impl OutboundStats {
    /// The stats of `endpoint`, made on first use.
    pub fn endpoint(&self, endpoint: &str) -> Arc<EndpointStats> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = endpoints.get(endpoint) {
            return Arc::clone(known);
        }
        let made = Arc::new(EndpointStats::default());
        endpoints.insert(endpoint.to_string(), Arc::clone(&made));
        made
    }

    /// The stats of `url`'s endpoint: found without building its name once it is known, as
    /// it is for every request after the first.
    pub fn endpoint_of(&self, url: &url::Url) -> Arc<EndpointStats> {
        let scheme = url.scheme();
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        let names = |name: &str| {
            name.strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .and_then(|rest| rest.strip_prefix(host))
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest.parse::<u16>() == Ok(port))
        };
        {
            let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, known)) = endpoints.iter().find(|(name, _)| names(name)) {
                return Arc::clone(known);
            }
        }
        self.endpoint(&super::breaker::endpoint(url))
    }

    /// Every endpoint seen so far, by name.
    pub fn endpoints(&self) -> Vec<(String, Arc<EndpointStats>)> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints
            .iter()
            .map(|(name, stats)| (name.clone(), Arc::clone(stats)))
            .collect()
    }

    /// Attempts sent again after a transient failure (each counts once).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries not sent because the retry budget was spent: the plugin got the failure.
    pub fn retries_refused(&self) -> u64 {
        self.retries_refused.load(Ordering::Relaxed)
    }

    /// Requests answered `unavailable` by an open (or saturated half-open) breaker, without
    /// leaving the machine.
    pub fn failed_fast(&self) -> u64 {
        self.failed_fast.load(Ordering::Relaxed)
    }

    /// Times a breaker opened (from closed, or again from half-open).
    pub fn breaker_openings(&self) -> u64 {
        self.breaker_openings.load(Ordering::Relaxed)
    }

    // Relaxed: each count is read on its own; no other memory depends on it.

    pub(crate) fn retry_sent(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry_refused(&self) {
        self.retries_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_failed_fast(&self) {
        self.failed_fast.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn breaker_opened(&self) {
        self.breaker_openings.fetch_add(1, Ordering::Relaxed);
    }

    // rate limit

    /// Requests (attempts) that waited for the rate limit before they went.
    pub fn rate_limited_requests(&self) -> u64 {
        self.rate_limit_waits.load(Ordering::Relaxed)
    }

    /// The time requests spent waiting for the rate limit, summed.
    pub fn rate_limit_wait(&self) -> Duration {
        Duration::from_micros(self.rate_limit_wait_micros.load(Ordering::Relaxed))
    }

    pub(crate) fn rate_limit_waited(&self, waited: Duration) {
        self.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.rate_limit_wait_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    // adaptive

    /// Requests held back by the provider's rate limit (its headers or 429s).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The time those requests were held, all added up.
    pub fn held_time(&self) -> Duration {
        Duration::from_micros(self.held_us.load(Ordering::Relaxed))
    }

    /// 429 answers received (each attempt counts).
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub(crate) fn request_held(&self, held: Duration) {
        self.held.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        self.held_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited_answer(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_finds_its_endpoint_by_scheme_host_and_port() {
        let stats = OutboundStats::default();
        let url = |u: &str| url::Url::parse(u).unwrap();
        let first = stats.endpoint_of(&url("http://127.0.0.1:8080/v1/chat"));
        assert!(Arc::ptr_eq(
            &first,
            &stats.endpoint("http://127.0.0.1:8080")
        ));
        assert!(Arc::ptr_eq(
            &first,
            &stats.endpoint_of(&url("http://127.0.0.1:8080/other?q=1"))
        ));
        // Another port, host or scheme is another endpoint, even when one name starts the other.
        for other in [
            "http://127.0.0.1:80/",
            "http://127.0.0.10:8080/",
            "https://127.0.0.1:8080/",
        ] {
            assert!(
                !Arc::ptr_eq(&first, &stats.endpoint_of(&url(other))),
                "{other}"
            );
        }
        let names: Vec<String> = stats
            .endpoints()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&"https://127.0.0.1:8080".to_string()));
    }
}
