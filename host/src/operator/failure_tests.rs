use super::*;

#[test]
fn the_timeout_starts_when_the_record_enters_and_fires_at_its_deadline() {
    let mut h = Harness::new(
        timeout_config(100),
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Timeout => vec![Act::Complete(vec![format!("{p}-timeout")])],
            _ => vec![],
        }),
    );
    h.record("a").unwrap();
    h.advance(40).unwrap();
    h.record("b").unwrap();
    assert_eq!(h.core.next_timer(), Some(h.now + Duration::from_millis(60)));
    h.advance(59).unwrap();
    assert!(h.function().calls_of(Kind::Timeout).is_empty());
    h.advance(1).unwrap();
    assert_eq!(h.function().calls_of(Kind::Timeout), ["a"]);
    h.advance(40).unwrap();
    assert_eq!(h.function().calls_of(Kind::Timeout), ["a", "b"]);
    assert_eq!(h.output(), ["a-timeout", "b-timeout"]);
}

// FLINK-SEMANTICS 13
#[test]
fn a_timeout_the_handler_leaves_open_fails_the_job_naming_the_record() {
    let mut h = Harness::with(timeout_config(100));
    h.record("now").unwrap();
    h.record("open").unwrap();
    let error = h.advance(100).unwrap_err();
    assert!(matches!(error, OperatorError::TimedOut { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("could not complete the stream element input.jsonl:2: timed out after 100ms"),
        "{text}"
    );
    assert_eq!(h.telemetry.timed_out.get(), 1);
}

// FLINK-SEMANTICS 13 with `on_timeout = "dead-letter"`
#[test]
fn a_timeout_with_the_dead_letter_policy_leaves_as_a_dead_letter_at_its_position() {
    let mut h = Harness::with(OperatorConfig {
        on_timeout: Policy::DeadLetter,
        ..timeout_config(100)
    });
    h.record("open").unwrap();
    h.record("now").unwrap();
    h.advance(100).unwrap();
    assert_eq!(h.output(), ["dead(timeout):1", "now"]);
}

// FLINK-SEMANTICS 14
#[test]
fn values_from_timeout_are_emitted_at_the_records_position_and_the_job_goes_on() {
    let mut h = Harness::new(
        timeout_config(100),
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Timeout => vec![Act::Complete(vec!["fallback".into()])],
            _ => by_payload(kind, p),
        }),
    );
    h.record("open").unwrap();
    h.record("now").unwrap();
    h.advance(100).unwrap();
    h.record("now-after").unwrap();
    assert_eq!(h.output(), ["fallback", "now", "now-after"]);
}

// FLINK-SEMANTICS 15
#[test]
fn a_record_completed_before_its_deadline_never_sees_timeout() {
    let mut h = Harness::with(timeout_config(100));
    h.record("now").unwrap();
    h.record("send").unwrap();
    h.answer("send").unwrap();
    assert_eq!(
        h.core.next_timer(),
        None,
        "completed records' timers are cancelled"
    );
    h.advance(1000).unwrap();
    assert!(h.function().calls_of(Kind::Timeout).is_empty());
    assert_eq!(h.output(), ["now", "send"]);
}

// FLINK-SEMANTICS 16
#[test]
fn without_a_timeout_a_record_waits_as_long_as_it_takes() {
    let mut h = Harness::with(config());
    h.record("send").unwrap();
    assert_eq!(h.core.next_timer(), None);
    h.advance(86_400_000).unwrap();
    assert!(h.function().calls_of(Kind::Timeout).is_empty());
    h.answer("send").unwrap();
    assert_eq!(h.output(), ["send"]);
}

// FLINK-SEMANTICS 17
#[test]
fn complete_exceptionally_fails_the_job_with_its_cause() {
    let mut h = Harness::with(config());
    h.record("now").unwrap();
    let error = h.record("fail").unwrap_err();
    assert_eq!(
        error.to_string(),
        "operator \"enrich\": record input.jsonl:2 failed: the provider said no (fatal)"
    );
}

// FLINK-SEMANTICS 17: a trap inside `async-invoke`
#[test]
fn a_trap_inside_invoke_fails_the_job_with_the_trap() {
    let mut h = Harness::with(config());
    let error = h.record("trap").unwrap_err();
    assert_eq!(
        error.to_string(),
        "operator \"enrich\": record input.jsonl:1 failed: boom (fatal)"
    );
    assert_eq!(
        h.function().replaced,
        [0],
        "the instance that trapped is replaced"
    );
}

// FLINK-SEMANTICS 17 with `on_failure = "dead-letter"`
#[test]
fn a_failure_with_the_dead_letter_policy_becomes_a_dead_letter_and_the_job_goes_on() {
    let mut h = Harness::new(
        OperatorConfig {
            on_failure: Policy::DeadLetter,
            ..config()
        },
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Invoke if p == "retry-me" => {
                vec![Act::Fail(FailureKind::Retriable, "rate limited")]
            }
            _ => by_payload(kind, p),
        }),
    );
    h.record("send").unwrap();
    h.record("fail").unwrap();
    h.record("retry-me").unwrap();
    assert!(
        h.output().is_empty(),
        "the dead letter waits for its position"
    );
    h.answer("send").unwrap();
    assert_eq!(h.output(), ["send", "dead(failure):2", "dead(failure):3"]);
    assert_eq!(h.telemetry.dead_lettered.get(), 2);
}

#[test]
fn a_dead_letter_says_whether_the_failure_was_retriable() {
    let mut h = Harness::new(
        OperatorConfig {
            on_failure: Policy::DeadLetter,
            ..config()
        },
        FakeFunction::new(1, |_, p: &str| {
            let kind = if p == "r" {
                FailureKind::Retriable
            } else {
                FailureKind::Fatal
            };
            vec![Act::Fail(kind, "no")]
        }),
    );
    h.record("r").unwrap();
    h.record("f").unwrap();
    let retriable: Vec<serde_json::Value> = h
        .out
        .drain(..)
        .map(|e| match e {
            Element::DeadLetter(l) => {
                serde_json::from_slice::<serde_json::Value>(&l).unwrap()["retriable"].clone()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(retriable, [true, false]);
}

// FLINK-SEMANTICS 18
#[test]
fn a_failure_behind_unfinished_records_fails_the_job_at_once() {
    let mut h = Harness::with(config());
    h.record("send-1").unwrap();
    h.record("open-2").unwrap();
    assert!(matches!(
        h.record("fail-3"),
        Err(OperatorError::RecordFailed { .. })
    ));
}

// FLINK-SEMANTICS 18: a failure from a later callback, behind an unfinished head
#[test]
fn a_failure_from_a_response_behind_the_head_fails_the_job_at_once() {
    let mut h = Harness::new(
        config(),
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Invoke => vec![Act::Send],
            Kind::Response if p == "bad" => vec![Act::Fail(FailureKind::Fatal, "500")],
            _ => vec![],
        }),
    );
    h.record("head").unwrap();
    h.record("bad").unwrap();
    assert!(matches!(
        h.answer("bad"),
        Err(OperatorError::RecordFailed { .. })
    ));
}

// FLINK-SEMANTICS 27
