//! The mock over real HTTP on 127.0.0.1, driven by a tiny raw HTTP/1.1 client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waio_mock_provider::{LimitHeaders, MockConfig, MockError, MockServer};

fn config() -> MockConfig {
    MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..MockConfig::default()
    }
}

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: mock\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// Reads one answer; `None` if the server closed the connection before any byte of it.
    async fn read_answer(&mut self) -> Option<Answer> {
        let head_end = loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) if self.buf.is_empty() => return None,
                Ok(0) => panic!("connection closed inside an answer head"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) => panic!("read failed: {err}"),
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("the mock always sends content-length");
        let start = head_end + 4;
        while self.buf.len() < start + len {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside an answer body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[start..start + len].to_vec();
        self.buf.drain(..start + len);
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        self.send(method, path, headers, body).await;
        self.read_answer()
            .await
            .expect("connection closed without an answer")
    }

    async fn post_json(&mut self, path: &str, body: &Value) -> Answer {
        let body = serde_json::to_vec(body).unwrap();
        self.request("POST", path, &[("content-type", "application/json")], &body)
            .await
    }
}

async fn chat(client: &mut Client, messages: Value) -> Answer {
    client
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-test", "messages": messages, "max_tokens": 5, "temperature": 0}),
        )
        .await
}

fn content(answer: &Answer) -> String {
    answer.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn chat_picks_the_named_label_and_counts_words() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let answer = chat(
        &mut c,
        json!([
            {"role": "system", "content": "Classify the sentiment.\nLABELS: positive, negative, neutral"},
            {"role": "user", "content": "This product is Negative in every way"}
        ]),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let v = answer.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(content(&answer), "negative");
    // 7 words in the system message, 7 in the user message.
    assert_eq!(v["usage"]["prompt_tokens"], 14);
    assert_eq!(v["usage"]["completion_tokens"], 1);
    assert_eq!(v["usage"]["total_tokens"], 15);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
}

#[tokio::test]
async fn chat_answers_are_deterministic_without_a_matching_label() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let labeled = json!([
        {"role": "user", "content": "Labels: alpha, beta, gamma\nText: nothing to see"}
    ]);
    let first = content(&chat(&mut c, labeled.clone()).await);
    assert!(
        ["alpha", "beta", "gamma"].contains(&first.as_str()),
        "{first}"
    );
    assert_eq!(content(&chat(&mut c, labeled).await), first);

    let plain = json!([{"role": "user", "content": "hello there"}]);
    let answer = content(&chat(&mut c, plain.clone()).await);
    let hex = answer.strip_prefix("mock answer ").unwrap();
    assert_eq!(hex.len(), 8);
    assert!(hex.chars().all(|ch| ch.is_ascii_hexdigit()));
    // A second server answers the same.
    let other = start(config()).await;
    let mut c2 = Client::connect(other.addr()).await;
    assert_eq!(content(&chat(&mut c2, plain).await), answer);
    let different = json!([{"role": "user", "content": "hello there!"}]);
    assert_ne!(content(&chat(&mut c2, different).await), answer);
}

#[tokio::test]
async fn chat_rejects_malformed_requests_with_openai_errors() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let answer = c
        .request("POST", "/v1/chat/completions", &[], b"{not json")
        .await;
    assert_eq!(answer.status, 400);
    let v = answer.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));
    assert!(v["error"]["code"].is_null());

    let answer = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": []}),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    let answer = c
        .post_json("/v1/chat/completions", &json!({"model": "m"}))
        .await;
    assert_eq!(answer.status, 400);
    // The connection survives errors.
    assert_eq!(c.request("GET", "/health", &[], b"").await.status, 200);
}

#[tokio::test]
async fn embeddings_have_the_configured_dimension_and_repeat() {
    let server = start(MockConfig {
        embedding_dim: 16,
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    let req = json!({"model": "embed-test", "input": ["first text here", "second"]});
    let a = c.post_json("/v1/embeddings", &req).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "embed-test");
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 4);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let vectors: Vec<Vec<f64>> = data
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    for vec in &vectors {
        assert_eq!(vec.len(), 16);
        let norm: f64 = vec.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    assert_ne!(vectors[0], vectors[1]);

    // Same text, same vector, also as a single string input.
    let again = c
        .post_json("/v1/embeddings", &json!({"input": "first text here"}))
        .await
        .json();
    let single: Vec<f64> = again["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(single, vectors[0]);

    let bad = c
        .post_json("/v1/embeddings", &json!({"input": [1, 2]}))
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn embeddings_can_be_base64() {
    let server = start(MockConfig {
        embedding_dim: 4,
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    let v = c
        .post_json(
            "/v1/embeddings",
            &json!({"input": "x", "encoding_format": "base64"}),
        )
        .await
        .json();
    // 4 floats = 16 bytes = 24 base64 characters with padding.
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 24);
}

#[tokio::test]
async fn echo_returns_the_request_and_honours_delay() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let started = Instant::now();
    let answer = c
        .request(
            "POST",
            "/echo?delay_ms=200&x=1",
            &[("authorization", "Bearer sk-secret"), ("x-custom", "yes")],
            b"payload \xff",
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(answer.status, 200);
    let v = answer.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo");
    assert_eq!(v["query"], "delay_ms=200&x=1");
    assert_eq!(v["headers"]["authorization"], "Bearer sk-secret");
    assert_eq!(v["headers"]["x-custom"], "yes");
    assert_eq!(v["body"], "payload \u{fffd}");

    let get = c.request("GET", "/echo", &[], b"").await.json();
    assert_eq!(get["method"], "GET");
    assert_eq!(get["body"], "");
}

#[tokio::test]
async fn latency_and_the_delay_header_hold_answers_back() {
    let server = start(MockConfig {
        latency_ms: 150,
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    let started = Instant::now();
    assert_eq!(c.request("GET", "/kv/a", &[], b"").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let started = Instant::now();
    let answer = c
        .request("GET", "/kv/a", &[("x-mock-delay-ms", "400")], b"")
        .await;
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn kv_answers_values_and_404_for_missing_keys() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let answer = c.request("GET", "/kv/user-42", &[], b"").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"key": "user-42", "value": "value-of-user-42", "len": 7})
    );
    let answer = c.request("GET", "/kv/user%201", &[], b"").await;
    assert_eq!(answer.json()["key"], "user 1");

    let missing = c.request("GET", "/kv/missing-7", &[], b"").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"error": "not found"}));
}

#[tokio::test]
async fn health_and_unknown_paths() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    let health = c.request("GET", "/health", &[], b"").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok");
    assert_eq!(c.request("GET", "/nothing", &[], b"").await.status, 404);
    let stats = c.request("GET", "/stats", &[], b"").await;
    assert_eq!(stats.status, 200);
    // Health checks, unknown paths and the stats themselves count as requests.
    assert_eq!(stats.json()["requests"], 3);
    assert_eq!(stats.json()["chat"], 0);
    assert_eq!(
        c.request("GET", "/v1/chat/completions", &[], b"")
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn forced_429_carries_retry_after() {
    let server = start(MockConfig {
        retry_after_secs: 7,
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    let answer = c
        .request(
            "POST",
            "/v1/chat/completions",
            &[("x-mock-fault", "429")],
            b"{}",
        )
        .await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("7"));
    let v = answer.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].is_string());

    let answer = c
        .request("GET", "/kv/a", &[("x-mock-fault", "503")], b"")
        .await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("7"));
    let answer = c
        .request("GET", "/kv/a", &[("x-mock-fault", "500")], b"")
        .await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.json()["error"]["type"], "server_error");

    let answer = c
        .request("GET", "/kv/a", &[("x-mock-fault", "teapot")], b"")
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(server.stats().faults, 3);
}

#[tokio::test]
async fn forced_drop_closes_the_connection_without_an_answer() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.send("GET", "/kv/a", &[("x-mock-fault", "drop")], b"")
        .await;
    let answer = tokio::time::timeout(Duration::from_secs(5), c.read_answer())
        .await
        .expect("the connection should close promptly");
    assert!(answer.is_none(), "got an answer: {answer:?}");
    // The server itself keeps serving.
    let mut fresh = Client::connect(server.addr()).await;
    assert_eq!(fresh.request("GET", "/kv/a", &[], b"").await.status, 200);
}

#[tokio::test]
async fn hung_requests_get_no_answer_until_shutdown() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    c.send("GET", "/echo", &[("x-mock-fault", "hang")], b"")
        .await;
    let waited = tokio::time::timeout(Duration::from_millis(300), c.read_answer()).await;
    assert!(waited.is_err(), "a hung request was answered");
    // Other connections are unaffected.
    let mut other = Client::connect(server.addr()).await;
    assert_eq!(other.request("GET", "/health", &[], b"").await.status, 200);

    server.shutdown();
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read_answer())
        .await
        .expect("shutdown should close hung connections");
    assert!(closed.is_none());
}

#[tokio::test]
async fn error_rate_one_answers_every_request_5xx() {
    let server = start(MockConfig {
        error_rate: 1.0,
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let answer = c
            .post_json(
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        statuses.push(answer.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 500 || *s == 503),
        "{statuses:?}"
    );
    // Both kinds of 5xx show up.
    assert!(
        statuses.contains(&500) && statuses.contains(&503),
        "{statuses:?}"
    );
    // Health checks are exempt from faults.
    assert_eq!(c.request("GET", "/health", &[], b"").await.status, 200);
    let stats = server.stats();
    assert_eq!(stats.faults, 20);
    assert_eq!(stats.chat, 20);
}

#[tokio::test]
async fn seeded_rate_limits_hit_about_their_share_and_repeat() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let server = start(MockConfig {
            rate_limit_rate: 0.5,
            seed,
            ..config()
        })
        .await;
        let mut c = Client::connect(server.addr()).await;
        let mut out = Vec::new();
        for _ in 0..200 {
            out.push(c.request("GET", "/kv/k", &[], b"").await.status);
        }
        out
    }
    let first = statuses(9).await;
    let limited = first.iter().filter(|s| **s == 429).count();
    assert!((60..=140).contains(&limited), "{limited} of 200 limited");
    assert!(first.iter().all(|s| *s == 429 || *s == 200));
    assert_eq!(statuses(9).await, first);
    assert_ne!(statuses(10).await, first);
}

#[tokio::test]
async fn stats_count_requests_and_authorization_values() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr()).await;
    chat(&mut c, json!([{"role": "user", "content": "hi"}])).await;
    c.post_json("/v1/embeddings", &json!({"input": "hi"})).await;
    c.request("GET", "/echo", &[("authorization", "Bearer a")], b"")
        .await;
    c.request("GET", "/echo", &[("authorization", "Bearer a")], b"")
        .await;
    c.request("GET", "/kv/x", &[("authorization", "Bearer b")], b"")
        .await;
    c.request("GET", "/health", &[], b"").await;
    let stats = server.stats();
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.chat, 1);
    assert_eq!(stats.embeddings, 1);
    assert_eq!(stats.echo, 2);
    assert_eq!(stats.kv, 1);
    assert_eq!(stats.faults, 0);
    assert_eq!(stats.authorization_seen, vec!["Bearer a", "Bearer b"]);

    for i in 0..30 {
        let value = format!("Bearer {i}");
        c.request("GET", "/health", &[("authorization", &value)], b"")
            .await;
    }
    assert_eq!(server.stats().authorization_seen.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_are_served() {
    let server = start(config()).await;
    let addr = server.addr();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                for j in 0..50 {
                    let answer = c.request("GET", &format!("/kv/k{i}-{j}"), &[], b"").await;
                    assert_eq!(answer.json()["value"], format!("value-of-k{i}-{j}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.stats().kv, 32 * 50);
}

#[tokio::test]
async fn start_reports_bind_failures_and_bad_rates() {
    let server = start(config()).await;
    let taken = MockServer::start(MockConfig {
        listen: server.addr(),
        ..config()
    })
    .await;
    assert!(matches!(taken, Err(MockError::Bind { addr, .. }) if addr == server.addr()));

    let bad = MockServer::start(MockConfig {
        error_rate: 1.5,
        ..config()
    })
    .await;
    assert!(matches!(bad, Err(MockError::Config(_))));
}

#[tokio::test]
async fn url_names_the_bound_port() {
    let server = start(config()).await;
    assert_ne!(server.addr().port(), 0);
    assert_eq!(
        server.url(),
        format!("http://127.0.0.1:{}", server.addr().port())
    );
}

#[tokio::test]
async fn error_status_fixes_the_status_of_error_rate_answers() {
    let server = start(MockConfig {
        error_rate: 1.0,
        error_status: Some(502),
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    for _ in 0..10 {
        let answer = c.request("GET", "/echo", &[], b"").await;
        assert_eq!(answer.status, 502);
    }
    let bad = MockServer::start(MockConfig {
        error_status: Some(404),
        ..config()
    })
    .await;
    let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("error-status must be 500, 502, 503 or 504, got 404"),
        "{message}"
    );
}

#[tokio::test]
async fn a_provider_that_is_down_answers_503_and_counts_what_arrived_meanwhile() {
    let server = start(MockConfig {
        latency_ms: 100,
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.request("GET", "/echo", &[], b"").await.status, 200);
    server.set_down(true);
    // Three requests in progress at once while down, on three connections.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(server.addr()).await;
        client.send("GET", "/echo", &[], b"").await;
        clients.push(client);
    }
    for client in &mut clients {
        let answer = client.read_answer().await.expect("an answer");
        assert_eq!(answer.status, 503);
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    // Health checks are not part of the outage.
    assert_eq!(c.request("GET", "/health", &[], b"").await.status, 200);
    server.set_down(false);
    assert_eq!(c.request("GET", "/echo", &[], b"").await.status, 200);
    let stats = server.stats();
    assert_eq!(stats.while_down, 3);
    assert_eq!(stats.max_in_flight_while_down, 3);
    assert_eq!(stats.echo, 5);
}

#[tokio::test]
async fn a_scheduled_outage_starts_and_ends_on_time() {
    let server = start(MockConfig {
        outage_after_ms: Some(0),
        outage_for_ms: 300,
        ..config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    assert_eq!(c.request("GET", "/echo", &[], b"").await.status, 503);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(c.request("GET", "/echo", &[], b"").await.status, 200);
    assert_eq!(server.stats().while_down, 1);
}

// ---- the rate-limited mode ----

fn limited(rate_limit: Option<u64>, tokens: Option<u64>, headers: LimitHeaders) -> MockConfig {
    MockConfig {
        rate_limit,
        tokens_per_minute: tokens,
        rate_limit_headers: headers,
        ..config()
    }
}

fn millis(answer: &Answer, name: &str) -> u64 {
    answer.header(name).unwrap().parse().unwrap()
}

#[tokio::test]
async fn beyond_its_rate_limit_the_mock_answers_429_with_openai_headers_until_the_window_resets() {
    let server = start(limited(Some(5), None, LimitHeaders::All)).await;
    let mut c = Client::connect(server.addr()).await;
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(c.request("GET", "/kv/a", &[], b"").await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    for (i, answer) in answers[..5].iter().enumerate() {
        assert_eq!(answer.header("x-ratelimit-limit-requests"), Some("5"));
        let remaining = (4 - i).to_string();
        assert_eq!(
            answer.header("x-ratelimit-remaining-requests"),
            Some(remaining.as_str())
        );
        let reset = answer.header("x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with("ms") || reset == "1s", "{reset}");
        // No token limit, no token headers.
        assert_eq!(answer.header("x-ratelimit-limit-tokens"), None);
    }
    let refused = &answers[5];
    assert_eq!(refused.header("retry-after"), Some("1"));
    let wait = millis(refused, "retry-after-ms");
    assert!((1..=1000).contains(&wait), "{wait}");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.json()["error"]["type"], "requests");
    // Health and stats are never limited.
    assert_eq!(c.request("GET", "/health", &[], b"").await.status, 200);

    tokio::time::sleep(Duration::from_millis(wait)).await;
    let again = c.request("GET", "/kv/a", &[], b"").await;
    assert_eq!(again.status, 200);
    let stats = c.request("GET", "/stats", &[], b"").await.json();
    assert_eq!(stats["rate_limited"], 3);
    assert_eq!(stats["peak_requests_per_second"], 5);
    assert_eq!(stats["kv"], 9);
    let rate = stats["requests_per_second"].as_f64().unwrap();
    // 9 requests, the last after the window reset: at most 8 gaps over a bit less than 1 s.
    assert!(rate > 4.0 && rate < 200.0, "{rate}");
    assert_eq!(server.stats().rate_limited, 3);
}

#[tokio::test]
async fn a_spent_token_limit_refuses_until_its_minute_resets() {
    let server = start(limited(None, Some(10), LimitHeaders::All)).await;
    let mut c = Client::connect(server.addr()).await;
    let ask = json!({"messages": [{"role": "user", "content": "one two three four five six"}]});
    let first = c.post_json("/v1/chat/completions", &ask).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let used = first.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < 10, "{used}");
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("10"));
    let remaining = (10 - used).to_string();
    assert_eq!(
        first.header("x-ratelimit-remaining-tokens"),
        Some(remaining.as_str())
    );
    assert_eq!(first.header("x-ratelimit-limit-requests"), None);
    // The second request is admitted (tokens remain) and spends the rest.
    assert_eq!(c.post_json("/v1/chat/completions", &ask).await.status, 200);
    let refused = c.post_json("/v1/chat/completions", &ask).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("x-ratelimit-remaining-tokens"), Some("0"));
    let reset = refused.header("x-ratelimit-reset-tokens").unwrap();
    assert!(reset.ends_with('s') && reset.len() > 2, "{reset}");
    let wait = millis(&refused, "retry-after-ms");
    assert!((58_000..=60_000).contains(&wait), "{wait}");
    assert_eq!(refused.header("retry-after"), Some("60"));
}

#[tokio::test]
async fn the_headers_can_be_left_out_down_to_bare_429s() {
    for (headers, retry_after) in [
        (LimitHeaders::RetryAfter, true),
        (LimitHeaders::None, false),
    ] {
        let server = start(limited(Some(1), None, headers)).await;
        let mut c = Client::connect(server.addr()).await;
        let ok = c.request("GET", "/kv/a", &[], b"").await;
        assert_eq!(ok.status, 200);
        let refused = c.request("GET", "/kv/a", &[], b"").await;
        assert_eq!(refused.status, 429);
        for answer in [&ok, &refused] {
            assert!(
                !answer
                    .headers
                    .iter()
                    .any(|(n, _)| n.starts_with("x-ratelimit")),
                "{headers:?}: {:?}",
                answer.headers
            );
            assert_eq!(answer.header("retry-after-ms"), None);
        }
        assert_eq!(
            refused.header("retry-after").is_some(),
            retry_after,
            "{headers:?}"
        );
        assert_eq!(server.stats().rate_limited, 1);
    }
}

#[tokio::test]
async fn a_zero_rate_limit_is_refused() {
    let bad = MockServer::start(limited(Some(0), None, LimitHeaders::All)).await;
    assert!(matches!(bad, Err(MockError::Config(_))));
}
