//! The `waio` binary: bad input gets a clear error naming the place, a non-zero exit and no panic;
//! nothing is silently dropped.

use std::time::Duration;

use serde_json::json;
use waio_tests::*;

fn assert_clean_failure(code: i32, stderr: &str) {
    assert_eq!(code, 1, "expected exit code 1, stderr: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "the host must not panic: {stderr}"
    );
    assert!(
        stderr.starts_with("error:") || stderr.contains("\nerror:"),
        "{stderr}"
    );
}

fn behave_manifest(p: &Pipeline, plugin_path: &str) -> std::path::PathBuf {
    p.manifest(&one_operator(std::path::Path::new(plugin_path), "", "", ""))
}

#[test]
fn check_reports_what_it_found() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    behave_manifest(&p, &plugin("behave").display().to_string());
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("operator op:"), "{stdout}");
    assert!(
        stdout.contains("implements waio:enricher/enricher-plugin@0.5.0"),
        "{stdout}"
    );
}

#[test]
fn check_shows_the_retries_and_the_breaker_an_operator_has() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    let extra = "max_retries = 3\nretry.initial_delay = \"100ms\"\ncircuit_breaker.failure_threshold = \"50%\"\ncircuit_breaker.window = \"1m\"\nasync_retry.strategy = \"exponential\"\nasync_retry.on_empty_result = true";
    p.manifest(&one_operator(&plugin("behave"), extra, "", ""));
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "request retries: 3 (100ms, exponential up to 5s, budget 0.2)",
        "circuit breaker per endpoint: opens at 50% of >= 20 calls in 1m, open 30s, 3 probes",
        "record retries: exponential 100ms x2 up to 5s, 3 retries, on retriable failures and empty results",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    // Without them, nothing is said.
    p.manifest(&one_operator(&plugin("behave"), "", "", ""));
    let (_, stdout, _) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert!(
        !stdout.contains("retries") && !stdout.contains("breaker"),
        "{stdout}"
    );
}

#[test]
fn run_prints_a_summary_and_malformed_lines_go_to_dead_letters_with_their_line_number() {
    let p = Pipeline::new();
    std::fs::write(
        p.path("input.jsonl"),
        "{\"id\":\"a\"}\n{\"id\": oops}\n\n{\"id\":\"b\"}\n",
    )
    .unwrap();
    behave_manifest(&p, &plugin("behave").display().to_string());
    let (code, _stdout, stderr) = run_waio(
        p.dir.path(),
        &["run", "pipeline.toml", "--summary-json", "summary.json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let out = read_jsonl(&p.path("out.jsonl"));
    assert_eq!(out.len(), 2);
    let dead = read_jsonl(&p.path("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["reason"], "parse");
    assert_eq!(dead[0]["line"], 2);
    assert_eq!(dead[0]["payload"], "{\"id\": oops}");
    assert!(dead[0]["error"].as_str().unwrap().contains("input.jsonl:2"));
    assert!(
        stderr.contains("3 records in, 2 out, 1 dead-lettered"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["records_in"], 3);
    assert_eq!(summary["dead_lettered"], 1);
    assert!(summary["operators"][0]["latency_p99_ms"].as_f64().is_some());
}

#[test]
fn an_empty_input_file_is_an_error_naming_it() {
    let p = Pipeline::new();
    std::fs::write(p.path("input.jsonl"), "").unwrap();
    behave_manifest(&p, &plugin("behave").display().to_string());
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_clean_failure(code, &stderr);
    assert!(
        stderr.contains("input.jsonl") && stderr.contains("empty"),
        "{stderr}"
    );
}

#[test]
fn a_missing_plugin_file_names_the_manifest_line() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    behave_manifest(&p, "plugins/nope.wasm");
    for command in ["run", "check"] {
        let (code, _, stderr) = run_waio(p.dir.path(), &[command, "pipeline.toml"]);
        assert_clean_failure(code, &stderr);
        assert!(stderr.contains("pipeline.toml:11:"), "{stderr}");
        assert!(
            stderr.contains("nope.wasm") && stderr.contains("does not exist"),
            "{stderr}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_component_is_rejected() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    std::fs::write(p.path("text.wasm"), "hello").unwrap();
    // The smallest valid core module: magic and version 1.
    std::fs::write(p.path("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    for (file, expect) in [
        ("text.wasm", "magic bytes"),
        ("core.wasm", "core WebAssembly module"),
    ] {
        behave_manifest(&p, file);
        let (code, _, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
        assert_clean_failure(code, &stderr);
        assert!(
            stderr.contains("is not a WebAssembly component") && stderr.contains(expect),
            "{stderr}"
        );
        assert!(stderr.contains("pipeline.toml:11:"), "{stderr}");
    }
}

#[test]
fn a_component_of_another_world_is_rejected() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    behave_manifest(&p, &plugin("other-world").display().to_string());
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_clean_failure(code, &stderr);
    assert!(stderr.contains("another world"), "{stderr}");
    assert!(stderr.contains("waio:enricher/enricher-plugin"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_waio_enricher_0_1_0_still_runs_and_is_told_to_rebuild() {
    let echo = EchoServer::start().await;
    let p = Pipeline::new();
    p.input(&[
        json!({"id": "plain"}).to_string(),
        json!({"id": "fetched", "url": echo.url("/x")}).to_string(),
        json!({"id": "refused", "url": "http://10.0.0.1/x"}).to_string(),
    ]);
    let old = plugin("old-contract");
    p.manifest(&one_operator(
        &old,
        "allowed_hosts = [\"127.0.0.1\"]",
        "",
        "",
    ));
    let note = "built against waio:enricher@0.1.0: runs through an adapter, one record per call (an unavailable endpoint reaches it as a connection failure); rebuild it with this waio's SDK: `waio plugin build DIR`";

    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("implements waio:enricher/enricher-plugin@0.1.0;"),
        "{stdout}"
    );
    assert!(stdout.contains(note), "{stdout}");

    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(note), "{stderr}");
    let out = read_jsonl(&p.path("out.jsonl"));
    let by_id = |id: &str| {
        out.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no output for {id}: {out:?}"))
    };
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(by_id("plain"), &json!({"id": "plain"}));
    // A request and its answer pass through the adapter both ways.
    assert_eq!(by_id("fetched")["status"], 200);
    assert_eq!(echo.requests().len(), 1);
    let refused = by_id("refused")["error"].as_str().unwrap();
    assert!(refused.starts_with("denied: "), "{refused}");
}

/// 0.2.0 has no `async-invoke-batch`: the host calls it one record at a time, whatever
/// `batch.max_size` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_waio_enricher_0_2_0_runs_one_record_per_call() {
    let echo = EchoServer::start().await;
    let p = Pipeline::new();
    let mut lines: Vec<String> = (0..200)
        .map(|i| json!({"id": format!("r{i}")}).to_string())
        .collect();
    lines.push(json!({"id": "fetched", "url": echo.url("/x")}).to_string());
    p.input(&lines);
    let toml = one_operator(
        &plugin("contract-0-2"),
        "allowed_hosts = [\"127.0.0.1\"]\nbatch.max_size = 64",
        "",
        "",
    );
    p.manifest(&toml);
    let note = "built against waio:enricher@0.2.0: runs through an adapter, one record per call (no async-invoke-batch)";
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("implements waio:enricher/enricher-plugin@0.2.0;"),
        "{stdout}"
    );
    assert!(stdout.contains(note), "{stdout}");
    let out = p.run(&toml).await;
    assert!(out.result.is_ok(), "{}", out.error());
    assert_eq!(out.output.len(), 201);
    let fetched = out.output.iter().find(|r| r["id"] == "fetched").unwrap();
    assert_eq!(fetched["status"], 200);
    assert_eq!(out.summary().operators[0].batch_calls, 0);
}

/// 0.3.0 has `async-invoke-batch` but no `input-headers`: it runs through an adapter, with
/// batches, and its requests still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_waio_enricher_0_3_0_runs_with_batches() {
    runs_with_batches(
        "contract-0-3",
        "0.3.0",
        "runs through an adapter (input-headers is not there for it)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_waio_enricher_0_4_0_runs_with_batches() {
    runs_with_batches(
        "contract-0-4",
        "0.4.0",
        "runs through an adapter, with batches of one result-future per record (no invoke-columns)",
    )
    .await;
}

/// A plugin of an earlier contract that takes `async-invoke-batch`: `waio check` names its
/// version and `note`, and a run gets every record out, in batches, one through an HTTP answer.
async fn runs_with_batches(name: &str, version: &str, note: &str) {
    let echo = EchoServer::start().await;
    let p = Pipeline::new();
    let mut lines: Vec<String> = (0..200)
        .map(|i| json!({"id": format!("r{i}")}).to_string())
        .collect();
    lines.push(json!({"id": "fetched", "url": echo.url("/x")}).to_string());
    p.input(&lines);
    let toml = one_operator(
        &plugin(name),
        "allowed_hosts = [\"127.0.0.1\"]\nbatch.max_size = 64",
        "",
        "",
    );
    p.manifest(&toml);
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    let world = format!("implements waio:enricher/enricher-plugin@{version};");
    assert!(stdout.contains(&world), "{stdout}");
    let built = format!("built against waio:enricher@{version}: {note}");
    assert!(stdout.contains(&built), "{stdout}");
    let out = p.run(&toml).await;
    assert!(out.result.is_ok(), "{}", out.error());
    assert_eq!(out.output.len(), 201);
    let fetched = out.output.iter().find(|r| r["id"] == "fetched").unwrap();
    assert_eq!(fetched["status"], 200);
    assert!(out.summary().operators[0].batch_calls > 0);
}

#[test]
fn an_invalid_manifest_names_line_column_and_field() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    let good = one_operator(&plugin("behave"), "", "", "");
    for (broken, expect) in [
        (
            good.replace("name = \"op\"", "name = \"op\"\ncapacty = 5"),
            "capacty",
        ),
        (
            good.replace("name = \"op\"", "name = \"op\"\ncapacity = 0"),
            "capacity",
        ),
        (
            good.replace("name = \"op\"", "name = \"op\"\ncapacity = \"lots\""),
            "capacity",
        ),
        (
            good.replace("name = \"op\"", "name = \"op\"\ntimeout = \"soon\""),
            "timeout",
        ),
    ] {
        p.manifest(&broken);
        let (code, _, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
        assert_clean_failure(code, &stderr);
        assert!(stderr.contains("pipeline.toml:11:"), "{expect}: {stderr}");
        assert!(stderr.contains(expect), "{stderr}");
    }
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "missing.toml"]);
    assert_clean_failure(code, &stderr);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn a_failing_record_exits_non_zero_naming_the_record() {
    let p = Pipeline::new();
    p.input(&[
        json!({"id": 1}).to_string(),
        json!({"id": 2, "mode": "fail", "message": "no such user"}).to_string(),
    ]);
    behave_manifest(&p, &plugin("behave").display().to_string());
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_clean_failure(code, &stderr);
    assert!(
        stderr.contains("input.jsonl:2") && stderr.contains("no such user"),
        "{stderr}"
    );
}

#[test]
fn stdin_to_stdout_streams_records_through() {
    use std::io::Write;
    let p = Pipeline::new();
    p.manifest(&format!(
        "[source]\nkind = \"stdin\"\nkey_field = \"id\"\n[[operator]]\nplugin = \"{}\"\n[sink]\nkind = \"stdout\"\nformat = \"envelope\"\n",
        plugin("behave").display()
    ));
    let mut child = std::process::Command::new(waio_bin())
        .args(["run", "pipeline.toml"])
        .current_dir(p.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"id\":\"x\",\"results\":2}\n{\"id\":\"y\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["x", "x", "y"]);
}

#[test]
fn the_generator_source_feeds_the_requested_number_of_records() {
    let p = Pipeline::new();
    p.manifest(&format!(
        "[source]\nkind = \"generator\"\ncount = 5000\n[[operator]]\nplugin = \"{}\"\noutput_mode = \"unordered\"\n[sink]\nkind = \"discard\"\n",
        plugin("echo").display()
    ));
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("5000 records in, 5000 out, 0 dead-lettered"),
        "{stderr}"
    );
}

#[test]
fn plugin_log_lines_reach_the_host_log_with_the_plugin_name_in_every_language() {
    for name in ["behave", "conform-python", "conform-js", "conform-c"] {
        let p = Pipeline::new();
        p.input(&[json!({"id": 1, "log": format!("hello from {name}")}).to_string()]);
        behave_manifest(&p, &plugin(name).display().to_string());
        let (code, _, stderr) = run_waio_env(
            p.dir.path(),
            &["run", "pipeline.toml"],
            &[("WAIO_LOG", "info")],
        );
        assert_eq!(code, 0, "{name}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("hello from {name}")))
            .unwrap_or_else(|| panic!("{name}: no plugin log line in: {stderr}"));
        assert!(
            line.contains("INFO") && line.contains("plugin=\"op\""),
            "{name}: {line}"
        );
    }
}

#[test]
fn the_mock_provider_command_serves_a_pipeline_and_stops_cleanly_on_ctrl_c() {
    let mock_dir = tempfile::tempdir().expect("temp dir");
    // A free port: bind one, note it, let it go (the mock binds it again at once).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    // Killed when the test ends, also if an assertion fails before Ctrl-C is sent.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }
    let mut mock = Running(spawn_waio(
        mock_dir.path(),
        &["mock-provider", "--listen", &listen, "--latency-ms", "5"],
    ));
    wait_until(
        "the mock provider to listen",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(&listen).is_ok(),
    );

    // Many requests at once over one HTTP/2 connection and over many HTTP/1.1 connections.
    for (version, count) in [("2", 300), ("1.1", 200)] {
        let p = Pipeline::new();
        let lines: Vec<String> = (0..count)
            .map(|i| json!({"id": i, "text": "please refund my invoice"}).to_string())
            .collect();
        p.input(&lines);
        p.manifest(&one_operator(
            &plugin("openai"),
            &format!("allowed_hosts = [\"127.0.0.1\"]\ncapacity = 100\nhttp_version = \"{version}\""),
            &format!(
                "base_url = \"http://{listen}/v1\"\nmodel = \"mock-small\"\nsystem_prompt = \"Labels: billing, bug\""
            ),
            "",
        ));
        let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
        assert_eq!(code, 0, "HTTP/{version}: {stderr}");
        let out = read_jsonl(&p.path("out.jsonl"));
        assert_eq!(out.len(), count, "HTTP/{version}: {stderr}");
        assert!(out.iter().all(|r| r["label"] == "billing"), "{:?}", out[0]);
    }

    signal(&mock.0, "INT");
    assert_eq!(wait_exit(&mut mock.0, Duration::from_secs(30)), 0);
    let log = std::fs::read_to_string(mock_dir.path().join("stderr.log")).expect("mock log");
    assert!(log.contains("requests=500"), "{log}");
}

#[test]
fn a_bad_worker_count_in_the_environment_is_a_clear_error() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    behave_manifest(&p, &plugin("behave").display().to_string());
    for bad in ["0", "many"] {
        let (code, _, stderr) = run_waio_env(
            p.dir.path(),
            &["run", "pipeline.toml"],
            &[("TOKIO_WORKER_THREADS", bad)],
        );
        assert_clean_failure(code, &stderr);
        assert!(stderr.contains("TOKIO_WORKER_THREADS"), "{stderr}");
        assert!(!p.path("out.jsonl").exists(), "nothing ran: {stderr}");
    }
    let (code, _, stderr) = run_waio_env(
        p.dir.path(),
        &["run", "pipeline.toml"],
        &[("TOKIO_WORKER_THREADS", "3")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_jsonl(&p.path("out.jsonl")).len(), 1);
}
