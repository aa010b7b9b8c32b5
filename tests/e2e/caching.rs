//! The result cache (`cache.*`) and the request cache (`request_cache.*`), end to end: the
//! `openai` and `http-lookup` plugins against the mock provider, whose request counts are what
//! the caches save. Expiry, bounds and damage are unit-tested on fake clocks in
//! `host/src/cache/`; here a user's view: calls seen by the server, records in the output and
//! dead letters, exit codes, what stderr and `waio cache` say.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

/// One `openai` embeddings operator (capacity `capacity`) keyed on `/text`, with `cache` lines
/// (each `cache.KEY = VALUE`) and `extra` sections at the end.
/// One request per record (`batch_requests = false`): these tests count provider calls per
/// text; tests/e2e/batches.rs has the cache with batched requests.
fn embeddings(mock: &MockServer, capacity: usize, cache: &str, extra: &str) -> String {
    format!(
        "name = \"caching\"\n[source]\nkind = \"file\"\npath = \"input.jsonl\"\n\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n\n[dead_letter]\npath = \"dead.jsonl\"\n\n[[operator]]\nname = \"embed\"\nplugin = \"{plugin}\"\ncapacity = {capacity}\nallowed_hosts = [\"127.0.0.1\"]\n{cache}\n[operator.config]\nbase_url = \"{url}/v1\"\nmode = \"embeddings\"\nmodel = \"mock-embed\"\nbatch_requests = false\n\n{extra}",
        plugin = plugin("openai").display(),
        url = mock.url(),
    )
}

/// `records` records, ids 1.., whose texts cycle through `texts`.
fn texts_input(p: &Pipeline, records: usize, texts: &[&str]) {
    let lines: Vec<String> = (0..records)
        .map(|i| json!({"id": i + 1, "text": texts[i % texts.len()]}).to_string())
        .collect();
    p.input(&lines);
}

fn embeddings_calls(mock: &MockServer) -> u64 {
    mock.stats().embeddings
}

fn op(summary: &waio::metrics::RunSummary) -> &waio::metrics::OperatorSummary {
    &summary.operators[0]
}

/// `waio run` in `dir` (off the async runtime, which serves the mock): exit code, stderr and
/// the summary JSON's first operator.
async fn run_bin(dir: &Path) -> (i32, String, Value) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (code, _, stderr) = run_waio(
            &dir,
            &["run", "pipeline.toml", "--summary-json", "summary.json"],
        );
        let summary = std::fs::read_to_string(dir.join("summary.json"))
            .map(|text| serde_json::from_str::<Value>(&text).expect("summary JSON"))
            .map(|s| s["operators"][0].clone())
            .unwrap_or(Value::Null);
        (code, stderr, summary)
    })
    .await
    .expect("waio ran")
}

/// Every output has its own input's id and an embedding, in input order.
fn assert_all_embedded(output: &[Value], records: usize) {
    let ids: Vec<u64> = output
        .iter()
        .map(|o| o["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, (1..=records as u64).collect::<Vec<_>>());
    assert!(
        output.iter().all(|o| o["embedding"].is_array()),
        "{output:?}"
    );
}

/// 60 records over 6 texts, all in flight at once: one provider call per distinct text (the
/// repeats are served by the cache or wait for the call in flight), every record in its place
/// with its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_inputs_make_one_call_per_distinct_input_in_input_order() {
    let mock = mock_with(MockConfig {
        latency_ms: 30,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let texts = ["a", "b", "c", "d", "e", "f"];
    texts_input(&p, 60, &texts);
    let out = p
        .run(&embeddings(&mock, 100, "cache.key = [\"/text\"]\n", ""))
        .await;
    assert_all_embedded(&out.output, 60);
    assert_eq!(embeddings_calls(&mock), 6);
    let s = op(out.summary());
    assert_eq!(s.cache_hits + s.cache_coalesced, 54, "{s:?}");
    assert_eq!(s.cache_entries, 6);
    // Without the cache every record pays.
    let p = Pipeline::new();
    texts_input(&p, 60, &texts);
    let before = embeddings_calls(&mock);
    p.run(&embeddings(&mock, 100, "", "")).await.summary();
    assert_eq!(embeddings_calls(&mock) - before, 60);
}

/// The same requests from records that differ (the request cache keys the HTTP request, not
/// the record): one call per distinct user; a 404 is kept as a failure too, so the records of
/// the missing user fail without calls (dead letters), and no key or value leaks a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cache_answers_identical_requests_and_remembers_a_404() {
    let mock = mock_with(MockConfig {
        latency_ms: 20,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let users = ["u1", "missing-1", "u2"];
    let lines: Vec<String> = (0..30)
        .map(|i| json!({"id": i + 1, "user": users[i % 3]}).to_string())
        .collect();
    p.input(&lines);
    let toml = format!(
        "name = \"lookups\"\n[source]\nkind = \"file\"\npath = \"input.jsonl\"\n\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n\n[dead_letter]\npath = \"dead.jsonl\"\n\n[secrets.kv]\nvalue = \"sk-kv-0001\"\nhosts = [\"127.0.0.1\"]\n\n[[operator]]\nname = \"lookup\"\nplugin = \"{plugin}\"\ncapacity = {capacity}\non_failure = \"dead_letter\"\nallowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"kv\"]\nrequest_cache.storage = \"rocksdb\"\nrequest_cache.path = \"requests\"\n[operator.config]\nurl = \"{url}/kv/{{user}}\"\non_not_found = \"fail\"\nheaders = {{ authorization = \"Bearer ${{secret:kv}}\" }}\n",
        plugin = plugin("http-lookup").display(),
        url = mock.url(),
        capacity = 1,
    );
    let out = p.run(&toml).await;
    let s = op(out.summary()).clone();
    assert_eq!(mock.stats().kv, 3, "{s:?}");
    assert_eq!(out.output.len(), 20);
    assert_eq!(out.dead.len(), 10);
    assert_eq!(
        (s.request_cache_hits, s.request_cache_negative_hits),
        (18, 9)
    );
    // Nothing in the cache's files holds the secret.
    for file in std::fs::read_dir(p.path("requests")).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(10).any(|w| w == b"sk-kv-0001"),
            "a cache file holds the secret"
        );
    }
    // All at once (capacity 30): identical requests in flight are sent once.
    let p2 = Pipeline::new();
    let lines: Vec<String> = (0..30)
        .map(|i| json!({"id": i + 1, "user": format!("v{}", i % 3)}).to_string())
        .collect();
    p2.input(&lines);
    let toml2 = toml.replace("capacity = 1", "capacity = 30").replace(
        "request_cache.storage = \"rocksdb\"\nrequest_cache.path = \"requests\"\n",
        "request_cache.enabled = true\n",
    );
    let before = mock.stats().kv;
    let out = p2.run(&toml2).await;
    assert_eq!(mock.stats().kv - before, 3);
    assert_eq!(op(out.summary()).request_cache_coalesced, 27);
}

/// A heap cache of 2 entries with LRU eviction over A B A C A B: A stays (used), B goes for
/// C, C for B: four calls, two evictions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_entries_gives_up_the_least_recently_used_entry() {
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let order = ["A", "B", "A", "C", "A", "B"];
    texts_input(&p, 6, &order);
    let cache = "cache.key = [\"/text\"]\ncache.max_entries = 2\ncache.eviction = \"lru\"\n";
    let out = p.run(&embeddings(&mock, 1, cache, "")).await;
    assert_all_embedded(&out.output, 6);
    assert_eq!(embeddings_calls(&mock), 4);
    let s = op(out.summary());
    assert_eq!(
        (s.cache_hits, s.cache_evictions, s.cache_entries),
        (2, 2, 2)
    );
}

/// RocksDB storage: a second run over the same input makes no call; a changed plugin config
/// is not served the old entries; after the time to live, calls again. `waio cache stats`
/// and `clear` see and empty the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rocksdb_cache_outlives_the_run_until_its_ttl_and_a_config_change() {
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    texts_input(&p, 20, &["a", "b", "c", "d", "e"]);
    let cache = "cache.key = [\"/text\"]\ncache.storage = \"rocksdb\"\ncache.path = \"results\"\ncache.ttl = \"4s\"\n";
    p.manifest(&embeddings(&mock, 4, cache, ""));
    let (code, stderr, s) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(embeddings_calls(&mock), 5);
    assert_eq!(s["cache_entries"], 5);
    let (code, stderr, s) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        embeddings_calls(&mock),
        5,
        "the second run called the provider"
    );
    assert_eq!(s["cache_hits"], 20);
    assert_all_embedded(&read_jsonl(&p.path("out.jsonl")), 20);

    let (code, checked, _) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0);
    assert!(
        checked.contains("result cache: rocksdb in results")
            && checked.contains("answers for 4s, failures for 10m; key: /text"),
        "{checked}"
    );

    let (code, stats, _) = run_waio(p.dir.path(), &["cache", "stats", "results"]);
    assert_eq!(code, 0);
    assert!(
        stats.contains("(result cache)") && stats.contains("5 answers"),
        "{stats}"
    );

    // Another prompt, another answer: the old entries are not served.
    let changed = embeddings(&mock, 4, cache, "").replace(
        "model = \"mock-embed\"",
        "model = \"mock-embed\"\ninput_field = \"text\"",
    );
    p.manifest(&changed);
    let (code, stderr, _) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(embeddings_calls(&mock), 10);

    // The entries live 4 s: after that the same run calls again.
    std::thread::sleep(Duration::from_millis(4_100));
    let (code, stderr, s) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(embeddings_calls(&mock), 15);
    assert_eq!(s["cache_hits"], 15);

    let (code, cleared, _) = run_waio(
        p.dir.path(),
        &["cache", "clear", "results", "--older-than", "1h"],
    );
    assert_eq!(code, 0);
    assert!(cleared.contains("removed 0 entries"), "{cleared}");
    let (code, cleared, _) = run_waio(p.dir.path(), &["cache", "clear", "results"]);
    assert_eq!(code, 0);
    assert!(cleared.contains("; 0 left"), "{cleared}");
    let (code, _, stderr) = run_waio(p.dir.path(), &["cache", "stats", "nowhere"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("nowhere") && stderr.contains("holds no waio cache"),
        "{stderr}"
    );
}

/// No double payment after a crash: with checkpoints far apart, a run killed with SIGKILL
/// replays everything since its start; with the RocksDB result cache, what was answered
/// before the kill is served from the cache. Calls over both runs stay within the records
/// plus those in flight at the kill, and the output holds each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_answered_before_a_sigkill_is_not_paid_again_on_replay() {
    const RECORDS: usize = 300;
    const CAPACITY: usize = 10;
    let mock = mock_with(MockConfig {
        latency_ms: 10,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let lines: Vec<String> = (0..RECORDS)
        .map(|i| json!({"id": i + 1, "text": format!("text {i}")}).to_string())
        .collect();
    p.input(&lines);
    let cache = "cache.storage = \"rocksdb\"\ncache.path = \"results\"\n";
    p.manifest(&embeddings(
        &mock,
        CAPACITY,
        cache,
        "[checkpoint]\ndir = \"state\"\ninterval = \"1h\"\n",
    ));
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    let m = &mock;
    tokio::task::block_in_place(|| {
        wait_until("half the records answered", LIMIT, || {
            embeddings_calls(m) >= 150
        })
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let at_kill = embeddings_calls(&mock);
    assert!(at_kill < RECORDS as u64, "the run ended before the kill");
    let (code, stderr, s) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    let calls = embeddings_calls(&mock);
    assert!(
        calls <= (RECORDS + CAPACITY) as u64,
        "{calls} calls for {RECORDS} records ({at_kill} before the kill)"
    );
    assert!(
        s["cache_hits"].as_u64().unwrap_or(0) >= at_kill - CAPACITY as u64,
        "{s}"
    );
    assert_all_embedded(&read_jsonl(&p.path("out.jsonl")), RECORDS);
}

/// Damage: a cache whose table files are overwritten, and a cache path that is a file: the
/// run completes with the right output, calls the provider, and says which cache it could
/// not use. A cache directory locked by a running `waio` is an error at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cache_is_reported_and_skipped_and_a_locked_one_refused() {
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    texts_input(&p, 10, &["a", "b"]);
    let cache = "cache.key = [\"/text\"]\ncache.storage = \"rocksdb\"\ncache.path = \"results\"\n";
    p.manifest(&embeddings(&mock, 1, cache, ""));
    let (code, stderr, _) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(embeddings_calls(&mock), 2);
    let mut damaged = 0;
    for file in std::fs::read_dir(p.path("results")).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "sst") {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 3;
            let end = (middle + 64).min(bytes.len());
            for b in &mut bytes[middle..end] {
                *b = 0x5a;
            }
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no table file to damage");
    let (code, stderr, _) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("results"), "{stderr}");
    assert!(stderr.contains("goes on without"), "{stderr}");
    assert!(embeddings_calls(&mock) > 2, "a damaged cache answered");
    assert_all_embedded(&read_jsonl(&p.path("out.jsonl")), 10);

    // A file where the directory should be.
    std::fs::write(p.path("not-a-dir"), "x").unwrap();
    p.manifest(&embeddings(
        &mock,
        1,
        &cache.replace("\"results\"", "\"not-a-dir\""),
        "",
    ));
    let (code, stderr, _) = run_bin(p.dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("not-a-dir") && stderr.contains("goes on without"),
        "{stderr}"
    );
    assert_all_embedded(&read_jsonl(&p.path("out.jsonl")), 10);

    // Locked by a running waio (slow answers keep it running).
    let slow = mock_with(MockConfig {
        latency_ms: 500,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let fresh = "cache.storage = \"rocksdb\"\ncache.path = \"shared\"\n";
    p.manifest(&embeddings(&slow, 1, fresh, ""));
    let mut first = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    let s = &slow;
    tokio::task::block_in_place(|| {
        wait_until("the first run calling", LIMIT, || s.stats().embeddings >= 1)
    });
    let other = Pipeline::new();
    texts_input(&other, 1, &["a"]);
    other.manifest(&embeddings(
        &slow,
        1,
        &format!(
            "cache.storage = \"rocksdb\"\ncache.path = \"{}\"\n",
            p.path("shared").display()
        ),
        "",
    ));
    let (code, stderr, _) = run_bin(other.dir.path()).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("in use by another process") && stderr.contains("shared"),
        "{stderr}"
    );
}
