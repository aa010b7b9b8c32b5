//! The checkpoint coordinator: triggers checkpoints, gathers every stage's part, stores the
//! checkpoint and then commits the sink's pending parts. Runs on a thread of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{
    Checkpoint, CheckpointError, CheckpointStore, OperatorSnapshot, SinkTransaction, SourcePosition,
};
use crate::checkpoint::commit::{commit, CommitError};
use crate::checkpoint::kafka::{self as progress, CommitChannel, KafkaCommit};
use crate::cost::CostControl;
use crate::record::{CommandSender, Element, Lease, Partition, StageCommand};
use crate::telemetry::CheckpointTelemetry;

/// What stages tell the coordinator.
#[derive(Debug)]
pub enum Report {
    /// The first operator cut checkpoint `id` after the source's element at `position`.
    Source { id: u64, position: SourcePosition },
    /// The first operator ended after the source's element at `position`; `exhausted` = the
    /// input ended and all of it was admitted (else the run was asked to stop).
    SourceEnd {
        position: SourcePosition,
        exhausted: bool,
    },
    /// Operator `index` ended holding `snapshot` (inputs it read but never admitted, after a
    /// stop; nothing otherwise): its part of the final checkpoint.
    OperatorEnd {
        index: usize,
        snapshot: OperatorSnapshot,
    },
    /// Operator `index` saw barrier `id` with this queue.
    Operator {
        id: u64,
        index: usize,
        snapshot: OperatorSnapshot,
    },
    /// The sink saw barrier `id` and pre-committed what it wrote before it.
    Sink {
        id: u64,
        transaction: SinkTransaction,
    },
    /// The sink saw the end of the stream and pre-committed the rest.
    SinkEnd { transaction: SinkTransaction },
}

pub type ReportSender = Sender<Report>;

/// What the source is asked to do between two elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop reading and end the stream.
    Stop,
}

pub type ControlSender = Sender<Control>;

/// Asked of the coordinator by the pipeline.
#[derive(Debug, Clone)]
pub enum Command {
    /// A forced stop: take a checkpoint now, whatever is in flight (even while another one is
    /// on its way), and say when it is stored.
    CheckpointNow,
    /// Kafka partitions are about to be revoked: commit a checkpoint now, let them go at its
    /// commit, and answer on `done` (dropped unanswered when none could be taken).
    CommitBeforeRevoke {
        partitions: Vec<Partition>,
        /// Ended at that checkpoint: each stage stops handling their records at its barrier.
        leases: Vec<Arc<Lease>>,
        done: Sender<()>,
    },
}

/// What the coordinator tells the pipeline.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// The checkpoint taken for a forced stop is stored (or, when none could be taken, the last
    /// complete one): exiting now loses nothing, the next run resumes from it.
    StopCheckpointDone(Option<u64>),
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] CheckpointError),
    #[error("cannot commit output for checkpoint {id}: {cause}")]
    Commit { id: u64, cause: CommitError },
    #[error("checkpoint {id}: {message}")]
    Protocol { id: u64, message: String },
    #[error("cannot commit checkpoint {id} to kafka: {message}")]
    Kafka { id: u64, message: String },
}

/// The coordinator's bookkeeping while it runs.
struct RunState {
    /// Checkpoints started and not stored yet.
    pending: BTreeMap<u64, Pending>,
    next_trigger: Instant,
    /// Where the source stood when the first operator ended, and whether it was exhausted.
    source_end: Option<(SourcePosition, bool)>,
    /// What each operator held when it ended (its part of the final checkpoint).
    end_snapshots: Vec<Option<OperatorSnapshot>>,
    /// The checkpoint taken for a forced stop.
    exit_checkpoint: Option<u64>,
}

enum Flow {
    Going,
    Ended,
}

struct Pending {
    triggered: Instant,
    source: Option<SourcePosition>,
    operators: Vec<Option<OperatorSnapshot>>,
    /// Kafka partitions let go at this checkpoint's commit, and who waits for it.
    revoking: Vec<Partition>,
    revoked: Option<Sender<()>>,
}

pub struct Coordinator {
    /// `None` for a Kafka source without `[checkpoint]`: its commits are the only state.
    pub store: Option<CheckpointStore>,
    /// A Kafka source's offsets commit through the Kafka sink after each checkpoint.
    pub kafka: Option<CommitChannel>,
    pub interval: Duration,
    pub retained: usize,
    /// Name, plugin and settings of each operator, with no elements: the end-of-stream
    /// checkpoint's operator parts (every queue is empty by then).
    pub operators: Vec<OperatorSnapshot>,
    pub next_id: u64,
    /// Each operator's command channel, in chain order: a checkpoint starts at the first.
    pub operator_commands: Vec<CommandSender>,
    pub reports: Receiver<Report>,
    pub commands: Receiver<Command>,
    pub events: Sender<Event>,
    /// Checkpoints completed and how long they took, updated as they complete.
    pub telemetry: Arc<CheckpointTelemetry>,
    /// The run's spend, kept in each checkpoint (read when it is stored: everything spent by
    /// then was spent, whether or not its records are in the checkpoint).
    pub cost: Arc<CostControl>,
}

impl Coordinator {
    /// Runs until the sink reports the end of the stream (then stores the final checkpoint and
    /// commits) or every stage has gone (the job failed: nothing more is committed).
    pub fn run(mut self) -> Result<(), CoordinatorError> {
        let mut state = RunState {
            pending: BTreeMap::new(),
            next_trigger: Instant::now() + self.interval,
            source_end: None,
            end_snapshots: vec![None; self.operators.len()],
            exit_checkpoint: None,
        };
        let mut commands_open = true;
        let reports_rx = self.reports.clone();
        let commands_rx = self.commands.clone();
        loop {
            let mut select = crossbeam_channel::Select::new();
            let reports_index = select.recv(&reports_rx);
            let commands_index = commands_open.then(|| select.recv(&commands_rx));
            // One periodic checkpoint at a time; none once the first operator has ended (no
            // barrier can enter the chain any more: the final checkpoint follows at the end).
            let ready = if state.pending.is_empty() && state.source_end.is_none() {
                select.select_deadline(state.next_trigger).ok()
            } else {
                Some(select.select())
            };
            let Some(op) = ready else {
                if let Some(id) = self.trigger() {
                    state.pending.insert(id, self.pending());
                }
                state.next_trigger = Instant::now() + self.interval;
                continue;
            };
            if Some(op.index()) == commands_index {
                match op.recv(&commands_rx) {
                    Ok(Command::CheckpointNow) => self.checkpoint_now(&mut state),
                    Ok(Command::CommitBeforeRevoke {
                        partitions,
                        leases,
                        done,
                    }) => {
                        // Before the first operator can cut it.
                        for lease in &leases {
                            lease.revoke_at(self.next_id);
                        }
                        // Unanswered (dropped) when no barrier can get through any more; the
                        // partitions then go at once.
                        match self.trigger() {
                            Some(id) => {
                                let mut pending = self.pending();
                                pending.revoking = partitions;
                                pending.revoked = Some(done);
                                state.pending.insert(id, pending);
                            }
                            None => leases.iter().for_each(|lease| lease.revoke_at(0)),
                        }
                    }
                    Err(_) => commands_open = false,
                }
                continue;
            }
            debug_assert_eq!(op.index(), reports_index);
            let Ok(message) = op.recv(&reports_rx) else {
                // Every stage is gone without ending the stream: the job failed.
                return Ok(());
            };
            if let Flow::Ended = self.on_report(message, &mut state)? {
                return Ok(());
            }
        }
    }

    /// A forced stop: a checkpoint now, unless one for the stop is already on its way.
    fn checkpoint_now(&mut self, state: &mut RunState) {
        if state.exit_checkpoint.is_some() {
            return;
        }
        match self.trigger() {
            Some(id) => {
                state.pending.insert(id, self.pending());
                state.exit_checkpoint = Some(id);
            }
            // No barrier can get through any more: the last checkpoint stands.
            None => self.last_checkpoint_stands(),
        }
    }

    fn last_checkpoint_stands(&self) {
        let _ = self
            .events
            .send(Event::StopCheckpointDone(self.telemetry.last_id()));
    }

    fn on_report(
        &mut self,
        message: Report,
        state: &mut RunState,
    ) -> Result<Flow, CoordinatorError> {
        match message {
            Report::Source { id, position } => {
                if let Some(p) = state.pending.get_mut(&id) {
                    p.source = Some(position);
                }
            }
            Report::SourceEnd {
                position,
                exhausted,
            } => {
                state.source_end = Some((position, exhausted));
                // A checkpoint the first operator had not cut when it ended never gets a
                // barrier (its report would have come first): drop it.
                let lost: Vec<u64> = state
                    .pending
                    .iter()
                    .filter(|(_, p)| p.source.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    state.pending.remove(&id);
                    if state.exit_checkpoint == Some(id) {
                        self.last_checkpoint_stands();
                    }
                }
            }
            Report::Operator {
                id,
                index,
                snapshot,
            } => {
                if let Some(slot) = state
                    .pending
                    .get_mut(&id)
                    .and_then(|p| p.operators.get_mut(index))
                {
                    *slot = Some(snapshot);
                }
            }
            Report::OperatorEnd { index, snapshot } => {
                if let Some(slot) = state.end_snapshots.get_mut(index) {
                    *slot = Some(snapshot);
                }
            }
            Report::Sink { id, transaction } => {
                self.store_periodic(id, transaction, state)?;
                state.next_trigger = Instant::now() + self.interval;
            }
            Report::SinkEnd { transaction } => {
                self.store_final(transaction, state)?;
                return Ok(Flow::Ended);
            }
        }
        Ok(Flow::Going)
    }

    /// The sink has its part of checkpoint `id`: every part is in, store and commit it.
    fn store_periodic(
        &mut self,
        id: u64,
        transaction: SinkTransaction,
        state: &mut RunState,
    ) -> Result<(), CoordinatorError> {
        let Some(p) = state.pending.remove(&id) else {
            return Err(CoordinatorError::Protocol {
                id,
                message: "the sink reported a checkpoint that was never started".into(),
            });
        };
        let source = p.source.ok_or_else(|| CoordinatorError::Protocol {
            id,
            message: "the first operator never reported the source position".into(),
        })?;
        let operators = p
            .operators
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or_else(|| CoordinatorError::Protocol {
                    id,
                    message: format!("operator {i} never reported its queue"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint = Checkpoint {
            id,
            created_at_ms: now_ms(),
            finished: false,
            source,
            operators,
            sink: transaction,
            spend: self.cost.spend_state(Instant::now()),
        };
        let bytes = self.complete(&checkpoint, p.revoking)?;
        self.telemetry.completed(id, p.triggered.elapsed(), bytes);
        if let Some(done) = p.revoked {
            let _ = done.send(());
        }
        if state.exit_checkpoint == Some(id) {
            let _ = self.events.send(Event::StopCheckpointDone(Some(id)));
        }
        Ok(())
    }

    /// The stream has ended at the sink: the final checkpoint, from what each stage reported
    /// when it ended.
    fn store_final(
        &mut self,
        transaction: SinkTransaction,
        state: &mut RunState,
    ) -> Result<(), CoordinatorError> {
        let started = Instant::now();
        let (source, exhausted) = state.source_end.take().unwrap_or_default();
        // What each operator held when it ended: nothing, unless the run was stopped and the
        // first operator kept inputs it never admitted.
        let operators = state
            .end_snapshots
            .iter_mut()
            .zip(&self.operators)
            .map(|(end, identity)| end.take().unwrap_or_else(|| identity.clone()))
            .collect::<Vec<_>>();
        let finished = exhausted && operators.iter().all(|o| o.elements.is_empty());
        let id = self.take_id();
        let checkpoint = Checkpoint {
            id,
            created_at_ms: now_ms(),
            finished,
            source,
            operators,
            sink: transaction,
            spend: self.cost.spend_state(Instant::now()),
        };
        let bytes = self.complete(&checkpoint, Vec::new())?;
        self.telemetry.completed(id, started.elapsed(), bytes);
        Ok(())
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Starts a checkpoint: the first operator cuts it, the others are told a barrier is on its
    /// way. `None` if the first operator has ended (no barrier can be placed).
    fn trigger(&mut self) -> Option<u64> {
        let id = self.next_id;
        let (first, rest) = self.operator_commands.split_first()?;
        first.send(StageCommand::Checkpoint(id)).ok()?;
        for later in rest {
            let _ = later.send(StageCommand::Checkpoint(id));
        }
        Some(self.take_id())
    }

    fn pending(&self) -> Pending {
        Pending {
            triggered: Instant::now(),
            source: None,
            operators: vec![None; self.operators.len()],
            revoking: Vec::new(),
            revoked: None,
        }
    }

    /// Stores the checkpoint, then commits what it covers: a crash in between is repaired on
    /// restore, which redoes the commit the stored checkpoint names.
    /// Stores and commits `checkpoint`; returns its size in bytes.
    fn complete(
        &self,
        checkpoint: &Checkpoint,
        revoking: Vec<Partition>,
    ) -> Result<u64, CoordinatorError> {
        let bytes = match &self.store {
            Some(store) => store.save(checkpoint, self.retained)?,
            None => 0,
        };
        let id = checkpoint.id;
        if let Some(kafka) = &self.kafka {
            commit_to_kafka(kafka, checkpoint, revoking)?;
        }
        for part in [&checkpoint.sink.output, &checkpoint.sink.dead_letters]
            .into_iter()
            .flatten()
        {
            commit(part).map_err(|cause| CoordinatorError::Commit { id, cause })?;
        }
        tracing::debug!(
            checkpoint = id,
            lines = checkpoint.source.lines,
            in_flight = checkpoint
                .operators
                .iter()
                .map(OperatorSnapshot::records_in_flight)
                .sum::<usize>(),
            "checkpoint complete"
        );
        Ok(bytes)
    }
}

/// Hands the checkpoint's offsets to the Kafka sink, which commits them with the output it wrote
/// before the barrier, and waits until it has.
fn commit_to_kafka(
    kafka: &CommitChannel,
    checkpoint: &Checkpoint,
    revoking: Vec<Partition>,
) -> Result<(), CoordinatorError> {
    let id = checkpoint.id;
    let in_flight = checkpoint
        .operators
        .iter()
        .flat_map(|o| &o.elements)
        .filter_map(|e| match e {
            Element::Record(r) => r.origin.as_deref(),
            _ => None,
        });
    let commits = match checkpoint.source.kafka.as_deref() {
        Some(position) => progress::commits(position, in_flight),
        None => Vec::new(),
    };
    let gone = || CoordinatorError::Kafka {
        id,
        message: "the kafka sink stopped".into(),
    };
    kafka
        .commits
        .send(KafkaCommit { commits, revoking })
        .map_err(|_| gone())?;
    match kafka.done.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(CoordinatorError::Kafka { id, message }),
        Err(_) => Err(gone()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator_identity() -> OperatorSnapshot {
        OperatorSnapshot {
            name: "op".into(),
            plugin: "op.wasm".into(),
            plugin_sha256: "00".into(),
            capacity: 10,
            ordered: true,
            watermark: None,
            elements: Vec::new(),
        }
    }

    /// The first operator cuts every checkpoint: it reports the source position and its queue,
    /// later operators are told a barrier is coming; the end of the stream stores the final
    /// checkpoint with what each operator held when it ended, finished only when nothing is left.
    #[test]
    fn checkpoints_start_at_the_first_operator_and_the_end_keeps_what_was_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let (first, first_rx) = crossbeam_channel::unbounded();
        let (second, second_rx) = crossbeam_channel::unbounded();
        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let (_commands_tx, commands) = crossbeam_channel::unbounded();
        let (events, _events_rx) = crossbeam_channel::unbounded();
        let coordinator = Coordinator {
            store: Some(store),
            kafka: None,
            interval: Duration::from_millis(10),
            retained: 3,
            operators: vec![operator_identity(), operator_identity()],
            next_id: 1,
            operator_commands: vec![first, second],
            reports,
            commands,
            events,
            telemetry: Arc::default(),
            cost: Arc::default(),
        };
        let telemetry = Arc::clone(&coordinator.telemetry);
        let running = std::thread::spawn(move || coordinator.run());

        let asked = first_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(asked, StageCommand::Checkpoint(1));
        assert_eq!(
            second_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            StageCommand::Checkpoint(1)
        );
        let cut = SourcePosition {
            lines: 3,
            offset: 30,
            records: 3,
            ..Default::default()
        };
        reports_tx
            .send(Report::Source {
                id: 1,
                position: cut.clone(),
            })
            .unwrap();
        for index in 0..2 {
            reports_tx
                .send(Report::Operator {
                    id: 1,
                    index,
                    snapshot: operator_identity(),
                })
                .unwrap();
        }
        reports_tx
            .send(Report::Sink {
                id: 1,
                transaction: SinkTransaction::default(),
            })
            .unwrap();

        // The run is stopped: the first operator ends holding two records it never admitted.
        let end = SourcePosition {
            lines: 7,
            offset: 70,
            records: 7,
            ..Default::default()
        };
        let mut left = operator_identity();
        left.elements = vec![
            crate::record::Element::Watermark(5),
            crate::record::Element::Record(crate::record::Record {
                key: None,
                timestamp: None,
                payload: b"{}".to_vec(),
                line: 6,
                enters_at: 0,
                produced_by: None,
                origin: None,
                ticket: None,
            }),
        ];
        reports_tx
            .send(Report::SourceEnd {
                position: end.clone(),
                exhausted: false,
            })
            .unwrap();
        reports_tx
            .send(Report::OperatorEnd {
                index: 0,
                snapshot: left.clone(),
            })
            .unwrap();
        reports_tx
            .send(Report::SinkEnd {
                transaction: SinkTransaction::default(),
            })
            .unwrap();
        running.join().unwrap().unwrap();
        assert!(telemetry.completed.get() >= 2);

        let store = CheckpointStore::open_read_only(dir.path()).unwrap();
        assert_eq!(store.load(1).unwrap().source, cut);
        let (last, _) = store.latest().unwrap().unwrap();
        assert!(!last.finished, "records were left: the job is not finished");
        assert_eq!(last.source, end);
        assert_eq!(last.operators[0].elements, left.elements);
        assert!(last.operators[1].elements.is_empty());
    }
}
