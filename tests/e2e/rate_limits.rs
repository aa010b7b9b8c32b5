//! Rate limits against a real HTTP server on 127.0.0.1 that logs when each request arrived:
//! the server never sees more than the limit allows (requests per second plus the burst,
//! tokens per minute plus a request's worth), operators that share a limit stay within it
//! together, and waiting for the limit is backpressure: every record ends in the output, none
//! is dead-lettered. Bad options are refused by `waio check` with file, line and key.

use std::time::{Duration, Instant};

use serde_json::json;
use waio_tests::*;

/// Seconds from the first arrival to each arrival.
fn arrival_times(server: &ScriptedServer) -> Vec<f64> {
    let arrivals = server.arrivals();
    let Some(first) = arrivals.first().map(|a| a.at) else {
        return Vec::new();
    };
    arrivals
        .iter()
        .map(|a| a.at.duration_since(first).as_secs_f64())
        .collect()
}

/// Asserts that by each arrival's time `t` the server had seen at most `rate * t + allowance`
/// units, `units` per request; the timing slack allows for when the server logs an arrival.
fn within(times: &[f64], units: f64, rate: f64, allowance: f64) {
    const SLACK_S: f64 = 0.05;
    for (i, t) in times.iter().enumerate() {
        let seen = (i + 1) as f64 * units;
        let allowed = rate * (t + SLACK_S) + allowance;
        assert!(
            seen <= allowed,
            "{seen} units by {t:.3}s, more than {rate}/s + {allowance}: {times:?}"
        );
    }
}

/// `n` records for the behave plugin, each calling the scripted server once.
fn calls(server: &ScriptedServer, n: usize, extra: serde_json::Value) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut record =
                json!({"id": format!("r{i}"), "mode": "call", "url": server.url("ok", i)});
            if let (Some(record), Some(extra)) = (record.as_object_mut(), extra.as_object()) {
                record.extend(extra.clone());
            }
            record.to_string()
        })
        .collect()
}

fn every_record_in_the_output(out: &Outcome, n: usize) {
    assert!(out.dead.is_empty(), "dead letters: {:?}", out.dead);
    let mut ids = out.ids();
    ids.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_at_most_the_rate_plus_the_burst_and_waiting_is_backpressure() {
    let server = ScriptedServer::start().await;
    let p = Pipeline::new();
    let n = 24;
    p.input(&calls(&server, n, json!({})));
    // Capacity 8 at 5/s: the queue fills and waits; the timeout (30 s) is far.
    let operator = "allowed_hosts = [\"127.0.0.1\"]\ncapacity = 8\non_failure = \"dead-letter\"\non_timeout = \"dead-letter\"\nrate_limit.requests_per_second = 5\nrate_limit.burst = 2";
    let started = Instant::now();
    let out = p
        .run(&one_operator(&plugin("behave"), operator, "", ""))
        .await;
    let took = started.elapsed();
    every_record_in_the_output(&out, n);
    let times = arrival_times(&server);
    assert_eq!(times.len(), n);
    within(&times, 1.0, 5.0, 2.0);
    // The limit did bind: 24 requests at 5/s after a burst of 2 take 4.4 s.
    assert!(took >= Duration::from_millis(4000), "{took:?}");
    let op = &out.summary().operators[0];
    assert!(op.rate_limited_requests >= (n - 8) as u64, "{op:?}");
    assert!(op.rate_limit_wait_seconds > 1.0, "{op:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_window_allows_no_more_than_the_rate_in_any_second() {
    let server = ScriptedServer::start().await;
    let p = Pipeline::new();
    let n = 15;
    p.input(&calls(&server, n, json!({})));
    let operator = "allowed_hosts = [\"127.0.0.1\"]\ncapacity = 20\nrate_limit.requests_per_second = 5\nrate_limit.algorithm = \"sliding_window\"";
    let out = p
        .run(&one_operator(&plugin("behave"), operator, "", ""))
        .await;
    every_record_in_the_output(&out, n);
    let times = arrival_times(&server);
    // At most 5 arrivals in any 1 s window (a little less, for the server's own timing).
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().filter(|u| **u < t + 0.95).count();
        assert!(
            in_window <= 5,
            "{in_window} within a second of {t}: {times:?}"
        );
    }
    assert!(
        times.last().copied().unwrap_or_default() >= 1.9,
        "{times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_sharing_a_limit_stay_within_it_together() {
    let server = ScriptedServer::start().await;
    let p = Pipeline::new();
    let n = 10;
    p.input(
        &(0..n)
            .map(|i| json!({"id": format!("r{i}")}).to_string())
            .collect::<Vec<_>>(),
    );
    let lookup = plugin("http-lookup");
    let operator = |name: &str| {
        format!(
            "[[operator]]\nname = \"{name}\"\nplugin = \"{}\"\nallowed_hosts = [\"127.0.0.1\"]\ncapacity = 10\nrate_limit.use = \"provider\"\n[operator.config]\nurl = \"http://{}/ok/{name}-{{id}}\"\noutput_field = \"{name}\"\n",
            lookup.display(),
            server.addr
        )
    };
    let toml = format!(
        "[source]\nkind = \"file\"\npath = \"input.jsonl\"\n\n[rate_limits.provider]\nrequests_per_second = 4\nburst = 1\n\n{}\n{}\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n\n[dead_letter]\npath = \"dead.jsonl\"\n",
        operator("first"),
        operator("second")
    );
    let out = p.run(&toml).await;
    every_record_in_the_output(&out, n);
    assert!(
        out.output
            .iter()
            .all(|o| o["first"]["status"] == 200 && o["second"]["status"] == 200),
        "{:?}",
        out.output
    );
    let times = arrival_times(&server);
    assert_eq!(times.len(), 2 * n);
    // Together: 4/s after a burst of 1, not 4/s each.
    within(&times, 1.0, 4.0, 1.0);
    assert!(
        times.last().copied().unwrap_or_default() >= 4.0,
        "{times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_hold_with_the_usage_reported() {
    let server = ScriptedServer::start().await;
    let p = Pipeline::new();
    let n = 12;
    // Each record reports 50 input and 50 output tokens: 100 a request. Its body is estimated
    // at about as much: a quarter of its ~200 bytes, and its max_tokens.
    let body = json!({"max_tokens": 50, "prompt": "a".repeat(170)}).to_string();
    p.input(&calls(
        &server,
        n,
        json!({"tokens": 50, "method": "POST", "body": body}),
    ));
    // 24000 tokens a minute: 400 a second, a bucket of one second's worth.
    let operator =
        "allowed_hosts = [\"127.0.0.1\"]\ncapacity = 12\nrate_limit.tokens_per_minute = 24000";
    let out = p
        .run(&one_operator(&plugin("behave"), operator, "", ""))
        .await;
    every_record_in_the_output(&out, n);
    let op = &out.summary().operators[0];
    assert_eq!(op.input_tokens + op.output_tokens, 100 * n as u64);
    let times = arrival_times(&server);
    assert_eq!(times.len(), n);
    // Within the rate, the bucket and one request's worth.
    within(&times, 100.0, 400.0, 400.0 + 100.0);
    assert!(
        times.last().copied().unwrap_or_default() >= 1.5,
        "{times:?}"
    );
    assert!(op.rate_limited_requests > 0, "{op:?}");
}

#[test]
fn check_shows_the_limit_and_warns_when_queued_records_would_time_out() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    let extra = "capacity = 100\ntimeout = \"10s\"\nrate_limit.requests_per_second = 2\nrate_limit.tokens_per_minute = 6000";
    p.manifest(&one_operator(&plugin("behave"), extra, "", ""));
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "rate limit: 2 requests/s, 6000 tokens/min, token_bucket, in this process, adaptive"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("a full queue of 100 records takes 50s to get through the rate limit, longer than the timeout (10s)"),
        "{stdout}"
    );
    // A limit the queue gets through in time: no warning.
    let extra = "capacity = 10\nrate_limit.requests_per_second = 50";
    p.manifest(&one_operator(&plugin("behave"), extra, "", ""));
    let (code, stdout, _) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("rate limit: 50 requests/s"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[test]
fn bad_options_are_refused_with_file_line_and_key() {
    let p = Pipeline::new();
    p.input(&[json!({"id": 1}).to_string()]);
    // The operator's extra lines start on line 12 of `one_operator`'s manifest.
    let cases = [
        (
            "rate_limit.requests_per_second = -50",
            12,
            "operator[0].rate_limit.requests_per_second",
            "must be more than 0",
        ),
        (
            "rate_limit.requests_per_second = \"50 per sec\"",
            12,
            "operator[0].rate_limit.requests_per_second",
            "such as 50 (no unit, no quotes)",
        ),
        (
            "rate_limit.requests_per_second = 5\nrate_limit.algorithm = \"leaky_bucket\"",
            13,
            "operator[0].rate_limit.algorithm",
            "expected one of \"token_bucket\", \"sliding_window\"",
        ),
        (
            "rate_limit.use = \"openai\"",
            12,
            "operator[0].rate_limit.use",
            "unknown rate limit \"openai\"",
        ),
    ];
    for (extra, line, key, message) in cases {
        p.manifest(&one_operator(&plugin("behave"), extra, "", ""));
        let (code, _, stderr) = run_waio(p.dir.path(), &["check", "pipeline.toml"]);
        assert_ne!(code, 0, "{extra}");
        assert!(
            stderr.contains(&format!("pipeline.toml:{line}:"))
                && stderr.contains(key)
                && stderr.contains(message),
            "{extra}: {stderr}"
        );
    }
}

/// Waiting for the limit is backpressure all the way to the source: fed on stdin faster than
/// the limit lets records through, waio stops reading, and the writer blocks on a full pipe
/// instead of waio buffering the whole input. (What waio holds at most, in records: the stdin
/// reader's channel, 1024; a batch being built, 4096; the channel between source and operator,
/// 2 batches of 4096; what the operator reads ahead of its queue, 3 batches and up to one more
/// taken just before it stops taking; its capacity; plus the pipe's 64 KiB, some 600 lines of
/// about 100 bytes: about 30,300 in all. In bytes, each batch is closed at 256 KiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_fed_faster_than_the_limit_is_not_read_ahead_without_bound() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let server = ScriptedServer::start().await;
    let p = Pipeline::new();
    let n = 60_000;
    let lines = calls(&server, n, json!({}));
    let operator = "allowed_hosts = [\"127.0.0.1\"]\ncapacity = 8\nrate_limit.requests_per_second = 5\nrate_limit.burst = 1";
    p.manifest(&one_operator(&plugin("behave"), operator, "", "").replace(
        "kind = \"file\"\npath = \"input.jsonl\"",
        "kind = \"stdin\"",
    ));
    let mut child = spawn_waio(p.dir.path(), &["run", "pipeline.toml"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let written = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&written);
    // The writer blocks once the pipe is full; it ends when waio is killed (a broken pipe).
    let writer = std::thread::spawn(move || {
        for line in lines {
            if writeln!(stdin, "{line}").is_err() {
                return;
            }
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read_ahead = written.load(Ordering::Relaxed);
    let arrived = server.arrivals().len();
    signal(&child, "KILL");
    let _ = child.wait();
    let _ = writer.join();
    // About 5/s after the first: the limit held the requests back.
    assert!(arrived <= 5 * 3 + 2, "{arrived} requests in 3 s");
    assert!(
        read_ahead < 31_000,
        "{read_ahead} of {n} lines were taken while {arrived} requests went out"
    );
}
