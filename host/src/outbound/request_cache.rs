//! The request cache and coalescing (`request_cache.*`), the stack's cache slot: an answer
//! kept for an identical request is given again without a network call, and identical
//! requests in flight at the same time are sent once and answered together.
//!
//! The key is the digest of the request as the plugin wrote it, *before* the policy fills in
//! secrets (`${secret:NAME}` stays a placeholder): method, URL, body, and the headers but
//! those that vary per request without changing the answer (request ids, trace context) and
//! those the manifest lists in `ignore_headers`. So a key never holds a secret; and what is
//! kept is the answer as the plugin sees it, after redaction.
//!
//! 2xx answers are kept for `ttl`; 4xx answers other than 408 and 429 (the request was wrong
//! and will stay wrong) for `negative_ttl`; nothing else. A request that waited for another
//! one in flight gets that one's answer whatever it was; if that request is dropped before
//! its answer, the waiting one is sent itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tower::ServiceExt;

use super::{OutboundError, Policy, PreparedRequest, Request, Response, Sending};
use crate::cache::{now_ms, Cache, CacheKey, Damaged, Lookup, Reader, Writer};

/// Headers that never make two requests different: per-request ids and trace context.
const NEVER_IN_KEY: &[&str] = &[
    "x-request-id",
    "idempotency-key",
    "traceparent",
    "tracestate",
    "date",
];

type Waiters = Vec<oneshot::Sender<Result<Response, OutboundError>>>;

/// An operator's request cache, shared by its stack's clones.
pub struct RequestCache {
    cache: Cache,
    ignore_headers: Vec<String>,
    /// Per key with a request on the network: the identical requests waiting for its answer.
    in_flight: Mutex<HashMap<CacheKey, Waiters>>,
}

impl RequestCache {
    /// `ignore_headers`: lowercase header names left out of keys.
    pub fn new(cache: Cache, ignore_headers: Vec<String>) -> Self {
        RequestCache {
            cache,
            ignore_headers,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn stats(&self) -> &Arc<crate::telemetry::CacheStats> {
        self.cache.stats()
    }

    /// The key of a request as the plugin wrote it (secrets still placeholders).
    pub fn key_of(&self, request: &Request) -> CacheKey {
        let mut headers: Vec<(String, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
            .filter(|(name, _)| {
                !NEVER_IN_KEY.contains(&name.as_str()) && !self.ignore_headers.contains(name)
            })
            .collect();
        headers.sort();
        let mut w = Writer::new();
        for (name, value) in &headers {
            w.bytes(name.as_bytes()).bytes(value.as_bytes());
        }
        let headers = w.finish();
        CacheKey::of(&[
            request.method.to_ascii_uppercase().as_bytes(),
            request.url.as_bytes(),
            &headers,
            &request.body,
        ])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Waiters>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `answer` (as screened by `policy`) if it is worth keeping.
    fn keep(&self, key: &CacheKey, answer: &Response, policy: &Policy) {
        let negative = match answer.status {
            200..=299 => false,
            408 | 429 => return,
            400..=499 => true,
            _ => return,
        };
        let Ok(screened) = policy.screen_answer(answer.clone()) else {
            return;
        };
        let value = encode(&screened);
        if negative {
            self.cache.put_negative(key, value, now_ms());
        } else {
            self.cache.put(key, value, now_ms());
        }
    }

    /// The waiting requests get `answer`; the key is free again.
    fn answer_waiters(&self, key: &CacheKey, answer: &Result<Response, OutboundError>) {
        let waiters = self.lock().remove(key).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(answer.clone());
        }
    }
}

fn encode(answer: &Response) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(answer.status).u32(answer.headers.len() as u32);
    for (name, value) in &answer.headers {
        w.bytes(name.as_bytes()).bytes(value.as_bytes());
    }
    w.bytes(&answer.body);
    w.finish()
}

fn decode(bytes: &[u8]) -> Result<Response, Damaged> {
    let mut r = Reader::new(bytes);
    let status = r.u16()?;
    let n = r.u32()? as usize;
    let mut headers = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        headers.push((r.string()?, r.string()?));
    }
    let body = r.bytes()?.to_vec();
    r.end()?;
    Ok(Response {
        status,
        headers,
        body,
        from_cache: true,
    })
}

/// The layer in the stack's cache slot.
#[derive(Clone)]
pub struct RequestCacheLayer {
    cache: Arc<RequestCache>,
    policy: Arc<Policy>,
}

impl RequestCacheLayer {
    pub fn new(cache: Arc<RequestCache>, policy: Arc<Policy>) -> Self {
        RequestCacheLayer { cache, policy }
    }
}

impl<S> tower::Layer<S> for RequestCacheLayer {
    type Service = RequestCacheService<S>;

    fn layer(&self, inner: S) -> RequestCacheService<S> {
        RequestCacheService {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct RequestCacheService<S> {
    layer: RequestCacheLayer,
    inner: S,
}

/// Frees the key of a request whose answer never came (its future was dropped): the requests
/// waiting for it are then sent themselves.
struct Leading {
    cache: Arc<RequestCache>,
    key: CacheKey,
    answered: bool,
}

impl Leading {
    /// The answer came: kept if worth it, and given to the requests that waited.
    fn answered(&mut self, answer: &Result<Response, OutboundError>, policy: &Policy) {
        if let Ok(a) = answer {
            self.cache.keep(&self.key, a, policy);
        }
        self.cache.answer_waiters(&self.key, answer);
        self.answered = true;
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        if !self.answered {
            self.cache.lock().remove(&self.key);
        }
    }
}

impl<S> tower::Service<PreparedRequest> for RequestCacheService<S>
where
    S: tower::Service<PreparedRequest, Response = Response, Error = OutboundError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = OutboundError;
    type Future = Sending;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OutboundError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: PreparedRequest) -> Sending {
        let Some(key) = request.cache_key() else {
            return Box::pin(self.inner.call(request));
        };
        let cache = Arc::clone(&self.layer.cache);
        match cache.cache.get(&key, now_ms()) {
            Lookup::Hit(bytes) | Lookup::Negative(bytes) => {
                if let Ok(answer) = decode(&bytes) {
                    return Box::pin(async move { Ok(answer) });
                }
            }
            Lookup::Miss => {}
        }
        let mut in_flight = cache.lock();
        if let Some(waiters) = in_flight.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            drop(in_flight);
            cache.stats().coalesced.inc();
            let inner = self.inner.clone();
            return Box::pin(async move {
                match rx.await {
                    Ok(answer) => answer.map(|a| Response {
                        from_cache: true,
                        ..a
                    }),
                    // The request it waited for was dropped unanswered: send this one.
                    Err(_) => inner.oneshot(request).await,
                }
            });
        }
        in_flight.insert(key, Vec::new());
        drop(in_flight);
        let mut leading = Leading {
            cache,
            key,
            answered: false,
        };
        let policy = Arc::clone(&self.layer.policy);
        let sending = self.inner.call(request);
        Box::pin(async move {
            let answer = sending.await;
            leading.answered(&answer, &policy);
            answer
        })
    }
}
