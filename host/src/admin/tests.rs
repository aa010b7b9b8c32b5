use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
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

/// Every metric the endpoint can serve is in docs/METRICS.md under the name it is served as.
#[test]
fn every_metric_is_documented() {
    let docs = include_str!("../../../docs/METRICS.md");
    let source = include_str!("readings.rs");
    let mut names = Vec::new();
    for (call, suffix) in [
        ("f.counter(", "_total"),
        ("f.gauge(", ""),
        ("f.seconds(", ""),
        ("f.info(", "_info"),
    ] {
        for part in source.split(call).skip(1) {
            let name = part
                .trim_start()
                .strip_prefix('"')
                .and_then(|p| p.split_once('"'));
            if let Some((name, _)) = name {
                names.push(format!("{name}{suffix}"));
            }
        }
    }
    assert!(names.len() > 50, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !docs.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in docs/METRICS.md: {missing:?}");
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
