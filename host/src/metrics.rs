//! The run summary: what went in, what came out, how fast, how much it cost.

use std::time::Duration;

use serde::Serialize;

use crate::telemetry::OperatorTelemetry;

#[derive(Debug, Clone, Serialize)]
pub struct OperatorSummary {
    pub name: String,
    pub records_in: u64,
    pub records_out: u64,
    pub filtered: u64,
    pub dead_lettered: u64,
    pub timed_out: u64,
    pub traps: u64,
    pub recycled: u64,
    pub http_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// CPU time of the operator's own thread: its plugin calls, queue and emission. The HTTP
    /// requests its plugin sends run on the runtime's workers and are not in it.
    pub thread_cpu_s: f64,
    /// `thread_cpu_s` per input record, in microseconds.
    pub thread_cpu_us_per_record: f64,
}

impl From<&OperatorTelemetry> for OperatorSummary {
    fn from(r: &OperatorTelemetry) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let empty = r.latency_us.is_empty();
        OperatorSummary {
            name: r.name.clone(),
            records_in: r.records_in.get(),
            records_out: r.records_out.get(),
            filtered: r.filtered.get(),
            dead_lettered: r.dead_lettered.get(),
            timed_out: r.timed_out.get(),
            traps: r.traps.get(),
            recycled: r.recycled.get(),
            http_calls: r.http_calls.get(),
            input_tokens: r.input_tokens.get(),
            output_tokens: r.output_tokens.get(),
            latency_p50_ms: if empty {
                0.0
            } else {
                ms(r.latency_us.value_at_quantile(0.5))
            },
            latency_p99_ms: if empty {
                0.0
            } else {
                ms(r.latency_us.value_at_quantile(0.99))
            },
            latency_max_ms: if empty { 0.0 } else { ms(r.latency_us.max()) },
            thread_cpu_s: r.thread_cpu().as_secs_f64(),
            thread_cpu_us_per_record: if r.records_in.get() == 0 {
                0.0
            } else {
                r.thread_cpu().as_secs_f64() * 1e6 / r.records_in.get() as f64
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub pipeline: String,
    /// Records read from the source (malformed ones included).
    pub records_in: u64,
    pub watermarks_in: u64,
    /// Records written to the sink.
    pub records_out: u64,
    /// Dead letters written, by the source and all operators.
    pub dead_lettered: u64,
    pub elapsed_s: f64,
    /// Input records per second of wall time.
    pub throughput_per_s: f64,
    /// Time from start to the first record written, if any.
    pub first_output_ms: Option<f64>,
    pub cpu_s: f64,
    pub cpu_us_per_record: f64,
    pub peak_rss_mib: f64,
    /// The run was asked to stop (SIGINT/SIGTERM) before the end of its input.
    pub stopped: bool,
    /// Records read but never invoked because the run stopped (in the final checkpoint when
    /// checkpointing is on, else not processed at all).
    pub left_unprocessed: u64,
    /// Checkpointing is on: a stopped run is resumed by the next one.
    pub checkpointing: bool,
    /// The checkpoint this run resumed from, and how many records it held in flight.
    pub restored_from: Option<u64>,
    pub restored_in_flight: u64,
    /// Time from start until every restored input had been invoked again.
    pub restore_ms: Option<f64>,
    /// Checkpoints completed by this run (the end-of-input one included), and the longest one.
    pub checkpoints: u64,
    pub checkpoint_max_ms: f64,
    pub operators: Vec<OperatorSummary>,
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
                "  operator {}: {} in, {} out, {} filtered, {} dead-lettered, {} timed out, {} traps, {} recycled, {} HTTP calls, tokens {} in / {} out, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms, thread cpu {:.2} µs/record\n",
                op.name,
                op.records_in,
                op.records_out,
                op.filtered,
                op.dead_lettered,
                op.timed_out,
                op.traps,
                op.recycled,
                op.http_calls,
                op.input_tokens,
                op.output_tokens,
                op.latency_p50_ms,
                op.latency_p99_ms,
                op.latency_max_ms,
                op.thread_cpu_us_per_record,
            ));
        }
        text
    }
}

/// CPU time (user + system) and peak resident set size of this process so far.
pub fn process_usage() -> (Duration, f64) {
    match rusage(libc::RUSAGE_SELF) {
        // ru_maxrss is in KiB on Linux.
        Some(usage) => (cpu_time(&usage), usage.ru_maxrss as f64 / 1024.0),
        None => (Duration::ZERO, 0.0),
    }
}

/// CPU time (user + system) of the calling thread so far.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD).map_or(Duration::ZERO, |usage| cpu_time(&usage))
}

fn rusage(who: libc::c_int) -> Option<libc::rusage> {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut usage) };
    (rc == 0).then_some(usage)
}

fn cpu_time(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
