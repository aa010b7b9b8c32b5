//! Flink's async-wait semantics, without I/O: what happens when an element is admitted, an
//! answer comes back, a timer fires at `now`, and what may be emitted.
//!
//! The core calls the plugin through [`AsyncFunction`] and never waits: requests the plugin
//! sends are put in an outbox ([`OperatorCore::next_call`]) for the run loop to send, and their
//! answers come back through [`OperatorCore::answered`]. Time is always passed in, so the unit
//! tests drive it with a fake clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::in_flight::{Entry, InFlight};
use super::queue::{ElementQueue, Emitted};
use super::timers::{TimerKind, Timers};
use super::OperatorError;
use crate::checkpoint::OperatorSnapshot;
use crate::connectors::dead_letter::DeadLetter;
use crate::cost::CostControl;
use crate::manifest::{OperatorConfig, Policy};
use crate::plugin::function::{
    Answer, AsyncFunction, Effects, FailureKind, OutgoingCall, Output, OutputList, TokenUsage,
};
use crate::record::{Batch, Element, Outputs, Record};
use crate::telemetry::OperatorTelemetry;

mod batching;
mod caching;
mod reload;
mod time;
mod traps;

pub use self::caching::Ending;
pub use self::reload::Swapped;
use super::result_cache::ResultCache;

/// A request to send for the instance in `slot` (as it was at `generation`).
#[derive(Debug)]
pub struct CallToSend {
    pub slot: usize,
    pub generation: u64,
    pub call: OutgoingCall,
    /// When the owner record times out: no request retry starts after it.
    pub deadline: Option<Instant>,
}

/// The answer to one request, on its way back to the instance that sent it.
#[derive(Debug)]
pub struct CallDone {
    pub slot: usize,
    pub generation: u64,
    pub call_id: u64,
    pub owner: Option<u64>,
    pub answer: Answer,
    /// Tokens a rate limit charged for the request and its answer used (0 without a limit
    /// on tokens): settled when the plugin reports the record's usage.
    pub tokens_charged: u64,
    /// The request cache answered it (a kept answer, or another request's in flight): the
    /// usage the plugin reports from it was not paid again.
    pub from_cache: bool,
}

/// Tokens charged for a record's requests and the usage its plugin reported, to settle with
/// the rate limit (the run loop hands it to the outbound stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSettlement {
    pub charged: u64,
    pub input: u64,
    pub output: u64,
}

/// What the core knows of an instance slot.
#[derive(Default)]
struct SlotState {
    /// Grows each time the instance is replaced: answers for an older one are dropped.
    generation: u64,
    /// Records completed by this instance. An instance that has completed none holds only what
    /// its records in flight need: replacing it would rebuild the same state, forever.
    completed: u64,
    /// Records given to this slot that have not left the operator yet.
    holding: usize,
    /// Of a version a reload replaced: no new record comes here; closed once it holds none.
    retired: bool,
    closed: bool,
}

/// Why a record failed: its policy (`on_failure`, `on_timeout`) depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Failure,
    Timeout,
}

impl Cause {
    fn of(entry: &Entry) -> Self {
        if entry.timed_out {
            Cause::Timeout
        } else {
            Cause::Failure
        }
    }
}

pub struct OperatorCore<F> {
    config: OperatorConfig,
    source_label: Arc<str>,
    pub(super) function: F,
    slots: Vec<SlotState>,
    /// The current version's slots: new records are spread over them, round robin.
    live: std::ops::Range<usize>,
    next_slot: usize,
    queue: ElementQueue,
    records: InFlight,
    next_seq: u64,
    timers: Timers,
    /// Records to invoke again on a fresh instance, in order. A queue, not recursion: a fresh
    /// instance can trap or fill up again while they are re-invoked.
    reinvoke: VecDeque<u64>,
    /// Requests on the network now (or in the outbox), those waiting for room
    /// (`max_requests_in_flight`), and those the run loop is to send.
    calls_in_flight: usize,
    calls_started: u64,
    waiting_calls: VecDeque<CallToSend>,
    outbox: VecDeque<CallToSend>,
    /// Answers made by the host itself (refused requests), delivered on the next turn.
    local_answers: VecDeque<CallDone>,
    /// Token usage to settle with the rate limit, for the run loop to take.
    settlements: VecDeque<TokenSettlement>,
    emitted: Vec<Emitted>,
    /// Watermarks in the queue with their sequence numbers; they leave in this order.
    queued_watermarks: VecDeque<(u64, i64)>,
    last_watermark: Option<i64>,
    /// Dead letters from upstream, passed on with the next output.
    passthrough: Vec<Vec<u8>>,
    /// The last checkpoint barrier that passed this operator (0: none).
    barrier: u64,
    /// Line of the last record admitted, for the stop message.
    last_admitted_line: u64,
    /// A record of `waio serve`'s callers was admitted.
    serving: bool,
    /// The time of the event being handled (every public entry point takes it): retries set
    /// while handling it are due from then.
    now: Instant,
    /// Every input has been admitted: pending retries have fired and results are final
    /// (FLINK-SEMANTICS 26).
    input_ended: bool,
    telemetry: Arc<OperatorTelemetry>,
    /// Prices the usage the plugin reports and charges the run's budget.
    cost: Arc<CostControl>,
    /// `cache.*`: inputs seen before complete without a call.
    result_cache: Option<ResultCache>,
    /// Records whose input another record was computing, which ended without a result worth
    /// keeping: each makes the call itself now (in `settle`).
    cache_leaders: VecDeque<u64>,
    /// The answer being delivered came from the request cache (see [`CallDone::from_cache`]).
    answer_from_cache: bool,
    /// Records admitted together, on their way to one batch call (`invoke-columns`).
    batching: batching::Batching,
    /// Counts not yet added to the telemetry: added once per emit rather than one atomic
    /// operation per record.
    unflushed: Unflushed,
}

#[derive(Default)]
struct Unflushed {
    records_in: u64,
    records_out: u64,
}

impl<F: AsyncFunction> OperatorCore<F> {
    pub fn new(
        config: OperatorConfig,
        function: F,
        source_label: Arc<str>,
        telemetry: Arc<OperatorTelemetry>,
    ) -> Self {
        let live = 0..function.slots().max(1);
        let slots = live.clone().map(|_| SlotState::default()).collect();
        OperatorCore {
            queue: ElementQueue::new(config.ordered),
            config,
            source_label,
            function,
            slots,
            live,
            next_slot: 0,
            records: InFlight::default(),
            next_seq: 0,
            timers: Timers::default(),
            reinvoke: VecDeque::new(),
            calls_in_flight: 0,
            calls_started: 0,
            waiting_calls: VecDeque::new(),
            outbox: VecDeque::new(),
            local_answers: VecDeque::new(),
            settlements: VecDeque::new(),
            emitted: Vec::new(),
            queued_watermarks: VecDeque::new(),
            last_watermark: None,
            passthrough: Vec::new(),
            barrier: 0,
            last_admitted_line: 0,
            serving: false,
            now: Instant::now(),
            input_ended: false,
            telemetry,
            cost: Arc::default(),
            result_cache: None,
            cache_leaders: VecDeque::new(),
            answer_from_cache: false,
            batching: batching::Batching::default(),
            unflushed: Unflushed::default(),
        }
    }

    /// Where reported usage is priced and charged (the run's; by default no prices, no budget).
    pub fn account_cost(&mut self, cost: Arc<CostControl>) {
        if let Some(cache) = &mut self.result_cache {
            cache.price_with(Arc::clone(&cost));
        }
        self.cost = cost;
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the queue holds `capacity` elements (FLINK-SEMANTICS 9): admit nothing more.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.config.capacity
    }

    /// Nothing in the queue: every admitted element has been emitted.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn records_inside(&self) -> usize {
        self.records.len()
    }

    /// The operator has admitted records of `waio serve`'s callers.
    pub fn serving(&self) -> bool {
        self.serving
    }

    pub fn last_admitted_line(&self) -> u64 {
        self.last_admitted_line
    }

    /// Re-invocations or refused requests wait for [`Self::settle`].
    pub fn has_work(&self) -> bool {
        !self.reinvoke.is_empty()
            || !self.local_answers.is_empty()
            || !self.cache_leaders.is_empty()
    }

    /// A dead letter from upstream: it takes no room and leaves with the next output.
    pub fn pass_through(&mut self, letter: Vec<u8>) {
        self.passthrough.push(letter);
    }

    /// An element enters the operator; a record is invoked at once. The caller checks room.
    pub fn admit(&mut self, element: Element, now: Instant) -> Result<(), OperatorError> {
        self.now = now;
        let input = match element {
            Element::DeadLetter(letter) => {
                self.pass_through(letter);
                return Ok(());
            }
            Element::Watermark(ts) => {
                let seq = self.take_seq();
                self.queue.push_watermark(seq, ts);
                self.queued_watermarks.push_back((seq, ts));
                return Ok(());
            }
            Element::Record(input) => input,
        };
        if input
            .origin
            .as_ref()
            .is_some_and(|o| o.lease.revoked_by(self.barrier))
        {
            // Its Kafka partition went to another process, which reads it again: not invoked.
            self.telemetry.abandoned.inc();
            return Ok(());
        }
        let seq = self.take_seq();
        let segment = self.queue.segment_of_next();
        self.queue.push_record(seq);
        self.last_admitted_line = input.line;
        self.serving |= input.ticket.is_some();
        // A replayed dead letter that starts at a later operator leaves unchanged, in its place
        // (ordering, capacity and watermarks as for any record); its entry keeps it in
        // checkpoints until it has left.
        let slot = self.assign_slot();
        self.slots[slot].holding += 1;
        if input.enters_at > self.config.index {
            let mut entry = Entry::new(input.clone(), slot, segment, now);
            entry.done = true;
            self.records.insert(seq, entry);
            self.queue
                .complete(seq, segment, smallvec::smallvec![input]);
            return Ok(());
        }
        self.unflushed.records_in += 1;
        // The timeout starts when the record enters (FLINK-SEMANTICS 12).
        if let Some(timeout) = self.config.timeout {
            self.timers.push(now + timeout, seq, TimerKind::Deadline);
        }
        self.records
            .insert(seq, Entry::new(input, slot, segment, now));
        if self.result_cache.is_some() {
            return self.admit_cached(seq);
        }
        self.invoke(seq)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Re-invokes records whose instance was replaced, then delivers refused requests' answers.
    pub fn settle(&mut self, now: Instant) -> Result<(), OperatorError> {
        self.now = now;
        while let Some(seq) = self.reinvoke.pop_front() {
            self.reinvoke_one(seq)?;
        }
        while let Some(seq) = self.cache_leaders.pop_front() {
            self.lead_instead(seq)?;
        }
        while let Some(done) = self.local_answers.pop_front() {
            self.deliver(done)?;
        }
        Ok(())
    }

    /// The next request to send, in the order the plugin sent them.
    pub fn next_call(&mut self) -> Option<CallToSend> {
        self.outbox.pop_front()
    }

    /// The next token usage to settle with the rate limit, if any.
    pub fn next_settlement(&mut self) -> Option<TokenSettlement> {
        self.settlements.pop_front()
    }

    /// Pairs reported usage with what its record was charged (nothing, for usage reported
    /// outside a record: all of it is then a debt).
    fn settle_tokens(&mut self, usage: &TokenUsage) {
        let charged = usage
            .owner
            .and_then(|seq| self.records.get_mut(seq))
            .map_or(0, |entry| std::mem::take(&mut entry.tokens_charged));
        self.settlements.push_back(TokenSettlement {
            charged,
            input: usage.input_tokens,
            output: usage.output_tokens,
        });
    }

    /// The run loop could not send a request (the host refused it): its error is delivered to
    /// the plugin on the next turn, and it holds no room among the requests in flight.
    pub fn refused(&mut self, done: CallDone) {
        self.call_finished();
        self.local_answers.push_back(done);
    }

    /// An answer came back from the network: room for a waiting request, then the answer.
    pub fn answered(&mut self, done: CallDone, now: Instant) -> Result<(), OperatorError> {
        self.now = now;
        self.call_finished();
        self.deliver(done)
    }

    fn call_finished(&mut self) {
        self.calls_in_flight = self.calls_in_flight.saturating_sub(1);
        self.release_waiting_calls();
    }

    /// Sends waiting requests while there is room among the requests in flight.
    fn release_waiting_calls(&mut self) {
        while self.calls_in_flight < self.config.max_requests_in_flight {
            let Some(call) = self.waiting_calls.pop_front() else {
                break;
            };
            // An instance that was replaced will never read the answer.
            if self
                .slots
                .get(call.slot)
                .is_some_and(|s| s.generation == call.generation)
            {
                self.calls_in_flight += 1;
                self.outbox.push_back(call);
            }
        }
    }

    /// Hands an answer to the instance that asked, unless that instance has been replaced.
    fn deliver(&mut self, done: CallDone) -> Result<(), OperatorError> {
        let Some(slot) = self.slots.get(done.slot) else {
            return Ok(());
        };
        if slot.generation != done.generation {
            return Ok(());
        }
        let serving = done.owner.and_then(|seq| {
            let entry = self.records.pending(seq)?;
            // Its dead letter names the last HTTP status its requests got.
            entry.attempts.http_status = done.answer.as_ref().ok().map(|r| r.status);
            entry.tokens_charged += done.tokens_charged;
            Some((seq, Cause::of(entry)))
        });
        let result = self
            .function
            .on_response(done.slot, done.owner, done.call_id, &done.answer);
        self.answer_from_cache = done.from_cache;
        let applied = self.after_call(done.slot, result, serving);
        self.answer_from_cache = false;
        applied
    }

    /// Calls the plugin's `async-invoke` for a pending record and applies what it did.
    /// While the run loop admits a batch of input, the record joins the next
    /// batch call instead (see `batching`).
    fn invoke(&mut self, seq: u64) -> Result<(), OperatorError> {
        if self.gather(seq) {
            return Ok(());
        }
        let Some(entry) = self.records.get_mut(seq) else {
            return Ok(());
        };
        entry.attempts.invoked(SystemTime::now());
        self.call_invoke(seq)
    }

    /// Calls `async-invoke` for a record already counted as invoked, and applies what it did.
    fn call_invoke(&mut self, seq: u64) -> Result<(), OperatorError> {
        let Some(entry) = self.records.get_mut(seq) else {
            return Ok(());
        };
        let (slot, attempt) = (entry.slot, entry.attempt);
        let result = self.function.invoke(slot, seq, attempt, &mut entry.input);
        self.after_call(slot, result, Some((seq, Cause::Failure)))
    }

    fn apply(&mut self, slot: usize, effects: Effects) -> Result<(), OperatorError> {
        for usage in effects.usage {
            if let Some(entry) = usage.owner.and_then(|seq| self.records.get_mut(seq)) {
                if entry.cache_key.is_some() {
                    entry.usage.push(usage.clone());
                }
            }
            if self.answer_from_cache {
                // Reported from an answer the request cache gave: not paid again.
                self.saved_by_request_cache(&usage);
                continue;
            }
            self.settle_tokens(&usage);
            self.telemetry.input_tokens.add(usage.input_tokens);
            self.telemetry.output_tokens.add(usage.output_tokens);
            // Priced and charged where it is reported: a budget trips within one request.
            self.cost.record(
                &self.telemetry.models,
                &usage.model,
                usage.input_tokens,
                usage.output_tokens,
                self.now,
            );
        }
        for call in effects.calls {
            self.start_call(slot, call);
        }
        for completion in effects.completions {
            let Some(entry) = self.records.get(completion.seq) else {
                continue; // already emitted
            };
            // First completion wins (FLINK-SEMANTICS 7); a completion from an earlier attempt is
            // stale, and one of an attempt whose retry is scheduled came second (25).
            if entry.done || entry.attempt != completion.attempt || entry.retry_at.is_some() {
                continue;
            }
            let cause = Cause::of(entry);
            if cause == Cause::Failure && self.retry_later(completion.seq, &completion.result) {
                continue;
            }
            match completion.result {
                Ok(outputs) => self.complete(completion.seq, outputs)?,
                Err(failure) => {
                    // A fatal answer is the input's: remembered, and given to those waiting.
                    if cause == Cause::Failure && failure.kind == FailureKind::Fatal {
                        self.leader_ended(completion.seq, Ending::Fatal(&failure.message))?;
                    }
                    self.fail(completion.seq, cause, failure.kind, failure.message)?
                }
            }
        }
        Ok(())
    }

    /// Queues a request the plugin asked for to be sent, or to wait while
    /// `max_requests_in_flight` are on the network (backpressure in the host, not in the provider).
    fn start_call(&mut self, slot: usize, call: OutgoingCall) {
        self.telemetry.http_calls.inc();
        self.calls_started += 1;
        let owner = call.owner.and_then(|seq| self.records.get(seq));
        // A request the `timeout` handler sends (a fallback call) has the grace as its time.
        let grace = |o: &Entry| {
            if o.timed_out {
                self.config.timeout_grace
            } else {
                Duration::ZERO
            }
        };
        let deadline = owner
            .zip(self.config.timeout)
            .map(|(o, t)| o.entered + t + grace(o));
        let call = CallToSend {
            slot,
            generation: self.slots[slot].generation,
            call,
            deadline,
        };
        if self.calls_in_flight >= self.config.max_requests_in_flight {
            self.waiting_calls.push_back(call);
        } else {
            self.calls_in_flight += 1;
            self.outbox.push_back(call);
        }
    }

    fn complete(&mut self, seq: u64, outputs: OutputList) -> Result<(), OperatorError> {
        if self.result_cache.is_some() {
            // A fallback of the `timeout` handler is not the input's answer: not kept.
            let timed_out = self.records.get(seq).is_some_and(|e| e.timed_out);
            if timed_out {
                self.leader_ended(seq, Ending::Other)?;
            } else {
                self.leader_ended(seq, Ending::Outputs(&outputs))?;
            }
        }
        let Some(entry) = self.records.get_mut(seq) else {
            return Ok(());
        };
        entry.done = true;
        if let Some(slot) = self.slots.get_mut(entry.slot) {
            slot.completed += 1;
        }
        if let Some(ticket) = &entry.input.ticket {
            ticket.completed();
        }
        let (timestamp, line) = (entry.input.timestamp, entry.input.line);
        let produced_by = Some(self.function.version_of(entry.slot));
        let to_record = |output: Output| Record {
            key: output.key,
            // Every output carries its input's event time (FLINK-SEMANTICS 5).
            timestamp,
            payload: output.payload,
            line,
            enters_at: 0,
            produced_by,
            origin: entry.input.origin.clone(),
            ticket: entry.input.ticket.clone(),
        };
        let mut outputs = outputs.into_iter();
        let outputs: Outputs = match (outputs.len(), outputs.next()) {
            // One output, the common case: built in place, not through a general `collect`.
            (1, Some(only)) => Outputs::from_buf([to_record(only)]),
            (_, first) => first.into_iter().chain(outputs).map(to_record).collect(),
        };
        if outputs.is_empty() {
            self.telemetry.filtered.inc();
        }
        self.unflushed.records_out += outputs.len() as u64;
        let segment = entry.segment;
        self.queue.complete(seq, segment, outputs);
        Ok(())
    }

    /// A record failed: fail the job or dead-letter it, as the operator's policy says.
    fn fail(
        &mut self,
        seq: u64,
        cause: Cause,
        kind: FailureKind,
        message: String,
    ) -> Result<(), OperatorError> {
        // Whatever made it fail, the records waiting for its input make the call themselves.
        self.leader_ended(seq, Ending::Other)?;
        let Some(entry) = self.records.get(seq) else {
            return Ok(());
        };
        match (cause, kind) {
            (Cause::Timeout, _) => self.telemetry.timed_out.inc(),
            (Cause::Failure, FailureKind::Retriable) => self.telemetry.failed_retriable.inc(),
            (Cause::Failure, FailureKind::Fatal) => self.telemetry.failed_fatal.inc(),
        }
        let (policy, reason) = match cause {
            Cause::Failure => (self.config.on_failure, "failure"),
            Cause::Timeout => (self.config.on_timeout, "timeout"),
        };
        if let Some(ticket) = entry.input.ticket.clone() {
            self.answer_failure(seq, &ticket, cause, kind, message);
            return Ok(());
        }
        let operator = self.config.name.clone();
        let record = match entry.input.origin.as_deref() {
            Some(o) => format!(
                "kafka topic {} partition {} offset {}",
                o.topic, o.partition, o.offset
            ),
            None => format!("{}:{}", self.source_label, entry.input.line),
        };
        match (policy, cause) {
            (Policy::Fail, Cause::Failure) => Err(OperatorError::RecordFailed {
                operator,
                record,
                message: match entry.attempts.count {
                    0 | 1 => format!("{message} ({kind})"),
                    n => format!("{message} ({kind}, after {n} attempts)"),
                },
            }),
            (Policy::Fail, Cause::Timeout) => Err(OperatorError::TimedOut {
                operator,
                record,
                timeout: self
                    .config
                    .timeout
                    .map(|t| humantime::format_duration(t).to_string())
                    .unwrap_or_default(),
                detail: format!(": {message}"),
            }),
            (Policy::DeadLetter, _) => {
                let letter = DeadLetter {
                    stage: &self.config.name,
                    reason,
                    error: &message,
                    retriable: Some(kind == FailureKind::Retriable),
                    record: &entry.input,
                    plugin: Some(self.function.version_of(entry.slot)),
                }
                .encode_after(&entry.attempts);
                self.telemetry.dead_lettered.inc();
                // The record leaves the operator at its position, as its dead letter.
                if let Some(entry) = self.records.get_mut(seq) {
                    entry.done = true;
                    entry.dead_letter = Some(letter);
                    let segment = entry.segment;
                    self.queue.complete(seq, segment, Outputs::new());
                }
                Ok(())
            }
        }
    }

    /// A `waio serve` caller's record failed: the caller hears it (and decides on retries and
    /// dead letters), whatever the operator's policy; the record leaves at its position.
    fn answer_failure(
        &mut self,
        seq: u64,
        ticket: &crate::answers::Ticket,
        cause: Cause,
        kind: FailureKind,
        message: String,
    ) {
        use crate::answers::FailureKind as Answer;
        let answer = match (cause, kind) {
            (Cause::Timeout, _) => Answer::Timeout,
            (Cause::Failure, FailureKind::Retriable) => Answer::Retriable,
            (Cause::Failure, FailureKind::Fatal) => Answer::Fatal,
        };
        ticket.fail(answer, message);
        if let Some(entry) = self.records.get_mut(seq) {
            entry.done = true;
            let segment = entry.segment;
            self.queue.complete(seq, segment, Outputs::new());
        }
    }

    /// Appends to `out` what may leave now: dead letters passed through, then the queue's
    /// ready elements in order (FLINK-SEMANTICS 1-4).
    pub fn emit(&mut self, out: &mut Batch, now: Instant) {
        out.extend(self.passthrough.drain(..).map(Element::DeadLetter));
        self.queue.drain_ready(&mut self.emitted);
        let mut emitted = std::mem::take(&mut self.emitted);
        let telemetry = Arc::clone(&self.telemetry);
        let mut latencies = telemetry.latency_us.batch();
        for emitted in emitted.drain(..) {
            match emitted {
                Emitted::Record { seq, mut outputs } => {
                    if let Some(mut entry) = self.records.remove(seq) {
                        crate::record::recycle_payload(std::mem::take(&mut entry.input.payload));
                        self.left(entry.slot);
                        let micros = now.saturating_duration_since(entry.entered).as_micros();
                        latencies.record((micros as u64).max(1));
                        if let Some(letter) = entry.dead_letter {
                            out.push(Element::DeadLetter(letter));
                        }
                    }
                    match outputs.len() {
                        // One output, the common case: no iterator over the outputs.
                        1 => out.extend(outputs.pop().map(Element::Record)),
                        _ => out.extend(outputs.into_iter().map(Element::Record)),
                    }
                }
                Emitted::Watermark(ts) => {
                    self.queued_watermarks.pop_front();
                    self.last_watermark = Some(ts);
                    out.push(Element::Watermark(ts));
                }
            }
        }
        // The buffer is kept for the next call: no allocation per emit.
        self.emitted = emitted;
        self.flush_counts();
    }

    fn flush_counts(&mut self) {
        let counts = std::mem::take(&mut self.unflushed);
        if counts.records_in > 0 {
            self.telemetry.records_in.add(counts.records_in);
        }
        if counts.records_out > 0 {
            self.telemetry.records_out.add(counts.records_out);
        }
    }

    /// Barrier `id` has passed this operator: a Kafka partition revoked at it is not invoked
    /// any more.
    pub fn passed_barrier(&mut self, id: u64) {
        self.barrier = id;
    }

    /// The input of every element in the queue, in queue order (FLINK-SEMANTICS 27), then the
    /// elements read ahead but not admitted yet.
    pub fn snapshot<'a>(&self, read_ahead: impl Iterator<Item = &'a Element>) -> OperatorSnapshot {
        let records = self.records.in_order();
        let mut watermarks = self.queued_watermarks.iter().peekable();
        let mut elements = Vec::with_capacity(records.len() + self.queued_watermarks.len());
        for (seq, entry) in records {
            while let Some((_, ts)) = watermarks.next_if(|(w, _)| *w < seq) {
                elements.push(Element::Watermark(*ts));
            }
            elements.push(Element::Record(entry.input.clone()));
        }
        elements.extend(watermarks.map(|(_, ts)| Element::Watermark(*ts)));
        elements.extend(read_ahead.cloned());
        OperatorSnapshot {
            name: self.config.name.clone(),
            plugin: self.config.plugin.display().to_string(),
            plugin_sha256: self.function.version().to_string(),
            capacity: self.config.capacity as u64,
            ordered: self.config.ordered,
            watermark: self.last_watermark,
            elements,
        }
    }

    /// Closes the plugin's instances; a trap in `close` is only logged.
    pub fn close(&mut self) {
        self.flush_counts();
        for trap in self.function.close() {
            tracing::warn!(operator = %self.config.name, "plugin trapped in close: {trap}");
        }
    }
}
