//! FLINK-SEMANTICS 19-26: Flink's `AsyncRetryStrategy` for records, on the operator's core with
//! the fake function and the fake clock of `tests`. Each test names the item it checks.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::manifest::{AsyncRetryConfig, RetryOnFailure, RetryStrategy};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Retries of the fixed-delay strategy every `delay_ms`, on retriable failures and (when
/// `on_empty`) empty results, with a 10 s timeout.
fn fixed(delay_ms: u64, max_attempts: u32, on_empty: bool) -> OperatorConfig {
    OperatorConfig {
        timeout: Some(Duration::from_secs(10)),
        async_retry: AsyncRetryConfig {
            strategy: RetryStrategy::FixedDelay {
                delay: ms(delay_ms),
            },
            max_attempts,
            on_empty_result: on_empty,
            on_failure: RetryOnFailure::Retriable,
        },
        ..config()
    }
}

fn dead_letters(config: OperatorConfig) -> OperatorConfig {
    OperatorConfig {
        on_failure: Policy::DeadLetter,
        on_timeout: Policy::DeadLetter,
        ..config
    }
}

/// The number in `flaky2-x`-like payloads: how many times the record misbehaves first.
fn times(payload: &str, prefix: &str) -> u32 {
    payload[prefix.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// The retry tests' script; it counts each payload's invocations itself. `flakyN-x` fails
/// retriably its first N invocations, then completes with its payload; `emptyN-x` completes
/// with nothing its first N; `always-x` fails retriably every time, saying which invocation
/// failed; `fatal-x` fails fatally; `double-x` fails twice and completes empty in one call the
/// first time, then completes; `sendfail-x` sends a request and fails retriably when it is
/// answered. Anything else is `by_payload`.
fn retry_script() -> impl FnMut(Kind, &str) -> Vec<Act> {
    let mut invocations: HashMap<String, u32> = HashMap::new();
    move |kind, payload| {
        let retriable = FailureKind::Retriable;
        if kind == Kind::Response && payload.starts_with("sendfail") {
            return vec![Act::Fail(retriable, "the server answered 503")];
        }
        if kind != Kind::Invoke {
            return by_payload(kind, payload);
        }
        let n = invocations.entry(payload.to_string()).or_default();
        *n += 1;
        let n = *n;
        let p = payload.to_string();
        match payload {
            _ if p.starts_with("flaky") && n <= times(&p, "flaky") => {
                vec![Act::Fail(retriable, "not yet")]
            }
            _ if p.starts_with("flaky") => vec![Act::Complete(vec![p])],
            _ if p.starts_with("empty") && n <= times(&p, "empty") => vec![Act::Complete(vec![])],
            _ if p.starts_with("empty") => vec![Act::Complete(vec![format!("{p}-found")])],
            _ if p.starts_with("always") => {
                let message: &'static str = Box::leak(format!("invocation {n} failed").into());
                vec![Act::Fail(retriable, message)]
            }
            _ if p.starts_with("fatal") => vec![Act::Fail(FailureKind::Fatal, "bad input")],
            _ if p.starts_with("double") && n == 1 => vec![
                Act::Fail(retriable, "first"),
                Act::Fail(retriable, "second"),
                Act::Complete(vec![]),
            ],
            _ if p.starts_with("double") => vec![Act::Complete(vec![p])],
            _ if p.starts_with("sendfail") => vec![Act::Send],
            _ => by_payload(kind, payload),
        }
    }
}

fn harness(config: OperatorConfig) -> Harness {
    Harness::new(config, FakeFunction::new(1, retry_script()))
}

/// How often `async-invoke` was called for `payload`, and the attempt numbers it was given.
fn attempts_of(h: &Harness, payload: &str) -> Vec<u32> {
    h.function()
        .log
        .iter()
        .filter(|l| l.kind == Kind::Invoke && l.payload == payload)
        .map(|l| l.attempt)
        .collect()
}

/// The dead letters in the output so far, parsed (other elements are dropped).
fn letters(h: &mut Harness) -> Vec<serde_json::Value> {
    h.out
        .drain(..)
        .filter_map(|e| match e {
            Element::DeadLetter(l) => serde_json::from_slice(&l).ok(),
            _ => None,
        })
        .collect()
}

#[test]
fn item19_without_a_strategy_a_retriable_failure_is_final() {
    let mut h = harness(dead_letters(config()));
    h.record("flaky1-a").unwrap();
    h.advance(60_000).unwrap();
    assert_eq!(attempts_of(&h, "flaky1-a"), [0]);
    assert_eq!(h.output(), ["dead(failure):1"]);
}

#[test]
fn item19_only_results_a_predicate_matches_are_retried() {
    // The default exception predicate retries retriable failures only; the result predicate
    // is off unless asked for.
    let mut h = harness(dead_letters(fixed(10, 3, false)));
    h.record("fatal-a").unwrap();
    h.record("empty1-b").unwrap();
    h.record("flaky1-c").unwrap();
    h.advance(10).unwrap();
    assert_eq!(attempts_of(&h, "fatal-a"), [0]);
    assert_eq!(attempts_of(&h, "empty1-b"), [0]);
    assert_eq!(attempts_of(&h, "flaky1-c"), [0, 1]);
    assert_eq!(h.output(), ["dead(failure):1", "flaky1-c"]);

    let mut h = harness(OperatorConfig {
        async_retry: AsyncRetryConfig {
            on_failure: RetryOnFailure::Any,
            ..fixed(10, 1, false).async_retry
        },
        ..dead_letters(fixed(10, 1, false))
    });
    h.record("fatal-a").unwrap();
    h.advance(10).unwrap();
    assert_eq!(attempts_of(&h, "fatal-a"), [0, 1], "any failure is retried");
}

#[test]
fn item20_a_failed_attempt_is_invoked_again_after_the_backoff_while_attempts_remain() {
    let mut h = harness(dead_letters(fixed(50, 2, false)));
    h.record("flaky2-a").unwrap();
    h.record("flaky3-b").unwrap();
    h.advance(49).unwrap();
    assert_eq!(attempts_of(&h, "flaky2-a"), [0], "not before the backoff");
    h.advance(1).unwrap();
    assert_eq!(attempts_of(&h, "flaky2-a"), [0, 1]);
    h.advance(50).unwrap();
    assert_eq!(attempts_of(&h, "flaky2-a"), [0, 1, 2]);
    // max_attempts = 2 retries: three invocations, then the failure is final.
    assert_eq!(attempts_of(&h, "flaky3-b"), [0, 1, 2]);
    h.advance(1000).unwrap();
    assert_eq!(attempts_of(&h, "flaky3-b"), [0, 1, 2]);
    let out = h.output();
    assert_eq!(out, ["flaky2-a", "dead(failure):2"]);
}

#[test]
fn item20_no_retry_once_the_timeout_has_passed() {
    // The timeout fired and the plugin's `timeout` failed the record: that is final.
    let mut h = Harness::new(
        dead_letters(OperatorConfig {
            timeout: Some(ms(100)),
            ..fixed(10, 5, false)
        }),
        FakeFunction::new(1, |kind, payload| match kind {
            Kind::Invoke => vec![Act::Send],
            Kind::Timeout => vec![Act::Fail(FailureKind::Retriable, "timed out")],
            Kind::Response => by_payload(kind, payload),
        }),
    );
    h.record("slow-a").unwrap();
    h.advance(100).unwrap();
    h.advance(1000).unwrap();
    assert_eq!(attempts_of(&h, "slow-a"), [0]);
    assert_eq!(h.output(), ["dead(timeout):1"]);
}

#[test]
fn item21_fixed_delay_waits_a_constant_gap() {
    let mut h = harness(dead_letters(fixed(30, 3, false)));
    h.record("always-a").unwrap();
    for (step, expected) in [(29, 1), (1, 2), (29, 2), (1, 3), (30, 4), (30, 4)] {
        h.advance(step).unwrap();
        assert_eq!(attempts_of(&h, "always-a").len(), expected);
    }
}

#[test]
fn item21_exponential_backoff_grows_and_is_capped_per_record() {
    let config = OperatorConfig {
        async_retry: AsyncRetryConfig {
            strategy: RetryStrategy::Exponential {
                initial_delay: ms(100),
                max_delay: ms(300),
                multiplier: 2.0,
            },
            ..fixed(0, 4, false).async_retry
        },
        ..dead_letters(fixed(0, 4, false))
    };
    let mut h = harness(config);
    // a: invoked at 0, then after 100, 200, 300 (capped from 400) and 300 ms.
    h.record("always-a").unwrap();
    h.advance(100).unwrap();
    // b enters at 100, when a's delays have grown: its own start again from 100 ms, as each
    // delay is computed from the record's retry number (FLINK-33698).
    h.record("always-b").unwrap();
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut now = 100;
    for _ in 0..900 {
        now += 1;
        let (na, nb) = (
            attempts_of(&h, "always-a").len(),
            attempts_of(&h, "always-b").len(),
        );
        h.advance(1).unwrap();
        if attempts_of(&h, "always-a").len() > na {
            a.push(now);
        }
        if attempts_of(&h, "always-b").len() > nb {
            b.push(now);
        }
    }
    assert_eq!(a, [300, 600, 900]);
    assert_eq!(b, [200, 400, 700, 1000]);
}

#[test]
fn item22_every_attempt_empty_yields_no_output() {
    let mut h = harness(fixed(10, 2, true));
    h.record("empty9-a").unwrap();
    h.record("empty1-b").unwrap();
    h.advance(10).unwrap();
    h.advance(10).unwrap();
    assert_eq!(attempts_of(&h, "empty9-a"), [0, 1, 2]);
    assert_eq!(attempts_of(&h, "empty1-b"), [0, 1]);
    assert_eq!(h.output(), ["empty1-b-found"], "a found nothing: no output");
    assert!(h.core.is_empty());
}

#[test]
fn item22_when_retries_run_out_the_last_error_is_final() {
    let mut h = harness(fixed(10, 2, false));
    h.record("always-a").unwrap();
    h.advance(10).unwrap();
    let error = h.advance(10).unwrap_err().to_string();
    assert!(
        error.contains("input.jsonl:1 failed: invocation 3 failed (retriable, after 3 attempts)"),
        "{error}"
    );
}

#[test]
fn item23_a_successful_retry_keeps_its_position_and_timestamp() {
    for ordered in [true, false] {
        let mut h = harness(OperatorConfig {
            ordered,
            ..fixed(20, 3, false)
        });
        h.record("flaky1-a").unwrap();
        h.watermark(500).unwrap();
        h.record("now-b").unwrap();
        assert!(
            h.out.is_empty(),
            "b waits behind a's retry and the watermark"
        );
        h.advance(20).unwrap();
        let out: Vec<(String, Option<i64>)> = h
            .out
            .drain(..)
            .map(|e| match e {
                Element::Record(r) => (String::from_utf8_lossy(&r.payload).into(), r.timestamp),
                Element::Watermark(ts) => (format!("W{ts}"), None),
                Element::DeadLetter(_) => ("dead".into(), None),
            })
            .collect();
        assert_eq!(
            out,
            [
                ("flaky1-a".into(), Some(1001)),
                ("W500".into(), None),
                ("now-b".into(), Some(1002))
            ],
            "ordered = {ordered}"
        );
    }
}

#[test]
fn item24_the_timeout_cancels_a_pending_retry_and_timeout_decides() {
    // Retries every 80 ms, the timeout at 100 ms: the retry due at 160 never happens.
    let config = OperatorConfig {
        timeout: Some(ms(100)),
        ..dead_letters(fixed(80, 5, false))
    };
    let mut h = harness(config.clone());
    h.record("always-a").unwrap();
    h.advance(80).unwrap();
    assert_eq!(attempts_of(&h, "always-a"), [0, 1]);
    h.advance(20).unwrap();
    assert_eq!(h.function().calls_of(Kind::Timeout), ["always-a"]);
    h.advance(1000).unwrap();
    assert_eq!(attempts_of(&h, "always-a"), [0, 1]);
    assert_eq!(h.output(), ["dead(timeout):1"]);

    // A `timeout` that completes with a fallback value decides the record.
    let mut h = Harness::new(
        config,
        FakeFunction::new(1, |kind, _| match kind {
            Kind::Invoke => vec![Act::Fail(FailureKind::Retriable, "down")],
            _ => vec![Act::Complete(vec!["fallback".into()])],
        }),
    );
    h.record("a").unwrap();
    h.advance(90).unwrap();
    h.advance(10).unwrap();
    h.advance(1000).unwrap();
    assert_eq!(attempts_of(&h, "a"), [0, 1]);
    assert_eq!(h.output(), ["fallback"]);
}

#[test]
fn item25_several_completions_of_one_attempt_schedule_one_retry() {
    let mut h = harness(fixed(10, 5, true));
    h.record("double-a").unwrap();
    h.advance(10).unwrap();
    h.advance(100).unwrap();
    assert_eq!(attempts_of(&h, "double-a"), [0, 1]);
    assert_eq!(h.output(), ["double-a"]);
}

#[test]
fn item25_a_late_completion_of_an_attempt_waiting_for_its_retry_is_ignored() {
    // The attempt sent a request and failed; the request's answer then completes the same
    // attempt, which already has its retry scheduled.
    let mut invocations = 0;
    let mut h = Harness::new(
        fixed(50, 1, false),
        FakeFunction::new(1, move |kind, payload| match kind {
            Kind::Invoke => {
                invocations += 1;
                match invocations {
                    1 => vec![Act::Send, Act::Fail(FailureKind::Retriable, "first")],
                    _ => vec![Act::Send],
                }
            }
            _ => by_payload(kind, payload),
        }),
    );
    h.record("a").unwrap();
    h.answer("a").unwrap();
    assert!(h.output().is_empty(), "the answer's completion is ignored");
    h.advance(50).unwrap();
    assert_eq!(attempts_of(&h, "a"), [0, 1]);
    h.answer("a").unwrap();
    assert_eq!(h.output(), ["a"], "the retry's answer completes it");
}

#[test]
fn item25_watermarks_are_never_retried_and_wait_for_the_retried_record() {
    let mut h = harness(fixed(10, 1, true));
    h.watermark(1).unwrap();
    h.record("empty1-a").unwrap();
    h.watermark(2).unwrap();
    assert_eq!(h.output(), ["W1"]);
    h.advance(10).unwrap();
    assert_eq!(h.output(), ["empty1-a-found", "W2"]);
    h.advance(100).unwrap();
    assert!(h.output().is_empty());
    assert_eq!(h.function().log.len(), 2, "only a's two invocations");
}

#[test]
fn item26_at_end_of_input_pending_retries_fire_at_once_and_later_results_are_final() {
    let mut h = harness(dead_letters(fixed(1000, 5, false)));
    h.record("always-a").unwrap();
    h.record("sendfail-b").unwrap();
    h.advance(10).unwrap();
    assert_eq!(attempts_of(&h, "always-a"), [0]);
    h.core.input_ended(h.now).unwrap();
    h.turn().unwrap();
    assert_eq!(attempts_of(&h, "always-a"), [0, 1], "fired at once");
    // b's first attempt ends after the end of input: final, no retry.
    h.answer("sendfail-b").unwrap();
    h.advance(10_000).unwrap();
    assert_eq!(attempts_of(&h, "always-a"), [0, 1]);
    assert_eq!(attempts_of(&h, "sendfail-b"), [0]);
    assert_eq!(h.output(), ["dead(failure):1", "dead(failure):2"]);
    // Calling it again changes nothing.
    h.core.input_ended(h.now).unwrap();
    assert!(h.core.is_empty());
}

#[test]
fn a_record_waiting_for_its_retry_is_not_reinvoked_when_its_instance_traps() {
    let mut h = harness(dead_letters(fixed(50, 2, false)));
    h.record("flaky1-a").unwrap();
    h.record("trap-b").unwrap();
    assert_eq!(h.function().replaced, [0]);
    assert_eq!(attempts_of(&h, "flaky1-a"), [0], "its retry is not due yet");
    h.advance(50).unwrap();
    assert_eq!(attempts_of(&h, "flaky1-a"), [0, 1]);
    assert_eq!(h.output(), ["flaky1-a", "dead(failure):2"]);
}

#[test]
fn a_dead_letter_after_retries_carries_attempts_times_kind_and_http_status() {
    let mut h = harness(dead_letters(fixed(10, 1, false)));
    let before = SystemTime::now();
    h.record("sendfail-a").unwrap();
    let status_503 = |status| {
        Ok(HttpResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        })
    };
    h.answer_with("sendfail-a", status_503(503)).unwrap();
    h.advance(10).unwrap();
    h.answer_with("sendfail-a", status_503(503)).unwrap();
    let letters = letters(&mut h);
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter["stage"], "enrich");
    assert_eq!(letter["reason"], "failure");
    assert_eq!(letter["error"], "the server answered 503");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["error_kind"], "retriable");
    assert_eq!(letter["retriable"], true);
    assert_eq!(letter["http_status"], 503);
    assert_eq!(letter["line"], 1);
    let time = |field: &str| -> jiff::Timestamp {
        let text = letter[field].as_str().unwrap_or_default();
        assert!(text.ends_with('Z') && text.len() == 24, "{field}: {text}");
        text.parse().unwrap()
    };
    let (first, last) = (time("first_attempt_at"), time("last_attempt_at"));
    let before = jiff::Timestamp::try_from(before).unwrap();
    assert!(first >= before - jiff::SignedDuration::from_millis(1));
    assert!(first <= last);
}

#[test]
fn a_dead_letter_without_an_answer_has_no_http_status() {
    let mut h = harness(dead_letters(config()));
    h.record("sendfail-a").unwrap();
    h.answer_with("sendfail-a", Err(HttpError::Timeout))
        .unwrap();
    let letters = letters(&mut h);
    assert_eq!(letters[0]["attempts"], 1);
    assert!(letters[0].get("http_status").is_none(), "{}", letters[0]);
}

#[test]
fn a_completion_of_an_earlier_attempt_is_stale() {
    // Attempt 0 sends a request and fails; attempt 1 sends one too. The answer to attempt 0's
    // request arrives during attempt 1: its completion is ignored, attempt 1's counts.
    let (mut invocations, mut responses) = (0, 0);
    let mut h = Harness::new(
        fixed(50, 3, false),
        FakeFunction::new(1, move |kind, _| match kind {
            Kind::Invoke => {
                invocations += 1;
                match invocations {
                    1 => vec![Act::Send, Act::Fail(FailureKind::Retriable, "first")],
                    _ => vec![Act::Send],
                }
            }
            Kind::Response => {
                responses += 1;
                let attempt = responses - 1;
                vec![Act::CompleteAttempt(
                    attempt,
                    vec![format!("attempt-{attempt}")],
                )]
            }
            Kind::Timeout => vec![],
        }),
    );
    h.record("a").unwrap();
    h.advance(50).unwrap();
    assert_eq!(attempts_of(&h, "a"), [0, 1]);
    h.answer("a").unwrap();
    assert!(h.output().is_empty(), "attempt 0's late result is stale");
    h.answer("a").unwrap();
    assert_eq!(h.output(), ["attempt-1"]);
}
