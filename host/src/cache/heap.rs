//! Entries on the heap: moka, bounded by a number of entries, each entry expiring after its
//! own time to live (an answer's `ttl`, a failure's `negative_ttl`).

use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::Expiry;

use super::{CacheKey, CacheStats, DigestHasher, Entry, Eviction, Lookup};

pub(super) struct HeapStore {
    entries: moka::sync::Cache<CacheKey, Arc<Entry>, BuildHasherDefault<DigestHasher>>,
    stats: Arc<CacheStats>,
}

/// Each entry lives as long as it was written for. moka expires it on its own clock; the
/// lookup also checks the entry's times against the clock it is given (the same wall clock
/// in a run, a fake one in tests).
struct EntryLifetime;

impl Expiry<CacheKey, Arc<Entry>> for EntryLifetime {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(
            entry.expires_ms.saturating_sub(entry.written_ms),
        ))
    }
}

impl HeapStore {
    pub(super) fn new(max_entries: u64, eviction: Eviction, stats: Arc<CacheStats>) -> Self {
        let counted = Arc::clone(&stats);
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .eviction_policy(match eviction {
                Eviction::TinyLfu => EvictionPolicy::tiny_lfu(),
                Eviction::Lru => EvictionPolicy::lru(),
            })
            .expire_after(EntryLifetime)
            .eviction_listener(move |_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    counted.evictions.inc();
                }
            })
            .build_with_hasher(BuildHasherDefault::default());
        HeapStore { entries, stats }
    }

    pub(super) fn get(&self, key: &CacheKey, now_ms: u64) -> Lookup {
        match self.entries.get(key) {
            Some(entry) => entry.lookup(now_ms),
            None => Lookup::Miss,
        }
    }

    pub(super) fn put(&self, key: &CacheKey, entry: Entry) {
        self.entries.insert(*key, Arc::new(entry));
        // Applies the bound now rather than on moka's next maintenance, so that the cache
        // never holds more than `max_entries` for long (puts follow a provider call: rare).
        self.entries.run_pending_tasks();
        self.stats.entries.set(self.entries() as i64);
    }

    pub(super) fn entries(&self) -> u64 {
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(negative: bool, written_ms: u64, ttl_ms: u64, value: &[u8]) -> Entry {
        Entry {
            negative,
            written_ms,
            expires_ms: written_ms + ttl_ms,
            value: value.to_vec().into(),
        }
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::of(&[&[n]])
    }

    #[test]
    fn an_entry_is_served_until_its_time_to_live_ends_on_the_given_clock() {
        let store = HeapStore::new(10, Eviction::TinyLfu, Arc::default());
        store.put(&key(1), entry(false, 1_000, 60_000, b"answer"));
        store.put(&key(2), entry(true, 1_000, 5_000, b"failure"));
        assert_eq!(
            store.get(&key(1), 2_000),
            Lookup::Hit(b"answer".to_vec().into())
        );
        assert_eq!(
            store.get(&key(2), 5_999),
            Lookup::Negative(b"failure".to_vec().into())
        );
        // The negative entry's shorter life ends first.
        assert_eq!(store.get(&key(2), 6_000), Lookup::Miss);
        assert_eq!(
            store.get(&key(1), 60_999),
            Lookup::Hit(b"answer".to_vec().into())
        );
        assert_eq!(store.get(&key(1), 61_000), Lookup::Miss);
        assert_eq!(store.get(&key(3), 0), Lookup::Miss);
    }

    #[test]
    fn an_lru_cache_keeps_its_bound_and_gives_up_the_least_recently_used() {
        let stats = Arc::new(CacheStats::default());
        let store = HeapStore::new(2, Eviction::Lru, Arc::clone(&stats));
        store.put(&key(1), entry(false, 0, 60_000, b"1"));
        store.put(&key(2), entry(false, 0, 60_000, b"2"));
        assert!(matches!(store.get(&key(1), 1), Lookup::Hit(_)));
        store.put(&key(3), entry(false, 0, 60_000, b"3"));
        assert_eq!(store.entries(), 2);
        assert_eq!(stats.evictions.get(), 1);
        assert_eq!(store.get(&key(2), 1), Lookup::Miss);
        assert!(matches!(store.get(&key(1), 1), Lookup::Hit(_)));
        assert!(matches!(store.get(&key(3), 1), Lookup::Hit(_)));
    }

    #[test]
    fn a_tiny_lfu_cache_never_holds_more_than_its_bound() {
        let stats = Arc::new(CacheStats::default());
        let store = HeapStore::new(50, Eviction::TinyLfu, Arc::clone(&stats));
        for n in 0..=200u8 {
            store.put(&key(n), entry(false, 0, 60_000, &[n]));
            assert!(store.entries() <= 50, "{} entries", store.entries());
        }
        assert!(stats.evictions.get() > 0);
    }
}
