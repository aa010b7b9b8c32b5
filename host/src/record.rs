//! Stream elements as they flow between source, operators and sink.

/// One record. The fields mirror the WIT `event`; `line` remembers where the record came from
/// (source line, or generator index) so errors and dead letters can name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<String>,
    /// Event time, ms since the Unix epoch.
    pub timestamp: Option<i64>,
    pub payload: Vec<u8>,
    /// 1-based position of the input record this one derives from.
    pub line: u64,
    /// The chain index of the operator this record starts at: the operators before it pass it
    /// on unchanged, in its place. 0 except for a replayed dead letter, which resumes at the
    /// operator where it failed (`waio dead-letters replay`).
    pub enters_at: usize,
    /// The digest of the plugin version whose operator produced this record (`None` for a
    /// record no operator produced): the envelope's `plugin_digest`, which tells the versions
    /// apart across a hot reload. Not kept in checkpoints.
    pub produced_by: Option<&'static str>,
    /// Where a Kafka source read the input this record derives from (`None` for other sources):
    /// offsets commit per partition, dead letters name it and the sink carries its headers over.
    /// Not kept in checkpoints: a Kafka source's state lives in the Kafka transaction.
    pub origin: Option<std::sync::Arc<Origin>>,
    /// The caller of `waio serve` waiting for the input this record derives from (`None` for
    /// other runs): outputs, a failure or the end of the record's last copy are its answer.
    pub ticket: Option<std::sync::Arc<crate::answers::Ticket>>,
}

/// A plugin version's digest for the records it produces, interned: a record carries it with
/// no reference count to touch (two threads counting one `Arc` per record cost a shared cache
/// line each). Each distinct digest is kept once for the life of the process: one per plugin
/// version ever loaded, 64 bytes each.
pub fn interned_digest(digest: &str) -> &'static str {
    static DIGESTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::LazyLock::new(Default::default);
    let mut digests = DIGESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = digests.get(digest) {
        return known;
    }
    let leaked: &'static str = Box::leak(digest.to_string().into_boxed_str());
    digests.insert(leaked);
    leaked
}

/// Payload buffers of records that have left an operator, kept to hold the payloads of the
/// outputs it makes next: an operator thread then allocates and frees no payload per record (its
/// inputs were allocated by the thread before it, and freeing across threads costs more still).
/// Per thread, so no lock; at most `SPARE_PAYLOADS` buffers of up to `SPARE_PAYLOAD_BYTES`.
mod spare {
    use std::cell::RefCell;

    const SPARE_PAYLOADS: usize = 1024;
    const SPARE_PAYLOAD_BYTES: usize = 4096;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A copy of `bytes` in a spare buffer if there is one.
    pub fn payload_of(bytes: &[u8]) -> Vec<u8> {
        match SPARE.with(|s| s.borrow_mut().pop()) {
            Some(mut buffer) => {
                buffer.extend_from_slice(bytes);
                buffer
            }
            None => bytes.to_vec(),
        }
    }

    /// Keeps `buffer` (emptied) for a later [`payload_of`], if there is room and it is small.
    pub fn recycle(mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > SPARE_PAYLOAD_BYTES {
            return;
        }
        buffer.clear();
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARE_PAYLOADS {
                spare.push(buffer);
            }
        });
    }
}

pub use spare::{payload_of, recycle as recycle_payload};

#[cfg(test)]
mod spare_tests {
    use super::*;

    #[test]
    fn a_batch_the_sink_is_done_with_holds_a_later_batch() {
        let spare = SpareBatches::new(2);
        let mut batch = spare.take();
        assert!(batch.is_empty() && batch.capacity() >= BATCH_SIZE);
        batch.push(Element::Watermark(1));
        let at = batch.as_ptr();
        spare.keep(batch);
        let again = spare.take();
        assert_eq!(again.as_ptr(), at, "the same vector");
        assert!(again.is_empty(), "its elements dropped");
        // A small or a grown vector is not kept, nor more than there is room for.
        spare.keep(Vec::with_capacity(8));
        spare.keep(Vec::with_capacity(4 * BATCH_SIZE));
        assert_eq!(spare.rx.len(), 0);
        for _ in 0..3 {
            spare.keep(Vec::with_capacity(BATCH_SIZE));
        }
        assert_eq!(spare.rx.len(), 2);
    }

    #[test]
    fn a_recycled_payload_buffer_holds_the_next_copy() {
        // A fresh thread: its own spare buffers, none yet.
        std::thread::spawn(|| {
            let first = payload_of(b"abc");
            assert_eq!(first, b"abc");
            let at = first.as_ptr();
            recycle_payload(first);
            let second = payload_of(b"xy");
            assert_eq!(second, b"xy", "the old bytes are gone");
            assert_eq!(second.as_ptr(), at, "the same buffer");
            // A large buffer is not kept.
            let large = vec![0u8; 64 * 1024];
            recycle_payload(large);
            let third = payload_of(b"z");
            assert!(third.capacity() < 64 * 1024);
        })
        .join()
        .unwrap();
    }
}

/// The outputs of one record: most records have one, kept inline (no allocation).
pub type Outputs = smallvec::SmallVec<[Record; 1]>;

/// A Kafka record's place and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The partition's assignment when the record was read: once a rebalance has taken the
    /// partition away, operators do not invoke the record and the sink drops what is still on
    /// its way (the new owner reads it again).
    pub lease: std::sync::Arc<Lease>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One assignment of a Kafka partition to this process, and when it ends: at checkpoint
/// `revoked_at`, whose commit settles the partition. Each stage drops the partition's records
/// once it has passed that checkpoint's barrier: they were committed as pending, and the new
/// owner reads them again.
#[derive(Debug)]
pub struct Lease {
    /// Increases with every assignment in this process.
    pub generation: u64,
    revoked_at: std::sync::atomic::AtomicU64,
}

impl Default for Lease {
    fn default() -> Lease {
        Lease::new(0)
    }
}

impl Lease {
    pub fn new(generation: u64) -> Lease {
        Lease {
            generation,
            revoked_at: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// The partition goes at checkpoint `id` (0: at once, no checkpoint settles it).
    pub fn revoke_at(&self, id: u64) {
        self.revoked_at
            .fetch_min(id, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether a stage that has passed barrier `barrier` (0: none) drops the partition's
    /// records.
    pub fn revoked_by(&self, barrier: u64) -> bool {
        self.revoked_at.load(std::sync::atomic::Ordering::Acquire) <= barrier
    }

    pub fn revoking(&self) -> bool {
        self.revoked_at.load(std::sync::atomic::Ordering::Acquire) != u64::MAX
    }
}

impl PartialEq for Lease {
    fn eq(&self, other: &Lease) -> bool {
        self.generation == other.generation
    }
}

impl Eq for Lease {}

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
    /// A batch straight from the source, with the source's position after its last element.
    /// The first operator keeps the position of the last batch it took: that is where a
    /// checkpoint it cuts resumes reading (what is still in the channel is read again).
    Read(Batch, SourcePosition),
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

/// How many elements a stage puts in one batch at most. Each hand-over between stage threads
/// may wake one (a futex wake, dear in a VM: with 1024 a batch, some runs of a cheap pipeline
/// spent 8-14% of their time in the kernel's wake-up path; see docs/BENCHMARKS.md): large
/// batches of small records make those rare. `BATCH_BYTES` keeps batches of large records small.
pub const BATCH_SIZE: usize = 4096;

/// How many payload bytes a source puts in one batch at most (it closes the batch at the record
/// that reaches it), so that what is read ahead stays small for large records.
pub const BATCH_BYTES: usize = 256 * 1024;

/// Whether a source's batch of `len` elements and `bytes` payload bytes is to be handed over.
pub fn batch_is_full(len: usize, bytes: usize) -> bool {
    len >= BATCH_SIZE || bytes >= BATCH_BYTES
}

/// A vector for a new batch: an emptied one the sink gave back (see [`recycle_batch`]) if
/// there is one. A batch of `BATCH_SIZE` elements is large enough that the allocator takes it
/// from fresh pages, and returns its pages to the system a while after it is freed: new batches
/// cost page faults (up to 7% of a cheap pipeline's time, see docs/BENCHMARKS.md). Going
/// round, the vectors are reused instead.
pub fn new_batch() -> Batch {
    SPARE_BATCHES.take()
}

/// The sink is done with `batch`: its elements are dropped and the vector kept for
/// [`new_batch`] (see `SpareBatches::keep`).
pub fn recycle_batch(batch: Batch) {
    SPARE_BATCHES.keep(batch);
}

/// Emptied batch vectors, at most a few of about 0.5 MiB each. One for the process: they are
/// plain empty vectors, whichever pipeline they served.
static SPARE_BATCHES: std::sync::LazyLock<SpareBatches> =
    std::sync::LazyLock::new(|| SpareBatches::new(4));

struct SpareBatches {
    tx: crossbeam_channel::Sender<Batch>,
    rx: crossbeam_channel::Receiver<Batch>,
}

impl SpareBatches {
    fn new(count: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(count);
        SpareBatches { tx, rx }
    }

    /// A kept vector, or a new one of `BATCH_SIZE`.
    fn take(&self) -> Batch {
        self.rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_SIZE))
    }

    /// Drops the elements of `batch` and keeps the vector if it is of about full size (one an
    /// operator's fan-out grew further is freed) and there is room.
    fn keep(&self, mut batch: Batch) {
        if !(BATCH_SIZE..=2 * BATCH_SIZE).contains(&batch.capacity()) {
            return;
        }
        batch.clear();
        let _ = self.tx.try_send(batch);
    }
}

/// Bounded channel depth between stages, in batches: with `BATCH_SIZE`, what a stage may read
/// ahead of the next (and what a checkpoint barrier may wait behind).
pub const CHANNEL_DEPTH: usize = 2;

/// What the pipeline asks of a running operator, on a channel of its own (so it is seen at once,
/// not behind queued input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageCommand {
    /// Checkpoint `id` starts. The first operator cuts it now: it records its queue, what it has
    /// read ahead and the source position of the last batch it took, and puts the barrier in its
    /// output. The others read their input until that barrier reaches them.
    Checkpoint(u64),
    /// Graceful stop. The first operator admits nothing more, finishes what is in flight and
    /// ends, leaving what it read ahead in the final checkpoint; the others finish what reaches
    /// them.
    Stop,
    /// Forced stop without checkpoints: end at once, without finishing what is in flight.
    Abort,
    /// A hot reload waits on the operator's reload channel: swap it in between two records.
    Reload,
}

pub type CommandSender = crossbeam_channel::Sender<StageCommand>;
pub type CommandReceiver = crossbeam_channel::Receiver<StageCommand>;

/// Where the source stands: everything before this point has entered the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePosition {
    /// Input lines consumed (blank and malformed lines included); the next line is `lines + 1`.
    pub lines: u64,
    /// Bytes of input consumed; a file source seeks here on restore.
    pub offset: u64,
    /// Records handed to the first operator (or dead-lettered by the source).
    pub records: u64,
    /// Event-time state of the watermark generator.
    pub watermark: WatermarkState,
    /// A Kafka source's read position per assigned partition (`None` for other sources). Not
    /// kept in checkpoints: it is committed in the Kafka transaction.
    pub kafka: Option<std::sync::Arc<KafkaPosition>>,
}

/// The next offset to read of each assigned partition, by topic and partition, with its
/// assignment generation.
pub type KafkaPosition = std::collections::BTreeMap<(std::sync::Arc<str>, i32), PartitionRead>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionRead {
    pub next: i64,
    pub generation: u64,
    /// What the commit this reader resumed from said (see `checkpoint::kafka`).
    pub resume: Option<std::sync::Arc<Resume>>,
}

/// A Kafka partition: topic and number.
pub type Partition = (std::sync::Arc<str>, i32);

/// What the metadata of a committed offset says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Every offset below it was read before the commit.
    pub next: i64,
    /// Offsets below `next` whose records were still in flight: read them again.
    pub pending: Vec<i64>,
}

/// The watermark generator's state (see `event_time`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatermarkState {
    /// Largest event timestamp seen so far.
    pub max_timestamp: Option<i64>,
    /// Last watermark the source emitted (generated or taken from the input).
    pub emitted: Option<i64>,
}
