//! A plugin that misbehaves at scale must not take the host down: instances replaced in a loop,
//! cascades of traps, one record fanning out into thousands of requests, and a `timeout` handler
//! that completes from an HTTP answer.

use serde_json::json;
use waio_tests::*;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A record that holds more than three quarters of its instance's headroom while it waits for
/// an answer: the instance is replaced once (it had completed a record: maybe a leak), the record
/// runs again in the fresh one and is left to finish there. It used to be replaced again and
/// again, recursively, until the host's stack overflowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_fills_a_fresh_instance_is_not_replaced_in_a_loop() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "big", "mode": "hold", "hold_kib": 12 * 1024, "delay_ms": 50}),
            json!({"id": "b"}),
        ],
        "memory_limit = \"16MiB\"\ncall_time_limit = \"5s\"\non_failure = \"dead-letter\"",
    )
    .await;
    assert_eq!(out.ids(), ["a", "big", "b"], "{:?}", out.dead);
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    let op = &out.summary().operators[0];
    // Once for `a`'s completion before `big`, once for `b`'s while `big` waits, once after
    // `big`: each needs a completion in between, so it can never loop.
    assert!(op.recycled <= 3, "{op:?}");
    assert_eq!(op.traps, 0, "{op:?}");
}

/// A trap re-invokes every other record in flight in a fresh instance; here each of them traps
/// again when re-invoked. 1000 records in flight: every one fails on its own (dead letter), the
/// host neither recurses nor loses a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_of_traps_on_reinvocation_fails_each_record_without_recursion() {
    // Long enough for the run to start and invoke all of them first, even on a busy machine.
    let after_ms = now_ms() + 3_000;
    let mut lines: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"id": i, "mode": "late_panic", "after_ms": after_ms, "delay_ms": 10_000}))
        .collect();
    // Traps in its answer callback once every other record is in flight and the clock has
    // passed `after_ms`: the others are invoked again, and each of them panics then.
    lines.push(json!({"id": "trigger", "mode": "panic_later", "delay_ms": 4_500}));
    let out = behave(
        &lines,
        "capacity = 1001\ntimeout = \"60s\"\non_failure = \"dead-letter\"",
    )
    .await;
    assert!(out.output.is_empty(), "{:?}", out.ids());
    assert_eq!(out.dead.len(), 1001);
    let mut ids: Vec<String> = out
        .dead
        .iter()
        .map(|d| d["payload"]["id"].to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1001, "every record exactly once");
    let late = out
        .dead
        .iter()
        .filter(|d| d["error"].as_str().is_some_and(|e| e.contains("late")))
        .count();
    assert_eq!(late, 1000, "{:?}", &out.dead[..5]);
    assert_eq!(out.summary().operators[0].traps, 1001);
}

/// A record whose instance keeps trapping under it (other records' panics) is invoked again a
/// bounded number of times, then fails with a message that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_instance_keeps_trapping_under_it_is_given_up() {
    let mut lines = vec![json!({"id": "x", "mode": "later", "delay_ms": 3_000})];
    for (i, delay) in [200, 400, 600, 800].iter().enumerate() {
        lines.push(json!({"id": format!("p{i}"), "mode": "panic_later", "delay_ms": delay}));
    }
    let out = behave(&lines, "timeout = \"60s\"\non_failure = \"dead-letter\"").await;
    assert!(out.output.is_empty(), "{:?}", out.ids());
    let x = out
        .dead
        .iter()
        .find(|d| d["payload"]["id"] == "x")
        .expect("x is a dead letter");
    let error = x["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("trapped under it 4 times") && error.contains("3 times"),
        "{error}"
    );
    assert_eq!(out.dead.len(), 5);
}

/// One record asks for 200 requests at once: at most `max_requests_in_flight` reach the server
/// at the same time, the rest wait in the host, and the record completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_cannot_fan_out_past_max_requests_in_flight() {
    for (extra, bound) in [
        ("max_requests_in_flight = 10", 10),
        // The default: four times the capacity.
        ("capacity = 3", 12),
    ] {
        let server = TimelineServer::start().await;
        let p = Pipeline::new();
        p.input(&[
            json!({"id": "wide", "mode": "fanout", "requests": 200, "delay_ms": 20}).to_string(),
        ]);
        let out = p
            .run(&one_operator(
                &plugin("behave"),
                &format!("allowed_hosts = [\"127.0.0.1\"]\n{extra}"),
                &format!("echo_url = \"{}\"", server.url()),
                "",
            ))
            .await;
        assert_eq!(out.ids(), ["wide"]);
        assert_eq!(out.summary().operators[0].http_calls, 200);
        let max = server.max_in_flight();
        assert!(max <= bound, "{max} requests in flight with {extra}");
        assert!(max >= bound / 2, "{max}: the bound should be used");
    }
}

/// Flink lets the `timeout` callback complete asynchronously: a handler that sends a fallback
/// request completes the record from its answer, within `timeout_grace`; past it the record
/// times out as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_handler_may_complete_from_an_http_answer_within_the_grace() {
    let out = behave(
        &[
            json!({"id": "slow", "mode": "never", "on_timeout": "fallback_later", "delay_ms": 50}),
            json!({"id": "too-slow", "mode": "never", "on_timeout": "fallback_later", "delay_ms": 3_000}),
            json!({"id": "b"}),
        ],
        "timeout = \"200ms\"\ntimeout_grace = \"500ms\"\non_timeout = \"dead-letter\"",
    )
    .await;
    assert_eq!(out.ids(), ["slow", "b"]);
    assert_eq!(out.output[0]["fallback"], "later");
    assert_eq!(out.dead.len(), 1, "{:?}", out.dead);
    assert_eq!(out.dead[0]["payload"]["id"], "too-slow");
    assert_eq!(out.dead[0]["reason"], "timeout");
    let error = out.dead[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("timeout_grace"), "{error}");
}
