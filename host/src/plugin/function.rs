//! The plugin as the operator sees it: Flink's `AsyncFunction`, over a few instance slots.
//!
//! The operator knows nothing of wasmtime. It calls a function in a slot (an instance) and, after
//! every call, takes what the call asked for ([`Effects`]: completions, requests to send, token
//! usage) as plain host types. An instance that traps, or keeps growing, is replaced in its slot.
//! [`WasmFunction`] is the implementation over a [`PluginComponent`]; the operator's unit tests
//! use a fake one.
//!
//! The trait lives here rather than in `operator/` so that the dependency goes one way only:
//! the operator uses the plugin module, never the reverse.

use std::fmt;
use std::sync::Arc;

use super::bindings::{self, Event, HttpError, HttpRequest, HttpResponse};
use super::{GuestTrap, PluginComponent, PluginError, PluginInstance};
use crate::record::Record;

/// The answer to a request a plugin sent, as the plugin receives it.
pub type Answer = Result<HttpResponse, HttpError>;

/// Whether trying a failed record again may help: the plugin says so in its failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Retriable,
    Fatal,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Retriable => "retriable",
            FailureKind::Fatal => "fatal",
        })
    }
}

/// A record's failure (`complete-exceptionally`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// One output of a record; it takes the input's event time and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

/// A record's outputs: most records have one, kept inline (no allocation per record).
pub type OutputList = smallvec::SmallVec<[Output; 1]>;

/// A record's result, for attempt `attempt` of record `seq`.
#[derive(Debug)]
pub struct Completion {
    pub seq: u64,
    pub attempt: u32,
    pub result: Result<OutputList, Failure>,
}

/// A request the plugin asked the host to send; its answer goes back to the same slot.
#[derive(Debug)]
pub struct OutgoingCall {
    /// The plugin's id for the request, given back with the answer.
    pub id: u64,
    /// The record whose code sent it, if any.
    pub owner: Option<u64>,
    pub request: HttpRequest,
}

/// Tokens a plugin reported using: for the run summary, cost accounting and settling the
/// tokens a rate limit charged in advance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// The record whose code reported it, if any (`None`: reported outside a record, e.g. in
    /// `open`).
    pub owner: Option<u64>,
    /// The model (or API) the plugin says it called.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Everything one call into the function asked for, in call order per kind.
#[derive(Debug, Default)]
pub struct Effects {
    pub completions: Vec<Completion>,
    pub calls: Vec<OutgoingCall>,
    pub usage: Vec<TokenUsage>,
}

pub use super::Invocation;

/// Why a fresh instance could not be made for a slot.
#[derive(Debug)]
pub enum FreshInstanceError {
    Plugin(PluginError),
    OpenTrapped(GuestTrap),
}

/// Flink's `AsyncFunction` as the operator calls it: per instance slot, never concurrently.
///
/// A call that returns a [`GuestTrap`] has lost its instance: the operator replaces it
/// ([`AsyncFunction::replace`]) and takes the effects the call made before it trapped.
///
/// Hot reload adds the slots of a new version after the current ones ([`AsyncFunction::install`]);
/// the slots of older versions keep serving the records they hold until the operator closes
/// them ([`AsyncFunction::close_slot`]). Slot numbers are never reused.
pub trait AsyncFunction {
    /// What a reload brings: the next version, its instances made and opened.
    type Update;
    /// Instance slots of every version so far (at least one).
    fn slots(&self) -> usize;
    /// The current version's digest (the component's SHA-256), as checkpoints record it.
    fn version(&self) -> &Arc<str>;
    /// The digest of the version the slot's instance belongs to (interned: records carry it).
    fn version_of(&self, slot: usize) -> &'static str;
    /// Appends the slots of the next version and makes it current; returns their numbers.
    fn install(&mut self, update: Self::Update) -> std::ops::Range<usize>;
    /// Closes the slot's instance for good (a retired version's, with nothing left in it).
    fn close_slot(&mut self, slot: usize) -> Option<GuestTrap>;
    /// `async-invoke` for attempt `attempt` of record `seq`. The input is lent mutably only so
    /// an implementation can hand its payload to the call without a copy: it is unchanged after.
    fn invoke(
        &mut self,
        slot: usize,
        seq: u64,
        attempt: u32,
        input: &mut Record,
    ) -> Result<(), GuestTrap>;
    /// Whether the slot's plugin takes several records in one call (a plugin of an earlier
    /// contract is called one record at a time).
    fn takes_batches(&self, slot: usize) -> bool {
        let _ = slot;
        true
    }
    /// A batch call (`invoke-columns`): several records in one call into the slot, each with
    /// its own result (all go to one slot, hence one version). A trap loses the instance as for
    /// `invoke`; the records of the batch not completed by then are the operator's to invoke
    /// again. By default one `invoke` per record.
    fn invoke_batch(&mut self, slot: usize, batch: &[Invocation<'_>]) -> Result<(), GuestTrap> {
        for item in batch {
            let mut input = item.input.clone();
            self.invoke(slot, item.seq, item.attempt, &mut input)?;
        }
        Ok(())
    }
    /// `timeout` for a record whose time is up (same contract as `invoke`).
    fn timeout(
        &mut self,
        slot: usize,
        seq: u64,
        attempt: u32,
        input: &mut Record,
    ) -> Result<(), GuestTrap>;
    /// The answer to request `call_id`, which the code of record `owner` sent from this slot.
    fn on_response(
        &mut self,
        slot: usize,
        owner: Option<u64>,
        call_id: u64,
        answer: &Answer,
    ) -> Result<(), GuestTrap>;
    /// What the calls into this slot asked for since the last take.
    fn take_effects(&mut self, slot: usize) -> Effects;
    /// Whether the slot's instance has used three quarters of the memory it had left after
    /// opening (the operator replaces it, if it has completed records, before it traps).
    fn memory_nearly_full(&self, slot: usize) -> bool;
    /// Memory the slot's instance has grown to, in bytes (for the log).
    fn memory_used(&self, slot: usize) -> usize;
    /// Puts a fresh, opened instance in the slot; the old one is dropped with whatever it held.
    fn replace(&mut self, slot: usize) -> Result<(), FreshInstanceError>;
    /// Closes every instance; the traps of those that failed to close, to be logged.
    fn close(&mut self) -> Vec<GuestTrap>;
}

/// One version of a plugin: its component and the config its instances are opened with.
pub struct FunctionVersion {
    component: Arc<PluginComponent>,
    config_json: String,
    digest: Arc<str>,
}

impl FunctionVersion {
    pub fn new(component: Arc<PluginComponent>, config_json: &str) -> Arc<Self> {
        Arc::new(FunctionVersion {
            digest: Arc::from(component.sha256.as_str()),
            component,
            config_json: config_json.to_string(),
        })
    }

    pub fn digest(&self) -> &Arc<str> {
        &self.digest
    }

    /// A fresh instance of this version, opened with its config.
    fn fresh_instance(&self) -> Result<PluginInstance, FreshInstanceError> {
        let mut instance = self
            .component
            .instantiate()
            .map_err(FreshInstanceError::Plugin)?;
        match instance.open(&self.config_json) {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(FreshInstanceError::Plugin(PluginError::Open {
                plugin: self.component.name().to_string(),
                message,
            })),
            Err(trap) => Err(FreshInstanceError::OpenTrapped(trap)),
        }
    }
}

/// A version ready to serve: `instances` instances made and opened. Made away from the
/// operator's thread (a reload validates a new version this way before swapping it in).
pub struct PreparedVersion {
    version: Arc<FunctionVersion>,
    slots: Vec<WasmSlot>,
}

impl PreparedVersion {
    /// Makes and opens `instances` instances (at least one) of `version`.
    pub fn prepare(
        version: Arc<FunctionVersion>,
        instances: usize,
    ) -> Result<Self, FreshInstanceError> {
        let slots = (0..instances.max(1))
            .map(|_| WasmSlot::fresh(&version))
            .collect::<Result<_, _>>()?;
        Ok(PreparedVersion { version, slots })
    }

    pub fn digest(&self) -> &Arc<str> {
        &self.version.digest
    }
}

impl fmt::Debug for PreparedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedVersion")
            .field("digest", &self.version.digest)
            .field("instances", &self.slots.len())
            .finish()
    }
}

/// The plugin's instances, of its current version and of older ones still finishing records.
pub struct WasmFunction {
    current: Arc<FunctionVersion>,
    slots: Vec<WasmSlot>,
}

struct WasmSlot {
    /// `None` once the slot is closed.
    instance: Option<PluginInstance>,
    /// Memory in use right after the instance was opened; growth is measured from here.
    baseline: usize,
    /// The version fresh instances of this slot are made from; `None` once the slot is closed,
    /// so that an old version's compiled code is freed with its last slot.
    version: Option<Arc<FunctionVersion>>,
    digest: &'static str,
}

impl WasmSlot {
    fn fresh(version: &Arc<FunctionVersion>) -> Result<Self, FreshInstanceError> {
        let instance = version.fresh_instance()?;
        Ok(WasmSlot {
            baseline: instance.memory_used(),
            instance: Some(instance),
            version: Some(Arc::clone(version)),
            digest: crate::record::interned_digest(&version.digest),
        })
    }

    fn instance(&mut self) -> Result<&mut PluginInstance, GuestTrap> {
        self.instance
            .as_mut()
            .ok_or_else(|| GuestTrap("the instance was closed".into()))
    }
}

impl WasmFunction {
    /// Makes and opens `instances` instances (at least one).
    pub fn open(
        component: Arc<PluginComponent>,
        config_json: &str,
        instances: usize,
    ) -> Result<Self, FreshInstanceError> {
        let prepared =
            PreparedVersion::prepare(FunctionVersion::new(component, config_json), instances)?;
        Ok(WasmFunction {
            current: prepared.version,
            slots: prepared.slots,
        })
    }
}

impl AsyncFunction for WasmFunction {
    type Update = PreparedVersion;

    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn version(&self) -> &Arc<str> {
        &self.current.digest
    }

    fn version_of(&self, slot: usize) -> &'static str {
        match self.slots.get(slot) {
            Some(s) => s.digest,
            None => crate::record::interned_digest(&self.current.digest),
        }
    }

    fn install(&mut self, update: PreparedVersion) -> std::ops::Range<usize> {
        let start = self.slots.len();
        self.current = update.version;
        self.slots.extend(update.slots);
        start..self.slots.len()
    }

    fn close_slot(&mut self, slot: usize) -> Option<GuestTrap> {
        let slot = self.slots.get_mut(slot)?;
        slot.version = None;
        slot.instance.take()?.close().err()
    }

    fn invoke(
        &mut self,
        slot: usize,
        seq: u64,
        attempt: u32,
        input: &mut Record,
    ) -> Result<(), GuestTrap> {
        let instance = self.slots[slot].instance()?;
        let origin = input.origin.clone();
        with_event(input, |event| instance.invoke(seq, attempt, event, origin))
    }

    fn takes_batches(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .and_then(|s| s.instance.as_ref())
            .is_some_and(PluginInstance::takes_batches)
    }

    fn invoke_batch(&mut self, slot: usize, batch: &[Invocation<'_>]) -> Result<(), GuestTrap> {
        self.slots[slot].instance()?.invoke_batch(batch)
    }

    fn timeout(
        &mut self,
        slot: usize,
        seq: u64,
        attempt: u32,
        input: &mut Record,
    ) -> Result<(), GuestTrap> {
        let instance = self.slots[slot].instance()?;
        let origin = input.origin.clone();
        with_event(input, |event| instance.timeout(seq, attempt, event, origin))
    }

    fn on_response(
        &mut self,
        slot: usize,
        owner: Option<u64>,
        call_id: u64,
        answer: &Answer,
    ) -> Result<(), GuestTrap> {
        self.slots[slot]
            .instance()?
            .on_response(owner, call_id, answer)
    }

    fn take_effects(&mut self, slot: usize) -> Effects {
        let Some(instance) = self.slots[slot].instance.as_mut() else {
            return Effects::default();
        };
        let raw = instance.take_effects();
        Effects {
            completions: raw
                .completions
                .into_iter()
                .map(|c| Completion {
                    seq: c.seq,
                    attempt: c.attempt,
                    result: c.result.map_err(failure),
                })
                .collect(),
            calls: raw
                .calls
                .into_iter()
                .map(|c| OutgoingCall {
                    id: c.id,
                    owner: c.owner,
                    request: c.request,
                })
                .collect(),
            usage: raw
                .usage
                .into_iter()
                .map(|(owner, u)| TokenUsage {
                    owner,
                    model: u.model,
                    input_tokens: u64::from(u.input_tokens),
                    output_tokens: u64::from(u.output_tokens),
                })
                .collect(),
        }
    }

    fn memory_nearly_full(&self, slot: usize) -> bool {
        let s = &self.slots[slot];
        let Some(instance) = &s.instance else {
            return false;
        };
        let limit = instance.memory_limit() as usize;
        let headroom = limit.saturating_sub(s.baseline);
        instance.memory_used() > s.baseline + headroom / 4 * 3
    }

    fn memory_used(&self, slot: usize) -> usize {
        self.slots[slot]
            .instance
            .as_ref()
            .map_or(0, PluginInstance::memory_used)
    }

    fn replace(&mut self, slot: usize) -> Result<(), FreshInstanceError> {
        // A fresh instance of the version the slot belongs to: its records finish on it.
        let version = self.slots[slot]
            .version
            .clone()
            .unwrap_or_else(|| Arc::clone(&self.current));
        self.slots[slot] = WasmSlot::fresh(&version)?;
        Ok(())
    }

    fn close(&mut self) -> Vec<GuestTrap> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.instance.take()?.close().err())
            .collect()
    }
}

fn failure(failure: bindings::Failure) -> Failure {
    Failure {
        kind: match failure.kind {
            bindings::FailureKind::Retriable => FailureKind::Retriable,
            bindings::FailureKind::Fatal => FailureKind::Fatal,
        },
        message: failure.message,
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
