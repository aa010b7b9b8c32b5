//! Checkpoints, restore, exactly-once output and graceful stop (FLINK-SEMANTICS 27-32), against
//! the real `waio` binary killed and restarted, and the pipeline run in-process.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use waio::checkpoint::{Checkpoint, CheckpointStore};
use waio::record::Element;
use waio_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

fn stdin_manifest(plugin_path: &Path, capacity: usize, config: &str) -> String {
    format!(
        r#"
name = "checkpointed"
[source]
kind = "stdin"

[[operator]]
name = "op"
plugin = "{plugin}"
capacity = {capacity}
ordered = true
timeout = "1h"
[operator.config]
{config}

[sink]
kind = "file"
path = "out.jsonl"
watermarks = true

[dead_letter]
path = "dead.jsonl"

[checkpoint]
dir = "state"
interval = "50ms"
"#,
        plugin = plugin_path.display()
    )
}

fn latest(dir: &Path) -> Option<Checkpoint> {
    let store = CheckpointStore::open_read_only(&dir.join("state")).ok()?;
    store
        .latest()
        .ok()
        .flatten()
        .map(|(checkpoint, _)| checkpoint)
}

/// Runs `waio ARGS` to its end with `lines` on stdin; returns the exit code and stderr.
fn run_with_stdin<'a>(
    p: &Pipeline,
    args: &[&str],
    lines: impl IntoIterator<Item = &'a Value>,
) -> (i32, String) {
    let mut child = spawn_waio(p.dir.path(), args);
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for line in lines {
            writeln!(stdin, "{line}").expect("write stdin");
        }
    }
    let code = wait_exit(&mut child, LIMIT);
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    (code, stderr)
}

/// Starts `waio run`, writes `lines` to its stdin and keeps it open (the source waits for more
/// while checkpoints are taken), waits until `ready`, then kills it with SIGKILL.
fn kill_when<'a>(
    p: &Pipeline,
    lines: impl IntoIterator<Item = &'a Value>,
    what: &str,
    ready: impl FnMut() -> bool,
) {
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write stdin");
    }
    stdin.flush().expect("flush");
    wait_until(what, LIMIT, ready);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

fn describe(elements: &[Element]) -> Vec<String> {
    elements
        .iter()
        .map(|e| match e {
            Element::Record(r) => {
                let payload: Value = serde_json::from_slice(&r.payload).expect("json payload");
                format!("R{}@{}", payload["id"], r.line)
            }
            Element::Watermark(ts) => format!("W{ts}"),
            Element::DeadLetter(_) => "DL".into(),
        })
        .collect()
}

/// A queue R1 (never completes) R2 (done, waiting behind R1) W100 R3 (never): a checkpoint holds
/// exactly these inputs in queue order (27); a restart with another plugin version and another
/// capacity invokes them again before new input and keeps the order (28, 29), also when the
/// snapshot holds exactly `capacity` elements.
#[test]
fn a_checkpoint_holds_the_queue_and_restores_it_before_new_input() {
    for restore_capacity in [4, 2] {
        let p = Pipeline::new();
        let first = [
            json!({"id": 1, "mode": "never"}),
            json!({"id": 2, "mode": "now"}),
            json!({"$watermark": 100}),
            json!({"id": 3, "mode": "never"}),
        ];
        p.manifest(&stdin_manifest(&plugin("behave"), 4, ""));
        kill_when(&p, &first, "a checkpoint with the full queue", || {
            latest(p.dir.path())
                .is_some_and(|c| c.operators[0].elements.len() == 4 && c.source.lines == 4)
        });

        let checkpoint = latest(p.dir.path()).expect("checkpoint");
        assert!(!checkpoint.finished);
        assert_eq!(
            describe(&checkpoint.operators[0].elements),
            ["R1@1", "R2@2", "W100", "R3@4"],
            "the inputs of the queue, in queue order, the completed R2 included"
        );
        assert!(
            read_jsonl(&p.path("out.jsonl")).is_empty(),
            "nothing may leave the ordered queue while R1 is pending"
        );

        // `waio checkpoint list|inspect` show the same.
        let (code, list, err) = run_waio(p.dir.path(), &["checkpoint", "list", "state"]);
        assert_eq!(code, 0, "{err}");
        assert!(list.contains("complete") && list.contains("op=3"), "{list}");
        let (code, inspect, err) = run_waio(p.dir.path(), &["checkpoint", "inspect", "state"]);
        assert_eq!(code, 0, "{err}");
        assert!(inspect.contains("R@1 R@2 W(100) R@4"), "{inspect}");

        // Restart on another plugin (echo: completes everything at once) with another capacity;
        // the same input is fed again, plus two new lines: stdin resumes after line 4.
        p.manifest(&stdin_manifest(&plugin("echo"), restore_capacity, ""));
        let (code, stderr) = run_with_stdin(
            &p,
            &["run", "pipeline.toml"],
            first.iter().chain(&[json!({"id": 4}), json!({"id": 5})]),
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
        assert!(
            stderr.contains("plugin changed since checkpoint"),
            "{stderr}"
        );
        assert_eq!(
            ids(&read_jsonl(&p.path("out.jsonl"))),
            ["1", "2", "W100", "3", "4", "5"],
            "restored with capacity {restore_capacity}"
        );
    }
}

fn later_input(count: u64, watermark_every: u64) -> Vec<String> {
    // A fixed pseudo-random delay per record, so completions come out of order.
    let mut lines = Vec::new();
    for id in 1..=count {
        let delay = (id * 7919) % 23;
        lines.push(rec(json!({"id": id, "mode": "later", "delay_ms": delay})));
        if id % watermark_every == 0 {
            lines.push(rec(json!({"$watermark": id})));
        }
    }
    lines
}

fn later_manifest(echo_url: &str, ordered: bool, checkpoint: &str) -> String {
    let mut toml = one_operator(
        &plugin("behave"),
        &format!("capacity = 20\nordered = {ordered}\nallowed_hosts = [\"127.0.0.1\"]"),
        &format!("echo_url = \"{echo_url}\""),
        "watermarks = true",
    );
    toml.push_str(checkpoint);
    toml
}

/// Segments of an output: the set of record ids between consecutive watermarks.
fn segments(ids: &[String]) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for id in ids {
        if id.starts_with('W') {
            out.push(vec![id.clone()]);
            out.push(Vec::new());
        } else if let Some(last) = out.last_mut() {
            last.push(id.clone());
        }
    }
    for segment in &mut out {
        segment.sort();
    }
    out
}

/// Taking checkpoints every 20 ms while records are in flight changes nothing in the output (30).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_while_in_flight_do_not_change_the_output() {
    let mock = mock().await;
    let echo = format!("{}/echo", mock.url());
    for ordered in [true, false] {
        let input = later_input(600, 40);
        let plain = Pipeline::new();
        plain.input(&input);
        let without = plain.run(&later_manifest(&echo, ordered, "")).await;
        let checked = Pipeline::new();
        checked.input(&input);
        let with = checked
            .run(&later_manifest(
                &echo,
                ordered,
                "[checkpoint]\ndir = \"state\"\ninterval = \"20ms\"\n",
            ))
            .await;
        assert!(
            with.summary().checkpoints >= 3,
            "only {} checkpoints were taken",
            with.summary().checkpoints
        );
        assert_eq!(with.ids().len(), 600 + 15);
        if ordered {
            assert_eq!(with.ids(), without.ids());
        } else {
            assert_eq!(segments(&with.ids()), segments(&without.ids()));
        }
    }
}

/// `count` records that each wait `delay_ms` at the mock's `/echo` (behave plugin, ordered) at
/// `capacity`; `extra` is appended to the manifest (e.g. a `[checkpoint]` section).
fn echo_pipeline(echo: &str, count: u64, delay_ms: u64, capacity: usize, extra: &str) -> Pipeline {
    let p = Pipeline::new();
    let input: Vec<String> = (1..=count)
        .map(|id| rec(json!({"id": id, "mode": "later", "delay_ms": delay_ms})))
        .collect();
    p.input(&input);
    let mut toml = one_operator(
        &plugin("behave"),
        &format!("capacity = {capacity}\nallowed_hosts = [\"127.0.0.1\"]"),
        &format!("echo_url = \"{echo}\""),
        "",
    );
    toml.push_str(extra);
    p.manifest(&toml);
    p
}

/// The `id` of every committed output line, in order.
fn output_ids(p: &Pipeline) -> Vec<u64> {
    read_jsonl(&p.path("out.jsonl"))
        .iter()
        .map(|l| l["id"].as_u64().expect("id"))
        .collect()
}

/// SIGKILL at random moments, restart each time: every input record ends up exactly once in the
/// committed output or in the (transactional) dead-letter file, the output in input order
/// (ordered mode). A chain of two operators, so checkpoints must be consistent across it; the
/// mock fails 1% of requests, so both outputs are exercised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_anywhere_nothing_is_lost_or_duplicated() {
    const RECORDS: u64 = 20_000;
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 2,
        jitter_ms: 20,
        error_rate: 0.01,
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let input: Vec<String> = (1..=RECORDS)
        .map(|id| rec(json!({"id": id, "text": format!("ticket {id}")})))
        .collect();
    p.input(&input);
    p.manifest(&format!(
        r#"
name = "crash"
[source]
kind = "file"
path = "input.jsonl"

[[operator]]
name = "classify"
plugin = "{plugin}"
capacity = 200
ordered = true
on_failure = "dead-letter"
allowed_hosts = ["127.0.0.1"]
[operator.config]
base_url = "{url}/v1"
model = "mock-small"

[[operator]]
name = "escalate"
plugin = "{plugin}"
capacity = 100
ordered = true
on_failure = "dead-letter"
allowed_hosts = ["127.0.0.1"]
[operator.config]
base_url = "{url}/v1"
model = "mock-large"
output_field = "escalation"

[sink]
kind = "file"
path = "out.jsonl"

[dead_letter]
path = "dead.jsonl"

[checkpoint]
dir = "state"
interval = "100ms"
"#,
        plugin = plugin("openai").display(),
        url = mock.url()
    ));

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
        | 1;
    eprintln!("kill schedule seed {seed}");
    let mut random = move |below: u64| {
        // xorshift64: the schedule differs per run and the seed above reproduces it.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut partial_kills = 0;
    let mut resumed = 0;
    let mut finished = false;
    for round in 0..12 {
        let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
        let stderr = || std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
        if round < 6 {
            std::thread::sleep(Duration::from_millis(200 + random(800)));
            if child.try_wait().expect("wait").is_none() {
                child.kill().expect("SIGKILL");
                let _ = child.wait();
                let committed = read_jsonl(&p.path("out.jsonl")).len() as u64;
                eprintln!("run {round} killed with {committed} results committed");
                if committed > 0 && committed < RECORDS {
                    partial_kills += 1;
                }
                if stderr().contains("resuming from checkpoint") {
                    resumed += 1;
                }
                continue;
            }
        }
        let code = wait_exit(&mut child, LIMIT);
        assert_eq!(code, 0, "{}", stderr());
        if stderr().contains("resuming from checkpoint") {
            resumed += 1;
        }
        finished = true;
        break;
    }
    assert!(finished, "the pipeline never finished");
    assert!(
        partial_kills >= 3,
        "only {partial_kills} kills hit a run half-way: the test proved little"
    );
    assert!(
        resumed >= 2,
        "only {resumed} runs resumed from a checkpoint"
    );
    let output = read_jsonl(&p.path("out.jsonl"));
    let mut ids: Vec<u64> = output
        .iter()
        .map(|line| line["id"].as_u64().expect("id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "the output is not in input order"
    );
    let dead: Vec<u64> = read_jsonl(&p.path("dead.jsonl"))
        .iter()
        .map(|line| line["payload"]["id"].as_u64().expect("dead-letter id"))
        .collect();
    assert!(
        !dead.is_empty(),
        "the mock's failures never reached the dead letters"
    );
    ids.extend(&dead);
    ids.sort_unstable();
    let expected: Vec<u64> = (1..=RECORDS).collect();
    if ids != expected {
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            *seen.entry(*id).or_insert(0) += 1;
        }
        let duplicated = seen.values().filter(|n| **n > 1).count();
        let missing = expected.iter().filter(|id| !seen.contains_key(id)).count();
        panic!(
            "{} results + dead letters: {duplicated} ids duplicated, {missing} missing",
            ids.len()
        );
    }
    assert!(output
        .iter()
        .all(|line| line.get("label").is_some() && line.get("escalation").is_some()));
}

/// Without checkpoints, SIGTERM still stops gracefully: input stops, what is in flight is
/// finished and written, exit 0; every record written is whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_checkpoints_finishes_what_is_in_flight() {
    let mock = mock().await;
    let echo = format!("{}/echo", mock.url());
    let p = echo_pipeline(&echo, 20_000, 5, 50, "");
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    wait_until("records going through", LIMIT, || mock.stats().echo >= 200);
    signal(&child, "INT");
    let code = wait_exit(&mut child, LIMIT);
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("stopped on request"), "{stderr}");
    let ids: Vec<u64> = output_ids(&p);
    assert!(
        ids.len() >= 200 && ids.len() < 20_000,
        "{} records",
        ids.len()
    );
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

/// SIGTERM: the run stops reading, finishes what is in flight, commits and exits 0; the next
/// run does the rest. Every record once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_the_next_run_resumes() {
    let mock = mock().await;
    let echo = format!("{}/echo", mock.url());
    let p = echo_pipeline(
        &echo,
        20_000,
        5,
        50,
        "[checkpoint]\ndir = \"state\"\ninterval = \"100ms\"\n",
    );

    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    wait_until("some committed output", LIMIT, || {
        !read_jsonl(&p.path("out.jsonl")).is_empty()
    });
    signal(&child, "TERM");
    let code = wait_exit(&mut child, LIMIT);
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("stopped on request"), "{stderr}");
    let first: Vec<u64> = output_ids(&p);
    assert!(
        !first.is_empty() && first.len() < 20_000,
        "{} records",
        first.len()
    );
    assert_eq!(
        first,
        (1..=first.len() as u64).collect::<Vec<_>>(),
        "a committed prefix"
    );

    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    let all: Vec<u64> = output_ids(&p);
    assert_eq!(all, (1..=20_000).collect::<Vec<_>>());
    assert!(stderr.contains("resumed from checkpoint"), "{stderr}");
}

/// A second SIGTERM stops at once after the stop checkpoint: results still on their way are
/// dropped (32) and the next run invokes those records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_in_flight_records_are_replayed() {
    let mock = mock().await;
    let echo = format!("{}/echo", mock.url());
    let p = echo_pipeline(
        &echo,
        40,
        3000,
        100,
        "[checkpoint]\ndir = \"state\"\ninterval = \"10s\"\n",
    );

    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    wait_until("every record in flight", LIMIT, || mock.stats().echo >= 40);
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, "TERM");
    let code = wait_exit(&mut child, LIMIT);
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("stopped at once after checkpoint"),
        "{stderr}"
    );
    assert!(
        read_jsonl(&p.path("out.jsonl")).is_empty(),
        "the records were still in flight: {:?} {stderr}",
        read_jsonl(&p.path("out.jsonl"))
    );
    let stored = latest(p.dir.path()).expect("stop checkpoint");
    assert_eq!(stored.operators[0].records_in_flight(), 40);

    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<u64> = output_ids(&p);
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
}

/// The newest checkpoint corrupt and the one before it partly written: both are detected, the
/// run warns and resumes from the last good one, and the output is still exactly once.
#[test]
fn a_corrupt_or_partial_checkpoint_falls_back_to_the_previous_one() {
    let p = Pipeline::new();
    p.manifest(&stdin_manifest(&plugin("echo"), 10, ""));
    let lines: Vec<Value> = (1..=70).map(|id| json!({"id": id})).collect();
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    {
        let mut stdin = child.stdin.take().expect("stdin");
        // Slowly, so that checkpoints are taken at different positions.
        for chunk in lines[..60].chunks(10) {
            for line in chunk {
                writeln!(stdin, "{line}").expect("write stdin");
            }
            stdin.flush().expect("flush");
            let target = read_jsonl(&p.path("out.jsonl")).len() + chunk.len();
            wait_until("the chunk committed", LIMIT, || {
                read_jsonl(&p.path("out.jsonl")).len() >= target
            });
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    let state = p.path("state");
    let (newest, before) = {
        let store = CheckpointStore::open_read_only(&state).expect("store");
        let list = store.list().expect("list");
        assert!(list.len() >= 3, "{} checkpoints", list.len());
        let n = list.len();
        (list[n - 1].id, list[n - 2].id)
    };
    {
        let db = rocksdb::DB::open_default(&state).expect("open rocksdb");
        db.put(
            format!("checkpoint/{newest:020}/operator/0000"),
            b"garbage".as_slice(),
        )
        .expect("corrupt");
        db.delete(format!("checkpoint/{before:020}/commit"))
            .expect("unmark");
    }
    let (code, list, _) = run_waio(p.dir.path(), &["checkpoint", "list", "state"]);
    assert_eq!(code, 0);
    assert!(
        list.contains("corrupt") && list.contains("partial"),
        "{list}"
    );

    // The same input again plus ten new lines: stdin resumes after the good checkpoint's line.
    let (code, stderr) = run_with_stdin(&p, &["run", "pipeline.toml"], &lines);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("checkpoint {newest} is corrupt")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("checkpoint {before}")), "{stderr}");
    let ids: Vec<u64> = output_ids(&p);
    assert_eq!(ids, (1..=70).collect::<Vec<_>>());
}

/// Event time from an RFC 3339 field, watermarks with bounded out-of-orderness through the
/// operator, input watermarks merged, late records kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_watermarks_flow_and_late_records_are_kept() {
    let p = Pipeline::new();
    let at = |s: u32| format!("2026-11-22T10:00:{s:02}Z");
    p.input(&[
        rec(json!({"id": 1, "at": at(10)})),
        rec(json!({"id": 2, "at": at(12)})),
        rec(json!({"id": 3, "at": at(11)})), // out of order, within the bound
        rec(json!({"id": 4, "at": at(20)})),
        rec(json!({"id": 5, "at": at(5)})), // late: behind the watermark, kept
        rec(json!({"$watermark": 1})),      // behind: dropped, watermarks never go back
        rec(json!({"id": 6, "at": at(30)})),
        rec(json!({"id": 7, "at": "yesterday"})), // unreadable: a dead letter naming line and field
    ]);
    let toml = format!(
        r#"
name = "event-time"
[source]
kind = "file"
path = "input.jsonl"

[[operator]]
name = "op"
plugin = "{plugin}"
ordered = false

[sink]
kind = "file"
path = "out.jsonl"
format = "envelope"
watermarks = true

[dead_letter]
path = "dead.jsonl"

[event_time]
field = "at"
format = "rfc3339"
max_out_of_orderness = "2s"
watermark_interval = "0ms"
"#,
        plugin = plugin("echo").display()
    );
    let outcome = p.run(&toml).await;
    outcome.summary();
    let base = 1_795_341_600_000i64; // 2026-11-22T10:00:00Z
    let ts = |s: i64| base + s * 1000;
    let wm = |s: i64| format!("W{}", ts(s) - 2000 - 1);
    assert_eq!(
        outcome.ids(),
        [
            "1".to_string(),
            wm(10),
            "2".into(),
            wm(12),
            "3".into(),
            "4".into(),
            wm(20),
            "5".into(),
            "6".into(),
            wm(30),
        ]
    );
    let timestamps: Vec<i64> = outcome
        .output
        .iter()
        .filter_map(|l| l.get("timestamp").and_then(Value::as_i64))
        .collect();
    assert_eq!(
        timestamps,
        [ts(10), ts(12), ts(11), ts(20), ts(5), ts(30)],
        "every output carries its input's event time"
    );
    assert_eq!(outcome.dead.len(), 1);
    let error = outcome.dead[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("input.jsonl:8") && error.contains("field \"at\""),
        "{error}"
    );
    assert_eq!(outcome.dead[0]["payload"]["id"], 7);
}

/// `--fresh` ignores the checkpoints: the input is read from its start and the outputs start
/// empty. A run that finished its input also lets the next run start from the beginning.
#[test]
fn fresh_ignores_checkpoints_and_a_finished_run_starts_over() {
    let p = Pipeline::new();
    p.manifest(&stdin_manifest(&plugin("echo"), 10, ""));
    let first: Vec<Value> = (1..=5).map(|id| json!({"id": id})).collect();
    // The first operator may cut a checkpoint before it has admitted what it read: wait for
    // one after line 5 with nothing left in the operator, and for the sink to have committed
    // it (the checkpoint is stored first: a kill in between leaves the commit to the next run,
    // which `--fresh` below would not make).
    kill_when(&p, &first, "a checkpoint after line 5, committed", || {
        let stored = latest(p.dir.path())
            .is_some_and(|c| c.source.lines == 5 && c.operators[0].elements.is_empty());
        let committed = std::fs::read_to_string(p.path("out.jsonl"))
            .is_ok_and(|text| text.ends_with('\n') && text.lines().count() == 5);
        stored && committed
    });
    assert_eq!(output_ids(&p), [1, 2, 3, 4, 5]);

    // Without --fresh this input would be skipped up to line 5; with it, all of it is read.
    let again = [json!({"id": 7}), json!({"id": 8}), json!({"id": 9})];
    let (code, stderr) = run_with_stdin(&p, &["run", "--fresh", "pipeline.toml"], &again);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(output_ids(&p), [7, 8, 9], "fresh outputs, the whole input");

    // That run finished its input: the next one starts from the beginning too.
    let (code, stderr) = run_with_stdin(
        &p,
        &["run", "pipeline.toml"],
        &[json!({"id": 10}), json!({"id": 11})],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(output_ids(&p), [10, 11]);
    let (code, list, _) = run_waio(p.dir.path(), &["checkpoint", "list", "state"]);
    assert_eq!(code, 0);
    assert!(
        list.contains("yes"),
        "the last checkpoint is marked finished:\n{list}"
    );
}

/// Two runs at once on one checkpoint directory: the second is refused with a clear error.
#[test]
fn a_checkpoint_directory_is_used_by_one_run_at_a_time() {
    let p = Pipeline::new();
    p.manifest(&stdin_manifest(&plugin("echo"), 10, ""));
    let mut first = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    wait_until("the first run's checkpoint", LIMIT, || {
        latest(p.dir.path()).is_some()
    });
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("in use by another waio process"),
        "{stderr}"
    );
    drop(first.stdin.take());
    assert_eq!(wait_exit(&mut first, LIMIT), 0);
}

/// A generated watermark held back by `watermark_interval` still comes out while stdin is quiet,
/// not only with the next record or at the end.
#[test]
fn a_quiet_stdin_still_emits_the_held_back_watermark() {
    let p = Pipeline::new();
    p.manifest(&format!(
        r#"
name = "quiet"
[source]
kind = "stdin"
[[operator]]
name = "op"
plugin = "{plugin}"
[sink]
kind = "stdout"
watermarks = true
[dead_letter]
path = "dead.jsonl"
[event_time]
field = "ts"
watermark_interval = "100ms"
"#,
        plugin = plugin("echo").display()
    ));
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    let mut stdin = child.stdin.take().expect("stdin");
    // The first watermark leaves at once; the second is held back by the interval.
    writeln!(stdin, "{}", json!({"id": 1, "ts": 1000})).expect("write");
    writeln!(stdin, "{}", json!({"id": 2, "ts": 5000})).expect("write");
    stdin.flush().expect("flush");
    wait_until("the held-back watermark, stdin still open", LIMIT, || {
        std::fs::read_to_string(p.path("stdout.log")).is_ok_and(|s| s.contains("4999"))
    });
    drop(stdin);
    assert_eq!(wait_exit(&mut child, LIMIT), 0);
    let lines = read_jsonl(&p.path("stdout.log"));
    let marks: Vec<&Value> = lines.iter().filter_map(|l| l.get("watermark")).collect();
    assert_eq!(marks, [&json!(999), &json!(4999)]);
}

/// A checkpoint that cannot be restored is refused with an error that says why and what to do,
/// before anything is read, and the committed output stays as it was: another chain of
/// operators, or an input file shorter than the position stored.
#[test]
fn a_checkpoint_that_does_not_fit_is_refused_with_a_clear_error() {
    let p = Pipeline::new();
    p.input(&[
        rec(json!({"id": 1})),
        rec(json!({"id": 2})),
        rec(json!({"id": 3, "mode": "never"})),
    ]);
    let manifest = |name: &str| {
        one_operator(&plugin("behave"), "timeout = \"1h\"", "", "")
            .replace("name = \"op\"", &format!("name = \"{name}\""))
            + "[checkpoint]\ndir = \"state\"\ninterval = \"50ms\"\n"
    };
    p.manifest(&manifest("op"));
    // The output of a checkpoint is committed just after the checkpoint is stored: wait for
    // both, or a kill in between leaves records 1 and 2 for the next run to commit.
    kill_when(
        &p,
        &[],
        "a checkpoint holding record 3, its output committed",
        || {
            latest(p.dir.path()).is_some_and(|c| c.operators[0].records_in_flight() == 1)
                && output_ids(&p) == [1, 2]
        },
    );
    assert_eq!(output_ids(&p), [1, 2]);

    p.manifest(&manifest("renamed"));
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("taken with operators [op] but the manifest has [renamed]")
            && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert_eq!(output_ids(&p), [1, 2]);

    p.manifest(&manifest("op"));
    p.input(&[rec(json!({"id": 1}))]);
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot resume input") && stderr.contains("input.jsonl"),
        "{stderr}"
    );
    assert_eq!(output_ids(&p), [1, 2]);
}

/// The summary JSON `waio run --summary-json summary.json` wrote in the pipeline's directory.
fn summary_json(p: &Pipeline) -> Value {
    let text = std::fs::read_to_string(p.path("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary JSON")
}

/// A slow operator (50 records/s) behind thousands of records read ahead: checkpoints still come
/// every `interval`, in a first run and in a run restored from a checkpoint full of read-ahead
/// records. The barrier never waits for read-ahead records to be invoked (they are in the
/// snapshot as they are). They used to come tens of seconds apart. The bound is loose (5x the
/// interval, for a busy machine); docs/BENCHMARKS.md has the measured spacing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_their_interval_behind_a_slow_operator() {
    let mock = mock().await;
    let echo = format!("{}/echo", mock.url());
    let p = echo_pipeline(
        &echo,
        8_000,
        100,
        5,
        "[checkpoint]\ndir = \"state\"\ninterval = \"300ms\"\n",
    );
    let args = ["run", "pipeline.toml", "--summary-json", "summary.json"];
    for round in ["first run", "restored run"] {
        let mut child = spawn_waio(p.dir.path(), &args);
        let seen = mock.stats().echo;
        wait_until("records going through", LIMIT, || {
            mock.stats().echo >= seen + 100
        });
        if round == "first run" {
            let stored = latest(p.dir.path()).expect("a checkpoint");
            assert!(
                stored.operators[0].records_in_flight() >= 1_000,
                "the read-ahead is in the checkpoint: {}",
                stored.operators[0].records_in_flight()
            );
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            continue;
        }
        signal(&child, "TERM");
        let code = wait_exit(&mut child, LIMIT);
        let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
        assert_eq!(code, 0, "{stderr}");
        let summary = summary_json(&p);
        assert!(
            summary["restored_in_flight"].as_u64().unwrap_or(0) >= 1_000,
            "{summary}"
        );
        let elapsed = summary["elapsed_s"].as_f64().unwrap_or(0.0);
        let checkpoints = summary["checkpoints"].as_f64().unwrap_or(0.0);
        assert!(
            checkpoints >= elapsed / 1.5,
            "{checkpoints} checkpoints in {elapsed:.1} s at a 300 ms interval: {summary}"
        );
        let longest = summary["checkpoint_max_ms"].as_f64().unwrap_or(f64::MAX);
        assert!(
            longest < 1_500.0,
            "a checkpoint took {longest} ms: {summary}"
        );
    }
}

/// SIGTERM invokes nothing new: it finishes the records in flight, stores what was read ahead
/// in the final checkpoint uninvoked, commits and exits 0 (it used to work through the whole
/// read-ahead first). The next run resumes with those records: every record once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_invokes_nothing_new_and_leaves_the_read_ahead_to_the_next_run() {
    let mock = mock().await;
    let echo = format!("{}/echo", mock.url());
    let capacity = 20;
    let p = echo_pipeline(
        &echo,
        3_000,
        20,
        capacity,
        "[checkpoint]\ndir = \"state\"\ninterval = \"10s\"\n",
    );
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    wait_until("records going through", LIMIT, || mock.stats().echo >= 100);
    let calls_at_signal = mock.stats().echo;
    signal(&child, "TERM");
    let code = wait_exit(&mut child, LIMIT);
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, 0, "{stderr}");
    let calls_after = mock.stats().echo - calls_at_signal;
    assert!(
        calls_after <= 2 * capacity as u64,
        "{calls_after} calls after the signal, with {capacity} in flight at most: {stderr}"
    );
    assert!(stderr.contains("nothing new is invoked"), "{stderr}");
    assert!(stderr.contains("the next run resumes"), "{stderr}");
    let first = output_ids(&p);
    assert!(first.len() < 2_000, "{} records", first.len());
    let stored = latest(p.dir.path()).expect("final checkpoint");
    assert!(!stored.finished);
    assert!(
        stored.operators[0].records_in_flight() >= 1_000,
        "the read-ahead is left in the final checkpoint: {}",
        stored.operators[0].records_in_flight()
    );

    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(output_ids(&p), (1..=3_000).collect::<Vec<_>>());
}

/// Without checkpoints, a second signal stops at once; what was completed before it is in the
/// output (it used to be lost with the sink's buffer) and the message says the next run starts
/// over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_stop_without_checkpoints_keeps_the_completed_output() {
    let mock = mock().await;
    let p = Pipeline::new();
    let input: Vec<String> = (1..=10)
        .map(|id| {
            if id <= 5 {
                rec(json!({"id": id}))
            } else {
                rec(json!({"id": id, "mode": "later", "delay_ms": 60_000}))
            }
        })
        .collect();
    p.input(&input);
    p.manifest(&one_operator(
        &plugin("behave"),
        "allowed_hosts = [\"127.0.0.1\"]\ntimeout = \"5m\"",
        &format!("echo_url = \"{}/echo\"", mock.url()),
        "",
    ));
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    wait_until("the slow records in flight", LIMIT, || {
        mock.stats().echo >= 5
    });
    // The first five left the operator at once; give the sink a moment to take them.
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "TERM");
    let code = wait_exit(&mut child, Duration::from_secs(30));
    let stderr = std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("will NOT be processed") && stderr.contains("starts from the beginning"),
        "{stderr}"
    );
    assert!(!stderr.contains("resumes"), "{stderr}");
    assert_eq!(output_ids(&p), [1, 2, 3, 4, 5], "{stderr}");
}
