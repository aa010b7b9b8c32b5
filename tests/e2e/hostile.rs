//! A plugin that misbehaves through WASI and logging (the `hostile` test plugin, built without the
//! SDK, so without its panic hook): it cannot crash or hang the host, forge its log or flood it,
//! and its panic message reaches the user.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use waio_tests::*;

fn dead_letter_policy() -> &'static str {
    "on_failure = \"dead-letter\"\non_timeout = \"dead-letter\"\ntimeout = \"5s\""
}

async fn hostile(lines: &[Value], operator_extra: &str, config: &str) -> Outcome {
    let p = Pipeline::new();
    p.input(&lines.iter().map(Value::to_string).collect::<Vec<_>>());
    p.run(&one_operator(
        &plugin("hostile"),
        operator_extra,
        config,
        "",
    ))
    .await
}

/// Runs the real binary over `lines` with the hostile plugin; returns (exit code, stderr, pipeline).
fn hostile_cli(lines: &[Value], operator_extra: &str, config: &str) -> (i32, String, Pipeline) {
    let p = Pipeline::new();
    p.input(&lines.iter().map(Value::to_string).collect::<Vec<_>>());
    p.manifest(&one_operator(
        &plugin("hostile"),
        operator_extra,
        config,
        "",
    ));
    let (code, _, stderr) = run_waio_env(
        p.dir.path(),
        &["run", "pipeline.toml"],
        &[("WAIO_LOG", "info")],
    );
    (code, stderr, p)
}

// Defect 2: WASI's blocking calls (a write to stdout or stderr, a sleep) in `open`, which the
// pipeline calls from async code, panicked the host ("Cannot start a runtime from within a
// runtime").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_prints_or_sleeps_in_open_runs() {
    for config in [
        "print = \"hello from open\"",
        "eprint = \"hello from open\"",
        "sleep_ms = 20",
    ] {
        let out = hostile(&[json!({"id": "a"}), json!({"id": "b"})], "", config).await;
        assert_eq!(out.ids(), ["a", "b"], "{config}");
    }
}

#[test]
fn what_a_plugin_prints_in_open_reaches_the_log_under_its_operator() {
    let (code, stderr, _p) = hostile_cli(
        &[json!({"id": "a"})],
        "",
        "print = \"to stdout from open\"\neprint = \"to stderr from open\"",
    );
    assert_eq!(code, 0, "{stderr}");
    for text in ["to stdout from open", "to stderr from open"] {
        let line = stderr
            .lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no line with {text:?} in: {stderr}"));
        assert!(line.contains("plugin=\"op\""), "{line}");
    }
}

// Defect 4: a blocking WASI call held the operator thread as long as the plugin liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_sleeps_in_a_call_is_stopped_at_call_time_limit() {
    for mode in ["sleep", "poll"] {
        let started = Instant::now();
        let out = hostile(
            &[
                json!({"id": "a"}),
                json!({"id": "slow", "mode": mode, "ms": 10_000}),
                json!({"id": "b"}),
            ],
            &format!("{}\ncall_time_limit = \"200ms\"", dead_letter_policy()),
            "",
        )
        .await;
        let took = started.elapsed();
        assert_eq!(out.ids(), ["a", "b"], "{mode}");
        assert_eq!(out.dead.len(), 1, "{mode}");
        assert_eq!(out.dead[0]["payload"]["id"], "slow");
        let error = out.dead[0]["error"].as_str().unwrap();
        assert!(error.contains("call_time_limit (200ms)"), "{mode}: {error}");
        // The plugin asked for 10 s; the call is cut at 200 ms (loose bound for a busy machine).
        assert!(took < Duration::from_secs(5), "{mode}: took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_sleeps_forever_does_not_hang_the_job() {
    let lines: Vec<Value> = (0..5)
        .map(|i| match i {
            2 => json!({"id": "stuck", "mode": "sleep_forever"}),
            _ => json!({"id": i.to_string()}),
        })
        .collect();
    // Without a bound the job never ends: give up well before the harness's own guard.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        hostile(
            &lines,
            &format!("{}\ncall_time_limit = \"300ms\"", dead_letter_policy()),
            "",
        ),
    )
    .await
    .expect("the job finished");
    assert_eq!(out.ids(), ["0", "1", "3", "4"]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["payload"]["id"], "stuck");
    let error = out.dead[0]["error"].as_str().unwrap();
    assert!(error.contains("call_time_limit"), "{error}");
    assert!(error.contains("blocked"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_sleeps_in_open_longer_than_call_time_limit_fails_the_job_clearly() {
    // `open` runs inside the pipeline's setup, so a timeout around the run could not fire while
    // it sleeps: measure instead. The plugin asks for 20 s; the call is cut at 200 ms.
    let started = Instant::now();
    let out = hostile(
        &[json!({"id": "a"})],
        "call_time_limit = \"200ms\"",
        "sleep_ms = 20000",
    )
    .await;
    let took = started.elapsed();
    let error = out.error();
    assert!(
        error.contains("opening") && error.contains("call_time_limit (200ms)"),
        "{error}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

// Defect 9: a plugin could forge the host's log and flood it.
#[test]
fn a_plugin_cannot_forge_host_log_lines() {
    let forged = "innocent\nERROR waio: forged line\r\u{1b}[2K\u{1b}[31mred";
    let (code, stderr, _p) = hostile_cli(
        &[
            json!({"id": "l", "mode": "log", "message": forged, "level": "warn"}),
            json!({"id": "e", "mode": "eprint", "message": forged}),
            json!({"id": "p", "mode": "print", "message": forged}),
        ],
        "",
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "an escape reached the log: {stderr:?}"
    );
    assert!(
        !stderr.contains('\r'),
        "a carriage return reached the log: {stderr:?}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("ERROR waio: forged")),
        "a forged line: {stderr}"
    );
    // One line from each of the log, stderr and stdout (where the `\n` ends a line of output),
    // each escaped and naming its operator.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("forged line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for line in &lines {
        assert!(
            line.contains(r"forged line\r\u{1b}[2K\u{1b}[31mred"),
            "{line}"
        );
        assert!(line.contains("plugin=\"op\""), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r"innocent\nERROR waio: forged line")),
        "{stderr}"
    );
}

#[test]
fn plugin_output_is_capped_per_instance_with_a_count_of_what_was_dropped() {
    // 4 MiB to stderr, and 100 000 log calls of 100 bytes.
    let (code, stderr, p) = hostile_cli(
        &[
            json!({"id": "flood", "mode": "stderr", "bytes": 4 << 20}),
            json!({"id": "chatty", "mode": "log", "message": "y".repeat(100), "repeat": 100_000}),
        ],
        "call_time_limit = \"20s\"",
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&read_jsonl(&p.path("out.jsonl"))), ["flood", "chatty"]);
    assert!(
        stderr.len() < 512 << 10,
        "{} bytes of log for one instance",
        stderr.len()
    );
    let note = stderr
        .lines()
        .find(|l| l.contains("dropped"))
        .unwrap_or_else(|| panic!("no word of the dropped output in: {}", &stderr[..2000]));
    assert!(note.contains("plugin=\"op\""), "{note}");
}

// Defect 11: without the SDK's panic hook, the error was a 15-line wasm backtrace and the panic
// message only appeared, unattributed, on the host's stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_without_the_sdk_hook_names_its_message_before_the_backtrace() {
    let out = hostile(
        &[
            json!({"id": "a"}),
            json!({"id": "p", "mode": "panic", "message": "the widget exploded"}),
            json!({"id": "b"}),
        ],
        dead_letter_policy(),
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "b"]);
    assert_eq!(out.dead.len(), 1);
    let error = out.dead[0]["error"].as_str().unwrap();
    let message = error
        .find("the widget exploded")
        .unwrap_or_else(|| panic!("no panic message in: {error}"));
    let backtrace = error
        .find("backtrace")
        .unwrap_or_else(|| panic!("no backtrace in: {error}"));
    assert!(message < backtrace, "{error}");
    assert!(error.lines().count() <= 12, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_under_the_fail_policy_fails_the_job_with_the_panic_message() {
    let out = hostile(
        &[json!({"id": "p", "mode": "panic", "message": "the widget exploded"})],
        "",
        "",
    )
    .await;
    let error = out.error();
    assert!(
        error.contains("input.jsonl:1") && error.contains("the widget exploded"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_open_fails_the_job_with_the_panic_message() {
    let out = hostile(&[json!({"id": "a"})], "", "panic = \"no config for you\"").await;
    let error = out.error();
    assert!(error.contains("no config for you"), "{error}");
}
