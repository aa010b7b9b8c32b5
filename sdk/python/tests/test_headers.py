"""Native unit test of `Record.headers()` / `Record.header(name)`: a record handed to the user's
code asks its own result-future for the input's headers (once), in every path that hands records
over: `async_invoke`, `invoke-columns` (the default and the user's `async_invoke_batch`) and
`timeout`. Reuses the
stand-in bindings of test_batch.py."""

import unittest

from test_batch import Batches, Future, Host, load_sdk


class HeadersFuture(Future):
    """A result-future whose record came with `headers`; journals each `input-headers` call."""

    def __init__(self, host, name, headers):
        super().__init__(host, name)
        self.headers = headers

    def input_headers(self):
        self.host.journal.append(("input-headers", self.name))
        return list(self.headers)


class Headers(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.sdk = load_sdk(self.host)

    event = Batches.event
    plugin = Batches.plugin
    invoke_columns = Batches.invoke_columns
    events = Batches.events

    def batch(self, *records):
        """[(event, future)] for records given as (name, headers) pairs."""
        return [
            (self.event(name), HeadersFuture(self.host, name, headers)) for name, headers in records
        ]

    def test_each_record_sees_its_own_headers_asked_once(self):
        class Plugin:
            def async_invoke(self, record):
                first = record.headers()
                assert record.headers() is first  # asked of the host once
                return [record.with_json({"headers": [[n, v.decode()] for n, v in first],
                                          "trace": (record.header("trace") or b"").decode(),
                                          "missing": record.header("missing")})]

        e = self.plugin(Plugin)
        # Asking for headers holds the record (once), and its completion goes through that handle.
        self.invoke_columns(e, self.batch(("a", [("trace", b"t-1"), ("trace", b"t-2")]), ("b", [])), held=[0, 1])
        done = [entry for entry in self.host.journal if entry[0] == "complete"]
        self.assertEqual(
            done,
            [
                ("complete", "a", [{"headers": [["trace", "t-1"], ["trace", "t-2"]],
                                    "trace": "t-1", "missing": None}]),
                ("complete", "b", [{"headers": [], "trace": "", "missing": None}]),
            ],
        )
        self.assertEqual(
            [entry for entry in self.host.journal if entry[0] == "input-headers"],
            [("input-headers", "a"), ("input-headers", "b")],
        )

    def test_headers_in_a_batch_handler_timeout_and_made_records(self):
        seen = []

        class Plugin:
            def async_invoke_batch(self, records):
                seen.extend(r.header("id") for r in records)
                made = records[0].with_json({})
                seen.append(made.headers())  # a record the plugin made has none
                return [[] for _ in records]

            def timeout(self, record):
                seen.append(record.header("id"))
                return []

        e = self.plugin(Plugin)
        self.invoke_columns(e, self.batch(("a", [("id", b"1")]), ("b", [("id", b"2")])), held=[0, 1])
        e.timeout(self.event("c"), HeadersFuture(self.host, "c", [("id", b"3")]))
        self.assertEqual(seen, [b"1", b"2", [], b"3"])

    def test_a_record_that_does_not_ask_costs_no_call(self):
        class Plugin:
            def async_invoke(self, record):
                return [record]

        e = self.plugin(Plugin)
        e.async_invoke(self.event("a"), HeadersFuture(self.host, "a", [("x", b"y")]))
        self.assertNotIn("input-headers", [entry[0] for entry in self.host.journal])

if __name__ == "__main__":
    unittest.main()
