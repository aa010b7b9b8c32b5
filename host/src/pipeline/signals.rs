//! SIGINT and SIGTERM as a client of the pipeline's handle: the first asks for a graceful stop,
//! any later one for a stop at once.

use super::{PipelineError, PipelineHandle};

/// Forwards signals to `handle` until the returned guard is dropped.
pub(super) fn forward(handle: PipelineHandle) -> Result<Forwarding, PipelineError> {
    let mut signals = Signals::new()?;
    let task = tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("stop requested: nothing new is invoked, what is in flight is finished (signal again to stop at once)");
        handle.stop();
        loop {
            signals.next().await;
            handle.stop_now();
        }
    });
    Ok(Forwarding(task))
}

/// Ends the forwarding when dropped (the run ended, or its future was dropped).
pub(super) struct Forwarding(tokio::task::JoinHandle<()>);

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.abort();
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
