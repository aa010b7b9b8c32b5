//! The ready-made plugins against the mock provider: `openai` (chat and embeddings, key as a host
//! secret, token usage reported) and `http-lookup` (REST enrichment).

use serde_json::json;
use waio_tests::*;

fn openai_manifest(mock: &MockServer, mode: &str, extra_config: &str) -> String {
    let mut toml = one_operator(
        &plugin("openai"),
        "allowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"openai\"]\ncapacity = 16",
        &format!(
            "base_url = \"{}/v1\"\nmode = \"{mode}\"\nmodel = \"mock-small\"\napi_key_secret = \"openai\"\n{extra_config}",
            mock.url()
        ),
        "",
    );
    toml.push_str("\n[secrets.openai]\nvalue = \"sk-mock-0001\"\nhosts = [\"127.0.0.1\"]\n");
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_classifies_and_reports_tokens() {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&[
        json!({"id": 1, "text": "Billing: I was charged twice, please refund"}).to_string(),
        json!({"id": 2, "text": "The app crashes on login, looks like a bug"}).to_string(),
    ]);
    let out = p
        .run(&openai_manifest(
            &mock,
            "chat",
            "system_prompt = \"Classify the ticket.\\nLabels: billing, bug, other\"",
        ))
        .await;
    assert_eq!(out.ids(), ["1", "2"]);
    assert_eq!(out.output[0]["label"], "billing");
    assert_eq!(out.output[1]["label"], "bug");
    // The original fields are kept.
    assert_eq!(
        out.output[0]["text"],
        "Billing: I was charged twice, please refund"
    );
    let op = &out.summary().operators[0];
    assert!(op.input_tokens > 0 && op.output_tokens == 2, "{op:?}");
    assert_eq!(mock.stats().chat, 2);
    assert_eq!(mock.stats().authorization_seen, ["Bearer sk-mock-0001"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_cuts_a_long_input_to_max_input_chars_and_pays_only_for_what_it_sent() {
    let mock = mock().await;
    let p = Pipeline::new();
    let long = "word ".repeat(2000);
    p.input(&[
        json!({"id": 1, "text": long}).to_string(),
        json!({"id": 2, "text": "short one"}).to_string(),
    ]);
    let out = p
        .run(&openai_manifest(
            &mock,
            "chat",
            "max_input_chars = 30\nseed = 42\ntemperature = 0",
        ))
        .await;
    assert_eq!(out.ids(), ["1", "2"]);
    // The mock answers with a hash of the text it was sent: the cut text, marker included.
    let sent = format!("{} [truncated]", &long[..18]);
    assert_eq!(sent.chars().count(), 30);
    assert_eq!(
        out.output[0]["label"],
        waio_mock_provider::chat_answer(&[("user", &sent)])
    );
    assert_eq!(
        out.output[1]["label"],
        waio_mock_provider::chat_answer(&[("user", "short one")])
    );
    // 2000 words were not paid for: the mock counts the words it was sent.
    let op = &out.summary().operators[0];
    assert!(op.input_tokens < 50, "{op:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_version_2_sends_every_request_over_http2_with_the_same_results() {
    let mock = mock().await;
    let lines: Vec<String> = (0..200)
        .map(|i| {
            let text = if i % 2 == 0 {
                "refund my invoice"
            } else {
                "it crashes"
            };
            json!({"id": i, "text": text}).to_string()
        })
        .collect();
    let manifest = openai_manifest(&mock, "chat", "system_prompt = \"Labels: billing, bug\"");

    let p = Pipeline::new();
    p.input(&lines);
    let over_http1 = p.run(&manifest).await;
    assert_eq!(mock.stats().http2, 0, "HTTP/1.1 is the default");

    let p = Pipeline::new();
    p.input(&lines);
    let over_http2 = p
        .run(&manifest.replace("capacity = 16", "capacity = 16\nhttp_version = \"2\""))
        .await;
    let stats = mock.stats();
    assert_eq!((stats.chat, stats.http2), (400, 200), "{stats:?}");
    assert_eq!(over_http2.ids(), over_http1.ids());
    assert_eq!(over_http2.output, over_http1.output);
    assert_eq!(over_http2.output[0]["label"], "billing");
    assert_eq!(
        over_http2.summary().operators[0].input_tokens,
        over_http1.summary().operators[0].input_tokens
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_embeddings_attach_a_vector() {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&[json!({"id": "e", "text": "hello world"}).to_string()]);
    let out = p.run(&openai_manifest(&mock, "embeddings", "")).await;
    let vector = out.output[0]["embedding"]
        .as_array()
        .expect("embedding array");
    assert_eq!(vector.len(), 8);
    let expected = waio_mock_provider::embedding("hello world", 8);
    assert!((vector[0].as_f64().unwrap() - f64::from(expected[0])).abs() < 1e-6);
    assert_eq!(out.summary().operators[0].input_tokens, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_server_errors_are_retriable_failures_in_the_dead_letter_output() {
    let mock = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    p.input(&[json!({"id": 1, "text": "x"}).to_string()]);
    let toml = openai_manifest(&mock, "chat", "").replace(
        "capacity = 16",
        "capacity = 16\non_failure = \"dead-letter\"",
    );
    let out = p.run(&toml).await;
    assert!(out.output.is_empty());
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["retriable"], true);
    assert!(
        out.dead[0]["error"].as_str().unwrap().contains("50"),
        "{}",
        out.dead[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_lookup_merges_the_answer_and_handles_not_found() {
    let mock = mock().await;
    let p = Pipeline::new();
    p.input(&[
        json!({"id": 1, "user_id": "u-7"}).to_string(),
        json!({"id": 2, "user_id": "missing-9"}).to_string(),
        json!({"id": 3}).to_string(),
    ]);
    let toml = one_operator(
        &plugin("http-lookup"),
        "allowed_hosts = [\"127.0.0.1\"]\non_failure = \"dead-letter\"",
        &format!(
            "url = \"{}/kv/{{user_id}}\"\noutput_field = \"user\"",
            mock.url()
        ),
        "",
    );
    let out = p.run(&toml).await;
    assert_eq!(out.ids(), ["1", "2"]);
    assert_eq!(out.output[0]["user"]["value"], "value-of-u-7");
    assert_eq!(out.output[1]["user"], serde_json::Value::Null);
    // The record without the field the URL needs is a fatal failure naming the field.
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0]["retriable"], false);
    assert!(out.dead[0]["error"].as_str().unwrap().contains("user_id"));
}

/// The example enricher of every language (examples/enrichers/*) does the same job: the labels
/// and the tokens they report agree record by record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classify_example_gives_the_same_answers_in_every_language() {
    let tickets =
        std::fs::read_to_string(repo_root().join("examples/quickstart/tickets.jsonl")).unwrap();
    let mut results = Vec::new();
    for lang in ["rust", "python", "js", "c"] {
        let mock = mock().await;
        let p = Pipeline::new();
        std::fs::write(p.path("input.jsonl"), &tickets).unwrap();
        let mut toml = one_operator(
            &plugin(&format!("classify-{lang}")),
            "allowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"openai\"]\ncapacity = 8",
            &format!("base_url = \"{}/v1\"\nmodel = \"mock-small\"", mock.url()),
            "",
        );
        toml.push_str("\n[secrets.openai]\nvalue = \"sk-example\"\nhosts = [\"127.0.0.1\"]\n");
        let out = p.run(&toml).await;
        let labels: Vec<String> = out
            .output
            .iter()
            .map(|o| o["label"].as_str().unwrap_or("?").to_string())
            .collect();
        let op = &out.summary().operators[0];
        assert_eq!(labels.len(), 40, "{lang}");
        assert!(out.dead.is_empty(), "{lang}: {:?}", out.dead.first());
        assert_eq!(
            mock.stats().authorization_seen,
            ["Bearer sk-example"],
            "{lang}"
        );
        results.push((lang, labels, op.input_tokens, op.output_tokens));
    }
    for (lang, labels, input_tokens, output_tokens) in &results[1..] {
        assert_eq!(labels, &results[0].1, "{lang} labels differ from rust");
        assert_eq!(
            (input_tokens, output_tokens),
            (&results[0].2, &results[0].3),
            "{lang} tokens"
        );
    }
    assert!(
        results[0].1.iter().any(|l| l == "urgent") && results[0].1.iter().any(|l| l == "billing")
    );
}
