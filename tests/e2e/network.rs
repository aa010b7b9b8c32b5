//! The plugin sandbox: the network allowlist, host-side secrets, no files or environment.

use serde_json::{json, Value};
use waio_tests::*;

const KEY: &str = "sk-test-1234567";

async fn run_http(
    mock: &MockServer,
    lines: &[serde_json::Value],
    operator_extra: &str,
    secrets: &str,
) -> Outcome {
    let p = Pipeline::new();
    p.input(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let mut toml = one_operator(
        &plugin("behave"),
        operator_extra,
        &format!("echo_url = \"{}/echo\"", mock.url()),
        "",
    );
    toml.push_str(secrets);
    p.run(&toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_off_the_allowlist_is_refused_and_nothing_leaves() {
    let mock = mock().await;
    let port = mock.addr().port();
    let out = run_http(
        &mock,
        &[json!({"id": "x", "mode": "http", "url": format!("{}/echo", mock.url())})],
        // Same address, another port: not allowed.
        &format!("allowed_hosts = [\"127.0.0.1:{}\"]", port.wrapping_add(1)),
        "",
    )
    .await;
    let error = out.output[0]["error"].as_str().unwrap();
    assert!(
        error.contains("denied") && error.contains("allowed_hosts"),
        "{error}"
    );
    assert_eq!(
        mock.stats().requests,
        0,
        "a refused request must never reach the server"
    );

    // And with no allowlist at all, no network.
    let out = run_http(
        &mock,
        &[json!({"id": "y", "mode": "http", "url": format!("{}/echo", mock.url())})],
        "",
        "",
    )
    .await;
    assert!(out.output[0]["error"].as_str().unwrap().contains("denied"));
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_injected_by_the_host_and_never_visible_to_the_plugin() {
    let mock = mock().await;
    let secrets = "\n[secrets.api]\nvalue = \"sk-test-1234567\"\nhosts = [\"127.0.0.1\"]\n";
    let out = run_http(
        &mock,
        &[json!({
            "id": "s", "mode": "http", "url": format!("{}/echo", mock.url()),
            "headers": {"Authorization": "Bearer ${secret:api}"}
        })],
        "allowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"api\"]",
        secrets,
    )
    .await;
    // The server got the real key...
    assert!(mock
        .stats()
        .authorization_seen
        .contains(&"Bearer sk-test-1234567".to_string()));
    // ...but the echo of it that came back was blanked before the plugin saw it.
    let body = out.output[0]["body"].as_str().unwrap();
    assert!(!body.contains("sk-test-1234567"), "{body}");
    assert!(body.contains("Bearer [redacted]"), "{body}");
    assert!(!out.output[0].to_string().contains("sk-test-1234567"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_not_granted_to_the_operator_is_refused() {
    let mock = mock().await;
    let secrets = "\n[secrets.api]\nvalue = \"sk-test-1234567\"\nhosts = [\"127.0.0.1\"]\n";
    let out = run_http(
        &mock,
        &[json!({
            "id": "s", "mode": "http", "url": format!("{}/echo", mock.url()),
            "headers": {"Authorization": "Bearer ${secret:api}"}
        })],
        "allowed_hosts = [\"127.0.0.1\"]",
        secrets,
    )
    .await;
    let error = out.output[0]["error"].as_str().unwrap();
    assert!(error.contains("denied") && error.contains("api"), "{error}");
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sees_no_environment_files_or_sockets() {
    std::env::set_var("WAIO_TEST_HOST_ONLY", "host-secret-value");
    let mock = mock().await;
    let out = run_http(
        &mock,
        &[json!({"id": "sb", "mode": "sandbox"})],
        "allowed_hosts = [\"127.0.0.1\"]",
        "",
    )
    .await;
    let o = &out.output[0];
    assert_eq!(o["env"], json!([]), "{o}");
    assert!(o["file"].as_str().unwrap().starts_with("err"), "{o}");
    assert!(o["net"].as_str().unwrap().starts_with("err"), "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_hangs_ends_at_the_http_time_limit() {
    let mock = mock().await;
    let out = run_http(
        &mock,
        &[
            json!({"id": "h", "mode": "http", "url": format!("{}/echo", mock.url()), "headers": {"x-mock-fault": "hang"}}),
            json!({"id": "t", "mode": "http", "url": format!("{}/echo", mock.url()), "headers": {"x-mock-fault": "hang"}, "timeout_ms": 100}),
        ],
        "allowed_hosts = [\"127.0.0.1\"]\nhttp_timeout = \"300ms\"\ntimeout = \"10s\"",
        "",
    )
    .await;
    // The operator default (http_timeout) and the plugin's own per-request limit both apply.
    assert_eq!(
        out.output[0]["error"], "request timed out",
        "{:?}",
        out.output
    );
    assert_eq!(
        out.output[1]["error"], "request timed out",
        "{:?}",
        out.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reaches_the_plugin_as_a_connection_error() {
    let mock = mock().await;
    let out = run_http(
        &mock,
        &[json!({"id": "d", "mode": "http", "url": format!("{}/echo", mock.url()), "headers": {"x-mock-fault": "drop"}})],
        "allowed_hosts = [\"127.0.0.1\"]",
        "",
    )
    .await;
    let error = out.output[0]["error"].as_str().unwrap();
    assert!(error.starts_with("connection failed"), "{error}");
}

/// Runs behave's `http` mode over `lines` with secret `api` (value `KEY`, bound to the echo
/// server) granted and the echo server's address allowed.
async fn run_echo(echo: &EchoServer, lines: &[Value]) -> Outcome {
    let p = Pipeline::new();
    p.input(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
    let host = echo.addr.to_string();
    let mut toml = one_operator(
        &plugin("behave"),
        &format!("allowed_hosts = [\"{host}\"]\nsecrets = [\"api\"]"),
        "",
        "",
    );
    toml.push_str(&format!(
        "\n[secrets.api]\nvalue = \"{KEY}\"\nhosts = [\"{host}\"]\n"
    ));
    p.run(&toml).await
}

/// The `authorization` header as the echo in a behave output shows it.
fn echoed_authorization(output: &Value) -> String {
    let body = output["body"]
        .as_str()
        .unwrap_or_else(|| panic!("no body in {output}"));
    let echo: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the plugin got no readable echo ({e}): {body:?}"));
    echo["headers"]["authorization"]
        .as_str()
        .unwrap_or_else(|| panic!("no authorization in {echo}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzipped_echo_is_decoded_and_redacted_before_the_plugin_sees_it() {
    let echo = EchoServer::start().await;
    let out = run_echo(
        &echo,
        &[json!({
            "id": "g", "mode": "http", "url": echo.url("/"),
            "headers": {"Authorization": "Bearer ${secret:api}", "Accept-Encoding": "gzip"}
        })],
    )
    .await;
    let seen = echo.requests();
    assert_eq!(seen.len(), 1);
    let header = |name: &str| {
        seen[0]
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("authorization"), Some(format!("Bearer {KEY}")));
    assert!(
        header("accept-encoding").is_some_and(|e| e.contains("gzip")),
        "the answer must have been gzipped: {seen:?}"
    );
    assert_eq!(echoed_authorization(&out.output[0]), "Bearer [redacted]");
    assert!(!out.output[0].to_string().contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_chosen_encoding_cannot_carry_the_secret_past_redaction() {
    let echo = EchoServer::start().await;
    // x-reverse stands for any encoding a plugin could undo itself (br, zstd, ...).
    let out = run_echo(
        &echo,
        &[
            json!({
                "id": "asked", "mode": "http", "url": echo.url("/"),
                "headers": {"Authorization": "Bearer ${secret:api}", "Accept-Encoding": "x-reverse"}
            }),
            // A server that encodes without being asked: the answer is refused.
            json!({
                "id": "unasked", "mode": "http", "url": echo.url("/unasked-reverse"),
                "headers": {"Authorization": "Bearer ${secret:api}"}
            }),
        ],
    )
    .await;
    for output in &out.output {
        let text = output.to_string();
        let reversed: String = text.chars().rev().collect();
        assert!(
            !text.contains(KEY) && !reversed.contains(KEY),
            "the key came back: {output}"
        );
    }
    // The host offered its own encodings instead of the plugin's...
    let seen = echo.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .flatten()
            .all(|(name, value)| name != "accept-encoding"
                || (value.contains("gzip") && !value.contains("x-reverse"))),
        "{seen:?}"
    );
    assert_eq!(echoed_authorization(&out.output[0]), "Bearer [redacted]");
    // ...and refuses an answer in an encoding it did not offer.
    let error = out.output[1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("answer refused") && error.contains("x-reverse"),
        "{}",
        out.output[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_answer_is_limited_by_its_decoded_size() {
    let echo = EchoServer::start().await;
    let out = run_echo(
        &echo,
        &[json!({"id": "b", "mode": "http", "url": echo.url("/bomb")})],
    )
    .await;
    let error = out.output[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("larger than the 33554432 bytes"),
        "{}",
        out.output[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_escaped_secret_does_not_leak_through_a_json_echo() {
    let mock = mock().await;
    // `"` and `\` come back escaped in the mock's JSON echo of the request headers.
    let secrets = "\n[secrets.api]\nvalue = 'sk-\"quoted\"\\back'\nhosts = [\"127.0.0.1\"]\n";
    let out = run_http(
        &mock,
        &[json!({
            "id": "j", "mode": "http", "url": format!("{}/echo", mock.url()),
            "headers": {"Authorization": "Bearer ${secret:api}"}
        })],
        "allowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"api\"]",
        secrets,
    )
    .await;
    assert_eq!(
        mock.stats().authorization_seen,
        vec!["Bearer sk-\"quoted\"\\back".to_string()]
    );
    assert_eq!(echoed_authorization(&out.output[0]), "Bearer [redacted]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_never_sent_to_a_host_outside_its_hosts() {
    let mock = mock().await;
    let port = mock.addr().port();
    // The operator may reach 127.0.0.1 on any port, the secret only another port.
    let secrets = format!(
        "\n[secrets.api]\nvalue = \"{KEY}\"\nhosts = [\"127.0.0.1:{}\"]\n",
        port.wrapping_add(1)
    );
    let url = format!("{}/echo", mock.url());
    let out = run_http(
        &mock,
        &[
            json!({"id": "s", "mode": "http", "url": url, "headers": {"Authorization": "Bearer ${secret:api}"}}),
            json!({"id": "n", "mode": "http", "url": url}),
        ],
        "allowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"api\"]",
        &secrets,
    )
    .await;
    let error = out.output[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("denied")
            && error.contains("\"api\"")
            && error.contains(&format!("127.0.0.1:{port}"))
            && !error.contains(KEY),
        "{}",
        out.output[0]
    );
    // Only the request without the secret reached the server.
    assert_eq!(out.output[1]["status"], 200, "{}", out.output[1]);
    let stats = mock.stats();
    assert_eq!(stats.requests, 1);
    assert!(
        stats.authorization_seen.is_empty(),
        "{:?}",
        stats.authorization_seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_cannot_reach_another_virtual_host() {
    let mock = mock().await;
    let out = run_http(
        &mock,
        &[
            json!({"id": "h", "mode": "http", "url": format!("{}/echo", mock.url()), "headers": {"Host": "internal.example"}}),
            json!({"id": "smuggle", "mode": "http", "method": "POST", "url": format!("{}/echo", mock.url()),
                   "headers": {"Transfer-Encoding": "chunked"}, "body": "0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n"}),
        ],
        "allowed_hosts = [\"127.0.0.1\"]",
        "",
    )
    .await;
    let error = out.output[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("denied") && error.contains("Host header"),
        "{}",
        out.output[0]
    );
    let error = out.output[1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("invalid request") && error.contains("transfer-encoding"),
        "{}",
        out.output[1]
    );
    assert_eq!(mock.stats().requests, 0, "nothing may reach the server");
}

#[test]
fn a_secret_shorter_than_8_bytes_is_refused_at_load_with_its_place() {
    let p = Pipeline::new();
    p.input(&[json!({"id": "s", "mode": "sandbox"}).to_string()]);
    let mut toml = one_operator(
        &plugin("behave"),
        "allowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"api\"]",
        "",
        "",
    );
    toml.push_str("\n[secrets.api]\nvalue = \"ok-1234\"\nhosts = [\"127.0.0.1\"]\n");
    p.manifest(&toml);
    let line = toml
        .lines()
        .position(|l| l.starts_with("value = \"ok-1234\""))
        .map(|i| i + 1)
        .unwrap();
    let (code, _, stderr) = run_waio(p.dir.path(), &["run", "pipeline.toml"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("pipeline.toml:{line}:9: secrets.api.value:"))
            && stderr.contains("7 bytes")
            && stderr.contains("at least 8 bytes")
            && !stderr.contains("ok-1234"),
        "{stderr}"
    );
    assert!(!p.path("out.jsonl").exists(), "nothing may run");
}
