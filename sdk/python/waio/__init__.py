"""waio SDK for Python: write an enricher as a plain class with `async def async_invoke`.

    import waio
    from waio import http, Request

    class Lookup:
        def open(self, config):
            self.url = config["url"]

        async def async_invoke(self, record):
            resp = await http.send(Request("GET", self.url))
            return [record.with_json({**record.json(), "answer": resp.raise_for_status().text()})]

    waio.run(Lookup)
"""

from . import http
from ._core import Failure, Fatal, Record, Retriable, log, report_usage
from ._runtime import never, run
from .http import HttpError, Request, Response

__all__ = [
    "Failure",
    "Fatal",
    "HttpError",
    "Record",
    "Request",
    "Response",
    "Retriable",
    "http",
    "log",
    "never",
    "report_usage",
    "run",
]
