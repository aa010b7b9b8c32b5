use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::cost::{BudgetOptions, CostControl, PriceTable, SpendState};
use crate::outbound::breaker::BreakerState;
use crate::outbound::{OutboundStats, Outcome};
use crate::telemetry::{OperatorTelemetry, PipelineTelemetry, PluginVersion};

fn registry() -> Arc<PipelineTelemetry> {
    let mut t = PipelineTelemetry::new("p", Instant::now(), false);
    let op = OperatorTelemetry::new("op");
    op.records_in.add(3);
    op.records_out.add(2);
    op.failed_fatal.inc();
    op.latency_us.record(1500);
    op.latency_us.record(2_000_000);
    op.set_plugin(PluginVersion {
        path: "plugins/a.wasm".into(),
        digest: "abc123".into(),
    });
    op.result_cache_on.set();
    op.result_cache.hits.add(4);
    op.models.add("gpt-x", 10, 5, Some(0.25));
    let stats = Arc::new(OutboundStats::default());
    stats
        .endpoint("http://127.0.0.1:80")
        .answered(Duration::from_millis(3), Outcome::Status2xx);
    let _ = op.outbound.set(stats);
    t.operators.push(Arc::new(op));
    t.source.records.add(3);
    Arc::new(t)
}

fn sample(text: &str, series: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

#[test]
fn every_series_carries_the_pipeline_and_counters_end_in_total() {
    let text = openmetrics(&registry());
    assert!(text.ends_with("# EOF\n"), "{text}");
    let at = r#"{pipeline="p",operator="op"}"#;
    assert_eq!(
        sample(&text, &format!("waio_operator_records_in_total{at}")).as_deref(),
        Some("3")
    );
    assert_eq!(
        sample(&text, r#"waio_source_records_total{pipeline="p"}"#).as_deref(),
        Some("3")
    );
    assert_eq!(
        sample(
            &text,
            r#"waio_operator_failures_total{pipeline="p",operator="op",kind="fatal"}"#
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            r#"waio_cost_usd_total{pipeline="p",operator="op",model="gpt-x"}"#
        )
        .as_deref(),
        Some("0.25")
    );
    assert!(
        text.contains(
            r#"waio_plugin_info{pipeline="p",operator="op",plugin="plugins/a.wasm",digest="abc123"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"waio_http_responses_total{pipeline="p",operator="op",endpoint="http://127.0.0.1:80",outcome="2xx"} 1"#
    ));
    // Without a breaker, no breaker series; without a request cache, no request cache series.
    assert!(!text.contains("waio_breaker_state"), "{text}");
    assert!(!text.contains(r#"cache="request""#), "{text}");
    assert!(text.contains(r#"waio_cache_hits_total{pipeline="p",operator="op",cache="result"} 4"#));
}

/// A model name is whatever the plugin reported: it cannot add lines or labels.
#[test]
fn label_values_are_escaped() {
    let mut t = PipelineTelemetry::new("p \"q\"", Instant::now(), false);
    let op = OperatorTelemetry::new("op");
    op.models.add("m\"} 1\nwaio_forged_total 9\\", 1, 1, None);
    t.operators.push(Arc::new(op));
    let text = openmetrics(&Arc::new(t));
    assert!(!text.contains("\nwaio_forged_total"), "{text}");
    assert!(
        text.contains(
            r#"waio_tokens_total{pipeline="p \"q\"",operator="op",model="m\"} 1\nwaio_forged_total 9\\",direction="input"} 1"#
        ),
        "{text}"
    );
}

#[test]
fn latency_histograms_are_cumulative_in_seconds_and_end_at_the_count() {
    let text = openmetrics(&registry());
    let buckets: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("waio_operator_latency_seconds_bucket{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            let le = labels.split("le=\"").nth(1)?.split('"').next()?.to_string();
            Some((le, value.parse().ok()?))
        })
        .collect();
    assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1, "{text}");
    // 1.5 ms is under 0.0025 s, not under 0.001 s; 2 s is under 2.5 s.
    let count_at = |le: &str| buckets.iter().find(|(l, _)| l == le).map(|(_, c)| *c);
    assert_eq!(count_at("0.001"), Some(0));
    assert_eq!(count_at("0.0025"), Some(1));
    assert_eq!(count_at("1.0"), Some(1));
    assert_eq!(count_at("2.5"), Some(2));
    assert_eq!(count_at("+Inf"), Some(2));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    let at = r#"{pipeline="p",operator="op"}"#;
    assert_eq!(
        sample(&text, &format!("waio_operator_latency_seconds_count{at}")).as_deref(),
        Some("2")
    );
    assert_eq!(
        sample(&text, &format!("waio_operator_latency_seconds_sum{at}")).as_deref(),
        Some("2.0015")
    );
}

#[test]
fn the_prometheus_text_format_names_counters_by_their_samples_and_has_no_eof() {
    let text = to_prometheus_text(&openmetrics(&registry()));
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE waio_operator_records_in_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# HELP waio_operator_records_in_total Records that entered"),
        "{text}"
    );
    assert!(text.contains("# TYPE waio_plugin_info gauge\n"), "{text}");
    assert!(
        text.contains("# TYPE waio_operator_latency_seconds histogram\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE waio_operator_in_flight gauge\n"),
        "{text}"
    );
    // Every sample line is kept as it was.
    let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples(&text), samples(&openmetrics(&registry())));
}

/// A registry with every kind of family: a breaker that opened, both caches, a budget, a
/// checkpoint.
fn everything() -> Arc<PipelineTelemetry> {
    let mut t = Arc::try_unwrap(registry()).expect("one owner");
    let budget = BudgetOptions {
        max_cost_total: Some(10.0),
        max_cost_per_hour: Some(2.0),
        ..BudgetOptions::default()
    };
    let prices = PriceTable::new(Default::default());
    t.cost = Arc::new(CostControl::new(
        prices,
        Some(budget),
        SpendState {
            total_usd: 4.0,
            last_hour_usd: 0.0,
        },
        Duration::from_secs(7200),
        Instant::now(),
    ));
    t.checkpoints.completed(1, Duration::from_millis(30), 4096);
    let op = &t.operators[0];
    let _ = op.request_cache.set(Arc::default());
    let stats = op.outbound.get().expect("stats");
    stats.breaker_on.set();
    stats
        .endpoint("http://127.0.0.1:80")
        .breaker_moved(BreakerState::Open);
    let serve = Arc::new(crate::answers::ServeTelemetry::default());
    serve.caller("triage/0").records.inc();
    let _ = t.serve.set(serve);
    Arc::new(t)
}

/// The families the endpoint serves, by the name of their samples.
fn served_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| match kind {
            "counter" => format!("{name}_total"),
            "info" => format!("{name}_info"),
            _ => name.to_string(),
        })
        .collect();
    names.sort();
    names
}

/// Every metric the endpoint serves is in docs/METRICS.md under the name it is served as.
#[test]
fn every_metric_is_documented() {
    let docs = include_str!("../../../docs/METRICS.md");
    let names = served_names(&openmetrics(&everything()));
    assert_eq!(names.len(), 67, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !docs.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in docs/METRICS.md: {missing:?}");
}

#[test]
fn checkpoints_endpoints_breakers_and_the_budget_are_served() {
    let text = openmetrics(&everything());
    for (series, value) in [
        (r#"waio_checkpoints_total{pipeline="p"}"#, "1"),
        (r#"waio_checkpoint_size_bytes{pipeline="p"}"#, "4096"),
        (
            r#"waio_checkpoint_duration_seconds_bucket{pipeline="p",le="0.05"}"#,
            "1",
        ),
        (
            r#"waio_http_request_duration_seconds_bucket{pipeline="p",le="0.0025",operator="op",endpoint="http://127.0.0.1:80"}"#,
            "0",
        ),
        (
            r#"waio_http_request_duration_seconds_bucket{pipeline="p",le="0.005",operator="op",endpoint="http://127.0.0.1:80"}"#,
            "1",
        ),
        (
            r#"waio_breaker_state{pipeline="p",operator="op",endpoint="http://127.0.0.1:80"}"#,
            "2",
        ),
        (
            r#"waio_breaker_transitions_total{pipeline="p",operator="op",endpoint="http://127.0.0.1:80",to="open"}"#,
            "1",
        ),
        (r#"waio_budget_spent_usd{pipeline="p"}"#, "4"),
        (
            r#"waio_budget_remaining_usd{pipeline="p",period="total"}"#,
            "6",
        ),
        (r#"waio_budget_limit_usd{pipeline="p",period="hour"}"#, "2"),
        (r#"waio_budget_state{pipeline="p"}"#, "0"),
        (
            r#"waio_cache_hits_total{pipeline="p",operator="op",cache="request"}"#,
            "0",
        ),
    ] {
        assert_eq!(
            sample(&text, series).as_deref(),
            Some(value),
            "{series} in\n{text}"
        );
    }
}

#[test]
fn a_taken_port_is_refused_with_the_address_and_the_reason() {
    let first = AdminListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr();
    let error = AdminListener::bind(addr).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "cannot start the admin server on {addr} ([admin] listen or --admin): "
        )),
        "{error}"
    );
    assert!(error.contains("the port is taken"), "{error}");
}
