//! Run: every stage on a thread of its own, supervised until the end. The threads' handles are
//! kept: whatever ends the run (its end, an error, a stop), every stage is stopped and joined
//! before [`RunningPipeline::wait`] returns.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::build::{Controls, Topology};
use super::handle::{PipelineHandle, Request};
use super::reload::Reloader;
use super::PipelineError;
use crate::checkpoint::coordinator::{Command, Control, Event};
use crate::connectors::feed::run_feed;
use crate::connectors::sink::run_sink;
use crate::connectors::source::run_source;
use crate::metrics::RunSummary;
use crate::record::StageCommand;
use crate::telemetry::PipelineTelemetry;

/// How long stages get to end after they were told to stop at once (after an error or a
/// forced stop). A stage still running then is left behind with a warning: it is stuck in a
/// plugin call, which its call time limit ends.
const WIND_DOWN_LIMIT: Duration = Duration::from_secs(5);

type Done = (usize, Result<(), PipelineError>);

/// What a stage's thread does.
type Work = Box<dyn FnOnce() -> Result<(), PipelineError> + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageKind {
    Source,
    Operator,
    Sink,
    Coordinator,
}

struct Stage {
    kind: StageKind,
    name: String,
    thread: Option<JoinHandle<()>>,
    ended: bool,
}

/// A started pipeline. Call [`RunningPipeline::wait`] to run it to its end.
pub struct RunningPipeline {
    stages: Vec<Stage>,
    done: UnboundedReceiver<Done>,
    requests: UnboundedReceiver<Request>,
    handle: PipelineHandle,
    controls: Controls,
    telemetry: Arc<PipelineTelemetry>,
    /// Set when a stage could not be started (or the caller gave up): the run winds down.
    failure: Option<PipelineError>,
    /// Dropped when the run ends: the reloader stops with it.
    reloader_running: Option<tokio::sync::oneshot::Sender<()>>,
    _mock: Option<waio_mock_provider::MockServer>,
}

impl Topology {
    /// Starts every stage on a thread of its own: source, operators, sink, coordinator.
    pub fn start(self) -> RunningPipeline {
        let Topology {
            telemetry,
            source,
            operators,
            sink,
            coordinator,
            controls,
            mock,
            reloader,
        } = self;
        let (mut running, done_tx) = RunningPipeline::new(telemetry, controls, mock);
        running.serve_reloads(reloader);
        // A budget that runs out stops the run as a graceful stop does (at once when a resumed
        // run had already spent it).
        // (The sender, not the handle: the handle holds the telemetry, which holds the hook.)
        let requests = running.handle.requests.clone();
        running.telemetry.cost.on_stop(move || {
            let _ = requests.send(Request::Stop);
        });
        let sink_telemetry = Arc::clone(&running.telemetry.sink);
        // After a stage fails to start, the rest are not started: dropping them closes their
        // channels, which ends the ones running.
        let mut spawn = |kind, name: String, work: Work| {
            if running.failure.is_none() {
                running.spawn(kind, name, work, done_tx.clone());
            }
        };
        spawn(
            StageKind::Source,
            "waio-source".into(),
            Box::new(move || match source.feed {
                Some(feed) => {
                    run_feed(source.context, feed);
                    Ok(())
                }
                None => Ok(run_source(
                    &source.config,
                    source.context,
                    source.kafka.as_deref(),
                )?),
            }),
        );
        for (index, stage) in operators.into_iter().enumerate() {
            spawn(
                StageKind::Operator,
                format!("waio-op-{index}"),
                Box::new(move || Ok(stage.operator.run(stage.input, stage.output)?)),
            );
        }
        spawn(
            StageKind::Sink,
            "waio-sink".into(),
            Box::new(move || match sink.kafka {
                Some(kafka) => Ok(crate::connectors::kafka::sink::run(
                    kafka,
                    &sink.producer,
                    sink.input,
                    sink.reports,
                    &sink_telemetry,
                )?),
                None => Ok(run_sink(
                    &sink.config,
                    &sink.producer,
                    sink.output,
                    sink.dead_letters,
                    sink.input,
                    sink.reports,
                    &sink_telemetry,
                )?),
            }),
        );
        if let Some(coordinator) = coordinator {
            spawn(
                StageKind::Coordinator,
                "waio-checkpoint".into(),
                Box::new(move || Ok(coordinator.run()?)),
            );
        }
        running
    }
}

impl RunningPipeline {
    /// A run with no stage yet, and the sender its stages report their end on.
    fn new(
        telemetry: Arc<PipelineTelemetry>,
        controls: Controls,
        mock: Option<waio_mock_provider::MockServer>,
    ) -> (Self, UnboundedSender<Done>) {
        let (requests_tx, requests) = unbounded_channel();
        let (done_tx, done) = unbounded_channel();
        let handle = PipelineHandle {
            requests: requests_tx,
            reloads: None,
            telemetry: Arc::clone(&telemetry),
        };
        let running = RunningPipeline {
            stages: Vec::new(),
            done,
            requests,
            handle,
            controls,
            telemetry,
            failure: None,
            reloader_running: None,
            _mock: mock,
        };
        (running, done_tx)
    }

    fn spawn(&mut self, kind: StageKind, name: String, work: Work, done: UnboundedSender<Done>) {
        let index = self.stages.len();
        let label = name.clone();
        let spawned = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                // A panic is this stage's failure, reported like any other.
                let result =
                    std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|m| m.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(PipelineError::Stage(format!("{label} panicked: {message}")))
                    });
                let _ = done.send((index, result));
            });
        match spawned {
            Ok(thread) => self.stages.push(Stage {
                kind,
                name,
                thread: Some(thread),
                ended: false,
            }),
            Err(e) => {
                self.failure = Some(PipelineError::Stage(format!("cannot start a thread: {e}")))
            }
        }
    }

    /// Runs the reloader on the current tokio runtime until the run ends; the handle's reloads
    /// go to it.
    fn serve_reloads(&mut self, reloader: Reloader) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no tokio runtime: hot reload is off for this run");
            return;
        };
        let (requests_tx, requests) = unbounded_channel();
        let (running_tx, running) = tokio::sync::oneshot::channel();
        self.handle.reloads = Some(requests_tx);
        self.reloader_running = Some(running_tx);
        runtime.spawn(reloader.serve(requests, running));
    }

    /// Steers and observes this run.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Runs to the end of the input, a stop, or the first error; then stops and joins every
    /// stage and returns the summary, or the error that ended the run.
    pub async fn wait(mut self) -> Result<RunSummary, PipelineError> {
        let outcome = match self.failure.take() {
            Some(error) => Err(error),
            None => self.supervise().await,
        };
        if outcome.is_err() {
            self.wind_down().await;
        }
        self.join().await;
        self.reloader_running = None;
        self.telemetry.ended.set();
        outcome.map(|()| RunSummary::read(&self.telemetry))
    }

    /// Ends the run with `error`: every stage is stopped and joined.
    pub async fn abort(mut self, error: PipelineError) -> Result<RunSummary, PipelineError> {
        self.failure = Some(error);
        self.wait().await
    }

    fn running(&self) -> usize {
        self.stages.iter().filter(|s| !s.ended).count()
    }

    /// Waits for every stage to end, answering the handle's requests meanwhile. The first
    /// error that is not only the consequence of another stage stopping is returned at once.
    async fn supervise(&mut self) -> Result<(), PipelineError> {
        let mut consequence: Option<PipelineError> = None;
        while self.running() > 0 {
            tokio::select! {
                done = self.done.recv() => {
                    let Some((index, result)) = done else { break };
                    self.stages[index].ended = true;
                    match result {
                        Ok(()) => {}
                        // A stage that stopped because its neighbour did is not the cause:
                        // keep listening for the stage that failed first.
                        Err(error) if error.is_consequence() => {
                            consequence.get_or_insert(error);
                        }
                        Err(error) => return Err(error),
                    }
                }
                Some(request) = self.requests.recv() => match request {
                    Request::Stop => self.stop(),
                    Request::StopNow => return Err(self.stop_now().await),
                },
            }
        }
        consequence.map_or(Ok(()), Err)
    }

    /// A graceful stop: the first operator admits nothing more and says what that leaves out;
    /// the source reads no more.
    fn stop(&self) {
        if self.telemetry.stop_requested.get() {
            return;
        }
        tracing::debug!("stopping: nothing new is invoked, what is in flight is finished");
        self.telemetry.stop_requested.set();
        self.command_operators(StageCommand::Stop);
        let _ = self.controls.source.send(Control::Stop);
    }

    /// A stop at once: the error the run ends with. With checkpoints, it waits until a
    /// checkpoint taken now is stored: what is still in flight is in it and will be invoked
    /// again by the next run. The stages are then wound down.
    async fn stop_now(&self) -> PipelineError {
        let Some((commands, events)) = &self.controls.coordinator else {
            tracing::warn!("stopping at once: records in flight are not finished");
            return PipelineError::Interrupted;
        };
        tracing::warn!("stopping at once: in-flight records stay in the checkpoint");
        let _ = commands.send(Command::CheckpointNow);
        let events = events.clone();
        match tokio::task::spawn_blocking(move || events.recv()).await {
            Ok(Ok(Event::StopCheckpointDone(id))) => PipelineError::StoppedAtCheckpoint(id),
            _ => PipelineError::Interrupted,
        }
    }

    fn command_operators(&self, command: StageCommand) {
        for commands in &self.controls.operators {
            let _ = commands.send(command);
        }
    }

    /// Ends every stage still running after an error or a forced stop: the operators end at
    /// once (the sink writes out what reached it, the coordinator stores nothing more); once
    /// they have, the source is told to stop too (an idle stdin would otherwise keep it
    /// waiting for a line).
    async fn wind_down(&mut self) {
        self.command_operators(StageCommand::Abort);
        let deadline = tokio::time::Instant::now() + WIND_DOWN_LIMIT;
        let mut source_told = false;
        while self.running() > 0 {
            let operators_ended = self
                .stages
                .iter()
                .all(|s| s.ended || s.kind != StageKind::Operator);
            if operators_ended && !source_told {
                let _ = self.controls.source.send(Control::Stop);
                source_told = true;
            }
            match tokio::time::timeout_at(deadline, self.done.recv()).await {
                Ok(Some((index, _))) => self.stages[index].ended = true,
                Ok(None) => break,
                Err(_) => {
                    let stuck: Vec<&str> = self
                        .stages
                        .iter()
                        .filter(|s| !s.ended)
                        .map(|s| s.name.as_str())
                        .collect();
                    tracing::warn!(
                        "stages still running {}s after the stop, left behind: {}",
                        WIND_DOWN_LIMIT.as_secs(),
                        stuck.join(", ")
                    );
                    return;
                }
            }
        }
    }

    /// Joins every stage that ended (their threads are past their last step).
    async fn join(&mut self) {
        let threads: Vec<(String, JoinHandle<()>)> = self
            .stages
            .iter_mut()
            .filter(|s| s.ended)
            .filter_map(|s| Some((s.name.clone(), s.thread.take()?)))
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for (name, thread) in threads {
                if thread.join().is_err() {
                    tracing::warn!("stage {name} panicked after it ended");
                }
            }
        });
        let _ = joined.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use crossbeam_channel::Receiver;

    use super::*;
    use crate::pipeline::RunState;
    use crate::record::CommandReceiver;

    /// A run whose stages are fakes steered through the channels the real ones use.
    fn fake_run(
        operators: usize,
    ) -> (
        RunningPipeline,
        UnboundedSender<Done>,
        Vec<CommandReceiver>,
        Receiver<Control>,
    ) {
        let (commands, command_rxs): (Vec<_>, Vec<_>) = (0..operators)
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let (source, source_rx) = crossbeam_channel::unbounded();
        let controls = Controls {
            operators: commands,
            source,
            coordinator: None,
        };
        let telemetry = Arc::new(PipelineTelemetry::new("fake", Instant::now(), false));
        let (running, done) = RunningPipeline::new(telemetry, controls, None);
        (running, done, command_rxs, source_rx)
    }

    /// An operator that runs until it is told `until`, then ends; `ended` says it has.
    fn operator(commands: CommandReceiver, until: StageCommand, ended: Arc<AtomicBool>) -> Work {
        Box::new(move || {
            while let Ok(command) = commands.recv() {
                if command == until {
                    break;
                }
            }
            ended.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    /// The sink fails (panics) while the operators and the source wait for work: the operators are
    /// aborted, the source is told to stop only once they have ended (a source waiting on an
    /// idle stdin would wait forever otherwise), and every thread is joined before the error
    /// comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_failing_stage_stops_and_joins_every_other() {
        let (mut running, done, commands, source_control) = fake_run(2);
        let ended: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::default()).collect();
        let source_saw_operators_ended = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&source_saw_operators_ended);
        let watched = ended.clone();
        running.spawn(
            StageKind::Source,
            "test-source".into(),
            Box::new(move || {
                let _ = source_control.recv();
                let all = watched.iter().all(|e| e.load(Ordering::SeqCst));
                seen.store(all, Ordering::SeqCst);
                Ok(())
            }),
            done.clone(),
        );
        for (rx, ended) in commands.into_iter().zip(&ended) {
            let work = operator(rx, StageCommand::Abort, Arc::clone(ended));
            running.spawn(StageKind::Operator, "test-op".into(), work, done.clone());
        }
        running.spawn(
            StageKind::Sink,
            "test-sink".into(),
            Box::new(|| panic!("disk full")),
            done,
        );
        let handle = running.handle();
        let error = running.wait().await.expect_err("the sink failed");
        assert_eq!(
            error.to_string(),
            "a pipeline stage stopped unexpectedly: test-sink panicked: disk full"
        );
        assert!(source_saw_operators_ended.load(Ordering::SeqCst));
        // Every stage's closure is gone: its thread ended.
        assert_eq!(Arc::strong_count(&source_saw_operators_ended), 1);
        assert!(ended.iter().all(|e| Arc::strong_count(e) == 1));
        assert_eq!(handle.status().state, RunState::Ended);
    }

    /// `stop()` on the handle asks the operators and the source to stop gracefully; the run
    /// ends with its summary once they have.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn stop_through_the_handle_reaches_the_operators_and_the_source() {
        let (mut running, done, commands, source_control) = fake_run(1);
        running.spawn(
            StageKind::Source,
            "test-source".into(),
            Box::new(move || match source_control.recv() {
                Ok(Control::Stop) => Ok(()),
                Err(_) => Err(PipelineError::Stage("no stop reached the source".into())),
            }),
            done.clone(),
        );
        let ended = Arc::new(AtomicBool::new(false));
        let [rx] = <[_; 1]>::try_from(commands).ok().unwrap();
        let work = operator(rx, StageCommand::Stop, Arc::clone(&ended));
        running.spawn(StageKind::Operator, "test-op".into(), work, done);
        let handle = running.handle();
        assert_eq!(handle.status().state, RunState::Running);
        handle.stop();
        let summary = running.wait().await.expect("a graceful stop ends the run");
        assert_eq!(summary.pipeline, "fake");
        assert!(ended.load(Ordering::SeqCst));
        assert_eq!(handle.status().state, RunState::Ended);
    }
}
