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
//!
//! Entries are kept in this process ([`Cache`]: heap or RocksDB, looked up synchronously) or
//! in Redis, shared between processes ([`RedisStore`]: looked up inside the request's future,
//! see [`shared`], which also joins identical requests in flight in different processes). The
//! joining within a process stays in front either way: of identical requests in flight here,
//! one talks to the storage.

mod shared;
#[cfg(test)]
mod shared_tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tower::ServiceExt;

use super::{OutboundError, Policy, PreparedRequest, Request, Response, Sending};
use crate::cache::redis::RedisStore;
use crate::cache::{
    now_ms, Cache, CacheError, CacheKey, CacheKind, CacheOptions, CacheStats, Damaged, Lookup,
    Reader, Storage, Writer,
};

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
    store: Store,
    ignore_headers: Vec<String>,
    /// Per key with a request on the network: the identical requests waiting for its answer.
    in_flight: Mutex<HashMap<CacheKey, Waiters>>,
}

/// Where the entries are.
enum Store {
    /// In this process: looked up at once, when the request is handed in.
    Local(Box<Cache>),
    /// In Redis, shared between processes: looked up inside the request's future.
    Shared(RedisStore),
}

impl RequestCache {
    /// A request cache over `cache` (heap or RocksDB). `ignore_headers`: lowercase header
    /// names left out of keys.
    pub fn new(cache: Cache, ignore_headers: Vec<String>) -> Self {
        Self::over(Store::Local(Box::new(cache)), ignore_headers)
    }

    /// A request cache kept in Redis (`store`), shared with other processes.
    pub fn shared(store: RedisStore, ignore_headers: Vec<String>) -> Self {
        Self::over(Store::Shared(store), ignore_headers)
    }

    /// The request cache `options` describe, counting in `stats`.
    pub fn open(
        options: CacheOptions,
        ignore_headers: Vec<String>,
        stats: Arc<CacheStats>,
    ) -> Result<Self, CacheError> {
        if let Storage::Redis { url, prefix } = &options.storage {
            let store = RedisStore::new(url, prefix, options.ttl, options.negative_ttl, stats)?;
            return Ok(Self::shared(store, ignore_headers));
        }
        let cache = Cache::open(options, CacheKind::Request, stats)?;
        Ok(Self::new(cache, ignore_headers))
    }

    fn over(store: Store, ignore_headers: Vec<String>) -> Self {
        RequestCache {
            store,
            ignore_headers,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        match &self.store {
            Store::Local(cache) => cache.stats(),
            Store::Shared(store) => store.stats(),
        }
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

    /// Keeps `answer` in this process's cache (as screened by `policy`) if it is worth keeping.
    /// (A shared cache keeps it inside [`shared::fetch`].)
    fn keep(&self, key: &CacheKey, answer: &Response, policy: &Policy) {
        let Store::Local(cache) = &self.store else {
            return;
        };
        match kept(answer, policy) {
            Some((true, value)) => cache.put_negative(key, value, now_ms()),
            Some((false, value)) => cache.put(key, value, now_ms()),
            None => {}
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

/// What `answer` leaves in the cache, as screened by `policy`: whether it is a failure (a 4xx
/// but 408 and 429) and its bytes; `None` when it is not kept (a 5xx, a 408 or 429, any other).
fn kept(answer: &Response, policy: &Policy) -> Option<(bool, Vec<u8>)> {
    let negative = match answer.status {
        200..=299 => false,
        408 | 429 => return None,
        400..=499 => true,
        _ => return None,
    };
    let screened = policy.screen_answer(answer.clone()).ok()?;
    Some((negative, encode(&screened)))
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
    /// The answer came (and was kept if worth it): the requests that waited get it.
    fn answered(&mut self, answer: &Result<Response, OutboundError>) {
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
        match &cache.store {
            Store::Local(local) => match local.get(&key, now_ms()) {
                Lookup::Hit(bytes) | Lookup::Negative(bytes) => {
                    if let Ok(answer) = decode(&bytes) {
                        return Box::pin(async move { Ok(answer) });
                    }
                }
                Lookup::Miss => {}
            },
            // Counted like a local miss (coalesced ones included): the leader counts its own
            // lookup in Redis.
            Store::Shared(_) => {}
        }
        let mut in_flight = cache.lock();
        if let Some(waiters) = in_flight.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            drop(in_flight);
            if let Store::Shared(store) = &cache.store {
                store.stats().misses.inc();
            }
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
            cache: Arc::clone(&cache),
            key,
            answered: false,
        };
        let policy = Arc::clone(&self.layer.policy);
        match &cache.store {
            Store::Local(_) => {
                let sending = self.inner.call(request);
                Box::pin(async move {
                    let answer = sending.await;
                    if let Ok(a) = &answer {
                        leading.cache.keep(&leading.key, a, &policy);
                    }
                    leading.answered(&answer);
                    answer
                })
            }
            Store::Shared(store) => {
                let store = store.clone();
                let inner = self.inner.clone();
                let lock_ttl = shared::lock_ttl(request.timeout(), request.deadline());
                Box::pin(async move {
                    let send = move || inner.oneshot(request);
                    let answer =
                        shared::fetch(&store, &key, lock_ttl, send, |a| kept(a, &policy)).await;
                    leading.answered(&answer);
                    answer
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{fake, HostPattern, Outbound, Resilience, SecretGrant};
    use super::*;
    use crate::cache::{CacheKind, CacheOptions, Eviction, Storage};

    fn outbound<T>(transport: T) -> Outbound
    where
        T: tower::Service<PreparedRequest, Response = Response, Error = OutboundError>
            + Clone
            + Send
            + Sync
            + 'static,
        T::Future: Send + 'static,
    {
        let local = || vec![HostPattern::new("127.0.0.1", None)];
        let policy = Policy::new(
            local(),
            vec![SecretGrant {
                name: "key".into(),
                value: "sk-very-secret".into(),
                hosts: local(),
            }],
            Duration::from_secs(5),
        );
        let options = CacheOptions {
            storage: Storage::Heap {
                eviction: Eviction::Lru,
            },
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            max_entries: 100,
            max_bytes: None,
        };
        let cache = Cache::open(options, CacheKind::Request, Arc::default()).unwrap();
        let cache = Arc::new(RequestCache::new(cache, vec!["x-trace".into()]));
        Outbound::compose(
            policy,
            Resilience::default(),
            Some(cache),
            transport,
            Arc::default(),
        )
    }

    fn request(path: &str, trace: &str) -> Request {
        Request {
            method: "POST".into(),
            url: format!("http://127.0.0.1:1/{path}"),
            headers: vec![
                ("authorization".into(), "Bearer ${secret:key}".into()),
                ("x-trace".into(), trace.into()),
                ("x-request-id".into(), trace.into()),
            ],
            body: b"{\"input\":\"hello\"}".to_vec(),
            timeout: None,
            deadline: None,
        }
    }

    async fn send(o: &Outbound, r: Request) -> Response {
        o.send(o.prepare(r).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn identical_requests_are_answered_once_and_failures_of_the_request_kept() {
        let (transport, seen) = fake::service(|| Ok(fake::ok(200, &[], "echo: sk-very-secret")));
        let o = outbound(transport);
        let first = send(&o, request("a", "1")).await;
        assert!(!first.from_cache);
        // Ignored and per-request headers do not make it another request.
        let again = send(&o, request("a", "2")).await;
        assert!(again.from_cache);
        // Kept as the plugin saw it: redacted.
        assert_eq!(again.body, b"echo: [redacted]");
        assert_eq!(seen.lock().unwrap().len(), 1);
        send(&o, request("b", "1")).await;
        assert_eq!(seen.lock().unwrap().len(), 2);
        let stats = o.request_cache().unwrap().stats();
        assert_eq!((stats.hits.get(), stats.misses.get()), (1, 2));
    }

    #[tokio::test]
    async fn a_4xx_is_kept_as_a_failure_but_not_a_429_or_a_5xx() {
        for (status, kept) in [(404, true), (400, true), (429, false), (503, false)] {
            let (transport, seen) = fake::service(move || Ok(fake::ok(status, &[], "no")));
            let o = outbound(transport);
            assert_eq!(send(&o, request("a", "1")).await.status, status);
            assert_eq!(send(&o, request("a", "1")).await.status, status);
            let calls = seen.lock().unwrap().len();
            assert_eq!(calls, if kept { 1 } else { 2 }, "status {status}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn identical_requests_in_flight_are_sent_once_and_answered_together() {
        let (transport, seen) = fake::service(|| Ok(fake::ok(503, &[], "busy")));
        let slow = tower::ServiceBuilder::new()
            .then(|answer| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                answer
            })
            .service(transport);
        let o = outbound(slow);
        let sends: Vec<_> = (0..5)
            .map(|i| o.send(o.prepare(request("a", &i.to_string())).unwrap()))
            .collect();
        let answers = futures_join(sends).await;
        assert_eq!(seen.lock().unwrap().len(), 1);
        // A 503 is shared with the requests that waited, never kept.
        assert!(answers.iter().all(|a| a.as_ref().unwrap().status == 503));
        assert_eq!(
            answers
                .iter()
                .filter(|a| a.as_ref().unwrap().from_cache)
                .count(),
            4
        );
        assert_eq!(o.request_cache().unwrap().stats().coalesced.get(), 4);
        send(&o, request("a", "9")).await;
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    async fn futures_join(sends: Vec<Sending>) -> Vec<Result<Response, OutboundError>> {
        let handles: Vec<_> = sends.into_iter().map(tokio::spawn).collect();
        let mut answers = Vec::new();
        for h in handles {
            answers.push(h.await.unwrap());
        }
        answers
    }

    #[test]
    fn the_key_is_of_the_request_as_written_never_of_a_secret() {
        let cache = Cache::open(
            CacheOptions {
                storage: Storage::Heap {
                    eviction: Eviction::TinyLfu,
                },
                ttl: Duration::from_secs(1),
                negative_ttl: Duration::ZERO,
                max_entries: 1,
                max_bytes: None,
            },
            CacheKind::Request,
            Arc::default(),
        )
        .unwrap();
        let c = RequestCache::new(cache, vec![]);
        let mut other_body = request("a", "1");
        other_body.body = b"{}".to_vec();
        assert_ne!(c.key_of(&request("a", "1")), c.key_of(&other_body));
        let mut lower = request("a", "1");
        lower.method = "post".into();
        assert_eq!(c.key_of(&request("a", "1")), c.key_of(&lower));
    }
}
