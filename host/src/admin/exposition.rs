//! `/metrics`: the run's live telemetry in the Prometheus exposition formats.
//!
//! Nothing is counted here: on each scrape a [`Collector`] reads the same atomics the run
//! summary reads (`crate::telemetry`) and prometheus-client encodes them as OpenMetrics text.
//! Clients that do not ask for OpenMetrics get the older Prometheus text format (0.0.4),
//! derived from it line by line ([`to_prometheus_text`]). docs/METRICS.md lists every metric.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::histogram::Histogram;
use crate::telemetry::PipelineTelemetry;

use super::readings::collect;

/// Upper bounds of the latency histograms, seconds (+Inf follows).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

enum Sample {
    Counter(f64),
    Gauge(f64),
    /// Sum (seconds), count, and the count per bucket of [`LATENCY_BUCKETS`] then +Inf.
    Histogram(f64, u64, Vec<(f64, u64)>),
    Info,
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Sample)>,
}

/// The metric families of one scrape, in the order first seen.
#[derive(Default)]
pub(super) struct Families(Vec<Family>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: Labels,
        sample: Sample,
    ) {
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(family) => family.samples.push((labels, sample)),
            None => self.0.push(Family {
                name,
                help,
                kind,
                samples: vec![(labels, sample)],
            }),
        }
    }

    /// `name` without `_total` (the encoder adds it to the sample).
    pub(super) fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        value: f64,
    ) {
        self.add(
            name,
            help,
            MetricType::Counter,
            labels,
            Sample::Counter(value),
        );
    }

    pub(super) fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        value: f64,
    ) {
        self.add(name, help, MetricType::Gauge, labels, Sample::Gauge(value));
    }

    /// A histogram of microseconds, exported in seconds.
    pub(super) fn seconds(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        h: &Histogram,
    ) {
        let bounds: Vec<u64> = LATENCY_BUCKETS.iter().map(|s| (s * 1e6) as u64).collect();
        let cumulative = h.cumulative_counts(&bounds);
        // Read the count after the buckets: a value recorded in between lands in +Inf rather
        // than making a bucket exceed the count.
        let count = h.count().max(cumulative.last().copied().unwrap_or(0));
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut before = 0;
        for (bound, seen) in LATENCY_BUCKETS.iter().zip(&cumulative) {
            buckets.push((*bound, seen - before));
            before = *seen;
        }
        buckets.push((f64::MAX, count - before));
        let sample = Sample::Histogram(h.sum() as f64 / 1e6, count, buckets);
        self.add(name, help, MetricType::Histogram, labels, sample);
    }

    /// An info metric (`NAME_info 1`): `name` without `_info`.
    pub(super) fn info(&mut self, name: &'static str, help: &'static str, labels: Labels) {
        self.add(name, help, MetricType::Info, labels, Sample::Info);
    }
}

/// Reads the registry of one run at scrape time.
#[derive(Debug)]
struct RunCollector(Arc<PipelineTelemetry>);

impl Collector for RunCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for family in collect(&self.0).0 {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, sample) in &family.samples {
                // An info metric takes its labels itself: given them as a family too, the
                // encoder writes an empty label between the two sets.
                if let Sample::Info = sample {
                    metric.encode_info(labels)?;
                    continue;
                }
                let mut series = metric.encode_family(labels)?;
                match sample {
                    Sample::Counter(v) => match whole(*v) {
                        Some(n) => series.encode_counter::<NoLabelSet, _, f64>(&n, None)?,
                        None => series.encode_counter::<NoLabelSet, _, f64>(v, None)?,
                    },
                    Sample::Gauge(v) => match whole(*v) {
                        Some(n) => series.encode_gauge(&(n as i64))?,
                        None => series.encode_gauge(v)?,
                    },
                    Sample::Histogram(sum, count, buckets) => {
                        series.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?
                    }
                    Sample::Info => {}
                }
            }
        }
        Ok(())
    }
}

/// A count kept as a float that is a whole number, written as one (`3`, not `3.0`).
fn whole(v: f64) -> Option<u64> {
    (v.fract() == 0.0 && (0.0..9.0e15).contains(&v)).then_some(v as u64)
}

/// The run's metrics in OpenMetrics text (ends with `# EOF`).
pub fn openmetrics(telemetry: &Arc<PipelineTelemetry>) -> String {
    let pipeline = super::readings::escape(&telemetry.name);
    let labels = [(Cow::Borrowed("pipeline"), Cow::Owned(pipeline))];
    let mut registry = Registry::with_labels(labels.into_iter());
    registry.register_collector(Box::new(RunCollector(Arc::clone(telemetry))));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// OpenMetrics text as the Prometheus text format 0.0.4: no `# EOF` nor `# UNIT`; a
/// counter's HELP and TYPE name its `_total` sample; an info metric is a gauge named `_info`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut text = String::with_capacity(openmetrics.len());
    let mut families: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                families.insert(name, kind);
            }
        }
    }
    let suffix = |name: &str| match families.get(name) {
        Some(&"counter") => "_total",
        Some(&"info") => "_info",
        _ => "",
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match header {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = match tail {
                    "info" => "gauge",
                    "unknown" => "untyped",
                    other => other,
                };
                text.push_str(&format!("{prefix}{name}{} {tail}\n", suffix(name)));
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}
