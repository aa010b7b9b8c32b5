//! The result cache on the operator's core (`cache.*`), with the fake function and fake clock
//! of `tests`: hits and waiting records keep their places and timestamps, a leader that ends
//! without a result hands the call on, a fatal failure is remembered.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cache::{CacheOptions, Eviction, Storage};
use crate::manifest::{ResultCacheConfig, ResultKey};
use crate::operator::result_cache::ResultCache;

fn cached(config: OperatorConfig) -> Harness {
    let mut h = Harness::with(config);
    let cache = ResultCacheConfig {
        options: CacheOptions {
            storage: Storage::Heap {
                eviction: Eviction::Lru,
            },
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            max_entries: 100,
            max_bytes: None,
        },
        key: ResultKey::Payload,
        share_across_versions: false,
    };
    let cache = ResultCache::open(&cache, "v1", "{}", Arc::clone(&h.telemetry.result_cache))
        .expect("heap cache");
    h.core.use_result_cache(cache);
    h
}

fn stamped(h: &mut Harness) -> Vec<(String, Option<i64>)> {
    h.out
        .drain(..)
        .map(|e| match e {
            Element::Record(r) => (
                String::from_utf8_lossy(&r.payload).into_owned(),
                r.timestamp,
            ),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn invoked(h: &Harness, payload: &str) -> usize {
    h.function()
        .calls_of(Kind::Invoke)
        .iter()
        .filter(|p| *p == payload)
        .count()
}

#[test]
fn hits_and_waiting_records_keep_their_places_and_their_own_timestamps() {
    let mut h = cached(config());
    h.record("send-a").unwrap(); // a miss: its call goes out
    h.record("send-a").unwrap(); // waits for that call
    h.record("now-b").unwrap(); // a miss, complete at once, behind the first two
    assert!(h.out.is_empty(), "the head is still in flight");
    h.answer("send-a").unwrap();
    assert_eq!(
        stamped(&mut h),
        [
            ("send-a".to_string(), Some(1001)),
            ("send-a".to_string(), Some(1002)),
            ("now-b".to_string(), Some(1003)),
        ]
    );
    h.record("now-b").unwrap(); // a hit
    h.record("send-a").unwrap(); // a hit
    assert_eq!(
        stamped(&mut h),
        [
            ("now-b".to_string(), Some(1004)),
            ("send-a".to_string(), Some(1005)),
        ]
    );
    assert_eq!((invoked(&h, "send-a"), invoked(&h, "now-b")), (1, 1));
    let stats = &h.telemetry.result_cache;
    assert_eq!((stats.hits.get(), stats.coalesced.get()), (2, 1));
}

#[test]
fn a_leader_that_times_out_hands_the_call_to_the_first_record_still_waiting() {
    let mut h = cached(OperatorConfig {
        on_timeout: Policy::DeadLetter,
        ..timeout_config(100)
    });
    h.record("send-x").unwrap();
    h.advance(50).unwrap();
    h.record("send-x").unwrap();
    assert_eq!(invoked(&h, "send-x"), 1);
    h.advance(50).unwrap(); // the first one's time is up: nothing kept, the second calls
    assert_eq!(invoked(&h, "send-x"), 2);
    h.answer("send-x").unwrap(); // the late answer of the first: ignored
    h.answer("send-x").unwrap();
    assert_eq!(h.output(), ["dead(timeout):1", "send-x"]);
    // Kept from the second one's answer.
    h.record("send-x").unwrap();
    assert_eq!(h.output(), ["send-x"]);
    assert_eq!(invoked(&h, "send-x"), 2);
}

#[test]
fn a_fatal_failure_is_remembered_and_given_to_the_same_input_again() {
    let mut h = cached(OperatorConfig {
        on_failure: Policy::DeadLetter,
        ..config()
    });
    h.record("fail-z").unwrap();
    h.record("fail-z").unwrap();
    assert_eq!(h.output(), ["dead(failure):1", "dead(failure):2"]);
    assert_eq!(invoked(&h, "fail-z"), 1);
    assert_eq!(h.telemetry.result_cache.negative_hits.get(), 1);
}
