//! What a pipeline's source, sink and checkpoint coordinator have done so far, beside its
//! operators' [`OperatorTelemetry`]: one registry per pipeline, updated live by the stages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::{Counter, Flag, Gauge, Histogram, OperatorTelemetry};
use crate::cost::CostControl;

/// The pipeline's registry: every stage's values, read by the run summary and the status.
#[derive(Debug)]
pub struct PipelineTelemetry {
    pub name: String,
    pub started: Instant,
    /// `started` on the wall clock.
    pub started_at: SystemTime,
    /// Every stage has ended.
    pub ended: Flag,
    pub source: Arc<SourceTelemetry>,
    pub sink: Arc<SinkTelemetry>,
    pub checkpoints: Arc<CheckpointTelemetry>,
    /// One per operator, in chain order.
    pub operators: Vec<Arc<OperatorTelemetry>>,
    /// Checkpointing is on: a stopped run is resumed by the next one.
    pub checkpointing: bool,
    /// A stop was asked for (SIGINT/SIGTERM or the pipeline's handle).
    pub stop_requested: Flag,
    /// The checkpoint this run resumed from.
    pub restored_from: OnceLock<u64>,
    /// Records the restored checkpoint held in flight.
    pub restored_in_flight: Counter,
    /// The run's spend and budget guard, shared with its operators.
    pub cost: Arc<CostControl>,
    /// Hot reloads refused (a plugin or manifest that failed validation, a change that needs
    /// a restart); the ones swapped in are counted per operator.
    pub reloads_refused: Counter,
    /// `waio serve`'s callers (set when the run serves).
    pub serve: OnceLock<Arc<crate::answers::ServeTelemetry>>,
}

impl PipelineTelemetry {
    pub fn new(name: &str, started: Instant, checkpointing: bool) -> Self {
        PipelineTelemetry {
            name: name.to_string(),
            started,
            started_at: SystemTime::now() - started.elapsed(),
            ended: Flag::default(),
            source: Arc::default(),
            sink: Arc::default(),
            checkpoints: Arc::default(),
            operators: Vec::new(),
            checkpointing,
            stop_requested: Flag::default(),
            restored_from: OnceLock::new(),
            serve: OnceLock::new(),
            restored_in_flight: Counter::default(),
            cost: Arc::default(),
            reloads_refused: Counter::default(),
        }
    }

    /// When the run started, Unix time in seconds.
    pub fn started_unix_s(&self) -> f64 {
        self.started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// 0 running, 1 stopping (a stop was asked for), 2 ended.
    pub fn state_index(&self) -> u8 {
        if self.ended.get() {
            2
        } else if self.stop_requested.get() {
            1
        } else {
            0
        }
    }

    /// Records read but never invoked because the run stopped: the first operator keeps them.
    pub fn left_unprocessed(&self) -> u64 {
        self.operators
            .first()
            .map_or(0, |t| t.left_unprocessed.get())
    }

    /// The run stopped on request before the end of its input. The source may never see the
    /// stop: the first operator ends first and the source's next hand-over finds nobody
    /// listening.
    /// A stop is how `waio serve` ends (it has no input to end): never "stopped" there.
    pub fn stopped(&self) -> bool {
        self.serve.get().is_none()
            && self.stop_requested.get()
            && (self.source.stopped.get() || self.left_unprocessed() > 0)
    }

    /// When every restored input had been invoked again.
    pub fn restored_at(&self) -> Option<Instant> {
        self.operators
            .iter()
            .filter_map(|t| t.restored_at.get().copied())
            .max()
    }
}

#[derive(Debug, Default)]
pub struct SourceTelemetry {
    /// Records read (malformed ones included).
    pub records: Counter,
    pub watermarks: Counter,
    /// Lines that were not JSON, sent to the dead-letter output.
    pub malformed: Counter,
    /// The source stopped because it was asked to, before the end of its input.
    pub stopped: Flag,
}

#[derive(Debug, Default)]
pub struct SinkTelemetry {
    /// Records written.
    pub records: Counter,
    pub watermarks: Counter,
    /// Dead letters written, by the source and every operator.
    pub dead_letters: Counter,
    /// Outputs of the last operator that were not JSON, among `dead_letters`.
    pub outputs_not_json: Counter,
    pub first_output_at: OnceLock<Instant>,
}

#[derive(Debug, Default)]
pub struct CheckpointTelemetry {
    /// Checkpoints stored and committed.
    pub completed: Counter,
    /// Time from trigger to stored and committed: the longest and the sum, microseconds.
    pub longest_us: Gauge,
    pub total_us: Counter,
    /// Every checkpoint's duration, microseconds.
    pub duration_us: Histogram,
    /// The size of the last completed checkpoint, bytes.
    pub last_bytes: Gauge,
    /// The id of the last completed checkpoint; 0 before any (ids start at 1).
    last_id: AtomicU64,
}

impl CheckpointTelemetry {
    /// Checkpoint `id` (`bytes` long) is stored and committed, `took` after it was triggered.
    pub fn completed(&self, id: u64, took: Duration, bytes: u64) {
        let us = took.as_micros().min(i64::MAX as u128) as i64;
        self.completed.inc();
        self.longest_us.set_max(us);
        self.total_us.add(us as u64);
        self.duration_us.record(us as u64);
        self.last_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.last_id.store(id, Ordering::Relaxed);
    }

    pub fn last_id(&self) -> Option<u64> {
        Some(self.last_id.load(Ordering::Relaxed)).filter(|id| *id > 0)
    }

    pub fn longest(&self) -> Duration {
        Duration::from_micros(self.longest_us.get().max(0) as u64)
    }
}
