//! A hot reload as the operator's thread takes it: the pipeline's reloader prepares the next
//! version away from this thread (compiled, instantiated, opened), sends it here, and wakes the
//! operator with [`crate::record::StageCommand::Reload`]. Between two records, the operator
//! swaps it in and answers with what it swapped.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::semantics::Swapped;
use super::AsyncWaitOperator;
use crate::manifest::OperatorConfig;
use crate::outbound::Outbound;
use crate::plugin::function::PreparedVersion;
use crate::telemetry::PluginVersion;

/// The next version of an operator, ready to be swapped in.
pub struct OperatorReload {
    /// `None` when only settings changed.
    pub version: Option<PreparedVersion>,
    /// The operator's settings from the next record on.
    pub config: OperatorConfig,
    /// A new outbound stack when the request-level settings changed.
    pub outbound: Option<Arc<Outbound>>,
    /// When the reload was asked for: the log says how long it took to the swap.
    pub asked_at: Instant,
    pub done: oneshot::Sender<Swapped>,
}

impl std::fmt::Debug for OperatorReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorReload")
            .field("version", &self.version)
            .field("operator", &self.config.name)
            .finish_non_exhaustive()
    }
}

pub type ReloadSender = crossbeam_channel::Sender<OperatorReload>;
pub type ReloadReceiver = crossbeam_channel::Receiver<OperatorReload>;

impl AsyncWaitOperator {
    /// Where the pipeline sends this operator's next versions.
    pub fn reload_sender(&self) -> ReloadSender {
        self.reloads_tx.clone()
    }

    /// Swaps in every version waiting (the last one wins; each is logged).
    pub(super) fn take_reloads(&mut self) {
        while let Ok(reload) = self.reloads_rx.try_recv() {
            let path = reload.config.plugin.display().to_string();
            let swapped = self.core.swap(reload.version, reload.config);
            if let Some(outbound) = reload.outbound {
                self.outbound = outbound;
            }
            self.telemetry.set_plugin(PluginVersion {
                path,
                digest: swapped.new.to_string(),
            });
            self.telemetry.reloads.inc();
            tracing::info!(
                operator = %self.core.name(),
                old = %swapped.old,
                new = %swapped.new,
                took_ms = reload.asked_at.elapsed().as_millis() as u64,
                draining = swapped.draining,
                "reloaded operator {:?}: plugin {} -> {} in {} ms ({} records finish on the old version{})",
                self.core.name(),
                short(&swapped.old),
                short(&swapped.new),
                reload.asked_at.elapsed().as_millis(),
                swapped.draining,
                if swapped.settings_only { "; settings only" } else { "" },
            );
            let _ = reload.done.send(swapped);
        }
    }
}

/// The first 12 hex digits of a digest, as the log shows it.
pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}
