//! WASI's blocking calls, bounded by the guest call's deadline.
//!
//! wasmtime-wasi's synchronous `wasi:io` (`poll`, `pollable.block`, blocking stream reads and
//! writes) waits as long as the guest asks: a plugin that sleeps 10 s held its operator thread
//! for 10 s, and one that slept forever hung the job, because the epoch deadline
//! (`call_time_limit`) only interrupts guest code, not a host call. These definitions shadow
//! wasmtime-wasi's: each wait runs the same (async) implementation but gives up when the call's
//! deadline passes, and the call traps with [`BlockedTooLong`]. The non-blocking functions are
//! passed through unchanged.

use std::future::Future;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;

use super::host::HostState;

/// A blocking WASI call was still waiting when the guest call's time was up.
#[derive(Debug, thiserror::Error)]
#[error("plugin ran longer than call_time_limit ({}) in one call and was stopped: it was blocked in WASI's {call} (a sleep or a wait; a plugin must not block)", humantime::format_duration(*.limit))]
pub struct BlockedTooLong {
    pub call: &'static str,
    pub limit: Duration,
}

/// `wasi:io` for one instance: its resource table and the current call's deadline.
pub struct GuestIo<'a> {
    table: &'a mut ResourceTable,
    deadline: Option<Instant>,
    limit: Duration,
}

impl<'a> GuestIo<'a> {
    pub fn new(table: &'a mut ResourceTable, deadline: Option<Instant>, limit: Duration) -> Self {
        GuestIo {
            table,
            deadline,
            limit,
        }
    }
}

struct GuestIoData;

impl HasData for GuestIoData {
    type Data<'a> = GuestIo<'a>;
}

/// Replaces wasmtime-wasi's `wasi:io/poll` and `wasi:io/streams` in `linker` (which must already
/// hold them, from `wasmtime_wasi::p2::add_to_linker_sync`) by the bounded ones.
pub fn shadow_blocking_io(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<HostState, GuestIoData>(linker, HostState::guest_io)?;
    streams::add_to_linker::<HostState, GuestIoData>(linker, HostState::guest_io)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `wait` (one of wasmtime-wasi's async implementations) until the deadline at most.
fn bounded<F: Future>(
    deadline: Option<Instant>,
    limit: Duration,
    call: &'static str,
    wait: F,
) -> Result<F::Output, BlockedTooLong> {
    // in_tokio runs it on wasmtime-wasi's own runtime: guest calls never run inside one of ours
    // (see `PluginInstance::call`).
    in_tokio(async move {
        match deadline {
            None => Ok(wait.await),
            Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), wait)
                .await
                .map_err(|_| BlockedTooLong { call, limit }),
        }
    })
}

fn stream_trap(blocked: BlockedTooLong) -> StreamError {
    StreamError::Trap(blocked.into())
}

impl poll::Host for GuestIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let wait = async_poll::Host::poll(&mut *self.table, pollables);
        bounded(self.deadline, self.limit, "wasi:io/poll.poll", wait)?
    }
}

impl poll::HostPollable for GuestIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Never waits, but needs a runtime (a clock's pollable is a tokio timer).
        let check = async_poll::HostPollable::ready(&mut *self.table, pollable);
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/poll.pollable.ready",
            check,
        )?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let wait = async_poll::HostPollable::block(&mut *self.table, pollable);
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/poll.pollable.block",
            wait,
        )?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

impl streams::Host for GuestIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(async_streams::Host::convert_stream_error(&mut *self.table, err)?.into())
    }
}

impl streams::HostOutputStream for GuestIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        let close = async_streams::HostOutputStream::drop(&mut *self.table, stream);
        bounded(self.deadline, self.limit, "output-stream drop", close)?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        async_streams::HostOutputStream::check_write(&mut *self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        async_streams::HostOutputStream::write(&mut *self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let wait = async_streams::HostOutputStream::blocking_write_and_flush(
            &mut *self.table,
            stream,
            bytes,
        );
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/streams.output-stream.blocking-write-and-flush",
            wait,
        )
        .map_err(stream_trap)?
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let wait = async_streams::HostOutputStream::blocking_write_zeroes_and_flush(
            &mut *self.table,
            stream,
            len,
        );
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/streams.output-stream.blocking-write-zeroes-and-flush",
            wait,
        )
        .map_err(stream_trap)?
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostOutputStream::subscribe(&mut *self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        async_streams::HostOutputStream::write_zeroes(&mut *self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        async_streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        let wait = async_streams::HostOutputStream::blocking_flush(&mut *self.table, stream);
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/streams.output-stream.blocking-flush",
            wait,
        )
        .map_err(stream_trap)?
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        async_streams::HostOutputStream::splice(&mut *self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let wait =
            async_streams::HostOutputStream::blocking_splice(&mut *self.table, dst, src, len);
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/streams.output-stream.blocking-splice",
            wait,
        )
        .map_err(stream_trap)?
    }
}

impl streams::HostInputStream for GuestIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        let close = async_streams::HostInputStream::drop(&mut *self.table, stream);
        bounded(self.deadline, self.limit, "input-stream drop", close)?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        async_streams::HostInputStream::read(&mut *self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        let wait = async_streams::HostInputStream::blocking_read(&mut *self.table, stream, len);
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/streams.input-stream.blocking-read",
            wait,
        )
        .map_err(stream_trap)?
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        async_streams::HostInputStream::skip(&mut *self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        let wait = async_streams::HostInputStream::blocking_skip(&mut *self.table, stream, len);
        bounded(
            self.deadline,
            self.limit,
            "wasi:io/streams.input-stream.blocking-skip",
            wait,
        )
        .map_err(stream_trap)?
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostInputStream::subscribe(&mut *self.table, stream)
    }
}
