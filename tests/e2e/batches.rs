//! Batches across the Wasm boundary (`batch.*`) and provider batching: the openai plugin sends
//! one embeddings request for a whole batch and fans the vectors back out.

use serde_json::{json, Value};
use waio_tests::{mock, one_operator, plugin, rec, run_waio, Pipeline};

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| rec(json!({"id": i, "text": format!("ticket number {i} about the invoice")})))
        .collect()
}

/// An embeddings operator against `mock_url` with these `batch.*` lines and plugin config.
fn embeddings(mock_url: &str, batch: &str, config_extra: &str) -> String {
    one_operator(
        &plugin("openai"),
        &format!("allowed_hosts = [\"127.0.0.1\"]\ncapacity = 300\n{batch}"),
        &format!("base_url = \"{mock_url}/v1\"\nmodel = \"embed-small\"\nmode = \"embeddings\"\n{config_extra}"),
        "format = \"payload\"",
    )
}

fn vectors(output: &[Value]) -> Vec<(i64, Value)> {
    let mut v: Vec<(i64, Value)> = output
        .iter()
        .map(|o| (o["id"].as_i64().unwrap(), o["embedding"].clone()))
        .collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_for_a_batch_go_in_one_request_and_each_record_gets_its_own_vector() {
    // One request per record: the reference.
    let single = mock().await;
    let p = Pipeline::new();
    p.input(&texts(250));
    let one_by_one = p
        .run(&embeddings(&single.url(), "batch.max_size = 1", ""))
        .await;
    assert!(one_by_one.result.is_ok(), "{}", one_by_one.error());
    assert_eq!(single.stats().embeddings, 250);

    // Batches of 100, held up to 5 s to fill: 100 + 100 + the last 50 when the input ends.
    let batched = mock().await;
    let p = Pipeline::new();
    p.input(&texts(250));
    let out = p
        .run(&embeddings(
            &batched.url(),
            "batch.max_size = 100\nbatch.max_wait = \"5s\"",
            "",
        ))
        .await;
    assert!(out.result.is_ok(), "{}", out.error());
    assert_eq!(batched.stats().embeddings, 3);
    assert_eq!(batched.stats().embedding_inputs, 250);
    assert_eq!(out.output.len(), 250);
    assert!(out.dead.is_empty(), "{:?}", out.dead.first());
    assert_eq!(vectors(&out.output), vectors(&one_by_one.output));
    let op = &out.summary().operators[0];
    assert_eq!(op.http_calls, 3);
    // The usage of the three requests is the usage of the 250 texts.
    assert_eq!(
        op.input_tokens,
        one_by_one.summary().operators[0].input_tokens
    );

    // `batch_requests = false` keeps one request per record, batches or not.
    let off = mock().await;
    let p = Pipeline::new();
    p.input(&texts(20));
    let out = p
        .run(&embeddings(
            &off.url(),
            "batch.max_size = 100",
            "batch_requests = false",
        ))
        .await;
    assert!(out.result.is_ok(), "{}", out.error());
    assert_eq!(off.stats().embeddings, 20);
}

/// The result cache counts per text: of 60 records over 6 texts, the 6 that make the call for
/// their text go in one batched request; the 54 others are served by the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_result_cache_only_distinct_texts_go_into_the_batched_request() {
    let mock = mock().await;
    let p = Pipeline::new();
    let lines: Vec<String> = (0..60)
        .map(|i| {
            let text = ["a", "b", "c", "d", "e", "f"][i % 6];
            rec(json!({"id": i, "text": text}))
        })
        .collect();
    p.input(&lines);
    let toml = embeddings(
        &mock.url(),
        "batch.max_size = 64\ncache.key = [\"/text\"]",
        "",
    );
    let out = p.run(&toml).await;
    assert!(out.result.is_ok(), "{}", out.error());
    assert_eq!(out.output.len(), 60);
    let op = &out.summary().operators[0];
    assert_eq!(op.cache_hits + op.cache_coalesced, 54);
    assert_eq!(mock.stats().embeddings, 1);
    assert_eq!(mock.stats().embedding_inputs, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_in_an_embeddings_batch_fails_alone() {
    let mock = mock().await;
    let p = Pipeline::new();
    let mut lines = texts(5);
    lines[2] = rec(json!({"id": 2, "no_text": true}));
    p.input(&lines);
    let toml = embeddings(
        &mock.url(),
        "batch.max_size = 10\nbatch.max_wait = \"1s\"",
        "",
    )
    .replace(
        "capacity = 300",
        "capacity = 300\non_failure = \"dead-letter\"",
    );
    let out = p.run(&toml).await;
    assert!(out.result.is_ok(), "{}", out.error());
    assert_eq!(mock.stats().embeddings, 1);
    assert_eq!(out.ids(), ["0", "1", "3", "4"]);
    assert_eq!(out.dead.len(), 1);
    assert!(
        out.dead[0]["error"].as_str().unwrap().contains("text"),
        "{}",
        out.dead[0]
    );
}

/// A panic in one record of a batch (the hostile plugin serves its batch one record at a
/// time, as the SDKs do) traps the whole call: only that record fails, the others are invoked
/// again one by one and complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_batch_fails_only_the_record_that_trapped() {
    let p = Pipeline::new();
    let mut lines: Vec<String> = (0..40).map(|i| rec(json!({"id": i}))).collect();
    lines[17] = rec(json!({"id": 17, "mode": "panic", "message": "bad record"}));
    p.input(&lines);
    let out = p
        .run(&one_operator(
            &plugin("hostile"),
            "on_failure = \"dead-letter\"\nbatch.max_size = 64",
            "",
            "",
        ))
        .await;
    assert!(out.result.is_ok(), "{}", out.error());
    let expected: Vec<String> = (0..40)
        .filter(|i| *i != 17)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(out.ids(), expected);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["line"], 18);
    assert!(
        out.dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("bad record"),
        "{}",
        out.dead[0]
    );
    let op = &out.summary().operators[0];
    assert!(op.traps >= 1);
}

/// The hybrid example: a cheap scorer on every event, the LLM on the few it flags; the summary
/// says what the scorer saved.
#[test]
fn the_hybrid_example_escalates_only_flagged_events_and_reports_the_cost_avoided() {
    let example = waio_tests::repo_root().join("examples/hybrid");
    let dir = tempfile::tempdir().unwrap();
    let dist = waio_tests::repo_root().join("dist/plugins");
    let manifest = std::fs::read_to_string(example.join("pipeline.toml"))
        .unwrap()
        .replace("../../dist/plugins/", &format!("{}/", dist.display()));
    std::fs::write(dir.path().join("pipeline.toml"), manifest).unwrap();
    std::fs::copy(
        example.join("events.jsonl"),
        dir.path().join("events.jsonl"),
    )
    .unwrap();
    let (code, _stdout, stderr) = run_waio(dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    let escalated = waio_tests::read_jsonl(&dir.path().join("escalated.jsonl"));
    let events = waio_tests::read_jsonl(&example.join("events.jsonl"));
    assert!(!escalated.is_empty() && escalated.len() * 10 < events.len());
    assert!(
        stderr.contains(&format!(
            "operator score: {} in, {} out, {} filtered",
            events.len(),
            escalated.len(),
            events.len() - escalated.len()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("cost avoided at operator escalate: ~$")
            && stderr.contains(&format!(
                "({} records filtered out before it",
                events.len() - escalated.len()
            )),
        "{stderr}"
    );
}

/// A batch through the Rust SDK's `invoke-columns` (WIT 0.5.0): records completed at once go
/// back in the call's result, records completed later (from an HTTP answer) hold a future of
/// their own, and every record still gets exactly its own result: outputs in input order, fan
/// out and filter, a second completion ignored, failures and a panic as dead letters. The panic
/// traps the call, so the records it completed in its result are invoked again one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_the_rust_sdk_gives_every_record_its_own_result() {
    let mock = mock().await;
    let p = Pipeline::new();
    let mode = |i: usize| match i {
        23 => json!({"id": i, "mode": "panic"}),
        30 => json!({"id": i, "results": 0}),
        31 => json!({"id": i, "results": 2}),
        _ if i.is_multiple_of(7) => json!({"id": i, "mode": "fail", "message": format!("no {i}")}),
        _ if i.is_multiple_of(5) => json!({"id": i, "mode": "later"}),
        _ if i.is_multiple_of(11) => json!({"id": i, "mode": "twice"}),
        _ => json!({"id": i}),
    };
    let lines: Vec<String> = (0..120).map(|i| rec(mode(i))).collect();
    p.input(&lines);
    let out = p
        .run(&one_operator(
            &plugin("behave"),
            "allowed_hosts = [\"127.0.0.1\"]\non_failure = \"dead-letter\"\nbatch.max_size = 64",
            &format!("echo_url = \"{}/echo\"", mock.url()),
            "",
        ))
        .await;
    assert!(out.result.is_ok(), "{}", out.error());
    let mut expected = Vec::new();
    for i in (0..120u64).filter(|i| *i != 23 && *i != 30 && !i.is_multiple_of(7)) {
        expected.push(i.to_string());
        if i == 31 {
            expected.push(i.to_string());
        }
    }
    assert_eq!(out.ids(), expected);
    let mut dead: Vec<(u64, String)> = out
        .dead
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["error"].to_string()))
        .collect();
    dead.sort();
    let failed: Vec<u64> = dead.iter().map(|(line, _)| line - 1).collect();
    let mut want: Vec<u64> = (0..120).filter(|i: &u64| i.is_multiple_of(7)).collect();
    want.push(23);
    want.sort();
    assert_eq!(failed, want, "{dead:?}");
    for (line, error) in &dead {
        let expect = match line - 1 {
            23 => "plugin panicked: boom 23".to_string(),
            i => format!("no {i}"),
        };
        assert!(error.contains(&expect), "line {line}: {error}");
    }
    let op = &out.summary().operators[0];
    assert!(op.batch_calls > 0 && op.traps == 1, "{op:?}");
}
