//! A request cache kept in Redis, as two processes see it: two [`RequestCache`]s (each its own
//! connection, its own in-process joining) on one real `redis-server`, each over a fake provider
//! that counts what is sent. Fails when `redis-server` is not installed (scripts/setup-redis):
//! a skipped test would prove nothing.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{HostPattern, Outbound, Resilience};
use super::*;

/// A `redis-server` on a free port, saving nothing; stopped (killed) on drop.
struct Server {
    port: u16,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Server {
    fn start() -> Server {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not on PATH: run scripts/setup-redis");
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Server {
            port,
            _dir: dir,
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every key and its time to live in milliseconds.
    async fn keys(&self) -> Vec<(String, i64)> {
        let client = redis::Client::open(self.url()).expect("url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .expect("KEYS");
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .expect("PTTL");
            out.push((key, ttl));
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A provider that answers `status` after `latency`, counting what it is sent and the most
/// requests it had at once.
#[derive(Default)]
struct Provider {
    sent: AtomicUsize,
    now: AtomicUsize,
    most_at_once: AtomicUsize,
}

/// One "process": its own request cache on `url` over its own fake transport to `provider`.
fn process(url: &str, provider: &Arc<Provider>, status: u16, latency: Duration) -> Outbound {
    let provider = Arc::clone(provider);
    let transport = tower::service_fn(move |_: PreparedRequest| {
        let provider = Arc::clone(&provider);
        Box::pin(async move {
            provider.sent.fetch_add(1, Ordering::SeqCst);
            let now = provider.now.fetch_add(1, Ordering::SeqCst) + 1;
            provider.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(latency).await;
            provider.now.fetch_sub(1, Ordering::SeqCst);
            Ok(super::super::fake::ok(status, &[], "the answer"))
        }) as Sending
    });
    let options = CacheOptions {
        storage: Storage::Redis {
            url: url.to_owned(),
            prefix: "test:".into(),
        },
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(30),
        max_entries: 1,
        max_bytes: None,
    };
    let cache = RequestCache::open(options, vec![], Arc::default()).expect("a redis URL");
    let local = vec![HostPattern::new("127.0.0.1", None)];
    let policy = Policy::new(local, vec![], Duration::from_secs(5));
    Outbound::compose(
        policy,
        Resilience::default(),
        Some(Arc::new(cache)),
        transport,
        Arc::default(),
    )
}

fn request(path: &str) -> Request {
    Request {
        method: "POST".into(),
        url: format!("http://127.0.0.1:1/{path}"),
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{\"input\":\"hello\"}".to_vec(),
        timeout: None,
        deadline: None,
    }
}

async fn both(a: &Outbound, b: &Outbound, path: &str) -> (Response, Response) {
    let (x, y) = tokio::join!(
        a.send(a.prepare(request(path)).unwrap()),
        b.send(b.prepare(request(path)).unwrap())
    );
    (x.expect("an answer"), y.expect("an answer"))
}

fn stats(o: &Outbound) -> &Arc<CacheStats> {
    o.request_cache().expect("a request cache").stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_from_two_processes_at_once_is_sent_once() {
    let server = Server::start();
    let provider = Arc::default();
    let latency = Duration::from_millis(300);
    let a = process(&server.url(), &provider, 200, latency);
    let b = process(&server.url(), &provider, 200, latency);
    let (x, y) = both(&a, &b, "same").await;
    assert_eq!(provider.sent.load(Ordering::SeqCst), 1);
    assert_eq!((x.status, y.status), (200, 200));
    assert_eq!(
        (&x.body[..], &y.body[..]),
        (&b"the answer"[..], &b"the answer"[..])
    );
    // One sent, the other waited for its answer and took it from Redis.
    assert_eq!(
        [x.from_cache, y.from_cache].iter().filter(|c| **c).count(),
        1
    );
    let (sa, sb) = (stats(&a), stats(&b));
    assert_eq!(sa.hits.get() + sb.hits.get(), 1);
    assert_eq!(sa.misses.get() + sb.misses.get(), 1);
    // The entry stays for its ttl; the lock is gone.
    let keys = server.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].0.starts_with("test:") && !keys[0].0.ends_with(":lock"));
    assert!(keys[0].1 > 3_500_000, "{keys:?}");
    // Later, a third process is answered at once.
    let c = process(&server.url(), &provider, 200, latency);
    assert!(
        c.send(c.prepare(request("same")).unwrap())
            .await
            .unwrap()
            .from_cache
    );
    assert_eq!(provider.sent.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_not_kept_so_the_waiting_process_sends_after_it() {
    let server = Server::start();
    let provider: Arc<Provider> = Arc::default();
    let latency = Duration::from_millis(300);
    let a = process(&server.url(), &provider, 503, latency);
    let b = process(&server.url(), &provider, 503, latency);
    let (x, y) = both(&a, &b, "busy").await;
    assert_eq!((x.status, y.status), (503, 503));
    assert!(!x.from_cache && !y.from_cache);
    // Both sent, one after the other: the second waited for the first's lock.
    assert_eq!(provider.sent.load(Ordering::SeqCst), 2);
    assert_eq!(provider.most_at_once.load(Ordering::SeqCst), 1);
    assert_eq!(server.keys().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_kept_for_negative_ttl_and_answers_the_other_process() {
    let server = Server::start();
    let provider: Arc<Provider> = Arc::default();
    let a = process(&server.url(), &provider, 404, Duration::ZERO);
    let b = process(&server.url(), &provider, 404, Duration::ZERO);
    let first = a
        .send(a.prepare(request("missing")).unwrap())
        .await
        .unwrap();
    assert_eq!((first.status, first.from_cache), (404, false));
    let again = b
        .send(b.prepare(request("missing")).unwrap())
        .await
        .unwrap();
    assert_eq!((again.status, again.from_cache), (404, true));
    assert_eq!(provider.sent.load(Ordering::SeqCst), 1);
    assert_eq!(stats(&b).negative_hits.get(), 1);
    // Kept for negative_ttl (30 s), not ttl (1 h): Redis expires it.
    let keys = server.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!((25_000..=30_000).contains(&keys[0].1), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_every_request_is_sent_and_none_fails() {
    // Nothing listens there.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let provider: Arc<Provider> = Arc::default();
    let a = process(&url, &provider, 200, Duration::from_millis(50));
    let b = process(&url, &provider, 200, Duration::from_millis(50));
    let (x, y) = both(&a, &b, "same").await;
    assert_eq!((x.status, y.status), (200, 200));
    assert_eq!(provider.sent.load(Ordering::SeqCst), 2);
    assert_eq!(stats(&a).unreachable.get(), 1);
    assert_eq!(stats(&b).unreachable.get(), 1);
    assert_eq!(stats(&a).misses.get(), 1);

    // Redis lost mid-run: answered from it while it runs, sent once it is gone.
    let mut server = Server::start();
    let c = process(&server.url(), &provider, 200, Duration::ZERO);
    let sent = provider.sent.load(Ordering::SeqCst);
    c.send(c.prepare(request("kept")).unwrap()).await.unwrap();
    assert!(
        c.send(c.prepare(request("kept")).unwrap())
            .await
            .unwrap()
            .from_cache
    );
    server.stop();
    for _ in 0..3 {
        let answer = c.send(c.prepare(request("kept")).unwrap()).await.unwrap();
        assert_eq!((answer.status, answer.from_cache), (200, false));
    }
    assert_eq!(provider.sent.load(Ordering::SeqCst), sent + 4);
    assert_eq!(stats(&c).unreachable.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_given_up_frees_its_lock_so_the_other_process_does_not_wait_for_it() {
    let server = Server::start();
    let provider: Arc<Provider> = Arc::default();
    let a = process(&server.url(), &provider, 200, Duration::from_secs(30));
    let b = process(&server.url(), &provider, 200, Duration::ZERO);
    let sending = tokio::spawn(a.send(a.prepare(request("slow")).unwrap()));
    let until = Instant::now() + Duration::from_secs(5);
    while provider.sent.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "a never sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The record timed out (its future dropped): its lock (60 s) goes with it.
    sending.abort();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        b.send(b.prepare(request("slow")).unwrap()),
    )
    .await
    .expect("b did not wait for the lock to expire")
    .unwrap();
    assert_eq!((answer.status, answer.from_cache), (200, false));
    assert_eq!(provider.sent.load(Ordering::SeqCst), 2);
}
