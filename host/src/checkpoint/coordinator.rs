//! The checkpoint coordinator: triggers checkpoints, gathers every stage's part, stores the
//! checkpoint and then commits the sink's pending parts. Runs on a thread of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{
    Checkpoint, CheckpointError, CheckpointStore, OperatorSnapshot, SinkTransaction, SourcePosition,
};
use crate::connectors::commit::{commit, CommitError};
use crate::record::{Message, StageSender};

/// What stages tell the coordinator.
#[derive(Debug)]
pub enum Report {
    /// The source put barrier `id` in its output, after everything up to `position`.
    Source { id: u64, position: SourcePosition },
    /// The source sent its last element: at `position`; `exhausted` = its input ended (else it
    /// was asked to stop).
    SourceEnd {
        position: SourcePosition,
        exhausted: bool,
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
    /// Put barrier `id` in the stream.
    Checkpoint(u64),
    /// Stop reading; put barrier `checkpoint` (if any) in the stream, then end it.
    Stop { checkpoint: Option<u64> },
}

pub type ControlSender = Sender<Control>;

/// Asked of the coordinator by the pipeline.
#[derive(Debug, Clone, Copy)]
pub enum Command {
    /// Graceful stop: the source stops after one last checkpoint.
    Stop,
}

/// What the coordinator tells the pipeline.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// The checkpoint taken when the stop was asked for is stored (or, when none could be taken,
    /// the last complete one): exiting now loses nothing, the next run resumes from it.
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
}

/// Checkpoint statistics for the run summary.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorReport {
    pub completed: u64,
    pub last_id: Option<u64>,
    /// Time from trigger to stored and committed, per checkpoint.
    pub max_duration: Duration,
    pub total_duration: Duration,
}

struct Pending {
    triggered: Instant,
    source: Option<SourcePosition>,
    operators: Vec<Option<OperatorSnapshot>>,
}

pub struct Coordinator {
    pub store: CheckpointStore,
    pub interval: Duration,
    pub retained: usize,
    /// Name, plugin and settings of each operator, with no elements: the end-of-stream
    /// checkpoint's operator parts (every queue is empty by then).
    pub operators: Vec<OperatorSnapshot>,
    pub next_id: u64,
    pub control: ControlSender,
    /// The first operator's input: once the source has ended, barriers are put there directly
    /// (after its end-of-input marker), so checkpoints go on while the operators drain.
    pub first_stage: StageSender,
    pub reports: Receiver<Report>,
    pub commands: Receiver<Command>,
    pub events: Sender<Event>,
    /// The id of the latest checkpoint started, read by the operators (see
    /// `AsyncWaitOperator::follow_checkpoints`).
    pub announced: Arc<AtomicU64>,
}

impl Coordinator {
    /// Runs until the sink reports the end of the stream (then stores the final checkpoint and
    /// commits) or every stage has gone (the job failed: nothing more is committed).
    pub fn run(mut self) -> Result<CoordinatorReport, CoordinatorError> {
        let mut report = CoordinatorReport::default();
        let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut next_trigger = Instant::now() + self.interval;
        let mut source_end: Option<(SourcePosition, bool)> = None;
        let mut stop_checkpoint: Option<u64> = None;
        let mut commands_open = true;
        let reports_rx = self.reports.clone();
        let commands_rx = self.commands.clone();
        loop {
            let mut select = crossbeam_channel::Select::new();
            let reports_index = select.recv(&reports_rx);
            let commands_index = commands_open.then(|| select.recv(&commands_rx));
            // One checkpoint at a time.
            let ready = if pending.is_empty() {
                select.select_deadline(next_trigger).ok()
            } else {
                Some(select.select())
            };
            let Some(op) = ready else {
                if let Some(id) = self.trigger(&source_end, false) {
                    pending.insert(id, self.pending(&source_end));
                }
                next_trigger = Instant::now() + self.interval;
                continue;
            };
            if Some(op.index()) == commands_index {
                match op.recv(&commands_rx) {
                    Ok(Command::Stop) if stop_checkpoint.is_none() => {
                        match self.trigger(&source_end, true) {
                            Some(id) => {
                                pending.insert(id, self.pending(&source_end));
                                stop_checkpoint = Some(id);
                            }
                            // No barrier can get through any more: the last checkpoint stands.
                            None => {
                                let _ = self.events.send(Event::StopCheckpointDone(report.last_id));
                            }
                        }
                    }
                    Ok(Command::Stop) => {}
                    Err(_) => commands_open = false,
                }
                continue;
            }
            debug_assert_eq!(op.index(), reports_index);
            let Ok(message) = op.recv(&reports_rx) else {
                // Every stage is gone without ending the stream: the job failed.
                return Ok(report);
            };
            match message {
                Report::Source { id, position } => {
                    if let Some(p) = pending.get_mut(&id) {
                        p.source = Some(position);
                    }
                }
                Report::SourceEnd {
                    position,
                    exhausted,
                } => {
                    source_end = Some((position, exhausted));
                    // A checkpoint the source had not started when it ended never gets a
                    // barrier from it (its report would have come first): drop it, so that
                    // checkpoints go on while the operators drain; a stop checkpoint is asked
                    // again, past the source.
                    let lost: Vec<u64> = pending
                        .iter()
                        .filter(|(_, p)| p.source.is_none())
                        .map(|(id, _)| *id)
                        .collect();
                    for id in lost {
                        pending.remove(&id);
                        if stop_checkpoint == Some(id) {
                            stop_checkpoint = self.trigger(&source_end, true);
                            match stop_checkpoint {
                                Some(again) => {
                                    pending.insert(again, self.pending(&source_end));
                                }
                                None => {
                                    let _ =
                                        self.events.send(Event::StopCheckpointDone(report.last_id));
                                }
                            }
                        }
                    }
                }
                Report::Operator {
                    id,
                    index,
                    snapshot,
                } => {
                    if let Some(slot) = pending
                        .get_mut(&id)
                        .and_then(|p| p.operators.get_mut(index))
                    {
                        *slot = Some(snapshot);
                    }
                }
                Report::Sink { id, transaction } => {
                    let Some(p) = pending.remove(&id) else {
                        return Err(CoordinatorError::Protocol {
                            id,
                            message: "the sink reported a checkpoint that was never started".into(),
                        });
                    };
                    let source = p.source.ok_or_else(|| CoordinatorError::Protocol {
                        id,
                        message: "the source never reported its position".into(),
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
                    };
                    self.complete(&checkpoint)?;
                    record_duration(&mut report, id, p.triggered.elapsed());
                    if stop_checkpoint == Some(id) {
                        let _ = self.events.send(Event::StopCheckpointDone(Some(id)));
                    }
                    next_trigger = Instant::now() + self.interval;
                }
                Report::SinkEnd { transaction } => {
                    let started = Instant::now();
                    let (source, exhausted) = source_end.take().unwrap_or_default();
                    let id = self.take_id();
                    let checkpoint = Checkpoint {
                        id,
                        created_at_ms: now_ms(),
                        finished: exhausted,
                        source,
                        operators: self.operators.clone(),
                        sink: transaction,
                    };
                    self.complete(&checkpoint)?;
                    record_duration(&mut report, id, started.elapsed());
                    return Ok(report);
                }
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Starts a checkpoint: through the source while it reads (it reports its position), or,
    /// once it has ended, by putting the barrier straight into the first operator's input.
    /// `None` if no barrier could be placed.
    fn trigger(&mut self, source_end: &Option<(SourcePosition, bool)>, stop: bool) -> Option<u64> {
        let id = self.next_id;
        // Announced first: operators start reading towards the barrier before it is placed.
        self.announced.store(id, Ordering::Release);
        let placed = if source_end.is_some() {
            // Never block here: reports must keep flowing. A full channel skips this checkpoint.
            self.first_stage.try_send(Message::Barrier(id)).is_ok()
        } else if stop {
            self.control
                .send(Control::Stop {
                    checkpoint: Some(id),
                })
                .is_ok()
        } else {
            self.control.send(Control::Checkpoint(id)).is_ok()
        };
        placed.then(|| self.take_id())
    }

    fn pending(&self, source_end: &Option<(SourcePosition, bool)>) -> Pending {
        Pending {
            triggered: Instant::now(),
            // After the end of input, the position is the end.
            source: source_end.as_ref().map(|(position, _)| position.clone()),
            operators: vec![None; self.operators.len()],
        }
    }

    /// Stores the checkpoint, then commits what it covers: a crash in between is repaired on
    /// restore, which redoes the commit the stored checkpoint names.
    fn complete(&self, checkpoint: &Checkpoint) -> Result<(), CoordinatorError> {
        self.store.save(checkpoint, self.retained)?;
        let id = checkpoint.id;
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
        Ok(())
    }
}

fn record_duration(report: &mut CoordinatorReport, id: u64, took: Duration) {
    report.completed += 1;
    report.last_id = Some(id);
    report.max_duration = report.max_duration.max(took);
    report.total_duration += took;
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
    use crate::record::stage_channel;

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

    /// The source ends without taking the checkpoint it was asked for: that checkpoint is dropped
    /// and the next one goes straight to the first operator, so checkpoints go on while the
    /// operators drain; the end of the stream then stores the final, finished checkpoint.
    #[test]
    fn a_checkpoint_the_source_never_took_does_not_stop_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let (control, control_rx) = crossbeam_channel::unbounded();
        let (first_stage, first_stage_rx) = stage_channel();
        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let (_commands_tx, commands) = crossbeam_channel::unbounded();
        let (events, _events_rx) = crossbeam_channel::unbounded();
        let coordinator = Coordinator {
            store,
            interval: Duration::from_millis(10),
            retained: 3,
            operators: vec![operator_identity()],
            next_id: 1,
            control,
            first_stage,
            reports,
            commands,
            events,
            announced: Arc::new(AtomicU64::new(0)),
        };
        let running = std::thread::spawn(move || coordinator.run());

        // The source is asked for checkpoint 1 but ends without taking it.
        let asked = control_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(asked, Control::Checkpoint(1));
        let end = SourcePosition {
            lines: 7,
            offset: 70,
            records: 7,
            ..Default::default()
        };
        reports_tx
            .send(Report::SourceEnd {
                position: end.clone(),
                exhausted: true,
            })
            .unwrap();
        // The next checkpoint's barrier is put into the first operator's input.
        let barrier = loop {
            match first_stage_rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
            {
                Message::Barrier(id) => break id,
                _ => continue,
            }
        };
        assert_eq!(barrier, 2);
        reports_tx
            .send(Report::Operator {
                id: barrier,
                index: 0,
                snapshot: operator_identity(),
            })
            .unwrap();
        reports_tx
            .send(Report::Sink {
                id: barrier,
                transaction: SinkTransaction::default(),
            })
            .unwrap();
        reports_tx
            .send(Report::SinkEnd {
                transaction: SinkTransaction::default(),
            })
            .unwrap();
        let report = running.join().unwrap().unwrap();
        assert_eq!(report.completed, 2);

        let store = CheckpointStore::open_read_only(dir.path()).unwrap();
        let ids: Vec<u64> = store.list().unwrap().iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 3], "checkpoint 1 was never stored");
        let (last, _) = store.latest().unwrap().unwrap();
        assert!(last.finished);
        assert_eq!(last.source, end);
        assert_eq!(store.load(2).unwrap().source, end);
    }
}
