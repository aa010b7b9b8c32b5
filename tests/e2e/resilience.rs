//! Request retries, the circuit breaker and the fallback provider against real HTTP servers on
//! 127.0.0.1: what each server received is checked against the policy, and every input record
//! ends up exactly once in the output or the dead letters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use waio_tests::*;

/// Runs the behave plugin in mode `call` over `records` (id, script of the scripted server),
/// failures and timeouts dead-lettered, with `extra` added to the operator.
async fn matrix(records: &[(&str, &str)], extra: &str) -> (Outcome, ScriptedServer, Duration) {
    let server = ScriptedServer::start().await;
    let p = Pipeline::new();
    let lines: Vec<String> = records
        .iter()
        .map(|(id, script)| {
            json!({"id": id, "mode": "call", "url": server.url(script, id)}).to_string()
        })
        .collect();
    p.input(&lines);
    let operator = format!(
        "allowed_hosts = [\"127.0.0.1\"]\non_failure = \"dead-letter\"\non_timeout = \"dead-letter\"\n{extra}"
    );
    let started = Instant::now();
    let out = p
        .run(&one_operator(&plugin("behave"), &operator, "", ""))
        .await;
    let took = started.elapsed();
    out.summary();
    (out, server, took)
}

/// Every id once, in the output or the dead letters, never both.
fn every_record_once(out: &Outcome, records: &[(&str, &str)]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for id in out.ids() {
        *seen.entry(id).or_default() += 1;
    }
    for letter in &out.dead {
        *seen
            .entry(letter["payload"]["id"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        records.iter().map(|(id, _)| (id.to_string(), 1)).collect();
    assert_eq!(
        seen, expected,
        "output {:?}, dead letters {:?}",
        out.output, out.dead
    );
}

fn dead_ids(out: &Outcome) -> Vec<String> {
    out.dead
        .iter()
        .map(|l| l["payload"]["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

const RETRIES: &str =
    "max_retries = 3\n[operator.retry]\ninitial_delay = \"10ms\"\nmax_delay = \"5s\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_burst_is_retried_after_its_retry_after_and_then_succeeds() {
    let script = "429~ra=1+429~ra=1+ok";
    let records: Vec<(&str, &str)> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| (*id, script))
        .collect();
    let (out, server, _) = matrix(&records, RETRIES).await;
    every_record_once(&out, &records);
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    for (id, _) in &records {
        assert_eq!(server.count(id), 3, "record {id}: first call + 2 retries");
    }
    let gap = server.shortest_gap().expect("retries");
    assert!(
        gap >= Duration::from_millis(1000),
        "a retry came {gap:?} after a Retry-After: 1"
    );
    assert!(
        out.output.iter().all(|o| o["status"] == 200),
        "{:?}",
        out.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_after_max_retries_and_the_last_answer_decides() {
    let records = [("x", "503"), ("y", "502"), ("z", "504"), ("w", "429")];
    let (out, server, _) = matrix(&records, RETRIES).await;
    every_record_once(&out, &records);
    assert_eq!(dead_ids(&out).len(), 4);
    for (id, _) in &records {
        assert_eq!(server.count(id), 4, "record {id}: first call + max_retries");
    }
    for letter in &out.dead {
        let error = letter["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("HTTP 5") || error.contains("HTTP 429"),
            "{error}"
        );
        assert_eq!(letter["retriable"], true, "{letter}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_never_retried() {
    let records = [
        ("bad", "400"),
        ("missing", "404"),
        ("teapot", "418"),
        ("ok", "ok"),
    ];
    let (out, server, _) = matrix(&records, RETRIES).await;
    every_record_once(&out, &records);
    assert_eq!(out.ids(), ["ok"]);
    for (id, _) in &records {
        assert_eq!(server.count(id), 1, "record {id} was sent again");
    }
    assert!(
        out.dead.iter().all(|l| l["retriable"] == false),
        "{:?}",
        out.dead
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_and_hangs_beyond_the_request_timeout_are_retried() {
    let records = [
        ("reset", "reset+reset+ok"),
        ("hang", "hang+ok"),
        ("both", "reset+hang+ok"),
    ];
    let extra = format!("http_timeout = \"300ms\"\n{RETRIES}");
    let (out, server, _) = matrix(&records, &extra).await;
    every_record_once(&out, &records);
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    assert_eq!(server.count("reset"), 3);
    assert_eq!(server.count("hang"), 2);
    assert_eq!(server.count("both"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_are_waited_for_not_retried() {
    let records = [("slow", "slow=400"), ("slower", "slow=700")];
    let (out, server, _) = matrix(&records, RETRIES).await;
    every_record_once(&out, &records);
    assert!(out.dead.is_empty());
    assert_eq!(server.count("slow"), 1);
    assert_eq!(server.count("slower"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_milliseconds_and_as_an_http_date_are_honoured() {
    let records = [("ms", "429~ms=400+ok")];
    let (out, server, _) = matrix(&records, RETRIES).await;
    every_record_once(&out, &records);
    let gap = server.shortest_gap().expect("a retry");
    assert!(
        gap >= Duration::from_millis(400) && gap < Duration::from_millis(1500),
        "retry-after-ms: 400 gave a gap of {gap:?}"
    );

    let records = [("date", "503~date=2+ok")];
    let (out, server, _) = matrix(&records, RETRIES).await;
    every_record_once(&out, &records);
    let gap = server.shortest_gap().expect("a retry");
    // An HTTP date has whole seconds: two seconds ahead is at least one second away.
    assert!(
        gap >= Duration::from_millis(1000),
        "an HTTP date 2 s ahead gave a gap of {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_delay_caps_a_long_retry_after() {
    let records = [("capped", "429~ra=30+ok")];
    let extra =
        "max_retries = 3\n[operator.retry]\ninitial_delay = \"10ms\"\nmax_delay = \"500ms\"";
    let (out, server, took) = matrix(&records, extra).await;
    every_record_once(&out, &records);
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    assert_eq!(server.count("capped"), 2);
    let gap = server.shortest_gap().expect("a retry");
    assert!(gap >= Duration::from_millis(500), "{gap:?}");
    assert!(
        took < Duration::from_secs(20),
        "waited out Retry-After: 30 ({took:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_never_goes_past_the_record_deadline() {
    // Retry-After asks for 30 s, the record has 2 s: the plugin gets the 429 at once.
    let records = [("late", "429~ra=30")];
    let extra = "timeout = \"2s\"\nmax_retries = 5\n[operator.retry]\ninitial_delay = \"10ms\"\nmax_delay = \"60s\"";
    let (out, server, took) = matrix(&records, extra).await;
    every_record_once(&out, &records);
    assert_eq!(server.count("late"), 1);
    assert_eq!(dead_ids(&out), ["late"]);
    assert!(
        out.dead[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("429"),
        "{:?}",
        out.dead
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // A hanging server with a 400 ms request timeout, a 1.5 s record: at most 4 tries fit.
    let records = [("hung", "hang")];
    let extra = "timeout = \"1500ms\"\nhttp_timeout = \"400ms\"\nmax_retries = 10\n[operator.retry]\ninitial_delay = \"10ms\"";
    let (out, server, _) = matrix(&records, extra).await;
    every_record_once(&out, &records);
    let tries = server.count("hung");
    assert!(
        (2..=4).contains(&tries),
        "{tries} tries in a 1.5 s deadline"
    );
    assert_eq!(dead_ids(&out), ["hung"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_retries_nothing_is_sent_twice() {
    let records = [("once", "503+ok"), ("limited", "429~ra=1+ok")];
    let (out, server, _) = matrix(&records, "").await;
    every_record_once(&out, &records);
    assert_eq!(server.count("once"), 1);
    assert_eq!(server.count("limited"), 1);
    assert_eq!(dead_ids(&out).len(), 2);
}

/// The openai plugin with a fallback provider and a breaker on the primary, over `records`
/// ticket lines; returns the run's outcome.
async fn outage_run(
    primary: &MockServer,
    fallback: &MockServer,
    records: usize,
    breaker: bool,
) -> Outcome {
    let p = Pipeline::new();
    let lines: Vec<String> = (0..records)
        .map(|i| json!({"id": i, "text": format!("ticket {i}")}).to_string())
        .collect();
    p.input(&lines);
    let breaker = if breaker {
        "[operator.circuit_breaker]\nfailure_threshold = \"50%\"\nwindow = \"10s\"\nminimum_calls = 5\nopen_duration = \"500ms\"\nhalf_open_calls = 2\n"
    } else {
        ""
    };
    let operator = format!(
        "allowed_hosts = [\"127.0.0.1\"]\ncapacity = 4\ntimeout = \"20s\"\non_failure = \"dead-letter\"\nmax_retries = 0\n{breaker}"
    );
    let config = format!(
        "base_url = \"{}/v1\"\nmodel = \"big\"\nfallback = {{ base_url = \"{}/v1\", model = \"small\" }}",
        primary.url(),
        fallback.url()
    );
    p.run(&one_operator(&plugin("openai"), &operator, &config, ""))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_the_breaker_opens_probes_sparingly_closes_and_the_fallback_answers() {
    let latency = MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 20,
        ..MockConfig::default()
    };
    let primary = mock_with(latency.clone()).await;
    let fallback = mock_with(latency).await;
    primary.set_down(true);
    let down_for = Duration::from_secs(2);
    let records = 1200;
    let run = outage_run(&primary, &fallback, records, true);
    let watch = async {
        // The breaker opens after minimum_calls failures, long before this.
        tokio::time::sleep(Duration::from_millis(300)).await;
        primary.reset_max_in_flight_while_down();
        tokio::time::sleep(down_for - Duration::from_millis(300)).await;
        let stats = primary.stats();
        primary.set_down(false);
        stats
    };
    let (out, while_down) = tokio::join!(run, watch);
    out.summary();

    // Nothing lost: every ticket once, none dead-lettered.
    assert!(
        out.dead.is_empty(),
        "{:?}",
        &out.dead[..out.dead.len().min(3)]
    );
    let mut ids: Vec<i64> = out.output.iter().filter_map(|o| o["id"].as_i64()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..records as i64).collect::<Vec<_>>());

    // While down: minimum_calls to open, then at most half_open_calls probes per open period.
    let periods = (down_for.as_millis() / 500 + 1) as u64;
    let bound = 5 + 2 * periods;
    assert!(
        while_down.while_down <= bound,
        "{} requests reached the primary while it was down (bound {bound})",
        while_down.while_down
    );
    assert!(
        while_down.max_in_flight_while_down <= 2,
        "{} probes at once while half-open",
        while_down.max_in_flight_while_down
    );

    // The fallback answered while the primary was down, the primary again once it was back.
    let by_model = |model: &str| out.output.iter().filter(|o| o["model"] == model).count();
    assert!(by_model("small") > 0, "the fallback never answered");
    assert!(by_model("big") > 0, "the breaker never closed again");
    let last = out.output.last().expect("outputs");
    assert_eq!(
        last["model"], "big",
        "the last records went to the fallback: {last}"
    );
    assert_eq!(by_model("small") + by_model("big"), records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_breaker_every_record_hits_the_provider_that_is_down() {
    // The comparison that makes the bound above mean something.
    let latency = MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 5,
        ..MockConfig::default()
    };
    let primary = mock_with(latency.clone()).await;
    let fallback = mock_with(latency).await;
    primary.set_down(true);
    let out = outage_run(&primary, &fallback, 100, false).await;
    assert!(out.dead.is_empty());
    assert_eq!(out.output.len(), 100);
    assert_eq!(primary.stats().while_down, 100);
    assert!(out.output.iter().all(|o| o["model"] == "small"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_the_retry_budget_keeps_retries_from_multiplying_load() {
    // 300 records against a server that answers 503 to everything: 3 retries each would be
    // 1200 requests. The budget allows 20% of successes (none) plus 10 retries a second over
    // its 10 s window: 100 retries, so at most 400 requests.
    let ids: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    let records: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "503")).collect();
    let extra = format!("capacity = 50\n{RETRIES}\nbudget_ratio = 0.2");
    let (out, server, took) = matrix(&records, &extra).await;
    every_record_once(&out, &records);
    assert_eq!(out.dead.len(), 300);
    let requests = server.arrivals().len();
    assert!(
        took < Duration::from_secs(10),
        "the run outlived the budget window: {took:?}"
    );
    assert!(
        (300..=400).contains(&requests),
        "{requests} requests for 300 records"
    );
    let op = &out.summary().operators[0];
    assert!(op.http_retries_refused > 0, "the budget refused nothing");
    assert_eq!(op.http_retries as usize, requests - 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_an_outage_are_replayed_after_recovery_into_the_output() {
    // No fallback: during the outage every ticket is a dead letter, most of them failed fast by
    // the open breaker (the plugin sees `unavailable`). After recovery, the replay brings every
    // one of them to the output.
    let provider = mock_with(MockConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        latency_ms: 5,
        ..MockConfig::default()
    })
    .await;
    provider.set_down(true);
    let p = Pipeline::new();
    let records = 60;
    let lines: Vec<String> = (0..records)
        .map(|i| json!({"id": i, "text": format!("ticket {i}")}).to_string())
        .collect();
    p.input(&lines);
    let operator = "allowed_hosts = [\"127.0.0.1\"]\ncapacity = 4\non_failure = \"dead-letter\"\nmax_retries = 1\n[operator.retry]\ninitial_delay = \"10ms\"\n[operator.circuit_breaker]\nminimum_calls = 5\nopen_duration = \"30s\"";
    let config = format!("base_url = \"{}/v1\"\nmodel = \"big\"", provider.url());
    p.manifest(&one_operator(&plugin("openai"), operator, &config, ""));
    let dir = p.dir.path().to_path_buf();
    let (code, _, stderr) =
        tokio::task::spawn_blocking(move || run_waio(&dir, &["run", "pipeline.toml", "--quiet"]))
            .await
            .expect("run");
    assert_eq!(code, 0, "{stderr}");
    let dead = read_jsonl(&p.path("dead.jsonl"));
    assert_eq!(dead.len(), records, "every ticket failed during the outage");
    assert!(read_jsonl(&p.path("out.jsonl")).is_empty());
    let failed_fast = dead
        .iter()
        .filter(|l| {
            l["error"]
                .as_str()
                .unwrap_or_default()
                .contains("unavailable")
        })
        .count();
    assert!(
        failed_fast >= records - 10,
        "only {failed_fast} failed fast: {:?}",
        dead[0]
    );
    // The breaker opens once minimum_calls requests (each with its retry) have failed; those
    // already in flight (capacity - 1 more) finish theirs: (5 + 3) x 2 at most.
    assert!(provider.stats().while_down <= 16, "{:?}", provider.stats());

    provider.set_down(false);
    let dir = p.dir.path().to_path_buf();
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        run_waio(
            &dir,
            &["dead-letters", "replay", "dead.jsonl", "pipeline.toml"],
        )
    })
    .await
    .expect("replay");
    assert_eq!(code, 0, "{stderr}");
    let replayed = read_jsonl(&p.path("dead.replayed.jsonl"));
    let ids: Vec<i64> = replayed.iter().filter_map(|o| o["id"].as_i64()).collect();
    assert_eq!(
        ids,
        (0..records as i64).collect::<Vec<_>>(),
        "in input order, each once"
    );
    assert!(
        replayed.iter().all(|o| o["label"].is_string()),
        "{:?}",
        replayed[0]
    );
    assert!(read_jsonl(&p.path("dead.again.jsonl")).is_empty());
}
