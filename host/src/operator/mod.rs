//! The async-wait operator: Flink's `AsyncWaitOperator` with a WebAssembly plugin as the
//! `AsyncFunction`.
//!
//! One thread owns the operator: its queue, its plugin instances and its timers. It reacts to
//! three things (input, HTTP answers, timer expiry) and after each one emits whatever the queue
//! lets leave. Capacity bounds the queue; while it is full the thread stops reading input, which
//! backs up the channel and so the source (backpressure), while answers, timers and emission go on.
//! A checkpoint barrier in the input makes it report the inputs of its queue and pass the barrier on.

pub mod queue;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::coordinator::{Report, ReportSender};
use crate::checkpoint::{OperatorSnapshot, SourcePosition};
use crate::connectors::dead_letter::DeadLetter;
use crate::manifest::{OperatorConfig, Policy};
use crate::outbound::Outbound;
use crate::plugin::bindings::{Event, FailureKind, HttpError, HttpResponse};
use crate::plugin::{
    Effects, GuestTrap, OutgoingCall, PluginComponent, PluginError, PluginInstance,
};
use crate::record::{
    Batch, CommandReceiver, Element, Message, Record, StageCommand, StageReceiver, StageSender,
    BATCH_SIZE, CHANNEL_DEPTH,
};
use crate::telemetry::OperatorTelemetry;

/// Elements an operator reads ahead of its queue at most: enough to empty its input channel,
/// so a checkpoint barrier never waits behind a full channel.
const READ_AHEAD: usize = BATCH_SIZE * (CHANNEL_DEPTH + 1);
/// How often a record may be invoked again into a fresh instance after its instance trapped
/// while serving another record, before it fails: a cascade of traps must not keep the operator
/// busy forever.
pub const MAX_REINVOCATIONS: u32 = 3;
use queue::{ElementQueue, Emitted};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("operator {operator:?}: record {record} failed: {message}")]
    RecordFailed {
        operator: String,
        record: String,
        message: String,
    },
    #[error("operator {operator:?}: could not complete the stream element {record}: timed out after {timeout}{detail}")]
    TimedOut {
        operator: String,
        record: String,
        timeout: String,
        detail: String,
    },
    // The message includes the cause, so it is not also a `source()`: `{:#}` would repeat it.
    #[error("operator {operator:?}: {cause}")]
    Plugin {
        operator: String,
        cause: PluginError,
    },
    #[error("operator {operator:?}: plugin trapped while opening a fresh instance: {trap}")]
    OpenTrapped { operator: String, trap: GuestTrap },
    #[error("operator {operator:?}: the checkpoint coordinator stopped")]
    CoordinatorGone { operator: String },
    #[error("operator {operator:?}: the stage before it stopped without finishing")]
    UpstreamFailed { operator: String },
    #[error("operator {operator:?}: the next stage stopped")]
    DownstreamGone { operator: String },
    #[error("operator {operator:?}: stopped at once, records in flight were not finished")]
    Aborted { operator: String },
}

/// The answer to one plugin request, on its way back to the operator task.
struct CallDone {
    instance: usize,
    generation: u64,
    call_id: u64,
    owner: Option<u64>,
    result: Result<HttpResponse, HttpError>,
}

struct Slot {
    instance: PluginInstance,
    generation: u64,
    /// Memory in use right after the instance was opened; growth is measured from here.
    baseline: usize,
    /// Records completed by this instance. An instance that has completed none holds only what
    /// its records in flight need: replacing it would rebuild the same state, forever.
    completed: u64,
}

/// A record inside the operator.
struct Entry {
    input: Record,
    attempt: u32,
    instance: usize,
    segment: u64,
    entered: Instant,
    timed_out: bool,
    done: bool,
    /// The dead letter this record became; it leaves at the record's position, so a checkpoint
    /// that still holds the record's input never also holds its dead letter.
    dead_letter: Option<Vec<u8>>,
    /// Times its instance trapped under it (see `MAX_REINVOCATIONS`).
    reinvocations: u32,
    /// Waiting in `reinvoke` for its turn.
    reinvoke_queued: bool,
    /// The plugin's `timeout` sent a request for it: it may still complete until this instant.
    grace_until: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    Failure,
    Timeout,
}

pub struct AsyncWaitOperator {
    config: OperatorConfig,
    component: Arc<PluginComponent>,
    outbound: Arc<Outbound>,
    source_label: Arc<str>,
    /// Position in the chain, for checkpoint reports.
    index: usize,
    reports: Option<ReportSender>,
    slots: Vec<Slot>,
    next_slot: usize,
    queue: ElementQueue,
    entries: HashMap<u64, Entry>,
    next_seq: u64,
    /// Record deadlines (and timeout grace periods), earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Records to invoke again on a fresh instance, in order. A queue, not recursion: a fresh
    /// instance can trap or fill up again while they are re-invoked.
    reinvoke: VecDeque<u64>,
    /// Requests on the network now, and those waiting for room (`max_requests_in_flight`).
    calls_in_flight: usize,
    waiting_calls: VecDeque<(usize, u64, OutgoingCall)>,
    answers_tx: crossbeam_channel::Sender<CallDone>,
    answers_rx: crossbeam_channel::Receiver<CallDone>,
    /// Where HTTP requests run.
    runtime: tokio::runtime::Handle,
    /// Answers made by the host itself (refused requests), delivered on the next turn.
    local_answers: VecDeque<CallDone>,
    emitted: Vec<Emitted>,
    /// Watermarks in the queue with their sequence numbers; they leave in this order.
    queued_watermarks: VecDeque<(u64, i64)>,
    last_watermark: Option<i64>,
    /// Dead letters from upstream, passed on with the next output.
    passthrough: Vec<Vec<u8>>,
    /// Inputs restored from a checkpoint, admitted before any new input.
    restored: Vec<Element>,
    /// Checkpoint, stop and abort commands from the pipeline.
    commands: Option<CommandReceiver>,
    /// The latest checkpoint started, and the last barrier seen here: while one is on its way a
    /// later operator reads its input without bound (the barrier is at most a channel's depth
    /// away), so the barrier never waits for records to find room in the queue.
    barrier_wanted: u64,
    last_barrier: u64,
    /// The source position after the last batch taken (first operator): where a checkpoint cut
    /// here resumes reading.
    upstream_position: SourcePosition,
    /// Asked to stop (first operator): admit nothing more, finish what is in flight, end.
    stopping: bool,
    /// Line of the last record admitted, for the stop message.
    last_admitted_line: u64,
    telemetry: Arc<OperatorTelemetry>,
}

impl AsyncWaitOperator {
    /// Makes and opens the plugin instances. Fails if the plugin cannot be opened.
    pub fn new(
        config: OperatorConfig,
        component: Arc<PluginComponent>,
        outbound: Arc<Outbound>,
        source_label: Arc<str>,
        runtime: tokio::runtime::Handle,
        reports: Option<ReportSender>,
        telemetry: Arc<OperatorTelemetry>,
    ) -> Result<Self, OperatorError> {
        let (answers_tx, answers_rx) = crossbeam_channel::unbounded();
        let index = config.index;
        let mut operator = AsyncWaitOperator {
            queue: ElementQueue::new(config.ordered),
            telemetry,
            config,
            component,
            outbound,
            source_label,
            index,
            reports,
            slots: Vec::new(),
            next_slot: 0,
            entries: HashMap::new(),
            next_seq: 0,
            deadlines: BinaryHeap::new(),
            reinvoke: VecDeque::new(),
            calls_in_flight: 0,
            waiting_calls: VecDeque::new(),
            answers_tx,
            answers_rx,
            runtime,
            local_answers: VecDeque::new(),
            emitted: Vec::new(),
            queued_watermarks: VecDeque::new(),
            last_watermark: None,
            passthrough: Vec::new(),
            restored: Vec::new(),
            commands: None,
            barrier_wanted: 0,
            last_barrier: 0,
            upstream_position: SourcePosition::default(),
            stopping: false,
            last_admitted_line: 0,
        };
        for _ in 0..operator.config.instances.max(1) {
            let instance = operator.fresh_instance()?;
            let baseline = instance.memory_used();
            operator.slots.push(Slot {
                instance,
                generation: 0,
                baseline,
                completed: 0,
            });
        }
        Ok(operator)
    }

    /// Inputs from a checkpoint's snapshot of this operator: invoked again, in their order,
    /// before any new input (FLINK-SEMANTICS 28). More than `capacity` of them is fine: they are
    /// admitted as room frees up, like input (29).
    pub fn restore(&mut self, elements: Vec<Element>) {
        self.restored = elements;
    }

    /// Where the pipeline's commands (checkpoint, stop, abort) arrive, and the source position
    /// the run starts from (the first operator reports it with the checkpoints it cuts).
    pub fn follow_commands(&mut self, commands: CommandReceiver, start: SourcePosition) {
        self.commands = Some(commands);
        self.upstream_position = start;
    }

    fn barrier_on_its_way(&self) -> bool {
        self.barrier_wanted > self.last_barrier
    }

    fn is_first(&self) -> bool {
        self.index == 0
    }

    /// The input of every element in the queue, in queue order (FLINK-SEMANTICS 27), then the
    /// elements read ahead but not admitted yet.
    fn snapshot(&self, read_ahead: &VecDeque<Element>) -> OperatorSnapshot {
        let mut records: Vec<(&u64, &Entry)> = self.entries.iter().collect();
        records.sort_unstable_by_key(|(seq, _)| **seq);
        let mut watermarks = self.queued_watermarks.iter().peekable();
        let mut elements = Vec::with_capacity(records.len() + self.queued_watermarks.len());
        for (seq, entry) in records {
            while let Some((_, ts)) = watermarks.next_if(|(w, _)| w < seq) {
                elements.push(Element::Watermark(*ts));
            }
            elements.push(Element::Record(entry.input.clone()));
        }
        elements.extend(watermarks.map(|(_, ts)| Element::Watermark(*ts)));
        elements.extend(read_ahead.iter().cloned());
        OperatorSnapshot {
            name: self.config.name.clone(),
            plugin: self.config.plugin.display().to_string(),
            plugin_sha256: self.component.sha256.clone(),
            capacity: self.config.capacity as u64,
            ordered: self.config.ordered,
            watermark: self.last_watermark,
            elements,
        }
    }

    fn fresh_instance(&mut self) -> Result<PluginInstance, OperatorError> {
        let operator = self.config.name.clone();
        let mut instance = self
            .component
            .instantiate()
            .map_err(|cause| OperatorError::Plugin {
                operator: operator.clone(),
                cause,
            })?;
        match instance.open(&self.config.config_json) {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(OperatorError::Plugin {
                operator,
                cause: PluginError::Open {
                    plugin: self.component.name().to_string(),
                    message,
                },
            }),
            Err(trap) => Err(OperatorError::OpenTrapped { operator, trap }),
        }
    }

    /// Runs until the input ends and everything has been emitted, or a record fails the job.
    ///
    /// Runs on a thread of its own, Flink's task thread: guest calls are synchronous (WASI's
    /// blocking calls, such as a plugin writing to stderr, must not run on an async worker) and
    /// the loop waits on its mailbox (input, HTTP answers, commands, the next deadline) between
    /// them.
    pub fn run(mut self, input: StageReceiver, output: StageSender) -> Result<(), OperatorError> {
        let mut pending_input: VecDeque<Element> = std::mem::take(&mut self.restored).into();
        let mut restored_left = pending_input.len();
        let mut input_done = false;
        let mut input_closed = false;
        let mut out: Batch = Vec::with_capacity(BATCH_SIZE);
        let answers_rx = self.answers_rx.clone();
        let commands_rx = self.commands.clone();
        let mut commands_open = commands_rx.is_some();
        let downstream_gone = |name: &str| OperatorError::DownstreamGone {
            operator: name.to_string(),
        };

        loop {
            // Make every step that needs no waiting: admit input while there is room
            // (FLINK-SEMANTICS 9, 10), re-invoke records whose instance was replaced, deliver
            // refused requests, emit what may leave.
            loop {
                while !self.stopping && self.queue.len() < self.config.capacity {
                    match pending_input.pop_front() {
                        Some(element) => self.admit(element)?,
                        None => break,
                    }
                    if restored_left > 0 {
                        restored_left -= 1;
                        if restored_left == 0 {
                            let _ = self.telemetry.restored_at.set(Instant::now());
                        }
                    }
                }
                while let Some(seq) = self.reinvoke.pop_front() {
                    self.reinvoke_one(seq)?;
                }
                while let Some(done) = self.local_answers.pop_front() {
                    self.deliver(done)?;
                }
                self.emit(&mut out);
                let can_admit = !self.stopping
                    && self.queue.len() < self.config.capacity
                    && !pending_input.is_empty();
                if !can_admit && self.local_answers.is_empty() && self.reinvoke.is_empty() {
                    break;
                }
            }
            if !out.is_empty() {
                let batch = std::mem::replace(&mut out, Vec::with_capacity(BATCH_SIZE));
                output
                    .send(Message::Batch(batch))
                    .map_err(|_| downstream_gone(&self.config.name))?;
            }
            let drained = input_done && pending_input.is_empty();
            if (drained || self.stopping) && self.queue.is_empty() {
                self.telemetry.left_unprocessed.add(
                    pending_input
                        .iter()
                        .filter(|e| matches!(e, Element::Record(_)))
                        .count() as u64,
                );
                self.report_end(&pending_input, drained)?;
                break;
            }

            // Wait for the next thing to happen.
            // Input is read ahead of the queue, up to a bound (so backpressure holds). A later
            // operator reads without bound while a barrier is on its way: it is at most a
            // channel's depth away, and must not wait for records to find room in the queue.
            let want_input = !input_closed
                && !self.stopping
                && (pending_input.len() < READ_AHEAD || self.barrier_on_its_way());
            let deadline = self.next_deadline();
            let mut select = crossbeam_channel::Select::new();
            let answers_index = select.recv(&answers_rx);
            let commands_index = match (&commands_rx, commands_open) {
                (Some(rx), true) => Some(select.recv(rx)),
                _ => None,
            };
            let input_index = want_input.then(|| select.recv(&input));
            let ready = match deadline {
                Some(at) => select.select_deadline(at).ok(),
                None => Some(select.select()),
            };
            match ready {
                None => self.fire_timeouts(Instant::now())?,
                Some(op) if op.index() == answers_index => {
                    if let Ok(done) = op.recv(&answers_rx) {
                        self.answered(done)?;
                    }
                    // Take every answer that is already there before emitting.
                    while let Ok(done) = answers_rx.try_recv() {
                        self.answered(done)?;
                    }
                }
                Some(op) if Some(op.index()) == commands_index => {
                    let received = commands_rx.as_ref().map(|rx| op.recv(rx));
                    match received {
                        Some(Ok(command)) => self.command(command, &pending_input, &output)?,
                        _ => commands_open = false,
                    }
                }
                Some(op) => {
                    debug_assert_eq!(Some(op.index()), input_index);
                    match op.recv(&input) {
                        Ok(Message::Batch(batch)) => self.take_batch(batch, &mut pending_input),
                        Ok(Message::Read(batch, position)) => {
                            self.take_batch(batch, &mut pending_input);
                            self.upstream_position = position;
                        }
                        Ok(Message::Barrier(id)) => {
                            // Everything before the barrier is in the queue, read ahead, or
                            // already sent on (emission runs before every wait): that is the state.
                            self.last_barrier = self.last_barrier.max(id);
                            self.barrier_wanted = self.barrier_wanted.max(id);
                            self.checkpoint(id, &pending_input, &output, false)?;
                        }
                        Ok(Message::End) => input_done = true,
                        Err(_) if input_done => input_closed = true,
                        Err(_) => {
                            return Err(OperatorError::UpstreamFailed {
                                operator: self.config.name.clone(),
                            })
                        }
                    }
                }
            }
            if deadline.is_some_and(|at| at <= Instant::now()) {
                self.fire_timeouts(Instant::now())?;
            }
        }

        output
            .send(Message::End)
            .map_err(|_| downstream_gone(&self.config.name))?;
        for slot in &mut self.slots {
            if let Err(trap) = slot.instance.close() {
                tracing::warn!(operator = %self.config.name, "plugin trapped in close: {trap}");
            }
        }
        // `run` is the thread's whole work: what it used so far is the operator's CPU.
        self.telemetry.set_thread_cpu(crate::metrics::thread_cpu());
        Ok(())
    }

    fn take_batch(&mut self, batch: Batch, pending_input: &mut VecDeque<Element>) {
        for element in batch {
            match element {
                // Dead letters need no room in the queue: passed on at once.
                Element::DeadLetter(letter) => self.passthrough.push(letter),
                other => pending_input.push_back(other),
            }
        }
    }

    fn command(
        &mut self,
        command: StageCommand,
        pending_input: &VecDeque<Element>,
        output: &StageSender,
    ) -> Result<(), OperatorError> {
        match command {
            // The first operator cuts the checkpoint where it stands: what it read ahead is in
            // the snapshot as it is, what is still in its input channel is read again.
            StageCommand::Checkpoint(id) if self.is_first() => {
                self.checkpoint(id, pending_input, output, true)
            }
            StageCommand::Checkpoint(id) => {
                self.barrier_wanted = self.barrier_wanted.max(id);
                Ok(())
            }
            StageCommand::Stop if self.is_first() && !self.stopping => {
                self.stopping = true;
                self.announce_stop(pending_input);
                Ok(())
            }
            StageCommand::Stop => Ok(()),
            StageCommand::Abort => Err(OperatorError::Aborted {
                operator: self.config.name.clone(),
            }),
        }
    }

    /// Reports this operator's part of checkpoint `id` (and, when it cut it, the source
    /// position) and passes the barrier on.
    fn checkpoint(
        &mut self,
        id: u64,
        pending_input: &VecDeque<Element>,
        output: &StageSender,
        cut_here: bool,
    ) -> Result<(), OperatorError> {
        if let Some(reports) = &self.reports {
            let gone = || OperatorError::CoordinatorGone {
                operator: self.config.name.clone(),
            };
            if cut_here {
                let position = self.upstream_position.clone();
                reports
                    .send(Report::Source { id, position })
                    .map_err(|_| gone())?;
            }
            let snapshot = self.snapshot(pending_input);
            reports
                .send(Report::Operator {
                    id,
                    index: self.index,
                    snapshot,
                })
                .map_err(|_| gone())?;
        }
        output
            .send(Message::Barrier(id))
            .map_err(|_| OperatorError::DownstreamGone {
                operator: self.config.name.clone(),
            })
    }

    /// The operator ends: its part of the final checkpoint is what it read and never admitted
    /// (after a stop), and the first operator says where the source stands.
    fn report_end(
        &mut self,
        pending_input: &VecDeque<Element>,
        drained: bool,
    ) -> Result<(), OperatorError> {
        let Some(reports) = &self.reports else {
            return Ok(());
        };
        let gone = || OperatorError::CoordinatorGone {
            operator: self.config.name.clone(),
        };
        if self.is_first() {
            reports
                .send(Report::SourceEnd {
                    position: self.upstream_position.clone(),
                    exhausted: drained && !self.stopping,
                })
                .map_err(|_| gone())?;
        }
        reports
            .send(Report::OperatorEnd {
                index: self.index,
                snapshot: self.snapshot(pending_input),
            })
            .map_err(|_| gone())
    }

    /// Says, when the stop is asked for, what will and will not be processed.
    fn announce_stop(&self, pending_input: &VecDeque<Element>) {
        let in_flight = self.entries.len();
        let read_ahead = pending_input
            .iter()
            .filter(|e| matches!(e, Element::Record(_)))
            .count();
        let line = self.last_admitted_line;
        if self.reports.is_some() {
            tracing::warn!(
                operator = %self.config.name,
                "stop requested: finishing the {in_flight} records in flight (input up to line {line}); nothing new is invoked; the {read_ahead} records read ahead and the rest of the input stay for the next run, which resumes from the final checkpoint"
            );
        } else {
            tracing::warn!(
                operator = %self.config.name,
                "stop requested: finishing the {in_flight} records in flight; input after line {line} ({read_ahead} records read ahead and everything not read yet) will NOT be processed: the output ends with the results of input line {line}; without [checkpoint] the next run starts from the beginning"
            );
        }
    }

    fn record_label(&self, line: u64) -> String {
        format!("{}:{}", self.source_label, line)
    }

    fn admit(&mut self, element: Element) -> Result<(), OperatorError> {
        if let Element::DeadLetter(letter) = element {
            self.passthrough.push(letter);
            return Ok(());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        match element {
            Element::DeadLetter(_) => Ok(()),
            Element::Watermark(ts) => {
                self.queue.push_watermark(seq, ts);
                self.queued_watermarks.push_back((seq, ts));
                Ok(())
            }
            Element::Record(input) => {
                self.telemetry.records_in.inc();
                self.last_admitted_line = input.line;
                let segment = self.queue.segment_of_next();
                self.queue.push_record(seq);
                let instance = self.next_slot;
                self.next_slot = (self.next_slot + 1) % self.slots.len();
                let entered = Instant::now();
                if let Some(timeout) = self.config.timeout {
                    self.deadlines.push(Reverse((entered + timeout, seq)));
                }
                self.entries.insert(
                    seq,
                    Entry {
                        input,
                        attempt: 0,
                        instance,
                        segment,
                        entered,
                        timed_out: false,
                        done: false,
                        dead_letter: None,
                        reinvocations: 0,
                        reinvoke_queued: false,
                        grace_until: None,
                    },
                );
                self.invoke(seq)
            }
        }
    }

    /// Calls the plugin's `async-invoke` for a pending record and applies what it did.
    fn invoke(&mut self, seq: u64) -> Result<(), OperatorError> {
        let Some(entry) = self.entries.get_mut(&seq) else {
            return Ok(());
        };
        let slot = entry.instance;
        let attempt = entry.attempt;
        let slots = &mut self.slots;
        let result = with_event(&mut entry.input, |event| {
            slots[slot].instance.invoke(seq, attempt, event)
        });
        self.after_call(slot, result, Some((seq, Cause::Failure)))
    }

    /// Applies a guest call's effects; on a trap replaces the instance.
    fn after_call(
        &mut self,
        slot: usize,
        result: Result<(), GuestTrap>,
        serving: Option<(u64, Cause)>,
    ) -> Result<(), OperatorError> {
        let effects = self.slots[slot].instance.take_effects();
        if !effects.is_empty() {
            self.apply(slot, effects)?;
        }
        match result {
            Ok(()) if self.memory_nearly_full(slot) => self.recycle(slot),
            Ok(()) => Ok(()),
            Err(trap) => self.handle_trap(slot, trap, serving),
        }
    }

    /// Whether the instance has used three quarters of the memory it had left after opening,
    /// and has completed records since it was made (its growth may be a leak, which a fresh
    /// instance sheds; growth with nothing completed is what the records in flight hold).
    fn memory_nearly_full(&self, slot: usize) -> bool {
        let s = &self.slots[slot];
        if s.completed == 0 {
            return false;
        }
        let limit = s.instance.memory_limit() as usize;
        let headroom = limit.saturating_sub(s.baseline);
        s.instance.memory_used() > s.baseline + headroom / 4 * 3
    }

    /// Replaces an instance that keeps growing (e.g. a guest runtime that leaks) before it traps
    /// at its memory limit: no record fails, the ones in flight in it are invoked again.
    fn recycle(&mut self, slot: usize) -> Result<(), OperatorError> {
        self.telemetry.recycled.inc();
        tracing::info!(
            operator = %self.config.name,
            used = self.slots[slot].instance.memory_used(),
            "plugin instance near its memory_limit: replaced by a fresh one"
        );
        self.swap_instance(slot)?;
        self.queue_orphans(slot, false);
        Ok(())
    }

    fn swap_instance(&mut self, slot: usize) -> Result<(), OperatorError> {
        let fresh = self.fresh_instance()?;
        let s = &mut self.slots[slot];
        s.baseline = fresh.memory_used();
        s.instance = fresh;
        s.generation += 1;
        s.completed = 0;
        Ok(())
    }

    /// Queues every pending record that lived in the slot's old instance, to be invoked again
    /// on its new one (by the run loop, not from here: a fresh instance may trap or fill up
    /// again, and that must not recurse).
    fn queue_orphans(&mut self, slot: usize, after_trap: bool) {
        let mut orphans: Vec<u64> = Vec::new();
        for (seq, entry) in self.entries.iter_mut() {
            if entry.done || entry.instance != slot {
                continue;
            }
            // One still waiting for its re-invocation never ran in the instance that trapped.
            if entry.reinvoke_queued {
                continue;
            }
            if after_trap {
                entry.reinvocations += 1;
            }
            entry.reinvoke_queued = true;
            orphans.push(*seq);
        }
        orphans.sort_unstable();
        self.reinvoke.extend(orphans);
    }

    /// Invokes a record again on a fresh instance, unless it has been re-invoked too often: then
    /// it fails as the operator's policy says.
    fn reinvoke_one(&mut self, seq: u64) -> Result<(), OperatorError> {
        let Some(entry) = self.entries.get_mut(&seq) else {
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
            let cause = if entry.timed_out {
                Cause::Timeout
            } else {
                Cause::Failure
            };
            return self.fail(seq, cause, "fatal", message);
        }
        entry.attempt += 1;
        entry.timed_out = false;
        entry.grace_until = None;
        self.invoke(seq)
    }

    fn apply(&mut self, slot: usize, effects: Effects) -> Result<(), OperatorError> {
        for (_owner, usage) in effects.usage {
            self.telemetry
                .input_tokens
                .add(u64::from(usage.input_tokens));
            self.telemetry
                .output_tokens
                .add(u64::from(usage.output_tokens));
        }
        for call in effects.calls {
            self.start_call(slot, call);
        }
        for completion in effects.completions {
            let Some(entry) = self.entries.get_mut(&completion.seq) else {
                continue; // already emitted
            };
            // First completion wins (FLINK-SEMANTICS 7); a completion from an earlier attempt is stale.
            if entry.done || entry.attempt != completion.attempt {
                continue;
            }
            match completion.result {
                Ok(events) => self.complete(completion.seq, events),
                Err(failure) => {
                    let cause = if entry.timed_out {
                        Cause::Timeout
                    } else {
                        Cause::Failure
                    };
                    let kind = match failure.kind {
                        FailureKind::Retriable => "retriable",
                        FailureKind::Fatal => "fatal",
                    };
                    self.fail(completion.seq, cause, kind, failure.message)?;
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self, seq: u64, events: Vec<Event>) {
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        entry.done = true;
        if let Some(slot) = self.slots.get_mut(entry.instance) {
            slot.completed += 1;
        }
        let timestamp = entry.input.timestamp;
        let line = entry.input.line;
        let outputs: Vec<Record> = events
            .into_iter()
            .map(|event| Record {
                key: event.key,
                // Every output carries its input's event time (FLINK-SEMANTICS 5).
                timestamp,
                payload: event.payload,
                line,
            })
            .collect();
        if outputs.is_empty() {
            self.telemetry.filtered.inc();
        }
        self.telemetry.records_out.add(outputs.len() as u64);
        let segment = entry.segment;
        self.queue.complete(seq, segment, outputs);
    }

    /// A record failed: fail the job or dead-letter it, as the operator's policy says.
    fn fail(
        &mut self,
        seq: u64,
        cause: Cause,
        kind: &str,
        message: String,
    ) -> Result<(), OperatorError> {
        let Some(entry) = self.entries.get(&seq) else {
            return Ok(());
        };
        let (policy, reason) = match cause {
            Cause::Failure => (self.config.on_failure, "failure"),
            Cause::Timeout => (self.config.on_timeout, "timeout"),
        };
        if cause == Cause::Timeout {
            self.telemetry.timed_out.inc();
        }
        let record = self.record_label(entry.input.line);
        let timeout_text = self
            .config
            .timeout
            .map(|t| humantime::format_duration(t).to_string())
            .unwrap_or_default();
        match policy {
            Policy::Fail => Err(match cause {
                Cause::Failure => OperatorError::RecordFailed {
                    operator: self.config.name.clone(),
                    record,
                    message: format!("{message} ({kind})"),
                },
                Cause::Timeout => OperatorError::TimedOut {
                    operator: self.config.name.clone(),
                    record,
                    timeout: timeout_text,
                    detail: format!(": {message}"),
                },
            }),
            Policy::DeadLetter => {
                let letter = DeadLetter {
                    stage: &self.config.name,
                    reason,
                    error: &message,
                    retriable: Some(kind == "retriable"),
                    record: &entry.input,
                }
                .encode();
                self.telemetry.dead_lettered.inc();
                // The record leaves the operator at its position, as its dead letter.
                if let Some(entry) = self.entries.get_mut(&seq) {
                    entry.done = true;
                    entry.dead_letter = Some(letter);
                    let segment = entry.segment;
                    self.queue.complete(seq, segment, Vec::new());
                }
                Ok(())
            }
        }
    }

    /// A guest call trapped: the instance is gone. The record it was serving fails; every other
    /// record that lived in that instance is invoked again on a fresh one.
    fn handle_trap(
        &mut self,
        slot: usize,
        trap: GuestTrap,
        serving: Option<(u64, Cause)>,
    ) -> Result<(), OperatorError> {
        self.telemetry.traps.inc();
        tracing::warn!(operator = %self.config.name, "plugin instance discarded: {trap}");
        self.swap_instance(slot)?;
        if let Some((seq, cause)) = serving {
            if self.entries.get(&seq).is_some_and(|e| !e.done) {
                self.fail(seq, cause, "fatal", trap.0.clone())?;
            }
        }
        self.queue_orphans(slot, true);
        Ok(())
    }

    /// Sends a request the plugin asked for, or queues it while `max_requests_in_flight` are
    /// on the network (backpressure in the host, not in the provider).
    fn start_call(&mut self, slot: usize, call: OutgoingCall) {
        self.telemetry.http_calls.inc();
        let generation = self.slots[slot].generation;
        if self.calls_in_flight >= self.config.max_requests_in_flight {
            self.waiting_calls.push_back((slot, generation, call));
            return;
        }
        self.send_call(slot, generation, call);
    }

    fn send_call(&mut self, slot: usize, generation: u64, call: OutgoingCall) {
        let OutgoingCall { id, owner, request } = call;
        match self.outbound.prepare(request.into()) {
            Err(refused) => self.local_answers.push_back(CallDone {
                instance: slot,
                generation,
                call_id: id,
                owner,
                result: Err(refused.into()),
            }),
            Ok(prepared) => {
                self.calls_in_flight += 1;
                let sending = self.outbound.send(prepared);
                let answers = self.answers_tx.clone();
                self.runtime.spawn(async move {
                    let result = sending.await.map(Into::into).map_err(Into::into);
                    // The operator may be gone (job failed); then the answer is not needed.
                    let _ = answers.send(CallDone {
                        instance: slot,
                        generation,
                        call_id: id,
                        owner,
                        result,
                    });
                });
            }
        }
    }

    /// An answer came back from the network: room for a waiting request, then the answer.
    fn answered(&mut self, done: CallDone) -> Result<(), OperatorError> {
        self.calls_in_flight = self.calls_in_flight.saturating_sub(1);
        while self.calls_in_flight < self.config.max_requests_in_flight {
            let Some((slot, generation, call)) = self.waiting_calls.pop_front() else {
                break;
            };
            // An instance that was replaced will never read the answer.
            if self
                .slots
                .get(slot)
                .is_some_and(|s| s.generation == generation)
            {
                self.send_call(slot, generation, call);
            }
        }
        self.deliver(done)
    }

    /// Hands an HTTP answer to the instance that asked, unless that instance has been replaced.
    fn deliver(&mut self, done: CallDone) -> Result<(), OperatorError> {
        let Some(slot) = self.slots.get_mut(done.instance) else {
            return Ok(());
        };
        if slot.generation != done.generation {
            return Ok(());
        }
        let serving = done
            .owner
            .filter(|seq| self.entries.get(seq).is_some_and(|e| !e.done))
            .map(|seq| {
                let timed_out = self.entries.get(&seq).is_some_and(|e| e.timed_out);
                (
                    seq,
                    if timed_out {
                        Cause::Timeout
                    } else {
                        Cause::Failure
                    },
                )
            });
        let result = slot
            .instance
            .on_response(done.owner, done.call_id, &done.result);
        self.after_call(done.instance, result, serving)
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, seq))) = self.deadlines.peek() {
            if self.entries.get(&seq).is_some_and(|e| !e.done) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Calls the plugin's `timeout` for every pending record whose time is up (FLINK-SEMANTICS
    /// 12-15). A handler that sent a request (a fallback call) may complete the record from its
    /// answer within `timeout_grace`; otherwise a record the handler left open has timed out.
    fn fire_timeouts(&mut self, now: Instant) -> Result<(), OperatorError> {
        while let Some(&Reverse((at, seq))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(entry) = self.entries.get_mut(&seq) else {
                continue;
            };
            if entry.done {
                continue;
            }
            if let Some(until) = entry.grace_until {
                if until <= now {
                    let grace = humantime::format_duration(self.config.timeout_grace);
                    self.fail(
                        seq,
                        Cause::Timeout,
                        "retriable",
                        format!("the plugin's timeout handler did not complete the record within timeout_grace ({grace})"),
                    )?;
                }
                continue;
            }
            entry.timed_out = true;
            let slot = entry.instance;
            let attempt = entry.attempt;
            let calls_before = self.telemetry.http_calls.get();
            let slots = &mut self.slots;
            let result = with_event(&mut entry.input, |event| {
                slots[slot].instance.timeout(seq, attempt, event)
            });
            self.after_call(slot, result, Some((seq, Cause::Timeout)))?;
            let Some(entry) = self.entries.get_mut(&seq).filter(|e| !e.done) else {
                continue;
            };
            let sent_request = self.telemetry.http_calls.get() > calls_before;
            if sent_request && !self.config.timeout_grace.is_zero() && entry.attempt == attempt {
                let until = now + self.config.timeout_grace;
                entry.grace_until = Some(until);
                self.deadlines.push(Reverse((until, seq)));
            } else {
                // The plugin's `timeout` left the record open: it has timed out.
                self.fail(
                    seq,
                    Cause::Timeout,
                    "retriable",
                    "the plugin's timeout handler did not complete the record".into(),
                )?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, out: &mut Batch) {
        out.extend(self.passthrough.drain(..).map(Element::DeadLetter));
        self.queue.drain_ready(&mut self.emitted);
        for emitted in self.emitted.drain(..) {
            match emitted {
                Emitted::Record { seq, outputs } => {
                    if let Some(entry) = self.entries.remove(&seq) {
                        let micros = entry.entered.elapsed().as_micros() as u64;
                        self.telemetry.latency_us.record(micros.max(1));
                        if let Some(letter) = entry.dead_letter {
                            out.push(Element::DeadLetter(letter));
                        }
                    }
                    out.extend(outputs.into_iter().map(Element::Record));
                }
                Emitted::Watermark(ts) => {
                    self.queued_watermarks.pop_front();
                    self.last_watermark = Some(ts);
                    out.push(Element::Watermark(ts));
                }
            }
        }
    }
}

/// Lends a record to a guest call as a WIT `event` without copying its payload.
fn with_event<R>(record: &mut Record, f: impl FnOnce(&Event) -> R) -> R {
    let event = Event {
        key: record.key.take(),
        timestamp: record.timestamp,
        payload: std::mem::take(&mut record.payload),
    };
    let result = f(&event);
    record.key = event.key;
    record.payload = event.payload;
    result
}
