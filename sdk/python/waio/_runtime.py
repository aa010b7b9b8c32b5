"""Drives the user's coroutines without an event loop and exports them as the WIT `enricher`.

A record's coroutine runs until it awaits a `Call` (an HTTP request in flight); it is parked on
that call and resumed from `on-response` when the answer with the call's id arrives. Returning a
list completes the record; raising fails it.

`invoke-columns` takes the batch apart into records, each with a `_Future` that is only its index
in the running call (no host handle), and runs for each record the same path as `async-invoke`,
unless the user's class has its own `async_invoke_batch`: then one coroutine serves the whole
batch and a `_Batch` stands in for the record's future, fanning its list of results out to the
records' futures. A record completed or failed while its call runs goes into the call's result
(`batch-completions`), with no host call. A record takes a host handle (`completion.hold`) only
when it needs the host during the call: its headers, or a request or usage report on its behalf
(preceded by `result-future.begin`); its later completion goes through that handle. At the end of
the call every record not completed or failed by then is held, to be completed later (from
`on-response`) through its handle.
"""

import json as _json
import sys as _sys
import types as _pytypes

from componentize_py_types import Err, Ok
from wit_world import exports as _exports
from wit_world.imports import completion as _completion
from wit_world.imports import types as _types

from . import http as _http_mod
from ._core import _FATAL, _RETRIABLE, Failure, _serving
from .http import Call, _http_error

_calls = _http_mod._calls

_Coroutine = _pytypes.CoroutineType
_Failure = _types.Failure
_TIMED_OUT = _Failure(_RETRIABLE, "timed out")


class _Never:
    """Awaited by `waio.never()`: the record is left uncompleted (until its timeout)."""

    __slots__ = ()

    def __await__(self):
        yield self


_NEVER = _Never()


def never():
    """`await waio.never()` leaves the record uncompleted; the host's timeout decides."""
    return _NEVER


def _failure(e):
    if isinstance(e, Failure):
        return _Failure(_RETRIABLE if e.retriable else _FATAL, e.message)
    text = str(e)
    name = type(e).__name__
    return _Failure(_FATAL, f"{name}: {text}" if text else name)


def _fail(future, e):
    try:
        future.complete_exceptionally(_failure(e))
    except BaseException as e2:  # never let it trap the instance
        future.complete_exceptionally(_Failure(_FATAL, f"{type(e2).__name__}: {e2}"))


def _complete(future, outputs):
    if type(outputs) is not list:
        if type(future) is _Batch:  # off the hot path: only a batch's non-list result lands here
            future.complete(outputs)
            return
        if isinstance(outputs, (tuple, list)):
            outputs = list(outputs)
        else:
            what = "None" if outputs is None else type(outputs).__name__
            future.complete_exceptionally(
                _Failure(_FATAL, f"TypeError: the enricher must return a list of Records, got {what}")
            )
            return
    try:
        future.complete(outputs)
    except BaseException as e:
        future.complete_exceptionally(
            _Failure(_FATAL, f"TypeError: the enricher must return a list of Records: {e}")
        )


def _step(coro, future):
    """Runs `coro` until it finishes or waits for an answer."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        _complete(future, stop.value)
        return
    except BaseException as e:
        _fail(future, e)
        return
    if type(waiting) is Call:
        if waiting.done:
            # Cannot happen with Call.__await__, but keep the coroutine going if it does.
            return _step(coro, future)
        waiting.waiter = (coro, future)
    elif waiting is _NEVER:
        coro.close()
    else:
        coro.close()
        future.complete_exceptionally(
            _Failure(
                _FATAL,
                f"TypeError: awaited {type(waiting).__name__}; a waio enricher can await only "
                "waio.http calls (there is no asyncio event loop)",
            )
        )


def _begin(handler, input, output):
    """Calls the user's `async_invoke` or `timeout` and drives the coroutine it returns; an
    exception raised before the first await fails the record like any other."""
    try:
        result = handler(input)
    except BaseException as e:
        _fail(output, e)
        return
    _start(result, output)


def _begin_record(handler, input, output):
    """`_begin` for one record, which can then ask for its headers (`Record.headers`)."""
    input._source = output
    _begin(handler, input, output)


def _start(result, future):
    if type(result) is _Coroutine or hasattr(result, "send"):
        _step(result, future)
    else:  # a plain `def` returning its outputs
        _complete(future, result)


class _Batch:
    """Stands in for a record's future while the user's `async_invoke_batch` serves many: its
    result (a list with one entry per record) completes each record's own future."""

    __slots__ = ("futures",)

    def __init__(self, futures):
        self.futures = futures

    def complete(self, results):
        futures = self.futures
        if type(results) is not list:
            if isinstance(results, (tuple, list)):
                results = list(results)
            else:
                what = "None" if results is None else type(results).__name__
                self.complete_exceptionally(
                    _Failure(
                        _FATAL,
                        "TypeError: async_invoke_batch must return a list with one result per "
                        f"record, got {what}",
                    )
                )
                return
        if len(results) != len(futures):
            self.complete_exceptionally(
                _Failure(
                    _FATAL,
                    f"TypeError: async_invoke_batch returned {len(results)} results for "
                    f"{len(futures)} records",
                )
            )
            return
        for future, result in zip(futures, results):
            if isinstance(result, BaseException):
                _fail(future, result)
            else:
                _complete(future, result)

    def complete_exceptionally(self, failure):
        for future in self.futures:
            future.complete_exceptionally(failure)


def _invoke_batch(handler, inputs):
    """Calls the user's `async_invoke_batch` with the batch's records and drives the coroutine it
    returns: one coroutine, one `_Batch` for all the records' futures."""
    if not inputs:
        return
    for input, output in inputs:
        input._source = output  # for `Record.headers`
    records = [input for input, _ in inputs]
    _begin(handler, records, _Batch([output for _, output in inputs]))


class _Call:
    """The result of the `invoke-columns` call running now, built up as its records complete:
    the `batch-completions` columns. `running` turns false when the call returns, so that a
    future kept past its call never takes a later call for its own."""

    __slots__ = ("running", "completed", "output_ends", "payloads", "payload_ends", "keys",
                 "timestamps", "failed")

    def __init__(self):
        self.running = True
        self.completed = []
        self.output_ends = []
        self.payloads = bytearray()
        self.payload_ends = []
        self.keys = []
        self.timestamps = []
        self.failed = []

    def complete(self, index, outputs):
        """Record `index` completed with `outputs`. Raises TypeError for an output that is not a
        `Record` and then appends nothing: the call's result must always lower."""
        for o in outputs:
            key = o.key
            timestamp = o.timestamp
            payload = o.payload
            if key is not None and type(key) is not str:
                raise TypeError(f"an output's key must be a str or None, not {type(key).__name__}")
            if timestamp is not None and (
                not isinstance(timestamp, int) or not -(1 << 63) <= timestamp < (1 << 63)
            ):
                raise TypeError(f"an output's timestamp must be an int (ms) or None, not {timestamp!r}")
            if type(payload) is not bytes and not isinstance(payload, (bytes, bytearray, memoryview)):
                raise TypeError(f"an output's payload must be bytes, not {type(payload).__name__}")
        payloads = self.payloads
        payload_ends = self.payload_ends
        keys = self.keys
        timestamps = self.timestamps
        for o in outputs:
            payloads += o.payload
            payload_ends.append(len(payloads))
            keys.append(o.key)
            timestamps.append(o.timestamp)
        self.completed.append(index)
        self.output_ends.append(len(keys))

    def result(self):
        return _types.BatchCompletions(
            self.completed,
            self.output_ends,
            _types.EventColumns(bytes(self.payloads), self.payload_ends, self.keys, self.timestamps),
            self.failed,
        )


class _Future:
    """A record's future in an `invoke-columns` call: record `index` of `call`, with no host
    handle until it needs one (`completion.hold`, taken once and kept). Shaped like the host's
    `result-future`."""

    __slots__ = ("index", "call", "handle", "done")

    def __init__(self, call, index):
        self.index = index
        self.call = call
        self.handle = None
        self.done = False

    def _host(self):
        """The record's host handle, held now if its call still runs; None for a record whose
        call ended without it held (it was completed or failed then: nothing can reach it)."""
        handle = self.handle
        if handle is None and self.call.running:
            handle = self.handle = _completion.hold(self.index)
        return handle

    def complete(self, outputs):
        # Every call goes on, even after the first: "first completion wins" is the host's rule.
        self.done = True
        handle = self.handle
        if handle is None:
            call = self.call
            if call.running:
                call.complete(self.index, outputs)
            return
        handle.complete(outputs)

    def complete_exceptionally(self, failure):
        self.done = True
        handle = self.handle
        if handle is None:
            call = self.call
            if call.running:
                call.failed.append((self.index, failure))
            return
        handle.complete_exceptionally(failure)

    def begin(self):
        handle = self._host()
        if handle is not None:
            handle.begin()

    def input_headers(self):
        handle = self._host()
        return [] if handle is None else handle.input_headers()


def _records(inputs, call):
    """The `(event, future)` pairs of an `invoke-columns` batch: each payload sliced out of the
    shared bytes by its end offset, each future record `i` of `call`, not held."""
    payloads = inputs.payloads
    event = _types.Event
    future = _Future
    keys = inputs.keys
    timestamps = inputs.timestamps
    pairs = []
    start = 0
    for i, end in enumerate(inputs.payload_ends):
        pairs.append((event(keys[i], timestamps[i], payloads[start:end]), future(call, i)))
        start = end
    return pairs


def _end_call(call, pairs):
    """At the end of `invoke-columns`: holds every record neither completed nor failed yet (the
    plugin may complete it later; holding one it dropped only keeps the record until its timeout,
    as a dropped future does), ends the call and returns its result."""
    _serving.current = None
    _serving.begun = None
    try:
        hold = _completion.hold
        for _, future in pairs:
            if future.handle is None and not future.done:
                future.handle = hold(future.index)
    finally:
        call.running = False
    return call.result()


def _make_adapter(cls):
    """The class componentize-py instantiates for the exported `enricher` interface."""

    has_timeout = getattr(cls, "timeout", None) is not None
    has_invoke = getattr(cls, "async_invoke", None) is not None
    has_batch = getattr(cls, "async_invoke_batch", None) is not None
    # componentize-py may create a fresh `Enricher` for every call, so the state lives here.
    state = {}
    invoke = None
    invoke_batch = None
    on_timeout = None

    class Enricher(_exports.Enricher):
        def open(self, config):
            nonlocal invoke, invoke_batch, on_timeout
            try:
                user = cls()
                opened = getattr(user, "open", None)
                if opened is not None:
                    opened(_json.loads(config) if config else {})
            except BaseException as e:
                raise Err(_failure(e).message)
            state["user"] = user
            invoke = user.async_invoke if has_invoke else None
            invoke_batch = user.async_invoke_batch if has_batch else None
            on_timeout = user.timeout if has_timeout else None

        if has_invoke:

            def async_invoke(self, input, output):
                _begin_record(invoke, input, output)

        else:  # only a batch handler: a single record (a retry, ...) is a batch of one

            def async_invoke(self, input, output):
                _invoke_batch(invoke_batch, [(input, output)])

        if has_batch:

            def invoke_columns(self, inputs):
                # No `begin`: the user's requests serve the batch, no single record.
                call = _Call()
                pairs = _records(inputs, call)
                try:
                    _invoke_batch(invoke_batch, pairs)
                finally:
                    result = _end_call(call, pairs)
                return result

        else:

            def invoke_columns(self, inputs):
                # For each record, exactly what `async_invoke` does (`_begin` and `_start`
                # inlined, their globals held in locals), with the record as the one served, so
                # that a request or usage report on its behalf is preceded by its `begin`.
                handler = invoke
                fail = _fail
                step = _step
                complete = _complete
                coroutine = _Coroutine
                serving = _serving
                call = _Call()
                pairs = _records(inputs, call)
                try:
                    for input, output in pairs:
                        serving.current = output
                        input._source = output  # for `Record.headers`
                        try:
                            result = handler(input)
                        except BaseException as e:
                            fail(output, e)
                            continue
                        if type(result) is coroutine or hasattr(result, "send"):
                            step(result, output)
                        else:  # a plain `def` returning its outputs
                            complete(output, result)
                finally:
                    result = _end_call(call, pairs)
                return result

        def timeout(self, input, output):
            if on_timeout is None:
                output.complete_exceptionally(_TIMED_OUT)
                return
            _begin_record(on_timeout, input, output)

        def on_response(self, id, response):
            call = _calls.pop(id, None)
            if call is None:
                return
            if type(response) is Ok:
                call.value = response.value
            else:
                call.error = _http_error(response.value)
            call.done = True
            waiter = call.waiter
            if waiter is not None:
                call.waiter = None
                _step(*waiter)

        def close(self):
            closer = getattr(state.get("user"), "close", None)
            if closer is not None:
                try:
                    closer()
                except BaseException:
                    pass

    Enricher.__qualname__ = f"Enricher[{cls.__qualname__}]"
    return Enricher


def run(cls):
    """Exports `cls` as this component's enricher. Call it once, at the end of the app module:

        waio.run(MyEnricher)

    `cls()` is created in `open`; it has `open(self, config)` (optional, `config` is a dict),
    `async def async_invoke(self, record)` returning a list of `Record`s, optional
    `async def timeout(self, record)` and optional `close(self)`.

    Optional `async def async_invoke_batch(self, records)` serves a whole batch in one coroutine
    (one request for many records): it returns a list with one entry per record, a list of
    `Record`s to complete it or an exception to fail it; raising fails every record of the batch.
    Without it a batch runs `async_invoke` for each record; without `async_invoke` a single
    record is a batch of one.
    """
    if getattr(cls, "async_invoke", None) is None and getattr(cls, "async_invoke_batch", None) is None:
        raise TypeError(
            f"{cls.__name__} has no async_invoke(self, record) or async_invoke_batch(self, records) method"
        )
    adapter = _make_adapter(cls)
    # componentize-py looks for a class named `Enricher` in the app module.
    module = _sys.modules.get(cls.__module__)
    if module is not None:
        module.Enricher = adapter
    return adapter
