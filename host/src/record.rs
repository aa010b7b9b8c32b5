//! Stream elements as they flow between source, operators and sink.

/// One record. The fields mirror the WIT `event`; `line` remembers where the record came from
/// (source line, or generator index) so errors and dead letters can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Option<String>,
    /// Event time, ms since the Unix epoch.
    pub timestamp: Option<i64>,
    pub payload: Vec<u8>,
    /// 1-based position of the input record this one derives from.
    pub line: u64,
}

/// What flows through the pipeline: records and watermarks, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Element {
    Record(Record),
    /// Event time has reached this value (ms since the Unix epoch).
    Watermark(i64),
    /// A dead letter on its way to the sink, which owns the dead-letter output: one JSON line
    /// (without its newline). Travelling in-band keeps dead letters consistent with checkpoint
    /// barriers. Operators pass it through at once; it takes no capacity.
    DeadLetter(Vec<u8>),
}

/// Elements travel between stages in batches: one channel message per batch keeps the per-record
/// cost of the hand-off small.
pub type Batch = Vec<Element>;

/// What travels on a channel between two stages. A stage that ends normally sends `End`; a
/// channel that disconnects without it means the stage before failed.
#[derive(Debug)]
pub enum Message {
    Batch(Batch),
    /// Checkpoint barrier `id`: every element before it belongs to the checkpoint.
    Barrier(u64),
    End,
}

pub type StageSender = crossbeam_channel::Sender<Message>;
pub type StageReceiver = crossbeam_channel::Receiver<Message>;

/// A bounded channel between two stages: when it is full the sender waits (backpressure).
pub fn stage_channel() -> (StageSender, StageReceiver) {
    crossbeam_channel::bounded(CHANNEL_DEPTH)
}

/// How many elements a stage puts in one batch at most.
pub const BATCH_SIZE: usize = 256;

/// Bounded channel depth between stages, in batches.
pub const CHANNEL_DEPTH: usize = 4;
