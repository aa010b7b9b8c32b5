//! Which partitions this process owns, shared by the source (which reads them) and the sink
//! (which drops what is still on its way from a partition taken away), and the consumer's
//! rebalance callbacks that change it.
//!
//! Before partitions are revoked, the callback asks for a checkpoint and waits for its commit
//! (KIP-447's commit on revoke): what was done for them is committed, and what the operators still
//! hold for them is left pending for the new owner, which reads it again. The sink stops writing
//! for those partitions right after that commit, before anything after the barrier.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::record::{Lease, Partition, Resume};

/// A partition this process owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    /// This assignment: records read under it carry it, and see when it is revoked.
    pub lease: Arc<Lease>,
    /// The committed offset found at assignment (`None`: nothing committed yet).
    pub committed: Option<i64>,
    /// What that commit's metadata said.
    pub resume: Option<Arc<Resume>>,
}

/// A change the source has not picked up yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Assigned(Partition, Owned),
    Revoked(Partition),
}

#[derive(Default)]
pub struct Assignments {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_generation: u64,
    owned: BTreeMap<Partition, Owned>,
    changes: Vec<Change>,
}

impl Assignments {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave the map half-changed (single inserts/removes).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `generation` is the current assignment of `partition` (for dead letters, which
    /// carry their place as JSON).
    pub fn is_current(&self, partition: &Partition, generation: u64) -> bool {
        self.lock()
            .owned
            .get(partition)
            .is_some_and(|o| o.lease.generation == generation)
    }

    pub fn assign(&self, partition: Partition, committed: Option<i64>, resume: Option<Resume>) {
        let mut state = self.lock();
        state.next_generation += 1;
        let owned = Owned {
            lease: Arc::new(Lease::new(state.next_generation)),
            committed,
            resume: resume.map(Arc::new),
        };
        state.owned.insert(partition.clone(), owned.clone());
        state.changes.push(Change::Assigned(partition, owned));
    }

    pub fn revoke(&self, partitions: &[Partition]) {
        let mut state = self.lock();
        for partition in partitions {
            if let Some(owned) = state.owned.remove(partition) {
                // Unless a checkpoint already settles it: then it goes at that one.
                if !owned.lease.revoking() {
                    owned.lease.revoke_at(0);
                }
                state.changes.push(Change::Revoked(partition.clone()));
            }
        }
    }

    /// The leases of the owned `partitions`.
    pub fn leases(&self, partitions: &[Partition]) -> Vec<Arc<Lease>> {
        let state = self.lock();
        partitions
            .iter()
            .filter_map(|p| state.owned.get(p).map(|o| Arc::clone(&o.lease)))
            .collect()
    }

    /// The changes since the last call, in order.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut self.lock().changes)
    }
}

/// Asks for a checkpoint that commits before `partitions` are revoked, and returns once it has
/// (or could not be taken); the sink then drops their records.
pub type CommitBeforeRevoke = Box<dyn Fn(Vec<Partition>, Vec<Arc<Lease>>) + Send + Sync>;

/// The consumer's callbacks.
pub struct SourceContext {
    pub assignments: Arc<Assignments>,
    pub before_revoke: Mutex<Option<CommitBeforeRevoke>>,
}

impl ClientContext for SourceContext {
    /// librdkafka's own errors: the end of a partition is not one (a bounded source asks for
    /// it); the rest it retries by itself, so they are warnings.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let end = rdkafka::types::RDKafkaErrorCode::PartitionEOF;
        if error.rdkafka_error_code() != Some(end) {
            tracing::warn!("kafka consumer: {error}: {reason}");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = partitions_of(list);
            tracing::info!(
                partitions = ?partitions,
                "kafka: partitions revoked: committing what was done for them"
            );
            let hook = self.before_revoke.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(commit) = hook.as_ref() {
                commit(partitions.clone(), self.assignments.leases(&partitions));
            }
            // The sink already let them go at the commit; without one (no checkpoint could be
            // taken) they go now.
            self.assignments.revoke(&partitions);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        // The committed offsets and their metadata: where each partition resumes and what it
        // skips there.
        let committed = consumer
            .committed_offsets((*list).clone(), Duration::from_secs(30))
            .map_err(|e| tracing::error!("kafka: cannot read the committed offsets: {e}"))
            .ok();
        for partition in partitions_of(list) {
            let found = committed
                .as_ref()
                .and_then(|c| c.find_partition(&partition.0, partition.1));
            let offset = found.as_ref().and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
            let resume = found.as_ref().and_then(|e| Resume::decode(e.metadata()));
            tracing::info!(
                topic = %partition.0,
                partition = partition.1,
                committed = ?offset,
                "kafka: partition assigned"
            );
            self.assignments.assign(partition, offset, resume);
        }
    }
}

pub fn partitions_of(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}
