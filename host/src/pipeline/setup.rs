//! What a run needs before it starts: plugins loaded, the checkpoint to resume from, the
//! outputs opened, the mock provider.

use std::sync::Arc;

use super::{PipelineError, RunOptions};
use crate::checkpoint::commit::{recover, start_fresh, OutputFile};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::connectors::sink::SinkOutput;
use crate::manifest::{CheckpointConfig, Manifest, SinkConfig};
use crate::plugin::{new_engine, CompileCache, InstanceLimits, PluginComponent};

/// Loads and type-checks every plugin of the manifest.
pub fn load_plugins(manifest: &Manifest) -> Result<Vec<Arc<PluginComponent>>, PipelineError> {
    load_plugins_with(&new_engine()?, &CompileCache::from_env(), manifest)
}

/// [`load_plugins`] into `engine` through `cache` (which a hot reload uses again).
pub(super) fn load_plugins_with(
    engine: &wasmtime::Engine,
    cache: &CompileCache,
    manifest: &Manifest,
) -> Result<Vec<Arc<PluginComponent>>, PipelineError> {
    manifest
        .operators
        .iter()
        .map(|op| {
            let limits = InstanceLimits {
                memory_bytes: op.memory_limit,
                call_time_limit: op.call_time_limit,
            };
            PluginComponent::load(engine, &op.name, &op.plugin, &op.plugin_at, limits, cache)
                .map(Arc::new)
                .map_err(PipelineError::from)
        })
        .collect()
}

/// The checkpoint store and where this run starts, when checkpointing is on.
pub(super) struct CheckpointSetup {
    pub store: CheckpointStore,
    pub config: CheckpointConfig,
    /// The checkpoint this run resumes from.
    pub resume: Option<Checkpoint>,
}

/// Opens the checkpoint store and picks the checkpoint to resume from (the latest complete one,
/// unless `fresh`, or unless it marks a finished job).
pub(super) fn open_checkpoints(
    manifest: &Manifest,
    components: &[Arc<PluginComponent>],
    options: &RunOptions,
) -> Result<Option<CheckpointSetup>, PipelineError> {
    let Some(config) = manifest.checkpoint.clone() else {
        return Ok(None);
    };
    let store = CheckpointStore::open(&config.dir)?;
    // A Kafka source's state is the offsets committed in Kafka, not a stored checkpoint: what
    // was in flight is read again from there.
    let kafka = matches!(manifest.source, crate::manifest::SourceConfig::Kafka(_));
    let latest = if options.fresh || kafka {
        None
    } else {
        store.latest()?
    };
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
pub(super) fn open_outputs(
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

pub(super) async fn start_mock(
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
