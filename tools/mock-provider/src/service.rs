//! Per-request handling: fault planning, routing and the endpoint answers.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::answers::{chat_answer, embedding, embedding_base64, word_count};
use crate::limits::Limits;
use crate::timer::PreciseTimer;
use crate::{Counters, MockConfig};

/// Request bodies above this are refused: the mock is not a blob store.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

type Answer = Response<Full<Bytes>>;

/// Returned by the service to make hyper close the connection without writing an answer.
#[derive(Debug)]
pub(crate) struct DroppedConnection;

impl std::fmt::Display for DroppedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DroppedConnection {}

/// State shared by every connection; the fault thresholds are precomputed cumulative shares
/// so one uniform draw decides the fault, checked in the order drop, hang, 429, 5xx.
pub(crate) struct Shared {
    config: MockConfig,
    counters: Arc<Counters>,
    any_fault: bool,
    drop_below: f64,
    hang_below: f64,
    limit_below: f64,
    error_below: f64,
    retry_after: HeaderValue,
    next_id: AtomicU64,
    timer: PreciseTimer,
    /// The scheduled outage (`outage-after-ms`), as a span of time since the start.
    outage: Option<(Instant, Instant)>,
    /// The rate-limited mode (`rate-limit`, `tokens-per-minute`).
    limits: Option<Limits>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig, counters: Arc<Counters>, timer: PreciseTimer) -> Shared {
        let drop_below = config.drop_rate;
        let hang_below = drop_below + config.hang_rate;
        let limit_below = hang_below + config.rate_limit_rate;
        let error_below = limit_below + config.error_rate;
        let retry_after = HeaderValue::from(config.retry_after_secs);
        let config_outage = config.outage_after_ms.map(|after| {
            let from = Instant::now() + Duration::from_millis(after);
            (from, from + Duration::from_millis(config.outage_for_ms))
        });
        let limits = Limits::new(
            config.rate_limit,
            config.tokens_per_minute,
            config.rate_limit_headers,
        );
        Shared {
            limits,
            any_fault: error_below > 0.0,
            drop_below,
            hang_below,
            limit_below,
            error_below,
            retry_after,
            config,
            counters,
            next_id: AtomicU64::new(1),
            timer,
            outage: config_outage,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Chat,
    Embeddings,
    Echo,
    Kv,
    Health,
    /// `GET /stats`: the counters as JSON, for scripts that run the mock as a process.
    Stats,
    NotFound,
    MethodNotAllowed,
}

fn route_of(method: &Method, path: &str) -> Route {
    let (route, allowed) = match path {
        "/v1/chat/completions" => (Route::Chat, method == Method::POST),
        "/v1/embeddings" => (Route::Embeddings, method == Method::POST),
        "/echo" => (Route::Echo, true),
        "/health" => (Route::Health, true),
        "/stats" => (Route::Stats, method == Method::GET),
        p if p.starts_with("/kv/") => (Route::Kv, method == Method::GET),
        _ => (Route::NotFound, true),
    };
    if allowed {
        route
    } else {
        Route::MethodNotAllowed
    }
}

enum Fault {
    Drop,
    Hang,
    Status(StatusCode),
}

/// What to do with one request, decided synchronously before any await so the per-connection
/// RNG never crosses an await point.
enum Plan {
    Drop,
    Hang,
    Fail {
        status: StatusCode,
        delay_ms: u64,
    },
    /// Refused by the rate limit, whose window resets `reset` after the plan.
    Limited {
        reset: Duration,
        delay_ms: u64,
    },
    /// Answered 503 because the provider is down; counted in flight until answered.
    Down {
        delay_ms: u64,
    },
    Serve {
        route: Route,
        delay_ms: u64,
    },
    Reject(Answer),
}

impl Shared {
    fn plan(&self, req: &Request<Incoming>, rng: &mut fastrand::Rng) -> Plan {
        let c = &self.counters;
        Counters::bump(&c.requests);
        if req.version() == hyper::Version::HTTP_2 {
            Counters::bump(&c.http2);
        }
        let headers = req.headers();
        if let Some(auth) = headers.get(AUTHORIZATION) {
            c.saw_authorization(auth.as_bytes());
        }
        let route = route_of(req.method(), req.uri().path());
        match route {
            Route::Chat => Counters::bump(&c.chat),
            Route::Embeddings => Counters::bump(&c.embeddings),
            Route::Echo => Counters::bump(&c.echo),
            Route::Kv => Counters::bump(&c.kv),
            // Health checks and routing errors never get faults or latency.
            Route::Health | Route::Stats | Route::NotFound | Route::MethodNotAllowed => {
                return Plan::Serve { route, delay_ms: 0 }
            }
        }
        c.saw_model_request();

        let fault = match headers.get("x-mock-fault") {
            Some(v) => match v.as_bytes() {
                b"429" => Some(Fault::Status(StatusCode::TOO_MANY_REQUESTS)),
                b"500" => Some(Fault::Status(StatusCode::INTERNAL_SERVER_ERROR)),
                b"503" => Some(Fault::Status(StatusCode::SERVICE_UNAVAILABLE)),
                b"hang" => Some(Fault::Hang),
                b"drop" => Some(Fault::Drop),
                other => {
                    let msg = format!(
                        "x-mock-fault must be 429, 500, 503, hang or drop, got {:?}",
                        String::from_utf8_lossy(other)
                    );
                    return Plan::Reject(openai_error(StatusCode::BAD_REQUEST, &msg));
                }
            },
            None => self.draw_fault(rng),
        };

        let delay_ms = match headers.get("x-mock-delay-ms") {
            Some(v) => match std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(ms) => ms,
                None => {
                    return Plan::Reject(openai_error(
                        StatusCode::BAD_REQUEST,
                        "x-mock-delay-ms must be a whole number of milliseconds",
                    ))
                }
            },
            None => {
                let jitter = match self.config.jitter_ms {
                    0 => 0,
                    j => rng.u64(0..=j),
                };
                self.config.latency_ms.saturating_add(jitter)
            }
        };

        if self.is_down() {
            Counters::bump(&c.while_down);
            let now = c.in_flight_while_down.fetch_add(1, Ordering::SeqCst) + 1;
            c.max_in_flight_while_down.fetch_max(now, Ordering::SeqCst);
            return Plan::Down { delay_ms };
        }
        if let Some(limits) = &self.limits {
            match limits.admit() {
                Ok(admitted) => {
                    c.peak_requests_per_second
                        .fetch_max(admitted, Ordering::Relaxed);
                }
                Err(reset) => {
                    Counters::bump(&c.rate_limited);
                    return Plan::Limited { reset, delay_ms };
                }
            }
        }
        match fault {
            None => Plan::Serve { route, delay_ms },
            Some(fault) => {
                Counters::bump(&c.faults);
                match fault {
                    Fault::Drop => Plan::Drop,
                    Fault::Hang => Plan::Hang,
                    Fault::Status(status) => Plan::Fail { status, delay_ms },
                }
            }
        }
    }

    fn draw_fault(&self, rng: &mut fastrand::Rng) -> Option<Fault> {
        if !self.any_fault {
            return None;
        }
        let u = rng.f64();
        if u < self.drop_below {
            Some(Fault::Drop)
        } else if u < self.hang_below {
            Some(Fault::Hang)
        } else if u < self.limit_below {
            Some(Fault::Status(StatusCode::TOO_MANY_REQUESTS))
        } else if u < self.error_below {
            let status = match self.config.error_status {
                Some(code) => {
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
                None if rng.bool() => StatusCode::INTERNAL_SERVER_ERROR,
                None => StatusCode::SERVICE_UNAVAILABLE,
            };
            Some(Fault::Status(status))
        } else {
            None
        }
    }

    /// A 429 of the rate limit, whose window resets after `reset`.
    fn limited_answer(&self, reset: Duration) -> Answer {
        let body = error_body(
            "Rate limit reached (mock rate-limit). Please try again after the delay in Retry-After.",
            "requests",
            Some("rate_limit_exceeded"),
        );
        let mut answer = json_answer(StatusCode::TOO_MANY_REQUESTS, body);
        if let Some(limits) = &self.limits {
            limits.write_refusal(reset, answer.headers_mut());
        }
        answer
    }

    fn fault_answer(&self, status: StatusCode) -> Answer {
        let (message, kind, code) = match status {
            StatusCode::TOO_MANY_REQUESTS => (
                "Rate limit reached (mock). Please retry after the delay in Retry-After.",
                "requests",
                Some("rate_limit_exceeded"),
            ),
            StatusCode::SERVICE_UNAVAILABLE => (
                "The server is overloaded (mock). Please retry.",
                "server_error",
                None,
            ),
            _ => (
                "The server had an error while processing your request (mock).",
                "server_error",
                None,
            ),
        };
        let mut answer = json_answer(status, error_body(message, kind, code));
        // 503 carries Retry-After too: it is the other status where clients honour it.
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            answer
                .headers_mut()
                .insert(RETRY_AFTER, self.retry_after.clone());
        }
        answer
    }
}

/// Serves one accepted connection until it ends or the server shuts down.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    conn_id: u64,
    mut stop: watch::Receiver<bool>,
) {
    let rng = RefCell::new(fastrand::Rng::with_seed(mix_seed(
        shared.config.seed,
        conn_id,
    )));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let plan = shared.plan(&req, &mut rng.borrow_mut());
        // Boxed: hyper moves the answer future into a task of its own per request, and the
        // unboxed state machine is a few kilobytes to copy.
        Box::pin(handle(shared.clone(), req, plan))
    });
    // HTTP/1.1, or HTTP/2 for a client that starts with its preface (prior knowledge). No
    // stream limit: a client with a thousand requests in flight sends them all at once, as it
    // would over a thousand HTTP/1.1 connections.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    builder.http2().max_concurrent_streams(None);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        // Dropping the connection future closes the socket, hung requests included.
        _ = stop.changed() => {}
        res = conn => {
            if let Err(err) = res {
                tracing::trace!(error = %err, "mock provider: connection ended");
            }
        }
    }
}

/// SplitMix64 finaliser over seed and connection number, so neighbouring connections get
/// unrelated fault sequences while a given (seed, connection) pair always repeats.
fn mix_seed(seed: u64, conn_id: u64) -> u64 {
    let mut z = seed ^ conn_id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Takes a request that arrived while down out of the in-flight count when it ends.
struct DownGuard<'a>(&'a Counters);

impl Drop for DownGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight_while_down.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Whether the provider is down now: set by the test, or inside the scheduled outage.
    fn is_down(&self) -> bool {
        if self.counters.down.load(Ordering::Relaxed) {
            return true;
        }
        self.outage.is_some_and(|(from, until)| {
            let now = Instant::now();
            from <= now && now < until
        })
    }

    fn charge_tokens(&self, tokens: u64) {
        if let Some(limits) = &self.limits {
            limits.charge_tokens(tokens);
        }
    }

    async fn sleep_ms(&self, ms: u64) {
        self.timer.sleep(Duration::from_millis(ms)).await;
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    plan: Plan,
) -> Result<Answer, DroppedConnection> {
    match plan {
        Plan::Drop => Err(DroppedConnection),
        Plan::Hang => std::future::pending().await,
        Plan::Reject(answer) => Ok(answer),
        Plan::Fail { status, delay_ms } => {
            shared.sleep_ms(delay_ms).await;
            Ok(shared.fault_answer(status))
        }
        Plan::Limited { reset, delay_ms } => {
            shared.sleep_ms(delay_ms).await;
            let left = reset.saturating_sub(Duration::from_millis(delay_ms));
            Ok(shared.limited_answer(left))
        }
        Plan::Down { delay_ms } => {
            // Counted out even if the client gives up first (the future is dropped).
            let _answered = DownGuard(&shared.counters);
            shared.sleep_ms(delay_ms).await;
            Ok(shared.fault_answer(StatusCode::SERVICE_UNAVAILABLE))
        }
        Plan::Serve { route, delay_ms } => {
            let mut answer = serve(&shared, req, route, delay_ms).await;
            let model_route = !matches!(
                route,
                Route::Health | Route::Stats | Route::NotFound | Route::MethodNotAllowed
            );
            if let (Some(limits), true) = (&shared.limits, model_route) {
                limits.write_headers(answer.headers_mut());
            }
            Ok(answer)
        }
    }
}

async fn serve(shared: &Shared, req: Request<Incoming>, route: Route, delay_ms: u64) -> Answer {
    match route {
        Route::Health => {
            let mut answer = Response::new(Full::new(Bytes::from_static(b"ok")));
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return answer;
        }
        Route::Stats => {
            let stats = serde_json::to_vec(&shared.counters.snapshot()).unwrap_or_default();
            return json_answer(StatusCode::OK, stats);
        }
        Route::NotFound => return not_found(),
        Route::MethodNotAllowed => {
            return openai_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        Route::Chat | Route::Embeddings | Route::Echo | Route::Kv => {}
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let msg = format!("cannot read the request body: {err}");
            return openai_error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    match route {
        Route::Chat => {
            shared.sleep_ms(delay_ms).await;
            chat(shared, &body)
        }
        Route::Embeddings => {
            shared.sleep_ms(delay_ms).await;
            embeddings(shared, &body)
        }
        Route::Echo => {
            let extra = query_param(parts.uri.query(), "delay_ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            shared.sleep_ms(delay_ms.saturating_add(extra)).await;
            echo(&parts, &body)
        }
        _ => {
            shared.sleep_ms(delay_ms).await;
            kv(parts.uri.path())
        }
    }
}

fn json_answer(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

fn to_json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => json_answer(status, body),
        Err(err) => {
            let msg = format!("cannot encode the answer: {err}");
            openai_error(StatusCode::INTERNAL_SERVER_ERROR, &msg)
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
}

fn error_body(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            code,
        },
    };
    // Plain strings always serialise; the fallback keeps this path free of unwrap.
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":{}}".to_vec())
}

fn openai_error(status: StatusCode, message: &str) -> Answer {
    json_answer(status, error_body(message, "invalid_request_error", None))
}

fn not_found() -> Answer {
    json_answer(StatusCode::NOT_FOUND, b"{\"error\":\"not found\"}".to_vec())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- chat ----

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: serde_json::Value,
}

/// Message text: a plain string, or the `text` parts of an array of content parts.
fn message_text(content: &serde_json::Value) -> Cow<'_, str> {
    match content {
        serde_json::Value::String(s) => Cow::Borrowed(s),
        serde_json::Value::Array(parts) => Cow::Owned(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => Cow::Borrowed(""),
    }
}

#[derive(Serialize)]
struct ChatResponse<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<u64>,
    total_tokens: u64,
}

fn chat(shared: &Shared, body: &[u8]) -> Answer {
    let request: ChatRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(err) => {
            let msg = format!("invalid JSON body: {err}");
            return openai_error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let messages = match request.messages {
        Some(m) if !m.is_empty() => m,
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "'messages' must be a non-empty array",
            )
        }
    };
    let texts: Vec<Cow<'_, str>> = messages.iter().map(|m| message_text(&m.content)).collect();
    let pairs: Vec<(&str, &str)> = messages
        .iter()
        .zip(&texts)
        .map(|(m, t)| (m.role.as_str(), t.as_ref()))
        .collect();
    let answer = chat_answer(&pairs);
    let prompt_tokens: u64 = texts.iter().map(|t| word_count(t)).sum();
    let completion_tokens = word_count(&answer);
    shared.charge_tokens(prompt_tokens + completion_tokens);
    let id = format!(
        "chatcmpl-mock-{:x}",
        shared.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let response = ChatResponse {
        id,
        object: "chat.completion",
        created: unix_now(),
        model: request.model.as_deref().unwrap_or("mock-model"),
        choices: [ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: &answer,
            },
            finish_reason: "stop",
        }],
        usage: Usage {
            prompt_tokens,
            completion_tokens: Some(completion_tokens),
            total_tokens: prompt_tokens + completion_tokens,
        },
    };
    to_json(StatusCode::OK, &response)
}

// ---- embeddings ----

#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: serde_json::Value,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Serialize)]
struct EmbeddingsResponse<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Floats(Vec<f32>),
    Base64(String),
}

fn embeddings(shared: &Shared, body: &[u8]) -> Answer {
    let request: EmbeddingsRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(err) => {
            let msg = format!("invalid JSON body: {err}");
            return openai_error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let inputs: Vec<&str> = match &request.input {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(items) if !items.is_empty() => {
            match items.iter().map(|i| i.as_str()).collect::<Option<Vec<_>>>() {
                Some(v) => v,
                None => {
                    return openai_error(
                        StatusCode::BAD_REQUEST,
                        "'input' must be a string or an array of strings",
                    )
                }
            }
        }
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "'input' must be a string or a non-empty array of strings",
            )
        }
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            let msg = format!("'encoding_format' must be float or base64, got {other:?}");
            return openai_error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let dim = shared.config.embedding_dim;
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let v = embedding(text, dim);
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: if base64 {
                    EmbeddingData::Base64(embedding_base64(&v))
                } else {
                    EmbeddingData::Floats(v)
                },
            }
        })
        .collect();
    let prompt_tokens = inputs.iter().map(|t| word_count(t)).sum();
    shared.charge_tokens(prompt_tokens);
    shared
        .counters
        .embedding_inputs
        .fetch_add(inputs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let response = EmbeddingsResponse {
        object: "list",
        data,
        model: request.model.as_deref().unwrap_or("mock-embedding"),
        usage: Usage {
            prompt_tokens,
            completion_tokens: None,
            total_tokens: prompt_tokens,
        },
    };
    to_json(StatusCode::OK, &response)
}

// ---- echo and kv ----

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[derive(Serialize)]
struct EchoResponse<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: serde_json::Map<String, serde_json::Value>,
    body: Cow<'a, str>,
}

fn echo(parts: &hyper::http::request::Parts, body: &[u8]) -> Answer {
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(name.as_str()) {
            // Repeated headers are joined the way HTTP allows them to be folded.
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(
                    name.as_str().to_owned(),
                    serde_json::Value::String(value.into_owned()),
                );
            }
        }
    }
    let response = EchoResponse {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers,
        body: String::from_utf8_lossy(body),
    };
    to_json(StatusCode::OK, &response)
}

#[derive(Serialize)]
struct KvResponse<'a> {
    key: &'a str,
    value: String,
    len: usize,
}

fn kv(path: &str) -> Answer {
    let raw = path.strip_prefix("/kv/").unwrap_or("");
    let key = percent_decode(raw);
    if key.is_empty() || key.starts_with("missing") {
        return not_found();
    }
    let response = KvResponse {
        key: &key,
        value: format!("value-of-{key}"),
        len: key.len(),
    };
    to_json(StatusCode::OK, &response)
}

/// Decodes `%XX` escapes (invalid escapes are kept as written); the result is UTF-8 lossy.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                // Two hex digits make at most 255.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_and_garbage() {
        assert_eq!(percent_decode("user%201"), "user 1");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("plain"), "plain");
    }

    #[test]
    fn query_params_are_found_by_name() {
        assert_eq!(query_param(Some("a=1&delay_ms=20"), "delay_ms"), Some("20"));
        assert_eq!(query_param(Some("delay_ms"), "delay_ms"), Some(""));
        assert_eq!(query_param(Some("x=1"), "delay_ms"), None);
        assert_eq!(query_param(None, "delay_ms"), None);
    }

    #[test]
    fn routes_check_the_method() {
        assert_eq!(route_of(&Method::POST, "/v1/chat/completions"), Route::Chat);
        assert_eq!(
            route_of(&Method::GET, "/v1/chat/completions"),
            Route::MethodNotAllowed
        );
        assert_eq!(route_of(&Method::GET, "/kv/a"), Route::Kv);
        assert_eq!(route_of(&Method::PUT, "/echo"), Route::Echo);
        assert_eq!(route_of(&Method::GET, "/nope"), Route::NotFound);
    }

    #[test]
    fn fault_shares_follow_the_configured_rates() {
        let config = MockConfig {
            drop_rate: 0.1,
            hang_rate: 0.1,
            rate_limit_rate: 0.2,
            error_rate: 0.2,
            ..MockConfig::default()
        };
        let timer = PreciseTimer::start().unwrap();
        let shared = Shared::new(config, Arc::new(Counters::default()), timer);
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut drops, mut hangs, mut limits, mut errors, mut ok) = (0i32, 0, 0, 0, 0);
        for _ in 0..10_000 {
            match shared.draw_fault(&mut rng) {
                Some(Fault::Drop) => drops += 1,
                Some(Fault::Hang) => hangs += 1,
                Some(Fault::Status(StatusCode::TOO_MANY_REQUESTS)) => limits += 1,
                Some(Fault::Status(_)) => errors += 1,
                None => ok += 1,
            }
        }
        for (count, expected) in [
            (drops, 1000),
            (hangs, 1000),
            (limits, 2000),
            (errors, 2000),
            (ok, 4000),
        ] {
            assert!((count - expected).abs() < 300, "{count} vs {expected}");
        }
    }
}
