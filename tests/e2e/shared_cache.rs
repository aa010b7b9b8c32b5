//! The request cache shared between processes through a real `redis-server`
//! (`request_cache.storage = "redis"`): two `waio run` processes over the same input, as two
//! members of one consumer group would be, pay the provider once per request between them; a
//! later run pays nothing. The cross-process joining itself (locks, a 5xx not kept, Redis out
//! of reach) is unit-tested in host/src/outbound/request_cache/shared_tests.rs.
//!
//! Fails when `redis-server` is not installed: scripts/test runs scripts/setup-redis first.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::redis::RedisServer;
use waio_tests::*;

const RECORDS: usize = 100;

/// The manifest every process runs, word for word: the shared input by its absolute path, the
/// output next to the manifest (so each run has its own), an `openai` chat operator whose
/// request cache is in Redis.
fn manifest(mock: &MockServer, input: &Path, redis_url: &str) -> String {
    format!(
        "name = \"triage\"\n[source]\nkind = \"file\"\npath = \"{input}\"\n\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n\n[dead_letter]\npath = \"dead.jsonl\"\n\n[[operator]]\nname = \"classify\"\nplugin = \"{plugin}\"\ncapacity = 16\nallowed_hosts = [\"127.0.0.1\"]\nrequest_cache.storage = \"redis\"\nrequest_cache.redis_url = \"{redis_url}\"\n[operator.config]\nbase_url = \"{url}/v1\"\nmode = \"chat\"\nmodel = \"mock-small\"\nsystem_prompt = \"Classify the ticket.\\nLabels: billing, bug, other\"\n",
        input = input.display(),
        plugin = plugin("openai").display(),
        url = mock.url(),
    )
}

/// A run of the manifest in a directory of its own, started at once (killed if the test fails).
fn start(toml: &str) -> (Pipeline, KillOnDrop) {
    let p = Pipeline::new();
    p.manifest(toml);
    let child = spawn_waio(
        p.dir.path(),
        &["run", "pipeline.toml", "--summary-json", "summary.json"],
    );
    (p, KillOnDrop(child))
}

/// Waits for the run to end (off the runtime that serves the mock) and checks it went well.
async fn finish(p: &Pipeline, mut run: KillOnDrop) -> Value {
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut run, Duration::from_secs(120)))
        .await
        .expect("waited");
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("out of reach"), "{stderr}");
    let summary = std::fs::read_to_string(p.path("summary.json")).expect("a summary");
    let summary: Value = serde_json::from_str(&summary).expect("summary JSON");
    summary["operators"][0].clone()
}

/// All the records, in input order, each labelled; none dead-lettered.
fn assert_all_labelled(p: &Pipeline) {
    let output = read_jsonl(&p.path("out.jsonl"));
    let ids: Vec<u64> = output.iter().filter_map(|o| o["id"].as_u64()).collect();
    assert_eq!(ids, (1..=RECORDS as u64).collect::<Vec<_>>());
    assert!(output.iter().all(|o| o["label"].is_string()), "{output:?}");
    assert!(read_jsonl(&p.path("dead.jsonl")).is_empty());
}

fn count(op: &Value, name: &str) -> u64 {
    op[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {op}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_input_pay_each_request_once_and_a_later_run_nothing() {
    let redis = RedisServer::start();
    let mock = mock_with(MockConfig {
        latency_ms: 200,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let input = Pipeline::new();
    let lines: Vec<String> = (1..=RECORDS)
        .map(|i| json!({"id": i, "text": format!("ticket {i}: I was charged twice")}).to_string())
        .collect();
    input.input(&lines);
    let toml = manifest(&mock, &input.path("input.jsonl"), &redis.url());

    let (a, a_run) = start(&toml);
    let (b, b_run) = start(&toml);
    let a_op = finish(&a, a_run).await;
    let b_op = finish(&b, b_run).await;
    assert_eq!(mock.stats().chat, RECORDS as u64, "{a_op}\n{b_op}");
    assert_all_labelled(&a);
    assert_all_labelled(&b);
    // Each request was a miss in one process (which sent it) and a hit in the other, or joined
    // a record of its own process in flight.
    let sum = |name: &str| count(&a_op, name) + count(&b_op, name);
    let answered = sum("request_cache_hits") + sum("request_cache_coalesced");
    assert_eq!(
        sum("request_cache_misses") - sum("request_cache_coalesced"),
        RECORDS as u64
    );
    assert_eq!(answered, RECORDS as u64, "{a_op}\n{b_op}");

    // After both: every answer is in Redis.
    let (c, c_run) = start(&toml);
    let c_op = finish(&c, c_run).await;
    assert_eq!(mock.stats().chat, RECORDS as u64, "{c_op}");
    assert_eq!(count(&c_op, "request_cache_hits"), RECORDS as u64);
    assert_all_labelled(&c);
}

/// Redis out of reach (nothing listens at the URL) costs requests, never records: every record
/// is labelled, each one's request is sent, the log says so once with the URL (its password
/// hidden), and the summary counts the lookups that went without Redis
/// (`request_cache_unreachable`, the metric `waio_cache_unreachable_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_out_of_reach_every_record_is_sent_and_the_lookups_are_counted() {
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let input = Pipeline::new();
    let lines: Vec<String> = (1..=RECORDS)
        .map(|i| json!({"id": i, "text": format!("ticket {i}")}).to_string())
        .collect();
    input.input(&lines);
    let url = format!("redis://:s3cret@127.0.0.1:{closed}/");
    let (p, mut run) = start(&manifest(&mock, &input.path("input.jsonl"), &url));
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut run, Duration::from_secs(120)))
        .await
        .expect("waited");
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.matches("Redis is out of reach").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password is shown: {stderr}"
    );
    assert_all_labelled(&p);
    assert_eq!(mock.stats().chat, RECORDS as u64);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("summary.json")).expect("summary"))
            .expect("summary JSON");
    let op = &summary["operators"][0];
    assert_eq!(
        count(op, "request_cache_unreachable"),
        RECORDS as u64,
        "{op}"
    );
    assert_eq!(count(op, "request_cache_hits"), 0, "{op}");
}
