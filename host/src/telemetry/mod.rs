//! Live telemetry: counters, gauges and histograms that stages update while the run goes on,
//! read at any time (the run summary at the end; later a status page and a Prometheus endpoint).
//!
//! Every value is an atomic: a stage's thread updates it without a lock on the record path, and
//! any other thread reads it. A value is declared once, here; everything shown to a user is
//! rendered from these (`crate::metrics` reads them into the run summary).
//!
//! The registry of a run is a [`PipelineTelemetry`]: its source, sink and checkpoint values
//! and one [`OperatorTelemetry`] per operator.

mod pipeline;
mod usage;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::cache::CacheStats;
pub use crate::counters::{Counter, Flag, Gauge};
pub use crate::histogram::Histogram;
pub use pipeline::{CheckpointTelemetry, PipelineTelemetry, SinkTelemetry, SourceTelemetry};
pub use usage::{process_usage, thread_cpu};

use crate::cost::UsageByModel;
use crate::outbound::OutboundStats;

/// Which plugin an operator runs: its file and the SHA-256 of its component, hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginVersion {
    pub path: String,
    pub digest: String,
}

/// What one async-wait operator has done so far. The operator's thread writes it; the pipeline
/// and its observers read it.
#[derive(Debug)]
pub struct OperatorTelemetry {
    pub name: String,
    pub records_in: Counter,
    pub records_out: Counter,
    /// Records completed with no output (filtered out).
    pub filtered: Counter,
    /// Kafka records not invoked: their partition went to another process, which reads them
    /// again.
    pub abandoned: Counter,
    pub dead_lettered: Counter,
    pub timed_out: Counter,
    /// Records that failed (`complete-exceptionally`), whatever the policy did with them: by
    /// the plugin's kind. Timeouts are `timed_out`.
    pub failed_retriable: Counter,
    pub failed_fatal: Counter,
    /// Hot reloads swapped in.
    pub reloads: Counter,
    /// Records invoked again by the record retry strategy (`[operator.async_retry]`).
    pub record_retries: Counter,
    pub traps: Counter,
    /// Batch calls (`invoke-columns`, or 0.3.0's and 0.4.0's `async-invoke-batch`) of two records
    /// or more, and the records they carried.
    pub batch_calls: Counter,
    pub batched_records: Counter,
    /// Instances replaced before they reached their memory limit.
    pub recycled: Counter,
    pub http_calls: Counter,
    pub input_tokens: Counter,
    pub output_tokens: Counter,
    /// Tokens and cost per model (`crate::cost::CostControl` adds to it).
    pub models: UsageByModel,
    /// Records read but never admitted because the run stopped.
    pub left_unprocessed: Counter,
    /// Records admitted and not yet emitted.
    pub in_flight: Gauge,
    /// The operator's capacity (records in flight at most).
    pub capacity: Gauge,
    /// Time the operator was at capacity and read no input (the backpressure it applies to
    /// the stages before it), microseconds.
    pub full_us: Counter,
    /// Time the operator waited for the next stage to take its output (the backpressure it
    /// receives), microseconds.
    pub output_blocked_us: Counter,
    /// Time from entering the operator to leaving it, microseconds.
    pub latency_us: Histogram,
    /// CPU time of the operator's thread, microseconds, updated as the thread goes on.
    pub thread_cpu_us: Counter,
    /// When the last input restored from a checkpoint was invoked again.
    pub restored_at: OnceLock<Instant>,
    /// What the operator's outbound stack counts (request retries, breaker); set when the
    /// stack is built.
    pub outbound: OnceLock<Arc<OutboundStats>>,
    /// What the result cache (`cache.*`) did; the default (all zero) without one.
    pub result_cache: Arc<CacheStats>,
    /// The operator has a result cache.
    pub result_cache_on: Flag,
    /// The plugin in use (hot reload replaces it).
    pub plugin: Mutex<PluginVersion>,
    /// What the request cache (`request_cache.*`) did; set when the stack is built with one.
    pub request_cache: OnceLock<Arc<CacheStats>>,
}

impl OperatorTelemetry {
    pub fn new(name: &str) -> Self {
        OperatorTelemetry {
            name: name.to_string(),
            records_in: Counter::default(),
            records_out: Counter::default(),
            filtered: Counter::default(),
            abandoned: Counter::default(),
            dead_lettered: Counter::default(),
            timed_out: Counter::default(),
            failed_retriable: Counter::default(),
            failed_fatal: Counter::default(),
            reloads: Counter::default(),
            record_retries: Counter::default(),
            traps: Counter::default(),
            batch_calls: Counter::default(),
            batched_records: Counter::default(),
            recycled: Counter::default(),
            http_calls: Counter::default(),
            input_tokens: Counter::default(),
            output_tokens: Counter::default(),
            models: UsageByModel::default(),
            left_unprocessed: Counter::default(),
            in_flight: Gauge::default(),
            capacity: Gauge::default(),
            full_us: Counter::default(),
            output_blocked_us: Counter::default(),
            latency_us: Histogram::default(),
            thread_cpu_us: Counter::default(),
            restored_at: OnceLock::new(),
            outbound: OnceLock::new(),
            result_cache: Arc::default(),
            result_cache_on: Flag::default(),
            plugin: Mutex::default(),
            request_cache: OnceLock::new(),
        }
    }

    /// The plugin in use now.
    pub fn plugin(&self) -> PluginVersion {
        self.plugin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_plugin(&self, plugin: PluginVersion) {
        *self.plugin.lock().unwrap_or_else(|e| e.into_inner()) = plugin;
    }

    /// Records the CPU time the calling thread has used so far as the operator's.
    pub fn set_thread_cpu(&self, cpu: Duration) {
        let us = cpu.as_micros() as u64;
        let before = self.thread_cpu_us.get();
        if us > before {
            self.thread_cpu_us.add(us - before);
        }
    }

    /// Records the CPU time the calling thread has used so far as the operator's.
    pub fn update_thread_cpu(&self) {
        self.set_thread_cpu(thread_cpu());
    }

    pub fn thread_cpu(&self) -> Duration {
        Duration::from_micros(self.thread_cpu_us.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_add_up_across_threads() {
        let telemetry = std::sync::Arc::new(OperatorTelemetry::new("op"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = std::sync::Arc::clone(&telemetry);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        t.records_in.inc();
                        t.in_flight.add(1);
                        t.in_flight.add(-1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counting thread");
        }
        assert_eq!(telemetry.records_in.get(), 4000);
        assert_eq!(telemetry.in_flight.get(), 0);
    }

    #[test]
    fn thread_cpu_is_kept_as_the_latest_total() {
        let t = OperatorTelemetry::new("op");
        t.set_thread_cpu(Duration::from_millis(5));
        t.set_thread_cpu(Duration::from_millis(7));
        assert_eq!(t.thread_cpu(), Duration::from_millis(7));
    }

    #[test]
    fn checkpoints_keep_the_longest_and_the_last_id() {
        let t = CheckpointTelemetry::default();
        assert_eq!(t.last_id(), None);
        t.completed(3, Duration::from_millis(40), 100);
        t.completed(4, Duration::from_millis(10), 100);
        assert_eq!(t.completed.get(), 2);
        assert_eq!(t.longest(), Duration::from_millis(40));
        assert_eq!(t.total_us.get(), 50_000);
        assert_eq!(t.last_id(), Some(4));
    }

    #[test]
    fn a_stop_counts_as_stopped_only_when_it_left_input() {
        let t = PipelineTelemetry::new("p", Instant::now(), false);
        assert!(!t.stopped());
        t.stop_requested.set();
        // Asked, but the input had ended already: nothing was left.
        assert!(!t.stopped());
        t.source.stopped.set();
        assert!(t.stopped());
    }
}
