//! The same plugin inside Apache Flink: a real standalone Flink 2.3 cluster on 127.0.0.1 (two
//! TaskManagers) runs examples/flink's TriageJob at parallelism 4, whose WaioAsyncFunction calls
//! `waio serve`. One cluster for every scenario, one after the other (a cluster takes ~10 s to
//! start and two JVMs' memory).
//! Two TaskManagers of two slots, so that every job spans both.
//! 1. the shipped example (examples/flink/serve.toml, the quickstart's tickets): every ticket
//!    once, with the plugins' answers, from four subtasks;
//! 2. the sidecar SIGKILLed and started again mid-job: Flink's retry strategy recovers the
//!    records that were in flight, without a job restart, and nothing is lost or doubled;
//! 3. a TaskManager SIGKILLed mid-job with checkpoints on: the job restarts from its checkpoint,
//!    and the records Flink replays make no second provider call (the sidecar's request cache).
//!
//! Needs scripts/setup-flink (a JDK, the Flink distribution from PyPI, the jars built).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::flink::FlinkCluster;
use waio_tests::serve::Sidecar;
use waio_tests::{
    mock_with, plugin, repo_root, signal, wait_exit, wait_until, MockConfig, MockServer, Pipeline,
};

const JOB: &str = "io.waio.examples.TriageJob";
const LIMIT: Duration = Duration::from_secs(180);

/// scripts/build-flink (quick when nothing changed): the example jar, library included.
fn example_jar() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/build-flink"))
        .output()
        .expect("run scripts/build-flink");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build-flink failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jar = stdout
        .lines()
        .find(|l| l.ends_with("waio-flink-examples.jar"))
        .map(PathBuf::from);
    jar.unwrap_or_else(|| panic!("no example jar in build-flink's output:\n{stdout}"))
}

/// The published records of the job's FileSink in `dir` (part files `triage-*`; in-progress
/// files are hidden and not counted), by id.
fn published(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("output dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("triage-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            let id = record["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| record["id"].to_string());
            by_id.entry(id).or_default().push(record);
        }
    }
    by_id
}

/// Every input id exactly once in the output, each labelled.
fn assert_exactly_once(output: &Path, ids: &[String]) {
    let out = published(output);
    let doubled: Vec<_> = out
        .iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(doubled.is_empty(), "published more than once: {doubled:?}");
    let missing: Vec<_> = ids.iter().filter(|id| !out.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} missing, e.g. {:?}",
        missing.len(),
        ids.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(out.len(), ids.len());
    let unlabelled = out.values().filter(|r| !r[0]["label"].is_string()).count();
    assert_eq!(unlabelled, 0, "records without the plugin's label");
}

/// Runs the job to FINISHED and returns its restarts.
fn run_job(cluster: &FlinkCluster, jar: &Path, args: &[&str], during: impl FnOnce(&str)) -> u64 {
    let id = cluster.submit(jar, JOB, args);
    during(&id);
    let state = cluster.wait_for_state(&id, &["FINISHED", "FAILED", "CANCELED"], LIMIT);
    assert_eq!(state, "FINISHED", "job {id}:\n{}", cluster.log_tails(40));
    cluster.restarts(&id)
}

/// The quickstart's triage operator against the test's mock, with a heap request cache.
fn triage_manifest(p: &Pipeline, mock: &MockServer, capacity: usize) -> PathBuf {
    p.manifest(&format!(
        "name = \"flink-test\"\n[source]\nkind = \"serve\"\n\n\
         [[operator]]\nname = \"triage\"\nplugin = \"{plugin}\"\ncapacity = {capacity}\nallowed_hosts = [\"127.0.0.1\"]\nrequest_cache.max_entries = 100000\n\
         [operator.config]\nbase_url = \"{url}/v1\"\nmodel = \"mock-small\"\ninput_field = \"text\"\noutput_field = \"label\"\ntemperature = 0.0\nmax_tokens = 3\n",
        plugin = plugin("openai").display(),
        url = mock.url(),
    ))
}

fn tickets(p: &Pipeline, n: usize) -> (PathBuf, Vec<String>) {
    let ids: Vec<String> = (1..=n).map(|i| format!("T-{i}")).collect();
    let lines: Vec<String> = ids
        .iter()
        .map(|id| {
            json!({"id": id, "customer": "Acme", "text": format!("ticket {id}: the export fails")})
                .to_string()
        })
        .collect();
    p.input(&lines);
    (p.path("input.jsonl"), ids)
}

fn args<'a>(input: &'a str, output: &'a str, sidecar: &'a str) -> Vec<&'a str> {
    vec![
        "--input",
        input,
        "--output",
        output,
        "--sidecar",
        sidecar,
        "--parallelism",
        "4",
        "--checkpoint-interval",
        "500",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn flink_jobs_call_waio_serve_through_failovers_and_sidecar_restarts() {
    let jar = example_jar();
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 100,
        ..MockConfig::default()
    })
    .await;
    let mock = std::sync::Arc::new(mock);
    let counted = std::sync::Arc::clone(&mock);
    tokio::task::spawn_blocking(move || {
        // Two slots each: a job at parallelism 4 spans both TaskManagers.
        let cluster = FlinkCluster::start(2, 2);
        the_shipped_example(&cluster, &jar);
        a_sidecar_restart(&cluster, &jar, &counted);
        a_task_manager_lost(&cluster, &jar, &counted);
    })
    .await
    .expect("scenarios");
}

fn the_shipped_example(cluster: &FlinkCluster, jar: &Path) {
    let p = Pipeline::new();
    let example = repo_root().join("examples/flink");
    let text = std::fs::read_to_string(example.join("serve.toml")).expect("serve.toml");
    let dist = repo_root().join("dist");
    let manifest = p.manifest(&text.replace("../../dist", &dist.to_string_lossy()));
    let sidecar = Sidecar::start(p.dir.path(), &manifest);
    let input = repo_root().join("examples/quickstart/tickets.jsonl");
    let ids: Vec<String> = std::fs::read_to_string(&input)
        .expect("tickets")
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l).ok()?["id"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let output = p.path("triaged");
    let url = format!("http://{}", sidecar.addr);
    let (input, output_s) = (input.to_string_lossy(), output.to_string_lossy());
    run_job(cluster, jar, &args(&input, &output_s, &url), |_| {});
    assert_exactly_once(&output, &ids);
    let out = published(&output);
    let urgent = out.values().filter(|r| r[0]["label"] == "urgent").count();
    let escalated = out
        .values()
        .filter(|r| r[0]["escalation"].is_string())
        .count();
    assert!(
        urgent > 0 && escalated == urgent,
        "{urgent} urgent, {escalated} escalated"
    );
    // Four subtasks called the sidecar, each its own caller.
    let (_, metrics) = sidecar.get("/metrics");
    let callers = metrics
        .lines()
        .filter(|l| l.starts_with("waio_serve_batches_total{"))
        .count();
    assert_eq!(callers, 4, "{metrics}");
}

fn a_sidecar_restart(cluster: &FlinkCluster, jar: &Path, mock: &MockServer) {
    let p = Pipeline::new();
    let manifest = triage_manifest(&p, mock, 40);
    let (input, ids) = tickets(&p, 2000);
    let output = p.path("triaged");
    let mut sidecar = Sidecar::start(p.dir.path(), &manifest);
    let addr = sidecar.addr;
    let url = format!("http://{addr}");
    let (input, output_s) = (input.to_string_lossy(), output.to_string_lossy());
    let before = mock.stats().chat;
    let mut restarted = None;
    let restarts = run_job(cluster, jar, &args(&input, &output_s, &url), |_| {
        wait_until("a third of the records", LIMIT, || {
            mock.stats().chat >= before + 600
        });
        signal(&sidecar.process, "KILL");
        wait_exit(&mut sidecar.process, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        restarted = Some(Sidecar::start_at(p.dir.path(), &manifest, addr));
    });
    assert_exactly_once(&output, &ids);
    assert_eq!(
        restarts, 0,
        "Flink's retry strategy, not a job restart, recovered the records"
    );
    let restarted = restarted.expect("the sidecar restarted");
    let (_, metrics) = restarted.get("/metrics");
    let served: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("waio_serve_records_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(
        served > 0.0 && served < 2000.0,
        "the new sidecar served the rest: {served}"
    );
}

fn a_task_manager_lost(cluster: &FlinkCluster, jar: &Path, mock: &MockServer) {
    let p = Pipeline::new();
    let manifest = triage_manifest(&p, mock, 40);
    let (input, ids) = tickets(&p, 2000);
    let output = p.path("triaged");
    let sidecar = Sidecar::start(p.dir.path(), &manifest);
    let url = format!("http://{}", sidecar.addr);
    let (input, output_s) = (input.to_string_lossy(), output.to_string_lossy());
    let before = mock.stats().chat;
    // Not "all tasks RUNNING": the source subtasks that get no split (one file is one split)
    // finish at once. The provider's count says the job is well under way.
    let restarts = run_job(cluster, jar, &args(&input, &output_s, &url), |_| {
        wait_until("a third of the records", LIMIT, || {
            mock.stats().chat >= before + 600
        });
        let victim = cluster.task_manager_pids()[0];
        cluster.kill_task_manager(victim);
        // A supervisor's part (standalone Flink has none): the slots come back.
        cluster.start_task_manager();
    });
    assert!(
        restarts >= 1,
        "the job restarted after losing a TaskManager"
    );
    assert_exactly_once(&output, &ids);
    // Flink replayed the records after its last checkpoint; the sidecar answered those from its
    // request cache (or joined them to the same request still in flight).
    assert_eq!(
        mock.stats().chat - before,
        2000,
        "one provider call per ticket, replays included"
    );
    let (_, metrics) = sidecar.get("/metrics");
    let sent: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("waio_serve_records_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(sent > 2000.0, "Flink sent replayed records again: {sent}");
}
