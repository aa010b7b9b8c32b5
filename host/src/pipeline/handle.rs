//! The control handle of a running pipeline: what signals, and later a status page, a metrics
//! endpoint and hot reload, use to steer and observe a run.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::reload::{OperatorSwapped, ReloadError, ReloadRequest, ReloadScope};
use crate::metrics::RunSummary;
use crate::telemetry::PipelineTelemetry;

/// What the handle asks of the pipeline's supervisor ([`super::RunningPipeline::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request {
    Stop,
    StopNow,
}

/// Steers and observes one run; cheap to clone, usable from any thread or task. Requests made
/// after the run ended are ignored.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    pub(super) requests: UnboundedSender<Request>,
    /// Hot reloads go to the run's reloader (`None`: a run without one).
    pub(super) reloads: Option<UnboundedSender<ReloadRequest>>,
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

    /// Reads the manifest and the plugin files again and swaps in what changed (for the
    /// operators of `scope`); answers what was swapped, or why nothing was. Reloads are made
    /// one at a time, in the order asked.
    pub async fn reload(&self, scope: ReloadScope) -> Result<Vec<OperatorSwapped>, ReloadError> {
        let (answer_tx, answer) = oneshot::channel();
        let sent = self.reloads.as_ref().map(|r| r.send((scope, answer_tx)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(ReloadError::Ended);
        }
        answer.await.unwrap_or(Err(ReloadError::Ended))
    }

    /// [`Self::reload`] without waiting for the answer (the reloader logs it): for signals
    /// and the file watcher.
    pub fn request_reload(&self, scope: ReloadScope) {
        let (answer_tx, _) = oneshot::channel();
        if let Some(reloads) = &self.reloads {
            let _ = reloads.send((scope, answer_tx));
        }
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
