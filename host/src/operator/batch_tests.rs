use std::time::Duration;

use super::*;
use crate::manifest::BatchConfig;

fn batched(max_size: usize, max_wait_ms: u64) -> OperatorConfig {
    OperatorConfig {
        on_failure: Policy::DeadLetter,
        batch: BatchConfig {
            max_size,
            max_wait: Duration::from_millis(max_wait_ms),
        },
        ..config()
    }
}

#[test]
fn records_admitted_together_go_in_calls_of_at_most_max_size_and_keep_their_order() {
    let mut h = Harness::with(batched(2, 0));
    h.records(&["now-a", "now-b", "now-c", "now-d", "now-e"])
        .unwrap();
    // The fifth is alone: it goes through `async-invoke`, not a batch of one.
    assert_eq!(
        h.function().batches,
        [vec!["now-a", "now-b"], vec!["now-c", "now-d"]]
    );
    assert_eq!(h.function().calls_of(Kind::Invoke).len(), 5);
    assert_eq!(h.output(), ["now-a", "now-b", "now-c", "now-d", "now-e"]);
    assert_eq!(h.telemetry.batch_calls.get(), 2);
    assert_eq!(h.telemetry.batched_records.get(), 4);
}

#[test]
fn each_record_of_a_batch_completes_on_its_own_now_or_from_an_answer() {
    let mut h = Harness::with(batched(64, 0));
    h.records(&["send-a", "now-b", "two-c"]).unwrap();
    assert_eq!(h.function().batches.len(), 1);
    // Ordered: b and c wait behind a.
    assert_eq!(h.output(), Vec::<String>::new());
    h.answer("send-a").unwrap();
    assert_eq!(h.output(), ["send-a", "now-b", "two-c-1", "two-c-2"]);
}

#[test]
fn a_trap_in_a_batch_fails_only_the_record_that_traps() {
    let mut h = Harness::with(batched(64, 0));
    h.records(&["now-a", "trap", "now-c", "send-d"]).unwrap();
    // now-a completed before the trap; the others were invoked again one by one on a fresh
    // instance, where the trap fails alone.
    assert_eq!(h.function().batches.len(), 1);
    assert_eq!(h.function().replaced, [0, 0]);
    let again: Vec<String> = h
        .function()
        .log
        .iter()
        .filter(|l| l.kind == Kind::Invoke && l.attempt > 0)
        .map(|l| l.payload.clone())
        .collect();
    assert_eq!(again, ["trap", "now-c", "send-d"]);
    h.answer("send-d").unwrap();
    assert_eq!(h.output(), ["now-a", "dead(failure):2", "now-c", "send-d"]);
}

#[test]
fn with_max_wait_records_are_held_until_the_batch_is_full_or_the_wait_is_up() {
    let mut h = Harness::with(batched(3, 50));
    h.records(&["now-a", "now-b"]).unwrap();
    assert!(h.function().log.is_empty(), "held for more to come");
    assert_eq!(h.core.next_timer(), Some(h.now + Duration::from_millis(50)));
    h.advance(49).unwrap();
    assert!(h.function().log.is_empty());
    h.advance(1).unwrap();
    assert_eq!(h.function().batches, [vec!["now-a", "now-b"]]);
    assert_eq!(h.output(), ["now-a", "now-b"]);
    // Three waiting make a full batch: no wait.
    h.records(&["now-c", "now-d", "now-e"]).unwrap();
    assert_eq!(h.function().batches.len(), 2);
    assert_eq!(h.output(), ["now-c", "now-d", "now-e"]);
}

#[test]
fn with_max_wait_full_batches_go_at_once_and_the_rest_is_held() {
    let mut h = Harness::with(batched(2, 50));
    h.records(&["now-a", "now-b", "now-c", "now-d", "now-e"])
        .unwrap();
    assert_eq!(
        h.function().batches,
        [vec!["now-a", "now-b"], vec!["now-c", "now-d"]]
    );
    assert_eq!(h.output(), ["now-a", "now-b", "now-c", "now-d"]);
    h.records(&["now-f"]).unwrap();
    assert_eq!(h.function().batches.len(), 3, "e and f make a full batch");
    assert_eq!(h.output(), ["now-e", "now-f"]);
}

#[test]
fn held_records_join_later_arrivals_and_leave_when_the_input_ends() {
    let mut h = Harness::with(batched(4, 1000));
    h.records(&["now-a"]).unwrap();
    h.advance(10).unwrap();
    h.records(&["now-b"]).unwrap();
    assert!(h.function().log.is_empty());
    h.core.input_ended(h.now).unwrap();
    h.turn().unwrap();
    assert_eq!(h.function().batches, [vec!["now-a", "now-b"]]);
    assert_eq!(h.output(), ["now-a", "now-b"]);
}

#[test]
fn held_records_go_at_once_when_the_queue_is_full() {
    let mut h = Harness::with(OperatorConfig {
        capacity: 2,
        ..batched(8, 1000)
    });
    h.records(&["now-a", "now-b"]).unwrap();
    assert_eq!(h.function().batches, [vec!["now-a", "now-b"]]);
    assert_eq!(h.output(), ["now-a", "now-b"]);
}

#[test]
fn a_held_record_that_times_out_is_not_invoked_after() {
    let mut h = Harness::with(OperatorConfig {
        timeout: Some(Duration::from_millis(100)),
        ..batched(4, 60)
    });
    h.records(&["now-a"]).unwrap();
    // Its batch leaves at 60 ms, well inside its timeout.
    h.advance(60).unwrap();
    assert_eq!(h.output(), ["now-a"]);
    assert!(h.function().calls_of(Kind::Timeout).is_empty());
}

#[test]
fn with_two_instances_a_batch_is_split_by_slot() {
    let mut h = Harness::new(batched(64, 0), FakeFunction::new(2, by_payload));
    h.records(&["now-a", "now-b", "now-c", "now-d"]).unwrap();
    assert_eq!(
        h.function().batches,
        [vec!["now-a", "now-c"], vec!["now-b", "now-d"]]
    );
    assert_eq!(h.output(), ["now-a", "now-b", "now-c", "now-d"]);
}

#[test]
fn a_plugin_without_batches_gets_one_call_per_record_and_a_trap_fails_its_own_record() {
    let mut function = FakeFunction::new(1, by_payload);
    function.takes_batches = false;
    let mut h = Harness::new(batched(64, 0), function);
    h.records(&["now-a", "trap", "now-c"]).unwrap();
    assert!(h.function().batches.is_empty());
    assert_eq!(h.function().replaced, [0], "one trap: the record it served");
    assert_eq!(h.output(), ["now-a", "dead(failure):2", "now-c"]);
    assert_eq!(h.telemetry.batch_calls.get(), 0);
}
