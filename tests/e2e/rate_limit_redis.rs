//! Limits shared by several processes through a real `redis-server` on 127.0.0.1.
//!
//! First the library: two `RedisAllowance`s under one name (two processes' view, each with its
//! own connection) together grant at most the limit; without Redis they go on at their fallback
//! share and come back once it answers again. Then two `waio run` processes with the same
//! manifest against one HTTP server that records arrival times.
//!
//! Every test fails when `redis-server` is not installed: scripts/test runs scripts/setup-redis
//! first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use waio::outbound::rate_limit::{
    Acquiring, Algorithm, Allowance, RateLimitOptions, RedisAllowance,
};
use waio_tests::redis::RedisServer;
use waio_tests::*;

/// A stand-in for the local fallback share: counts what it is asked for and paces it loosely
/// (10 ms per acquisition), so that a loop over it is not a hot loop.
#[derive(Default)]
struct CountingFallback {
    calls: AtomicU64,
}

impl Allowance for CountingFallback {
    fn acquire(&self, _requests: u32, _tokens: u64) -> Acquiring<'_> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        })
    }
}

fn requests_per_second(rps: f64, algorithm: Algorithm) -> RateLimitOptions {
    RateLimitOptions {
        requests_per_second: Some(rps),
        algorithm,
        ..RateLimitOptions::default()
    }
}

/// A limit name no other test (or earlier run against the same server) uses.
fn unique_name(test: &str) -> String {
    format!("{test}-{}-{:?}", std::process::id(), Instant::now())
}

/// One process's view: its own allowance (own connection) and fallback.
fn process(
    redis_url: &str,
    name: &str,
    options: &RateLimitOptions,
) -> (Arc<RedisAllowance>, Arc<CountingFallback>) {
    let fallback = Arc::new(CountingFallback::default());
    let allowance = RedisAllowance::new(
        redis_url,
        name,
        options.clone(),
        0.5,
        Arc::clone(&fallback) as Arc<dyn Allowance>,
    )
    .expect("a good URL");
    (Arc::new(allowance), fallback)
}

/// Runs `workers` loops of `acquire(1, 0)` on `allowance` until `until`; the grant times go
/// into `log`.
fn hammer(
    allowance: &Arc<RedisAllowance>,
    workers: usize,
    until: Instant,
    log: &Arc<Mutex<Vec<Instant>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let allowance = Arc::clone(allowance);
            let log = Arc::clone(log);
            tokio::spawn(async move {
                while Instant::now() < until {
                    allowance.acquire(1, 0).await;
                    log.lock().expect("log").push(Instant::now());
                }
            })
        })
        .collect()
}

/// The most grants within any `window` of the sorted `times`.
fn most_in_any(times: &[Instant], window: Duration) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn keys_in(redis_url: &str) -> i64 {
    let client = ::redis::Client::open(redis_url).expect("url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    ::redis::cmd("DBSIZE")
        .query_async(&mut connection)
        .await
        .expect("DBSIZE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_token_bucket_get_the_limit_together_and_leave_no_keys() {
    let server = RedisServer::start();
    let options = requests_per_second(20.0, Algorithm::TokenBucket);
    let name = unique_name("bucket");
    let (a, a_fallback) = process(&server.url(), &name, &options);
    let (b, b_fallback) = process(&server.url(), &name, &options);
    let a_log = Arc::default();
    let b_log = Arc::default();
    let started = Instant::now();
    let until = started + Duration::from_millis(2500);
    let mut tasks = hammer(&a, 4, until, &a_log);
    tasks.extend(hammer(&b, 4, until, &b_log));
    for task in tasks {
        task.await.expect("worker");
    }
    let took = started.elapsed().as_secs_f64();
    let (a_grants, b_grants) = (a_log.lock().unwrap().len(), b_log.lock().unwrap().len());
    // A burst of 20 (one second's worth), then 20/s, whoever asks.
    let most = 20.0 + 20.0 * took;
    let total = (a_grants + b_grants) as f64;
    assert!(
        total <= most + 1.0,
        "{total} grants in {took:.2} s, the limit allows {most:.0}"
    );
    assert!(
        total >= 0.8 * (20.0 + 20.0 * 2.5),
        "only {total} grants in {took:.2} s: the limit was not used"
    );
    assert!(
        a_grants > 10 && b_grants > 10,
        "one process was starved: {a_grants} and {b_grants}"
    );
    assert_eq!(a_fallback.calls.load(Ordering::Relaxed), 0);
    assert_eq!(b_fallback.calls.load(Ordering::Relaxed), 0);
    assert!(!a.on_fallback() && !b.on_fallback());

    // The keys expire once they no longer matter: the bucket refills within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(keys_in(&server.url()).await, 0, "keys were left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_sliding_window_never_exceed_it_in_any_second() {
    let server = RedisServer::start();
    let options = requests_per_second(15.0, Algorithm::SlidingWindow);
    let name = unique_name("window");
    let (a, _) = process(&server.url(), &name, &options);
    let (b, _) = process(&server.url(), &name, &options);
    let log = Arc::default();
    let until = Instant::now() + Duration::from_millis(3000);
    let mut tasks = hammer(&a, 4, until, &log);
    tasks.extend(hammer(&b, 4, until, &log));
    for task in tasks {
        task.await.expect("worker");
    }
    let mut times = log.lock().unwrap().clone();
    times.sort();
    // Grants are timed here, a little after Redis made them: a slightly shorter window.
    let most = most_in_any(&times, Duration::from_millis(950));
    assert!(
        most <= 15,
        "{most} grants within one second, the limit is 15"
    );
    assert!(
        times.len() >= 40,
        "only {} grants in 3 s at 15/s: the window was not used",
        times.len()
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(keys_in(&server.url()).await, 0, "keys were left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_beyond_the_bucket_are_taken_in_pieces_within_the_rate() {
    let server = RedisServer::start();
    // 200 tokens/s, a bucket of 200: 2 x 300 tokens need (600 - 200) / 200 = 2 s.
    let options = RateLimitOptions {
        tokens_per_minute: Some(12_000),
        ..RateLimitOptions::default()
    };
    let name = unique_name("tokens");
    let (a, _) = process(&server.url(), &name, &options);
    let (b, _) = process(&server.url(), &name, &options);
    let started = Instant::now();
    tokio::join!(a.acquire(1, 300), b.acquire(1, 300));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "600 tokens at 200/s with a bucket of 200 took {took:?}"
    );
    assert_eq!(a.fallback_acquisitions() + b.fallback_acquisitions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_both_go_on_at_their_fallback_share_and_come_back_when_it_returns() {
    let mut server = RedisServer::start();
    let options = requests_per_second(20.0, Algorithm::TokenBucket);
    let name = unique_name("outage");
    let (a, a_fallback) = process(&server.url(), &name, &options);
    let (b, b_fallback) = process(&server.url(), &name, &options);
    let log = Arc::default();
    let until = Instant::now() + Duration::from_secs(30);
    let mut tasks = hammer(&a, 3, until, &log);
    tasks.extend(hammer(&b, 3, until, &log));
    let grants = || log.lock().unwrap().len();

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(grants() > 10, "no grants through Redis: {}", grants());
    assert!(!a.on_fallback() && !b.on_fallback());

    server.stop();
    let stopped = Instant::now();
    wait_for("both on their fallback", Duration::from_secs(3), || {
        a.on_fallback() && b.on_fallback()
    })
    .await;
    // Within a call's timeout of the first failing call (no acquisition stalls long).
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
    let before = grants();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(grants() > before + 10, "no grants on the fallback share");
    assert!(a_fallback.calls.load(Ordering::Relaxed) > 0);
    assert!(b_fallback.calls.load(Ordering::Relaxed) > 0);

    server.restart();
    wait_for("both back on Redis", Duration::from_secs(5), || {
        !a.on_fallback() && !b.on_fallback()
    })
    .await;
    let on_fallback = a.fallback_acquisitions() + b.fallback_acquisitions();
    let before = grants();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(grants() > before + 5, "no grants after Redis came back");
    // At most the acquisitions that were already waiting on the fallback when Redis came back.
    assert!(
        a.fallback_acquisitions() + b.fallback_acquisitions() <= on_fallback + 6,
        "acquisitions still went to the fallback once Redis was back"
    );
    for task in tasks {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_at_start_uses_the_fallback_at_once() {
    // A port nothing listens on (just freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let options = requests_per_second(5.0, Algorithm::TokenBucket);
    let (a, fallback) = process(&url, &unique_name("unreachable"), &options);
    let started = Instant::now();
    a.acquire(1, 0).await;
    a.acquire(1, 0).await;
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert!(a.on_fallback());
    assert_eq!(fallback.calls.load(Ordering::Relaxed), 2);
    assert_eq!(a.fallback_acquisitions(), 2);
}

/// Polls `condition` every 20 ms on tokio's clock; panics with `what` after `limit`.
async fn wait_for(what: &str, limit: Duration, condition: impl Fn() -> bool) {
    let until = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Two `waio run` processes with the same manifest ----
//
// These need the manifest keys (`rate_limit.backend = "redis"`, `rate_limit.redis_url`,
// `rate_limit.instances`) and their wiring into the outbound stack.

const RATE: f64 = 20.0;

/// A pipeline of `records` behave records (ids `{prefix}{i}`) calling `server`, limited to
/// RATE requests/s shared through Redis at `redis_url` by 2 instances.
fn shared_limit_pipeline(
    server: &ScriptedServer,
    redis_url: &str,
    prefix: &str,
    records: usize,
) -> Pipeline {
    let p = Pipeline::new();
    let lines: Vec<String> = (0..records)
        .map(|i| {
            let id = format!("{prefix}{i}");
            json!({"id": id, "mode": "call", "url": server.url("ok", &id)}).to_string()
        })
        .collect();
    p.input(&lines);
    let operator = format!(
        "allowed_hosts = [\"127.0.0.1\"]\non_failure = \"dead-letter\"\ncapacity = 8\n\
         rate_limit.requests_per_second = {RATE}\nrate_limit.backend = \"redis\"\n\
         rate_limit.redis_url = \"{redis_url}\"\nrate_limit.instances = 2\n"
    );
    p.manifest(&one_operator(&plugin("behave"), &operator, "", ""));
    p
}

/// Every id `{prefix}0..records` once in the output, none dead-lettered.
fn every_record_in_the_output(p: &Pipeline, prefix: &str, records: usize) {
    let mut ids = ids(&read_jsonl(&p.path("out.jsonl")));
    ids.sort();
    let mut expected: Vec<String> = (0..records).map(|i| format!("{prefix}{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(read_jsonl(&p.path("dead.jsonl")).is_empty());
}

/// Arrivals beyond what RATE/s plus `burst` allows since the first one.
fn arrivals_beyond(server: &ScriptedServer, burst: f64) -> Vec<String> {
    let arrivals = server.arrivals();
    let Some(first) = arrivals.first().map(|a| a.at) else {
        return Vec::new();
    };
    arrivals
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            (*i + 1) as f64 > burst + 1.0 + RATE * a.at.duration_since(first).as_secs_f64()
        })
        .map(|(i, a)| format!("#{i} {} at {:?}", a.id, a.at.duration_since(first)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waio_processes_sharing_a_limit_through_redis_stay_within_it_together() {
    let redis = RedisServer::start();
    let server = ScriptedServer::start().await;
    let records = 50;
    let a = shared_limit_pipeline(&server, &redis.url(), "a", records);
    let b = shared_limit_pipeline(&server, &redis.url(), "b", records);
    let started = Instant::now();
    let mut a_run = spawn_waio(a.dir.path(), &["run", "pipeline.toml"]);
    let mut b_run = spawn_waio(b.dir.path(), &["run", "pipeline.toml"]);
    let a_code =
        tokio::task::spawn_blocking(move || wait_exit(&mut a_run, Duration::from_secs(60)));
    let b_code = wait_exit_async(&mut b_run).await;
    assert_eq!(a_code.await.expect("wait"), 0, "{}", stderr(&a));
    assert_eq!(b_code, 0, "{}", stderr(&b));
    let took = started.elapsed();
    every_record_in_the_output(&a, "a", records);
    every_record_in_the_output(&b, "b", records);
    assert_eq!(server.arrivals().len(), 2 * records);
    // 100 requests at 20/s with a burst of 20: at least 4 s together (alone each would need 1.5 s).
    assert!(took >= Duration::from_secs(4), "{took:?}");
    let beyond = arrivals_beyond(&server, RATE);
    assert!(beyond.is_empty(), "beyond the shared limit: {beyond:?}");
    assert!(!stderr(&a).contains("out of reach"), "{}", stderr(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_mid_run_both_processes_go_on_at_their_share_and_say_so() {
    let mut redis = RedisServer::start();
    let server = ScriptedServer::start().await;
    let records = 60;
    let a = shared_limit_pipeline(&server, &redis.url(), "a", records);
    let b = shared_limit_pipeline(&server, &redis.url(), "b", records);
    let mut a_run = spawn_waio(a.dir.path(), &["run", "pipeline.toml"]);
    let mut b_run = spawn_waio(b.dir.path(), &["run", "pipeline.toml"]);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    redis.stop();
    let a_code =
        tokio::task::spawn_blocking(move || wait_exit(&mut a_run, Duration::from_secs(60)));
    let b_code = wait_exit_async(&mut b_run).await;
    assert_eq!(a_code.await.expect("wait"), 0, "{}", stderr(&a));
    assert_eq!(b_code, 0, "{}", stderr(&b));
    every_record_in_the_output(&a, "a", records);
    every_record_in_the_output(&b, "b", records);
    for p in [&a, &b] {
        let text = stderr(p);
        assert!(
            text.contains("Redis is out of reach") && text.contains("share"),
            "no word of the fallback on stderr: {text}"
        );
    }
    // Each falls back to half the limit (10/s, a burst of 10): together still about the
    // limit, plus the two fallback bursts.
    let beyond = arrivals_beyond(&server, RATE + 2.0 * RATE / 2.0);
    assert!(beyond.is_empty(), "beyond the fallback shares: {beyond:?}");
}

fn stderr(p: &Pipeline) -> String {
    std::fs::read_to_string(p.path("stderr.log")).unwrap_or_default()
}

/// [`wait_exit`] without blocking the runtime that serves the HTTP server.
async fn wait_exit_async(child: &mut std::process::Child) -> i32 {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("waio did not exit within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
