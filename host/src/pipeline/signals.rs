//! Signals as a client of the pipeline's handle: the first SIGINT or SIGTERM asks for a
//! graceful stop, any later one for a stop at once; SIGHUP asks for a hot reload.

use super::{PipelineError, PipelineHandle, ReloadScope};

/// Forwards signals to `handle` until the returned guard is dropped.
pub(super) fn forward(handle: PipelineHandle) -> Result<Forwarding, PipelineError> {
    let mut signals = Signals::new()?;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| PipelineError::Stage(format!("cannot watch signals: {e}")))?;
    let reloads = handle.clone();
    let hangup_task = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the manifest and the plugins");
            reloads.request_reload(ReloadScope::All);
        }
    });
    let task = tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("stop requested: nothing new is invoked, what is in flight is finished (signal again to stop at once)");
        handle.stop();
        loop {
            signals.next().await;
            handle.stop_now();
        }
    });
    Ok(Forwarding(task, hangup_task))
}

/// Ends the forwarding when dropped (the run ended, or its future was dropped).
pub(super) struct Forwarding(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>);

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.abort();
        self.1.abort();
    }
}

/// SIGINT and SIGTERM, as one stream.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, PipelineError> {
        use tokio::signal::unix::{signal, SignalKind};
        let err = |e: std::io::Error| PipelineError::Stage(format!("cannot watch signals: {e}"));
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).map_err(err)?,
            terminate: signal(SignalKind::terminate()).map_err(err)?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}
