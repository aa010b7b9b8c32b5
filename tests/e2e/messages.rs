//! What the `waio` binary says about plain mistakes: each cause once, the manifest line and field
//! of a bad input path (in `run` and `check`), both keys of a key set twice under two names; and
//! input or output that used to be mishandled quietly: a byte order mark, an output that is not
//! JSON.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;
use waio_tests::*;

fn assert_failed(code: i32, stderr: &str) {
    assert_eq!(code, 1, "expected exit code 1, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[track_caller]
fn assert_once(text: &str, part: &str) {
    assert_eq!(text.matches(part).count(), 1, "{part:?} once in: {text}");
}

/// `error: operator "op": plugin behave: open failed: X` used to go on with
/// `: plugin behave: open failed: X` (anyhow printing the source the message already held).
#[test]
fn a_plugin_whose_open_fails_says_why_once() {
    let p = Pipeline::new();
    p.input(&[rec(json!({"id": 1}))]);
    p.manifest(&one_operator(&plugin("behave"), "", "bogus = 1", ""));
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_failed(code, &stderr);
    assert!(stderr.contains("operator \"op\""), "{stderr}");
    assert_once(&stderr, "open failed");
    assert_once(&stderr, "unknown config field `bogus`");
}

/// A missing input file: `waio check` refuses it as `waio run` does, and both name the manifest
/// line, column and field, and say the OS error once (it used to come twice, without the place).
#[test]
fn a_missing_input_file_is_named_at_its_manifest_line_by_run_and_check() {
    let p = Pipeline::new();
    p.manifest(&one_operator(&plugin("behave"), "", "", ""));
    for command in ["check", "run"] {
        let (code, stdout, stderr) = run_waio(p.dir.path(), &[command, "pipeline.toml"]);
        assert_failed(code, &stderr);
        assert!(!stdout.contains(": ok"), "{command}: {stdout}");
        // one_operator writes `path = "input.jsonl"` on line 5.
        assert!(
            stderr.contains("pipeline.toml:5:8: source.path: cannot open input ")
                && stderr.contains("input.jsonl"),
            "{command}: {stderr}"
        );
        assert_once(&stderr, "(os error 2)");
    }
    // An empty input fails the run at once: `check` says so too.
    std::fs::write(p.path("input.jsonl"), "").unwrap();
    let (code, _, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_failed(code, &stderr);
    assert!(
        stderr.contains("pipeline.toml:5:8: source.path: input file") && stderr.contains("empty"),
        "{stderr}"
    );
    p.input(&[rec(json!({"id": 1}))]);
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
}

/// `waio run` looks for its input before it loads any plugin (seconds for Python or JS): with
/// both missing, the input is what it names.
#[test]
fn a_run_names_a_missing_input_before_loading_plugins() {
    let p = Pipeline::new();
    p.manifest(&one_operator(&p.path("missing.wasm"), "", "", ""));
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_failed(code, &stderr);
    assert!(
        stderr.contains("source.path: cannot open input") && !stderr.contains("missing.wasm"),
        "{stderr}"
    );
}

/// `capacity` with its alias `max_concurrent_requests` used to report "duplicate field
/// `capacity`" at the `[[operator]]` header; now both keys, each where it stands.
#[test]
fn a_key_and_its_alias_together_are_named_both() {
    let p = Pipeline::new();
    p.input(&[rec(json!({"id": 1}))]);
    p.manifest(&one_operator(
        &plugin("behave"),
        "capacity = 2\nmax_concurrent_requests = 3",
        "",
        "",
    ));
    let (code, _, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_failed(code, &stderr);
    assert!(
        stderr.contains(
            "pipeline.toml:13:1: operator[0].capacity: set twice, by `capacity` (line 12, column 1) and `max_concurrent_requests` (line 13, column 1)"
        ),
        "{stderr}"
    );
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Editors on Windows start a UTF-8 file with a byte order mark: the first record used to be
/// dead-lettered as invalid JSON. Files and stdin.
#[test]
fn a_byte_order_mark_before_the_first_record_is_skipped() {
    let p = Pipeline::new();
    let mut input = BOM.to_vec();
    input.extend_from_slice(b"{\"id\":1}\n{\"id\":2}\n");
    std::fs::write(p.path("input.jsonl"), &input).unwrap();
    p.manifest(&one_operator(&plugin("behave"), "", "", ""));
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&read_jsonl(&p.path("out.jsonl"))), ["1", "2"]);
    assert!(read_jsonl(&p.path("dead.jsonl")).is_empty(), "{stderr}");

    p.manifest(&format!(
        "[source]\nkind = \"stdin\"\n[[operator]]\nplugin = \"{}\"\n[sink]\nkind = \"stdout\"\n[dead_letter]\npath = \"dead-stdin.jsonl\"\n",
        plugin("behave").display()
    ));
    let mut child = Command::new(waio_bin())
        .args(["run", "pipeline.toml"])
        .current_dir(p.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(&lines), ["1", "2"]);
    assert!(
        read_jsonl(&p.path("dead-stdin.jsonl")).is_empty(),
        "{stderr}"
    );
}

/// A plugin output that is not JSON used to be written as a JSON string without a word: now it
/// is a dead letter (reason "output") naming the operator and the input line, the output file
/// stays JSON lines, and the log says so.
#[test]
fn an_output_that_is_not_json_is_dead_lettered() {
    let p = Pipeline::new();
    p.input(&[
        rec(json!({"id": 1, "mode": "text", "text": "plain words"})),
        rec(json!({"id": 2})),
    ]);
    p.manifest(&one_operator(&plugin("behave"), "", "", ""));
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&read_jsonl(&p.path("out.jsonl"))), ["2"]);
    let dead = read_jsonl(&p.path("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stage"], "op");
    assert_eq!(dead[0]["reason"], "output");
    assert_eq!(dead[0]["line"], 1);
    assert_eq!(dead[0]["payload"], "plain words");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("operator \"op\": the output for input line 1 is not JSON"),
        "{error}"
    );
    assert!(stderr.contains("is not JSON"), "{stderr}");
    assert!(
        stderr.contains("2 records in, 1 out, 1 dead-lettered"),
        "{stderr}"
    );
}
