//! `rate_limit.*` and `[rate_limits.NAME]` as a user writes them: the issue's example, shared
//! limits, the Redis keys, and the refusals (each naming file, line and key).

use std::path::Path;

use super::rate_limit::{Algorithm, RateLimitOptions};
use super::*;

const FILE: &str = "/pipelines/demo/pipeline.toml";

/// A manifest with `shared` at the top (before `[source]`), `first` in its first operator and
/// `second` in a second one: `first`'s line `n` is line `shared lines + 4 + n`.
fn manifest(shared: &str, first: &str, second: &str) -> String {
    format!(
        "{shared}\n[[operator]]\nname = \"a\"\nplugin = \"p.wasm\"\n{first}\n\n[[operator]]\nname = \"b\"\nplugin = \"p.wasm\"\n{second}\n\n[source]\nkind = \"stdin\"\n\n[sink]\nkind = \"stdout\"\n"
    )
}

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    parse_with_env(text, Path::new(FILE), &|_| {
        Err(std::env::VarError::NotPresent)
    })
}

/// The first operator's limit, with `extra` in it and nothing shared.
fn limit_of(extra: &str) -> Option<RateLimitConfig> {
    parse(&manifest("", extra, "")).unwrap().operators[0]
        .rate_limit
        .clone()
}

/// (line, field, message) of the error the manifest makes.
fn refused(text: &str) -> (usize, String, String) {
    match parse(text) {
        Err(ManifestError::Invalid { at, field, message }) => {
            assert_eq!(at.file, Path::new(FILE));
            (at.line, field, message)
        }
        Err(ManifestError::Syntax { at, message }) => {
            assert_eq!(at.file, Path::new(FILE));
            (at.line, String::new(), message)
        }
        other => panic!("expected an error for {text}, got {other:?}"),
    }
}

/// The error `extra` in the first operator makes (its line `n` is line 4 + n).
fn refused_in_operator(extra: &str) -> (usize, String, String) {
    refused(&manifest("", extra, ""))
}

fn options(rps: Option<f64>, tpm: Option<u64>) -> RateLimitOptions {
    RateLimitOptions {
        requests_per_second: rps,
        tokens_per_minute: tpm,
        ..RateLimitOptions::default()
    }
}

#[test]
fn without_the_keys_there_is_no_limit() {
    assert_eq!(limit_of(""), None);
    assert!(parse(&manifest("", "", "")).unwrap().rate_limits.is_empty());
}

#[test]
fn the_issue_example_reads_as_written() {
    let limit = limit_of(
        "rate_limit.requests_per_second = 50\n\
         rate_limit.tokens_per_minute = 100000\n\
         rate_limit.algorithm = \"token_bucket\"\n\
         rate_limit.burst = 10",
    )
    .unwrap();
    assert_eq!(
        limit,
        RateLimitConfig {
            name: None,
            options: RateLimitOptions {
                burst: Some(10),
                ..options(Some(50.0), Some(100_000))
            },
            backend: RateLimitBackend::Local,
            adaptive: true,
        }
    );
    assert_eq!(
        limit.to_string(),
        "50 requests/s (burst 10), 100000 tokens/min, token_bucket, in this process, adaptive"
    );
}

#[test]
fn a_table_reads_the_same_and_rates_may_be_fractions() {
    let limit = limit_of(
        "[operator.rate_limit]\nrequests_per_second = 0.5\nalgorithm = \"sliding_window\"\nadaptive = false",
    )
    .unwrap();
    assert_eq!(
        limit.options,
        RateLimitOptions {
            algorithm: Algorithm::SlidingWindow,
            ..options(Some(0.5), None)
        }
    );
    assert!(!limit.adaptive);
    // `adaptive` alone is allowed: no limit, the adaptation switched off.
    let alone = limit_of("rate_limit.adaptive = false").unwrap();
    assert!(!alone.limits());
    assert!(!alone.adaptive);
}

#[test]
fn operators_share_a_named_limit() {
    let text = manifest(
        "[rate_limits.openai]\nrequests_per_second = 20\ntokens_per_minute = 6000\n",
        "rate_limit.use = \"openai\"",
        "rate_limit.use = \"openai\"\nrate_limit.adaptive = false",
    );
    let m = parse(&text).unwrap();
    let (a, b) = (
        m.operators[0].rate_limit.clone().unwrap(),
        m.operators[1].rate_limit.clone().unwrap(),
    );
    assert_eq!(a.name.as_deref(), Some("openai"));
    assert_eq!(a.options, options(Some(20.0), Some(6000)));
    assert_eq!(b.options, a.options);
    assert!(a.adaptive && !b.adaptive);
    assert_eq!(m.rate_limits["openai"].options, a.options);
    assert!(a
        .to_string()
        .starts_with("shared limit \"openai\": 20 requests/s"));
}

#[test]
fn the_redis_keys_are_read_for_the_redis_backend() {
    let limit = limit_of(
        "rate_limit.requests_per_second = 200\nrate_limit.backend = \"redis\"\nrate_limit.redis_url = \"redis://127.0.0.1:6379/0\"\nrate_limit.instances = 4",
    )
    .unwrap();
    assert_eq!(
        limit.backend,
        RateLimitBackend::Redis {
            url: "redis://127.0.0.1:6379/0".into(),
            fallback_share: 0.25
        }
    );
    assert!(limit
        .to_string()
        .contains("redis at 127.0.0.1:6379 (fallback share 0.25)"));
    let limit = limit_of(
        "rate_limit.tokens_per_minute = 1000\nrate_limit.backend = \"redis\"\nrate_limit.redis_url = \"redis://cache\"\nrate_limit.fallback_share = 0.5",
    )
    .unwrap();
    assert!(
        matches!(limit.backend, RateLimitBackend::Redis { fallback_share, .. } if fallback_share == 0.5)
    );
    // Without instances nor a share, the whole limit.
    let limit = limit_of(
        "rate_limit.tokens_per_minute = 1000\nrate_limit.backend = \"redis\"\nrate_limit.redis_url = \"redis://cache\"",
    )
    .unwrap();
    assert!(
        matches!(limit.backend, RateLimitBackend::Redis { fallback_share, .. } if fallback_share == 1.0)
    );
}

#[test]
fn bad_values_are_refused_where_they_stand() {
    let cases = [
        ("rate_limit.requests_per_second = -5", 1, "requests_per_second", "must be more than 0 requests per second, got -5"),
        ("rate_limit.requests_per_second = 0", 1, "requests_per_second", "must be more than 0"),
        ("rate_limit.requests_per_second = \"50 per sec\"", 1, "requests_per_second", "must be a number of requests per second such as 50 (no unit, no quotes), got \"50 per sec\""),
        ("rate_limit.tokens_per_minute = 0", 1, "tokens_per_minute", "must be at least 1, got 0"),
        ("rate_limit.tokens_per_minute = 1.5", 1, "tokens_per_minute", "must be a whole number of tokens per minute"),
        ("rate_limit.requests_per_second = 5\nrate_limit.algorithm = \"leaky\"", 2, "algorithm", "unknown value \"leaky\"; expected one of \"token_bucket\", \"sliding_window\""),
        ("rate_limit.requests_per_second = 5\nrate_limit.burst = 0", 2, "burst", "must be between 1 and"),
        ("rate_limit.requests_per_second = 5\nrate_limit.algorithm = \"sliding_window\"\nrate_limit.burst = 3", 3, "burst", "applies only to algorithm = \"token_bucket\""),
        ("rate_limit.tokens_per_minute = 5\nrate_limit.burst = 3", 2, "burst", "set rate_limit.requests_per_second too"),
        ("rate_limit.requests_per_second = 5\nrate_limit.backend = \"redis\"", 2, "redis_url", "missing; backend = \"redis\" needs"),
        ("rate_limit.requests_per_second = 5\nrate_limit.backend = \"memcached\"", 2, "backend", "unknown value \"memcached\""),
        ("rate_limit.requests_per_second = 5\nrate_limit.backend = \"redis\"\nrate_limit.redis_url = \"http://cache:6379\"", 3, "redis_url", "is not a redis:// URL"),
        ("rate_limit.requests_per_second = 5\nrate_limit.redis_url = \"redis://cache\"", 2, "redis_url", "applies only to backend = \"redis\""),
        ("rate_limit.requests_per_second = 5\nrate_limit.backend = \"redis\"\nrate_limit.redis_url = \"redis://c\"\nrate_limit.fallback_share = 1.5", 4, "fallback_share", "more than 0 and at most 1"),
        ("rate_limit.requests_per_second = 5\nrate_limit.backend = \"redis\"\nrate_limit.redis_url = \"redis://c\"\nrate_limit.instances = 0", 4, "instances", "must be between 1 and"),
        ("rate_limit.algorithm = \"sliding_window\"", 1, "algorithm", "has no effect without rate_limit.requests_per_second or rate_limit.tokens_per_minute"),
        ("rate_limit.use = \"nope\"", 1, "use", "unknown rate limit \"nope\"; no [rate_limits] are defined"),
    ];
    for (extra, n, key, expected) in cases {
        let (line, field, message) = refused_in_operator(extra);
        assert_eq!(
            (line, field.as_str()),
            (4 + n, format!("operator[0].rate_limit.{key}").as_str()),
            "{extra}: {message}"
        );
        assert!(message.contains(expected), "{extra}: {message}");
    }
}

#[test]
fn an_unknown_key_is_named_at_its_line() {
    let (line, _, message) = refused_in_operator(
        "rate_limit.requests_per_second = 5\nrate_limit.requests_per_minute = 5",
    );
    assert!(
        message.contains("unknown field `requests_per_minute`"),
        "{message}"
    );
    assert!(message.contains("rate_limit"), "{message}");
    assert!(line >= 5, "{line}");
}

#[test]
fn a_shared_limit_is_used_as_it_is() {
    let shared = "[rate_limits.openai]\nrequests_per_second = 20\n";
    // Line 1 is its header; the operator's first line is line 3 + 4.
    let (line, field, message) = refused(&manifest(
        shared,
        "rate_limit.use = \"openai\"\nrate_limit.requests_per_second = 5",
        "",
    ));
    assert_eq!(
        (line, field.as_str()),
        (8, "operator[0].rate_limit.requests_per_second")
    );
    assert_eq!(
        message,
        "cannot be set with rate_limit.use: the limit is [rate_limits.openai] (line 1); set it there"
    );
    let (line, field, message) = refused(&manifest(shared, "rate_limit.use = \"anthropic\"", ""));
    assert_eq!((line, field.as_str()), (7, "operator[0].rate_limit.use"));
    assert_eq!(
        message,
        "unknown rate limit \"anthropic\"; defined limits: \"openai\""
    );
}

#[test]
fn a_shared_limit_must_limit_something_and_cannot_use_another() {
    let (line, field, message) = refused(&manifest(
        "[rate_limits.x]\nalgorithm = \"sliding_window\"\n",
        "",
        "",
    ));
    assert_eq!((line, field.as_str()), (2, "rate_limits.x"));
    assert!(message.contains("limits nothing"), "{message}");
    let (line, field, _) = refused(&manifest(
        "[rate_limits.x]\nrequests_per_second = 1\n\n[rate_limits.y]\nuse = \"x\"\n",
        "",
        "",
    ));
    assert_eq!(
        (line, field.as_str()),
        (5, "rate_limits.x.use".replace('x', "y").as_str())
    );
    let (line, field, message) = refused(&manifest(
        "[rate_limits.x]\nrequests_per_second = \"fast\"\n",
        "",
        "",
    ));
    assert_eq!(
        (line, field.as_str()),
        (2, "rate_limits.x.requests_per_second")
    );
    assert!(message.contains("got \"fast\""), "{message}");
}

#[test]
fn the_queue_time_is_the_capacity_at_the_request_rate() {
    let limit = limit_of("rate_limit.requests_per_second = 4").unwrap();
    assert_eq!(
        limit.queue_time(100),
        Some(std::time::Duration::from_secs(25))
    );
    let tokens_only = limit_of("rate_limit.tokens_per_minute = 4").unwrap();
    assert_eq!(tokens_only.queue_time(100), None);
}
