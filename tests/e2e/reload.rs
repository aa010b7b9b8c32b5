//! Hot reload, end to end against the `waio` binary: plugin files replaced under load while
//! `--watch` watches them, a prompt changed in the manifest and picked up on SIGHUP, broken
//! plugins and structural changes refused while the running version goes on, the admin
//! server's reload endpoint, and SIGKILL right after a swap followed by a resume.
//!
//! Which version produced each output is read from the envelope's `plugin_digest`; versions of
//! one plugin are told apart by a custom section appended to its file.

use std::io::Write;
use std::path::Path;
use std::process::ChildStdin;
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::observe::{admin_addr, http_get, http_post};
use waio_tests::reload::*;
use waio_tests::*;

/// A hang guard for a whole run, not a speed check.
const LIMIT: Duration = Duration::from_secs(120);
/// How long a reload (a component compiled, checked and opened) may take before the test calls
/// it a hang.
const RELOAD_LIMIT: Duration = Duration::from_secs(60);

/// What the log says for each swap of the operator (all tests name it "op").
const SWAPPED: &str = "reloaded operator \"op\"";
/// What the log says for each refused reload.
const REFUSED: &str = "reload refused";

/// One operator running the behave test plugin at `plugin`, ordered, with `capacity`, asking the
/// echo server at `echo`; the envelope sink (`out.jsonl`) says which version produced each
/// output. `source` is the `[source]` table, `extra` is appended (e.g. `[checkpoint]`).
fn behave_manifest(
    plugin: &Path,
    source: &str,
    echo: &str,
    capacity: usize,
    extra: &str,
) -> String {
    format!(
        r#"name = "reloaded"
{source}

[[operator]]
name = "op"
plugin = "{plugin}"
capacity = {capacity}
ordered = true
allowed_hosts = ["127.0.0.1"]
[operator.config]
echo_url = "{echo}"

[sink]
kind = "file"
path = "out.jsonl"
format = "envelope"

[dead_letter]
path = "dead.jsonl"
{extra}"#,
        plugin = plugin.display()
    )
}

const STDIN: &str = "[source]\nkind = \"stdin\"";

/// Writes `lines` to the run's stdin; a run that ended fails the test with its log.
fn feed(stdin: &mut ChildStdin, dir: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if let Err(error) = stdin
        .write_all(text.as_bytes())
        .and_then(|()| stdin.flush())
    {
        panic!("cannot feed waio ({error}): did it end?\n{}", log(dir));
    }
}

/// The `payload.id` of every envelope line.
fn envelope_ids(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            l["payload"]["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("no payload.id in {l}"))
        })
        .collect()
}

/// The `plugin_digest` of every envelope line, by the name of the version it is the digest of
/// (`names` pairs a digest with a name; an unknown digest stays as it is).
fn versions(lines: &[Value], names: &[(&str, &str)]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let digest = l["plugin_digest"]
                .as_str()
                .unwrap_or_else(|| panic!("no plugin_digest in {l}"));
            assert!(
                digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                "plugin_digest is not a hex SHA-256: {l}"
            );
            names
                .iter()
                .find(|(d, _)| *d == digest)
                .map_or(digest.to_string(), |(_, name)| name.to_string())
        })
        .collect()
}

/// The behave plugin copied to `plugin.wasm` in the test's directory (the manifest points at
/// the copy), and version B of it: the same code with another digest.
struct TwoVersions {
    target: std::path::PathBuf,
    b: Vec<u8>,
    /// The original's digest, then B's.
    digests: [String; 2],
}

impl TwoVersions {
    fn in_dir(p: &Pipeline) -> TwoVersions {
        let target = p.path("plugin.wasm");
        std::fs::copy(plugin("behave"), &target).expect("copy the plugin");
        let b = variant(&plugin("behave"), "B");
        let digests = [file_sha256(&target), sha256_hex(&b)];
        TwoVersions { target, b, digests }
    }
}

/// Waits until the run's admin server at `addr` says `n` records were written.
fn wait_for_records_out(child: &mut std::process::Child, dir: &Path, addr: &str, n: u64) {
    wait_while_running(child, dir, &format!("{n} records out"), LIMIT, || {
        http_get(addr, "/status.json", None)
            .ok()
            .and_then(|a| serde_json::from_str::<Value>(&a.body).ok())
            .is_some_and(|s| s["summary"]["records_out"] == n)
    });
}

/// A plugin replaced five times while 4,000 records flow through it (ordered, 100 in flight):
/// three good versions are swapped in, a broken file and a component of another world are
/// refused while the running version goes on. Each record is invoked on exactly one version,
/// none is lost or repeated, and the output switches version once per swap, exactly where the
/// test changed the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_switches_once_per_swap() {
    const CHUNK: u64 = 500;
    const CHUNKS: u64 = 8;
    let mock = mock().await;
    let p = Pipeline::new();
    let dir = p.dir.path();
    let target = p.path("plugin.wasm");
    std::fs::copy(plugin("behave"), &target).expect("copy the plugin");
    let b = variant(&plugin("behave"), "B");
    let b2 = variant(&plugin("behave"), "B2");
    let b3 = variant(&plugin("behave"), "B3");
    // A build that broke half-way: the first half of a component.
    let broken = b[..b.len() / 2].to_vec();
    let other_world = std::fs::read(plugin("other-world")).expect("other-world.wasm");
    let digests = [
        file_sha256(&target),
        sha256_hex(&b),
        sha256_hex(&b2),
        sha256_hex(&b3),
    ];
    let names = [
        (digests[0].as_str(), "original"),
        (digests[1].as_str(), "B"),
        (digests[2].as_str(), "B2"),
        (digests[3].as_str(), "B3"),
    ];
    p.manifest(&behave_manifest(
        &target,
        STDIN,
        &format!("{}/echo", mock.url()),
        100,
        "",
    ));
    // What replaces plugin.wasm after each of the first chunks, and whether it is a good version.
    let replacements: [(&[u8], bool); 5] = [
        (b.as_slice(), true),
        (broken.as_slice(), false),
        (b2.as_slice(), true),
        (other_world.as_slice(), false),
        (b3.as_slice(), true),
    ];

    let mut child = spawn_waio(
        dir,
        &[
            "run",
            "--watch",
            "pipeline.toml",
            "--summary-json",
            "summary.json",
        ],
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let (mut swaps, mut refusals) = (0, 0);
    for chunk in 0..CHUNKS {
        let lines: Vec<Value> = (chunk * CHUNK + 1..=(chunk + 1) * CHUNK)
            .map(|id| json!({"id": id, "mode": "later"}))
            .collect();
        feed(&mut stdin, dir, &lines);
        let Some((bytes, good)) = replacements.get(chunk as usize) else {
            continue;
        };
        // Every record fed so far has been invoked (it asked the echo server) before the file
        // changes: they belong to the version that runs now, whatever the reload does.
        let fed = (chunk + 1) * CHUNK;
        wait_while_running(
            &mut child,
            dir,
            &format!("{fed} records invoked"),
            LIMIT,
            || mock.stats().echo >= fed,
        );
        replace_file(&target, bytes);
        // The next chunk only goes in once the reload is done: swapped, or refused.
        if *good {
            swaps += 1;
            wait_for_log(&mut child, dir, SWAPPED, swaps, RELOAD_LIMIT);
        } else {
            refusals += 1;
            wait_for_log(&mut child, dir, REFUSED, refusals, RELOAD_LIMIT);
        }
    }
    drop(stdin);
    let code = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{}", log(dir));

    let dead = read_jsonl(&p.path("dead.jsonl"));
    assert!(dead.is_empty(), "dead letters: {dead:?}\n{}", log(dir));
    let out = read_jsonl(&p.path("out.jsonl"));
    assert_once_in_order(&envelope_ids(&out), CHUNK * CHUNKS);
    // One version per stretch of the input: the original took chunk 1, B chunks 2-3 (the broken
    // file was refused), B2 chunks 4-5 (the other world was refused), B3 the rest.
    let by_version = runs(&versions(&out, &names));
    let expected: Vec<(String, usize)> = [
        ("original", 500usize),
        ("B", 1000),
        ("B2", 1000),
        ("B3", 1500),
    ]
    .iter()
    .map(|(name, n)| (name.to_string(), *n))
    .collect();
    assert_eq!(
        by_version, expected,
        "the versions of the outputs, in output order"
    );

    let log_text = log(dir);
    let swapped = log_lines(dir, SWAPPED);
    assert_eq!(swapped.len(), 3, "{log_text}");
    for (line, pair) in swapped.iter().zip(digests.windows(2)) {
        let from_to = format!("plugin {} -> {} in ", &pair[0][..12], &pair[1][..12]);
        assert!(line.contains(&from_to), "expected {from_to:?} in: {line}");
        assert!(line.contains("records finish on the old version"), "{line}");
        assert!(!line.contains("settings only"), "{line}");
    }
    let refused = log_lines(dir, REFUSED);
    assert_eq!(refused.len(), 2, "{log_text}");
    for line in &refused {
        assert!(
            line.contains("operator \"op\"") && line.contains("plugin.wasm"),
            "the refusal names the operator and the file: {line}"
        );
        assert!(line.contains("the running version goes on"), "{line}");
    }
    assert!(
        refused[0].contains("is not a WebAssembly component"),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].contains("is a component of another world"),
        "{}",
        refused[1]
    );
    // The temporary files written beside the plugin and the run's own files in the directory
    // (its log) are no reason to reload: at most one idle reload per replacement.
    let idle = log_lines(dir, "reload: nothing changed").len();
    assert!(
        idle <= replacements.len(),
        "{idle} reloads found nothing changed: the watcher reacts to other files\n{log_text}"
    );

    let summary = summary_json(dir);
    assert_eq!(summary["reloads"], 3, "{summary}");
    assert_eq!(summary["reloads_refused"], 2, "{summary}");
    drop(mock);
}

/// The openai operator with `Labels: LABELS` as its system prompt (the mock answers the one
/// label there is), writing envelopes to `sink`.
fn prompted_manifest(mock: &MockServer, labels: &str, sink: &str) -> String {
    format!(
        r#"name = "prompted"
[source]
kind = "stdin"

[[operator]]
name = "op"
plugin = "{plugin}"
capacity = 8
ordered = true
allowed_hosts = ["127.0.0.1"]
[operator.config]
base_url = "{url}/v1"
mode = "chat"
model = "mock-small"
system_prompt = "Labels: {labels}"

[sink]
kind = "file"
path = "{sink}"
format = "envelope"

[dead_letter]
path = "dead.jsonl"
"#,
        plugin = plugin("openai").display(),
        url = mock.url(),
    )
}

/// SIGHUP reloads without `--watch`: a new system prompt in the manifest gives new instances of
/// the same plugin, and the records fed from then on are answered with the new prompt while the
/// earlier ones kept the old. A manifest that then names another sink file is refused (a
/// restart is needed) and the run goes on with the new prompt into the file it started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_prompt_changes_answers_from_then_on_and_a_structural_change_is_refused() {
    const CHUNK: u64 = 20;
    let mock = mock().await;
    let p = Pipeline::new();
    let dir = p.dir.path();
    let manifest = p.path("pipeline.toml");
    p.manifest(&prompted_manifest(&mock, "alpha", "out.jsonl"));
    let digest = file_sha256(&plugin("openai"));
    let chunk = |n: u64| -> Vec<Value> {
        (n * CHUNK + 1..=(n + 1) * CHUNK)
            .map(|id| json!({"id": id, "text": format!("ticket {id}: my invoice is wrong")}))
            .collect()
    };

    let mut child = spawn_waio(
        dir,
        &["run", "pipeline.toml", "--summary-json", "summary.json"],
    );
    let mut stdin = child.stdin.take().expect("stdin");
    feed(&mut stdin, dir, &chunk(0));
    wait_while_running(&mut child, dir, "chunk 1 sent to the model", LIMIT, || {
        mock.stats().chat >= CHUNK
    });

    replace_file(
        &manifest,
        prompted_manifest(&mock, "beta", "out.jsonl").as_bytes(),
    );
    signal(&child, "HUP");
    wait_for_log(&mut child, dir, SWAPPED, 1, RELOAD_LIMIT);
    feed(&mut stdin, dir, &chunk(1));
    wait_while_running(&mut child, dir, "chunk 2 sent to the model", LIMIT, || {
        mock.stats().chat >= 2 * CHUNK
    });

    replace_file(
        &manifest,
        prompted_manifest(&mock, "beta", "elsewhere.jsonl").as_bytes(),
    );
    signal(&child, "HUP");
    wait_for_log(&mut child, dir, REFUSED, 1, RELOAD_LIMIT);
    feed(&mut stdin, dir, &chunk(2));
    drop(stdin);
    let code = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{}", log(dir));

    let dead = read_jsonl(&p.path("dead.jsonl"));
    assert!(dead.is_empty(), "dead letters: {dead:?}\n{}", log(dir));
    assert!(
        !p.path("elsewhere.jsonl").exists(),
        "the refused sink was opened"
    );
    let out = read_jsonl(&p.path("out.jsonl"));
    assert_once_in_order(&envelope_ids(&out), 3 * CHUNK);
    let labels: Vec<(u64, String)> = out
        .iter()
        .map(|l| {
            let id = l["payload"]["id"].as_u64().unwrap_or_default();
            let label = l["payload"]["label"].as_str().unwrap_or("<none>");
            (id, label.to_string())
        })
        .collect();
    let expected: Vec<(u64, String)> = (1..=3 * CHUNK)
        .map(|id| (id, if id <= CHUNK { "alpha" } else { "beta" }.to_string()))
        .collect();
    assert_eq!(
        labels, expected,
        "chunk 1 with the first prompt, chunks 2 and 3 with the second"
    );
    // Same file: the same digest before and after, on every output.
    assert!(
        versions(&out, &[(digest.as_str(), "openai")])
            .iter()
            .all(|v| v == "openai"),
        "{out:?}"
    );

    let log_text = log(dir);
    let swapped = log_lines(dir, SWAPPED);
    assert_eq!(swapped.len(), 1, "{log_text}");
    let same = format!("plugin {0} -> {0} in ", &digest[..12]);
    assert!(
        swapped[0].contains(&same),
        "expected {same:?} in: {}",
        swapped[0]
    );
    // A new config means new instances: not a settings-only swap.
    assert!(!swapped[0].contains("settings only"), "{}", swapped[0]);
    let refused = log_lines(dir, REFUSED);
    assert_eq!(refused.len(), 1, "{log_text}");
    assert!(
        refused[0].contains("[sink] changed")
            && refused[0].contains("restart")
            && refused[0].contains("the running version goes on"),
        "{}",
        refused[0]
    );

    let summary = summary_json(dir);
    assert_eq!(summary["reloads"], 1, "{summary}");
    assert_eq!(summary["reloads_refused"], 1, "{summary}");
    drop(mock);
}

/// A checkpointed run over a file, killed with SIGKILL the moment a new plugin version is
/// swapped in, then run again to its end on the new file: every record once in the committed
/// output, in order, produced by the original version and then by the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_a_swap_then_resume_keeps_exactly_once() {
    // 20 in flight, 25 ms each: some 7 s of work, so the run is still going when the new
    // version is ready (compiled and opened) and the kill comes.
    const RECORDS: u64 = 6_000;
    // The echo server answers after 25 ms (the mock's latency; it takes no delay per record).
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 25,
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let dir = p.dir.path();
    let TwoVersions { target, b, digests } = TwoVersions::in_dir(&p);
    let names = [
        (digests[0].as_str(), "original"),
        (digests[1].as_str(), "B"),
    ];
    let input: Vec<String> = (1..=RECORDS)
        .map(|id| rec(json!({"id": id, "mode": "later"})))
        .collect();
    p.input(&input);
    p.manifest(&behave_manifest(
        &target,
        "[source]\nkind = \"file\"\npath = \"input.jsonl\"",
        &format!("{}/echo", mock.url()),
        20,
        "\n[checkpoint]\ndir = \"state\"\ninterval = \"200ms\"\n",
    ));

    let mut child = spawn_waio(dir, &["run", "--watch", "pipeline.toml"]);
    wait_while_running(&mut child, dir, "some committed output", LIMIT, || {
        complete_lines(&p.path("out.jsonl")) > 0
    });
    replace_file(&target, &b);
    wait_for_log(&mut child, dir, SWAPPED, 1, RELOAD_LIMIT);
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the run ended before the kill: the test needs a longer run\n{}",
        log(dir)
    );
    signal(&child, "KILL");
    let _ = child.wait();
    let first_log = log(dir);
    let swapped = log_lines(dir, SWAPPED);
    let from_to = format!("plugin {} -> {} in ", &digests[0][..12], &digests[1][..12]);
    assert!(
        swapped[0].contains(&from_to),
        "expected {from_to:?} in: {}",
        swapped[0]
    );
    let committed = complete_lines(&p.path("out.jsonl")) as u64;
    assert!(
        committed > 0 && committed < RECORDS,
        "{committed} records committed by the killed run\n{first_log}"
    );

    // Plain `waio run` on the manifest as it is: its plugin file is version B now.
    let (code, _, stderr) = run_waio(dir, &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resumed from checkpoint"), "{stderr}");
    let dead = read_jsonl(&p.path("dead.jsonl"));
    assert!(dead.is_empty(), "dead letters: {dead:?}\n{stderr}");
    let out = read_jsonl(&p.path("out.jsonl"));
    assert_once_in_order(&envelope_ids(&out), RECORDS);
    let by_version = runs(&versions(&out, &names));
    let order: Vec<&str> = by_version.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        order,
        ["original", "B"],
        "the original's outputs, then B's, nothing else: {by_version:?}"
    );
    drop(mock);
}

/// `POST /admin/operators/NAME/reload` (no `--watch`): 404 for an operator the pipeline does
/// not have, 200 with nothing swapped when nothing changed, 200 naming both digests after the
/// plugin file changed, 409 saying why for a broken file. The records fed after the swap are
/// produced by the new version, those before by the original.
#[test]
fn the_admin_endpoint_reloads_an_operator_and_says_what_it_swapped_or_why_not() {
    let p = Pipeline::new();
    let dir = p.dir.path();
    let TwoVersions { target, b, digests } = TwoVersions::in_dir(&p);
    let names = [
        (digests[0].as_str(), "original"),
        (digests[1].as_str(), "B"),
    ];
    // Mode "now" never asks the echo server.
    p.manifest(&behave_manifest(
        &target,
        STDIN,
        "http://127.0.0.1:9/echo",
        4,
        "",
    ));
    let mut child = spawn_waio(
        dir,
        &[
            "run",
            "pipeline.toml",
            "--admin",
            "127.0.0.1:0",
            "--summary-json",
            "summary.json",
        ],
    );
    let addr = admin_addr(dir, LIMIT);
    let mut stdin = child.stdin.take().expect("stdin");
    let records = |ids: std::ops::RangeInclusive<u64>| -> Vec<Value> {
        ids.map(|id| json!({"id": id, "mode": "now"})).collect()
    };
    feed(&mut stdin, dir, &records(1..=5));
    wait_for_records_out(&mut child, dir, &addr, 5);
    let post = |operator: &str| -> (u16, Value) {
        let path = format!("/admin/operators/{operator}/reload");
        let answer = http_post(&addr, &path).unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert!(
            answer.content_type.starts_with("application/json"),
            "{}: {}",
            answer.content_type,
            answer.body
        );
        let body = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {}", answer.body));
        (answer.status, body)
    };

    let (status, body) = post("nope");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{body}"
    );

    let (status, body) = post("op");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"swapped": []}), "nothing changed yet");

    replace_file(&target, &b);
    let (status, body) = post("op");
    assert_eq!(status, 200, "{body}");
    let swapped = body["swapped"].as_array().cloned().unwrap_or_default();
    assert_eq!(swapped.len(), 1, "{body}");
    assert_eq!(swapped[0]["operator"], "op", "{body}");
    assert_eq!(swapped[0]["old"], digests[0].as_str(), "{body}");
    assert_eq!(swapped[0]["new"], digests[1].as_str(), "{body}");
    assert!(swapped[0]["took_ms"].is_u64(), "{body}");
    // The metrics say so: one reload, and the info series carries the new digest.
    let metrics = http_get(&addr, "/metrics", None)
        .expect("GET /metrics")
        .body;
    assert!(
        metrics.contains("waio_plugin_reloads_total{pipeline=\"reloaded\",operator=\"op\"} 1"),
        "{metrics}"
    );
    let info = metrics
        .lines()
        .find(|l| l.starts_with("waio_plugin_info{"))
        .unwrap_or_default();
    assert!(
        info.contains(&format!("digest=\"{}\"", digests[1])),
        "{info}"
    );

    replace_file(&target, b"not a component at all\n");
    let (status, body) = post("op");
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("reload refused: ") && error.contains("is not a WebAssembly component"),
        "{body}"
    );

    // B goes on: the records fed now are its.
    feed(&mut stdin, dir, &records(6..=10));
    drop(stdin);
    let code = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{}", log(dir));
    let out = read_jsonl(&p.path("out.jsonl"));
    assert_once_in_order(&envelope_ids(&out), 10);
    let by_version = runs(&versions(&out, &names));
    assert_eq!(
        by_version,
        [("original".to_string(), 5), ("B".to_string(), 5)],
        "the versions of the outputs, in output order"
    );
    assert_eq!(log_lines(dir, SWAPPED).len(), 1, "{}", log(dir));
    let summary = summary_json(dir);
    assert_eq!(summary["reloads"], 1, "{summary}");
}

/// `waio run --build --watch` on a C plugin project (it builds in about a second): an edit of
/// the source rebuilds the project and the new component is swapped in; the record fed after
/// the swap is answered by the edited code, the one before by the original.
#[test]
fn build_watch_rebuilds_an_edited_project_and_swaps_it_in() {
    let p = Pipeline::new();
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["plugin", "new", "hc", "--lang", "c"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let project = p.path("hc");
    let port = waio_tests::observe::free_port().to_string();
    let manifest = std::fs::read_to_string(project.join("pipeline.toml"))
        .expect("the project's pipeline")
        .replace("18090", &port)
        .replace(
            "kind = \"file\"\npath = \"events.jsonl\"",
            "kind = \"stdin\"",
        )
        .replace(
            "kind = \"stdout\"",
            "kind = \"stdout\"\nformat = \"envelope\"",
        );
    assert!(manifest.contains("kind = \"stdin\""), "{manifest}");
    std::fs::write(project.join("pipeline.toml"), manifest).expect("write the pipeline");

    let mut child = spawn_waio(&project, &["run", "--build", "--watch", "pipeline.toml"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let outputs = || -> Vec<Value> {
        std::fs::read_to_string(project.join("stdout.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    feed(&mut stdin, &project, &[json!({"id": "a1"})]);
    wait_for_log(&mut child, &project, "watching the manifest", 1, LIMIT);
    wait_while_running(&mut child, &project, "the first output", LIMIT, || {
        outputs().len() == 1
    });
    let first_digest = file_sha256(&project.join("hc.wasm"));

    let source = project.join("plugin.c");
    let code_text = std::fs::read_to_string(&source).expect("plugin.c");
    assert!(
        code_text.contains("\\\"lookup\\\":"),
        "the template changed"
    );
    std::fs::write(
        &source,
        code_text.replace("\\\"lookup\\\":", "\\\"looked_up\\\":"),
    )
    .expect("edit plugin.c");
    wait_for_log(
        &mut child,
        &project,
        "reloaded operator \"hc\"",
        1,
        RELOAD_LIMIT,
    );
    feed(&mut stdin, &project, &[json!({"id": "a2"})]);
    drop(stdin);
    let code = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{}", log(&project));

    let out = outputs();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out[0]["payload"]["lookup"]["value"], "value-of-a1",
        "{out:?}"
    );
    assert_eq!(
        out[1]["payload"]["looked_up"]["value"], "value-of-a2",
        "{out:?}"
    );
    assert!(out[1]["payload"].get("lookup").is_none(), "{out:?}");
    assert_eq!(out[0]["plugin_digest"], first_digest.as_str(), "{out:?}");
    assert_eq!(
        out[1]["plugin_digest"],
        file_sha256(&project.join("hc.wasm")).as_str(),
        "the rebuilt component answered"
    );
    assert_ne!(out[0]["plugin_digest"], out[1]["plugin_digest"]);
}

/// `--watch` on a plugin that is a symlink: pointing the link at another build (a new link
/// renamed over it, as `ln -sfn` and deploy tools do) swaps that build in.
#[test]
fn a_symlink_swap_is_a_change() {
    let p = Pipeline::new();
    let dir = p.dir.path();
    std::fs::copy(plugin("behave"), p.path("v1.wasm")).expect("copy v1");
    let b = variant(&plugin("behave"), "B");
    std::fs::write(p.path("v2.wasm"), &b).expect("write v2");
    let link = p.path("plugin.wasm");
    std::os::unix::fs::symlink(p.path("v1.wasm"), &link).expect("symlink");
    let digests = [file_sha256(&p.path("v1.wasm")), sha256_hex(&b)];
    let names = [(digests[0].as_str(), "v1"), (digests[1].as_str(), "v2")];
    p.manifest(&behave_manifest(
        &link,
        STDIN,
        "http://127.0.0.1:9/echo",
        4,
        "",
    ));
    let mut child = spawn_waio(
        dir,
        &["run", "--watch", "pipeline.toml", "--admin", "127.0.0.1:0"],
    );
    let addr = admin_addr(dir, LIMIT);
    let mut stdin = child.stdin.take().expect("stdin");
    let records = |ids: std::ops::RangeInclusive<u64>| -> Vec<Value> {
        ids.map(|id| json!({"id": id, "mode": "now"})).collect()
    };
    feed(&mut stdin, dir, &records(1..=3));
    wait_for_log(&mut child, dir, "watching the manifest", 1, LIMIT);
    // The first three are out before the link moves: they are v1's.
    wait_for_records_out(&mut child, dir, &addr, 3);
    let staged = p.path("plugin.wasm.new");
    std::os::unix::fs::symlink(p.path("v2.wasm"), &staged).expect("symlink");
    std::fs::rename(&staged, &link).expect("rename the link over");
    wait_for_log(&mut child, dir, SWAPPED, 1, RELOAD_LIMIT);
    feed(&mut stdin, dir, &records(4..=6));
    drop(stdin);
    let code = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{}", log(dir));
    let out = read_jsonl(&p.path("out.jsonl"));
    assert_once_in_order(&envelope_ids(&out), 6);
    assert_eq!(
        runs(&versions(&out, &names)),
        [("v1".to_string(), 3), ("v2".to_string(), 3)],
        "{}",
        log(dir)
    );
}

/// A change of request-level settings only (`allowed_hosts`), on SIGHUP: no new plugin
/// version, a new outbound stack. Requests the old policy allowed are refused from then on, so
/// those records go to the dead letters, produced by the same plugin version as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_only_reload_changes_the_request_policy_from_then_on() {
    let mock = mock().await;
    let p = Pipeline::new();
    let dir = p.dir.path();
    let target = p.path("plugin.wasm");
    std::fs::copy(plugin("behave"), &target).expect("copy the plugin");
    let manifest = behave_manifest(&target, STDIN, &format!("{}/echo", mock.url()), 4, "").replace(
        "ordered = true",
        "ordered = true\non_failure = \"dead-letter\"",
    );
    p.manifest(&manifest);
    let mut child = spawn_waio(
        dir,
        &[
            "run",
            "pipeline.toml",
            "--admin",
            "127.0.0.1:0",
            "--summary-json",
            "summary.json",
        ],
    );
    let addr = admin_addr(dir, LIMIT);
    let mut stdin = child.stdin.take().expect("stdin");
    let url = format!("{}/echo", mock.url());
    let records = |ids: std::ops::RangeInclusive<u64>| -> Vec<Value> {
        ids.map(|id| json!({"id": id, "mode": "call", "url": url}))
            .collect()
    };
    feed(&mut stdin, dir, &records(1..=3));
    wait_for_records_out(&mut child, dir, &addr, 3);
    p.manifest(&manifest.replace(
        "allowed_hosts = [\"127.0.0.1\"]",
        "allowed_hosts = [\"api.example.com\"]",
    ));
    signal(&child, "HUP");
    wait_for_log(&mut child, dir, "; settings only", 1, RELOAD_LIMIT);
    feed(&mut stdin, dir, &records(4..=6));
    drop(stdin);
    let code = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{}", log(dir));

    let out = read_jsonl(&p.path("out.jsonl"));
    assert_eq!(envelope_ids(&out), [1, 2, 3], "{}", log(dir));
    let dead = read_jsonl(&p.path("dead.jsonl"));
    let dead_ids: Vec<u64> = dead
        .iter()
        .filter_map(|d| d["payload"]["id"].as_u64())
        .collect();
    assert_eq!(dead_ids, [4, 5, 6], "{dead:?}");
    let digest = file_sha256(&target);
    for letter in &dead {
        assert_eq!(letter["plugin_digest"], digest.as_str(), "{letter}");
        assert!(
            letter["error"]
                .as_str()
                .is_some_and(|e| e.contains("allowed_hosts")),
            "{letter}"
        );
    }
    let swapped = log_lines(dir, SWAPPED);
    let same = format!("plugin {} -> {} in ", &digest[..12], &digest[..12]);
    assert!(
        swapped.len() == 1 && swapped[0].contains(&same),
        "{swapped:?}"
    );
    assert_eq!(summary_json(dir)["reloads"], 1);
    // The mock saw the first three requests only.
    assert_eq!(mock.stats().echo, 3);
}
