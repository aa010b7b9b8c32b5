//! The run summary: what went in, what came out, how fast, how much it cost.
//!
//! Every value shown to a user is declared once, as a row of [`summary!`]: its name (the JSON
//! field, later the metric's name), its help (the row's doc comment), its kind and how it is
//! read from the live [`crate::telemetry`] registry. The summary's JSON, its text and
//! [`Metric`]s (for a metrics endpoint) are all made from those rows.

use std::time::Instant;

use serde::Serialize;

use crate::cost::usage::{total_cost, unpriced_tokens};
use crate::cost::ModelUsage;
use crate::telemetry::{OperatorTelemetry, PipelineTelemetry};

// Kept here for callers written before usage moved to the telemetry module.
use crate::telemetry::process_usage;

/// What a value is, as a metrics endpoint types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is computed (rates, quantiles, durations).
    Gauge,
    /// Names the thing measured (a label, not a number).
    Label,
}

/// One value of a summary with its description.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    /// Not known (yet): no first output, no restore.
    Missing,
    Text(String),
}

impl From<&u64> for Value {
    fn from(v: &u64) -> Self {
        Value::Number(*v as f64)
    }
}

impl From<&f64> for Value {
    fn from(v: &f64) -> Self {
        Value::Number(*v)
    }
}

impl From<&bool> for Value {
    fn from(v: &bool) -> Self {
        Value::Number(if *v { 1.0 } else { 0.0 })
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<&Option<u64>> for Value {
    fn from(v: &Option<u64>) -> Self {
        v.as_ref().map_or(Value::Missing, Value::from)
    }
}

impl From<&Option<f64>> for Value {
    fn from(v: &Option<f64>) -> Self {
        v.as_ref().map_or(Value::Missing, Value::from)
    }
}

/// Declares a summary struct and how each of its fields is read from a telemetry registry.
///
/// Each row is `/// help` `name: Type [Kind] = expression,`; the expression reads the registry
/// through the name given after `as` and the `let`s of the block before the rows (values that
/// several rows share, read once). Fields in `nested` after the struct are parts of the summary
/// that are not values of their own (the operators).
macro_rules! summary {
    (
        $(#[doc = $doc:literal])*
        pub struct $summary:ident from $registry:ty as $t:ident {
            { $(let $binding:pat = $bound:expr;)* }
            $(
                $(#[doc = $help:literal])*
                $field:ident: $ty:ty [$kind:ident] = $read:expr,
            )*
        }
        $(nested { $($part:ident: $part_ty:ty = $part_read:expr,)* })?
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Serialize)]
        pub struct $summary {
            $($(#[doc = $help])* pub $field: $ty,)*
            $($(pub $part: $part_ty,)*)?
        }

        impl $summary {
            /// Reads every value from the registry now.
            pub fn read($t: &$registry) -> Self {
                $(let $binding = $bound;)*
                $summary {
                    $($field: $read,)*
                    $($($part: $part_read,)*)?
                }
            }

            /// Every value of its own, with its name, help and kind.
            pub fn metrics(&self) -> Vec<Metric> {
                vec![$(Metric {
                    name: stringify!($field),
                    help: concat!($($help),*).trim_ascii(),
                    kind: Kind::$kind,
                    value: Value::from(&self.$field),
                },)*]
            }
        }
    };
}

impl OperatorSummary {
    /// What the rate limit did, when it made requests wait.
    fn rate_limited(&self) -> String {
        if self.rate_limited_requests == 0 {
            return String::new();
        }
        format!(
            ", {} waited for the rate limit ({:.1} s in all)",
            self.rate_limited_requests, self.rate_limit_wait_seconds
        )
    }

    /// What request retries, breakers and the provider's rate limit did, when they did
    /// anything.
    fn resilience(&self) -> String {
        let counted = self.record_retries
            + self.http_retries
            + self.http_retries_refused
            + self.http_failed_fast
            + self.breaker_openings;
        let mut parts = Vec::new();
        if counted > 0 {
            parts.push(format!(
                "{} records retried, {} request retries, {} refused by the retry budget, {} failed fast by an open breaker, {} breaker openings",
                self.record_retries,
                self.http_retries,
                self.http_retries_refused,
                self.http_failed_fast,
                self.breaker_openings
            ));
        }
        if self.http_held > 0 {
            parts.push(format!(
                "{} held {:.1} s in all for the provider's rate limit",
                self.http_held, self.http_held_s
            ));
        }
        if self.http_429s > 0 {
            parts.push(format!("{} answered 429 by the provider", self.http_429s));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!(" ({})", parts.join(", "))
    }
}

impl OperatorSummary {
    /// A line per cache that was used.
    fn caches(&self) -> String {
        let lines = [
            (
                "result cache",
                [
                    self.cache_hits,
                    self.cache_negative_hits,
                    self.cache_coalesced,
                    self.cache_misses,
                    self.cache_entries,
                    self.cache_evictions,
                    self.cache_tokens_saved,
                ],
                self.cache_cost_saved_usd,
            ),
            (
                "request cache",
                [
                    self.request_cache_hits,
                    self.request_cache_negative_hits,
                    self.request_cache_coalesced,
                    self.request_cache_misses,
                    self.request_cache_entries,
                    self.request_cache_evictions,
                    self.request_cache_tokens_saved,
                ],
                self.request_cache_cost_saved_usd,
            ),
        ];
        let mut text = String::new();
        for (name, [hits, negative, coalesced, misses, entries, evictions, tokens], usd) in lines {
            if hits + negative + misses == 0 {
                continue;
            }
            let saved = if usd > 0.0 {
                format!(" (${usd:.6})")
            } else {
                String::new()
            };
            text.push_str(&format!(
                "    {name}: {hits} hits, {negative} failures remembered, {coalesced} coalesced, {misses} misses, {entries} entries, {evictions} evictions, {tokens} tokens saved{saved}\n"
            ));
        }
        text
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn ms_since(started: Instant, at: Option<Instant>) -> Option<f64> {
    at.map(|at| at.duration_since(started).as_secs_f64() * 1000.0)
}

fn per(total: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

summary! {
    /// What one operator did.
    pub struct OperatorSummary from OperatorTelemetry as t {
        {
            let latency = &t.latency_us;
            let cpu = t.thread_cpu().as_secs_f64();
            let outbound = t.outbound.get().cloned().unwrap_or_default();
            let models = t.models.read();
            let cache = &t.result_cache;
            let requests = t.request_cache.get().cloned().unwrap_or_default();
        }
        /// The operator's name.
        name: String [Label] = t.name.clone(),
        /// Records that entered the operator.
        records_in: u64 [Counter] = t.records_in.get(),
        /// Records the operator emitted.
        records_out: u64 [Counter] = t.records_out.get(),
        /// Records completed with no output (filtered out).
        filtered: u64 [Counter] = t.filtered.get(),
        /// Kafka records not invoked: their partition went to another process in a rebalance,
        /// which reads them again.
        abandoned: u64 [Counter] = t.abandoned.get(),
        /// Records the operator sent to the dead-letter output.
        dead_lettered: u64 [Counter] = t.dead_lettered.get(),
        /// Records whose timeout fired.
        timed_out: u64 [Counter] = t.timed_out.get(),
        /// Times a record was invoked again by `[operator.async_retry]`.
        record_retries: u64 [Counter] = t.record_retries.get(),
        /// Plugin traps.
        traps: u64 [Counter] = t.traps.get(),
        /// Instances replaced before they reached their memory limit.
        recycled: u64 [Counter] = t.recycled.get(),
        /// Batch calls (`invoke-columns`; `async-invoke-batch` before 0.5.0) of two records or more.
        batch_calls: u64 [Counter] = t.batch_calls.get(),
        /// Records those calls carried.
        batched_records: u64 [Counter] = t.batched_records.get(),
        /// HTTP requests the plugin sent.
        http_calls: u64 [Counter] = t.http_calls.get(),
        /// Requests the host sent again after a transient failure (`max_retries`).
        http_retries: u64 [Counter] = outbound.retries(),
        /// Retries not sent because the retry budget was spent.
        http_retries_refused: u64 [Counter] = outbound.retries_refused(),
        /// Requests failed at once by an open circuit breaker, without leaving the machine.
        http_failed_fast: u64 [Counter] = outbound.failed_fast(),
        /// Times a circuit breaker opened.
        breaker_openings: u64 [Counter] = outbound.breaker_openings(),
        /// Requests held back by the provider's rate limit (its headers or 429s).
        http_held: u64 [Counter] = outbound.held(),
        /// The time those requests were held, added up, seconds.
        http_held_s: f64 [Counter] = outbound.held_time().as_secs_f64(),
        /// Attempts the provider refused with 429 (Too Many Requests); counted by the adaptive
        /// pacing, so 0 with `rate_limit.adaptive = false`.
        http_429s: u64 [Counter] = outbound.rate_limited(),
        /// Model input tokens the plugin reported.
        input_tokens: u64 [Counter] = t.input_tokens.get(),
        /// Model output tokens the plugin reported.
        output_tokens: u64 [Counter] = t.output_tokens.get(),
        /// Requests (attempts) that waited for the operator's rate limit.
        rate_limited_requests: u64 [Counter] = outbound.rate_limited_requests(),
        /// Time requests spent waiting for the rate limit, summed, seconds.
        rate_limit_wait_seconds: f64 [Counter] = outbound.rate_limit_wait().as_secs_f64(),
        /// What the reported tokens cost, US dollars (`[pricing]`); null (unknown) when a
        /// model without a price was used.
        cost_usd: Option<f64> [Gauge] = total_cost(&models),
        /// Tokens of models without a price in `[pricing]` (not costed).
        unpriced_tokens: u64 [Counter] = unpriced_tokens(&models),
        /// Records completed from the result cache (`cache.*`) without a plugin call.
        cache_hits: u64 [Counter] = cache.hits.get(),
        /// Records the result cache had no entry for (those that waited for another record's
        /// call for the same input included).
        cache_misses: u64 [Counter] = cache.misses.get(),
        /// Records failed from a failure the result cache remembered (`negative_ttl`).
        cache_negative_hits: u64 [Counter] = cache.negative_hits.get(),
        /// Records that waited for another record's call for the same input instead of
        /// making their own.
        cache_coalesced: u64 [Counter] = cache.coalesced.get(),
        /// Result cache entries given up to keep within its bound.
        cache_evictions: u64 [Counter] = cache.evictions.get(),
        /// Result cache entries kept at the end (or now).
        cache_entries: u64 [Gauge] = cache.entries.get().max(0) as u64,
        /// Model tokens the result cache's hits did not spend again.
        cache_tokens_saved: u64 [Counter] = cache.tokens_saved.get(),
        /// What those tokens cost at `[pricing]`, US dollars.
        cache_cost_saved_usd: f64 [Counter] = cache.cost_saved(),
        /// Requests answered from the request cache (`request_cache.*`) without a call.
        request_cache_hits: u64 [Counter] = requests.hits.get(),
        /// Requests the request cache had no entry for (coalesced ones included).
        request_cache_misses: u64 [Counter] = requests.misses.get(),
        /// Requests answered with a 4xx the request cache kept (`negative_ttl`).
        request_cache_negative_hits: u64 [Counter] = requests.negative_hits.get(),
        /// Requests that waited for an identical one in flight and shared its answer.
        request_cache_coalesced: u64 [Counter] = requests.coalesced.get(),
        /// Request cache entries given up to keep within its bound.
        request_cache_evictions: u64 [Counter] = requests.evictions.get(),
        /// Request cache entries kept at the end (or now).
        request_cache_entries: u64 [Gauge] = requests.entries.get().max(0) as u64,
        /// Model tokens the plugin reported from answers of the request cache (not paid).
        request_cache_tokens_saved: u64 [Counter] = requests.tokens_saved.get(),
        /// What those tokens cost at `[pricing]`, US dollars.
        request_cache_cost_saved_usd: f64 [Counter] = requests.cost_saved(),
        /// Request cache lookups that found Redis out of reach (`storage = "redis"`): each a
        /// miss, the request sent, perhaps paid for twice between processes.
        request_cache_unreachable: u64 [Counter] = requests.unreachable.get(),
        /// Median time from entering the operator to leaving it, milliseconds.
        latency_p50_ms: f64 [Gauge] = ms(latency.value_at_quantile(0.5)),
        /// 99th percentile of the time from entering the operator to leaving it, milliseconds.
        latency_p99_ms: f64 [Gauge] = ms(latency.value_at_quantile(0.99)),
        /// Longest time from entering the operator to leaving it, milliseconds.
        latency_max_ms: f64 [Gauge] = ms(latency.max()),
        /// CPU time of the operator's own thread, seconds: its plugin calls, queue and
        /// emission. The HTTP requests its plugin sends run on the runtime's workers and are
        /// not in it.
        thread_cpu_s: f64 [Gauge] = cpu,
        /// `thread_cpu_s` per input record, in microseconds.
        thread_cpu_us_per_record: f64 [Gauge] = per(cpu * 1e6, t.records_in.get()),
    }
    nested {
        models: Vec<ModelUsage> = models,
    }
}

summary! {
    /// What a run did, read from its registry at the end (or, for a status, while it runs).
    pub struct RunSummary from PipelineTelemetry as t {
        {
            let elapsed = t.started.elapsed().as_secs_f64();
            let (cpu, peak_rss) = process_usage();
            let cpu = cpu.as_secs_f64();
            let records_in = t.source.records.get();
            let models = t.operators.iter().flat_map(|o| o.models.read()).collect::<Vec<_>>();
        }
        /// The pipeline's name.
        pipeline: String [Label] = t.name.clone(),
        /// Records read from the source (malformed ones included).
        records_in: u64 [Counter] = records_in,
        /// Watermarks read from the source or generated by it.
        watermarks_in: u64 [Counter] = t.source.watermarks.get(),
        /// Records written to the sink.
        records_out: u64 [Counter] = t.sink.records.get(),
        /// Dead letters written, by the source and all operators.
        dead_lettered: u64 [Counter] = t.sink.dead_letters.get(),
        /// Wall time since the run started, seconds.
        elapsed_s: f64 [Gauge] = elapsed,
        /// Input records per second of wall time.
        throughput_per_s: f64 [Gauge] = records_in as f64 / elapsed.max(1e-9),
        /// Time from start to the first record written, if any, milliseconds.
        first_output_ms: Option<f64> [Gauge] =
            ms_since(t.started, t.sink.first_output_at.get().copied()),
        /// CPU time of the whole process, seconds.
        cpu_s: f64 [Gauge] = cpu,
        /// `cpu_s` per input record, in microseconds.
        cpu_us_per_record: f64 [Gauge] = cpu * 1e6 / (records_in.max(1) as f64),
        /// Peak resident set size of the process, MiB.
        peak_rss_mib: f64 [Gauge] = peak_rss,
        /// The run was asked to stop (SIGINT/SIGTERM) before the end of its input.
        stopped: bool [Gauge] = t.stopped(),
        /// Records read but never invoked because the run stopped (in the final checkpoint
        /// when checkpointing is on, else not processed at all).
        left_unprocessed: u64 [Gauge] = t.left_unprocessed(),
        /// Checkpointing is on: a stopped run is resumed by the next one.
        checkpointing: bool [Gauge] = t.checkpointing,
        /// The checkpoint this run resumed from.
        restored_from: Option<u64> [Gauge] = t.restored_from.get().copied(),
        /// Records the checkpoint resumed from held in flight.
        restored_in_flight: u64 [Gauge] = t.restored_in_flight.get(),
        /// Time from start until every restored input had been invoked again, milliseconds.
        restore_ms: Option<f64> [Gauge] = ms_since(t.started, t.restored_at()),
        /// Checkpoints completed by this run (the end-of-input one included).
        checkpoints: u64 [Counter] = t.checkpoints.completed.get(),
        /// The longest checkpoint, from trigger to stored and committed, milliseconds.
        checkpoint_max_ms: f64 [Gauge] = t.checkpoints.longest().as_secs_f64() * 1000.0,
        /// What this run's reported tokens cost, US dollars; null (unknown) when a model
        /// without a price in `[pricing]` was used.
        cost_usd: Option<f64> [Gauge] = total_cost(&models),
        /// Tokens of models without a price (not costed).
        unpriced_tokens: u64 [Counter] = unpriced_tokens(&models),
        /// What the budget counts as spent, US dollars: the priced cost of this run and of the
        /// runs before it that it resumed from a checkpoint.
        budget_spent_usd: f64 [Gauge] = t.cost.spent(),
        /// Times the budget paused admissions (`max_cost_per_hour` with `action = "pause"`).
        budget_pauses: u64 [Counter] = t.cost.pauses(),
        /// Hot reloads swapped in, over all operators.
        reloads: u64 [Counter] = t.operators.iter().map(|o| o.reloads.get()).sum(),
        /// Hot reloads refused (validation failed, or a restart is needed).
        reloads_refused: u64 [Counter] = t.reloads_refused.get(),
    }
    nested {
        // Why the budget stopped the run, if it did (`waio run` exits with code 3).
        budget_stop: Option<String> = t.cost.stopped().map(ToString::to_string),
        operators: Vec<OperatorSummary> =
            t.operators.iter().map(|o| OperatorSummary::read(o)).collect(),
    }
}

impl From<&OperatorTelemetry> for OperatorSummary {
    fn from(telemetry: &OperatorTelemetry) -> Self {
        OperatorSummary::read(telemetry)
    }
}

impl RunSummary {
    /// Human-readable lines for stderr.
    pub fn render(&self) -> String {
        let mut text = format!(
            "pipeline {}: {} records in, {} out, {} dead-lettered in {:.3}s ({:.0} records/s; first output after {}; cpu {:.2} µs/record; peak RSS {:.1} MiB)\n",
            self.pipeline,
            self.records_in,
            self.records_out,
            self.dead_lettered,
            self.elapsed_s,
            self.throughput_per_s,
            self.first_output_ms
                .map(|ms| format!("{ms:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            self.cpu_us_per_record,
            self.peak_rss_mib,
        );
        if let Some(id) = self.restored_from {
            text.push_str(&format!(
                "  resumed from checkpoint {id} with {} records in flight (all invoked again after {})\n",
                self.restored_in_flight,
                self.restore_ms
                    .map(|ms| format!("{ms:.1} ms"))
                    .unwrap_or_else(|| "-".into())
            ));
        }
        if self.checkpoints > 0 {
            text.push_str(&format!(
                "  {} checkpoints (longest {:.1} ms)\n",
                self.checkpoints, self.checkpoint_max_ms
            ));
        }
        if self.reloads + self.reloads_refused > 0 {
            text.push_str(&format!(
                "  {} hot reloads swapped in, {} refused\n",
                self.reloads, self.reloads_refused
            ));
        }
        if self.stopped {
            let next = if self.checkpointing {
                "they are in the final checkpoint: the next run resumes with them"
            } else {
                "they were not processed: without [checkpoint] the next run starts from the beginning"
            };
            text.push_str(&format!(
                "  stopped on request before the end of the input; {} records read ahead and the rest of the input were left: {next}\n",
                self.left_unprocessed
            ));
        }
        for op in &self.operators {
            text.push_str(&format!(
                "  operator {}: {} in, {} out, {} filtered, {} dead-lettered, {} timed out, {} traps, {} recycled, {} HTTP calls{}{}, tokens {} in / {} out, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms, thread cpu {:.2} µs/record\n",
                op.name,
                op.records_in,
                op.records_out,
                op.filtered,
                op.dead_lettered,
                op.timed_out,
                op.traps,
                op.recycled,
                op.http_calls,
                op.resilience(),
                op.rate_limited(),
                op.input_tokens,
                op.output_tokens,
                op.latency_p50_ms,
                op.latency_p99_ms,
                op.latency_max_ms,
                op.thread_cpu_us_per_record,
            ));
            text.push_str(&op.caches());
            for m in &op.models {
                text.push_str(&format!(
                    "    model {}: tokens {} in / {} out, cost {}\n",
                    m.model,
                    m.input_tokens,
                    m.output_tokens,
                    dollars(m.cost_usd)
                ));
            }
        }
        text.push_str(&self.render_cost());
        text.push_str(&self.render_cost_avoided());
        text
    }

    /// What the records an earlier operator filtered out would have cost at a priced later
    /// one (the cheap-then-expensive pattern): at that operator's mean cost per HTTP call, one
    /// call per record. Nothing when no priced operator had records kept from it.
    fn render_cost_avoided(&self) -> String {
        let mut text = String::new();
        for op in self.operators.iter().skip(1) {
            let cost: Option<f64> = op.models.iter().map(|m| m.cost_usd).sum();
            let kept_away = self.records_in.saturating_sub(op.records_in);
            let (Some(cost), true) = (cost, op.http_calls > 0 && kept_away > 0) else {
                continue;
            };
            let per_call = cost / op.http_calls as f64;
            text.push_str(&format!(
                "  cost avoided at operator {}: ~${:.6} ({} records filtered out before it, at its mean ${:.6} per call)\n",
                op.name,
                per_call * kept_away as f64,
                kept_away,
                per_call,
            ));
        }
        text
    }

    /// The run's cost and budget, when there was any usage or a budget.
    fn render_cost(&self) -> String {
        let used = self.operators.iter().any(|o| !o.models.is_empty());
        if !used && self.budget_spent_usd == 0.0 && self.budget_stop.is_none() {
            return String::new();
        }
        let mut text = format!("  cost this run: {}", dollars(self.cost_usd));
        if self.unpriced_tokens > 0 {
            text.push_str(&format!(
                " ({} tokens of models without a price in [pricing])",
                self.unpriced_tokens
            ));
        }
        text.push_str(&format!(
            "; spent in all (resumed runs included): ${:.6}",
            self.budget_spent_usd
        ));
        if self.budget_pauses > 0 {
            text.push_str(&format!("; budget pauses: {}", self.budget_pauses));
        }
        if self.budget_stop.is_some() {
            text.push_str("; the budget stopped the run");
        }
        text.push('\n');
        text
    }
}

/// An amount of US dollars, or "unknown" for usage without a price (never $0).
fn dollars(cost: Option<f64>) -> String {
    cost.map_or_else(
        || "unknown (no price in [pricing])".to_string(),
        |c| format!("${c:.6}"),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn registry() -> PipelineTelemetry {
        let mut t = PipelineTelemetry::new("p", Instant::now(), true);
        let op = OperatorTelemetry::new("op");
        op.records_in.add(3);
        op.records_out.add(2);
        op.dead_lettered.inc();
        op.http_calls.add(4);
        op.latency_us.record(1500);
        t.operators.push(Arc::new(op));
        t.source.records.add(3);
        t.source.watermarks.inc();
        t.sink.records.add(2);
        t.sink.dead_letters.inc();
        t.checkpoints.completed(1, Duration::from_millis(40), 100);
        t
    }

    fn keys(value: &serde_json::Value) -> Vec<&str> {
        let object = value.as_object().expect("an object");
        object.keys().map(String::as_str).collect()
    }

    /// Scripts and tests read `--summary-json` by these names.
    #[test]
    fn the_summary_json_keeps_its_field_names() {
        let json = serde_json::to_value(RunSummary::read(&registry())).unwrap();
        let mut run = keys(&json);
        run.sort_unstable();
        let mut expected = vec![
            "pipeline",
            "records_in",
            "watermarks_in",
            "records_out",
            "dead_lettered",
            "elapsed_s",
            "throughput_per_s",
            "first_output_ms",
            "cpu_s",
            "cpu_us_per_record",
            "peak_rss_mib",
            "stopped",
            "left_unprocessed",
            "checkpointing",
            "restored_from",
            "restored_in_flight",
            "restore_ms",
            "checkpoints",
            "checkpoint_max_ms",
            "cost_usd",
            "unpriced_tokens",
            "budget_spent_usd",
            "budget_pauses",
            "reloads",
            "reloads_refused",
            "budget_stop",
            "operators",
        ];
        expected.sort_unstable();
        assert_eq!(run, expected);
        let mut operator = keys(&json["operators"][0]);
        operator.sort_unstable();
        let cache_fields: Vec<String> = ["cache", "request_cache"]
            .iter()
            .flat_map(|cache| {
                [
                    "hits",
                    "misses",
                    "negative_hits",
                    "coalesced",
                    "evictions",
                    "entries",
                    "tokens_saved",
                    "cost_saved_usd",
                ]
                .map(|field| format!("{cache}_{field}"))
            })
            .collect();
        let mut expected = vec![
            "name",
            "records_in",
            "records_out",
            "filtered",
            "abandoned",
            "dead_lettered",
            "timed_out",
            "record_retries",
            "traps",
            "recycled",
            "batch_calls",
            "batched_records",
            "http_calls",
            "http_retries",
            "http_retries_refused",
            "http_failed_fast",
            "breaker_openings",
            "http_held",
            "http_held_s",
            "http_429s",
            "input_tokens",
            "output_tokens",
            "rate_limited_requests",
            "rate_limit_wait_seconds",
            "cost_usd",
            "unpriced_tokens",
            "models",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_max_ms",
            "thread_cpu_s",
            "thread_cpu_us_per_record",
            "request_cache_unreachable",
        ];
        expected.extend(cache_fields.iter().map(String::as_str));
        expected.sort_unstable();
        assert_eq!(operator, expected);
        assert_eq!(json["records_in"], 3);
        assert_eq!(json["checkpoint_max_ms"], 40.0);
        assert_eq!(json["first_output_ms"], serde_json::Value::Null);
        assert_eq!(json["operators"][0]["http_calls"], 4);
    }

    #[test]
    fn the_text_shows_the_values_read_from_the_registry() {
        let text = RunSummary::read(&registry()).render();
        assert!(
            text.starts_with("pipeline p: 3 records in, 2 out, 1 dead-lettered in "),
            "{text}"
        );
        assert!(text.contains("first output after -;"), "{text}");
        assert!(
            text.contains("\n  1 checkpoints (longest 40.0 ms)\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  operator op: 3 in, 2 out, 0 filtered, 1 dead-lettered, 0 timed out, 0 traps, 0 recycled, 4 HTTP calls, tokens 0 in / 0 out, latency p50 1.50 ms"),
            "{text}"
        );
        assert!(!text.contains("stopped on request"), "{text}");
    }

    /// What a metrics endpoint will export: every value of its own with a name, a help and a
    /// kind; the operators are their own summaries, not a value.
    #[test]
    fn the_text_shows_retries_and_breakers_when_they_did_something() {
        let registry = registry();
        let stats = Arc::new(crate::outbound::OutboundStats::default());
        registry.operators[0]
            .outbound
            .set(Arc::clone(&stats))
            .unwrap();
        stats.retry_sent();
        stats.retry_sent();
        stats.retry_refused();
        stats.request_failed_fast();
        stats.breaker_opened();
        registry.operators[0].record_retries.add(3);
        let summary = RunSummary::read(&registry);
        let op = &summary.operators[0];
        assert_eq!(
            (
                op.http_retries,
                op.http_retries_refused,
                op.http_failed_fast,
                op.breaker_openings
            ),
            (2, 1, 1, 1)
        );
        let text = summary.render();
        assert!(
            text.contains("4 HTTP calls (3 records retried, 2 request retries, 1 refused by the retry budget, 1 failed fast by an open breaker, 1 breaker openings), tokens"),
            "{text}"
        );
    }

    #[test]
    fn the_text_shows_requests_held_for_the_providers_rate_limit() {
        let registry = registry();
        let stats = Arc::new(crate::outbound::OutboundStats::default());
        registry.operators[0]
            .outbound
            .set(Arc::clone(&stats))
            .unwrap();
        stats.request_held(std::time::Duration::from_millis(1500));
        stats.request_held(std::time::Duration::from_millis(1000));
        stats.rate_limited_answer();
        let summary = RunSummary::read(&registry);
        let op = &summary.operators[0];
        assert_eq!((op.http_held, op.http_held_s), (2, 2.5));
        let text = summary.render();
        assert!(
            text.contains(
                "4 HTTP calls (2 held 2.5 s in all for the provider's rate limit, 1 answered 429 by the provider), tokens"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_value_has_a_name_a_help_and_a_kind() {
        let summary = RunSummary::read(&registry());
        let metrics = summary.metrics();
        let json = serde_json::to_value(&summary).unwrap();
        let names: Vec<&str> = metrics.iter().map(|m| m.name).collect();
        let fields: Vec<&str> = keys(&json)
            .into_iter()
            .filter(|k| !["operators", "budget_stop"].contains(k))
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        let mut fields = fields;
        fields.sort_unstable();
        assert_eq!(sorted, fields);
        for metric in metrics.iter().chain(&summary.operators[0].metrics()) {
            assert!(!metric.help.is_empty(), "{} has no help", metric.name);
            assert!(!metric.help.starts_with(' '), "{}", metric.help);
        }
        let by_name = |name: &str| metrics.iter().find(|m| m.name == name).cloned().unwrap();
        assert_eq!(by_name("records_in").kind, Kind::Counter);
        assert_eq!(by_name("records_in").value, Value::Number(3.0));
        assert_eq!(by_name("pipeline").kind, Kind::Label);
        assert_eq!(by_name("restored_from").value, Value::Missing);
        assert_eq!(by_name("checkpointing").value, Value::Number(1.0));
        let ops = summary.operators[0].metrics();
        let cpu = ops.iter().find(|m| m.name == "thread_cpu_s").unwrap();
        assert!(cpu
            .help
            .starts_with("CPU time of the operator's own thread"));
    }
}
