"""Non-blocking HTTP through the host: `resp = await http.send(Request(...))`.

`send` starts the request at once and returns an awaitable. Several requests may be started before
the first is awaited; they run concurrently in the host.
"""

import json as _json

from wit_world.imports import http as _http
from wit_world.imports import types as _types

from ._core import Failure, _begin_current, _dumps
from ._status import is_retriable_status

_EXCERPT_BYTES = 200


class Request:
    """An outgoing request. `headers` is a dict or a list of (name, value) pairs; a value may hold
    `${secret:NAME}`, which the host fills in. `body` is bytes or str; `json=` sets a JSON body
    and its content type. `timeout_ms=None` means the host's default."""

    # Field names match the WIT record, so the host reads a Request without conversion.
    __slots__ = ("method", "url", "headers", "body", "timeout_ms")

    def __init__(self, method, url, headers=None, body=b"", timeout_ms=None, json=None):
        self.method = method
        self.url = url
        if headers is None:
            headers = []
        elif isinstance(headers, dict):
            headers = list(headers.items())
        else:
            headers = [(n, v) for n, v in headers]
        if json is not None:
            body = _dumps(json)
            if not any(n.lower() == "content-type" for n, _ in headers):
                headers.append(("content-type", "application/json"))
        if isinstance(body, str):
            body = body.encode()
        self.headers = headers
        self.body = bytes(body)
        self.timeout_ms = timeout_ms

    def header(self, name, value):
        """Adds a header; returns the request."""
        self.headers.append((name, value))
        return self


def _ok(self):
    """True for a 2xx status."""
    return 200 <= self.status < 300


def _text(self):
    """The body decoded as UTF-8."""
    return self.body.decode("utf-8", "replace")


def _json_body(self):
    """The body parsed as JSON; a body that is not JSON raises a fatal `Failure`."""
    try:
        return _json.loads(self.body)
    except ValueError as e:
        raise Failure(f"answer is not JSON: {e}") from None


def _header(self, name):
    """The first value of header `name` (case-insensitive), or None."""
    name = name.lower()
    for n, v in self.headers:
        if n.lower() == name:
            return v
    return None


def _body_excerpt(self):
    """The start of the body on one line, for error messages."""
    if not self.body:
        return "(empty body)"
    text = self.body[:_EXCERPT_BYTES].decode("utf-8", "replace")
    excerpt = " ".join(text.split())
    return excerpt + " ..." if len(self.body) > _EXCERPT_BYTES else excerpt


def _raise_for_status(self):
    """Returns self for 2xx; else raises `Failure("HTTP <status>: <body excerpt>")`, retriable
    for 408, 429 and 5xx (busy or failing server), fatal for every other status."""
    status = self.status
    if 200 <= status < 300:
        return self
    raise Failure(f"HTTP {status}: {self.body_excerpt()}", is_retriable_status(status))


# The answer is the WIT `http-response` record itself (`status`, `headers` as a list of
# (name, value) pairs, `body` bytes), given the methods above: no copy per answer.
Response = _types.HttpResponse
Response.ok = property(_ok)
Response.text = _text
Response.json = _json_body
Response.header = _header
Response.body_excerpt = _body_excerpt
Response.raise_for_status = _raise_for_status
Response.__doc__ = """The answer to a request: `status`, `headers`, `body`. Every status counts as an
answer: `raise_for_status()` turns 4xx/5xx into failures. Also `ok`, `text()`, `json()`,
`header(name)`, `body_excerpt()`."""


class HttpError(Failure):
    """Raised by `await send(...)` when a request got no answer. `kind` is "denied",
    "invalid-request", "timeout", "connection" or "unavailable" (the host failed the request fast
    because the endpoint's circuit breaker is open); the last three are retriable. Left uncaught,
    it fails the record with its message (e.g. `connection failed: ...`)."""

    def __init__(self, kind, message):
        super().__init__(message, kind in _RETRIABLE_KINDS)
        self.kind = kind


_RETRIABLE_KINDS = ("timeout", "connection", "unavailable")

# Each case of the WIT `http-error`: its kind and the start of its message (the host's wording).
_ERROR_CASES = {
    _types.HttpError_Denied: ("denied", "request denied: "),
    _types.HttpError_InvalidRequest: ("invalid-request", "invalid request: "),
    _types.HttpError_Timeout: ("timeout", "request timed out"),
    _types.HttpError_Connection: ("connection", "connection failed: "),
    _types.HttpError_Unavailable: ("unavailable", "unavailable: "),
}


def _http_error(e):
    kind, text = _ERROR_CASES[type(e)]
    return HttpError(kind, text + getattr(e, "value", ""))


class Call:
    """A request in flight. `await` it for the `Response` (or an `HttpError` raised)."""

    __slots__ = ("id", "done", "value", "error", "waiter")

    def __init__(self, id):
        self.id = id
        self.done = False
        self.value = None
        self.error = None
        self.waiter = None

    def __await__(self):
        if not self.done:
            # The SDK's driver parks the coroutine on this call and resumes it from on-response.
            yield self
        if self.error is not None:
            raise self.error
        return self.value


# call id -> Call, for requests whose answer has not arrived yet.
_calls = {}


def send(request):
    """Starts `request` now; returns an awaitable `Call` whose result is a `Response`."""
    _begin_current()
    call = Call(_http.send(request))
    _calls[call.id] = call
    return call


def get(url, headers=None, timeout_ms=None):
    """`send(Request("GET", url, ...))`."""
    return send(Request("GET", url, headers, b"", timeout_ms))


def post(url, headers=None, body=b"", timeout_ms=None, json=None):
    """`send(Request("POST", url, ...))`."""
    return send(Request("POST", url, headers, body, timeout_ms, json))
