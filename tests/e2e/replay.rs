//! `waio dead-letters replay`: the dead letters of a run go through the pipeline again, each
//! from the operator where it failed, into new files; an interrupted replay loses and
//! duplicates nothing. Against the real `waio` binary, with the behave plugin and the mock
//! provider's `/echo` as the service that was down and came back.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A URL on 127.0.0.1 where nothing listens: the service is down.
fn down_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/echo")
}

/// Two behave operators, `first` then `second`, each calling its echo URL for records in mode
/// `later`, in ordered mode; `source_extra` is added to `[source]`, `operator_extra` to each
/// `[[operator]]`.
fn two_operators(
    first_echo: &str,
    second_echo: &str,
    on_failure: &str,
    source_extra: &str,
    operator_extra: &str,
) -> String {
    let operator = |name: &str, echo: &str| {
        format!(
            r#"
[[operator]]
name = "{name}"
plugin = "{plugin}"
allowed_hosts = ["127.0.0.1"]
on_failure = "{on_failure}"
ordered = true
{operator_extra}
[operator.config]
echo_url = "{echo}"
"#,
            plugin = plugin("behave").display()
        )
    };
    format!(
        r#"
name = "replayed"
[source]
kind = "file"
path = "input.jsonl"
{source_extra}
{first}{second}
[sink]
kind = "file"
path = "out.jsonl"

[dead_letter]
path = "dead.jsonl"
"#,
        first = operator("first", first_echo),
        second = operator("second", second_echo),
    )
}

/// A record that `first` (behave mode `text`) turns into `becomes`, the input of `second`.
fn via_first(id: u64, becomes: Value) -> String {
    rec(json!({"id": id, "mode": "text", "text": becomes.to_string()}))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A dead letter's record: its id, or the text of a payload that is not JSON.
fn what(letter: &Value) -> String {
    match letter["payload"]["id"].as_u64() {
        Some(id) => id.to_string(),
        None => letter["payload"].as_str().unwrap_or_default().to_string(),
    }
}

/// `(id, n)` of every output line.
fn id_n(lines: &[Value]) -> Vec<(u64, u64)> {
    lines
        .iter()
        .map(|l| (l["id"].as_u64().expect("id"), l["n"].as_u64().expect("n")))
        .collect()
}

/// A run while the service is down leaves dead letters at `first`, at `second` and at the
/// source; replayed once it is back (with a manifest that now parses every line and says
/// `on_failure = "fail"`), each record starts at the operator where it failed: `first`'s effect
/// is not applied again to what failed in `second` (it would turn record 2's two results into
/// two copies of one, and make record 6 fail in `first`). What now succeeds is in the replay's
/// output exactly once, in the order of the dead letters; what fails again is in the new
/// dead-letter file, naming its line in the replayed file; the original files are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replayed_after_recovery_land_once_from_their_operator() {
    let mock = mock().await;
    let up = format!("{}/echo", mock.url());
    let down = down_url();
    let p = Pipeline::new();
    p.input(&[
        via_first(1, json!({"id": 1})),
        // Fails in `second` (its service is down); two results there once it is back.
        via_first(2, json!({"id": 2, "mode": "later", "results": 2})),
        // The source cannot read its timestamp; the replay's manifest has no timestamp_field.
        rec(json!({"id": 3, "ts": "soon", "mode": "text", "text": "{\"id\":3}"})),
        // Fails in `first` for good.
        rec(json!({"id": 4, "mode": "fail"})),
        // Fails in `first` (its service is down), succeeds once it is back.
        rec(json!({"id": 5, "mode": "later"})),
        // Fails in `second` for good.
        via_first(6, json!({"id": 6, "mode": "fail"})),
        "{not json".to_string(),
    ]);
    p.manifest(&two_operators(
        &down,
        &down,
        "dead-letter",
        "timestamp_field = \"ts\"",
        "",
    ));
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(id_n(&read_jsonl(&p.path("out.jsonl"))), [(1, 0)]);
    let dead = read_jsonl(&p.path("dead.jsonl"));
    let stage_of = |id: u64| {
        dead.iter()
            .find(|l| l["payload"]["id"] == id)
            .map(|l| l["stage"].as_str().unwrap_or_default().to_string())
    };
    let stages: Vec<Option<String>> = (2..=6).map(stage_of).collect();
    let expected = ["second", "source", "first", "first", "second"];
    assert_eq!(stages, expected.map(|s| Some(s.to_string())), "{dead:?}");
    assert_eq!(dead.len(), 6, "{dead:?}");
    let (out_before, dead_before) = (read(&p.path("out.jsonl")), read(&p.path("dead.jsonl")));

    std::fs::write(
        p.path("recovered.toml"),
        two_operators(&up, &up, "fail", "", ""),
    )
    .expect("write manifest");
    let (code, _, stderr) = run_waio(
        p.dir.path(),
        &["dead-letters", "replay", "dead.jsonl", "recovered.toml"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("replaying 6 dead letters from dead.jsonl"),
        "{stderr}"
    );

    // What now succeeds, in the order of the dead letters.
    let mut expected = Vec::new();
    for letter in &dead {
        match letter["payload"]["id"].as_u64() {
            Some(2) => expected.extend([(2, 0), (2, 1)]),
            Some(id @ (3 | 5)) => expected.push((id, 0)),
            _ => {}
        }
    }
    let replayed = read_jsonl(&p.path("dead.replayed.jsonl"));
    assert_eq!(id_n(&replayed), expected);

    // What fails again: where it failed, and its line in the replayed file.
    let again = read_jsonl(&p.path("dead.again.jsonl"));
    let mut failed_again: Vec<(String, String, u64)> = again
        .iter()
        .map(|l| {
            let stage = l["stage"].as_str().unwrap_or_default().to_string();
            (what(l), stage, l["line"].as_u64().expect("line"))
        })
        .collect();
    failed_again.sort();
    let line_of = |what: &str| {
        1 + dead
            .iter()
            .position(|l| self::what(l) == what)
            .expect("in the dead letters") as u64
    };
    let want = |what: &str, stage: &str| (what.to_string(), stage.to_string(), line_of(what));
    assert_eq!(
        failed_again,
        [
            want("4", "first"),
            want("6", "second"),
            want("{not json", "source")
        ]
    );
    // The original run's files are as it left them.
    assert_eq!(read(&p.path("out.jsonl")), out_before);
    assert_eq!(read(&p.path("dead.jsonl")), dead_before);
}

/// Lines that cannot be replayed are errors naming the file and the line, before anything runs
/// (no output appears); so is an output path that would overwrite the dead letters. A file
/// without dead letters runs nothing.
#[test]
fn lines_that_cannot_be_replayed_are_named_before_anything_runs() {
    let p = Pipeline::new();
    p.input(&[rec(json!({"id": 1}))]);
    p.manifest(&one_operator(&plugin("behave"), "", "", ""));
    let letter = |stage: &str| {
        json!({"stage": stage, "reason": "failure", "error": "x", "line": 1, "payload": {"id": 1}})
            .to_string()
    };
    let cases = [
        (
            vec![letter("op"), letter("summarize")],
            "dead.jsonl:2: stage \"summarize\" is not an operator of this pipeline (its operators: op)",
        ),
        (
            vec![letter("op"), String::new(), "{\"id\":1}".into()],
            "dead.jsonl:3: not a dead letter: no \"stage\" field",
        ),
        (
            vec!["{\"stage\":\"op\",".into()],
            "dead.jsonl:1: not a dead letter: invalid JSON",
        ),
    ];
    for (lines, message) in cases {
        std::fs::write(p.path("dead.jsonl"), lines.join("\n")).expect("write");
        let (code, _, stderr) = run_waio(
            p.dir.path(),
            &["dead-letters", "replay", "dead.jsonl", "pipeline.toml"],
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.starts_with(&format!("error: {message}")), "{stderr}");
        assert!(!p.path("dead.replayed.jsonl").exists());
        assert!(!p.path("dead.again.jsonl").exists());
    }
    std::fs::write(p.path("dead.jsonl"), letter("op")).expect("write");
    let (code, _, stderr) = run_waio(
        p.dir.path(),
        &[
            "dead-letters",
            "replay",
            "dead.jsonl",
            "pipeline.toml",
            "--output",
            "./dead.jsonl",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("would overwrite the dead letters being replayed"),
        "{stderr}"
    );
    assert_eq!(read(&p.path("dead.jsonl")), letter("op"));

    // A clean run's dead-letter file (empty, or only blank lines): nothing runs.
    std::fs::write(p.path("dead.jsonl"), "\n").expect("write");
    let (code, _, stderr) = run_waio(
        p.dir.path(),
        &["dead-letters", "replay", "dead.jsonl", "pipeline.toml"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("holds no dead letters: nothing to replay"),
        "{stderr}"
    );
    assert!(!p.path("dead.replayed.jsonl").exists());
}

const RECORDS: u64 = 200;

/// `RECORDS` dead letters, each waiting 50 ms at the echo service once replayed: odd ids
/// failed in `first`, even ids in `second` (where they now have two results, `n` 0 and 1;
/// through `first` again they would come out as two copies of `n` 0). Ids ending in 5 fail
/// again in `first`, ids ending in 0 in `second`.
fn slow_dead_letters(p: &Pipeline) {
    let lines: Vec<String> = (1..=RECORDS)
        .map(|id| {
            let stage = if id % 2 == 1 { "first" } else { "second" };
            let mode = if id % 5 == 0 { "fail" } else { "later" };
            json!({"stage": stage, "reason": "failure", "error": "503", "line": id,
                   "payload": {"id": id, "mode": mode, "delay_ms": 50, "results": 2 - id % 2}})
            .to_string()
        })
        .collect();
    std::fs::write(p.path("dead.jsonl"), lines.join("\n") + "\n").expect("write");
}

/// Kills the replay (SIGKILL) once the echo service has seen `requests` more requests, and
/// checks it had not finished; then replays again to the end: that run's summary.
fn interrupt_and_finish(p: &Pipeline, mock: &MockServer, requests: u64) -> Value {
    let args = ["dead-letters", "replay", "dead.jsonl", "pipeline.toml"];
    let before = mock.stats().echo;
    let mut child = spawn_waio(p.dir.path(), &args);
    wait_until("records going through", LIMIT, || {
        mock.stats().echo >= before + requests
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let written = read_jsonl(&p.path("dead.replayed.jsonl")).len() as u64;
    assert!(written < RECORDS, "the replay had finished");
    let again = [&args[..], &["--summary-json", "summary.json"]].concat();
    let (code, _, stderr) = run_waio(p.dir.path(), &again);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&read(&p.path("summary.json"))).expect("summary")
}

/// Every replayed record exactly once, from its operator: in the output in order, or in the
/// new dead letters with the stage it failed in again.
fn assert_each_once(p: &Pipeline) {
    let mut expected = Vec::new();
    let mut failed = Vec::new();
    for id in 1..=RECORDS {
        match (id % 5, id % 2) {
            (0, 1) => failed.push((id, "first".to_string())),
            (0, _) => failed.push((id, "second".to_string())),
            (_, 1) => expected.push((id, 0)),
            _ => expected.extend([(id, 0), (id, 1)]),
        }
    }
    assert_eq!(id_n(&read_jsonl(&p.path("dead.replayed.jsonl"))), expected);
    // Dead letters of `first` pass `second` at once: they may overtake its records.
    let mut again: Vec<(u64, String)> = read_jsonl(&p.path("dead.again.jsonl"))
        .iter()
        .map(|l| {
            let stage = l["stage"].as_str().unwrap_or_default().to_string();
            (l["payload"]["id"].as_u64().expect("id"), stage)
        })
        .collect();
    again.sort();
    assert_eq!(again, failed);
}

fn slow_manifest(echo: &str, extra: &str) -> String {
    let mut toml = two_operators(echo, echo, "dead-letter", "", "capacity = 4");
    toml.push_str(extra);
    toml
}

/// With `[checkpoint]` in the manifest, the replay checkpoints into a directory of its own; a
/// replay killed mid-way and run again resumes (records waiting in `first` to pass on to
/// `second` included): every record once, from its operator, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_resumes_from_its_checkpoint() {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&[rec(json!({"id": 0}))]);
    slow_dead_letters(&p);
    let echo = format!("{}/echo", mock.url());
    let checkpoints = "\n[checkpoint]\ndir = \"state\"\ninterval = \"100ms\"\n";
    p.manifest(&slow_manifest(&echo, checkpoints));
    let summary = interrupt_and_finish(&p, &mock, 60);
    assert!(summary["restored_from"].is_u64(), "{summary}");
    assert!(
        matches!(summary["records_in"].as_u64(), Some(n) if n < RECORDS),
        "{summary}"
    );
    let stderr = read(&p.path("stderr.log"));
    assert!(stderr.contains("replaying 200 dead letters"), "{stderr}");
    assert_each_once(&p);
    assert!(p.path("dead.replay-checkpoints").is_dir());
    assert!(!p.path("state").exists(), "the pipeline's own checkpoints");
}

/// Without checkpoints, a replay killed mid-way and run again starts over and rewrites its
/// outputs: still every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_without_checkpoints_starts_over() {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&[rec(json!({"id": 0}))]);
    slow_dead_letters(&p);
    p.manifest(&slow_manifest(&format!("{}/echo", mock.url()), ""));
    let summary = interrupt_and_finish(&p, &mock, 60);
    assert_eq!(summary["records_in"], RECORDS, "{summary}");
    assert_each_once(&p);
}
