//! Adapting to the provider's rate limit: the openai plugin against the mock provider limited to
//! R requests a second, with no configured limit and capacity far above what R allows. The
//! host paces its requests by the provider's headers (or, without them, by its 429s): every
//! record ends in the output, and the provider refuses few requests.

use std::time::{Duration, Instant};

use serde_json::json;
use waio_mock_provider::LimitHeaders;
use waio_tests::*;

/// The provider's limit, requests per second.
const R: u64 = 40;
/// Requests in flight at most: the first burst, before the provider has said anything.
const CAPACITY: u64 = 64;
/// Records per run: about four seconds' worth at R.
const RECORDS: usize = 160;

/// Runs the openai plugin over `RECORDS` tickets against a mock limited to `R`/s that tells
/// clients about the limit with `headers`; returns the outcome, the mock's stats and how long
/// the run took.
async fn limited_run(headers: LimitHeaders) -> (Outcome, waio_mock_provider::MockStats, Duration) {
    let provider = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 5,
        rate_limit: Some(R),
        rate_limit_headers: headers,
        ..MockConfig::default()
    })
    .await;
    let p = Pipeline::new();
    let lines: Vec<String> = (0..RECORDS)
        .map(|i| json!({"id": i, "text": format!("ticket {i}")}).to_string())
        .collect();
    p.input(&lines);
    // 64 in flight at 5 ms each could send over 10,000 requests a second: 250 x R.
    let operator = format!("allowed_hosts = [\"127.0.0.1\"]\ncapacity = {CAPACITY}\ntimeout = \"60s\"\non_failure = \"dead-letter\"\nmax_retries = 10\n[operator.retry]\ninitial_delay = \"50ms\"\nmax_delay = \"2s\"");
    let config = format!("base_url = \"{}/v1\"\nmodel = \"m\"", provider.url());
    let started = Instant::now();
    let out = p
        .run(&one_operator(&plugin("openai"), &operator, &config, ""))
        .await;
    let took = started.elapsed();
    let op = &out.summary().operators[0];
    eprintln!(
        "{headers:?}: {took:?}, held {} ({:.1} s), retries {}, mock {:?}",
        op.http_held,
        op.http_held_s,
        op.http_retries,
        provider.stats()
    );
    (out, provider.stats(), took)
}

/// Every ticket once in the output, none dead-lettered.
fn every_record_in_the_output(out: &Outcome) {
    assert!(
        out.dead.is_empty(),
        "{:?}",
        &out.dead[..out.dead.len().min(3)]
    );
    let mut ids: Vec<i64> = out.output.iter().filter_map(|o| o["id"].as_i64()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..RECORDS as i64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_providers_headers_requests_settle_near_its_limit_with_few_429s() {
    let (out, stats, took) = limited_run(LimitHeaders::All).await;
    every_record_in_the_output(&out);
    // Before the first answer nothing is known: the first burst is the operator's capacity,
    // and what it has above R is refused. After that the headers say exactly what each 1-s
    // window has left and when it resets, and the host counts the requests sent since each
    // answer, so a 429 takes a race the host cannot see (an answer overtaken by a later one, a
    // window ending between the mock's count and its header). Unpaced, this run would provoke
    // thousands; the first burst's excess and a handful is the bound.
    assert!(
        stats.rate_limited <= CAPACITY - R + 5,
        "{} requests refused with 429: {stats:?}",
        stats.rate_limited
    );
    // Held, not refused: the host waited for the windows to reset.
    let op = &out.summary().operators[0];
    assert!(op.http_held > 0, "nothing was held");
    // About R a second: 160 records at 40/s take about 4 s (3 whole windows and parts of the
    // first and last). The mock refuses what is above R, so the run cannot be faster; the
    // upper bound checks that pacing did not hold the run far below R (the benchmark,
    // scripts/bench-rate-limits, measures how near).
    assert!(
        took >= Duration::from_millis(2900),
        "{RECORDS} records in {took:?}: faster than {R}/s"
    );
    assert!(
        took < Duration::from_secs(12),
        "{RECORDS} records in {took:?}: far below {R}/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bare_429s_alone_every_record_still_ends_in_the_output() {
    let (out, stats, took) = limited_run(LimitHeaders::None).await;
    every_record_in_the_output(&out);
    // No header says anything: the 429s drive an estimate of the rate (AIMD). Unpaced, 64
    // requests in flight at 5 ms each would be refused thousands of times over the run; the
    // estimate keeps the refusals to a share of the records.
    assert!(
        stats.rate_limited <= RECORDS as u64,
        "{} requests refused with 429 for {RECORDS} records: {stats:?}",
        stats.rate_limited
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}
