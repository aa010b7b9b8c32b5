//! What the stack counts as it goes: retries, breaker decisions and rate-limit waits, for the
//! run summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
}

impl OutboundStats {
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
