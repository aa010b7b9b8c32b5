//! FLINK-SEMANTICS items 1-26 and 31, end to end: a real pipeline, the `behave` test plugin,
//! real HTTP answers from the mock provider arriving out of order.

use serde_json::json;
use waio_tests::*;

/// Runs the behave plugin over `lines` with the mock's echo endpoint for late completions.
async fn behave(lines: &[serde_json::Value], operator_extra: &str, sink_extra: &str) -> Outcome {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let extra = format!("allowed_hosts = [\"127.0.0.1\"]\n{operator_extra}");
    let config = format!("echo_url = \"{}/echo\"", mock.url());
    p.run(&one_operator(
        &plugin("behave"),
        &extra,
        &config,
        sink_extra,
    ))
    .await
}

fn later(id: &str, delay_ms: u64) -> serde_json::Value {
    json!({"id": id, "mode": "later", "delay_ms": delay_ms})
}

fn wm(ts: i64) -> serde_json::Value {
    json!({"$watermark": ts})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item01_ordered_mode_emits_in_input_order() {
    let out = behave(
        &[
            later("1", 400),
            later("2", 10),
            later("3", 200),
            later("4", 0),
        ],
        "ordered = true",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["1", "2", "3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item02_unordered_mode_emits_in_completion_order_within_a_segment() {
    let out = behave(
        &[later("1", 400), later("2", 10), wm(100), later("3", 0)],
        "output_mode = \"unordered\"",
        "watermarks = true",
    )
    .await;
    assert_eq!(
        out.ids(),
        ["2", "1", "W100", "3"],
        "R3 must not overtake the watermark"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item03_later_segments_wait_for_earlier_ones_then_drain_together() {
    let out = behave(
        &[later("1", 400), wm(1), later("2", 0), wm(2), later("3", 0)],
        "output_mode = \"unordered\"",
        "watermarks = true",
    )
    .await;
    assert_eq!(out.ids(), ["1", "W1", "2", "W2", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item04_watermarks_with_nothing_ahead_pass_in_order() {
    for mode in ["ordered", "unordered"] {
        let out = behave(
            &[wm(1), wm(2), later("a", 50), wm(3), wm(4)],
            &format!("output_mode = \"{mode}\""),
            "watermarks = true",
        )
        .await;
        assert_eq!(out.ids(), ["W1", "W2", "a", "W3", "W4"], "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item05_outputs_carry_the_input_event_time_including_timeout_values() {
    let out = behave(
        &[
            json!({"id": "a", "ts": 1000, "results": 2}),
            json!({"id": "b", "ts": 2000, "mode": "never", "on_timeout": "fallback"}),
            json!({"id": "c", "ts": 3000, "mode": "later", "delay_ms": 20}),
        ],
        "timeout = \"300ms\"",
        "format = \"envelope\"",
    )
    .await;
    let stamps: Vec<(String, i64)> = out
        .output
        .iter()
        .map(|l| {
            (
                l["payload"]["id"].as_str().unwrap().to_string(),
                l["timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stamps,
        [
            ("a".into(), 1000),
            ("a".into(), 1000),
            ("b".into(), 2000),
            ("c".into(), 3000)
        ]
    );
    assert_eq!(out.output[2]["payload"]["fallback"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item06_several_results_fan_out_in_place_and_none_filters_and_frees_the_slot() {
    let mut lines = vec![json!({"id": "a", "results": 2})];
    // With capacity 1, each empty completion must free the only slot or the run would stall.
    for i in 0..5 {
        lines.push(json!({"id": format!("gone{i}"), "results": 0}));
    }
    lines.push(json!({"id": "c", "mode": "later", "delay_ms": 10, "results": 1}));
    let out = behave(&lines, "capacity = 1", "").await;
    assert_eq!(out.ids(), ["a", "a", "c"]);
    assert_eq!(out.output[0]["n"], 0);
    assert_eq!(out.output[1]["n"], 1);
    let op = &out.summary().operators[0];
    assert_eq!(op.filtered, 5);
    assert_eq!(op.records_in, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item07_first_completion_wins() {
    let out = behave(
        &[
            json!({"id": "now", "mode": "twice"}),
            json!({"id": "late", "mode": "twice_later", "delay_ms": 20}),
        ],
        "",
        "",
    )
    .await;
    // The second complete and the complete-exceptionally are ignored: one output each, no failure.
    assert_eq!(out.ids(), ["now", "late"]);
    assert!(out.output.iter().all(|o| o.get("second").is_none()));
    assert!(out.dead.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item08_complete_inside_invoke_or_later_from_a_callback() {
    let out = behave(
        &[
            json!({"id": "inside"}),
            later("callback", 30),
            json!({"id": "inside2"}),
        ],
        "",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["inside", "callback", "inside2"]);
    assert_eq!(out.summary().operators[0].http_calls, 1);
}

/// Records that call the timeline server, so it sees how many are in flight.
fn timed(server: &TimelineServer, id: usize, delay_ms: u64) -> serde_json::Value {
    json!({"id": id.to_string(), "mode": "http", "url": format!("{}?id={id}&delay_ms={delay_ms}", server.url())})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item09_capacity_bounds_the_records_in_flight() {
    for mode in ["ordered", "unordered"] {
        let server = TimelineServer::start().await;
        let lines: Vec<_> = (1..=15).map(|i| timed(&server, i, 40)).collect();
        let out = behave(
            &lines,
            &format!("capacity = 3\noutput_mode = \"{mode}\""),
            "",
        )
        .await;
        assert_eq!(out.output.len(), 15, "{mode}");
        assert_eq!(
            server.max_in_flight(),
            3,
            "{mode}: capacity 3 must allow exactly 3 in flight"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item10_ordered_slow_head_holds_input_back_unordered_does_not() {
    // Ordered: a slot frees only on emission, so while record 1 is slow only 2 more may start.
    let server = TimelineServer::start().await;
    let mut lines = vec![timed(&server, 1, 500)];
    lines.extend((2..=8).map(|i| timed(&server, i, 0)));
    let out = behave(&lines, "capacity = 3\nordered = true", "").await;
    assert_eq!(out.output.len(), 8);
    let mut started = server.started_before_end_of("1");
    started.sort();
    assert_eq!(started, ["1", "2", "3"]);

    // Unordered: the fast ones leave at once and free their slots; all start before 1 ends.
    let server = TimelineServer::start().await;
    let mut lines = vec![timed(&server, 1, 500)];
    lines.extend((2..=8).map(|i| timed(&server, i, 0)));
    let out = behave(&lines, "capacity = 3\nordered = false", "").await;
    assert_eq!(out.output.len(), 8);
    assert_eq!(server.started_before_end_of("1").len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item12_13_timeout_by_default_fails_the_job_naming_the_record() {
    let out = behave(
        &[json!({"id": "ok"}), json!({"id": "stuck", "mode": "never"})],
        "timeout = \"200ms\"",
        "",
    )
    .await;
    let error = out.error();
    assert!(
        error.contains("could not complete the stream element input.jsonl:2"),
        "{error}"
    );
    assert!(error.contains("timed out after 200ms"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item14_timeout_values_are_emitted_in_place_and_the_job_goes_on() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "b", "mode": "never", "on_timeout": "fallback"}),
            json!({"id": "c"}),
        ],
        "timeout = \"200ms\"",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "b", "c"]);
    assert_eq!(out.output[1]["fallback"], true);
    assert_eq!(
        out.summary().operators[0].timed_out,
        0,
        "completed by timeout(): not a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item15_a_record_completed_in_time_never_sees_timeout() {
    // Capacity 1 makes the run outlast record a's deadline (300 ms) by far.
    let out = behave(
        &[
            json!({"id": "a", "mode": "later", "delay_ms": 10, "on_timeout": "fallback"}),
            json!({"id": "b", "mode": "later", "delay_ms": 250, "on_timeout": "fallback"}),
            json!({"id": "c", "mode": "later", "delay_ms": 250, "on_timeout": "fallback"}),
        ],
        "timeout = \"300ms\"\ncapacity = 1",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "b", "c"]);
    assert!(
        out.output.iter().all(|o| o.get("fallback").is_none()),
        "{:?}",
        out.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item16_zero_timeout_means_no_timeout() {
    let out = behave(&[later("slow", 400)], "timeout = \"0s\"", "").await;
    assert_eq!(out.ids(), ["slow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item17_exceptional_completion_fails_the_job_with_its_cause() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "b", "mode": "fail", "message": "bad record b"}),
        ],
        "",
        "",
    )
    .await;
    let error = out.error();
    assert!(error.contains("input.jsonl:2"), "{error}");
    assert!(error.contains("bad record b"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item17_with_dead_letter_policy_failures_go_to_the_dead_letter_output() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "b", "key": "kb", "ts": 5, "mode": "fail_later", "delay_ms": 10, "kind": "retriable", "message": "try later"}),
            json!({"id": "c"}),
        ],
        "on_failure = \"dead-letter\"",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "c"]);
    assert_eq!(out.dead.len(), 1);
    let dead = &out.dead[0];
    assert_eq!(dead["stage"], "op");
    assert_eq!(dead["reason"], "failure");
    assert_eq!(dead["retriable"], true);
    assert_eq!(dead["line"], 2);
    assert_eq!(dead["key"], "kb");
    assert_eq!(dead["timestamp"], 5);
    assert_eq!(dead["payload"]["id"], "b");
    assert!(dead["error"].as_str().unwrap().contains("try later"));
    assert_eq!(out.summary().dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item18_a_failure_behind_an_unfinished_head_fails_at_once() {
    // Record 1 never completes and there is no timeout: only failing at once ends this run.
    let out = behave(
        &[
            json!({"id": "1", "mode": "never"}),
            json!({"id": "2", "mode": "fail"}),
        ],
        "timeout = \"0s\"\nordered = true",
        "",
    )
    .await;
    assert!(out.error().contains("input.jsonl:2"), "{}", out.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item31_end_of_input_waits_for_every_element() {
    let lines: Vec<_> = (0..40)
        .map(|i| later(&i.to_string(), (i * 37 % 200) as u64))
        .collect();
    let out = behave(&lines, "output_mode = \"unordered\"\ncapacity = 10", "").await;
    let mut ids = out.ids();
    ids.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(ids, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(out.summary().records_out, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_feeds_outputs_to_the_next_operator_and_filtered_records_stop() {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&[
        json!({"id": "keep1"}).to_string(),
        json!({"id": "drop", "results": 0}).to_string(),
        json!({"id": "keep2", "results": 2}).to_string(),
    ]);
    let behave = plugin("behave");
    let toml = format!(
        r#"
[source]
kind = "file"
path = "input.jsonl"

[[operator]]
name = "first"
plugin = "{b}"
[operator.config]
echo_url = "{url}/echo"

[[operator]]
name = "second"
plugin = "{b}"
output_mode = "unordered"
[operator.config]
echo_url = "{url}/echo"

[sink]
kind = "file"
path = "out.jsonl"
"#,
        b = behave.display(),
        url = mock.url()
    );
    let out = p.run(&toml).await;
    assert_eq!(out.ids(), ["keep1", "keep2", "keep2"]);
    let summary = out.summary();
    assert_eq!(summary.operators[0].records_in, 3);
    assert_eq!(
        summary.operators[1].records_in, 3,
        "the filtered record never reaches the second operator"
    );
    assert_eq!(summary.records_out, 3);
}

// ---- Retries (`[operator.async_retry]`, Flink's AsyncRetryStrategy): items 19-26 ----

/// Operator lines: `before` (keys of the operator table), then `[operator.async_retry]` with
/// `retry`, and dead letters for failures and timeouts.
fn retrying(before: &str, retry: &str) -> String {
    format!(
        "on_failure = \"dead-letter\"\non_timeout = \"dead-letter\"\n{before}\n[operator.async_retry]\n{retry}\n"
    )
}

/// `lines` behind a record that holds the head of the ordered queue for `hold_ms`, and before a
/// record that can only enter once it has left (capacity: `lines` and the holder): the input
/// ends no earlier than `hold_ms`, so retries run their course (at the end of input they would
/// fire at once, FLINK-SEMANTICS 26). The output starts with "hold" and ends with "end".
fn held(lines: &[serde_json::Value], hold_ms: u64) -> (Vec<serde_json::Value>, String) {
    let mut all = vec![later("hold", hold_ms)];
    all.extend_from_slice(lines);
    all.push(json!({"id": "end"}));
    (
        all,
        format!("ordered = true\ncapacity = {}", lines.len() + 1),
    )
}

fn flaky(id: &str, fail_times: u64) -> serde_json::Value {
    json!({"id": id, "mode": "flaky", "fail_times": fail_times})
}

/// Milliseconds between a dead letter's first and last attempt.
fn attempt_span_ms(dead: &serde_json::Value) -> i64 {
    let at = |field: &str| -> jiff::Timestamp {
        let text = dead[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {dead}"));
        text.parse()
            .unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
    };
    (at("last_attempt_at") - at("first_attempt_at")).get_milliseconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item19_retry_is_active_only_with_a_strategy_and_a_matching_predicate() {
    // No strategy: a retriable failure is final at once.
    let out = behave(&[flaky("a", 1)], &retrying("", "strategy = \"none\""), "").await;
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["attempts"], 1);
    // A strategy with the default predicate: retriable failures only, empty results are final.
    let (lines, capacity) = held(
        &[
            flaky("a", 1),
            json!({"id": "b", "mode": "flaky", "kind": "fatal"}),
            json!({"id": "c", "mode": "empty_first", "empty_times": 1}),
        ],
        300,
    );
    let retry = "strategy = \"fixed_delay\"\ndelay = \"10ms\"";
    let out = behave(&lines, &retrying(&capacity, retry), "").await;
    assert_eq!(out.ids(), ["hold", "a", "end"]);
    assert_eq!(out.output[1]["invocation"], 2);
    assert_eq!(out.dead.len(), 1);
    let dead = &out.dead[0];
    assert_eq!(
        (&dead["payload"]["id"], &dead["attempts"]),
        (&json!("b"), &json!(1))
    );
    assert_eq!(dead["error_kind"], "fatal");
    assert_eq!(
        out.summary().operators[0].filtered,
        1,
        "c's empty result was final"
    );
    // A strategy with no predicate at all is refused, naming the field.
    let p = Pipeline::new();
    let path = p.manifest(&one_operator(
        &plugin("behave"),
        &retrying("", "strategy = \"exponential\"\non_failure = \"none\""),
        "",
        "",
    ));
    let error = Manifest::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("operator[0].async_retry.on_failure"),
        "{error}"
    );
    assert!(error.contains("nothing is ever retried"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item20_a_failed_attempt_is_retried_while_attempts_remain() {
    let (lines, capacity) = held(&[flaky("a", 2), flaky("b", 3), json!({"id": "c"})], 400);
    let retry = "strategy = \"fixed_delay\"\ndelay = \"20ms\"\nmax_attempts = 2";
    let out = behave(&lines, &retrying(&capacity, retry), "").await;
    // max_attempts = 2 retries: three invocations at most.
    assert_eq!(out.ids(), ["hold", "a", "c", "end"]);
    assert_eq!(out.output[1]["invocation"], 3);
    assert_eq!(out.dead.len(), 1);
    let dead = &out.dead[0];
    assert_eq!(dead["payload"]["id"], "b");
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["error"], "failed on purpose (invocation 3)");
    assert!(attempt_span_ms(dead) >= 40, "{dead}");
    // a and b each invoked twice more; the summary counts it.
    assert_eq!(out.summary().operators[0].record_retries, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item21_fixed_and_exponential_backoff_space_the_attempts() {
    // Fixed: 3 waits of 150 ms. Exponential: 100, 200, then 300 (capped from 400) ms.
    let strategies = [
        ("strategy = \"fixed_delay\"\ndelay = \"150ms\"", 450),
        (
            "strategy = \"exponential\"\ndelay = \"100ms\"\nmultiplier = 2.0\nmax_delay = \"300ms\"",
            600,
        ),
    ];
    for (retry, at_least) in strategies {
        let (lines, capacity) = held(&[flaky("a", 9)], at_least as u64 + 500);
        let retry = format!("{retry}\nmax_attempts = 3");
        let out = behave(&lines, &retrying(&capacity, &retry), "").await;
        let dead = &out.dead[0];
        assert_eq!(dead["attempts"], 4, "{retry}");
        let span = attempt_span_ms(dead);
        assert!(
            (at_least..at_least + 2000).contains(&span),
            "{retry}: {span} ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item22_all_empty_yields_nothing_and_the_last_error_is_final() {
    let (lines, capacity) = held(
        &[
            json!({"id": "a", "mode": "empty_first", "empty_times": 99}),
            json!({"id": "b", "mode": "empty_first", "empty_times": 2}),
            flaky("c", 99),
        ],
        300,
    );
    let retry =
        "strategy = \"fixed_delay\"\ndelay = \"10ms\"\nmax_attempts = 2\non_empty_result = true";
    let out = behave(&lines, &retrying(&capacity, retry), "").await;
    assert_eq!(
        out.ids(),
        ["hold", "b", "end"],
        "a found nothing: no output"
    );
    assert_eq!(out.output[1]["invocation"], 3);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["payload"]["id"], "c");
    assert_eq!(out.dead[0]["error"], "failed on purpose (invocation 3)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item23_a_retried_record_keeps_its_position_and_timestamp() {
    let (lines, capacity) = held(
        &[
            json!({"id": "a", "ts": 100, "mode": "flaky", "fail_times": 2}),
            json!({"id": "b", "ts": 200}),
            json!({"id": "c", "ts": 300, "mode": "later", "delay_ms": 5}),
        ],
        400,
    );
    let retry = "strategy = \"fixed_delay\"\ndelay = \"50ms\"";
    let out = behave(&lines, &retrying(&capacity, retry), "format = \"envelope\"").await;
    assert_eq!(out.ids(), ["hold", "a", "b", "c", "end"]);
    let stamps: Vec<i64> = out.output[1..4]
        .iter()
        .map(|l| l["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(stamps, [100, 200, 300]);
    assert_eq!(out.output[1]["payload"]["invocation"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item24_the_timeout_cancels_a_pending_retry_and_timeout_decides() {
    // Retries would come 400 ms apart; the timeout fires at 300 ms. The holder outlasts it too
    // (its `timeout` sends a request and completes from its answer), so the input ends later.
    let (mut lines, capacity) = held(
        &[
            json!({"id": "a", "mode": "flaky", "fail_times": 99, "on_timeout": "fallback"}),
            json!({"id": "b", "mode": "flaky", "fail_times": 99}),
        ],
        600,
    );
    lines[0]["on_timeout"] = json!("fallback_later");
    let before = format!("{capacity}\ntimeout = \"300ms\"");
    let retry = "strategy = \"fixed_delay\"\ndelay = \"400ms\"";
    let out = behave(&lines, &retrying(&before, retry), "").await;
    assert_eq!(out.ids(), ["hold", "a", "end"]);
    assert_eq!(out.output[1]["fallback"], true);
    assert_eq!(out.dead.len(), 1);
    let dead = &out.dead[0];
    assert_eq!(
        (&dead["payload"]["id"], &dead["reason"]),
        (&json!("b"), &json!("timeout"))
    );
    assert_eq!(dead["attempts"], 1, "the retry was cancelled: {dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item25_one_retry_per_attempt_and_watermarks_are_never_retried() {
    // Each failing invocation of a also completes with nothing right after: one retry only.
    let (lines, capacity) = held(
        &[
            json!({"id": "a", "mode": "flaky", "fail_times": 1, "then_empty": true}),
            wm(10),
            json!({"id": "b"}),
        ],
        300,
    );
    let retry =
        "strategy = \"fixed_delay\"\ndelay = \"20ms\"\nmax_attempts = 5\non_empty_result = true";
    let out = behave(&lines, &retrying(&capacity, retry), "watermarks = true").await;
    assert_eq!(out.ids(), ["hold", "a", "W10", "b", "end"]);
    assert_eq!(out.output[1]["invocation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item26_at_end_of_input_pending_retries_fire_at_once() {
    // The retry would wait 5 s; the input ends at once, so it fires then and its result is final.
    let started = std::time::Instant::now();
    let retry = "strategy = \"fixed_delay\"\ndelay = \"5s\"\nmax_attempts = 3";
    let out = behave(&[flaky("a", 99)], &retrying("timeout = \"60s\"", retry), "").await;
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_after_retries_says_attempts_times_kind_and_http_status() {
    let mock = mock().await;
    let p = Pipeline::new();
    let record = json!({
        "id": "a", "key": "ka", "ts": 7, "mode": "http_fail",
        "url": format!("{}/echo", mock.url()),
        "headers": {"x-mock-fault": "503"},
    });
    let (lines, capacity) = held(&[record, json!({"id": "b"})], 500);
    p.input(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let extra = retrying(
        &format!("allowed_hosts = [\"127.0.0.1\"]\n{capacity}"),
        "strategy = \"fixed_delay\"\ndelay = \"50ms\"\nmax_attempts = 2",
    );
    let config = format!("echo_url = \"{}/echo\"", mock.url());
    let out = p
        .run(&one_operator(&plugin("behave"), &extra, &config, ""))
        .await;
    assert_eq!(out.ids(), ["hold", "b", "end"]);
    assert_eq!(out.dead.len(), 1);
    let dead = &out.dead[0];
    assert_eq!(dead["stage"], "op");
    assert_eq!(dead["reason"], "failure");
    assert_eq!(dead["error"], "HTTP 503 (invocation 3)");
    assert_eq!(dead["error_kind"], "retriable");
    assert_eq!(dead["retriable"], true);
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["http_status"], 503);
    assert_eq!(
        (&dead["line"], &dead["key"], &dead["timestamp"]),
        (&json!(2), &json!("ka"), &json!(7))
    );
    assert!(attempt_span_ms(dead) >= 100, "{dead}");
    // The holder's request, and one per invocation of a.
    assert_eq!(mock.stats().echo, 4);
}
