//! `cache.*` and `request_cache.*` as a user writes them: the issue's example, the defaults,
//! and the refusals (each naming file, line and key).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::cache::{Eviction, Storage};

const FILE: &str = "/pipelines/demo/pipeline.toml";

/// Two operators `a` and `b` with `first` and `second` in them: `first`'s line `n` is line
/// 4 + n.
fn manifest(first: &str, second: &str) -> String {
    format!(
        "\n[[operator]]\nname = \"a\"\nplugin = \"p.wasm\"\n{first}\n\n[[operator]]\nname = \"b\"\nplugin = \"p.wasm\"\n{second}\n\n[source]\nkind = \"stdin\"\n\n[sink]\nkind = \"stdout\"\n"
    )
}

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    parse_with_env(text, Path::new(FILE), &|_| {
        Err(std::env::VarError::NotPresent)
    })
}

fn refused(first: &str, second: &str) -> (usize, String, String) {
    match parse(&manifest(first, second)) {
        Err(ManifestError::Invalid { at, field, message }) => {
            assert_eq!(at.file, Path::new(FILE));
            (at.line, field, message)
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn the_issues_example_reads_as_written() {
    let text = manifest(
        "cache.enabled = true\ncache.ttl = \"1d\"\ncache.max_entries = 100000\ncache.storage = \"rocksdb\"\ncache.path = \"cache/embeddings\"\ncache.key = [\"/text\", \"/lang\"]\ncache.negative_ttl = \"10m\"",
        "request_cache.ttl = \"1h\"\nrequest_cache.ignore_headers = [\"X-Trace\"]",
    );
    let m = parse(&text).unwrap();
    let cache = m.operators[0].cache.clone().expect("on");
    assert_eq!(cache.options.ttl, Duration::from_secs(86_400));
    assert_eq!(cache.options.negative_ttl, Duration::from_secs(600));
    assert_eq!(cache.options.max_entries, 100_000);
    assert_eq!(
        cache.options.storage,
        Storage::RocksDb {
            path: PathBuf::from("/pipelines/demo/cache/embeddings")
        }
    );
    assert_eq!(
        cache.key,
        ResultKey::Pointers(vec!["/text".into(), "/lang".into()])
    );
    assert!(m.operators[0].request_cache.is_none());
    let requests = m.operators[1].request_cache.clone().expect("on");
    assert_eq!(requests.ignore_headers, ["x-trace"]);
    assert_eq!(
        requests.options.storage,
        Storage::Heap {
            eviction: Eviction::TinyLfu
        }
    );
    // `enabled = false` turns a table off; a rocksdb cache without a path goes next to the
    // manifest, in cache/OPERATOR.
    let m = parse(&manifest(
        "cache.enabled = false\ncache.ttl = \"1h\"",
        "cache.storage = \"rocksdb\"",
    ))
    .unwrap();
    assert!(m.operators[0].cache.is_none());
    assert_eq!(
        m.operators[1].cache.clone().unwrap().options.storage,
        Storage::RocksDb {
            path: PathBuf::from("/pipelines/demo/cache/b")
        }
    );
}

#[test]
fn misplaced_and_bad_cache_keys_are_refused_where_they_stand() {
    let (line, field, message) = refused("cache.ttl = \"1h\"\ncache.key = \"text\"", "");
    assert_eq!((line, field.as_str()), (6, "operator[0].cache.key"));
    assert!(message.contains("JSON pointers"), "{message}");
    let (line, field, message) = refused("cache.path = \"x\"", "");
    assert_eq!((line, field.as_str()), (5, "operator[0].cache.path"));
    assert!(message.contains("rocksdb"), "{message}");
    let (_, field, message) = refused("request_cache.key = [\"/a\"]", "");
    assert_eq!(field, "operator[0].request_cache.key");
    assert!(message.contains("applies only to cache"), "{message}");
    let (_, field, _) = refused("cache.ignore_headers = [\"x\"]", "");
    assert_eq!(field, "operator[0].cache.ignore_headers");
    let (_, field, _) = refused("cache.storage = \"rocksdb\"\ncache.eviction = \"lru\"", "");
    assert_eq!(field, "operator[0].cache.eviction");
    let (_, field, _) = refused("cache.ttl = \"0s\"", "");
    assert_eq!(field, "operator[0].cache.ttl");
    // Two caches, one directory.
    let (_, field, message) = refused(
        "cache.storage = \"rocksdb\"\ncache.path = \"c\"",
        "request_cache.storage = \"rocksdb\"\nrequest_cache.path = \"c\"",
    );
    assert_eq!(field, "operator[1].request_cache.path");
    assert!(
        message.contains("also the directory of operator[0].cache.path"),
        "{message}"
    );
}

#[test]
fn a_request_cache_in_redis_reads_its_url_prefix_and_ttls() {
    let m = parse(&manifest(
        "request_cache.storage = \"redis\"\nrequest_cache.redis_url = \"redis://:pw@10.0.0.7:6380/2\"\nrequest_cache.ttl = \"2h\"\nrequest_cache.negative_ttl = \"1m\"",
        "request_cache.storage = \"redis\"\nrequest_cache.redis_url = \"redis://127.0.0.1:6379\"\nrequest_cache.redis_prefix = \"team-a:\"",
    ))
    .unwrap();
    let a = m.operators[0].request_cache.clone().expect("on").options;
    assert_eq!(
        a.storage,
        Storage::Redis {
            url: "redis://:pw@10.0.0.7:6380/2".into(),
            prefix: "waio:request-cache:".into()
        }
    );
    assert_eq!(
        (a.ttl, a.negative_ttl),
        (Duration::from_secs(7200), Duration::from_secs(60))
    );
    // As `waio check` shows it: where, without the password.
    let shown = a.to_string();
    assert!(
        shown.starts_with("redis at 10.0.0.7:6380 (prefix \"waio:request-cache:\")"),
        "{shown}"
    );
    assert!(shown.contains("answers for 2h, failures for 1m"), "{shown}");
    assert!(!shown.contains("pw"), "{shown}");
    let b = m.operators[1].request_cache.clone().expect("on").options;
    assert_eq!(
        b.storage,
        Storage::Redis {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "team-a:".into()
        }
    );
}

#[test]
fn redis_storage_is_refused_for_the_result_cache_and_with_keys_it_has_no_use_for() {
    let redis =
        "request_cache.storage = \"redis\"\nrequest_cache.redis_url = \"redis://127.0.0.1:6379\"";
    let (line, field, message) = refused(
        "cache.storage = \"redis\"\ncache.redis_url = \"redis://127.0.0.1:6379\"",
        "",
    );
    assert_eq!((line, field.as_str()), (5, "operator[0].cache.storage"));
    assert!(
        message.contains("\"redis\" is only for request_cache")
            && message.contains("synchronously"),
        "{message}"
    );
    for (key, value) in [
        ("path", "\"c\""),
        ("max_entries", "10"),
        ("max_bytes", "\"1MB\""),
        ("eviction", "\"lru\""),
    ] {
        let (line, field, message) =
            refused(&format!("{redis}\nrequest_cache.{key} = {value}"), "");
        assert_eq!(line, 7, "{key}");
        assert_eq!(field, format!("operator[0].request_cache.{key}"));
        assert!(
            message.contains("does not apply to storage = \"redis\""),
            "{message}"
        );
    }
    let (line, field, message) = refused("request_cache.storage = \"redis\"", "");
    assert_eq!(
        (line, field.as_str()),
        (5, "operator[0].request_cache.redis_url")
    );
    assert!(message.contains("missing"), "{message}");
    // The same check as rate_limit.redis_url.
    let (line, field, message) = refused(
        "request_cache.storage = \"redis\"\nrequest_cache.redis_url = \"http://127.0.0.1:6379\"",
        "",
    );
    assert_eq!(
        (line, field.as_str()),
        (6, "operator[0].request_cache.redis_url")
    );
    assert!(message.contains("not a redis:// URL"), "{message}");
    let (_, field, _) = refused(
        &format!("{redis}\nrequest_cache.redis_prefix = \"a b\""),
        "",
    );
    assert_eq!(field, "operator[0].request_cache.redis_prefix");
    // Redis keys without Redis storage.
    let (_, field, message) = refused("request_cache.redis_url = \"redis://127.0.0.1:6379\"", "");
    assert_eq!(field, "operator[0].request_cache.redis_url");
    assert!(
        message.contains("applies only to storage = \"redis\""),
        "{message}"
    );
    let (_, field, _) = refused("cache.redis_prefix = \"x:\"", "");
    assert_eq!(field, "operator[0].cache.redis_prefix");
}
