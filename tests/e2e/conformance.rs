//! The same black-box tests for an enricher written in each language: ordering, timeouts,
//! failures, empty and multi results, and an exception reaching the host as a failure that names it
//! (not as a trap). The Rust twin of the conformance protocol is the `behave` plugin; the others
//! are tests/plugins/conform-{python,js,c}, built by scripts/build-plugins-<lang>.

use serde_json::json;
use waio_tests::*;

async fn run(
    plugin_name: &str,
    lines: &[serde_json::Value],
    operator_extra: &str,
    sink_extra: &str,
) -> Outcome {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let extra = format!("allowed_hosts = [\"127.0.0.1\"]\n{operator_extra}");
    let config = format!("echo_url = \"{}/echo\"", mock.url());
    p.run(&one_operator(
        &plugin(plugin_name),
        &extra,
        &config,
        sink_extra,
    ))
    .await
}

fn later(id: &str, delay_ms: u64) -> serde_json::Value {
    json!({"id": id, "mode": "later", "delay_ms": delay_ms})
}

pub async fn ordered_output_follows_input_order(p: &str) {
    let out = run(
        p,
        &[
            later("1", 300),
            later("2", 10),
            later("3", 150),
            json!({"id": "4"}),
        ],
        "ordered = true",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["1", "2", "3", "4"], "{p}");
}

pub async fn unordered_output_follows_completion_order_within_watermarks(p: &str) {
    let out = run(
        p,
        &[
            later("1", 300),
            later("2", 10),
            json!({"$watermark": 7}),
            json!({"id": "3"}),
        ],
        "output_mode = \"unordered\"",
        "watermarks = true",
    )
    .await;
    assert_eq!(out.ids(), ["2", "1", "W7", "3"], "{p}");
}

pub async fn empty_and_multiple_results(p: &str) {
    let out = run(
        p,
        &[
            json!({"id": "a", "results": 3}),
            json!({"id": "gone", "results": 0}),
            json!({"id": "b", "mode": "later", "results": 2, "delay_ms": 5}),
        ],
        "",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "a", "a", "b", "b"], "{p}");
    assert_eq!(out.summary().operators[0].filtered, 1, "{p}");
}

pub async fn timeout_fails_the_job_by_default_and_fallback_values_keep_it_going(p: &str) {
    let out = run(
        p,
        &[json!({"id": "a"}), json!({"id": "stuck", "mode": "never"})],
        "timeout = \"200ms\"",
        "",
    )
    .await;
    let error = out.error();
    assert!(
        error.contains("input.jsonl:2") && error.contains("timed out"),
        "{p}: {error}"
    );

    let out = run(
        p,
        &[
            json!({"id": "a"}),
            json!({"id": "stuck", "mode": "never", "on_timeout": "fallback"}),
            json!({"id": "c"}),
        ],
        "timeout = \"200ms\"",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "stuck", "c"], "{p}");
    assert_eq!(out.output[1]["fallback"], true, "{p}");
}

pub async fn failures_fail_the_job_or_go_to_dead_letters(p: &str) {
    let out = run(
        p,
        &[json!({"id": "x", "mode": "fail", "message": "no such ticket"})],
        "",
        "",
    )
    .await;
    let error = out.error();
    assert!(
        error.contains("input.jsonl:1") && error.contains("no such ticket"),
        "{p}: {error}"
    );

    let out = run(
        p,
        &[
            json!({"id": "a"}),
            json!({"id": "x", "mode": "fail", "message": "no such ticket"}),
            json!({"id": "b"}),
        ],
        "on_failure = \"dead-letter\"",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "b"], "{p}");
    assert_eq!(out.dead.len(), 1, "{p}");
    assert!(
        out.dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("no such ticket"),
        "{p}"
    );
}

pub async fn usage_is_reported(p: &str) {
    let out = run(
        p,
        &[
            json!({"id": "a", "tokens": 7}),
            json!({"id": "b", "tokens": 5}),
        ],
        "",
        "",
    )
    .await;
    let op = &out.summary().operators[0];
    assert_eq!((op.input_tokens, op.output_tokens), (12, 12), "{p}");
}

/// An uncaught exception, thrown at once or after an awaited request, is a failure that names the
/// exception type; the instance survives (no trap).
pub async fn an_exception_is_a_failure_naming_it_not_a_trap(p: &str, exception: &str) {
    let out = run(
        p,
        &[
            json!({"id": "a"}),
            json!({"id": "r1", "mode": "raise"}),
            json!({"id": "r2", "mode": "raise_later", "delay_ms": 5}),
            json!({"id": "b"}),
        ],
        "on_failure = \"dead-letter\"",
        "",
    )
    .await;
    assert_eq!(out.ids(), ["a", "b"], "{p}");
    assert_eq!(out.dead.len(), 2, "{p}");
    for dead in &out.dead {
        let error = dead["error"].as_str().unwrap();
        assert!(
            error.contains(exception) && error.contains("boom"),
            "{p}: {error}"
        );
    }
    assert_eq!(
        out.summary().operators[0].traps,
        0,
        "{p}: an exception must not trap the instance"
    );
}

macro_rules! conformance {
    ($lang:ident, $plugin:expr $(, exception = $exception:expr)?) => {
        mod $lang {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ordered_output_follows_input_order() {
                super::ordered_output_follows_input_order($plugin).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unordered_output_follows_completion_order_within_watermarks() {
                super::unordered_output_follows_completion_order_within_watermarks($plugin).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn empty_and_multiple_results() {
                super::empty_and_multiple_results($plugin).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn timeout_fails_the_job_by_default_and_fallback_values_keep_it_going() {
                super::timeout_fails_the_job_by_default_and_fallback_values_keep_it_going($plugin).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn failures_fail_the_job_or_go_to_dead_letters() {
                super::failures_fail_the_job_or_go_to_dead_letters($plugin).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn usage_is_reported() {
                super::usage_is_reported($plugin).await
            }
            $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_exception_is_a_failure_naming_it_not_a_trap() {
                super::an_exception_is_a_failure_naming_it_not_a_trap($plugin, $exception).await
            }
            )?
        }
    };
}

conformance!(rust, "behave");
conformance!(python, "conform-python", exception = "ValueError");
conformance!(js, "conform-js", exception = "TypeError");
conformance!(c, "conform-c");
