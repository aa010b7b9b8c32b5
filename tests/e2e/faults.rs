//! Guest faults: a plugin that loops, allocates without bound, panics or never completes. The host
//! survives, the record is handled per policy, and later records are processed.

use serde_json::json;
use waio_tests::*;

fn dead_letter_policy() -> &'static str {
    "on_failure = \"dead-letter\"\non_timeout = \"dead-letter\"\ntimeout = \"500ms\""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_and_only_its_record_fails() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "spin", "mode": "loop"}),
            json!({"id": "b"}),
        ],
        &format!("{}\ncall_time_limit = \"100ms\"", dead_letter_policy()),
    )
    .await;
    assert_eq!(out.ids(), ["a", "b"]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["payload"]["id"], "spin");
    let error = out.dead[0]["error"].as_str().unwrap();
    assert!(error.contains("call_time_limit"), "{error}");
    // The three records went to the plugin in one batch: the loop trapped the batch call,
    // then itself alone when the records not completed were invoked again one by one.
    assert_eq!(out.summary().operators[0].traps, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_shows_the_cpu_a_spinning_plugin_cost_its_operator_thread() {
    let out = behave(
        &[json!({"id": "spin", "mode": "loop"}), json!({"id": "b"})],
        // One record per call: one trap, one 300 ms spin.
        &format!(
            "{}\ncall_time_limit = \"300ms\"\nbatch.max_size = 1",
            dead_letter_policy()
        ),
    )
    .await;
    let summary = out.summary();
    let op = &summary.operators[0];
    assert_eq!(op.traps, 1);
    // The guest spun on the operator's thread until its 300 ms limit: a sixth of that is a floor
    // that holds even on a busy machine, and the thread is part of the process.
    assert!(op.thread_cpu_s >= 0.05, "{op:?}");
    assert!(
        op.thread_cpu_s <= summary.cpu_s,
        "{op:?} vs {}",
        summary.cpu_s
    );
    let per_record = op.thread_cpu_s * 1e6 / op.records_in as f64;
    assert!(
        (op.thread_cpu_us_per_record - per_record).abs() < 1e-6,
        "{op:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_cap_and_only_its_record_fails() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "hog", "mode": "alloc"}),
            json!({"id": "b"}),
        ],
        &format!(
            "{}\nmemory_limit = \"32MiB\"\ncall_time_limit = \"5s\"",
            dead_letter_policy()
        ),
    )
    .await;
    assert_eq!(out.ids(), ["a", "b"]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["payload"]["id"], "hog");
    let error = out.dead[0]["error"].as_str().unwrap();
    assert!(error.contains("memory"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_becomes_a_failure_naming_the_panic() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "p1", "mode": "panic"}),
            json!({"id": "p2", "mode": "panic_later", "delay_ms": 10}),
            json!({"id": "b"}),
        ],
        dead_letter_policy(),
    )
    .await;
    assert_eq!(out.ids(), ["a", "b"]);
    let errors: Vec<&str> = out
        .dead
        .iter()
        .map(|d| d["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("plugin panicked") && errors[0].contains("boom \"p1\""),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("plugin panicked") && errors[1].contains("boom \"p2\""),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_under_the_fail_policy_fails_the_job_with_the_panic_message() {
    let out = behave(
        &[json!({"id": "a"}), json!({"id": "p", "mode": "panic"})],
        "",
    )
    .await;
    let error = out.error();
    assert!(
        error.contains("input.jsonl:2") && error.contains("boom \"p\""),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_never_completes_times_out_to_the_dead_letter_output() {
    let out = behave(
        &[
            json!({"id": "a"}),
            json!({"id": "lost", "mode": "never"}),
            json!({"id": "b"}),
        ],
        dead_letter_policy(),
    )
    .await;
    assert_eq!(out.ids(), ["a", "b"]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["reason"], "timeout");
    assert_eq!(out.dead[0]["payload"]["id"], "lost");
    assert_eq!(out.summary().operators[0].timed_out, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_flight_in_a_trapped_instance_are_invoked_again_not_lost() {
    // "slow" waits on HTTP inside the instance when "p" makes it trap; its state is gone with the
    // instance, so the host invokes it again on the fresh one.
    let out = behave(
        &[
            json!({"id": "slow", "mode": "later", "delay_ms": 300}),
            json!({"id": "p", "mode": "panic"}),
            json!({"id": "c", "mode": "later", "delay_ms": 10}),
        ],
        dead_letter_policy(),
    )
    .await;
    assert_eq!(out.ids(), ["slow", "c"]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["payload"]["id"], "p");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_share_the_work() {
    let lines: Vec<_> = (0..30)
        .map(|i| json!({"id": i.to_string(), "mode": "later", "delay_ms": 5}))
        .collect();
    let out = behave(&lines, "instances = 3\ncapacity = 9").await;
    assert_eq!(out.output.len(), 30);
    assert_eq!(
        out.ids(),
        (0..30).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_keeps_growing_is_replaced_before_its_memory_limit_and_no_record_is_lost()
{
    // componentize-py 0.25.1 leaks every output payload inside the guest: 6000 outputs of 4 KiB
    // outgrow a 24 MiB instance. The host replaces the instance before it traps.
    let pad = "x".repeat(4000);
    let lines: Vec<_> = (0..6000)
        .map(|i| json!({"id": format!("{i}-{pad}")}))
        .collect();
    let p = Pipeline::new();
    p.input(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let toml = one_operator(
        &plugin("conform-python"),
        "memory_limit = \"24MiB\"\non_failure = \"dead-letter\"\noutput_mode = \"unordered\"",
        "echo_url = \"http://127.0.0.1:1/echo\"",
        "",
    );
    let out = p.run(&toml).await;
    let op = &out.summary().operators[0];
    assert_eq!(out.output.len(), 6000);
    assert!(out.dead.is_empty(), "{:?}", out.dead.first());
    assert_eq!(op.traps, 0);
    assert!(op.recycled >= 1, "{op:?}");
}
