//! An OpenAI-compatible mock LLM provider for waio's tests, demos and benchmarks.
//!
//! It answers chat completions and embeddings deterministically, offers `/echo` and `/kv/{key}`
//! helpers, and injects faults (latency, 429, 5xx, hung and dropped requests) from a seeded RNG
//! or on demand through request headers. See README.md beside this crate.

mod answers;
mod limits;
mod service;
mod timer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use answers::{chat_answer, embedding, fnv1a64};
pub use limits::{go_duration, LimitHeaders};

/// Behaviour of the mock; also the CLI flags of `waio mock-provider`.
#[derive(Clone, Debug, clap::Args)]
pub struct MockConfig {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// Milliseconds added to every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Uniform extra delay of 0..=jitter milliseconds per answer.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of requests answered 500 or 503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// The status of the `error-rate` answers (500, 502, 503 or 504); a mix of 500 and 503
    /// when not given.
    #[arg(long)]
    pub error_status: Option<u16>,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    /// Seconds sent in the Retry-After header of 429 and 503 answers.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Share of requests never answered (the connection is held open).
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Share of requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Length of the vectors returned by /v1/embeddings.
    #[arg(long, default_value_t = 8)]
    pub embedding_dim: usize,
    /// A provider outage: from this many milliseconds after the start, every request to a model
    /// endpoint is answered 503 (after the latency) for `outage-for-ms`.
    #[arg(long)]
    pub outage_after_ms: Option<u64>,
    /// How long the outage of `outage-after-ms` lasts.
    #[arg(long, default_value_t = 10_000)]
    pub outage_for_ms: u64,
    /// A provider's rate limit: requests per second admitted (a fixed 1-s window); beyond,
    /// 429 until the window resets.
    #[arg(long)]
    pub rate_limit: Option<u64>,
    /// A provider's token limit: tokens (usage) per minute (a fixed 60-s window); once spent,
    /// 429 until the window resets.
    #[arg(long)]
    pub tokens_per_minute: Option<u64>,
    /// Which headers tell clients about the limits: `all` (OpenAI's `x-ratelimit-*` on every
    /// answer, `Retry-After` and `retry-after-ms` on a 429), `retry-after` (only `Retry-After`
    /// on a 429) or `none` (bare 429s).
    #[arg(long, value_enum, default_value_t = LimitHeaders::All)]
    pub rate_limit_headers: LimitHeaders,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 18080)),
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            hang_rate: 0.0,
            drop_rate: 0.0,
            seed: 42,
            embedding_dim: 8,
            error_status: None,
            outage_after_ms: None,
            outage_for_ms: 10_000,
            rate_limit: None,
            tokens_per_minute: None,
            rate_limit_headers: LimitHeaders::All,
        }
    }
}

impl MockConfig {
    fn validate(&self) -> Result<(), MockError> {
        let rates = [
            ("error-rate", self.error_rate),
            ("rate-limit-rate", self.rate_limit_rate),
            ("hang-rate", self.hang_rate),
            ("drop-rate", self.drop_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(MockError::Config(format!(
                    "{name} must be between 0 and 1, got {rate}"
                )));
            }
        }
        if self.rate_limit == Some(0) || self.tokens_per_minute == Some(0) {
            return Err(MockError::Config(
                "rate-limit and tokens-per-minute must be at least 1".into(),
            ));
        }
        if let Some(status) = self.error_status {
            if ![500, 502, 503, 504].contains(&status) {
                return Err(MockError::Config(format!(
                    "error-status must be 500, 502, 503 or 504, got {status}"
                )));
            }
        }
        Ok(())
    }
}

/// Errors of the mock provider.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot read the bound address: {0}")]
    LocalAddr(std::io::Error),
    #[error("invalid mock configuration: {0}")]
    Config(String),
    #[error("cannot start the timer thread: {0}")]
    Timer(std::io::Error),
    #[error("cannot wait for ctrl-c: {0}")]
    Signal(std::io::Error),
}

/// A snapshot of what the mock has received (also served as JSON at `GET /stats`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MockStats {
    /// Every request, whatever its path or outcome.
    pub requests: u64,
    /// Requests to /v1/chat/completions (faulted ones included).
    pub chat: u64,
    /// Requests to /v1/embeddings (faulted ones included).
    pub embeddings: u64,
    /// Texts those requests asked to embed (a request may carry a list), answered ones only.
    pub embedding_inputs: u64,
    /// Requests to /echo (faulted ones included).
    pub echo: u64,
    /// Requests to /kv/{key} (faulted ones included).
    pub kv: u64,
    /// Requests answered with a fault: dropped, hung, 429 or 5xx.
    pub faults: u64,
    /// Requests that came over HTTP/2 (the rest came over HTTP/1.1).
    pub http2: u64,
    /// Requests to a model endpoint that arrived while the provider was down (answered 503).
    pub while_down: u64,
    /// Most requests in progress at once among those that arrived while it was down.
    pub max_in_flight_while_down: u64,
    /// Distinct Authorization header values received, the first 16.
    pub authorization_seen: Vec<String>,
    /// Requests refused with a 429 by `rate-limit` or `tokens-per-minute`.
    pub rate_limited: u64,
    /// Requests to model endpoints (chat, embeddings, echo, kv) per second, from the first to
    /// the last one; 0 before the second one.
    pub requests_per_second: f64,
    /// Most requests `rate-limit` admitted in one of its 1-s windows (0 without it).
    pub peak_requests_per_second: u64,
}

const MAX_AUTH_SEEN: usize = 16;

/// Live counters shared by all connections.
#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub chat: AtomicU64,
    pub embeddings: AtomicU64,
    pub embedding_inputs: AtomicU64,
    pub echo: AtomicU64,
    pub kv: AtomicU64,
    pub faults: AtomicU64,
    pub http2: AtomicU64,
    pub while_down: AtomicU64,
    pub in_flight_while_down: AtomicU64,
    pub max_in_flight_while_down: AtomicU64,
    pub rate_limited: AtomicU64,
    pub peak_requests_per_second: AtomicU64,
    /// When the first model request came, and the last one (microseconds after the first).
    first_model_request: OnceLock<Instant>,
    last_model_request_us: AtomicU64,
    /// Set by [`MockServer::set_down`]: every model request is answered 503.
    pub down: AtomicBool,
    auth_full: AtomicBool,
    auth_seen: Mutex<Vec<String>>,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes the time of a request to a model endpoint, for `requests_per_second`.
    pub(crate) fn saw_model_request(&self) {
        let first = *self.first_model_request.get_or_init(Instant::now);
        let us = first.elapsed().as_micros() as u64;
        self.last_model_request_us.fetch_max(us, Ordering::Relaxed);
    }

    fn requests_per_second(&self) -> f64 {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let requests =
            load(&self.chat) + load(&self.embeddings) + load(&self.echo) + load(&self.kv);
        let span = load(&self.last_model_request_us) as f64 / 1e6;
        if requests < 2 || span <= 0.0 {
            return 0.0;
        }
        // n requests spread over a span make n - 1 gaps.
        (requests - 1) as f64 / span
    }

    pub(crate) fn saw_authorization(&self, value: &[u8]) {
        // Skip the lock once the list is full: the hot path then costs one atomic load.
        if self.auth_full.load(Ordering::Relaxed) {
            return;
        }
        let value = String::from_utf8_lossy(value);
        let mut seen = self.auth_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < MAX_AUTH_SEEN && !seen.iter().any(|s| *s == value) {
            seen.push(value.into_owned());
            if seen.len() == MAX_AUTH_SEEN {
                self.auth_full.store(true, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MockStats {
            requests: load(&self.requests),
            chat: load(&self.chat),
            embeddings: load(&self.embeddings),
            embedding_inputs: load(&self.embedding_inputs),
            echo: load(&self.echo),
            kv: load(&self.kv),
            faults: load(&self.faults),
            http2: load(&self.http2),
            while_down: load(&self.while_down),
            max_in_flight_while_down: load(&self.max_in_flight_while_down),
            authorization_seen: self
                .auth_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            rate_limited: load(&self.rate_limited),
            requests_per_second: self.requests_per_second(),
            peak_requests_per_second: load(&self.peak_requests_per_second),
        }
    }
}

/// A running mock provider. Dropping it (or calling [`MockServer::shutdown`]) stops accepting
/// and closes every open connection, hung requests included.
pub struct MockServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    shutdown_tx: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl MockServer {
    /// Binds `config.listen` and spawns the accept loop on the current tokio runtime.
    /// Returns once the socket is listening.
    pub async fn start(config: MockConfig) -> Result<MockServer, MockError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| MockError::Bind {
                    addr: config.listen,
                    cause: source,
                })?;
        let addr = listener.local_addr().map_err(MockError::LocalAddr)?;
        let counters = Arc::new(Counters::default());
        let timer = timer::PreciseTimer::start().map_err(MockError::Timer)?;
        let shared = Arc::new(service::Shared::new(config, counters.clone(), timer));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
        Ok(MockServer {
            addr,
            counters,
            shutdown_tx,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:18080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> MockStats {
        self.counters.snapshot()
    }

    /// Forgets the most requests seen in progress at once while down, to measure a later phase
    /// of an outage on its own.
    pub fn reset_max_in_flight_while_down(&self) {
        let now = self.counters.in_flight_while_down.load(Ordering::SeqCst);
        self.counters
            .max_in_flight_while_down
            .store(now, Ordering::SeqCst);
    }

    /// Starts (`true`) or ends a provider outage: while down, every request to a model endpoint
    /// is answered 503 (with Retry-After) after the configured latency.
    pub fn set_down(&self, down: bool) {
        self.counters.down.store(down, Ordering::SeqCst);
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Connections watch this channel; they also end when the sender is gone.
        let _ = self.shutdown_tx.send(true);
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<service::Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let mut conn_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Typically EMFILE under load: back off briefly instead of spinning.
                tracing::warn!(error = %err, "mock provider: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        // Small answers: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        conn_id += 1;
        tokio::spawn(service::serve_connection(
            stream,
            shared.clone(),
            conn_id,
            shutdown.clone(),
        ));
    }
}

/// Starts the mock, logs its URL and serves until ctrl-c.
pub async fn serve_forever(config: MockConfig) -> Result<(), MockError> {
    let server = MockServer::start(config).await?;
    tracing::info!(url = %server.url(), "mock provider listening");
    tokio::signal::ctrl_c().await.map_err(MockError::Signal)?;
    let stats = server.stats();
    tracing::info!(
        requests = stats.requests,
        faults = stats.faults,
        "mock provider stopping"
    );
    server.shutdown();
    Ok(())
}
