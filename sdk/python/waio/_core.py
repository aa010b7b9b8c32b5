"""Records, failures, token usage and logging: the parts of the SDK that are not HTTP."""

import json as _json

from wit_world.imports import logging as _logging
from wit_world.imports import types as _types
from wit_world.imports import usage as _usage

_FATAL = _types.FailureKind.FATAL
_RETRIABLE = _types.FailureKind.RETRIABLE
_dumps = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = _json.loads


def _record_json(self):
    """The payload parsed as JSON; a payload that is not JSON raises `Fatal`."""
    try:
        return _loads(self.payload)
    except ValueError as e:
        raise Fatal(f"record payload is not JSON: {e}") from None


def _record_text(self):
    """The payload decoded as UTF-8."""
    return self.payload.decode("utf-8", "replace")


def _record_with_json(self, value):
    """A new record with the same key and timestamp and `value` as its JSON payload."""
    return Record(self.key, self.timestamp, _dumps(value).encode())


def _record_with_payload(self, payload):
    """A new record with the same key and timestamp and `payload` (bytes or str)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return Record(self.key, self.timestamp, payload)


def _record_headers(self):
    """The input record's headers as `(name, bytes)` pairs in the order they came (a name may
    repeat): a Kafka record's headers; `[]` for records of other sources and records the plugin
    made. The first call asks the host (a record that never asks pays nothing); call it before
    the record is completed."""
    known = self.__dict__.get("_headers")
    if known is None:
        source = self.__dict__.get("_source")
        known = [] if source is None else [(n, bytes(v)) for n, v in source.input_headers()]
        self._headers = known
    return known


def _record_header(self, name):
    """The value (bytes) of the first input header named `name` (compared exactly), or None."""
    for n, value in self.headers():
        if n == name:
            return value
    return None


# `Record(key, timestamp, payload)` is the WIT `event` record itself, given the methods above:
# the host's records reach the user without a copy and outputs go back without a conversion.
Record = _types.Event
Record.json = _record_json
Record.text = _record_text
Record.with_json = _record_with_json
Record.with_payload = _record_with_payload
Record.headers = _record_headers
Record.header = _record_header
Record.__doc__ = """One stream record: `key` (str or None), `timestamp` (ms or None), `payload` (bytes).

`Record(key, timestamp, payload)`; `json()`, `text()`, and `with_json(value)` /
`with_payload(bytes_or_str)`, which keep the key and timestamp (outputs should keep them);
`headers()` and `header(name)`, the input's headers (Kafka).
"""


class Failure(Exception):
    """Raise it to fail the record with exactly `message` (no exception name in front).

    `retriable=True` means a retry may succeed (rate limits, server errors, timeouts).
    Any other uncaught exception fails the record as fatal with `"ExceptionType: message"`.
    """

    def __init__(self, message, retriable=False):
        super().__init__(message)
        self.message = str(message)
        self.retriable = bool(retriable)


class Retriable(Failure):
    """A failure a retry may fix."""

    def __init__(self, message):
        super().__init__(message, True)


class Fatal(Failure):
    """A failure a retry cannot fix."""

    def __init__(self, message):
        super().__init__(message, False)


class _Serving:
    """Inside `invoke-columns`, which record the code running now serves: the host learns it only
    from `result-future.begin`, which the SDK calls lazily, just before a request is sent or usage
    reported on that record's behalf (a record that completes at once costs no host call)."""

    __slots__ = ("current", "begun")

    def __init__(self):
        self.current = None  # the future of the record whose per-record code runs now, if any
        self.begun = None  # the record the host was last told of with `begin` in this call


_serving = _Serving()


def _begin_current():
    """Before a request or a usage report: tells the host which record of the running batch it
    is for, once per record (nothing outside a batch's per-record code)."""
    current = _serving.current
    if current is not None and current is not _serving.begun:
        _serving.begun = current
        current.begin()


def report_usage(model, input_tokens, output_tokens):
    """Reports tokens used for the record being processed (for cost metrics and budgets)."""
    _begin_current()
    _usage.report(_types.TokenUsage(str(model), _u32(input_tokens), _u32(output_tokens)))


def _u32(n):
    n = int(n)
    return 0 if n < 0 else (0xFFFFFFFF if n > 0xFFFFFFFF else n)


class _Log:
    """`waio.log.info("...")`: lines in the host's log."""

    __slots__ = ()

    @staticmethod
    def trace(message):
        _logging.log(_types.LogLevel.TRACE, str(message))

    @staticmethod
    def debug(message):
        _logging.log(_types.LogLevel.DEBUG, str(message))

    @staticmethod
    def info(message):
        _logging.log(_types.LogLevel.INFO, str(message))

    @staticmethod
    def warn(message):
        _logging.log(_types.LogLevel.WARN, str(message))

    @staticmethod
    def error(message):
        _logging.log(_types.LogLevel.ERROR, str(message))


log = _Log()
