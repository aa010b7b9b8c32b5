//! The operator's thread: a mailbox loop that waits on input, HTTP answers, commands and the
//! next timer, hands each to the core, sends the requests the plugin made, and passes on what
//! the core emits, checkpoint barriers and reports.

use std::collections::VecDeque;
use std::time::Instant;

use super::semantics::{CallDone, CallToSend};
use super::{AsyncWaitOperator, OperatorError};
use crate::checkpoint::coordinator::Report;
use crate::cost::Admission;
use crate::outbound::rate_limit::used_its_tokens;
use crate::plugin::function::OutgoingCall;
use crate::record::{
    new_batch, Batch, CommandReceiver, Element, Message, StageCommand, StageReceiver, StageSender,
    BATCH_SIZE, CHANNEL_DEPTH,
};

/// Elements an operator reads ahead of its queue at most: enough to empty its input channel,
/// so a checkpoint barrier never waits behind a full channel.
const READ_AHEAD: usize = BATCH_SIZE * (CHANNEL_DEPTH + 1);

/// What the loop waits on.
#[derive(Clone, Copy)]
struct Mailbox<'a> {
    input: &'a StageReceiver,
    answers: &'a crossbeam_channel::Receiver<CallDone>,
    commands: Option<&'a CommandReceiver>,
}

/// The loop's own state during a run.
struct RunState {
    /// Input read but not admitted yet (restored inputs first).
    pending_input: VecDeque<Element>,
    /// Restored inputs not admitted yet: when they all are, the restore is over.
    restored_left: usize,
    /// `End` came from upstream; then the channel closing is no failure.
    input_done: bool,
    input_closed: bool,
    commands_open: bool,
    out: Batch,
    /// An emptied input batch, to hold the next output batch.
    spare_out: Option<Batch>,
}

impl AsyncWaitOperator {
    /// Runs until the input ends and everything has been emitted, or a record fails the job.
    ///
    /// Runs on a thread of its own, Flink's task thread: guest calls are synchronous (WASI's
    /// blocking calls, such as a plugin writing to stderr, must not run on an async worker) and
    /// the loop waits on its mailbox (input, HTTP answers, commands, the next deadline) between
    /// them.
    pub fn run(mut self, input: StageReceiver, output: StageSender) -> Result<(), OperatorError> {
        let pending_input: VecDeque<Element> = std::mem::take(&mut self.restored).into();
        let mut state = RunState {
            restored_left: pending_input.len(),
            pending_input,
            input_done: false,
            input_closed: false,
            commands_open: self.commands.is_some(),
            out: new_batch(),
            spare_out: None,
        };
        let commands = self.commands.clone();
        let answers = self.answers_rx.clone();
        loop {
            self.step(&mut state)?;
            self.telemetry
                .in_flight
                .set(self.core.records_inside() as i64);
            if !state.out.is_empty() {
                let next = state.spare_out.take().unwrap_or_else(new_batch);
                let batch = std::mem::replace(&mut state.out, next);
                self.send_downstream(&output, Message::Batch(batch))?;
            }
            let drained = state.input_done && state.pending_input.is_empty();
            if (drained || self.stopping) && self.core.is_empty() {
                let left = state.pending_input.iter().filter(|e| is_record(e)).count();
                self.telemetry.left_unprocessed.add(left as u64);
                self.report_end(&state.pending_input, drained)?;
                break;
            }
            let mailbox = Mailbox {
                input: &input,
                answers: &answers,
                commands: commands.as_ref(),
            };
            self.wait(&mut state, mailbox, &output)?;
        }

        output
            .send(Message::End)
            .map_err(|_| self.downstream_gone())?;
        self.core.close();
        // `run` is the thread's whole work: what it used so far is the operator's CPU.
        self.telemetry.update_thread_cpu();
        Ok(())
    }

    /// Makes every step that needs no waiting: admit input while there is room
    /// (FLINK-SEMANTICS 9, 10), re-invoke records whose instance was replaced, deliver refused
    /// requests, emit what may leave.
    fn step(&mut self, state: &mut RunState) -> Result<(), OperatorError> {
        loop {
            // What is admitted together is invoked together (`batch.*`).
            self.core.collect_invocations();
            let now = Instant::now();
            while !self.stopping && !self.core.is_full() && self.budget_admits(state) {
                let Some(element) = state.pending_input.pop_front() else {
                    break;
                };
                self.core.admit(element, now)?;
                if state.restored_left > 0 {
                    state.restored_left -= 1;
                    if state.restored_left == 0 {
                        let _ = self.telemetry.restored_at.set(Instant::now());
                    }
                }
            }
            self.core.invoke_collected(Instant::now())?;
            if state.input_done && state.pending_input.is_empty() {
                // Every input is in: pending retries fire now (FLINK-SEMANTICS 26).
                self.core.input_ended(Instant::now())?;
            }
            self.send_calls();
            self.core.settle(Instant::now())?;
            self.send_calls();
            self.core.emit(&mut state.out, Instant::now());
            let can_admit = !self.stopping
                && !self.core.is_full()
                && self.paused_until.is_none()
                && !state.pending_input.is_empty();
            if !can_admit && !self.core.has_work() {
                return Ok(());
            }
        }
    }

    /// Waits for the next thing to happen and hands it to the core.
    fn wait(
        &mut self,
        state: &mut RunState,
        mailbox: Mailbox<'_>,
        output: &StageSender,
    ) -> Result<(), OperatorError> {
        let Mailbox {
            input,
            answers,
            commands,
        } = mailbox;
        // Input is read ahead of the queue, up to a bound (so backpressure holds). A later
        // operator reads without bound while a barrier is on its way: it is at most a
        // channel's depth away, and must not wait for records to find room in the queue.
        let want_input = !state.input_closed
            && !self.stopping
            && (state.pending_input.len() < READ_AHEAD || self.barrier_on_its_way());
        // A budget pause ends on time too: admissions are checked again then.
        let deadline = match (self.core.next_timer(), self.paused_until) {
            (Some(timer), Some(pause)) => Some(timer.min(pause)),
            (timer, pause) => timer.or(pause),
        };
        let mut select = crossbeam_channel::Select::new();
        let answers_index = select.recv(answers);
        let commands_index = match commands {
            Some(rx) if state.commands_open => Some(select.recv(rx)),
            _ => None,
        };
        let input_index = want_input.then(|| select.recv(input));
        // Waiting while full is the backpressure this operator applies upstream.
        let full_since = (!state.input_closed && self.core.is_full()).then(Instant::now);
        let ready = match deadline {
            Some(at) => select.select_deadline(at).ok(),
            None => Some(select.select()),
        };
        if let Some(since) = full_since {
            self.telemetry
                .full_us
                .add(since.elapsed().as_micros() as u64);
        }
        match ready {
            None => self.core.fire_timers(Instant::now())?,
            Some(op) if op.index() == answers_index => {
                if let Ok(done) = op.recv(answers) {
                    self.core.answered(done, Instant::now())?;
                }
                // Take every answer that is already there before emitting.
                while let Ok(done) = answers.try_recv() {
                    self.core.answered(done, Instant::now())?;
                }
            }
            Some(op) if Some(op.index()) == commands_index => {
                match commands.map(|rx| op.recv(rx)) {
                    Some(Ok(command)) => self.command(command, &state.pending_input, output)?,
                    _ => state.commands_open = false,
                }
            }
            Some(op) => {
                debug_assert_eq!(Some(op.index()), input_index);
                let message = op.recv(input);
                self.take_input(message, state, output)?;
            }
        }
        if deadline.is_some_and(|at| at <= Instant::now()) {
            self.core.fire_timers(Instant::now())?;
        }
        self.send_calls();
        Ok(())
    }

    /// Whether the budget lets new records in now. Only the first operator asks: later ones
    /// finish what it let into the chain, as after a graceful stop. A stop by the budget is
    /// a graceful stop, taken here at once rather than when the pipeline's command comes.
    fn budget_admits(&mut self, state: &RunState) -> bool {
        if !self.is_first() || !self.cost.guarded() {
            return true;
        }
        match self.cost.admission(Instant::now()) {
            Admission::Open => {
                self.paused_until = None;
                true
            }
            Admission::PausedUntil(until) => {
                self.paused_until = Some(until);
                false
            }
            Admission::Stopped => {
                self.paused_until = None;
                self.stopping = true;
                self.announce_stop(&state.pending_input);
                false
            }
        }
    }

    fn take_input(
        &mut self,
        message: Result<Message, crossbeam_channel::RecvError>,
        state: &mut RunState,
        output: &StageSender,
    ) -> Result<(), OperatorError> {
        match message {
            Ok(Message::Batch(batch)) => self.take_batch(batch, state),
            Ok(Message::Read(batch, position)) => {
                self.take_batch(batch, state);
                self.upstream_position = position;
            }
            Ok(Message::Barrier(id)) => {
                // Everything before the barrier is in the queue, read ahead, or already
                // sent on (emission runs before every wait): that is the state.
                self.last_barrier = self.last_barrier.max(id);
                self.barrier_wanted = self.barrier_wanted.max(id);
                self.checkpoint(id, &state.pending_input, output, false)?;
            }
            Ok(Message::End) => state.input_done = true,
            Err(_) if state.input_done => state.input_closed = true,
            Err(_) => {
                return Err(OperatorError::UpstreamFailed {
                    operator: self.core.name().to_string(),
                })
            }
        }
        Ok(())
    }

    /// Sends every request the core has ready, and settles the tokens of the usage reported
    /// since the last time.
    fn send_calls(&mut self) {
        while let Some(call) = self.core.next_call() {
            self.send_call(call);
        }
        while let Some(s) = self.core.next_settlement() {
            self.outbound.settle_tokens(s.charged, s.input, s.output);
        }
    }

    /// Sends one request on the tokio runtime; its answer (or the host's refusal) goes back to
    /// the core. The one place that talks to the network.
    fn send_call(&mut self, call: CallToSend) {
        let CallToSend {
            slot,
            generation,
            call: OutgoingCall { id, owner, request },
            deadline,
        } = call;
        let request = crate::outbound::Request {
            deadline,
            ..request.into()
        };
        match self.outbound.prepare(request) {
            Err(refused) => self.core.refused(CallDone {
                slot,
                generation,
                call_id: id,
                owner,
                answer: Err(refused.into()),
                tokens_charged: 0,
                from_cache: false,
            }),
            Ok(prepared) => {
                let estimate = prepared.token_estimate();
                let sending = self.outbound.send(prepared);
                let answers = self.answers_tx.clone();
                self.runtime.spawn(async move {
                    let answer = sending.await;
                    let from_cache = answer.as_ref().is_ok_and(|a| a.from_cache);
                    // An answer that used no tokens had its charge given back by the limit
                    // (one from the request cache never reached it).
                    let tokens_charged = if used_its_tokens(&answer) && !from_cache {
                        estimate
                    } else {
                        0
                    };
                    let answer = answer.map(Into::into).map_err(Into::into);
                    // The operator may be gone (job failed); then the answer is not needed.
                    let _ = answers.send(CallDone {
                        slot,
                        generation,
                        call_id: id,
                        owner,
                        answer,
                        tokens_charged,
                        from_cache,
                    });
                });
            }
        }
    }

    /// Sends `message` on, counting the time the next stage made it wait (the backpressure
    /// this operator receives).
    fn send_downstream(&self, output: &StageSender, message: Message) -> Result<(), OperatorError> {
        let message = match output.try_send(message) {
            Ok(()) => return Ok(()),
            Err(crossbeam_channel::TrySendError::Full(message)) => message,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                return Err(self.downstream_gone())
            }
        };
        let since = Instant::now();
        let sent = output.send(message).map_err(|_| self.downstream_gone());
        self.telemetry
            .output_blocked_us
            .add(since.elapsed().as_micros() as u64);
        sent
    }

    fn barrier_on_its_way(&self) -> bool {
        self.barrier_wanted > self.last_barrier
    }

    fn is_first(&self) -> bool {
        self.index == 0
    }

    fn downstream_gone(&self) -> OperatorError {
        OperatorError::DownstreamGone {
            operator: self.core.name().to_string(),
        }
    }

    fn coordinator_gone(&self) -> OperatorError {
        OperatorError::CoordinatorGone {
            operator: self.core.name().to_string(),
        }
    }

    /// Adds a batch of input to what is read ahead. Its emptied vector holds the next output
    /// batch: the batches that go round then need no fresh memory (a fresh batch of
    /// `BATCH_SIZE` elements is new pages, each one a page fault).
    fn take_batch(&mut self, batch: Batch, state: &mut RunState) {
        let mut batch = VecDeque::from(batch);
        if !batch.iter().any(|e| matches!(e, Element::DeadLetter(_))) {
            // The usual batch: moved in one copy rather than element by element.
            state.pending_input.append(&mut batch);
        }
        for element in batch.drain(..) {
            match element {
                // Dead letters need no room in the queue: passed on at once.
                Element::DeadLetter(letter) => self.core.pass_through(letter),
                other => state.pending_input.push_back(other),
            }
        }
        if state.spare_out.is_none() {
            state.spare_out = Some(Vec::from(batch));
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
            StageCommand::Reload => {
                self.take_reloads();
                Ok(())
            }
            StageCommand::Abort => Err(OperatorError::Aborted {
                operator: self.core.name().to_string(),
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
            if cut_here {
                let position = self.upstream_position.clone();
                reports
                    .send(Report::Source { id, position })
                    .map_err(|_| self.coordinator_gone())?;
            }
            let snapshot = self.core.snapshot(pending_input.iter());
            reports
                .send(Report::Operator {
                    id,
                    index: self.index,
                    snapshot,
                })
                .map_err(|_| self.coordinator_gone())?;
        }
        self.core.passed_barrier(id);
        output
            .send(Message::Barrier(id))
            .map_err(|_| self.downstream_gone())
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
        if self.is_first() {
            reports
                .send(Report::SourceEnd {
                    position: self.upstream_position.clone(),
                    exhausted: drained && !self.stopping,
                })
                .map_err(|_| self.coordinator_gone())?;
        }
        reports
            .send(Report::OperatorEnd {
                index: self.index,
                snapshot: self.core.snapshot(pending_input.iter()),
            })
            .map_err(|_| self.coordinator_gone())
    }

    /// Says, when the stop is asked for, what will and will not be processed.
    fn announce_stop(&self, pending_input: &VecDeque<Element>) {
        let in_flight = self.core.records_inside();
        let read_ahead = pending_input.iter().filter(|e| is_record(e)).count();
        let line = self.core.last_admitted_line();
        let operator = self.core.name();
        let serving = self.core.serving()
            || pending_input
                .iter()
                .any(|e| matches!(e, Element::Record(r) if r.ticket.is_some()));
        if serving {
            tracing::info!(operator = %operator, "stop requested: finishing and answering the {in_flight} records in flight; the {read_ahead} not started yet are answered as lost (their callers send them again); new batches are refused");
        } else if self.reports.is_some() {
            tracing::warn!(
                operator = %operator,
                "stop requested: finishing the {in_flight} records in flight (input up to line {line}); nothing new is invoked; the {read_ahead} records read ahead and the rest of the input stay for the next run, which resumes from the final checkpoint"
            );
        } else {
            tracing::warn!(
                operator = %operator,
                "stop requested: finishing the {in_flight} records in flight; input after line {line} ({read_ahead} records read ahead and everything not read yet) will NOT be processed: the output ends with the results of input line {line}; without [checkpoint] the next run starts from the beginning"
            );
        }
    }
}

fn is_record(element: &Element) -> bool {
    matches!(element, Element::Record(_))
}
