//! Kafka in and out, against a real Kafka-protocol broker (noida-db): exactly-once output through
//! transactions across SIGKILLs, two processes sharing a consumer group, per-partition event
//! time with an idle partition, and bad input.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::kafka::{Broker, Read};
use waio_tests::{
    mock_with, plugin, run_waio, signal, spawn_waio, wait_exit, wait_until, KillOnDrop, MockConfig,
    MockServer,
};

const LIMIT: Duration = Duration::from_secs(60);

/// A Kafka -> operator -> Kafka manifest. `source_extra` and `extra` are added to `[source]` and
/// at the end.
fn manifest(broker: &Broker, operator: &str, source_extra: &str, extra: &str) -> String {
    format!(
        "name = \"kafka-test\"\n\
         [source]\nkind = \"kafka\"\nbrokers = \"{addr}\"\ntopic = \"in\"\ngroup_id = \"enrich\"\n{source_extra}\n\
         [sink]\nkind = \"kafka\"\nbrokers = \"{addr}\"\ntopic = \"out\"\n\n\
         [dead_letter]\nkind = \"kafka\"\ntopic = \"dlq\"\n\n\
         {operator}\n{extra}",
        addr = broker.addr(),
    )
}

/// The openai plugin's embeddings against the mock, one request per record.
fn embeddings(mock: &MockServer, capacity: usize, cache: &str) -> String {
    format!(
        "[[operator]]\nname = \"embed\"\nplugin = \"{plugin}\"\ncapacity = {capacity}\nallowed_hosts = [\"127.0.0.1\"]\n{cache}\n[operator.config]\nbase_url = \"{url}/v1\"\nmode = \"embeddings\"\nmodel = \"mock-embed\"\nbatch_requests = false\n",
        plugin = plugin("openai").display(),
        url = mock.url(),
    )
}

/// The mock provider on a free port, answering after `latency_ms`.
async fn mock_at(latency_ms: u64) -> MockServer {
    mock_with(MockConfig {
        latency_ms,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
}

/// `waio run pipeline.toml` in `dir` to its end, off the async runtime that serves the mock:
/// (exit code, stderr).
async fn run_to_end(dir: &Path) -> (i32, String) {
    let dir = dir.to_path_buf();
    let (code, _, stderr) =
        tokio::task::spawn_blocking(move || run_waio(&dir, &["run", "pipeline.toml"]))
            .await
            .expect("waio ran");
    (code, stderr)
}

fn echo() -> String {
    format!(
        "[[operator]]\nname = \"echo\"\nplugin = \"{}\"\n",
        plugin("echo").display()
    )
}

/// `n` records `{"id", "text"}` keyed `k<id>`, spread over `partitions`.
fn records(ids: std::ops::Range<u64>, partitions: i32) -> Vec<(i32, Option<String>, String)> {
    ids.map(|i| {
        (
            (i % partitions as u64) as i32,
            Some(format!("k{i}")),
            json!({"id": i, "text": format!("ticket {i} about an invoice")}).to_string(),
        )
    })
    .collect()
}

/// How many times each id appears in the output.
fn id_counts(out: &[Read]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for r in out {
        let v: Value = serde_json::from_str(&r.value).expect("output is JSON");
        *counts.entry(v["id"].as_u64().expect("id")).or_insert(0) += 1;
    }
    counts
}

fn assert_each_once(out: &[Read], ids: std::ops::Range<u64>) {
    let counts = id_counts(out);
    let missing: Vec<u64> = ids.clone().filter(|i| !counts.contains_key(i)).collect();
    let twice: Vec<(&u64, &usize)> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(missing.is_empty(), "missing ids: {missing:?}");
    assert!(twice.is_empty(), "ids seen more than once: {twice:?}");
    assert_eq!(counts.len(), ids.count(), "unexpected ids in the output");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

/// Kafka -> openai (mock provider) -> Kafka with checkpoints, SIGKILLed four times mid-run and
/// run to the end: a `read_committed` consumer of the output sees every input once, with its
/// key and headers; the values that are not JSON are dead letters once each, naming topic,
/// partition and offset; with the persistent request cache the re-read records are not paid
/// for again (calls stay within the records plus what was in flight at each kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_consumer_sees_each_result_once_across_sigkills() {
    const N: u64 = 600;
    const CAPACITY: usize = 10;
    let broker = Broker::start();
    broker.create_topics(&["in", "out", "dlq"], 2);
    let mut input = records(0..N, 2);
    // A header on every 10th record, carried over to its output.
    let with_headers: Vec<_> = input
        .drain(..)
        .map(|(p, k, v)| {
            let id: u64 = k.as_deref().unwrap_or("k0")[1..].parse().unwrap_or(0);
            let headers = if id.is_multiple_of(10) {
                vec![("trace", "t")]
            } else {
                vec![]
            };
            (p, k, v, headers)
        })
        .collect();
    broker.produce_with_headers(&with_headers, "in");
    broker.produce(
        &[(0, None, "not json".into()), (1, None, "{\"id\": ".into())],
        "in",
    );
    let mock = mock_at(5).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pipeline.toml",
        &manifest(
            &broker,
            &embeddings(
                &mock,
                CAPACITY,
                "request_cache.storage = \"rocksdb\"\nrequest_cache.path = \"requests\"\n",
            ),
            "bounded = true\n[source.kafka]\n\"group.instance.id\" = \"enricher-1\"\n",
            "[checkpoint]\ndir = \"state\"\ninterval = \"150ms\"\n",
        ),
    );
    let m = &mock;
    let mut kills = 0;
    for target in [120, 240, 360, 480] {
        let mut child = KillOnDrop(spawn_waio(dir.path(), &["run", "pipeline.toml"]));
        tokio::task::block_in_place(|| {
            wait_until("provider calls", LIMIT, || m.stats().embeddings >= target)
        });
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        kills += 1;
    }
    let at_last_kill = mock.stats().embeddings;
    assert!(at_last_kill < N, "the run ended before the last kill");
    let (code, stderr) = run_to_end(dir.path()).await;
    assert_eq!(code, 0, "{stderr}");

    let out = broker.read_committed("out");
    assert_each_once(&out, 0..N);
    for r in &out {
        let v: Value = serde_json::from_str(&r.value).unwrap();
        let id = v["id"].as_u64().unwrap();
        assert_eq!(r.key.as_deref(), Some(format!("k{id}").as_str()));
        assert!(v["embedding"].is_array(), "{v}");
        let expected: Vec<(String, String)> = match id % 10 {
            0 => vec![("trace".into(), "t".into())],
            _ => vec![],
        };
        assert_eq!(r.headers, expected, "id {id}");
    }
    let dead = broker.read_committed("dlq");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let mut places: Vec<String> = dead
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(&d.value).unwrap();
            assert_eq!(v["stage"], "source");
            assert_eq!(v["reason"], "parse");
            let place = format!(
                "kafka topic in partition {} offset {}",
                v["kafka"]["partition"], v["kafka"]["offset"]
            );
            assert!(v["error"].as_str().unwrap().starts_with(&place), "{v}");
            place
        })
        .collect();
    places.sort();
    let n_per_partition = N / 2;
    assert_eq!(
        places,
        [
            format!("kafka topic in partition 0 offset {n_per_partition}"),
            format!("kafka topic in partition 1 offset {n_per_partition}"),
        ]
    );
    let calls = mock.stats().embeddings;
    assert!(
        calls <= N + kills * CAPACITY as u64,
        "{calls} provider calls for {N} records and {kills} kills"
    );
}

/// What the provider was paid in [`two_processes`]: calls and rebalances in each phase.
struct Handover {
    /// Calls until every one of the first 400 records was out, while b joined a.
    first_calls: u64,
    /// Rebalances a went through meanwhile.
    a_rebalances: u64,
    /// Calls for the next 400 records, after a's graceful stop.
    second_calls: u64,
    /// Rebalances b went through in all.
    b_rebalances: u64,
}

const HANDOVER_CAPACITY: u64 = 4;

/// Two processes with one `group_id` over a 4-partition topic, `cache` in their operator. The
/// second joins while the first is busy: the first commits what it did for the partitions it
/// loses and leaves what it still held to the new owner. A graceful stop of one then finishes
/// its records and hands its partitions to the other, which goes on. Asserts that no record is
/// lost or duplicated and that the partitions moved; returns what the provider was paid.
async fn two_processes(cache: &str) -> Handover {
    // 400 records at 40 ms, 4 at a time: a is busy for about 4 s when b joins.
    let broker = Broker::start();
    broker.create_topics(&["in", "out", "dlq"], 4);
    let mock = mock_at(40).await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, dir) in dirs.iter().enumerate() {
        write(
            dir.path(),
            "pipeline.toml",
            &manifest(
                &broker,
                &embeddings(&mock, HANDOVER_CAPACITY as usize, cache),
                "",
                "[checkpoint]\ndir = \"state\"\ninterval = \"200ms\"\n",
            )
            // One producer identity per process: the same one would fence the other.
            .replace(
                "topic = \"out\"",
                &format!("topic = \"out\"\ntransactional_id = \"p{i}\""),
            ),
        );
    }
    let log = |i: usize| waio_tests::reload::log(dirs[i].path());
    let assigned = |i: usize| log(i).matches("kafka: partition assigned").count();
    let m = &mock;
    broker.produce(&records(0..400, 4), "in");
    let mut a = KillOnDrop(spawn_waio(dirs[0].path(), &["run", "pipeline.toml"]));
    tokio::task::block_in_place(|| wait_until("a is busy", LIMIT, || m.stats().embeddings >= 40));
    let mut b = KillOnDrop(spawn_waio(dirs[1].path(), &["run", "pipeline.toml"]));
    let both = |broker: &Broker, n: usize| {
        let until = std::time::Instant::now() + LIMIT;
        while broker.read_committed("out").len() < n {
            assert!(
                std::time::Instant::now() < until,
                "{n} outputs not reached ({} there)\nprocess a:\n{}\nprocess b:\n{}",
                broker.read_committed("out").len(),
                log(0),
                log(1)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    tokio::task::block_in_place(|| both(&broker, 400));
    assert!(
        log(0).contains("partitions revoked") && assigned(1) > 0,
        "b never took partitions from a\n{}\n{}",
        log(0),
        log(1)
    );
    let first_calls = mock.stats().embeddings;
    let a_rebalances = log(0).matches("partitions revoked").count() as u64;

    signal(&a, "TERM");
    let code = tokio::task::block_in_place(|| wait_exit(&mut a, LIMIT));
    assert_eq!(code, 0, "process a: {}", log(0));
    broker.produce(&records(400..800, 4), "in");
    tokio::task::block_in_place(|| both(&broker, 800));
    signal(&b, "TERM");
    let code = tokio::task::block_in_place(|| wait_exit(&mut b, LIMIT));
    assert_eq!(code, 0, "process b: {}", log(1));
    assert_each_once(&broker.read_committed("out"), 0..800);
    // b holds all four partitions at the end: its first share and a's.
    assert!(assigned(1) >= 4, "{}", log(1));
    Handover {
        first_calls,
        a_rebalances,
        second_calls: mock.stats().embeddings - first_calls,
        b_rebalances: log(1).matches("partitions revoked").count() as u64,
    }
}

/// Each process with its own request cache (none here): a rebalance revokes every partition of
/// a (the eager protocol), and what a had in flight then is done again by the new owner: at
/// most its capacity per rebalance. The graceful stop finished a's records: b pays for none of
/// them again, only for what it had in flight itself at its own rebalances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_split_the_partitions_and_hand_them_over() {
    let paid = two_processes("").await;
    let most = 400 + HANDOVER_CAPACITY * paid.a_rebalances;
    assert!(
        (400..=most).contains(&paid.first_calls),
        "{} calls for 400 records over {} rebalances: more than the records in flight were redone",
        paid.first_calls,
        paid.a_rebalances
    );
    let most = 400 + HANDOVER_CAPACITY * paid.b_rebalances;
    assert!(
        (400..=most).contains(&paid.second_calls),
        "{} calls for 400 records after a's stop, {} rebalances in b",
        paid.second_calls,
        paid.b_rebalances
    );
}

/// With the request cache shared through Redis, a record that moves to another process is
/// paid once: the new owner finds the answer the old one got, or waits for the old one's
/// request still in flight. Exactly one provider call per record, rebalances or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shared_request_cache_a_record_that_moves_is_paid_once() {
    let redis = waio_tests::redis::RedisServer::start();
    let cache = format!(
        "request_cache.storage = \"redis\"\nrequest_cache.redis_url = \"{}\"\n",
        redis.url()
    );
    let paid = two_processes(&cache).await;
    assert!(paid.a_rebalances > 0);
    assert_eq!(
        (paid.first_calls, paid.second_calls),
        (400, 400),
        "provider calls for 400 records before and after a's stop ({} and {} rebalances)",
        paid.a_rebalances,
        paid.b_rebalances
    );
}

/// Without `[checkpoint]`: at-least-once, with offsets committed every `commit_interval` after
/// the outputs before them were flushed. A run SIGKILLed midway and run again repeats only what
/// followed the last commit: every input comes out, and fewer are repeated than had come out
/// before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_checkpoints_offsets_commit_periodically_at_least_once() {
    const N: u64 = 400;
    let broker = Broker::start();
    broker.create_topics(&["in", "out", "dlq"], 1);
    broker.produce(&records(0..N, 1), "in");
    let mock = mock_at(10).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pipeline.toml",
        &manifest(
            &broker,
            &embeddings(&mock, 4, ""),
            "bounded = true\ncommit_interval = \"100ms\"\n[source.kafka]\n\"group.instance.id\" = \"one\"\n",
            "",
        ),
    );
    let mut child = KillOnDrop(spawn_waio(dir.path(), &["run", "pipeline.toml"]));
    tokio::task::block_in_place(|| {
        wait_until("200 outputs", LIMIT, || {
            broker.read_committed("out").len() >= 200
        })
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let before = broker.read_committed("out").len();
    assert!(before < N as usize, "the run ended before the kill");
    let (code, stderr) = run_to_end(dir.path()).await;
    assert_eq!(code, 0, "{stderr}");
    let out = broker.read_committed("out");
    let counts = id_counts(&out);
    assert!(
        (0..N).all(|i| counts.contains_key(&i)),
        "an input is missing"
    );
    let repeated = out.len() - N as usize;
    assert!(
        repeated < before,
        "{repeated} repeated of {before} before the kill: the offsets were never committed"
    );
}

/// A zombie cannot commit: a second process started with the same `transactional_id` fences
/// the first, whose next commit fails naming the fencing (it exits non-zero and commits nothing
/// more); the second reads on from the committed offsets; the output holds each input once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_process_commits_nothing_more() {
    let broker = Broker::start();
    broker.create_topics(&["in", "out", "dlq"], 2);
    broker.produce(&records(0..300, 2), "in");
    let mock = mock_at(20).await;
    let text = manifest(
        &broker,
        &embeddings(&mock, 4, ""),
        "",
        "[checkpoint]\ndir = \"state\"\ninterval = \"200ms\"\n",
    );
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for dir in &dirs {
        write(dir.path(), "pipeline.toml", &text);
    }
    let m = &mock;
    let mut zombie = KillOnDrop(spawn_waio(dirs[0].path(), &["run", "pipeline.toml"]));
    tokio::task::block_in_place(|| wait_until("a is busy", LIMIT, || m.stats().embeddings >= 40));
    let mut successor = KillOnDrop(spawn_waio(dirs[1].path(), &["run", "pipeline.toml"]));
    let code = tokio::task::block_in_place(|| wait_exit(&mut zombie, LIMIT));
    let log = waio_tests::reload::log(dirs[0].path());
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("this process was fenced"), "{log}");
    tokio::task::block_in_place(|| {
        wait_until("300 outputs", LIMIT, || {
            broker.read_committed("out").len() >= 300
        })
    });
    signal(&successor, "TERM");
    let code = tokio::task::block_in_place(|| wait_exit(&mut successor, LIMIT));
    assert_eq!(code, 0, "{}", waio_tests::reload::log(dirs[1].path()));
    assert_each_once(&broker.read_committed("out"), 0..300);
}

/// Event time per partition: the combined watermark is the minimum over partitions, so a
/// partition with no records holds it back for the whole run, unless `idle_timeout` lets the
/// others go on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_holds_event_time_back_only_without_idle_timeout() {
    let broker = Broker::start();
    broker.create_topics(&["in", "out", "dlq"], 2);
    // Records only in partition 0, event time advancing a second per record.
    let input: Vec<(i32, Option<String>, String)> = (0..200)
        .map(|i| {
            (
                0,
                None,
                json!({"id": i, "text": "t", "ts": 1_000_000 + i * 1000}).to_string(),
            )
        })
        .collect();
    broker.produce(&input, "in");
    // A slow operator (capacity 2, 10 ms per record) keeps the run going for about a second.
    let mock = mock_at(10).await;
    let slow = embeddings(&mock, 2, "");
    let run = |group: &str, idle: &str| -> Value {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "pipeline.toml",
            &manifest(
                &broker,
                &slow,
                &format!("bounded = true\n{idle}\n"),
                "[event_time]\nfield = \"ts\"\nmax_out_of_orderness = \"0s\"\nwatermark_interval = \"0s\"\n",
            )
            .replace("group_id = \"enrich\"", &format!("group_id = \"{group}\"")),
        );
        let (code, _, stderr) = run_waio(
            dir.path(),
            &["run", "pipeline.toml", "--summary-json", "summary.json"],
        );
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap()
    };
    let held = tokio::task::block_in_place(|| run("held", ""));
    let idle = tokio::task::block_in_place(|| run("idle", "idle_timeout = \"100ms\""));
    // Held back: only the end of the bounded input releases one watermark.
    assert_eq!(held["watermarks_in"], 1, "{held}");
    let advanced = idle["watermarks_in"].as_u64().unwrap();
    assert!(advanced > 10, "{idle}");
    assert_eq!(held["records_out"], 200);
    assert_eq!(idle["records_out"], 200);
}

/// Bad input: unreachable brokers and an unknown topic fail the run at start with the
/// manifest's place; without `[checkpoint]` (at-least-once) a value that is not JSON is a dead
/// letter naming topic, partition and offset, and the records around it come out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_brokers_topics_and_values_are_named() {
    let broker = Broker::start();
    broker.create_topics(&["in", "out", "dlq"], 1);
    broker.produce(
        &[
            (0, Some("a".into()), "{\"id\":1}".into()),
            (0, Some("b".into()), "{\"id\":2".into()),
            (0, Some("c".into()), "{\"id\":3}".into()),
        ],
        "in",
    );
    let dir = tempfile::tempdir().unwrap();
    let good = manifest(&broker, &echo(), "bounded = true\n", "");
    write(dir.path(), "pipeline.toml", &good);
    let (code, _, stderr) = run_waio(dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    let out = broker.read_committed("out");
    assert_eq!(
        out.iter().map(|r| r.value.as_str()).collect::<Vec<_>>(),
        ["{\"id\":1}", "{\"id\":3}"]
    );
    let dead = broker.read_committed("dlq");
    assert_eq!(dead.len(), 1);
    let letter: Value = serde_json::from_str(&dead[0].value).unwrap();
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .starts_with("kafka topic in partition 0 offset 1: invalid JSON"),
        "{letter}"
    );
    assert_eq!(letter["payload"], "{\"id\":2");

    // A second run finds the offsets committed: nothing again.
    let (code, _, stderr) = run_waio(dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(broker.read_committed("out").len(), 2);

    let unknown = good.replace("topic = \"in\"", "topic = \"nowhere\"");
    write(dir.path(), "pipeline.toml", &unknown);
    let (code, _, stderr) = run_waio(dir.path(), &["run", "pipeline.toml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("pipeline.toml:2:1: source.topic: kafka topic \"nowhere\" does not exist"),
        "{stderr}"
    );

    let port = waio_tests::observe::free_port();
    let unreachable = good.replace(&broker.addr(), &format!("127.0.0.1:{port}"));
    write(dir.path(), "pipeline.toml", &unreachable);
    let (code, _, stderr) = run_waio(dir.path(), &["run", "pipeline.toml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!(
            "pipeline.toml:2:1: source.brokers: cannot reach the kafka brokers \"127.0.0.1:{port}\""
        )),
        "{stderr}"
    );
}

/// `examples/kafka/`: the load and the triage as shipped, against a broker on a free port: every
/// ticket comes out once, labelled, keyed by its id; a second run adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_example_triages_every_ticket_once() {
    let broker = Broker::start();
    broker.create_topics(&["tickets", "tickets-triaged", "tickets-dead"], 2);
    let example = waio_tests::repo_root().join("examples/kafka");
    let dir = tempfile::tempdir().unwrap();
    for name in ["load.toml", "pipeline.toml"] {
        let text = std::fs::read_to_string(example.join(name))
            .unwrap()
            .replace("127.0.0.1:19092", &broker.addr())
            .replace(
                "../quickstart/",
                &format!("{}/", example.join("../quickstart").display()),
            )
            .replace(
                "../../dist/",
                &format!("{}/", waio_tests::repo_root().join("dist").display()),
            );
        write(dir.path(), name, &text);
    }
    let tickets = std::fs::read_to_string(example.join("../quickstart/tickets.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let dir_path = dir.path().to_path_buf();
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        let load = run_waio(&dir_path, &["run", "load.toml"]);
        assert_eq!(load.0, 0, "{}", load.2);
        let first = run_waio(&dir_path, &["run", "pipeline.toml"]);
        assert_eq!(first.0, 0, "{}", first.2);
        run_waio(&dir_path, &["run", "pipeline.toml"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let out = broker.read_committed("tickets-triaged");
    assert_eq!(out.len(), tickets);
    let mut ids = Vec::new();
    for r in &out {
        let v: Value = serde_json::from_str(&r.value).unwrap();
        assert!(v["label"].is_string(), "{v}");
        assert_eq!(
            r.key.as_deref(),
            Some(v["id"].to_string().trim_matches('"')),
            "{v}"
        );
        ids.push(v["id"].to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), tickets, "a ticket came out twice");
}

/// A Kafka record's headers reach the plugin (`result-future.input-headers`, WIT 0.4.0) in every
/// SDK: each language's conformance plugin answers mode `headers` with the headers it was given,
/// in order, a repeated name and an empty value included; the output carries them on to Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_in_every_language_read_the_input_headers() {
    let inputs: Vec<(u64, Vec<(&str, &str)>)> = vec![
        (
            0,
            vec![("trace", "t-1"), ("tenant", "acme"), ("trace", "t-2")],
        ),
        (1, vec![]),
        (2, vec![("note", "héllo"), ("empty", "")]),
    ];
    let produced: Vec<_> = inputs
        .iter()
        .map(|(id, headers)| {
            let value = json!({"id": id, "mode": "headers"}).to_string();
            (0, Some(format!("k{id}")), value, headers.clone())
        })
        .collect();
    for name in ["behave", "conform-python", "conform-js", "conform-c"] {
        let broker = Broker::start();
        broker.create_topics(&["in", "out", "dlq"], 1);
        broker.produce_with_headers(&produced, "in");
        let dir = tempfile::tempdir().unwrap();
        let operator = format!(
            "[[operator]]\nname = \"h\"\nplugin = \"{}\"\n",
            plugin(name).display()
        );
        write(
            dir.path(),
            "pipeline.toml",
            &manifest(&broker, &operator, "bounded = true\n", ""),
        );
        let (code, stderr) = run_to_end(dir.path()).await;
        assert_eq!(code, 0, "{name}: {stderr}");
        let out = broker.read_committed("out");
        assert_eq!(out.len(), inputs.len(), "{name}: {out:?}");
        for (r, (id, headers)) in out.iter().zip(&inputs) {
            let expected: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let v: Value = serde_json::from_str(&r.value).unwrap();
            assert_eq!(v["id"], json!(id), "{name}: {v}");
            assert_eq!(
                v["headers"],
                json!(expected.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>()),
                "{name}: what the plugin saw"
            );
            assert_eq!(r.headers, expected, "{name}: the output's Kafka headers");
        }
    }
}
