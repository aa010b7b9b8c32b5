//! Builds a pipeline from its manifest and runs it: source -> operators -> sink.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::commit::{recover, start_fresh, CommitError, OutputFile};
use crate::checkpoint::coordinator::{
    Command, Control, Coordinator, CoordinatorError, CoordinatorReport, Event,
};
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, OperatorSnapshot};
use crate::connectors::sink::{run_sink, SinkError, SinkOutput, SinkReport};
use crate::connectors::source::{
    run_source, source_label, SourceContext, SourceError, SourceReport,
};
use crate::manifest::{CheckpointConfig, HttpVersion, Manifest, SinkConfig};
use crate::metrics::{process_usage, OperatorSummary, RunSummary};
use crate::operator::{AsyncWaitOperator, OperatorError};
use crate::outbound::Outbound;
use crate::plugin::{new_engine, CompileCache, InstanceLimits, PluginComponent, PluginError};
use crate::record::stage_channel;
use crate::record::{CommandSender, StageCommand};
use crate::telemetry::OperatorTelemetry;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
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

/// Loads and type-checks every plugin of the manifest.
pub fn load_plugins(manifest: &Manifest) -> Result<Vec<Arc<PluginComponent>>, PipelineError> {
    let engine = new_engine()?;
    let cache = CompileCache::from_env();
    manifest
        .operators
        .iter()
        .map(|op| {
            let limits = InstanceLimits {
                memory_bytes: op.memory_limit,
                call_time_limit: op.call_time_limit,
            };
            PluginComponent::load(&engine, &op.name, &op.plugin, &op.plugin_at, limits, &cache)
                .map(Arc::new)
                .map_err(PipelineError::from)
        })
        .collect()
}

enum StageDone {
    Source(SourceReport),
    Operator,
    Sink(SinkReport),
    Coordinator(CoordinatorReport),
}

/// How to start a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Ignore existing checkpoints: start from the beginning of the input with empty outputs.
    pub fresh: bool,
}

/// The checkpoint store and where this run starts, when checkpointing is on.
struct CheckpointSetup {
    store: CheckpointStore,
    config: CheckpointConfig,
    /// The checkpoint this run resumes from.
    resume: Option<Checkpoint>,
}

/// Opens the checkpoint store and picks the checkpoint to resume from (the latest complete one,
/// unless `fresh`, or unless it marks a finished job).
fn open_checkpoints(
    manifest: &Manifest,
    components: &[Arc<PluginComponent>],
    options: &RunOptions,
) -> Result<Option<CheckpointSetup>, PipelineError> {
    let Some(config) = manifest.checkpoint.clone() else {
        return Ok(None);
    };
    let store = CheckpointStore::open(&config.dir)?;
    let latest = if options.fresh { None } else { store.latest()? };
    let resume = match latest {
        None => None,
        Some((checkpoint, warnings)) => {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            if checkpoint.finished {
                tracing::info!(
                    checkpoint = checkpoint.id,
                    "the last run finished its input: starting from the beginning"
                );
                None
            } else {
                check_compatible(manifest, components, &checkpoint, &config)?;
                Some(checkpoint)
            }
        }
    };
    Ok(Some(CheckpointSetup {
        store,
        config,
        resume,
    }))
}

/// A checkpoint restores into the same chain of operators (by name); capacity, mode and plugin
/// version may differ (FLINK-SEMANTICS 29).
fn check_compatible(
    manifest: &Manifest,
    components: &[Arc<PluginComponent>],
    checkpoint: &Checkpoint,
    config: &CheckpointConfig,
) -> Result<(), PipelineError> {
    let wanted: Vec<&str> = manifest.operators.iter().map(|o| o.name.as_str()).collect();
    let stored: Vec<&str> = checkpoint
        .operators
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    if wanted != stored {
        return Err(PipelineError::Incompatible(format!(
            "checkpoint {} in {} was taken with operators [{}] but the manifest has [{}]; run with --fresh to start over",
            checkpoint.id,
            config.dir.display(),
            stored.join(", "),
            wanted.join(", ")
        )));
    }
    for (snapshot, component) in checkpoint.operators.iter().zip(components) {
        if snapshot.plugin_sha256 != component.sha256 {
            tracing::info!(
                operator = %snapshot.name,
                "plugin changed since checkpoint {} ({} -> {}): its {} restored records run on the new version",
                checkpoint.id,
                short(&snapshot.plugin_sha256),
                short(&component.sha256),
                snapshot.records_in_flight()
            );
        }
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Opens the sink's output and dead-letter files: directly without checkpoints; as
/// transactions otherwise, first finishing the commit of the checkpoint resumed from.
fn open_outputs(
    manifest: &Manifest,
    checkpoints: Option<&CheckpointSetup>,
) -> Result<(SinkOutput, OutputFile), PipelineError> {
    let dead_target = &manifest.dead_letter.path;
    let output_target = match &manifest.sink {
        SinkConfig::File { path, .. } => Some(path.as_path()),
        _ => None,
    };
    let Some(setup) = checkpoints else {
        let output = match output_target {
            Some(path) => SinkOutput::File(OutputFile::direct(path, false)?),
            None if matches!(manifest.sink, SinkConfig::Stdout { .. }) => SinkOutput::Stdout,
            None => SinkOutput::Discard,
        };
        return Ok((output, OutputFile::direct(dead_target, true)?));
    };
    let parts = setup.config.dir.join("parts");
    // Higher than every stored checkpoint's id, so no part of this run takes a stored name.
    let run = setup.store.next_id()?;
    let resumed = setup.resume.as_ref().map(|c| &c.sink);
    let open = |target: &std::path::Path,
                name: &'static str,
                lazy: bool,
                pending: Option<&crate::checkpoint::PendingCommit>|
     -> Result<OutputFile, PipelineError> {
        let committed = match pending {
            Some(pending) if pending.target == target => recover(pending, &parts, name)?,
            _ => {
                start_fresh(target, &parts, name)?;
                0
            }
        };
        Ok(OutputFile::transactional(
            target, lazy, &parts, name, committed, run,
        ))
    };
    let output = match output_target {
        Some(path) => SinkOutput::File(open(
            path,
            "output",
            false,
            resumed.and_then(|s| s.output.as_ref()),
        )?),
        None if matches!(manifest.sink, SinkConfig::Stdout { .. }) => SinkOutput::Stdout,
        None => SinkOutput::Discard,
    };
    let dead_letters = open(
        dead_target,
        "dead-letters",
        true,
        resumed.and_then(|s| s.dead_letters.as_ref()),
    )?;
    Ok((output, dead_letters))
}

/// Runs the pipeline to the end of its input (or until asked to stop by SIGINT/SIGTERM). The
/// first failing record (under the "fail" policy) or stage error stops everything and is
/// returned.
pub async fn run(manifest: &Manifest, options: &RunOptions) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    // A missing input is found before seconds of plugin loading.
    crate::connectors::source::check_input(&manifest.source)?;
    let _mock = match &manifest.mock_provider {
        Some(cfg) => Some(start_mock(cfg).await?),
        None => None,
    };
    let components = load_plugins(manifest)?;
    let label: Arc<str> = Arc::from(source_label(&manifest.source));
    let mut checkpoints = open_checkpoints(manifest, &components, options)?;
    let (sink_output, dead_letter_output) = open_outputs(manifest, checkpoints.as_ref())?;
    let (report_tx, report_rx) = crossbeam_channel::unbounded();
    let reports = checkpoints.as_ref().map(|_| report_tx.clone());
    drop(report_tx);
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    // The outputs are recovered: what is left of the checkpoint is the state to restore.
    let mut resume = checkpoints.as_mut().and_then(|c| c.resume.take());
    let restored_from = resume.as_ref().map(|c| c.id);
    let mut restored_in_flight = 0u64;
    if let Some(checkpoint) = &resume {
        tracing::info!(
            checkpoint = checkpoint.id,
            line = checkpoint.source.lines,
            "resuming from checkpoint {} (input line {}, {} records in flight)",
            checkpoint.id,
            checkpoint.source.lines,
            checkpoint
                .operators
                .iter()
                .map(|o| o.records_in_flight())
                .sum::<usize>()
        );
    }

    let start_position = resume
        .as_ref()
        .map(|c| c.source.clone())
        .unwrap_or_default();
    let mut operator_commands: Vec<CommandSender> = Vec::new();
    // Open every plugin before reading any input, so a bad config fails fast.
    let mut operators = Vec::new();
    let mut telemetry: Vec<Arc<OperatorTelemetry>> = Vec::new();
    let mut identities = Vec::new();
    // One client per HTTP version, shared by the operators that use it.
    let mut clients: HashMap<HttpVersion, reqwest::Client> = HashMap::new();
    for (index, (config, component)) in manifest.operators.iter().zip(components).enumerate() {
        let client = match clients.entry(config.http_version) {
            Entry::Occupied(known) => known.get().clone(),
            Entry::Vacant(slot) => slot
                .insert(
                    Outbound::client(config.http_version)
                        .map_err(|e| PipelineError::Http(e.to_string()))?,
                )
                .clone(),
        };
        let outbound = Arc::new(Outbound::for_operator(
            client,
            &config.allowed_hosts,
            &config.secrets,
            config.http_timeout,
        ));
        identities.push(OperatorSnapshot {
            name: config.name.clone(),
            plugin: config.plugin.display().to_string(),
            plugin_sha256: component.sha256.clone(),
            capacity: config.capacity as u64,
            ordered: config.ordered,
            watermark: None,
            elements: Vec::new(),
        });
        let operator_telemetry = Arc::new(OperatorTelemetry::new(&config.name));
        let mut operator = AsyncWaitOperator::new(
            config.clone(),
            component,
            outbound,
            Arc::clone(&label),
            tokio::runtime::Handle::current(),
            reports.clone(),
            Arc::clone(&operator_telemetry),
        )?;
        telemetry.push(operator_telemetry);
        if let Some(snapshot) = resume.as_mut().and_then(|c| c.operators.get_mut(index)) {
            restored_in_flight += snapshot.records_in_flight() as u64;
            operator.restore(std::mem::take(&mut snapshot.elements));
        }
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        operator.follow_commands(commands_rx, start_position.clone());
        operator_commands.push(commands_tx);
        operators.push(operator);
    }

    // Every stage runs on a thread of its own and reports here when it ends.
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Result<StageDone, PipelineError>)>();
    let coordinated = checkpoints.is_some();
    let stage_count = operators.len() + 2 + usize::from(coordinated);
    let spawn =
        |index: usize,
         name: String,
         work: Box<dyn FnOnce() -> Result<StageDone, PipelineError> + Send>| {
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let _ = done_tx.send((index, work()));
                })
                .map(|_| ())
                .map_err(|e| PipelineError::Stage(format!("cannot start a thread: {e}")))
        };

    let (command_tx, command_rx) = crossbeam_channel::unbounded();
    let (event_tx, event_rx) = crossbeam_channel::unbounded::<Event>();
    let (source_tx, mut upstream) = stage_channel();
    if let Some(setup) = checkpoints {
        let next_id = setup.store.next_id()?;
        let coordinator = Coordinator {
            store: setup.store,
            interval: setup.config.interval,
            retained: setup.config.retained,
            operators: identities,
            next_id,
            operator_commands: operator_commands.clone(),
            reports: report_rx,
            commands: command_rx,
            events: event_tx,
        };
        spawn(
            stage_count - 1,
            "waio-checkpoint".into(),
            Box::new(move || Ok(StageDone::Coordinator(coordinator.run()?))),
        )?;
    } else {
        drop(report_rx);
        drop(event_tx);
    }

    {
        let source = manifest.source.clone();
        let context = SourceContext {
            tx: source_tx,
            control: control_rx,
            start: start_position,
            event_time: manifest.event_time.clone(),
        };
        spawn(
            0,
            "waio-source".into(),
            Box::new(move || Ok(StageDone::Source(run_source(&source, context)?))),
        )?;
    }
    for (index, operator) in operators.into_iter().enumerate() {
        let (tx, rx) = stage_channel();
        let input = std::mem::replace(&mut upstream, rx);
        spawn(
            index + 1,
            format!("waio-op-{index}"),
            Box::new(move || {
                operator.run(input, tx)?;
                Ok(StageDone::Operator)
            }),
        )?;
    }
    {
        let sink = manifest.sink.clone();
        // Outputs come from the last operator; the sink dead-letters those that are not JSON.
        let producer = manifest
            .operators
            .last()
            .map_or_else(String::new, |op| op.name.clone());
        let sink_reports = reports.clone();
        spawn(
            manifest.operators.len() + 1,
            "waio-sink".into(),
            Box::new(move || {
                Ok(StageDone::Sink(run_sink(
                    &sink,
                    &producer,
                    sink_output,
                    dead_letter_output,
                    upstream,
                    sink_reports,
                )?))
            }),
        )?;
    }
    drop(reports);
    drop(done_tx);

    let mut signals = Signals::new()?;
    let mut stop_requested = false;
    let command_all = |command: StageCommand| {
        for commands in &operator_commands {
            let _ = commands.send(command);
        }
    };
    let mut source_report = SourceReport::default();
    let mut sink_report = SinkReport::default();
    let mut coordinator_report = CoordinatorReport::default();
    let mut consequence: Option<PipelineError> = None;
    let mut finished = 0;
    while finished < stage_count {
        let next = tokio::select! {
            next = done_rx.recv() => next,
            () = signals.next() => {
                if !stop_requested {
                    stop_requested = true;
                    tracing::warn!("stop requested: nothing new is invoked, what is in flight is finished (signal again to stop at once)");
                    // The first operator admits nothing more and says what that leaves out.
                    command_all(StageCommand::Stop);
                    let _ = control_tx.send(Control::Stop);
                    continue;
                }
                if !coordinated {
                    // End every operator at once; the sink writes out what reached it.
                    tracing::warn!("stopping at once: records in flight are not finished");
                    command_all(StageCommand::Abort);
                    wait_for_sink(&mut done_rx, manifest.operators.len() + 1).await;
                    return Err(PipelineError::Interrupted);
                }
                // Exit as soon as a checkpoint taken now is stored: what is still in flight is
                // in it and will be invoked again by the next run.
                tracing::warn!("stopping at once: in-flight records stay in the checkpoint");
                let _ = command_tx.send(Command::CheckpointNow);
                let events = event_rx.clone();
                let stored = tokio::task::spawn_blocking(move || events.recv()).await;
                return match stored {
                    Ok(Ok(Event::StopCheckpointDone(id))) => {
                        Err(PipelineError::StoppedAtCheckpoint(id))
                    }
                    _ => Err(PipelineError::Interrupted),
                };
            }
        };
        let Some((_, result)) = next else {
            break;
        };
        finished += 1;
        let done = match result {
            Ok(done) => done,
            // A stage that stopped because its neighbour did is not the cause: keep listening
            // for the stage that failed first. The cause is returned as soon as it arrives; the
            // other stages wind down on their own.
            Err(error) if error.is_consequence() => {
                consequence.get_or_insert(error);
                continue;
            }
            Err(error) => return Err(error),
        };
        match done {
            StageDone::Source(r) => source_report = r,
            StageDone::Operator => {}
            StageDone::Sink(r) => sink_report = r,
            StageDone::Coordinator(r) => coordinator_report = r,
        }
    }
    if let Some(error) = consequence {
        return Err(error);
    }

    let elapsed = started.elapsed();
    let (cpu, peak_rss_mib) = process_usage();
    let left_unprocessed = telemetry.first().map_or(0, |t| t.left_unprocessed.get());
    let records_in = source_report.records;
    Ok(RunSummary {
        pipeline: manifest.name.clone(),
        records_in,
        watermarks_in: source_report.watermarks,
        records_out: sink_report.records,
        dead_lettered: sink_report.dead_letters,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_per_s: records_in as f64 / elapsed.as_secs_f64().max(1e-9),
        first_output_ms: sink_report
            .first_output_at
            .map(|t| t.duration_since(started).as_secs_f64() * 1000.0),
        cpu_s: cpu.as_secs_f64(),
        cpu_us_per_record: cpu.as_secs_f64() * 1e6 / (records_in.max(1) as f64),
        peak_rss_mib,
        // The source may never see the stop: the first operator ends first and the source's
        // next hand-over finds nobody listening.
        stopped: stop_requested && (source_report.stopped || left_unprocessed > 0),
        left_unprocessed,
        checkpointing: coordinated,
        restored_from,
        restored_in_flight,
        restore_ms: telemetry
            .iter()
            .filter_map(|t| t.restored_at.get().copied())
            .max()
            .map(|at| at.duration_since(started).as_secs_f64() * 1000.0),
        checkpoints: coordinator_report.completed,
        checkpoint_max_ms: coordinator_report.max_duration.as_secs_f64() * 1000.0,
        operators: telemetry
            .iter()
            .map(|t| OperatorSummary::from(t.as_ref()))
            .collect(),
    })
}

/// Waits (a few seconds at most) for the sink to end after a forced stop, so that what reached
/// it is written out.
async fn wait_for_sink(
    done_rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Result<StageDone, PipelineError>)>,
    sink_index: usize,
) {
    let wait = async {
        while let Some((index, _)) = done_rx.recv().await {
            if index == sink_index {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
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

async fn start_mock(
    cfg: &crate::manifest::MockProviderConfig,
) -> Result<waio_mock_provider::MockServer, PipelineError> {
    let config = waio_mock_provider::MockConfig {
        listen: cfg.listen,
        latency_ms: cfg.latency.as_millis() as u64,
        error_rate: cfg.error_rate,
        rate_limit_rate: cfg.rate_limit_rate,
        hang_rate: cfg.hang_rate,
        drop_rate: cfg.drop_rate,
        seed: cfg.seed,
        ..Default::default()
    };
    let server = waio_mock_provider::MockServer::start(config)
        .await
        .map_err(|e| PipelineError::MockProvider(e.to_string()))?;
    tracing::info!("mock provider listening on {}", server.url());
    Ok(server)
}
