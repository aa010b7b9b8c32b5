"""waio conformance plugin in Python: each record's JSON payload chooses the behaviour.

Config: {"echo_url": "http://127.0.0.1:PORT/echo"}. Record fields: `id`, `mode` (now, later,
fail, never, raise, raise_later, headers), `results`, `delay_ms`, `on_timeout` (fail, fallback), `tokens`, `log`,
`message`. See docs/specs/LANGUAGES.md, "CONFORMANCE PROTOCOL".
"""

import waio
from waio import Fatal, Retriable, http


class Conform:
    def open(self, config):
        self.echo_url = config.get("echo_url")

    async def async_invoke(self, record):
        fields = record.json()
        rid = fields.get("id")
        tokens = fields.get("tokens")
        if tokens is not None:
            waio.report_usage("conform", tokens, tokens)
        if isinstance(fields.get("log"), str):
            waio.log.info(fields["log"])
        mode = fields.get("mode", "now")
        if mode == "now":
            return outputs(record, rid, fields)
        if mode == "later" or mode == "raise_later":
            if not self.echo_url:
                raise Fatal("mode needs `echo_url` in the plugin config")
            try:
                await http.get(f"{self.echo_url}?delay_ms={fields.get('delay_ms', 0)}")
            except waio.HttpError as e:
                raise Retriable(e.message) from None
            if mode == "raise_later":
                raise ValueError(f"boom {rid}")
            return outputs(record, rid, fields)
        if mode == "fail":
            raise Fatal(fields.get("message") or "failed on purpose")
        if mode == "never":
            await waio.never()
        if mode == "raise":
            raise ValueError(f"boom {rid}")
        if mode == "headers":
            headers = [[n, v.decode("utf-8", "replace")] for n, v in record.headers()]
            return [record.with_json({"id": rid, "headers": headers})]
        raise Fatal(f'unknown mode "{mode}"')

    async def timeout(self, record):
        fields = record.json()
        if fields.get("on_timeout", "fail") == "fallback":
            return [record.with_json({"id": fields.get("id"), "fallback": True})]
        raise Retriable("timed out")


def outputs(record, rid, fields):
    return [record.with_json({"id": rid, "n": n}) for n in range(fields.get("results", 1))]


waio.run(Conform)
