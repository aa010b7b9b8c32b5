//! The glue between the WIT exports and an [`Enricher`]: the plugin value, the pending HTTP
//! callbacks keyed by call-id, and the record whose code is running (for the panic hook).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::PanicHookInfo;
use std::rc::Rc;
use std::sync::Once;

use crate::bindings::waio::enricher::completion::ResultFuture as WitResultFuture;
use crate::bindings::waio::enricher::types::{
    BatchCompletions, CallId, Event as WitEvent, EventColumns, HttpError as WitHttpError,
    HttpRequest as WitHttpRequest, HttpResponse as WitHttpResponse, TokenUsage,
};
use crate::bindings::waio::enricher::{http as wit_http, usage};
use crate::http::{HttpError, Response};
use crate::{columns, Config, Enricher, Event, Failure, ResultFuture};

/// [`Enricher`] without `Sized`, so the plugin value can live in a thread-local.
trait Plugin {
    fn invoke(&self, input: Event, output: ResultFuture);
    fn invoke_batch(&self, batch: Vec<(Event, ResultFuture)>);
    fn timeout(&self, input: Event, output: ResultFuture);
    fn close(&self);
}

impl<T: Enricher> Plugin for T {
    fn invoke(&self, input: Event, output: ResultFuture) {
        Enricher::invoke(self, input, output)
    }
    fn invoke_batch(&self, batch: Vec<(Event, ResultFuture)>) {
        Enricher::invoke_batch(self, batch)
    }
    fn timeout(&self, input: Event, output: ResultFuture) {
        Enricher::timeout(self, input, output)
    }
    fn close(&self) {
        Enricher::close(self)
    }
}

type Callback = Box<dyn FnOnce(Result<Response, HttpError>)>;

struct Pending {
    then: Callback,
    /// The record whose code sent the request, so a panic in `then` fails that record.
    record: Option<ResultFuture>,
}

thread_local! {
    /// Inside `invoke-columns`: the host learns which record is served only from `begin`.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
    /// The record the host was last told of with `begin` in this batch call.
    static BEGUN: RefCell<Option<ResultFuture>> = const { RefCell::new(None) };
    static PLUGIN: RefCell<Option<Rc<dyn Plugin>>> = const { RefCell::new(None) };
    static CURRENT: RefCell<Option<ResultFuture>> = const { RefCell::new(None) };
    static PENDING: RefCell<HashMap<CallId, Pending>> = RefCell::new(HashMap::new());
}

fn plugin() -> Option<Rc<dyn Plugin>> {
    // Cloned out of the cell so plugin code never runs while the cell is borrowed.
    PLUGIN.with(|p| p.borrow().clone())
}

/// Runs `f` with `record` as the current record, then restores the previous one.
fn with_current<R>(record: Option<ResultFuture>, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.replace(record));
    let result = f();
    CURRENT.with(|c| c.replace(previous));
    result
}

fn current() -> Option<ResultFuture> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The `open` export: installs the panic hook and makes the plugin value.
pub fn open<T: Enricher>(config: String) -> Result<(), String> {
    install_panic_hook();
    let config = Config::parse(&config)?;
    let plugin: Rc<dyn Plugin> = Rc::new(T::open(config)?);
    PLUGIN.with(|p| p.replace(Some(plugin)));
    Ok(())
}

/// The `async-invoke` export.
pub fn async_invoke(input: WitEvent, output: WitResultFuture) {
    let output = ResultFuture::from_host(output);
    match plugin() {
        Some(plugin) => with_current(Some(output.clone()), || plugin.invoke(input.into(), output)),
        None => output.fail(Failure::fatal("async-invoke called before open")),
    }
}

/// The `invoke-columns` export: the records as columns, each with a future that is only its
/// index until it needs more (see [`crate::columns`]). What completes before the call returns
/// goes back in its result.
pub fn invoke_columns(inputs: EventColumns) -> BatchCompletions {
    let call = columns::begin_call(inputs.payload_ends.len(), inputs.payloads.len());
    let batch: Vec<(Event, ResultFuture)> = columns::events(inputs)
        .enumerate()
        .map(|(index, input)| (input, ResultFuture::in_call(call, index as u32)))
        .collect();
    // The SDK's own clones, to tell at the end which futures the plugin kept.
    let futures: Vec<ResultFuture> = batch.iter().map(|(_, f)| f.clone()).collect();
    match plugin() {
        Some(plugin) => {
            IN_BATCH.with(|b| b.set(true));
            with_current(None, || plugin.invoke_batch(batch));
            IN_BATCH.with(|b| b.set(false));
            BEGUN.with(|b| b.replace(None));
        }
        None => {
            for (_, output) in batch {
                output.fail(Failure::fatal("invoke-columns called before open"));
            }
        }
    }
    for future in futures {
        future.end_of_call();
    }
    columns::end_call()
}

/// [`Enricher::invoke_batch`]'s default: each record through `invoke`, as its own record (its
/// requests and usage are its own, and a panic fails it). An `invoke_batch` that serves only
/// some batches itself hands the others here.
pub fn invoke_each<T: Enricher>(plugin: &T, batch: Vec<(Event, ResultFuture)>) {
    for (input, output) in batch {
        with_current(Some(output.clone()), || plugin.invoke(input, output));
    }
}

/// Inside a batch, tells the host which record the request or usage about to be made is for,
/// once per record and only for records that make one: a record that completes at once costs
/// no `begin` call.
fn begin_current() {
    if !IN_BATCH.with(Cell::get) {
        return;
    }
    let Some(record) = current() else {
        return;
    };
    let told = BEGUN.with(|b| b.borrow().as_ref().is_some_and(|r| r.same_record(&record)));
    if !told {
        record.begin();
        BEGUN.with(|b| b.replace(Some(record)));
    }
}

/// The `timeout` export.
pub fn timeout(input: WitEvent, output: WitResultFuture) {
    let output = ResultFuture::from_host(output);
    match plugin() {
        Some(plugin) => with_current(Some(output.clone()), || {
            plugin.timeout(input.into(), output)
        }),
        None => output.fail(Failure::retriable("timed out")),
    }
}

/// The `on-response` export: runs the callback registered for `id`.
pub fn on_response(id: CallId, response: Result<WitHttpResponse, WitHttpError>) {
    let Some(Pending { then, record }) = PENDING.with(|p| p.borrow_mut().remove(&id)) else {
        crate::log::debug(format!("ignored the answer to unknown request {id}"));
        return;
    };
    let response = response.map(Response::from).map_err(HttpError::from);
    with_current(record, || then(response));
}

/// The `close` export: closes and drops the plugin value.
pub fn close() {
    if let Some(plugin) = PLUGIN.with(|p| p.borrow_mut().take()) {
        plugin.close();
    }
}

pub(crate) fn send(request: WitHttpRequest, then: Callback) {
    begin_current();
    let record = current();
    let id = wit_http::send(&request);
    // The host never answers inside `send`, so registering afterwards is safe.
    PENDING.with(|p| p.borrow_mut().insert(id, Pending { then, record }));
}

/// Reports tokens used by one model call on behalf of the record being processed, for the
/// host's cost accounting and token budgets.
pub fn report_usage(model: &str, input_tokens: u32, output_tokens: u32) {
    begin_current();
    usage::report(&TokenUsage {
        model: model.to_string(),
        input_tokens,
        output_tokens,
    });
}

/// On wasm32-wasip2 a panic aborts (a trap), so unwinding cannot reach the export. Instead the
/// hook fails the current record before the abort: the host sees the failure, then the trap.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            fail_current_record(info);
            previous(info);
        }));
    });
}

fn fail_current_record(info: &PanicHookInfo<'_>) {
    // try_* because the panic may come from inside a borrow or during thread-local teardown.
    let record = CURRENT
        .try_with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
        .ok()
        .flatten();
    if let Some(record) = record {
        if !record.is_done() {
            record.fail_now(Failure::fatal(format!(
                "plugin panicked: {}",
                describe_panic(info)
            )));
        }
    }
}

fn describe_panic(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    match info.location() {
        Some(at) => format!("{message} at {}:{}:{}", at.file(), at.line(), at.column()),
        None => message.to_string(),
    }
}
