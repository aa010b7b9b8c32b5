//! What the host gives a plugin instance: the store's data and the WIT imports.
//!
//! Guest calls never act on the pipeline directly. Every import (complete, send, report) only
//! records an [`Effects`] entry; the operator drains them after the guest call returns. That keeps
//! the operator free of re-entrancy and makes "first completion wins" a plain state check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::waio::enricher::{completion, http, logging, types, usage};
use super::bindings::{Event, Failure, HttpRequest, LogLevel, TokenUsage};
use super::columns::Member;
use super::function::{Output, OutputList};
use super::output::GuestOutput;
use super::wasi::GuestIo;
use crate::record::Origin;

/// The host side of one `result-future` handle: which record, which attempt, and where the
/// record came from (a Kafka record's headers, for `input-headers`).
#[derive(Debug)]
pub struct FutureRef {
    pub seq: u64,
    pub attempt: u32,
    pub origin: Option<Arc<Origin>>,
}

/// A record's result as the plugin reported it (each output without the event time the plugin
/// may have given it: outputs take their input's).
#[derive(Debug)]
pub struct Completion {
    pub seq: u64,
    pub attempt: u32,
    pub result: Result<OutputList, Failure>,
}

/// A request the plugin asked the host to send.
#[derive(Debug)]
pub struct OutgoingCall {
    pub id: u64,
    /// The record whose code sent it, if any.
    pub owner: Option<u64>,
    pub request: HttpRequest,
}

/// Everything a guest call asked for, in call order per kind.
#[derive(Debug, Default)]
pub struct Effects {
    pub completions: Vec<Completion>,
    pub calls: Vec<OutgoingCall>,
    pub usage: Vec<(Option<u64>, TokenUsage)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.completions.is_empty() && self.calls.is_empty() && self.usage.is_empty()
    }
}

/// Caps an instance's linear memory and remembers the most it has used, so the operator can
/// replace an instance that keeps growing (a leaking guest runtime) before it hits the cap.
pub struct MemoryLimiter {
    limit: usize,
    /// The largest size any memory of the instance has grown to.
    pub(super) used: usize,
}

impl MemoryLimiter {
    pub(super) fn new(limit: usize) -> Self {
        MemoryLimiter { limit, used: 0 }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            // A trap rather than a failed grow: most guest allocators abort on failure anyway,
            // and a trap names the cause.
            wasmtime::bail!(
                "forcing trap when growing memory to {desired} bytes: memory_limit is {} bytes",
                self.limit
            );
        }
        self.used = self.used.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }
}

/// The data of one plugin instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: MemoryLimiter,
    /// The record whose code is running (set around every guest call that serves a record).
    pub(super) current: Option<u64>,
    /// The records of the `invoke-columns` call running now, for `hold` (`None` outside one).
    pub(super) members: Option<Vec<Member>>,
    next_call_id: u64,
    pub(super) effects: Effects,
    /// Its log calls, stdout and stderr.
    pub(super) output: GuestOutput,
    /// When the running guest call must end (`call_time_limit` after it began): blocking WASI
    /// calls give up then.
    pub(super) deadline: Option<Instant>,
    call_time_limit: Duration,
}

impl HostState {
    pub(super) fn new(
        wasi: WasiCtx,
        limits: MemoryLimiter,
        output: GuestOutput,
        call_time_limit: Duration,
    ) -> Self {
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            current: None,
            members: None,
            next_call_id: 1,
            effects: Effects::default(),
            output,
            deadline: None,
            call_time_limit,
        }
    }

    /// `wasi:io` with this instance's deadline (see `super::wasi`).
    pub(super) fn guest_io(&mut self) -> GuestIo<'_> {
        GuestIo::new(&mut self.table, self.deadline, self.call_time_limit)
    }

    pub(super) fn new_future(
        &mut self,
        seq: u64,
        attempt: u32,
        origin: Option<Arc<Origin>>,
    ) -> wasmtime::Result<Resource<FutureRef>> {
        Ok(self.table.push(FutureRef {
            seq,
            attempt,
            origin,
        })?)
    }

    fn finish(
        &mut self,
        handle: &Resource<FutureRef>,
        result: Result<Vec<Event>, Failure>,
    ) -> wasmtime::Result<()> {
        let future = self.table.get(handle)?;
        let completion = Completion {
            seq: future.seq,
            attempt: future.attempt,
            result: result.map(|events| {
                events
                    .into_iter()
                    .map(|e| Output {
                        key: e.key,
                        payload: e.payload,
                    })
                    .collect()
            }),
        };
        self.effects.completions.push(completion);
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl completion::Host for HostState {
    fn hold(&mut self, index: u32) -> wasmtime::Result<Resource<FutureRef>> {
        let Some(members) = &self.members else {
            wasmtime::bail!("completion.hold({index}) called outside invoke-columns");
        };
        let Some(member) = members.get(index as usize) else {
            wasmtime::bail!(
                "completion.hold({index}): the running invoke-columns call has {} records",
                members.len()
            );
        };
        let (seq, attempt, origin) = (member.seq, member.attempt, member.origin.clone());
        self.new_future(seq, attempt, origin)
    }
}

impl completion::HostResultFuture for HostState {
    fn complete(
        &mut self,
        handle: Resource<FutureRef>,
        outputs: Vec<Event>,
    ) -> wasmtime::Result<()> {
        self.finish(&handle, Ok(outputs))
    }

    fn complete_exceptionally(
        &mut self,
        handle: Resource<FutureRef>,
        error: Failure,
    ) -> wasmtime::Result<()> {
        self.finish(&handle, Err(error))
    }

    fn begin(&mut self, handle: Resource<FutureRef>) -> wasmtime::Result<()> {
        // Requests and usage from now on are this record's (see `current`).
        self.current = Some(self.table.get(&handle)?.seq);
        Ok(())
    }

    fn input_headers(
        &mut self,
        handle: Resource<FutureRef>,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        let future = self.table.get(&handle)?;
        Ok(future
            .origin
            .as_ref()
            .map(|origin| origin.headers.clone())
            .unwrap_or_default())
    }

    fn drop(&mut self, handle: Resource<FutureRef>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl http::Host for HostState {
    fn send(&mut self, request: HttpRequest) -> wasmtime::Result<u64> {
        let id = self.next_call_id;
        self.next_call_id += 1;
        self.effects.calls.push(OutgoingCall {
            id,
            owner: self.current,
            request,
        });
        Ok(id)
    }
}

impl usage::Host for HostState {
    fn report(&mut self, usage: TokenUsage) -> wasmtime::Result<()> {
        self.effects.usage.push((self.current, usage));
        Ok(())
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        // Escaped, prefixed with the operator and capped per instance (see `super::output`).
        self.output.log(level, &message);
        Ok(())
    }
}
