//! Hot reload: the manifest and the plugin files are read again, and each operator whose
//! plugin or settings changed gets its next version, validated before anything is swapped.
//!
//! One reload at a time, on a task of its own ([`Reloader::serve`]). A reload reads the
//! manifest, refuses a change that needs a restart ([`changes`]), and for each changed operator
//! compiles the new component (through the compile cache) and opens its instances with the new
//! config, away from the operator's thread. Only if every changed operator's version is ready
//! is any of them sent to its operator, which swaps it in between two records and answers.
//! A refusal leaves every operator on the version it runs.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::stacks::OutboundFactory;
use super::PipelineError;
use crate::manifest::changes::{changes, OperatorChange, RestartNeeded};
use crate::manifest::{Manifest, ManifestError, OperatorConfig, SourceConfig};
use crate::operator::reload::{OperatorReload, ReloadSender};
use crate::plugin::function::{FreshInstanceError, FunctionVersion, PreparedVersion};
use crate::plugin::{cache::component_sha256, CompileCache, InstanceLimits, PluginComponent};
use crate::record::{CommandSender, StageCommand};
use crate::telemetry::PipelineTelemetry;

/// Which operators a reload looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadScope {
    /// Every operator (a changed file, SIGHUP).
    All,
    /// One operator, by name (`POST /admin/operators/NAME/reload`).
    Operator(String),
}

/// Why a reload was refused; every operator goes on with the version it runs.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused: the manifest is not valid: {0}")]
    Manifest(ManifestError),
    #[error("reload refused: {0}")]
    RestartNeeded(RestartNeeded),
    #[error("reload refused: there is no operator {0:?}")]
    UnknownOperator(String),
    #[error("reload refused: operator {operator:?}: {cause}")]
    Plugin {
        operator: String,
        cause: PipelineError,
    },
    #[error("reload refused: operator {operator:?}: cannot read plugin {path}: {cause}")]
    Read {
        operator: String,
        path: String,
        cause: std::io::Error,
    },
    #[error("reload refused: the pipeline has ended")]
    Ended,
}

/// What a reload did to one operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSwapped {
    pub operator: String,
    pub old: Arc<str>,
    pub new: Arc<str>,
    pub took_ms: u64,
}

/// A reload's request and where its answer goes.
pub(super) type ReloadRequest = (
    ReloadScope,
    oneshot::Sender<Result<Vec<OperatorSwapped>, ReloadError>>,
);

/// An operator as the reloader steers it.
pub(super) struct ReloadTarget {
    pub reloads: ReloadSender,
    pub commands: CommandSender,
    pub digest: Arc<str>,
    pub outbound: Arc<crate::outbound::Outbound>,
}

/// Owns what a reload needs: the manifest the run started from (updated by each reload), the
/// engine and compile cache the plugins were loaded with, and the outbound factory.
pub struct Reloader {
    pub(super) manifest: Manifest,
    pub(super) engine: wasmtime::Engine,
    pub(super) cache: CompileCache,
    pub(super) stacks: OutboundFactory,
    pub(super) targets: Vec<ReloadTarget>,
    pub(super) telemetry: Arc<PipelineTelemetry>,
}

/// One operator's next version, validated, not sent yet.
struct Ready {
    index: usize,
    config: OperatorConfig,
    version: Option<PreparedVersion>,
    outbound: Option<Arc<crate::outbound::Outbound>>,
}

impl Reloader {
    /// Answers reload requests, one at a time, until the run ends (`ended` fires or is dropped).
    pub(super) async fn serve(
        mut self,
        mut requests: mpsc::UnboundedReceiver<ReloadRequest>,
        mut ended: oneshot::Receiver<()>,
    ) {
        loop {
            let (scope, answer) = tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
                _ = &mut ended => return,
            };
            let result = self.reload(&scope).await;
            match &result {
                Ok(swapped) if swapped.is_empty() => {
                    tracing::info!("reload: nothing changed")
                }
                Ok(_) => {}
                Err(error) => {
                    self.telemetry.reloads_refused.inc();
                    tracing::warn!("{error}; the running version goes on");
                }
            }
            let _ = answer.send(result);
        }
    }

    async fn reload(&mut self, scope: &ReloadScope) -> Result<Vec<OperatorSwapped>, ReloadError> {
        let asked_at = Instant::now();
        let mut next = Manifest::load(&self.manifest.path).map_err(ReloadError::Manifest)?;
        if matches!(self.manifest.source, SourceConfig::Serve { .. }) {
            next = next.serving_form();
        }
        let changed = changes(&self.manifest, &next).map_err(ReloadError::RestartNeeded)?;
        if let ReloadScope::Operator(name) = scope {
            if !self.manifest.operators.iter().any(|o| &o.name == name) {
                return Err(ReloadError::UnknownOperator(name.clone()));
            }
        }
        let mut ready = Vec::new();
        for (index, change) in changed.into_iter().enumerate() {
            let config = &next.operators[index];
            let in_scope = match scope {
                ReloadScope::All => true,
                ReloadScope::Operator(name) => &config.name == name,
            };
            if in_scope {
                if let Some(next) = self.prepare(index, config, change).await? {
                    ready.push(next);
                }
            }
        }
        // Every changed operator is ready: only now is anything swapped.
        let mut swapped = Vec::new();
        for next in ready {
            swapped.push(self.swap(next, asked_at).await?);
        }
        Ok(swapped)
    }

    /// Validates an operator's next version: `None` if nothing about it changed.
    async fn prepare(
        &mut self,
        index: usize,
        config: &OperatorConfig,
        mut change: OperatorChange,
    ) -> Result<Option<Ready>, ReloadError> {
        let digest = read_digest(config).await?;
        change.version |= *digest != *self.targets[index].digest;
        if !change.any() {
            return Ok(None);
        }
        let version = if change.version {
            Some(self.prepare_version(config).await?)
        } else {
            None
        };
        let outbound = if change.outbound {
            let stats = Some(Arc::clone(self.targets[index].outbound.stats()));
            let made = self
                .stacks
                .stack(config, stats)
                .map_err(|cause| ReloadError::Plugin {
                    operator: config.name.clone(),
                    cause,
                })?;
            Some(made)
        } else {
            None
        };
        Ok(Some(Ready {
            index,
            config: config.clone(),
            version,
            outbound,
        }))
    }

    /// Compiles (or finds in the compile cache) and type-checks the component, then makes and
    /// opens its instances, on a blocking thread.
    async fn prepare_version(
        &self,
        config: &OperatorConfig,
    ) -> Result<PreparedVersion, ReloadError> {
        let (engine, cache, config) = (self.engine.clone(), self.cache.clone(), config.clone());
        let operator = config.name.clone();
        let made = tokio::task::spawn_blocking(move || {
            let limits = InstanceLimits {
                memory_bytes: config.memory_limit,
                call_time_limit: config.call_time_limit,
            };
            let component = PluginComponent::load(
                &engine,
                &config.name,
                &config.plugin,
                &config.plugin_at,
                limits,
                &cache,
            )?;
            let version = FunctionVersion::new(Arc::new(component), &config.config_json);
            PreparedVersion::prepare(version, config.instances).map_err(|e| match e {
                FreshInstanceError::Plugin(cause) => PipelineError::Plugin(cause),
                FreshInstanceError::OpenTrapped(trap) => {
                    PipelineError::Incompatible(format!("plugin trapped in open: {trap}"))
                }
            })
        })
        .await;
        match made {
            Ok(Ok(prepared)) => Ok(prepared),
            Ok(Err(cause)) => Err(ReloadError::Plugin { operator, cause }),
            Err(join) => Err(ReloadError::Plugin {
                operator,
                cause: PipelineError::Stage(join.to_string()),
            }),
        }
    }

    /// Hands a ready version to its operator and waits until it is swapped in.
    async fn swap(
        &mut self,
        next: Ready,
        asked_at: Instant,
    ) -> Result<OperatorSwapped, ReloadError> {
        let target = &mut self.targets[next.index];
        let (done_tx, done_rx) = oneshot::channel();
        let operator = next.config.name.clone();
        let digest = next.version.as_ref().map(|v| Arc::clone(v.digest()));
        let reload = OperatorReload {
            version: next.version,
            config: next.config.clone(),
            outbound: next.outbound.clone(),
            asked_at,
            done: done_tx,
        };
        if target.reloads.send(reload).is_err()
            || target.commands.send(StageCommand::Reload).is_err()
        {
            return Err(ReloadError::Ended);
        }
        let swapped = done_rx.await.map_err(|_| ReloadError::Ended)?;
        if let Some(digest) = digest {
            target.digest = digest;
        }
        if let Some(outbound) = next.outbound {
            target.outbound = outbound;
        }
        self.manifest.operators[next.index] = next.config;
        Ok(OperatorSwapped {
            operator,
            old: swapped.old,
            new: swapped.new,
            took_ms: asked_at.elapsed().as_millis() as u64,
        })
    }
}

/// The SHA-256 of the operator's plugin file as it is now.
async fn read_digest(config: &OperatorConfig) -> Result<String, ReloadError> {
    let path = config.plugin.clone();
    let read =
        tokio::task::spawn_blocking(move || std::fs::read(&path).map(|b| component_sha256(&b)));
    match read.await {
        Ok(Ok(digest)) => Ok(digest),
        Ok(Err(cause)) => Err(ReloadError::Read {
            operator: config.name.clone(),
            path: config.plugin.display().to_string(),
            cause,
        }),
        Err(join) => Err(ReloadError::Read {
            operator: config.name.clone(),
            path: config.plugin.display().to_string(),
            cause: std::io::Error::other(join.to_string()),
        }),
    }
}
