//! Checkpoints: consistent snapshots of a running pipeline, stored in RocksDB.
//!
//! The protocol (Flink's barrier snapshots, for a linear chain that needs no alignment): the
//! coordinator asks the first operator for checkpoint N. It cuts the checkpoint where it stands:
//! it records the *inputs* of every element still in its queue, in queue order (FLINK-SEMANTICS
//! 27), then the elements it has read ahead but not admitted (never invoked: restoring them costs
//! nothing), and the source position that came with the last batch it took from the source
//! (what is still in the channel is read again on restore). So a barrier never waits for input
//! to find room in a queue (Flink's FLINK-34704). It puts `Message::Barrier(N)` in its output
//! after everything it has emitted; each later operator, told that N has started, reads its input
//! until the barrier reaches it, records its queue and read-ahead the same way and passes the
//! barrier on. The sink, at the barrier, closes its in-progress part. When every stage has
//! reported, the coordinator stores the checkpoint in one atomic write and only then commits the
//! sink's parts to the output files (two-phase commit). On restore, each operator invokes its
//! snapshot's inputs again before any new input, the source seeks to its position and the sink
//! finishes or rolls back the commit the checkpoint names.

pub mod codec;
pub mod commit;
pub mod coordinator;
pub mod kafka;
pub mod report;
pub mod store;

use std::path::PathBuf;

pub use crate::cost::SpendState;
use crate::record::Element;
// Stage vocabulary (record.rs) that checkpoints store.
pub use crate::record::{SourcePosition, WatermarkState};

pub use store::{CheckpointError, CheckpointStore, CheckpointSummary, StoredStatus};

/// One complete checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Increases by one per checkpoint over the life of a checkpoint directory (across restarts).
    pub id: u64,
    /// Wall-clock time the checkpoint was taken, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The source was exhausted and everything was committed: the job is done.
    pub finished: bool,
    pub source: SourcePosition,
    /// One per operator, in chain order.
    pub operators: Vec<OperatorSnapshot>,
    pub sink: SinkTransaction,
    /// The run's spend when the checkpoint was stored: a resumed run goes on counting from it
    /// (its `[budget]` included).
    pub spend: SpendState,
}

/// One operator's part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSnapshot {
    pub name: String,
    /// The plugin file as the manifest named it.
    pub plugin: String,
    /// SHA-256 of the plugin component, hex: restoring into another version is allowed and logged.
    pub plugin_sha256: String,
    /// Capacity and mode at the time, for `inspect`; a restore may use other values.
    pub capacity: u64,
    pub ordered: bool,
    /// The last watermark this operator emitted.
    pub watermark: Option<i64>,
    /// The input of every element in the queue, in queue order: records in flight, records
    /// completed but not emitted, and watermarks; then the elements the operator had read
    /// ahead but not admitted yet. Never `Element::DeadLetter`.
    pub elements: Vec<Element>,
}

impl OperatorSnapshot {
    pub fn records_in_flight(&self) -> usize {
        self.elements
            .iter()
            .filter(|e| matches!(e, Element::Record(_)))
            .count()
    }
}

/// What the sink had written when the barrier reached it, waiting to be committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkTransaction {
    /// The sink's output file; `None` for stdout and discard sinks (not transactional).
    pub output: Option<PendingCommit>,
    pub dead_letters: Option<PendingCommit>,
}

/// Appending `pending` (of `pending_len` bytes) to `target`, whose committed length before the
/// append is `base_len`. Redoing it is harmless: see `commit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCommit {
    pub target: PathBuf,
    pub base_len: u64,
    pub pending: PathBuf,
    pub pending_len: u64,
}
