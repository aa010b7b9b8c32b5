//! Flink's async-wait semantics, checked on the operator's core with a fake function and a fake
//! clock: no wasm, no network, no sleeps. Each test names the FLINK-SEMANTICS item it checks.
//! (Item 11, a capacity below one, is refused by the manifest: see its test
//! `capacity_below_one_is_rejected_like_flink`.)

use std::time::Duration;

use super::semantics::{CallDone, TokenSettlement};
use super::{OperatorError, MAX_REINVOCATIONS};
use crate::manifest::{OperatorConfig, Policy};
use crate::plugin::bindings::{HttpError, HttpResponse};
use crate::plugin::function::FailureKind;
use crate::record::{Element, Record};
use fake::*;

/// FLINK-SEMANTICS 19-26 (`[operator.async_retry]`), on this file's fake and harness.
#[path = "retry_tests.rs"]
mod retry_tests;

/// The result cache (`cache.*`), on this file's fake and harness.
#[path = "cache_tests.rs"]
mod cache_tests;

/// Hot reload: a new version's slots beside the old ones, on this file's fake and harness.
#[path = "reload_tests.rs"]
mod reload_tests;

/// Timeouts and failures: the handler, the policies, dead letters, failing the job.
#[path = "failure_tests.rs"]
mod failure_tests;

/// Batches across the boundary (`batch.*`), on this file's fake and harness.
#[path = "batch_tests.rs"]
mod batch_tests;

/// Kafka records whose partition a rebalance took away, on this file's harness.
#[path = "lease_tests.rs"]
mod lease_tests;

/// The fake function, the harness and the configs the tests share.
#[path = "fake.rs"]
mod fake;

#[test]
fn ordered_mode_emits_in_input_order_whatever_the_completion_order() {
    let mut h = Harness::with(config());
    for payload in ["send-1", "now-2", "send-3", "now-4"] {
        h.record(payload).unwrap();
    }
    assert!(h.output().is_empty(), "the head is pending: nothing leaves");
    h.answer("send-3").unwrap();
    assert!(h.output().is_empty());
    h.answer("send-1").unwrap();
    assert_eq!(h.output(), ["send-1", "now-2", "send-3", "now-4"]);
}

// FLINK-SEMANTICS 2
#[test]
fn unordered_mode_emits_in_completion_order_but_never_across_a_watermark() {
    let mut h = Harness::with(unordered());
    h.record("send-1").unwrap();
    h.record("send-2").unwrap();
    h.watermark(50).unwrap();
    h.record("now-3").unwrap();
    assert!(
        h.output().is_empty(),
        "R3 waits for the watermark before it"
    );
    h.answer("send-2").unwrap();
    assert_eq!(h.output(), ["send-2"]);
    h.answer("send-1").unwrap();
    assert_eq!(h.output(), ["send-1", "W50", "now-3"]);
}

// FLINK-SEMANTICS 3
#[test]
fn a_later_segment_waits_for_every_earlier_one_then_all_leave_in_one_go() {
    let mut h = Harness::with(unordered());
    h.record("send-1").unwrap();
    h.watermark(10).unwrap();
    h.record("send-2").unwrap();
    h.watermark(20).unwrap();
    h.record("now-3").unwrap();
    h.answer("send-2").unwrap();
    assert!(h.output().is_empty());
    h.answer("send-1").unwrap();
    assert_eq!(h.output(), ["send-1", "W10", "send-2", "W20", "now-3"]);
}

// FLINK-SEMANTICS 4
#[test]
fn a_watermark_with_nothing_ahead_leaves_at_once_in_order_and_takes_a_slot() {
    for ordered in [true, false] {
        let mut h = Harness::with(OperatorConfig {
            ordered,
            capacity: 2,
            ..config()
        });
        h.watermark(5).unwrap();
        h.watermark(6).unwrap();
        assert_eq!(h.output(), ["W5", "W6"]);
        h.record("open").unwrap();
        h.watermark(7).unwrap();
        assert!(
            h.core.is_full(),
            "the pending record and the watermark fill capacity 2"
        );
        assert!(h.output().is_empty());
    }
}

// FLINK-SEMANTICS 5
#[test]
fn every_output_carries_its_inputs_timestamp_including_values_from_timeout() {
    let mut h = Harness::new(
        timeout_config(100),
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Timeout => vec![Act::Complete(vec![format!("{p}-fallback")])],
            _ => by_payload(kind, p),
        }),
    );
    h.record("two").unwrap();
    h.record("slow").unwrap();
    h.advance(100).unwrap();
    let stamps: Vec<(String, Option<i64>)> = h
        .out
        .drain(..)
        .map(|e| match e {
            Element::Record(r) => (
                String::from_utf8_lossy(&r.payload).into_owned(),
                r.timestamp,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        stamps,
        [
            ("two-1".to_string(), Some(1001)),
            ("two-2".to_string(), Some(1001)),
            ("slow-fallback".to_string(), Some(1002)),
        ]
    );
}

// FLINK-SEMANTICS 6
#[test]
fn two_values_are_emitted_at_the_inputs_position_and_none_frees_the_slot() {
    let mut h = Harness::with(OperatorConfig {
        capacity: 1,
        ..config()
    });
    h.record("empty").unwrap();
    assert!(!h.core.is_full(), "complete([]) freed the slot");
    h.record("two").unwrap();
    h.record("now").unwrap();
    assert_eq!(h.output(), ["two-1", "two-2", "now"]);
    assert_eq!(h.telemetry.filtered.get(), 1);
    assert_eq!(h.telemetry.records_out.get(), 3);
}

// FLINK-SEMANTICS 7
#[test]
fn the_first_completion_wins_and_later_ones_are_ignored() {
    let mut h = Harness::new(
        config(),
        FakeFunction::new(1, |kind, _: &str| match kind {
            Kind::Invoke => vec![
                Act::Complete(vec!["first".into()]),
                Act::Complete(vec!["second".into()]),
                Act::Fail(FailureKind::Fatal, "too late"),
                Act::Send,
            ],
            // A completion from a callback after the record completed is ignored too.
            _ => vec![Act::Fail(FailureKind::Fatal, "later still")],
        }),
    );
    h.record("r").unwrap();
    h.answer("r").unwrap();
    assert_eq!(h.output(), ["first"]);
}

// FLINK-SEMANTICS 8
#[test]
fn completion_may_come_inside_invoke_or_later_from_a_response() {
    let mut h = Harness::with(config());
    h.record("now-inside").unwrap();
    assert_eq!(h.output(), ["now-inside"]);
    h.record("send-later").unwrap();
    assert!(h.output().is_empty());
    h.answer("send-later").unwrap();
    assert_eq!(h.output(), ["send-later"]);
}

// FLINK-SEMANTICS 9
#[test]
fn at_most_capacity_elements_are_inside_completed_but_not_emitted_included() {
    let mut h = Harness::with(OperatorConfig {
        capacity: 3,
        ..config()
    });
    h.record("send-1").unwrap();
    h.record("now-2").unwrap();
    h.watermark(9).unwrap();
    assert!(
        h.core.is_full(),
        "R2 is done but waits behind R1: it still holds its slot"
    );
    h.answer("send-1").unwrap();
    assert!(h.core.is_empty());
    assert_eq!(h.output(), ["send-1", "now-2", "W9"]);
}

// FLINK-SEMANTICS 10
#[test]
fn when_full_answers_and_timers_go_on_and_a_slow_ordered_head_holds_the_room() {
    let mut h = Harness::new(
        OperatorConfig {
            capacity: 2,
            ..timeout_config(100)
        },
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Timeout => vec![Act::Complete(vec![format!("{p}-late")])],
            _ => by_payload(kind, p),
        }),
    );
    h.record("slow").unwrap();
    h.record("send-2").unwrap();
    assert!(h.core.is_full());
    h.answer("send-2").unwrap();
    assert!(
        h.core.is_full(),
        "ordered: R2's slot frees only when it is emitted"
    );
    h.advance(100).unwrap();
    assert!(
        h.core.is_empty(),
        "the timer fired while full; emission freed the room"
    );
    assert_eq!(h.output(), ["slow-late", "send-2"]);
}

// FLINK-SEMANTICS 12
#[test]
fn a_snapshot_holds_the_input_of_every_queued_element_in_queue_order() {
    let mut h = Harness::with(config());
    h.record("send-1").unwrap();
    h.watermark(7).unwrap();
    h.record("now-2").unwrap();
    let read_ahead = [Element::Watermark(8)];
    let snapshot = h.core.snapshot(read_ahead.iter());
    let elements: Vec<String> = snapshot
        .elements
        .iter()
        .map(|e| match e {
            Element::Record(r) => String::from_utf8_lossy(&r.payload).into_owned(),
            Element::Watermark(ts) => format!("W{ts}"),
            Element::DeadLetter(_) => "dead".into(),
        })
        .collect();
    assert_eq!(elements, ["send-1", "W7", "now-2", "W8"]);
    assert_eq!(snapshot.plugin_sha256, "fake");
}

// FLINK-SEMANTICS 31
#[test]
fn the_operator_is_not_done_until_every_element_has_been_emitted() {
    let mut h = Harness::with(unordered());
    h.record("send-1").unwrap();
    h.watermark(3).unwrap();
    h.record("now-2").unwrap();
    assert!(
        !h.core.is_empty(),
        "end of input must wait: R1 is in flight"
    );
    h.answer("send-1").unwrap();
    assert!(h.core.is_empty());
    assert_eq!(h.output(), ["send-1", "W3", "now-2"]);
    h.core.close();
    assert!(h.function().closed);
}

#[test]
fn after_a_trap_the_other_records_of_the_instance_are_invoked_again_on_a_fresh_one() {
    // Two slots: records alternate between them.
    let mut h = Harness::new(
        OperatorConfig {
            on_failure: Policy::DeadLetter,
            ..config()
        },
        FakeFunction::new(2, by_payload),
    );
    h.record("send-a").unwrap(); // slot 0
    h.record("send-b").unwrap(); // slot 1
    h.record("send-c").unwrap(); // slot 0
    h.record("trap").unwrap(); // slot 1: takes send-b with it
    assert_eq!(h.function().replaced, [1]);
    let again: Vec<(String, u32)> = h
        .function()
        .log
        .iter()
        .filter(|l| l.kind == Kind::Invoke && l.attempt > 0)
        .map(|l| (l.payload.clone(), l.attempt))
        .collect();
    assert_eq!(again, [("send-b".to_string(), 1)]);
    // The request send-b made from the instance that trapped is never answered to the new one.
    h.answer("send-a").unwrap();
    h.answer("send-b").unwrap();
    h.answer("send-c").unwrap();
    assert_eq!(h.output(), ["send-a"]);
    let responses = h.function().calls_of(Kind::Response);
    assert_eq!(
        responses,
        ["send-a", "send-c"],
        "the old instance's answer was dropped"
    );
    h.answer("send-b").unwrap();
    assert_eq!(h.output(), ["send-b", "send-c", "dead(failure):4"]);
    assert_eq!(h.telemetry.traps.get(), 1);
}

#[test]
fn a_record_whose_instance_keeps_trapping_under_it_fails_after_max_reinvocations() {
    // `victim` sends a request; every answer makes the instance trap, so the victim's instance
    // traps under it again and again.
    let mut h = Harness::new(
        config(),
        FakeFunction::new(1, |kind, p: &str| match (kind, p) {
            (Kind::Invoke, _) => vec![Act::Send],
            (Kind::Response, _) => vec![Act::Trap("crash while answering")],
            _ => vec![],
        }),
    );
    h.record("victim").unwrap();
    let mut error = None;
    for _ in 0..=MAX_REINVOCATIONS + 1 {
        // Deliver the trapping answer to the instance; with no owner the victim is not the
        // record served, so it is re-invoked (until it has been too often).
        let call = h.sent.pop().expect("the victim sent a request");
        let result = h.core.answered(
            CallDone {
                slot: call.slot,
                generation: call.generation,
                call_id: call.call.id,
                owner: None,
                answer: Err(HttpError::Timeout),
                tokens_charged: 0,
                from_cache: false,
            },
            h.now,
        );
        match result.and_then(|()| h.turn()) {
            Ok(()) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let text = error.expect("the victim failed").to_string();
    assert!(
        text.contains(&format!(
            "it was invoked again into a fresh instance {MAX_REINVOCATIONS} times"
        )),
        "{text}"
    );
    assert_eq!(
        h.function().calls_of(Kind::Invoke).len() as u32,
        1 + MAX_REINVOCATIONS
    );
}

#[test]
fn requests_beyond_max_requests_in_flight_wait_for_an_answer() {
    let mut h = Harness::with(OperatorConfig {
        max_requests_in_flight: 2,
        ..config()
    });
    for p in ["send-1", "send-2", "send-3"] {
        h.record(p).unwrap();
    }
    assert_eq!(h.sent.len(), 2, "the third request waits in the host");
    assert_eq!(h.telemetry.http_calls.get(), 3);
    h.answer("send-2").unwrap();
    assert_eq!(h.sent.len(), 2, "an answer lets the waiting request go");
    h.answer("send-3").unwrap();
    h.answer("send-1").unwrap();
    assert_eq!(h.output(), ["send-1", "send-2", "send-3"]);
}

#[test]
fn a_refused_request_holds_no_room_and_its_error_reaches_the_plugin() {
    let mut h = Harness::with(OperatorConfig {
        max_requests_in_flight: 1,
        ..config()
    });
    h.record("send-1").unwrap();
    h.record("send-2").unwrap();
    assert_eq!(h.sent.len(), 1);
    // The run loop's gateway refuses send-1 (not on the allowlist).
    let call = h.sent.remove(0);
    h.core.refused(CallDone {
        slot: call.slot,
        generation: call.generation,
        call_id: call.call.id,
        owner: call.call.owner,
        answer: Err(HttpError::Denied("not allowed".into())),
        tokens_charged: 0,
        from_cache: false,
    });
    assert!(h.core.has_work());
    h.turn().unwrap();
    assert_eq!(h.sent.len(), 1, "send-2 went out in the refused one's room");
    assert_eq!(h.function().calls_of(Kind::Response), ["send-1"]);
    h.answer("send-2").unwrap();
    assert_eq!(h.output(), ["send-1", "send-2"]);
}

#[test]
fn a_timeout_handler_that_sends_a_request_may_complete_within_timeout_grace() {
    let mut h = Harness::new(
        OperatorConfig {
            timeout_grace: Duration::from_millis(50),
            ..timeout_config(100)
        },
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Invoke => vec![],
            Kind::Timeout => vec![Act::Send],
            Kind::Response => vec![Act::Complete(vec![format!("{p}-fallback")])],
        }),
    );
    h.record("a").unwrap();
    h.record("b").unwrap();
    h.advance(100).unwrap();
    assert_eq!(h.function().calls_of(Kind::Timeout), ["a", "b"]);
    h.advance(49).unwrap();
    h.answer("a").unwrap();
    assert_eq!(h.output(), ["a-fallback"]);
    let error = h.advance(1).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("input.jsonl:2: timed out after 100ms: the plugin's timeout handler did not complete the record within timeout_grace (50ms)"),
        "{text}"
    );
}

#[test]
fn without_timeout_grace_a_handlers_request_does_not_keep_the_record() {
    let mut h = Harness::new(
        timeout_config(100),
        FakeFunction::new(1, |kind, _: &str| match kind {
            Kind::Timeout => vec![Act::Send],
            _ => vec![],
        }),
    );
    h.record("a").unwrap();
    assert!(matches!(
        h.advance(100),
        Err(OperatorError::TimedOut { .. })
    ));
}

#[test]
fn an_instance_near_its_memory_limit_is_replaced_only_once_it_has_completed_records() {
    let mut h = Harness::with(config());
    h.core.function.memory_full[0] = true;
    h.record("send-1").unwrap();
    assert!(
        h.function().replaced.is_empty(),
        "nothing completed: its memory is what the record in flight needs"
    );
    h.record("now-2").unwrap();
    assert_eq!(h.function().replaced, [0], "recycled after a completion");
    assert_eq!(h.telemetry.recycled.get(), 1);
    let again: Vec<(String, u32)> = h
        .function()
        .log
        .iter()
        .filter(|l| l.kind == Kind::Invoke && l.attempt > 0)
        .map(|l| (l.payload.clone(), l.attempt))
        .collect();
    assert_eq!(
        again,
        [("send-1".to_string(), 1)],
        "no record failed: it was invoked again"
    );
    // Its first request's answer is for the old instance: dropped; the new one answers.
    h.answer("send-1").unwrap();
    assert!(h.output().is_empty());
    h.answer("send-1").unwrap();
    assert_eq!(h.output(), ["send-1", "now-2"]);
    assert_eq!(h.telemetry.traps.get(), 0);
}

#[test]
fn token_usage_is_counted() {
    let mut h = Harness::new(
        config(),
        FakeFunction::new(1, |_, _: &str| {
            vec![Act::Usage(10, 3), Act::Complete(vec![])]
        }),
    );
    h.record("a").unwrap();
    h.record("b").unwrap();
    assert_eq!(h.telemetry.input_tokens.get(), 20);
    assert_eq!(h.telemetry.output_tokens.get(), 6);
}

#[test]
fn reported_usage_is_settled_against_what_its_record_was_charged() {
    let mut h = Harness::new(
        config(),
        FakeFunction::new(1, |kind, _: &str| match kind {
            Kind::Invoke => vec![Act::Send],
            _ => vec![Act::Usage(30, 20), Act::Complete(vec![])],
        }),
    );
    h.record("send-1").unwrap();
    let ok = || {
        Ok(HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        })
    };
    h.answer_charged("send-1", ok(), 200).unwrap();
    let settled = |charged| TokenSettlement {
        charged,
        input: 30,
        output: 20,
    };
    assert_eq!(h.core.next_settlement(), Some(settled(200)));
    assert_eq!(h.core.next_settlement(), None);
    // A record whose request was charged nothing (no token limit, or a refused answer):
    // its usage is all to be charged.
    h.record("send-2").unwrap();
    h.answer_charged("send-2", ok(), 0).unwrap();
    assert_eq!(h.core.next_settlement(), Some(settled(0)));
    assert_eq!(h.telemetry.input_tokens.get(), 60);
}

/// A replayed dead letter that starts at a later operator (`enters_at`) passes this one
/// unchanged and in its place, without a call to the plugin; until it has left, a checkpoint
/// holds it like any record in the queue. At the operator it names, it is invoked.
#[test]
fn a_record_replayed_at_a_later_operator_passes_unchanged_in_its_place() {
    let mut h = Harness::with(config());
    h.record("send-1").unwrap();
    h.line += 1;
    let replayed = Record {
        key: Some("k".into()),
        timestamp: Some(7),
        payload: b"now-replayed".to_vec(),
        line: h.line,
        enters_at: 1,
        produced_by: None,
        origin: None,
        ticket: None,
    };
    h.admit(Element::Record(replayed.clone())).unwrap();
    h.record("now-3").unwrap();
    assert!(h.out.is_empty(), "{:?}", h.out);
    let snapshot = h.core.snapshot(std::iter::empty());
    assert_eq!(snapshot.elements.len(), 3);
    assert_eq!(snapshot.elements[1], Element::Record(replayed.clone()));
    h.answer("send-1").unwrap();
    assert_eq!(h.out[1], Element::Record(replayed.clone()));
    assert_eq!(h.output(), ["send-1", "now-replayed", "now-3"]);
    let invoked: Vec<&str> = h
        .function()
        .log
        .iter()
        .map(|l| l.payload.as_str())
        .collect();
    assert_eq!(invoked, ["send-1", "now-3", "send-1"]);
    assert_eq!(h.telemetry.records_in.get(), 2);

    let mut second = Harness::with(OperatorConfig {
        index: 1,
        ..config()
    });
    second.admit(Element::Record(replayed)).unwrap();
    assert_eq!(second.output(), ["now-replayed"]);
    assert_eq!(second.function().log.len(), 1);
}

// Request retries stop at the record's timeout: each request carries it as its deadline.
#[test]
fn a_request_carries_the_moment_its_record_times_out() {
    let mut h = Harness::with(timeout_config(500));
    let admitted = h.now;
    h.advance(10).unwrap();
    h.record("send-1").unwrap();
    assert_eq!(
        h.sent[0].deadline,
        Some(admitted + Duration::from_millis(510))
    );
    let mut h = Harness::with(config());
    h.record("send-1").unwrap();
    assert_eq!(h.sent[0].deadline, None, "no timeout, no deadline");

    // A fallback call sent from `timeout` has the grace as its time.
    let mut h = Harness::new(
        OperatorConfig {
            timeout_grace: Duration::from_secs(5),
            ..timeout_config(500)
        },
        FakeFunction::new(1, |kind, p: &str| match kind {
            Kind::Timeout => vec![Act::Send],
            _ => by_payload(kind, p),
        }),
    );
    let admitted = h.now;
    h.record("open").unwrap();
    h.advance(500).unwrap();
    assert_eq!(
        h.sent[0].deadline,
        Some(admitted + Duration::from_millis(500) + Duration::from_secs(5))
    );
}
