//! The core's side of a hot reload: the next version's slots take every record admitted from
//! now on, while the records already given to the old version's slots finish there (their
//! answers, timeouts, retries and re-invocations after a trap all go to those slots). An old
//! slot is closed once the last of its records has left the operator.

use std::sync::Arc;

use super::OperatorCore;
use crate::manifest::OperatorConfig;
use crate::plugin::function::AsyncFunction;

/// What a swap did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    pub old: Arc<str>,
    pub new: Arc<str>,
    /// Records still on the old version's instances, which finish there.
    pub draining: usize,
    /// Only settings changed: the instances are the ones that ran before.
    pub settings_only: bool,
}

impl<F: AsyncFunction> OperatorCore<F> {
    /// Makes `update` the current version and `config` the operator's settings from the next
    /// record on. The settings a reload may not change (name, position, ordering, the result
    /// cache's table) are kept as they were.
    pub fn swap(&mut self, update: Option<F::Update>, mut config: OperatorConfig) -> Swapped {
        let old = Arc::clone(self.function.version());
        let settings_only = update.is_none();
        let retired = match update {
            Some(update) => {
                let retired = self.live.clone();
                let fresh = self.function.install(update);
                self.slots.resize_with(fresh.end, Default::default);
                self.live = fresh.clone();
                self.next_slot = fresh.start;
                retired
            }
            None => 0..0,
        };
        let new = Arc::clone(self.function.version());
        config.index = self.config.index;
        config.name.clone_from(&self.config.name);
        config.ordered = self.config.ordered;
        config.cache.clone_from(&self.config.cache);
        if let (Some(cache), Some(table)) = (&mut self.result_cache, &self.config.cache) {
            cache.rekey(table, &new, &config.config_json);
        }
        self.config = config;
        self.telemetry.capacity.set(self.config.capacity as i64);
        // More requests may be allowed in flight now.
        self.release_waiting_calls();
        let mut draining = 0;
        for slot in retired {
            self.slots[slot].retired = true;
            draining += self.slots[slot].holding;
            self.close_if_drained(slot);
        }
        Swapped {
            old,
            new,
            draining,
            settings_only,
        }
    }

    /// A record given to `slot` has left the operator.
    pub(super) fn left(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.holding = s.holding.saturating_sub(1);
        }
        self.close_if_drained(slot);
    }

    /// Closes a retired slot that holds no record any more; answers still on their way to it
    /// are dropped (its generation moves on).
    fn close_if_drained(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if !s.retired || s.closed || s.holding > 0 {
            return;
        }
        s.closed = true;
        s.generation += 1;
        if let Some(trap) = self.function.close_slot(slot) {
            tracing::warn!(operator = %self.config.name, "plugin trapped in close: {trap}");
        }
        tracing::debug!(operator = %self.config.name, slot, "old plugin instance closed");
    }

    /// Slots of every version that are still open.
    #[cfg(test)]
    pub fn open_slots(&self) -> usize {
        self.slots.iter().filter(|s| !s.closed).count()
    }
}
