//! When a plugin instance traps or keeps growing: it is replaced, the record it served fails,
//! and the other records that lived in it are invoked again on a fresh one (one at a time, in
//! order, up to `MAX_REINVOCATIONS` each).

use super::{Cause, OperatorCore};
use crate::operator::{OperatorError, MAX_REINVOCATIONS};
use crate::plugin::function::{AsyncFunction, FailureKind};
use crate::plugin::GuestTrap;

impl<F: AsyncFunction> OperatorCore<F> {
    /// Applies a call's effects; on a trap replaces the instance, and one that may be leaking
    /// is replaced before it traps at its memory limit.
    pub(super) fn after_call(
        &mut self,
        slot: usize,
        result: Result<(), GuestTrap>,
        serving: Option<(u64, Cause)>,
    ) -> Result<(), OperatorError> {
        let effects = self.function.take_effects(slot);
        self.apply(slot, effects)?;
        match result {
            Ok(()) if self.memory_nearly_full(slot) => self.recycle(slot),
            Ok(()) => Ok(()),
            Err(trap) => self.handle_trap(slot, trap, serving),
        }
    }

    /// Whether the instance has grown near its memory limit and has completed records since it
    /// was made (its growth may be a leak, which a fresh instance sheds; growth with nothing
    /// completed is what the records in flight hold).
    pub(super) fn memory_nearly_full(&self, slot: usize) -> bool {
        self.slots[slot].completed > 0 && self.function.memory_nearly_full(slot)
    }

    /// Replaces an instance that keeps growing: no record fails, the ones in flight in it are
    /// invoked again.
    pub(super) fn recycle(&mut self, slot: usize) -> Result<(), OperatorError> {
        self.telemetry.recycled.inc();
        tracing::info!(
            operator = %self.config.name,
            used = self.function.memory_used(slot),
            "plugin instance near its memory_limit: replaced by a fresh one"
        );
        self.replace(slot)?;
        let orphans = self.records.orphans_of(slot, false);
        self.reinvoke.extend(orphans);
        Ok(())
    }

    pub(super) fn replace(&mut self, slot: usize) -> Result<(), OperatorError> {
        self.function
            .replace(slot)
            .map_err(|e| crate::operator::fresh_instance_failed(&self.config.name, e))?;
        let s = &mut self.slots[slot];
        s.generation += 1;
        s.completed = 0;
        Ok(())
    }

    /// A call trapped: the instance is gone. The record it was serving fails; every other
    /// record that lived in that instance is invoked again on a fresh one.
    pub(super) fn handle_trap(
        &mut self,
        slot: usize,
        trap: GuestTrap,
        serving: Option<(u64, Cause)>,
    ) -> Result<(), OperatorError> {
        self.telemetry.traps.inc();
        tracing::warn!(operator = %self.config.name, "plugin instance discarded: {trap}");
        self.replace(slot)?;
        if let Some((seq, cause)) = serving {
            if self.records.is_pending(seq) {
                self.fail(seq, cause, FailureKind::Fatal, trap.0.clone())?;
            }
        }
        let orphans = self.records.orphans_of(slot, true);
        self.reinvoke.extend(orphans);
        Ok(())
    }

    /// Invokes a record again on a fresh instance, unless it has been re-invoked too often: then
    /// it fails as the operator's policy says.
    pub(super) fn reinvoke_one(&mut self, seq: u64) -> Result<(), OperatorError> {
        let Some(entry) = self.records.get_mut(seq) else {
            return Ok(());
        };
        entry.reinvoke_queued = false;
        if entry.done {
            return Ok(());
        }
        if entry.reinvocations > MAX_REINVOCATIONS {
            let message = format!(
                "given up after its plugin instance trapped under it {} times (while serving other records); it was invoked again into a fresh instance {MAX_REINVOCATIONS} times",
                entry.reinvocations
            );
            let cause = Cause::of(entry);
            return self.fail(seq, cause, FailureKind::Fatal, message);
        }
        entry.attempt += 1;
        entry.timed_out = false;
        entry.grace_until = None;
        self.invoke(seq)
    }
}
