//! Build: the manifest becomes a [`Topology`], every stage constructed and wired, no thread
//! started. Everything that can fail before the first record (a missing input, a plugin that
//! does not load or open, an output that cannot be created, an incompatible checkpoint) fails
//! here.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::reload::{ReloadTarget, Reloader};
use super::setup::{
    load_plugins_with, open_checkpoints, open_outputs, start_mock, CheckpointSetup,
};
use super::stacks::OutboundFactory;
use super::{PipelineError, RunOptions};
use crate::checkpoint::commit::OutputFile;
use crate::checkpoint::coordinator::{Command, ControlSender, Coordinator, Event, ReportSender};
use crate::checkpoint::kafka::{commit_channel, CommitChannel};
use crate::checkpoint::{Checkpoint, CheckpointStore, OperatorSnapshot, SourcePosition};
use crate::connectors::feed::FeedReceiver;
use crate::connectors::kafka::sink::KafkaOutput;
use crate::connectors::kafka::source::KafkaInput;
use crate::connectors::sink::SinkOutput;
use crate::connectors::source::{check_input, source_label, SourceContext};
use crate::cost::CostControl;
use crate::manifest::{Manifest, SinkConfig, SourceConfig};
use crate::operator::AsyncWaitOperator;
use crate::plugin::{new_engine, CompileCache, PluginComponent};
use crate::record::{stage_channel, CommandSender, StageReceiver, StageSender};
use crate::telemetry::{OperatorTelemetry, PipelineTelemetry, PluginVersion};

/// A pipeline ready to start: each stage with its channels, and what steers them.
pub struct Topology {
    pub(super) telemetry: Arc<PipelineTelemetry>,
    pub(super) source: SourceStage,
    pub(super) operators: Vec<OperatorStage>,
    pub(super) sink: SinkStage,
    pub(super) coordinator: Option<Coordinator>,
    pub(super) controls: Controls,
    /// The mock provider the manifest asks for: serves until the run ends.
    pub(super) mock: Option<waio_mock_provider::MockServer>,
    /// Applies hot reloads while the run goes on.
    pub(super) reloader: Reloader,
}

pub(super) struct SourceStage {
    pub config: SourceConfig,
    pub context: SourceContext,
    /// A Kafka source's consumer, connected before the run.
    pub kafka: Option<Arc<KafkaInput>>,
    /// `waio serve`'s callers, for its `serve` source.
    pub feed: Option<FeedReceiver>,
}

pub(super) struct OperatorStage {
    pub operator: AsyncWaitOperator,
    pub input: StageReceiver,
    pub output: StageSender,
}

pub(super) struct SinkStage {
    pub config: SinkConfig,
    /// The last operator's name: the sink dead-letters its outputs that are not JSON.
    pub producer: String,
    pub output: SinkOutput,
    pub dead_letters: OutputFile,
    pub input: StageReceiver,
    pub reports: Option<ReportSender>,
    /// A Kafka sink's producer, connected before the run.
    pub kafka: Option<KafkaOutput>,
}

/// How the pipeline steers its running stages.
pub(super) struct Controls {
    /// Each operator's commands (checkpoint, stop, abort), in chain order.
    pub operators: Vec<CommandSender>,
    /// Stop requests to the source.
    pub source: ControlSender,
    /// Requests to the checkpoint coordinator and its answers, when checkpointing is on.
    pub coordinator: Option<(Sender<Command>, Receiver<Event>)>,
}

impl Topology {
    pub fn telemetry(&self) -> &Arc<PipelineTelemetry> {
        &self.telemetry
    }

    /// Where `waio serve` sends its callers' records: the source of a `serve` pipeline.
    pub fn feed(&mut self) -> crossbeam_channel::Sender<Vec<crate::record::Record>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.source.feed = Some(rx);
        tx
    }
}

/// Builds the pipeline the manifest describes, resuming from its latest checkpoint unless
/// `options.fresh`.
pub async fn build(manifest: &Manifest, options: &RunOptions) -> Result<Topology, PipelineError> {
    let started = Instant::now();
    // A missing input is found before seconds of plugin loading.
    check_input(&manifest.source)?;
    let mock = match &manifest.mock_provider {
        Some(cfg) => Some(start_mock(cfg).await?),
        None => None,
    };
    let engine = new_engine()?;
    let compile_cache = CompileCache::from_env();
    let components = load_plugins_with(&engine, &compile_cache, manifest)?;
    let mut checkpoints = open_checkpoints(manifest, &components, options)?;
    let (sink_output, dead_letters) = open_outputs(manifest, checkpoints.as_ref())?;
    // The outputs are recovered: what is left of the checkpoint is the state to restore.
    let mut resume = checkpoints.as_mut().and_then(|c| c.resume.take());
    let kafka = connect_kafka(manifest)?;
    if let Some(checkpoint) = &resume {
        log_resume(checkpoint);
    }
    let mut telemetry = PipelineTelemetry::new(&manifest.name, started, checkpoints.is_some());
    telemetry.cost = Arc::new(cost_control(manifest, resume.as_ref()));
    let (reports_tx, reports_rx) = crossbeam_channel::unbounded();
    // Stages report to a coordinator under `[checkpoint]`, and for a Kafka source's commits.
    let coordinated = checkpoints.is_some() || kafka.input.is_some();
    let reports = coordinated.then_some(reports_tx);
    let start = resume
        .as_ref()
        .map(|c| c.source.clone())
        .unwrap_or_default();
    // Open every plugin before reading any input, so a bad config fails fast.
    let mut stacks = OutboundFactory::new(&manifest.name);
    let chain = build_operators(
        manifest,
        components,
        &mut stacks,
        resume.as_mut(),
        &start,
        reports.clone(),
        &mut telemetry,
    )?;
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let (command_tx, command_rx) = crossbeam_channel::unbounded();
    let (event_tx, event_rx) = crossbeam_channel::unbounded();
    let telemetry = Arc::new(telemetry);
    let coordinator = match checkpointing(manifest, checkpoints)? {
        Some(c) => Some(Coordinator {
            store: c.store,
            next_id: c.next_id,
            interval: c.interval,
            retained: c.retained,
            kafka: kafka.commits,
            operators: chain.identities,
            operator_commands: chain.commands.clone(),
            reports: reports_rx,
            commands: command_rx,
            events: event_tx,
            telemetry: Arc::clone(&telemetry.checkpoints),
            cost: Arc::clone(&telemetry.cost),
        }),
        None => None,
    };
    if let (Some(input), Some(_)) = (&kafka.input, &coordinator) {
        input.commit_before_revoke(command_tx.clone());
    }

    let (source_tx, mut upstream) = stage_channel();
    let mut operators = Vec::new();
    for operator in chain.operators {
        let (output, next) = stage_channel();
        let input = std::mem::replace(&mut upstream, next);
        operators.push(OperatorStage {
            operator,
            input,
            output,
        });
    }
    Ok(Topology {
        source: SourceStage {
            config: manifest.source.clone(),
            context: SourceContext {
                tx: source_tx,
                control: control_rx,
                start,
                event_time: manifest.event_time.clone(),
                telemetry: Arc::clone(&telemetry.source),
            },
            kafka: kafka.input,
            feed: None,
        },
        operators,
        sink: SinkStage {
            config: manifest.sink.clone(),
            producer: manifest
                .operators
                .last()
                .map_or_else(String::new, |op| op.name.clone()),
            output: sink_output,
            dead_letters,
            input: upstream,
            reports,
            kafka: kafka.output,
        },
        controls: Controls {
            operators: chain.commands,
            source: control_tx,
            coordinator: coordinator.as_ref().map(|_| (command_tx, event_rx)),
        },
        coordinator,
        reloader: Reloader {
            manifest: manifest.clone(),
            engine,
            cache: compile_cache,
            stacks,
            targets: chain.targets,
            telemetry: Arc::clone(&telemetry),
        },
        telemetry,
        mock,
    })
}

/// Where checkpoints are stored and how often they are taken.
struct Checkpointing {
    store: Option<CheckpointStore>,
    next_id: u64,
    interval: Duration,
    retained: usize,
}

/// `[checkpoint]`'s store; or, for a Kafka source without it, checkpoints that only commit its
/// offsets, every `commit_interval`. `None`: no checkpoints.
fn checkpointing(
    manifest: &Manifest,
    checkpoints: Option<CheckpointSetup>,
) -> Result<Option<Checkpointing>, PipelineError> {
    if let Some(setup) = checkpoints {
        return Ok(Some(Checkpointing {
            next_id: setup.store.next_id()?,
            store: Some(setup.store),
            interval: setup.config.interval,
            retained: setup.config.retained,
        }));
    }
    Ok(match &manifest.source {
        SourceConfig::Kafka(kafka) => Some(Checkpointing {
            store: None,
            next_id: 1,
            interval: kafka.commit_interval,
            retained: 1,
        }),
        _ => None,
    })
}

/// The Kafka clients a manifest asks for, connected (so unreachable brokers and unknown topics
/// fail the run before it starts).
struct KafkaClients {
    input: Option<Arc<KafkaInput>>,
    output: Option<KafkaOutput>,
    /// The coordinator's end of the commits, when a Kafka source commits through the sink.
    commits: Option<CommitChannel>,
}

fn connect_kafka(manifest: &Manifest) -> Result<KafkaClients, PipelineError> {
    let input = match &manifest.source {
        SourceConfig::Kafka(config) => Some(Arc::new(KafkaInput::connect(config)?)),
        _ => None,
    };
    let SinkConfig::Kafka(config) = &manifest.sink else {
        return Ok(KafkaClients {
            input,
            output: None,
            commits: None,
        });
    };
    let dead_letter_topic = manifest
        .dead_letter
        .kafka
        .as_ref()
        .map_or("", |d| d.topic.as_str());
    // Transactions only when they make the output exactly-once: a Kafka source's offsets commit
    // in them, per checkpoint. Stable per process, so a restart aborts what a crash left open.
    let transactional_id = match (&manifest.source, &manifest.checkpoint) {
        (SourceConfig::Kafka(source), Some(_)) => {
            Some(config.transactional_id.clone().unwrap_or_else(|| {
                let instance = source
                    .options
                    .get("group.instance.id")
                    .map_or("0", String::as_str);
                format!("waio-{}-{instance}", manifest.name)
            }))
        }
        _ => None,
    };
    let (commits, inbox) = match &input {
        Some(input) => {
            let (channel, inbox) = commit_channel();
            (Some(channel), Some((Arc::clone(input), inbox)))
        }
        None => (None, None),
    };
    let output = KafkaOutput::connect(
        config,
        dead_letter_topic,
        transactional_id.as_deref(),
        inbox,
    )?;
    Ok(KafkaClients {
        input,
        output: Some(output),
        commits,
    })
}

fn log_resume(checkpoint: &Checkpoint) {
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

/// The run's prices and budget, going on from the spend of the checkpoint it resumes.
fn cost_control(manifest: &Manifest, resume: Option<&Checkpoint>) -> CostControl {
    let (spend, age) = resume.map_or_else(Default::default, |c| {
        let age_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
            .saturating_sub(c.created_at_ms);
        (c.spend, Duration::from_millis(age_ms.max(0) as u64))
    });
    if spend.total_usd > 0.0 {
        tracing::info!(
            "the run has spent ${:.6} before this resume: its [budget] goes on from there",
            spend.total_usd
        );
    }
    if manifest.budget.is_some() && manifest.checkpoint.is_none() {
        tracing::warn!("[budget] without [checkpoint]: the spend is not kept, so max_cost_total counts this run only, and a stop by the budget leaves the rest of the input unprocessed");
    }
    CostControl::new(
        manifest.pricing.clone(),
        manifest.budget.clone(),
        spend,
        age,
        Instant::now(),
    )
}

/// The operators, in chain order, with what the pipeline and the coordinator keep of them.
struct Chain {
    operators: Vec<AsyncWaitOperator>,
    commands: Vec<CommandSender>,
    /// Name, plugin and settings of each: the operator parts of the end-of-input checkpoint.
    identities: Vec<OperatorSnapshot>,
    /// How hot reloads reach each.
    targets: Vec<ReloadTarget>,
}

/// Constructs (and opens) every operator, restoring what the checkpoint held for it.
fn build_operators(
    manifest: &Manifest,
    components: Vec<Arc<PluginComponent>>,
    stacks: &mut OutboundFactory,
    mut resume: Option<&mut Checkpoint>,
    start: &SourcePosition,
    reports: Option<ReportSender>,
    telemetry: &mut PipelineTelemetry,
) -> Result<Chain, PipelineError> {
    if let Some(checkpoint) = resume.as_deref() {
        let _ = telemetry.restored_from.set(checkpoint.id);
    }
    let label: Arc<str> = Arc::from(source_label(&manifest.source));
    let mut chain = Chain {
        operators: Vec::new(),
        commands: Vec::new(),
        identities: Vec::new(),
        targets: Vec::new(),
    };
    let parts = manifest.operators.iter().zip(components);
    for (index, (config, component)) in parts.enumerate() {
        let outbound = stacks.stack(config, None)?;
        chain.identities.push(OperatorSnapshot {
            name: config.name.clone(),
            plugin: config.plugin.display().to_string(),
            plugin_sha256: component.sha256.clone(),
            capacity: config.capacity as u64,
            ordered: config.ordered,
            watermark: None,
            elements: Vec::new(),
        });
        let operator_telemetry = Arc::new(OperatorTelemetry::new(&config.name));
        operator_telemetry.set_plugin(PluginVersion {
            path: config.plugin.display().to_string(),
            digest: component.sha256.clone(),
        });
        operator_telemetry.capacity.set(config.capacity as i64);
        if config.cache.is_some() {
            operator_telemetry.result_cache_on.set();
        }
        let _ = operator_telemetry
            .outbound
            .set(Arc::clone(outbound.stats()));
        if let Some(cache) = outbound.request_cache() {
            let _ = operator_telemetry
                .request_cache
                .set(Arc::clone(cache.stats()));
        }
        let digest: Arc<str> = Arc::from(component.sha256.as_str());
        let mut operator = AsyncWaitOperator::new(
            config.clone(),
            component,
            Arc::clone(&outbound),
            Arc::clone(&label),
            tokio::runtime::Handle::current(),
            reports.clone(),
            Arc::clone(&operator_telemetry),
        )?;
        operator.account_cost(Arc::clone(&telemetry.cost));
        telemetry.operators.push(operator_telemetry);
        let restored = resume
            .as_deref_mut()
            .and_then(|c| c.operators.get_mut(index));
        if let Some(snapshot) = restored {
            telemetry
                .restored_in_flight
                .add(snapshot.records_in_flight() as u64);
            operator.restore(std::mem::take(&mut snapshot.elements));
        }
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        operator.follow_commands(commands_rx, start.clone());
        chain.targets.push(ReloadTarget {
            reloads: operator.reload_sender(),
            commands: commands_tx.clone(),
            digest,
            outbound,
        });
        chain.commands.push(commands_tx);
        chain.operators.push(operator);
    }
    Ok(chain)
}
