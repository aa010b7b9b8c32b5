//! `[operator.async_retry]` as a user writes it: defaults, every key, and the refusals.

use std::path::Path;
use std::time::Duration;

use super::*;

const FILE: &str = "/pipelines/demo/pipeline.toml";

/// A valid manifest whose only operator has the lines `extra` in its table and `retry` as its
/// `[operator.async_retry]` body: without `extra` the body starts on line 7.
fn retry_with(retry: &str, extra: &str) -> Result<AsyncRetryConfig, ManifestError> {
    let text = format!(
        "[source]\nkind = \"stdin\"\n\n[[operator]]\nplugin = \"p.wasm\"\n{extra}[operator.async_retry]\n{retry}\n[sink]\nkind = \"stdout\"\n"
    );
    parse_with_env(&text, Path::new(FILE), &|_| {
        Err(std::env::VarError::NotPresent)
    })
    .map(|m| m.operators[0].async_retry.clone())
}

fn retry_of(retry: &str) -> Result<AsyncRetryConfig, ManifestError> {
    retry_with(retry, "")
}

/// (line, field, message) of an `Invalid` error.
fn invalid(result: Result<AsyncRetryConfig, ManifestError>) -> (usize, String, String) {
    match result {
        Err(ManifestError::Invalid { at, field, message }) => {
            assert_eq!(at.file, Path::new(FILE));
            (at.line, field, message)
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn without_the_section_records_are_not_retried() {
    let text = "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"p.wasm\"\ntimeout = 0\n[sink]\nkind = \"stdout\"\n";
    let m = parse_with_env(text, Path::new(FILE), &|_| {
        Err(std::env::VarError::NotPresent)
    })
    .unwrap();
    let retry = &m.operators[0].async_retry;
    assert!(!retry.is_active());
    assert_eq!(*retry, AsyncRetryConfig::default());
    assert_eq!(retry_of("strategy = \"none\"").unwrap(), *retry);
}

#[test]
fn exponential_takes_every_key_and_fills_defaults() {
    let retry = retry_of(
        "strategy = \"exponential\"\nmax_attempts = 4\ndelay = \"50ms\"\nmax_delay = \"2s\"\nmultiplier = 1.5\non_empty_result = true\non_failure = \"any\"",
    )
    .unwrap();
    assert_eq!(
        retry,
        AsyncRetryConfig {
            strategy: RetryStrategy::Exponential {
                initial_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(2),
                multiplier: 1.5,
            },
            max_attempts: 4,
            on_empty_result: true,
            on_failure: RetryOnFailure::Any,
        }
    );
    // An integer multiplier reads as a number too.
    let retry = retry_of("strategy = \"exponential\"\nmultiplier = 3").unwrap();
    assert_eq!(
        retry,
        AsyncRetryConfig {
            strategy: RetryStrategy::Exponential {
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                multiplier: 3.0,
            },
            max_attempts: 3,
            on_empty_result: false,
            on_failure: RetryOnFailure::Retriable,
        }
    );
    assert!(retry.is_active());
}

#[test]
fn fixed_delay_defaults_and_accepts_zero() {
    let retry = retry_of("strategy = \"fixed_delay\"").unwrap();
    assert_eq!(
        retry.strategy,
        RetryStrategy::FixedDelay {
            delay: Duration::from_millis(100)
        }
    );
    assert_eq!(retry.max_attempts, 3);
    let retry = retry_of(
        "strategy = \"fixed_delay\"\ndelay = 0\non_failure = \"none\"\non_empty_result = true",
    )
    .unwrap();
    assert_eq!(
        retry.strategy,
        RetryStrategy::FixedDelay {
            delay: Duration::ZERO
        }
    );
    assert_eq!(retry.on_failure, RetryOnFailure::None);
}

#[test]
fn bad_values_name_their_line_and_field() {
    let cases = [
        (
            "strategy = \"linear\"",
            7,
            "strategy",
            "unknown value \"linear\"",
        ),
        (
            "strategy = \"fixed_delay\"\nmax_attempts = 0",
            8,
            "max_attempts",
            "at least 1, got 0",
        ),
        (
            "strategy = \"exponential\"\nmultiplier = 1.0",
            8,
            "multiplier",
            "greater than 1",
        ),
        (
            "strategy = \"exponential\"\ndelay = \"0s\"",
            8,
            "delay",
            "greater than 0",
        ),
        (
            "strategy = \"exponential\"\ndelay = \"2s\"\nmax_delay = \"1s\"",
            9,
            "max_delay",
            "must not be below delay (2s)",
        ),
        (
            "strategy = \"exponential\"\ndelay = \"10s\"",
            8,
            "delay",
            "above max_delay (default 5s)",
        ),
        (
            "strategy = \"fixed_delay\"\non_failure = \"sometimes\"",
            8,
            "on_failure",
            "expected one of \"retriable\", \"any\", \"none\"",
        ),
        (
            "strategy = \"fixed_delay\"\nmultiplier = 2.0",
            8,
            "multiplier",
            "applies only to strategy = \"exponential\"",
        ),
        (
            "max_attempts = 2",
            7,
            "max_attempts",
            "applies only to a strategy",
        ),
    ];
    for (retry, line, key, words) in cases {
        let (at, field, message) = invalid(retry_of(retry));
        assert_eq!(
            (at, field.as_str()),
            (line, format!("operator[0].async_retry.{key}").as_str()),
            "{retry}"
        );
        assert!(message.contains(words), "{retry}: {message}");
    }
}

#[test]
fn item19_a_strategy_without_any_predicate_is_refused() {
    let (line, field, message) = invalid(retry_of(
        "strategy = \"fixed_delay\"\non_failure = \"none\"",
    ));
    assert_eq!(
        (line, field.as_str()),
        (8, "operator[0].async_retry.on_failure")
    );
    assert!(message.contains("nothing is ever retried"), "{message}");
}

#[test]
fn item16_retries_need_a_timeout() {
    for timeout in [
        "timeout = 0\n",
        "timeout = \"0s\"\n",
        "request_timeout = -1\n",
    ] {
        let (line, field, message) = invalid(retry_with("strategy = \"exponential\"", timeout));
        assert_eq!(
            (line, field.as_str()),
            (6, "operator[0].timeout"),
            "{timeout}"
        );
        assert!(message.contains("must be greater than 0"), "{message}");
    }
    // Without retries a zero timeout still means none.
    assert!(retry_with("strategy = \"none\"", "timeout = 0\n").is_ok());
}

#[test]
fn unknown_keys_are_syntax_errors_naming_the_table() {
    match retry_of("strategy = \"exponential\"\nbackoff = \"1s\"") {
        Err(ManifestError::Syntax { at, message }) => {
            assert_eq!(at.line, 8);
            assert!(message.starts_with("operator[0].async_retry"), "{message}");
            assert!(message.contains("backoff"), "{message}");
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
}
