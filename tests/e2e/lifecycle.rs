//! A running pipeline from the outside: its handle (status while it runs, a stop through the
//! handle) and its stage threads, which never outlive the run, also when it fails early.
//!
//! Stage threads are named `waio-*`; the tests here look at every thread of the process, so
//! they run one at a time.

use std::time::{Duration, Instant};

use serde_json::json;
use waio::pipeline::{self, RunOptions, RunState};
use waio_tests::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pipeline stage threads alive in this process: source, operators, sink, checkpoint
/// coordinator (wasmtime's epoch ticker and the stdin reader are not stages).
fn stage_threads() -> Vec<String> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| {
            ["waio-source", "waio-sink", "waio-checkpoint"].contains(&name.as_str())
                || name.starts_with("waio-op-")
        })
        .collect()
}

fn manifest(p: &Pipeline, toml: &str) -> Manifest {
    Manifest::load(&p.manifest(toml)).expect("manifest")
}

/// Records the endless pipeline's generator would make: more than any test waits for.
const ENDLESS: u64 = 1_000_000_000;

/// Starts generator -> echo -> discard with `ENDLESS` records: the handle, and the run's task.
async fn start_endless(
    p: &Pipeline,
) -> (
    pipeline::PipelineHandle,
    tokio::task::JoinHandle<Result<RunSummary, PipelineError>>,
) {
    let toml = format!(
        "name = \"endless\"\n[source]\nkind = \"generator\"\ncount = {ENDLESS}\n[[operator]]\nname = \"echo\"\nplugin = \"{}\"\n[sink]\nkind = \"discard\"\n",
        plugin("echo").display()
    );
    let manifest = manifest(p, &toml);
    let running = pipeline::build(&manifest, &RunOptions::default())
        .await
        .expect("build")
        .start();
    let handle = running.handle();
    (handle, tokio::spawn(running.wait()))
}

/// The second of two operators fails the job on record 30 while the source is still reading
/// and the first operator still running: the run returns that failure only once every stage
/// has ended (they used to be left running behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_that_fails_early_leaves_no_stage_running() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let p = Pipeline::new();
    let lines: Vec<String> = (0..50_000)
        .map(|i| match i {
            30 => json!({"id": i, "mode": "fail", "message": "record 30 fails"}),
            _ => json!({"id": i}),
        })
        .map(|l| l.to_string())
        .collect();
    p.input(&lines);
    let toml = format!(
        r#"
name = "fails-early"
[source]
kind = "file"
path = "input.jsonl"
[[operator]]
name = "first"
plugin = "{echo}"
[[operator]]
name = "second"
plugin = "{behave}"
[sink]
kind = "file"
path = "out.jsonl"
[dead_letter]
path = "dead.jsonl"
"#,
        echo = plugin("echo").display(),
        behave = plugin("behave").display(),
    );
    let manifest = manifest(&p, &toml);
    let result = pipeline::run(&manifest, &RunOptions::default()).await;
    let left = stage_threads();
    let error = result.expect_err("record 30 fails the job").to_string();
    assert!(error.contains("record 30 fails"), "{error}");
    assert!(left.is_empty(), "stage threads still running: {left:?}");
}

/// `status()` reads the live telemetry while the pipeline runs; `stop()` through the handle
/// stops it as the first SIGINT does: what is in flight is finished, the run ends early with
/// its summary, and no stage thread is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_shows_the_run_as_it_goes_and_stops_it() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let p = Pipeline::new();
    let (handle, run) = start_endless(&p).await;

    let started = Instant::now();
    let status = loop {
        let status = handle.status();
        if status.summary.records_out >= 1000 {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no output after 60 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.state, RunState::Running);
    assert_eq!(status.summary.pipeline, "endless");
    assert_eq!(status.summary.operators[0].name, "echo");
    assert!(status.summary.records_in >= status.summary.records_out);
    assert!(status.summary.operators[0].records_in >= 1000, "{status:?}");
    let later = handle.status();
    assert!(later.summary.records_in >= status.summary.records_in);

    handle.stop();
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends after stop()")
        .expect("run task")
        .expect("a stopped run ends with its summary");
    assert!(summary.records_in < ENDLESS, "{summary:?}");
    assert!(
        summary.records_out >= status.summary.records_out,
        "{summary:?}"
    );
    assert_eq!(handle.status().state, RunState::Ended);
    let left = stage_threads();
    assert!(left.is_empty(), "stage threads still running: {left:?}");
}

/// `stop_now()`, as a second SIGINT: without checkpoints the run ends at once with the error
/// that says records in flight were not finished, and its stages are joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_now_through_the_handle_interrupts_the_run_and_joins_its_stages() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let p = Pipeline::new();
    let (handle, run) = start_endless(&p).await;
    let started = Instant::now();
    while handle.status().summary.records_out == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no output after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.stop_now();
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends after stop_now()")
        .expect("run task");
    assert!(
        matches!(result, Err(PipelineError::Interrupted)),
        "{result:?}"
    );
    assert_eq!(handle.status().state, RunState::Ended);
    let left = stage_threads();
    assert!(left.is_empty(), "stage threads still running: {left:?}");
}
