//! The result cache's lookup per record, as the operator makes it at admission: the key
//! (SHA-256 of the plugin's identity and the input), the lookup, and decoding the kept
//! outputs for the record. Heap (moka) and RocksDB, every lookup a hit.
//!
//!   cargo bench -p waio --bench cache_lookup            (the numbers in docs/BENCHMARKS.md)
//!   cargo bench -p waio --bench cache_lookup -- --quick (a tenth of the lookups)
//!   cargo bench -p waio --bench cache_lookup -- heap    (only the cases named heap...)
//!
//! A plain timing loop (no harness): it reports the mean over all lookups and the best of
//! five rounds, in microseconds per lookup.

use std::sync::Arc;

// The allocator the `waio` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use waio::cache::{CacheOptions, Eviction, Storage};
use waio::manifest::{ResultCacheConfig, ResultKey};
use waio::operator::result_cache::{Admitted, ResultCache};
use waio::plugin::function::Output;
use waio::record::Record;

const DISTINCT: usize = 10_000;

fn record(i: usize) -> Record {
    Record {
        key: Some(format!("k{i}")),
        timestamp: Some(1_700_000_000_000),
        payload: format!(
            "{{\"id\":{i},\"text\":\"the customer says the invoice {i} was charged twice and asks for a refund\",\"lang\":\"en\"}}"
        )
        .into_bytes(),
        line: i as u64 + 1,
        enters_at: 0,
        produced_by: None,
        origin: None,
        ticket: None,
    }
}

/// One output as the openai plugin's embeddings mode makes it: the record plus 8 floats.
fn output(r: &Record) -> Output {
    let mut payload = r.payload.clone();
    payload.pop();
    payload.extend_from_slice(b",\"embedding\":[0.125,-0.5,0.25,0.75,-0.125,0.5,-0.25,0.0625]}");
    Output {
        key: r.key.clone(),
        payload,
    }
}

fn filled(storage: Storage, key: ResultKey) -> ResultCache {
    let config = ResultCacheConfig {
        options: CacheOptions {
            storage,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::ZERO,
            max_entries: 100_000,
            max_bytes: None,
        },
        key,
        share_across_versions: false,
    };
    let open = || {
        ResultCache::open(
            &config,
            "digest-of-the-component",
            "{\"model\":\"m\"}",
            Arc::default(),
        )
        .expect("cache opens")
    };
    let mut cache = open();
    let now = waio::cache::now_ms();
    for i in 0..DISTINCT {
        let r = record(i);
        let Admitted::Lead(k) = cache.admit(i as u64, &r, now) else {
            panic!("a fresh cache misses");
        };
        cache.completed(&k, &r, &[output(&r)], &[], now);
    }
    // RocksDB: read back as a restarted run would, from table files (closing flushes them).
    if matches!(config.options.storage, Storage::RocksDb { .. }) {
        drop(cache);
        cache = open();
    }
    cache
}

/// Microseconds per hit, over `span` of the entries: (mean over all rounds, best round).
fn measure(cache: &mut ResultCache, lookups: usize, span: usize) -> (f64, f64) {
    let records: Vec<Record> = (0..span).map(record).collect();
    let now = waio::cache::now_ms();
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for n in 0..lookups {
            let r = &records[(n * 7919) % span];
            match cache.admit(n as u64, r, now) {
                Admitted::Hit(outputs) => {
                    std::hint::black_box(outputs);
                }
                _ => panic!("every lookup is a hit"),
            }
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / lookups as f64);
    }
    let mean = rounds.iter().sum::<f64>() / rounds.len() as f64;
    let best = rounds.iter().cloned().fold(f64::MAX, f64::min);
    (mean, best)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let lookups = if quick { 20_000 } else { 200_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: Vec<(&str, Storage, ResultKey)> = vec![
        (
            "heap, key = whole payload",
            Storage::Heap {
                eviction: Eviction::TinyLfu,
            },
            ResultKey::Payload,
        ),
        (
            "heap, key = [\"/text\", \"/lang\"]",
            Storage::Heap {
                eviction: Eviction::TinyLfu,
            },
            ResultKey::Pointers(vec!["/text".into(), "/lang".into()]),
        ),
        (
            "rocksdb, key = whole payload",
            Storage::RocksDb {
                path: dir.path().join("whole"),
            },
            ResultKey::Payload,
        ),
        (
            "rocksdb, key = [\"/text\", \"/lang\"]",
            Storage::RocksDb {
                path: dir.path().join("fields"),
            },
            ResultKey::Pointers(vec!["/text".into(), "/lang".into()]),
        ),
    ];
    println!("{lookups} hits per round, 5 rounds, {DISTINCT} entries; each lookup a hit on one of");
    println!(
        "all {DISTINCT} entries (spread: the caches' memory is read cold) or of 100 (a hot set)"
    );
    println!(
        "{:<36} {:>16} {:>16} {:>16} {:>16}",
        "result cache", "all: mean µs", "all: best µs", "hot: mean µs", "hot: best µs"
    );
    // `-- NAME`: only the cases whose name starts with NAME (e.g. `heap`), for a profiler.
    let only = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    for (name, storage, key) in cases.into_iter().filter(|(n, _, _)| n.starts_with(&only)) {
        let mut cache = filled(storage, key);
        let (mean, best) = measure(&mut cache, lookups, DISTINCT);
        let (hot_mean, hot_best) = measure(&mut cache, lookups, 100);
        println!("{name:<36} {mean:>16.2} {best:>16.2} {hot_mean:>16.2} {hot_best:>16.2}");
    }
}
