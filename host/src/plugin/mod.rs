//! Plugins: loading and type-checking components, instances with limits, guest calls.
//!
//! One wasmtime [`Engine`] serves the whole process, with epoch interruption on so that every
//! guest call has a CPU deadline. Each operator loads its component once into an
//! [`EnricherPluginPre`] (type-checked against the `enricher-plugin` world) and makes instances from
//! it; an instance that traps is dropped and a fresh one made, which takes microseconds.
//!
//! WASI gives a plugin clocks, randomness, and a stdout and stderr that go to the host's log
//! ([`output`]); its blocking calls give up at the call's deadline ([`wasi`]).

pub mod bindings;
pub mod cache;
pub mod columns;
pub mod compat;
pub mod function;
pub mod host;
pub mod http_convert;
pub mod output;
pub mod wasi;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Config, Engine, Store, Trap, WasmBacktrace};
use wasmtime_wasi::WasiCtxBuilder;

use bindings::{EnricherPlugin, EnricherPluginPre, Event, HttpError, HttpResponse};
pub use cache::{CacheOutcome, CompileCache};
use host::Effects;
pub use host::{FutureRef, HostState, MemoryLimiter};
use output::{GuestOutput, Stream};

use crate::manifest::Location;
use crate::record::{Origin, Record};

/// How often the engine's epoch advances: the granularity of `call_time_limit`.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{at}: plugin file {} does not exist", path.display())]
    NotFound { path: PathBuf, at: Location },
    #[error("{at}: cannot read plugin {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        at: Location,
        cause: std::io::Error,
    },
    #[error("{at}: {} is not a WebAssembly component: {reason}", path.display())]
    NotComponent {
        path: PathBuf,
        at: Location,
        reason: String,
    },
    #[error("{at}: {} is a component of another world, not {}: {reason}", path.display(), world::WORLD)]
    WrongWorld {
        path: PathBuf,
        at: Location,
        reason: String,
    },
    #[error("{at}: {} was built against waio:enricher@{found}, but this waio runs waio:enricher@{} plugins: {}", path.display(), world::WIT_VERSION, world::REBUILD_HINT)]
    OtherVersion {
        path: PathBuf,
        at: Location,
        found: String,
    },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("plugin {plugin}: cannot instantiate: {reason}")]
    Instantiate { plugin: String, reason: String },
    #[error("plugin {plugin}: open failed: {message}")]
    Open { plugin: String, message: String },
}

/// A guest call that did not return normally.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct GuestTrap(pub String);

/// The process-wide engine, with its epoch ticker running.
pub fn new_engine() -> Result<Engine, PluginError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("waio-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| PluginError::Engine(e.to_string()))?;
    Ok(engine)
}

/// Limits every instance of a plugin runs under.
#[derive(Debug, Clone)]
pub struct InstanceLimits {
    pub memory_bytes: u64,
    pub call_time_limit: Duration,
}

impl InstanceLimits {
    fn epoch_ticks(&self) -> u64 {
        (self.call_time_limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

/// A loaded, type-checked plugin from which instances are made.
pub struct PluginComponent {
    name: String,
    engine: Engine,
    pre: Pre,
    limits: InstanceLimits,
    /// Imports a plugin may use besides the waio world (WASI), listed for `waio check`.
    pub imports: Vec<String>,
    /// Whether the compiled code came from the compile cache.
    pub compiled: CacheOutcome,
    /// SHA-256 of the component file, hex (checkpoints record which version held a queue).
    pub sha256: String,
}

impl PluginComponent {
    /// Reads, compiles and type-checks the component at `path`; `at` is where the manifest names it.
    pub fn load(
        engine: &Engine,
        name: &str,
        path: &Path,
        at: &Location,
        limits: InstanceLimits,
        cache: &CompileCache,
    ) -> Result<Self, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                PluginError::NotFound {
                    path: path.to_path_buf(),
                    at: at.clone(),
                }
            } else {
                PluginError::Read {
                    path: path.to_path_buf(),
                    at: at.clone(),
                    cause: source,
                }
            }
        })?;
        let not_component = |reason: String| PluginError::NotComponent {
            path: path.to_path_buf(),
            at: at.clone(),
            reason,
        };
        check_component_header(&bytes).map_err(not_component)?;
        let (component, compiled) = cache
            .load(engine, &bytes)
            .map_err(|e| not_component(format!("{e:#}")))?;
        let component_type = component.component_type();
        let imports: Vec<String> = component_type
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();

        // A plugin built against 0.1.0 runs through the adapter; one built against any other
        // version would fail type-checking with a linker error about one missing import: say
        // what it is and how to fix it instead.
        let exports = component_type.exports(engine).map(|(name, _)| name);
        let version = world::other_version(imports.iter().map(String::as_str).chain(exports));
        let contract = match version.as_deref() {
            None => Contract::Current,
            Some(compat::v0_4::WIT_VERSION) => Contract::V0_4,
            Some(compat::v0_3::WIT_VERSION) => Contract::V0_3,
            Some(compat::v0_2::WIT_VERSION) => Contract::V0_2,
            Some(compat::v0_1::WIT_VERSION) => Contract::V0_1,
            Some(_) => {
                let found = version.unwrap_or_default();
                return Err(PluginError::OtherVersion {
                    path: path.to_path_buf(),
                    at: at.clone(),
                    found,
                });
            }
        };
        let wrong_world = |reason: String| PluginError::WrongWorld {
            path: path.to_path_buf(),
            at: at.clone(),
            reason,
        };
        let mut linker: Linker<HostState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| wasi::shadow_blocking_io(&mut linker))
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let linked = match contract {
            Contract::Current => EnricherPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
                &mut linker,
                |state| state,
            ),
            Contract::V0_4 => compat::v0_4::EnricherPlugin::add_to_linker::<
                HostState,
                HasSelf<HostState>,
            >(&mut linker, |state| state),
            Contract::V0_3 => compat::v0_3::EnricherPlugin::add_to_linker::<
                HostState,
                HasSelf<HostState>,
            >(&mut linker, |state| state),
            Contract::V0_2 => compat::v0_2::EnricherPlugin::add_to_linker::<
                HostState,
                HasSelf<HostState>,
            >(&mut linker, |state| state),
            Contract::V0_1 => compat::v0_1::EnricherPlugin::add_to_linker::<
                HostState,
                HasSelf<HostState>,
            >(&mut linker, |state| state),
        };
        linked.map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| wrong_world(format!("{e:#}")))?;
        let pre = match contract {
            Contract::Current => EnricherPluginPre::new(instance_pre).map(Pre::Current),
            Contract::V0_3 => compat::v0_3::EnricherPluginPre::new(instance_pre).map(Pre::V0_3),
            Contract::V0_4 => compat::v0_4::EnricherPluginPre::new(instance_pre).map(Pre::V0_4),
            Contract::V0_2 => compat::v0_2::EnricherPluginPre::new(instance_pre).map(Pre::V0_2),
            Contract::V0_1 => compat::v0_1::EnricherPluginPre::new(instance_pre).map(Pre::V0_1),
        }
        .map_err(|e| wrong_world(format!("{e:#}")))?;
        let plugin = PluginComponent {
            name: name.to_string(),
            engine: engine.clone(),
            pre,
            limits,
            imports,
            compiled,
            sha256: cache::component_sha256(&bytes),
        };
        if let Some(note) = plugin.compat_note() {
            tracing::warn!("plugin {name} ({}): {note}", path.display());
        }
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The world the plugin was built for: this host's, or an earlier one's (run through
    /// [`compat`]).
    pub fn world(&self) -> &'static str {
        match self.pre {
            Pre::Current(_) => world::WORLD,
            Pre::V0_3(_) => compat::v0_3::WORLD,
            Pre::V0_4(_) => compat::v0_4::WORLD,
            Pre::V0_2(_) => compat::v0_2::WORLD,
            Pre::V0_1(_) => compat::v0_1::WORLD,
        }
    }

    /// What a user should know about a plugin of an older contract, if it is one.
    pub fn compat_note(&self) -> Option<String> {
        match self.pre {
            Pre::Current(_) => None,
            Pre::V0_4(_) => Some(format!(
                "built against waio:enricher@{}: runs through an adapter, with batches of one result-future per record (no invoke-columns); {}",
                compat::v0_4::WIT_VERSION,
                world::REBUILD_HINT
            )),
            Pre::V0_3(_) => Some(format!(
                "built against waio:enricher@{}: runs through an adapter (input-headers is not there for it); {}",
                compat::v0_3::WIT_VERSION,
                world::REBUILD_HINT
            )),
            Pre::V0_2(_) => Some(format!(
                "built against waio:enricher@{}: runs through an adapter, one record per call (no async-invoke-batch); {}",
                compat::v0_2::WIT_VERSION,
                world::REBUILD_HINT
            )),
            Pre::V0_1(_) => Some(format!(
                "built against waio:enricher@{}: runs through an adapter, one record per call (an unavailable endpoint reaches it as a connection failure); {}",
                compat::v0_1::WIT_VERSION,
                world::REBUILD_HINT
            )),
        }
    }

    /// A fresh instance, not yet opened.
    pub fn instantiate(&self) -> Result<PluginInstance, PluginError> {
        // No environment, arguments, files or sockets: the WASI context grants nothing but clocks,
        // randomness, and a stdout and stderr that go to the log (panic messages are written there).
        let output = GuestOutput::new(&self.name);
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .build();
        let limits = MemoryLimiter::new(self.limits.memory_bytes as usize);
        let mut store = Store::new(
            &self.engine,
            HostState::new(wasi, limits, output, self.limits.call_time_limit),
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.limits.epoch_ticks());
        store.data_mut().deadline = Some(Instant::now() + self.limits.call_time_limit);
        let instantiate_error = |reason: String| PluginError::Instantiate {
            plugin: self.name.clone(),
            reason,
        };
        // Instantiation may run guest code (start functions): keep it off any async runtime too.
        let bindings = off_runtime(|| match &self.pre {
            Pre::Current(pre) => pre.instantiate(&mut store).map(Bindings::Current),
            Pre::V0_3(pre) => pre.instantiate(&mut store).map(Bindings::V0_3),
            Pre::V0_4(pre) => pre.instantiate(&mut store).map(Bindings::V0_4),
            Pre::V0_2(pre) => pre.instantiate(&mut store).map(Bindings::V0_2),
            Pre::V0_1(pre) => pre.instantiate(&mut store).map(Bindings::V0_1),
        })
        .map_err(|e| instantiate_error(e.to_string()))?
        .map_err(|e| instantiate_error(format!("{e:#}")))?;
        store.data_mut().deadline = None;
        Ok(PluginInstance {
            store,
            bindings,
            columns: columns::empty(),
            members: Vec::new(),
            ticks: self.limits.epoch_ticks(),
            limits: self.limits.clone(),
        })
    }
}

/// Runs `work` (guest code) on a thread outside any tokio runtime when the caller is inside one.
///
/// wasmtime-wasi's synchronous bindings run their blocking calls (a write to stdout or stderr,
/// a sleep) with `Handle::block_on` on the current runtime when there is one, which panics
/// inside async code ("Cannot start a runtime from within a runtime"): `open()` is called from
/// the pipeline's async setup. Operator threads have no runtime and call directly, at no cost.
fn off_runtime<R: Send>(work: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(work());
    }
    std::thread::scope(|scope| {
        let guest = std::thread::Builder::new()
            .name("waio-guest".into())
            .spawn_scoped(scope, work)?;
        // A panic in the host code the guest called is the host's bug: pass it on.
        Ok(guest
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err("the file does not start with the WebAssembly magic bytes".into());
    }
    // Bytes 4..8: version and layer. Layer 0 is a core module, layer 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(
            "it is a core WebAssembly module; build the plugin as a component (cargo build --target wasm32-wasip2, componentize-py, jco or wasm-tools component new)"
                .into(),
        );
    }
    Ok(())
}

/// Which contract a component was built against.
#[derive(Clone, Copy)]
enum Contract {
    Current,
    V0_4,
    V0_3,
    V0_2,
    V0_1,
}

/// A type-checked plugin of this host's contract, or of an earlier one.
enum Pre {
    Current(EnricherPluginPre<HostState>),
    V0_4(compat::v0_4::EnricherPluginPre<HostState>),
    V0_3(compat::v0_3::EnricherPluginPre<HostState>),
    V0_2(compat::v0_2::EnricherPluginPre<HostState>),
    V0_1(compat::v0_1::EnricherPluginPre<HostState>),
}

/// An instance's exports, of this host's contract or of an earlier one.
enum Bindings {
    Current(EnricherPlugin),
    V0_4(compat::v0_4::EnricherPlugin),
    V0_3(compat::v0_3::EnricherPlugin),
    V0_2(compat::v0_2::EnricherPlugin),
    V0_1(compat::v0_1::EnricherPlugin),
}

/// One record of a batch call ([`function::AsyncFunction::invoke_batch`]): attempt `attempt` of
/// record `seq`, lent for the call where it stays (its origin's headers are the plugin's to ask
/// for).
#[derive(Clone, Copy, Debug)]
pub struct Invocation<'a> {
    pub seq: u64,
    pub attempt: u32,
    pub input: &'a Record,
}

/// The WIT event of a record (a copy, for the calls that take one by value).
fn event_of(input: &Record) -> Event {
    Event {
        key: input.key.clone(),
        timestamp: input.timestamp,
        payload: input.payload.clone(),
    }
}

/// One plugin instance: a store and its exports. Never called concurrently.
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Bindings,
    /// `invoke-columns`' inputs and records, kept between calls for their buffers.
    columns: bindings::EventColumns,
    members: Vec<columns::Member>,
    ticks: u64,
    limits: InstanceLimits,
}

impl PluginInstance {
    /// Runs a guest call with the CPU deadline armed and `current` naming the record served.
    /// Safe from any thread, inside an async runtime or not.
    fn call<R: Send>(
        &mut self,
        current: Option<u64>,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R> + Send,
    ) -> Result<R, GuestTrap> {
        let state = self.store.data_mut();
        state.current = current;
        state.deadline = Some(Instant::now() + self.limits.call_time_limit);
        state.output.begin_call();
        self.store.set_epoch_deadline(self.ticks);
        let (bindings, store) = (&self.bindings, &mut self.store);
        let result = off_runtime(|| f(bindings, store));
        let state = self.store.data_mut();
        state.current = None;
        state.deadline = None;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                let stderr = self.store.data().output.last_stderr_lines();
                Err(GuestTrap(describe_trap(&error, &self.limits, &stderr)))
            }
            Err(error) => Err(GuestTrap(format!(
                "cannot start a thread for the guest call: {error}"
            ))),
        }
    }

    pub fn open(&mut self, config_json: &str) -> Result<Result<(), String>, GuestTrap> {
        self.call(None, |b, s| match b {
            Bindings::Current(b) => b.waio_enricher_enricher().call_open(s, config_json),
            Bindings::V0_3(b) => b.waio_enricher_enricher().call_open(s, config_json),
            Bindings::V0_4(b) => b.waio_enricher_enricher().call_open(s, config_json),
            Bindings::V0_2(b) => b.waio_enricher_enricher().call_open(s, config_json),
            Bindings::V0_1(b) => b.waio_enricher_enricher().call_open(s, config_json),
        })
    }

    pub fn invoke(
        &mut self,
        seq: u64,
        attempt: u32,
        input: &Event,
        origin: Option<Arc<Origin>>,
    ) -> Result<(), GuestTrap> {
        self.call_with_future(seq, attempt, input, origin, |b, s, input, future| match b {
            Bindings::Current(b) => b
                .waio_enricher_enricher()
                .call_async_invoke(s, input, future),
            Bindings::V0_4(b) => b
                .waio_enricher_enricher()
                .call_async_invoke(s, input, future),
            Bindings::V0_3(b) => b
                .waio_enricher_enricher()
                .call_async_invoke(s, input, future),
            Bindings::V0_2(b) => b
                .waio_enricher_enricher()
                .call_async_invoke(s, input, future),
            Bindings::V0_1(b) => {
                b.waio_enricher_enricher()
                    .call_async_invoke(s, &input.into(), future)
            }
        })
    }

    pub fn timeout(
        &mut self,
        seq: u64,
        attempt: u32,
        input: &Event,
        origin: Option<Arc<Origin>>,
    ) -> Result<(), GuestTrap> {
        self.call_with_future(seq, attempt, input, origin, |b, s, input, future| match b {
            Bindings::Current(b) => b.waio_enricher_enricher().call_timeout(s, input, future),
            Bindings::V0_3(b) => b.waio_enricher_enricher().call_timeout(s, input, future),
            Bindings::V0_4(b) => b.waio_enricher_enricher().call_timeout(s, input, future),
            Bindings::V0_2(b) => b.waio_enricher_enricher().call_timeout(s, input, future),
            Bindings::V0_1(b) => b
                .waio_enricher_enricher()
                .call_timeout(s, &input.into(), future),
        })
    }

    /// Whether the plugin takes batches (one built against 0.1.0 or 0.2.0 does not).
    pub fn takes_batches(&self) -> bool {
        matches!(
            self.bindings,
            Bindings::Current(_) | Bindings::V0_4(_) | Bindings::V0_3(_)
        )
    }

    /// Several records in one guest call: `invoke-columns`, or for a plugin of 0.3.0 or 0.4.0
    /// `async-invoke-batch` with a fresh `result-future` each. A plugin of an earlier contract
    /// gets one `async-invoke` call per record instead; a trap there ends the loop.
    pub fn invoke_batch(&mut self, batch: &[Invocation<'_>]) -> Result<(), GuestTrap> {
        match self.bindings {
            Bindings::Current(_) => self.invoke_columns(batch),
            Bindings::V0_4(_) | Bindings::V0_3(_) => self.invoke_with_futures(batch),
            Bindings::V0_2(_) | Bindings::V0_1(_) => {
                for item in batch {
                    let origin = item.input.origin.clone();
                    let event = event_of(item.input);
                    self.invoke(item.seq, item.attempt, &event, origin)?;
                }
                Ok(())
            }
        }
    }

    /// `invoke-columns`: the batch as columns; the records it completed at once come back in its
    /// result and join the effects after those of the futures it held (see [`columns`]).
    fn invoke_columns(&mut self, batch: &[Invocation<'_>]) -> Result<(), GuestTrap> {
        let mut inputs = std::mem::replace(&mut self.columns, columns::empty());
        let mut members = std::mem::take(&mut self.members);
        columns::fill(&mut inputs, &mut members, batch).map_err(GuestTrap)?;
        self.store.data_mut().members = Some(members);
        // Until the plugin says which record it works on (`begin`), its requests are nobody's.
        let result = self.call(None, |b, s| match b {
            Bindings::Current(b) => b.waio_enricher_enricher().call_invoke_columns(s, &inputs),
            _ => Err(wasmtime::Error::msg("invoke-columns is a 0.5.0 export")),
        });
        self.columns = inputs;
        let mut members = self.store.data_mut().members.take().unwrap_or_default();
        let completions = result.and_then(|done| {
            columns::completions(done, &members).map_err(|e| {
                GuestTrap(format!(
                    "invoke-columns returned a result that does not fit its batch: {e}"
                ))
            })
        });
        // Kept for its allocation; the origins go now.
        members.clear();
        self.members = members;
        self.store
            .data_mut()
            .effects
            .completions
            .extend(completions?);
        Ok(())
    }

    /// `async-invoke-batch` of 0.3.0 and 0.4.0: a fresh `result-future` per record.
    fn invoke_with_futures(&mut self, batch: &[Invocation<'_>]) -> Result<(), GuestTrap> {
        let mut inputs = Vec::with_capacity(batch.len());
        for item in batch {
            let origin = item.input.origin.clone();
            let future = self
                .store
                .data_mut()
                .new_future(item.seq, item.attempt, origin)
                .map_err(|e| GuestTrap(format!("{e:#}")))?;
            inputs.push((event_of(item.input), future));
        }
        // Until the plugin says which record it works on (`begin`), its requests are nobody's.
        self.call(None, |b, s| match b {
            Bindings::V0_4(b) => b
                .waio_enricher_enricher()
                .call_async_invoke_batch(s, &inputs),
            Bindings::V0_3(b) => b
                .waio_enricher_enricher()
                .call_async_invoke_batch(s, &inputs),
            _ => Ok(()),
        })
    }

    /// Calls an export that takes a record and a fresh `result-future` handle for it.
    fn call_with_future(
        &mut self,
        seq: u64,
        attempt: u32,
        input: &Event,
        origin: Option<Arc<Origin>>,
        export: impl FnOnce(
                &Bindings,
                &mut Store<HostState>,
                &Event,
                Resource<FutureRef>,
            ) -> wasmtime::Result<()>
            + Send,
    ) -> Result<(), GuestTrap> {
        let future = self
            .store
            .data_mut()
            .new_future(seq, attempt, origin)
            .map_err(|e| GuestTrap(format!("{e:#}")))?;
        self.call(Some(seq), |b, s| export(b, s, input, future))
    }

    pub fn on_response(
        &mut self,
        owner: Option<u64>,
        call_id: u64,
        response: &Result<HttpResponse, HttpError>,
    ) -> Result<(), GuestTrap> {
        self.call(owner, |b, s| match b {
            Bindings::Current(b) => {
                b.waio_enricher_enricher()
                    .call_on_response(s, call_id, response.as_ref())
            }
            Bindings::V0_4(b) => {
                b.waio_enricher_enricher()
                    .call_on_response(s, call_id, response.as_ref())
            }
            Bindings::V0_3(b) => {
                b.waio_enricher_enricher()
                    .call_on_response(s, call_id, response.as_ref())
            }
            Bindings::V0_2(b) => {
                b.waio_enricher_enricher()
                    .call_on_response(s, call_id, response.as_ref())
            }
            Bindings::V0_1(b) => {
                let answer = compat::v0_1::answer(response.as_ref());
                b.waio_enricher_enricher()
                    .call_on_response(s, call_id, answer.as_ref())
            }
        })
    }

    /// The most linear memory this instance has grown to, in bytes.
    pub fn memory_used(&self) -> usize {
        self.store.data().limits.used
    }

    pub fn memory_limit(&self) -> u64 {
        self.limits.memory_bytes
    }

    pub fn close(&mut self) -> Result<(), GuestTrap> {
        self.call(None, |b, s| match b {
            Bindings::Current(b) => b.waio_enricher_enricher().call_close(s),
            Bindings::V0_3(b) => b.waio_enricher_enricher().call_close(s),
            Bindings::V0_4(b) => b.waio_enricher_enricher().call_close(s),
            Bindings::V0_2(b) => b.waio_enricher_enricher().call_close(s),
            Bindings::V0_1(b) => b.waio_enricher_enricher().call_close(s),
        })
    }

    /// Takes what the guest asked for since the last call.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.store.data_mut().effects)
    }
}

/// Frames of the wasm backtrace a trap message shows: the top ones say where; the rest is noise.
const TRAP_FRAMES: usize = 3;

/// A trap as people read it: what happened, the guest's last lines on stderr (a panic message is
/// only there for a plugin without the SDK's hook), then the top frames of the wasm backtrace.
fn describe_trap(error: &wasmtime::Error, limits: &InstanceLimits, stderr: &[String]) -> String {
    // The causes, without the backtrace (a context wasmtime wraps the trap in).
    let backtrace = error.downcast_ref::<WasmBacktrace>();
    let backtrace_text = backtrace.map(ToString::to_string);
    let cause = error
        .chain()
        .map(ToString::to_string)
        .filter(|e| Some(e) != backtrace_text.as_ref())
        .collect::<Vec<_>>()
        .join(": ");
    let mut text = if let Some(blocked) = error.downcast_ref::<wasi::BlockedTooLong>() {
        blocked.to_string()
    } else {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "plugin ran longer than call_time_limit ({}) in one call and was stopped",
                humantime::format_duration(limits.call_time_limit)
            ),
            Some(Trap::UnreachableCodeReached) => {
                format!("plugin aborted (panic or abort): {cause}")
            }
            _ if cause.contains("forcing trap when growing memory")
                || cause.contains("memory") && cause.contains("limit") =>
            {
                format!(
                    "plugin exceeded memory_limit ({} bytes): {cause}",
                    limits.memory_bytes
                )
            }
            _ => format!("plugin trapped: {cause}"),
        }
    };
    if !stderr.is_empty() {
        text.push_str("\nits last lines on stderr:");
        for line in stderr {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    if let Some(backtrace) = backtrace {
        let frames = backtrace.frames();
        if !frames.is_empty() {
            text.push_str(&format!(
                "\nwasm backtrace (top {} of {} frames):",
                frames.len().min(TRAP_FRAMES),
                frames.len()
            ));
        }
        for (i, frame) in frames.iter().take(TRAP_FRAMES).enumerate() {
            let module = frame.module().name().unwrap_or("<unknown>");
            let function = match frame.func_name() {
                Some(name) => name.to_string(),
                None => format!("<wasm function {}>", frame.func_index()),
            };
            let offset = frame
                .module_offset()
                .map(|o| format!("{o:#x} "))
                .unwrap_or_default();
            text.push_str(&format!("\n  {i}: {offset}{module}!{function}"));
        }
    }
    text
}
