//! The control handle of a running pipeline: what signals, and later a status page, a metrics
//! endpoint and hot reload, use to steer and observe a run.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::RunSummary;
use crate::telemetry::PipelineTelemetry;

/// What the handle asks of the pipeline's supervisor ([`super::RunningPipeline::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request {
    Stop,
    StopNow,
    // Hot reload goes here (not built yet): `Reload(Box<Manifest>)`, answered through a
    // oneshot channel. The supervisor would check the new manifest against the running
    // topology (same operators by name), then hand each changed operator its new config or
    // plugin between two records, as a `StageCommand`, the way checkpoints and stops reach
    // the operators today; `PipelineHandle::reload(manifest)` would send it and await the
    // answer.
}

/// Steers and observes one run; cheap to clone, usable from any thread or task. Requests made
/// after the run ended are ignored.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    pub(super) requests: UnboundedSender<Request>,
    pub(super) telemetry: Arc<PipelineTelemetry>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// A stop was asked for: nothing new is invoked, what is in flight is finished.
    Stopping,
    /// Every stage has ended.
    Ended,
}

/// A snapshot of a run, read from its live telemetry.
#[derive(Debug, Clone)]
pub struct PipelineStatus {
    pub state: RunState,
    /// The values so far, as the run summary shows them at the end.
    pub summary: RunSummary,
}

impl PipelineHandle {
    /// A graceful stop, as the first SIGINT/SIGTERM: nothing new is invoked, what is in flight
    /// is finished, then the run ends (with a final checkpoint when checkpointing is on).
    pub fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
    }

    /// A stop at once, as a second SIGINT/SIGTERM: without checkpoints, records in flight are
    /// not finished; with them, the run ends as soon as a checkpoint taken now is stored. The
    /// run then ends with [`super::PipelineError::Interrupted`] or
    /// [`super::PipelineError::StoppedAtCheckpoint`].
    pub fn stop_now(&self) {
        let _ = self.requests.send(Request::StopNow);
    }

    /// What the run has done so far.
    pub fn status(&self) -> PipelineStatus {
        let state = if self.telemetry.ended.get() {
            RunState::Ended
        } else if self.telemetry.stop_requested.get() {
            RunState::Stopping
        } else {
            RunState::Running
        };
        PipelineStatus {
            state,
            summary: RunSummary::read(&self.telemetry),
        }
    }

    /// The live registry the status is read from (for a metrics endpoint).
    pub fn telemetry(&self) -> &Arc<PipelineTelemetry> {
        &self.telemetry
    }
}
