//! What a cache did, live: the run summary reads it through the telemetry registry (later
//! the metrics endpoint too).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::counters::{Counter, Flag, Gauge};

/// Counts of one cache (an operator's result cache, or its request cache).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: Counter,
    /// Lookups that found nothing (or an expired entry).
    pub misses: Counter,
    /// Lookups answered with a remembered failure.
    pub negative_hits: Counter,
    /// Misses that waited for an identical call already in flight instead of making their own.
    pub coalesced: Counter,
    /// Entries given up to keep the cache within its bound.
    pub evictions: Counter,
    /// Entries kept, as last counted.
    pub entries: Gauge,
    /// Model tokens (input and output) the answers served from the cache had cost when they
    /// were made: tokens not paid again.
    pub tokens_saved: Counter,
    /// What those tokens cost at `[pricing]`, in nano-dollars (an integer, so that it adds up
    /// exactly across threads).
    cost_saved_nanos: AtomicU64,
    /// The cache could not be opened or read and was turned off.
    pub broken: Flag,
    /// Lookups a shared cache (Redis) could not answer because it was out of reach: each was
    /// a miss, its request sent.
    pub unreachable: Counter,
}

impl CacheStats {
    /// Adds the price of tokens served from the cache.
    pub fn add_cost_saved(&self, usd: f64) {
        if usd.is_finite() && usd > 0.0 {
            let nanos = (usd * 1e9).round() as u64;
            self.cost_saved_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// US dollars not spent again thanks to the cache.
    pub fn cost_saved(&self) -> f64 {
        self.cost_saved_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Hits of both kinds over all lookups; 0 before the first.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.hits.get() + self.negative_hits.get() + self.coalesced.get();
        let all = hits + self.misses.get();
        if all == 0 {
            0.0
        } else {
            hits as f64 / all as f64
        }
    }
}
