//! `waio serve`: batches in over HTTP/1.1 keep-alive, one answer line per record streamed back
//! as each completes, failures answered by kind, per-caller metrics, a graceful stop, and the
//! request cache sparing a replayed batch (and a restarted sidecar) a second provider call.

use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::serve::Sidecar;
use waio_tests::{mock, plugin, rec, run_waio, signal, wait_exit, MockServer, Pipeline};

/// A serve manifest with the behave plugin, its echo server the mock's `/echo`.
fn behave_manifest(p: &Pipeline, mock: &MockServer, operator_extra: &str) -> std::path::PathBuf {
    p.manifest(&format!(
        "name = \"serve-test\"\n[source]\nkind = \"serve\"\nkey_field = \"key\"\n\n\
         [[operator]]\nname = \"op\"\nplugin = \"{plugin}\"\nallowed_hosts = [\"127.0.0.1\"]\n{operator_extra}\n\
         [operator.config]\necho_url = \"{url}/echo\"\n",
        plugin = plugin("behave").display(),
        url = mock.url(),
    ))
}

/// Blocking HTTP off the runtime that serves the mock.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_record_is_answered_as_it_completes_with_its_outputs_or_its_failure() {
    let mock = mock().await;
    let p = Pipeline::new();
    // Ordered, and on_failure = "fail", would hold answers back and end a `waio run`: a sidecar
    // answers each record when it is done, and a failure to its caller.
    let manifest = behave_manifest(
        &p,
        &mock,
        "timeout = \"1s\"\nordered = true\non_failure = \"fail\"",
    );
    let sidecar = Sidecar::start(p.dir.path(), &manifest);
    let batch = vec![
        rec(json!({"id": "slow", "mode": "later", "delay_ms": 600})),
        rec(json!({"id": "fast", "mode": "now"})),
        rec(json!({"id": "none", "results": 0})),
        rec(json!({"id": "two", "results": 2})),
        rec(json!({"id": "fatal", "mode": "fail", "kind": "fatal", "message": "bad input"})),
        rec(json!({"id": "retry", "mode": "fail", "kind": "retriable", "message": "try later"})),
        rec(json!({"id": "stuck", "mode": "never"})),
        "not json".to_string(),
        rec(json!({"id": "raw", "mode": "text", "text": "plain words"})),
    ];
    let (first, second, sidecar) = off_runtime(move || {
        let mut connection = sidecar.connect();
        let first = connection.post("job/0", &batch);
        // The same connection serves the next batch (keep-alive), after failures too.
        let second = connection.post("job/0", &[rec(json!({"id": "again"}))]);
        (first, second, sidecar)
    })
    .await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(
        first.answers.len(),
        9,
        "one line per record: {:?}",
        first.answers
    );
    // Streamed as they complete: the fast record does not wait for the slow one.
    assert!(first.rank(1) < first.rank(0), "{:?}", first.answers);
    assert!(first.answer(1)["outputs"][0]["id"] == "fast");
    assert_eq!(first.answer(0)["outputs"][0]["id"], "slow");
    assert_eq!(first.answer(2)["outputs"], json!([]));
    assert_eq!(first.answer(3)["outputs"].as_array().map(Vec::len), Some(2));
    let error = |i: usize| first.answer(i)["error"].clone();
    assert_eq!(error(4)["kind"], "fatal");
    assert!(
        error(4)["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad input")),
        "{}",
        error(4)
    );
    assert_eq!(error(5)["kind"], "retriable");
    assert_eq!(error(6)["kind"], "timeout");
    assert_eq!(error(7)["kind"], "invalid");
    assert!(
        error(7)["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 8 of the batch")),
        "{}",
        error(7)
    );
    assert_eq!(error(8)["kind"], "invalid", "an output that is not JSON");
    assert_eq!(second.answer(0)["outputs"][0]["id"], "again");
    for (outcome, count) in [
        ("ok", 5.0),
        ("fatal", 1.0),
        ("retriable", 1.0),
        ("timeout", 1.0),
        ("invalid", 2.0),
    ] {
        let series = format!("waio_serve_answers_total{{pipeline=\"serve-test\",caller=\"job/0\",outcome=\"{outcome}\"}}");
        assert_eq!(sidecar.metric(&series), count, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_share_the_capacity_and_are_counted_apart() {
    let mock = mock().await;
    let p = Pipeline::new();
    let manifest = behave_manifest(&p, &mock, "capacity = 4");
    let sidecar = Sidecar::start(p.dir.path(), &manifest);
    let sidecar = off_runtime(move || {
        let batch = |caller: &str, n: usize| -> Vec<String> {
            (0..n)
                .map(|i| {
                    rec(json!({"id": format!("{caller}-{i}"), "mode": "later", "delay_ms": 20}))
                })
                .collect()
        };
        std::thread::scope(|s| {
            let a = s.spawn(|| sidecar.connect().post("flink/0", &batch("a", 30)));
            let b = s.spawn(|| sidecar.connect().post("flink/1", &batch("b", 20)));
            for (response, n) in [(a.join().expect("a"), 30), (b.join().expect("b"), 20)] {
                let ok = response
                    .answers
                    .iter()
                    .filter(|a| a.line.get("outputs").is_some())
                    .count();
                assert_eq!(ok, n, "{:?}", response.answers);
            }
        });
        sidecar
    })
    .await;
    let series =
        |name: &str, caller: &str| format!("{name}{{pipeline=\"serve-test\",caller=\"{caller}\"}}");
    assert_eq!(
        sidecar.metric(&series("waio_serve_records_total", "flink/0")),
        30.0
    );
    assert_eq!(
        sidecar.metric(&series("waio_serve_records_total", "flink/1")),
        20.0
    );
    assert_eq!(
        sidecar.metric(&series("waio_serve_batches_total", "flink/1")),
        1.0
    );
    assert_eq!(
        sidecar.metric(&series("waio_serve_in_flight", "flink/0")),
        0.0
    );
    // One operator for both: its capacity bounded them together.
    assert_eq!(
        sidecar.metric("waio_operator_capacity{pipeline=\"serve-test\",operator=\"op\"}"),
        4.0
    );
    assert_eq!(mock.stats().echo, 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_finishes_what_was_taken_and_refuses_new_batches() {
    let mock = mock().await;
    let p = Pipeline::new();
    let manifest = behave_manifest(&p, &mock, "");
    let mut sidecar = Sidecar::start(p.dir.path(), &manifest);
    let batch: Vec<String> = (0..20)
        .map(|i| rec(json!({"id": i, "mode": "later", "delay_ms": 800})))
        .collect();
    let addr = sidecar.addr;
    let in_flight =
        std::thread::spawn(move || waio_tests::serve::Connection::open(addr).post("a", &batch));
    let taken = "waio_serve_in_flight{pipeline=\"serve-test\",caller=\"a\"}";
    waio_tests::wait_until("the batch is taken", Duration::from_secs(10), || {
        sidecar.metric(taken) == 20.0
    });
    signal(&sidecar.process, "TERM");
    // The signal is handled asynchronously: wait until the run says it is stopping.
    let stopping = "waio_run_state{pipeline=\"serve-test\"}";
    waio_tests::wait_until("the stop is seen", Duration::from_secs(10), || {
        sidecar.metric(stopping) == 1.0
    });
    let refused = off_runtime(move || {
        waio_tests::serve::Connection::open(addr).post_raw("b", b"{\"id\":1}\n")
    })
    .await;
    let refused = refused.expect("waio serve still answers while it finishes");
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let answered = off_runtime(move || in_flight.join().expect("the batch")).await;
    assert_eq!(answered.answers.len(), 20);
    assert!(
        answered
            .answers
            .iter()
            .all(|a| a.line.get("outputs").is_some()),
        "{:?}",
        answered.answers
    );
    assert_eq!(wait_exit(&mut sidecar.process, Duration::from_secs(20)), 0);
}

/// The openai plugin against the mock with a RocksDB request cache.
fn cached_manifest(p: &Pipeline, mock: &MockServer) -> std::path::PathBuf {
    p.manifest(&format!(
        "name = \"serve-cache\"\n[source]\nkind = \"serve\"\n\n\
         [[operator]]\nname = \"label\"\nplugin = \"{plugin}\"\nallowed_hosts = [\"127.0.0.1\"]\n\
         request_cache.storage = \"rocksdb\"\n\
         [operator.config]\nbase_url = \"{url}/v1\"\nmodel = \"mock-small\"\ninput_field = \"text\"\noutput_field = \"label\"\ntemperature = 0.0\n",
        plugin = plugin("openai").display(),
        url = mock.url(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_sent_again_pays_the_provider_once_even_after_a_restart() {
    let mock = mock().await;
    let p = Pipeline::new();
    let manifest = cached_manifest(&p, &mock);
    let batch: Vec<String> = (0..25)
        .map(|i| rec(json!({"id": i, "text": format!("ticket {i}")})))
        .collect();
    let dir = p.dir.path().to_path_buf();
    let labels = |answers: &waio_tests::serve::Response| -> Vec<Value> {
        (0..25)
            .map(|i| answers.answer(i)["outputs"][0]["label"].clone())
            .collect()
    };
    let (first, again, after_restart) = off_runtime(move || {
        let mut sidecar = Sidecar::start(&dir, &manifest);
        let first = sidecar.connect().post("flink/0", &batch);
        let again = sidecar.connect().post("flink/0", &batch);
        signal(&sidecar.process, "TERM");
        assert_eq!(wait_exit(&mut sidecar.process, Duration::from_secs(20)), 0);
        let restarted = Sidecar::start_at(&dir, &manifest, sidecar.addr);
        let after_restart = restarted.connect().post("flink/0", &batch);
        (first, again, after_restart)
    })
    .await;
    assert!(
        labels(&first).iter().all(Value::is_string),
        "{:?}",
        first.answers
    );
    assert_eq!(labels(&again), labels(&first));
    assert_eq!(labels(&after_restart), labels(&first));
    assert_eq!(
        mock.stats().chat,
        25,
        "one provider call per distinct record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_on_the_serve_port_changes_the_answers_of_the_next_batch() {
    let mock = mock().await;
    let p = Pipeline::new();
    let manifest = cached_manifest(&p, &mock);
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let dir = p.dir.path().to_path_buf();
    let (before, reload, after) = off_runtime(move || {
        let sidecar = Sidecar::start(&dir, &manifest);
        let batch = [rec(json!({"id": 1, "text": "the export fails"}))];
        let before = sidecar.connect().post("a", &batch);
        let renamed = text.replace("output_field = \"label\"", "output_field = \"category\"");
        std::fs::write(&manifest, renamed).expect("write manifest");
        let reload = sidecar.request("POST", "/admin/operators/label/reload");
        let after = sidecar.connect().post("a", &batch);
        (before, reload, after)
    })
    .await;
    assert!(
        before.answer(0)["outputs"][0]["label"].is_string(),
        "{:?}",
        before.answers
    );
    assert_eq!(reload.0, 200, "{}", reload.1);
    let output = &after.answer(0)["outputs"][0];
    assert!(
        output["category"].is_string() && output.get("label").is_none(),
        "{output}"
    );
}

#[test]
fn a_serve_manifest_is_not_run_and_a_taken_port_is_named() {
    let p = Pipeline::new();
    let manifest = p.manifest(&format!(
        "name = \"s\"\n[source]\nkind = \"serve\"\n[[operator]]\nname = \"op\"\nplugin = \"{}\"\n",
        plugin("echo").display()
    ));
    let path = manifest.to_string_lossy().into_owned();
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", &path]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("kind = \"serve\"") && stderr.contains("waio serve"),
        "{stderr}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, stderr) = run_waio(p.dir.path(), &["serve", &path, "--listen", &addr]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("taken"),
        "{stderr}"
    );
}
