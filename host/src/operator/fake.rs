//! The operator tests' fake function (it does what a script says and logs every call), their
//! harness (the core with a fake clock, the run loop's steps done by hand) and shared configs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::manifest::{HttpVersion, Location, OperatorConfig, Policy};
use crate::operator::semantics::{CallDone, CallToSend, OperatorCore};
use crate::operator::OperatorError;
use crate::plugin::bindings::{HttpRequest, HttpResponse};
use crate::plugin::function::{
    Answer, AsyncFunction, Completion, Effects, Failure, FailureKind, FreshInstanceError,
    Invocation, OutgoingCall, Output, OutputList, TokenUsage,
};
use crate::plugin::GuestTrap;
use crate::record::{Element, Record};
use crate::telemetry::OperatorTelemetry;

/// Which call of the function the script is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Invoke,
    Timeout,
    Response,
}

/// What the fake does during a call.
#[derive(Clone, Debug)]
pub(super) enum Act {
    /// Completes the record served with these outputs.
    Complete(Vec<String>),
    Fail(FailureKind, &'static str),
    /// Sends a request on behalf of the record served.
    Send,
    /// Reports token usage.
    Usage(u64, u64),
    /// The instance traps (after the acts before it took effect).
    Trap(&'static str),
    /// Completes the given attempt of the record served, as a callback holding an older
    /// attempt's result future would.
    CompleteAttempt(u32, Vec<String>),
}

/// One call the operator made, as the fake logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Logged {
    pub(super) kind: Kind,
    pub(super) slot: usize,
    pub(super) payload: String,
    pub(super) attempt: u32,
}

pub(super) type Script = Box<dyn FnMut(Kind, &str) -> Vec<Act>>;

/// A function that does what its script says; it completes records through the same effects
/// a plugin's `result-future` makes.
pub(super) struct FakeFunction {
    pub(super) slots: usize,
    pub(super) script: Script,
    pub(super) log: Vec<Logged>,
    pub(super) effects: Vec<Effects>,
    /// Payload and current attempt of every record it was called for.
    pub(super) records: HashMap<u64, (String, u32)>,
    pub(super) next_call_id: u64,
    pub(super) memory_full: Vec<bool>,
    pub(super) replaced: Vec<usize>,
    pub(super) closed: bool,
    /// Each slot's version, the current one, and the slots closed one by one.
    pub(super) versions: Vec<Arc<str>>,
    pub(super) current: Arc<str>,
    pub(super) closed_slots: Vec<usize>,
    /// The payloads of each `invoke_batch` call, in call order.
    pub(super) batches: Vec<Vec<String>>,
    /// Whether it takes batches (a plugin of 0.1.0 or 0.2.0 does not).
    pub(super) takes_batches: bool,
}

impl FakeFunction {
    pub(super) fn new(slots: usize, script: impl FnMut(Kind, &str) -> Vec<Act> + 'static) -> Self {
        FakeFunction {
            slots,
            script: Box::new(script),
            log: Vec::new(),
            effects: (0..slots).map(|_| Effects::default()).collect(),
            records: HashMap::new(),
            next_call_id: 1,
            memory_full: vec![false; slots],
            replaced: Vec::new(),
            closed: false,
            versions: vec![Arc::from("fake"); slots],
            current: Arc::from("fake"),
            closed_slots: Vec::new(),
            batches: Vec::new(),
            takes_batches: true,
        }
    }

    pub(super) fn call(
        &mut self,
        kind: Kind,
        slot: usize,
        seq: Option<u64>,
    ) -> Result<(), GuestTrap> {
        let (payload, attempt) = seq
            .and_then(|s| self.records.get(&s).cloned())
            .unwrap_or_default();
        self.log.push(Logged {
            kind,
            slot,
            payload: payload.clone(),
            attempt,
        });
        for act in (self.script)(kind, &payload) {
            let effects = &mut self.effects[slot];
            match (act, seq) {
                (Act::Trap(message), _) => return Err(GuestTrap(message.to_string())),
                (Act::Usage(input_tokens, output_tokens), owner) => {
                    effects.usage.push(TokenUsage {
                        owner,
                        model: "test-model".into(),
                        input_tokens,
                        output_tokens,
                    })
                }
                (Act::Send, owner) => {
                    effects.calls.push(OutgoingCall {
                        id: self.next_call_id,
                        owner,
                        request: HttpRequest {
                            method: "GET".into(),
                            url: format!("http://127.0.0.1/{payload}"),
                            headers: Vec::new(),
                            body: Vec::new(),
                            timeout_ms: None,
                        },
                    });
                    self.next_call_id += 1;
                }
                (Act::Complete(outputs), Some(seq)) => effects.completions.push(Completion {
                    seq,
                    attempt,
                    result: Ok(outputs_of(outputs)),
                }),
                (Act::Fail(kind, message), Some(seq)) => effects.completions.push(Completion {
                    seq,
                    attempt,
                    result: Err(Failure {
                        kind,
                        message: message.to_string(),
                    }),
                }),
                (Act::CompleteAttempt(attempt, outputs), Some(seq)) => {
                    effects.completions.push(Completion {
                        seq,
                        attempt,
                        result: Ok(outputs_of(outputs)),
                    })
                }
                (Act::Complete(_) | Act::Fail(..) | Act::CompleteAttempt(..), None) => {}
            }
        }
        Ok(())
    }

    pub(super) fn calls_of(&self, kind: Kind) -> Vec<String> {
        self.log
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| l.payload.clone())
            .collect()
    }
}

impl AsyncFunction for FakeFunction {
    /// The next version's digest and how many slots it has.
    type Update = (&'static str, usize);

    fn slots(&self) -> usize {
        self.slots
    }

    fn version(&self) -> &Arc<str> {
        &self.current
    }

    fn version_of(&self, slot: usize) -> &'static str {
        crate::record::interned_digest(&self.versions[slot])
    }

    fn install(&mut self, (digest, slots): Self::Update) -> std::ops::Range<usize> {
        let start = self.slots;
        self.current = Arc::from(digest);
        self.slots += slots;
        self.versions.resize(self.slots, Arc::clone(&self.current));
        self.effects.resize_with(self.slots, Effects::default);
        self.memory_full.resize(self.slots, false);
        start..self.slots
    }

    fn close_slot(&mut self, slot: usize) -> Option<GuestTrap> {
        self.closed_slots.push(slot);
        None
    }

    fn invoke(
        &mut self,
        slot: usize,
        seq: u64,
        attempt: u32,
        input: &mut Record,
    ) -> Result<(), GuestTrap> {
        let payload = String::from_utf8_lossy(&input.payload).into_owned();
        self.records.insert(seq, (payload, attempt));
        self.call(Kind::Invoke, slot, Some(seq))
    }

    fn takes_batches(&self, _slot: usize) -> bool {
        self.takes_batches
    }

    /// Logs the batch, then serves its records one by one as the SDKs do.
    fn invoke_batch(&mut self, slot: usize, batch: &[Invocation<'_>]) -> Result<(), GuestTrap> {
        self.batches.push(
            batch
                .iter()
                .map(|i| String::from_utf8_lossy(&i.input.payload).into_owned())
                .collect(),
        );
        for item in batch {
            let payload = String::from_utf8_lossy(&item.input.payload).into_owned();
            self.records.insert(item.seq, (payload, item.attempt));
            self.call(Kind::Invoke, slot, Some(item.seq))?;
        }
        Ok(())
    }

    fn timeout(
        &mut self,
        slot: usize,
        seq: u64,
        attempt: u32,
        input: &mut Record,
    ) -> Result<(), GuestTrap> {
        let payload = String::from_utf8_lossy(&input.payload).into_owned();
        self.records.insert(seq, (payload, attempt));
        self.call(Kind::Timeout, slot, Some(seq))
    }

    fn on_response(
        &mut self,
        slot: usize,
        owner: Option<u64>,
        _call_id: u64,
        _answer: &Answer,
    ) -> Result<(), GuestTrap> {
        self.call(Kind::Response, slot, owner)
    }

    fn take_effects(&mut self, slot: usize) -> Effects {
        std::mem::take(&mut self.effects[slot])
    }

    fn memory_nearly_full(&self, slot: usize) -> bool {
        self.memory_full[slot]
    }

    fn memory_used(&self, _slot: usize) -> usize {
        0
    }

    fn replace(&mut self, slot: usize) -> Result<(), FreshInstanceError> {
        self.replaced.push(slot);
        self.memory_full[slot] = false;
        // The effects of the old instance are lost with it.
        self.effects[slot] = Effects::default();
        Ok(())
    }

    fn close(&mut self) -> Vec<GuestTrap> {
        self.closed = true;
        Vec::new()
    }
}

pub(super) fn config() -> OperatorConfig {
    OperatorConfig {
        cache: None,
        request_cache: None,
        index: 0,
        name: "enrich".into(),
        plugin: PathBuf::from("fake.wasm"),
        plugin_at: Location {
            file: PathBuf::from("pipeline.toml"),
            line: 1,
            column: 1,
        },
        capacity: 10,
        timeout: None,
        ordered: true,
        on_failure: Policy::Fail,
        on_timeout: Policy::Fail,
        instances: 1,
        allowed_hosts: Vec::new(),
        secrets: Vec::new(),
        http_timeout: Duration::from_secs(5),
        http_version: HttpVersion::Http1,
        memory_limit: 64 << 20,
        call_time_limit: Duration::from_secs(1),
        max_requests_in_flight: 100,
        retry: Default::default(),
        circuit_breaker: None,
        rate_limit: None,
        timeout_grace: Duration::ZERO,
        async_retry: Default::default(),
        batch: Default::default(),
        config_json: "{}".into(),
        build: None,
    }
}

/// The default script: `now*` completes in `async-invoke` with its payload, `two*` with two
/// values, `empty*` with none, `send*` sends a request and completes with its payload when the
/// answer comes, `fail*` completes exceptionally, `trap*` traps, anything else stays open.
/// `timeout` leaves the record open.
pub(super) fn by_payload(kind: Kind, payload: &str) -> Vec<Act> {
    let p = payload.to_string();
    match kind {
        Kind::Invoke if p.starts_with("now") => vec![Act::Complete(vec![p])],
        Kind::Invoke if p.starts_with("two") => {
            vec![Act::Complete(vec![format!("{p}-1"), format!("{p}-2")])]
        }
        Kind::Invoke if p.starts_with("empty") => vec![Act::Complete(vec![])],
        Kind::Invoke if p.starts_with("send") => vec![Act::Send],
        Kind::Invoke if p.starts_with("fail") => {
            vec![Act::Fail(FailureKind::Fatal, "the provider said no")]
        }
        Kind::Invoke if p.starts_with("trap") => vec![Act::Trap("boom")],
        Kind::Response => vec![Act::Complete(vec![p])],
        _ => vec![],
    }
}

/// The core, its fake function and a fake clock, with the run loop's steps done by hand.
pub(super) struct Harness {
    pub(super) core: OperatorCore<FakeFunction>,
    pub(super) now: Instant,
    pub(super) line: u64,
    /// Requests the core handed out, not answered yet.
    pub(super) sent: Vec<CallToSend>,
    pub(super) out: Vec<Element>,
    pub(super) telemetry: Arc<OperatorTelemetry>,
}

impl Harness {
    pub(super) fn new(config: OperatorConfig, function: FakeFunction) -> Self {
        let telemetry = Arc::new(OperatorTelemetry::new(&config.name));
        Harness {
            core: OperatorCore::new(
                config,
                function,
                Arc::from("input.jsonl"),
                telemetry.clone(),
            ),
            now: Instant::now(),
            line: 0,
            sent: Vec::new(),
            out: Vec::new(),
            telemetry,
        }
    }

    pub(super) fn with(config: OperatorConfig) -> Self {
        Self::new(config, FakeFunction::new(1, by_payload))
    }

    pub(super) fn function(&self) -> &FakeFunction {
        &self.core.function
    }

    /// What the run loop does after every event: settle, take the requests, emit.
    pub(super) fn turn(&mut self) -> Result<(), OperatorError> {
        loop {
            while let Some(call) = self.core.next_call() {
                self.sent.push(call);
            }
            if !self.core.has_work() {
                break;
            }
            self.core.settle(self.now)?;
        }
        self.core.emit(&mut self.out, self.now);
        Ok(())
    }

    /// Admits the next input line with this payload (its timestamp is 1000 + line).
    pub(super) fn record(&mut self, payload: &str) -> Result<(), OperatorError> {
        self.line += 1;
        let record = Record {
            key: None,
            timestamp: Some(1000 + self.line as i64),
            payload: payload.as_bytes().to_vec(),
            line: self.line,
            enters_at: 0,
            produced_by: None,
            origin: None,
            ticket: None,
        };
        self.admit(Element::Record(record))
    }

    /// Admits several input lines as the run loop admits what is waiting: together, so that
    /// they are invoked in batches.
    pub(super) fn records(&mut self, payloads: &[&str]) -> Result<(), OperatorError> {
        self.core.collect_invocations();
        for payload in payloads {
            self.line += 1;
            let record = Record {
                timestamp: Some(1000 + self.line as i64),
                payload: payload.as_bytes().to_vec(),
                line: self.line,
                ..Record::default()
            };
            self.core.admit(Element::Record(record), self.now)?;
        }
        self.core.invoke_collected(self.now)?;
        self.turn()
    }

    pub(super) fn watermark(&mut self, ts: i64) -> Result<(), OperatorError> {
        self.admit(Element::Watermark(ts))
    }

    pub(super) fn admit(&mut self, element: Element) -> Result<(), OperatorError> {
        assert!(!self.core.is_full(), "the run loop admits only with room");
        self.core.admit(element, self.now)?;
        self.turn()
    }

    /// Answers the request the record with this payload sent.
    pub(super) fn answer(&mut self, payload: &str) -> Result<(), OperatorError> {
        let status = Ok(HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        });
        self.answer_with(payload, status)
    }

    pub(super) fn answer_with(
        &mut self,
        payload: &str,
        answer: Answer,
    ) -> Result<(), OperatorError> {
        self.answer_charged(payload, answer, 0)
    }

    /// Answers as `answer_with`, the request having been charged `tokens` by a rate limit.
    pub(super) fn answer_charged(
        &mut self,
        payload: &str,
        answer: Answer,
        tokens: u64,
    ) -> Result<(), OperatorError> {
        let url = format!("http://127.0.0.1/{payload}");
        let at = self
            .sent
            .iter()
            .position(|c| c.call.request.url == url)
            .unwrap_or_else(|| panic!("no request in flight for {payload}"));
        let call = self.sent.remove(at);
        self.core.answered(
            CallDone {
                slot: call.slot,
                generation: call.generation,
                call_id: call.call.id,
                owner: call.call.owner,
                answer,
                tokens_charged: tokens,
                from_cache: false,
            },
            self.now,
        )?;
        self.turn()
    }

    /// Lets `ms` milliseconds pass on the fake clock and fires the timers then due.
    pub(super) fn advance(&mut self, ms: u64) -> Result<(), OperatorError> {
        self.now += Duration::from_millis(ms);
        self.core.fire_timers(self.now)?;
        self.turn()
    }

    /// The output so far: payloads, `W<ts>` for watermarks, `dead(<reason>):<line>`.
    pub(super) fn output(&mut self) -> Vec<String> {
        self.out
            .drain(..)
            .map(|e| match e {
                Element::Record(r) => String::from_utf8_lossy(&r.payload).into_owned(),
                Element::Watermark(ts) => format!("W{ts}"),
                Element::DeadLetter(letter) => {
                    let v: serde_json::Value = serde_json::from_slice(&letter).unwrap_or_default();
                    format!(
                        "dead({}):{}",
                        v["reason"].as_str().unwrap_or("?"),
                        v["line"]
                    )
                }
            })
            .collect()
    }
}

pub(super) fn timeout_config(ms: u64) -> OperatorConfig {
    OperatorConfig {
        timeout: Some(Duration::from_millis(ms)),
        ..config()
    }
}

pub(super) fn unordered() -> OperatorConfig {
    OperatorConfig {
        ordered: false,
        ..config()
    }
}

// FLINK-SEMANTICS 1

/// Outputs with these payloads and no key.
fn outputs_of(payloads: Vec<String>) -> OutputList {
    payloads
        .into_iter()
        .map(|p| Output {
            key: None,
            payload: p.into_bytes(),
        })
        .collect()
}
