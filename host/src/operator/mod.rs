//! The async-wait operator: Flink's `AsyncWaitOperator` with a WebAssembly plugin as the
//! `AsyncFunction`.
//!
//! One thread owns the operator: its queue, its plugin instances and its timers. It reacts to
//! three things (input, HTTP answers, timer expiry) and after each one emits whatever the queue
//! lets leave. Capacity bounds the queue; while it is full the thread stops reading input, which
//! backs up the channel and so the source (backpressure), while answers, timers and emission go on.
//! A checkpoint barrier in the input makes it report the inputs of its queue and pass the barrier on.
//!
//! The parts: [`semantics`], the core, holds Flink's semantics without I/O (queue, completion,
//! failure policy, timers, re-invocation after traps, the requests-in-flight bound) and sees the
//! plugin only through [`crate::plugin::function::AsyncFunction`]; [`mailbox`] is the thread's
//! loop that feeds it input, answers, commands and the time; [`queue`], [`timers`] and
//! [`in_flight`] are the core's tables; [`retry`] decides when a record is invoked again
//! (`[operator.async_retry]`).

mod in_flight;
mod mailbox;
pub mod queue;
pub mod reload;
pub mod result_cache;
mod retry;
mod semantics;
#[cfg(test)]
mod tests;
mod timers;

use std::sync::Arc;

use crate::checkpoint::coordinator::ReportSender;
use crate::checkpoint::SourcePosition;
use crate::cost::CostControl;
use crate::manifest::OperatorConfig;
use crate::outbound::Outbound;
use crate::plugin::function::{FreshInstanceError, WasmFunction};
use crate::plugin::{GuestTrap, PluginComponent, PluginError};
use crate::record::{CommandReceiver, Element};
use crate::telemetry::OperatorTelemetry;

use self::result_cache::ResultCache;
use self::semantics::{CallDone, OperatorCore};

/// How often a record may be invoked again into a fresh instance after its instance trapped
/// while serving another record, before it fails: a cascade of traps must not keep the operator
/// busy forever.
pub const MAX_REINVOCATIONS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("operator {operator:?}: record {record} failed: {message}")]
    RecordFailed {
        operator: String,
        record: String,
        message: String,
    },
    #[error("operator {operator:?}: could not complete the stream element {record}: timed out after {timeout}{detail}")]
    TimedOut {
        operator: String,
        record: String,
        timeout: String,
        detail: String,
    },
    // The message includes the cause, so it is not also a `source()`: `{:#}` would repeat it.
    #[error("operator {operator:?}: {cause}")]
    Plugin {
        operator: String,
        cause: PluginError,
    },
    #[error("operator {operator:?}: plugin trapped while opening a fresh instance: {trap}")]
    OpenTrapped { operator: String, trap: GuestTrap },
    #[error("operator {operator:?}: the checkpoint coordinator stopped")]
    CoordinatorGone { operator: String },
    #[error("operator {operator:?}: the stage before it stopped without finishing")]
    UpstreamFailed { operator: String },
    #[error("operator {operator:?}: the next stage stopped")]
    DownstreamGone { operator: String },
    #[error("operator {operator:?}: stopped at once, records in flight were not finished")]
    Aborted { operator: String },
    #[error("operator {operator:?}: {cause}")]
    Cache {
        operator: String,
        cause: crate::cache::CacheError,
    },
}

pub struct AsyncWaitOperator {
    core: OperatorCore<WasmFunction>,
    outbound: Arc<Outbound>,
    /// Where HTTP requests run; their answers come back on `answers`.
    runtime: tokio::runtime::Handle,
    answers_tx: crossbeam_channel::Sender<CallDone>,
    answers_rx: crossbeam_channel::Receiver<CallDone>,
    /// Position in the chain, for checkpoint reports.
    index: usize,
    reports: Option<ReportSender>,
    /// Inputs restored from a checkpoint, admitted before any new input.
    restored: Vec<Element>,
    /// Checkpoint, stop and abort commands from the pipeline.
    commands: Option<CommandReceiver>,
    /// The latest checkpoint started, and the last barrier seen here: while one is on its way a
    /// later operator reads its input without bound (the barrier is at most a channel's depth
    /// away), so the barrier never waits for records to find room in the queue.
    barrier_wanted: u64,
    last_barrier: u64,
    /// The source position after the last batch taken (first operator): where a checkpoint cut
    /// here resumes reading.
    upstream_position: SourcePosition,
    /// Asked to stop (first operator): admit nothing more, finish what is in flight, end.
    stopping: bool,
    /// The run's budget: the first operator admits nothing while it pauses or stops the run.
    cost: Arc<CostControl>,
    /// While the budget pauses admissions: until when.
    paused_until: Option<std::time::Instant>,
    telemetry: Arc<OperatorTelemetry>,
    /// Next versions from hot reloads ([`reload`]).
    reloads_tx: reload::ReloadSender,
    reloads_rx: reload::ReloadReceiver,
}

impl AsyncWaitOperator {
    /// Makes and opens the plugin instances. Fails if the plugin cannot be opened.
    pub fn new(
        config: OperatorConfig,
        component: Arc<PluginComponent>,
        outbound: Arc<Outbound>,
        source_label: Arc<str>,
        runtime: tokio::runtime::Handle,
        reports: Option<ReportSender>,
        telemetry: Arc<OperatorTelemetry>,
    ) -> Result<Self, OperatorError> {
        let result_cache = match &config.cache {
            None => None,
            Some(cache) => Some(
                ResultCache::open(
                    cache,
                    &component.sha256,
                    &config.config_json,
                    Arc::clone(&telemetry.result_cache),
                )
                .map_err(|cause| OperatorError::Cache {
                    operator: config.name.clone(),
                    cause,
                })?,
            ),
        };
        let function = WasmFunction::open(component, &config.config_json, config.instances)
            .map_err(|e| fresh_instance_failed(&config.name, e))?;
        let (answers_tx, answers_rx) = crossbeam_channel::unbounded();
        let (reloads_tx, reloads_rx) = crossbeam_channel::unbounded();
        let index = config.index;
        let mut core = OperatorCore::new(config, function, source_label, Arc::clone(&telemetry));
        if let Some(cache) = result_cache {
            core.use_result_cache(cache);
        }
        Ok(AsyncWaitOperator {
            core,
            outbound,
            runtime,
            answers_tx,
            answers_rx,
            index,
            reports,
            restored: Vec::new(),
            commands: None,
            barrier_wanted: 0,
            last_barrier: 0,
            upstream_position: SourcePosition::default(),
            stopping: false,
            cost: Arc::default(),
            paused_until: None,
            telemetry,
            reloads_tx,
            reloads_rx,
        })
    }

    /// Inputs from a checkpoint's snapshot of this operator: invoked again, in their order,
    /// before any new input (FLINK-SEMANTICS 28). More than `capacity` of them is fine: they are
    /// admitted as room frees up, like input (29).
    pub fn restore(&mut self, elements: Vec<Element>) {
        self.restored = elements;
    }

    /// The run's cost accounts and budget: usage is priced and charged there, and the first
    /// operator asks it before admitting a record.
    pub fn account_cost(&mut self, cost: Arc<CostControl>) {
        self.core.account_cost(Arc::clone(&cost));
        self.cost = cost;
    }

    /// Where the pipeline's commands (checkpoint, stop, abort) arrive, and the source position
    /// the run starts from (the first operator reports it with the checkpoints it cuts).
    pub fn follow_commands(&mut self, commands: CommandReceiver, start: SourcePosition) {
        self.commands = Some(commands);
        self.upstream_position = start;
    }
}

/// The error of an operator whose plugin could not give it a fresh instance.
fn fresh_instance_failed(operator: &str, error: FreshInstanceError) -> OperatorError {
    let operator = operator.to_string();
    match error {
        FreshInstanceError::Plugin(cause) => OperatorError::Plugin { operator, cause },
        FreshInstanceError::OpenTrapped(trap) => OperatorError::OpenTrapped { operator, trap },
    }
}
