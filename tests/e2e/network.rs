//! The plugin sandbox: the network allowlist, host-side secrets, no files or environment.

use serde_json::json;
use waio_tests::*;

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
    let secrets = "\n[secrets.api]\nvalue = \"sk-test-1234567\"\n";
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
    let secrets = "\n[secrets.api]\nvalue = \"sk-test-1234567\"\n";
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
