//! A pipeline from its manifest to its end: source -> operators -> sink.
//!
//! Three steps, each on its own:
//! - [`build`] turns the manifest into a [`Topology`]: plugins loaded, operators constructed,
//!   outputs opened, checkpoint restored, channels made; no thread yet.
//! - [`Topology::start`] runs every stage on a thread of its own and returns the
//!   [`RunningPipeline`], which keeps the threads' handles; [`RunningPipeline::wait`] supervises
//!   them until the end and joins every one, also after an error.
//! - A [`PipelineHandle`] steers and observes the run from anywhere: `stop`, `stop_now`,
//!   `status`. SIGINT/SIGTERM are one client of it ([`signals`]).
//!
//! [`run`] does all three, as `waio run` does.

mod build;
mod handle;
mod reload;
mod running;
mod setup;
mod signals;
mod stacks;

pub use build::{build, Topology};
pub use handle::{PipelineHandle, PipelineStatus, RunState};
pub use reload::{OperatorSwapped, ReloadError, ReloadScope};
pub use running::RunningPipeline;
pub use setup::load_plugins;

use crate::checkpoint::commit::CommitError;
use crate::checkpoint::coordinator::CoordinatorError;
use crate::checkpoint::CheckpointError;
use crate::connectors::sink::SinkError;
use crate::connectors::source::SourceError;
use crate::manifest::Manifest;
use crate::metrics::RunSummary;
use crate::operator::OperatorError;
use crate::outbound::rate_limit::RedisLimitError;
use crate::plugin::PluginError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Kafka(#[from] crate::connectors::kafka::KafkaError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
    #[error("rate limit '{0}': {1}")]
    RateLimit(String, RedisLimitError),
    #[error("operator {0:?}: {1}")]
    Cache(String, crate::cache::CacheError),
    #[error("cannot start the mock provider: {0}")]
    MockProvider(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    // Not `#[from]`: that would also make the cause the `source()`, which `{:#}` repeats.
    #[error("cannot prepare the outputs: {0}")]
    Output(CommitError),
    #[error("{0}")]
    Incompatible(String),
    #[error("a pipeline stage stopped unexpectedly: {0}")]
    Stage(String),
    #[error("stopped at once: records in flight were not finished; the output holds what was completed before the stop; without [checkpoint] the next run starts from the beginning")]
    Interrupted,
    #[error("stopped at once: the next run resumes from the last complete checkpoint")]
    StoppedAtCheckpoint(Option<u64>),
}

impl From<CommitError> for PipelineError {
    fn from(error: CommitError) -> Self {
        PipelineError::Output(error)
    }
}

impl PipelineError {
    /// True for errors that only say a neighbouring stage stopped.
    fn is_consequence(&self) -> bool {
        matches!(
            self,
            PipelineError::Sink(SinkError::UpstreamFailed)
                | PipelineError::Sink(SinkError::CoordinatorGone)
                | PipelineError::Operator(OperatorError::UpstreamFailed { .. })
                | PipelineError::Operator(OperatorError::DownstreamGone { .. })
                | PipelineError::Operator(OperatorError::CoordinatorGone { .. })
                | PipelineError::Operator(OperatorError::Aborted { .. })
        )
    }
}

/// How to start a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Ignore existing checkpoints: start from the beginning of the input with empty outputs.
    pub fresh: bool,
}

/// Runs the pipeline to the end of its input (or until asked to stop by SIGINT/SIGTERM). The
/// first failing record (under the "fail" policy) or stage error stops everything and is
/// returned once every stage has ended.
pub async fn run(manifest: &Manifest, options: &RunOptions) -> Result<RunSummary, PipelineError> {
    run_observed(manifest, options, |_| {}).await
}

/// [`run`], handing the running pipeline's handle to `observe` as soon as it has started (for
/// the admin server and the progress line).
pub async fn run_observed(
    manifest: &Manifest,
    options: &RunOptions,
    observe: impl FnOnce(&PipelineHandle),
) -> Result<RunSummary, PipelineError> {
    run_built(build(manifest, options).await?, observe).await
}

/// Starts a built pipeline and runs it to its end as [`run_observed`] does (`waio serve` builds
/// its own, to feed it).
pub async fn run_built(
    topology: Topology,
    observe: impl FnOnce(&PipelineHandle),
) -> Result<RunSummary, PipelineError> {
    let running = topology.start();
    // Signals are watched from here on, as before: during loading they end the process. Before
    // `observe`, which may open a port (`waio serve`): a caller that sees it answer can stop it
    // gracefully.
    let _signals = match signals::forward(running.handle()) {
        Ok(forwarding) => forwarding,
        Err(error) => return running.abort(error).await,
    };
    observe(&running.handle());
    running.wait().await
}
