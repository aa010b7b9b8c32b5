"""Native unit test of the SDK's `invoke-columns` export:
    python3 -m unittest discover -s sdk/python/tests
The WIT bindings exist only inside a component, so stand-ins shaped like componentize-py's take
their place: the host's side (result futures, `http.send`, `usage.report`) writes what the plugin
called into one journal, so that the order of `begin`, the user's code and the completions shows.
`completion.hold` hands out the futures of the `invoke-columns` call running, by index."""

import dataclasses
import importlib.util
import json
import pathlib
import sys
import types
import unittest

HERE = pathlib.Path(__file__).resolve().parent
SDK = HERE.parent / "waio"
MODULES = ("_status", "_core", "http", "_runtime")


class Host:
    """What the plugin called, in order."""

    def __init__(self):
        self.journal = []
        self.next_id = 100
        self.futures = None  # the records' futures while an `invoke-columns` call runs
        self.held = []  # the indices `completion.hold` was called with, in order

    def hold(self, index):
        # The real host traps outside a call or for an index not in the batch.
        assert self.futures is not None, "hold outside invoke-columns"
        assert 0 <= index < len(self.futures), f"hold({index}) in a batch of {len(self.futures)}"
        self.held.append(index)
        return self.futures[index]


def fake_bindings(host):
    ok = dataclasses.make_dataclass("Ok", [("value", object)])
    err = type("Err", (Exception,), {"__init__": lambda self, value: setattr(self, "value", value)})
    cpt = types.ModuleType("componentize_py_types")
    cpt.Ok, cpt.Err = ok, err

    wit_types = types.ModuleType("wit_world.imports.types")
    for case in ("Denied", "InvalidRequest", "Connection", "Unavailable"):
        cls = dataclasses.make_dataclass(f"HttpError_{case}", [("value", str)])
        setattr(wit_types, cls.__name__, cls)
    wit_types.HttpError_Timeout = dataclasses.make_dataclass("HttpError_Timeout", [])
    wit_types.HttpResponse = dataclasses.make_dataclass(
        "HttpResponse", [("status", int), ("headers", list), ("body", bytes)]
    )
    wit_types.Event = dataclasses.make_dataclass(
        "Event", [("key", object), ("timestamp", object), ("payload", bytes)]
    )
    wit_types.Failure = dataclasses.make_dataclass("Failure", [("kind", str), ("message", str)])
    wit_types.FailureKind = types.SimpleNamespace(FATAL="fatal", RETRIABLE="retriable")
    wit_types.TokenUsage = dataclasses.make_dataclass(
        "TokenUsage", [("model", str), ("input_tokens", int), ("output_tokens", int)]
    )
    wit_types.LogLevel = types.SimpleNamespace(TRACE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4)
    wit_types.EventColumns = dataclasses.make_dataclass(
        "EventColumns", [("payloads", bytes), ("payload_ends", list), ("keys", list), ("timestamps", list)]
    )
    wit_types.BatchCompletions = dataclasses.make_dataclass(
        "BatchCompletions", [("completed", list), ("output_ends", list), ("outputs", object), ("failed", list)]
    )
    wit_completion = types.ModuleType("wit_world.imports.completion")
    wit_completion.hold = host.hold

    def send(request):
        host.next_id += 1
        host.journal.append(("send", host.next_id, request.url))
        return host.next_id

    wit_http = types.ModuleType("wit_world.imports.http")
    wit_http.send = send
    wit_usage = types.ModuleType("wit_world.imports.usage")
    wit_usage.report = lambda usage: host.journal.append(("usage", usage.input_tokens))
    wit_logging = types.ModuleType("wit_world.imports.logging")
    wit_logging.log = lambda level, message: host.journal.append(("log", message))

    exports = types.ModuleType("wit_world.exports")
    exports.Enricher = type("Enricher", (), {})
    imports = types.ModuleType("wit_world.imports")
    imports.types, imports.http, imports.usage, imports.logging = wit_types, wit_http, wit_usage, wit_logging
    imports.completion = wit_completion
    world = types.ModuleType("wit_world")
    world.exports, world.imports = exports, imports
    return {
        "componentize_py_types": cpt,
        "wit_world": world,
        "wit_world.exports": exports,
        "wit_world.imports": imports,
        "wit_world.imports.types": wit_types,
        "wit_world.imports.completion": wit_completion,
        "wit_world.imports.http": wit_http,
        "wit_world.imports.usage": wit_usage,
        "wit_world.imports.logging": wit_logging,
    }


def load_sdk(host):
    """The SDK package on top of the stand-in bindings, as `waio_under_test`, without touching
    sys.modules for good."""
    fakes = fake_bindings(host)
    package = types.ModuleType("waio_under_test")
    package.__path__ = [str(SDK)]
    fakes["waio_under_test"] = package
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        loaded = {}
        for name in MODULES:
            spec = importlib.util.spec_from_file_location(f"waio_under_test.{name}", SDK / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            setattr(package, name, module)
            loaded[name] = module
        return types.SimpleNamespace(**loaded, types=fakes["wit_world.imports.types"], Ok=fakes["componentize_py_types"].Ok)
    finally:
        for name in MODULES:
            sys.modules.pop(f"waio_under_test.{name}", None)
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class Future:
    """The host's `result-future`: journals `begin` and the completions with the record's name."""

    def __init__(self, host, name):
        self.host = host
        self.name = name

    def begin(self):
        self.host.journal.append(("begin", self.name))

    def complete(self, outputs):
        payloads = [json.loads(o.payload) for o in outputs]
        self.host.journal.append(("complete", self.name, payloads))

    def complete_exceptionally(self, failure):
        self.host.journal.append(("fail", self.name, failure.kind, failure.message))


def payload(event):
    """An output's payload as the journal shows it: parsed JSON, else the bytes."""
    try:
        return json.loads(event.payload)
    except ValueError:
        return event.payload


class Batches(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.sdk = load_sdk(self.host)

    def event(self, name, **fields):
        return self.sdk.types.Event(f"key-{name}", 7, json.dumps({"name": name, **fields}).encode())

    def batch(self, *records):
        """[(event, future)] for records given as (name, fields) pairs."""
        return [(self.event(name, **fields), Future(self.host, name)) for name, fields in records]

    def invoke_columns(self, enricher, pairs, held=None):
        """Calls `invoke-columns` as the host does: the events as columns, their futures to be
        held by index during the call. Then reads the call's result as the host does: checks its
        offsets and indices, and journals each record it completes or fails, after the call, as
        ("complete", name, payloads) / ("fail", name, kind, message). `held`: the indices that
        must have been held (`completion.hold`), in order; [] unless given."""
        types = self.sdk.types
        ends, end = [], 0
        for event, _ in pairs:
            end += len(event.payload)
            ends.append(end)
        columns = types.EventColumns(
            b"".join(event.payload for event, _ in pairs),
            ends,
            [event.key for event, _ in pairs],
            [event.timestamp for event, _ in pairs],
        )
        self.host.futures = [future for _, future in pairs]
        del self.host.held[:]
        try:
            result = enricher.invoke_columns(columns)
        finally:
            self.host.futures = None
        self.assertEqual(self.host.held, [] if held is None else held)
        names = [future.name for _, future in pairs]
        outputs = self.events(result)
        start = 0
        for i, end in zip(result.completed, result.output_ends):
            self.assertLess(i, len(pairs))
            self.host.journal.append(("complete", names[i], [payload(o) for o in outputs[start:end]]))
            start = end
        for i, failure in result.failed:
            self.assertLess(i, len(pairs))
            self.host.journal.append(("fail", names[i], failure.kind, failure.message))
        return result

    def events(self, result):
        """The outputs of a `batch-completions` as events, after checking its columns fit."""
        columns = result.outputs
        self.assertIs(type(columns.payloads), bytes)
        self.assertEqual(len(result.completed), len(result.output_ends))
        self.assertEqual(len(columns.payload_ends), len(columns.keys))
        self.assertEqual(len(columns.payload_ends), len(columns.timestamps))
        self.assertEqual(result.output_ends, sorted(result.output_ends))
        self.assertEqual(result.output_ends[-1:], [len(columns.keys)] if result.output_ends else [])
        self.assertEqual(columns.payload_ends, sorted(columns.payload_ends))
        self.assertEqual(columns.payload_ends[-1:], [len(columns.payloads)] if columns.payload_ends else [])
        events, start = [], 0
        for key, timestamp, end in zip(columns.keys, columns.timestamps, columns.payload_ends):
            events.append(self.sdk.types.Event(key, timestamp, columns.payloads[start:end]))
            start = end
        return events

    def plugin(self, cls):
        # `run` sets `Enricher` in the class's module; give it a module of its own.
        cls.__module__ = "waio_test_app"
        sys.modules["waio_test_app"] = types.ModuleType("waio_test_app")
        self.addCleanup(sys.modules.pop, "waio_test_app", None)
        enricher = self.sdk._runtime.run(cls)()
        enricher.open("{}")
        return enricher

    def answer(self, enricher, call_id, body):
        response = self.sdk.types.HttpResponse(200, [], json.dumps(body).encode())
        enricher.on_response(call_id, self.sdk.Ok(response))

    def sent(self):
        return [entry[1] for entry in self.host.journal if entry[0] == "send"]

    def test_default_batch_begins_each_record_then_invokes_it_in_order(self):
        http = self.sdk.http
        journal = self.host.journal
        sdk = self.sdk

        class Plugin:
            async def async_invoke(self, record):
                fields = record.json()
                journal.append(("invoke", fields["name"]))
                if fields.get("later"):
                    resp = await http.get(f"http://x/{fields['name']}")
                    sdk._core.report_usage("m", resp.json()["n"], 0)
                return [record.with_json({"out": fields["name"]})]

        e = self.plugin(Plugin)
        # Only b needs the host in the call: it is held (once) and begun before its request.
        self.invoke_columns(e, self.batch(("a", {}), ("b", {"later": True}), ("c", {})), held=[1])
        self.assertEqual(
            journal,
            [
                ("invoke", "a"),
                ("invoke", "b"),
                ("begin", "b"),
                ("send", 101, "http://x/b"),
                ("invoke", "c"),
                # the call's result
                ("complete", "a", [{"out": "a"}]),
                ("complete", "c", [{"out": "c"}]),
            ],
        )
        del journal[:]
        # b goes on from its answer, in `on-response`, without a `begin` (the host knows it).
        self.answer(e, 101, {"n": 5})
        self.assertEqual(journal, [("usage", 5), ("complete", "b", [{"out": "b"}])])

    def test_columns_are_taken_apart_into_records_each_with_its_held_future(self):
        # Hand-made columns, so that the helper's own encoding cannot hide a slicing mistake:
        # keys and timestamps present or not, empty payloads first, between and last.
        records = [
            (None, None, b""),
            ("k1", 0, b"one"),
            ("", 1700000000123, b""),
            ("k3", None, b"\xff\x00three"),
            (None, 42, b"4"),
            ("k5", 5, b""),
        ]
        columns = self.sdk.types.EventColumns(
            b"one\xff\x00three4", [0, 3, 3, 10, 11, 11],
            [r[0] for r in records], [r[1] for r in records],
        )

        class Raw(Future):
            def complete(self, outputs):
                self.host.journal.append(("complete", self.name, [(o.key, o.timestamp, o.payload) for o in outputs]))

        def run(plugin):
            del self.host.journal[:]
            e = self.plugin(plugin)
            self.host.futures = [Raw(self.host, i) for i in range(len(records))]
            del self.host.held[:]
            try:
                result = e.invoke_columns(columns)
            finally:
                self.host.futures = None
            self.assertEqual(result.failed, [])
            self.assertEqual(self.host.held, [])  # every record completed in the call
            self.assertEqual(self.host.journal, [])
            outputs = self.events(result)
            self.assertEqual(result.output_ends, list(range(1, len(records) + 1)))
            return [("complete", i, [(o.key, o.timestamp, o.payload)]) for i, o in zip(result.completed, outputs)]

        class PerRecord:
            def async_invoke(self, record):
                assert type(record.payload) is bytes
                return [record]

        # Record i completes future i with exactly its own key, timestamp and payload.
        self.assertEqual(run(PerRecord), [("complete", i, [r]) for i, r in enumerate(records)])

        class WholeBatch:
            def async_invoke_batch(self, records):
                return [[r] for r in records]

        self.assertEqual(run(WholeBatch), [("complete", i, [r]) for i, r in enumerate(records)])

    def test_a_plain_def_and_outputs_keep_key_and_timestamp(self):
        outputs = []

        class Plugin:
            def async_invoke(self, record):
                out = record.with_json({"n": 1})
                outputs.append(out)
                return (out,)

        e = self.plugin(Plugin)
        self.invoke_columns(e, self.batch(("a", {}), ("b", {})))
        self.assertEqual(
            self.host.journal,
            [("complete", "a", [{"n": 1}]), ("complete", "b", [{"n": 1}])],
        )
        self.assertEqual([(o.key, o.timestamp) for o in outputs], [("key-a", 7), ("key-b", 7)])

    def test_one_records_exception_fails_only_that_record(self):
        Retriable = self.sdk._core.Retriable
        http = self.sdk.http

        class Plugin:
            async def async_invoke(self, record):
                fields = record.json()
                mode = fields.get("mode")
                if mode == "raise":
                    raise ValueError(f"boom {fields['name']}")
                if mode == "retriable":
                    raise Retriable("later, please")
                if mode == "none":
                    return None
                if mode == "raise_later":
                    await http.get("http://x/")
                    raise KeyError("gone")
                return [record.with_json({"ok": fields["name"]})]

        e = self.plugin(Plugin)
        self.invoke_columns(
            e,
            self.batch(
                ("a", {"mode": "raise"}),
                ("b", {}),
                ("c", {"mode": "retriable"}),
                ("d", {"mode": "raise_later"}),
                ("e", {"mode": "none"}),
                ("f", {}),
            ),
            held=[3],  # d, still waiting for its answer at the end of the call
        )
        [call_id] = self.sent()
        self.answer(e, call_id, {})
        done = {entry[1]: entry[2:] for entry in self.host.journal if entry[0] in ("complete", "fail")}
        self.assertEqual(
            done,
            {
                "a": ("fatal", "ValueError: boom a"),
                "b": ([{"ok": "b"}],),
                "c": ("retriable", "later, please"),
                "d": ("fatal", "KeyError: 'gone'"),
                "e": ("fatal", "TypeError: the enricher must return a list of Records, got None"),
                "f": ([{"ok": "f"}],),
            },
        )
        # Only d, which sent a request, was begun.
        begun = [entry[1] for entry in self.host.journal if entry[0] == "begin"]
        self.assertEqual(begun, ["d"])

    def test_user_batch_handler_gets_all_records_and_completes_each_future(self):
        Fatal = self.sdk._core.Fatal
        http = self.sdk.http
        seen = []

        class Plugin:
            async def async_invoke(self, record):
                raise AssertionError("a batch must not go through async_invoke")

            async def async_invoke_batch(self, records):
                seen.append([(r.key, r.json()["name"]) for r in records])
                # One request for the whole batch, its answer fanned out.
                resp = await http.post("http://x/embed", json=[r.json()["name"] for r in records])
                vectors = resp.json()
                results = []
                for record, vector in zip(records, vectors):
                    if vector is None:
                        results.append(Fatal(f"no vector for {record.json()['name']}"))
                    elif vector == "skip":
                        results.append([])
                    else:
                        results.append([record.with_json({"v": vector})])
                return results

        e = self.plugin(Plugin)
        # Every record still to complete at the end of the call is held, in order.
        self.invoke_columns(e, self.batch(("a", {}), ("b", {}), ("c", {}), ("d", {})), held=[0, 1, 2, 3])
        self.assertEqual(seen, [[("key-a", "a"), ("key-b", "b"), ("key-c", "c"), ("key-d", "d")]])
        # No `begin`: the request serves no single record.
        self.assertEqual(self.host.journal, [("send", 101, "http://x/embed")])
        self.answer(e, 101, [[1, 2], None, "skip", [3]])
        self.assertEqual(
            self.host.journal[1:],
            [
                ("complete", "a", [{"v": [1, 2]}]),
                ("fail", "b", "fatal", "no vector for b"),
                ("complete", "c", []),
                ("complete", "d", [{"v": [3]}]),
            ],
        )

    def test_user_batch_handler_failures_fail_every_record(self):
        class Plugin:
            def async_invoke(self, record):
                return []

            async def async_invoke_batch(self, records):
                mode = records[0].json()["mode"]
                if mode == "raise":
                    raise RuntimeError("batch down")
                if mode == "short":
                    return [[]]
                return None

        e = self.plugin(Plugin)
        for mode, message in [
            ("raise", "RuntimeError: batch down"),
            ("short", "TypeError: async_invoke_batch returned 1 results for 2 records"),
            ("none", "TypeError: async_invoke_batch must return a list with one result per record, got None"),
        ]:
            del self.host.journal[:]
            self.invoke_columns(e, self.batch(("a", {"mode": mode}), ("b", {})))
            self.assertEqual(
                self.host.journal, [("fail", "a", "fatal", message), ("fail", "b", "fatal", message)], mode
            )

    def test_a_plain_def_batch_handler_and_a_single_record_as_a_batch_of_one(self):
        calls = []

        class Plugin:  # no async_invoke: single records (retries) are batches of one
            def async_invoke_batch(self, records):
                calls.append(len(records))
                return [[r.with_json({"n": len(records)})] for r in records]

        e = self.plugin(Plugin)
        self.invoke_columns(e, self.batch(("a", {}), ("b", {})))
        [(event, future)] = self.batch(("c", {}))
        e.async_invoke(event, future)
        self.assertEqual(calls, [2, 1])
        self.assertEqual(
            self.host.journal,
            [("complete", "a", [{"n": 2}]), ("complete", "b", [{"n": 2}]), ("complete", "c", [{"n": 1}])],
        )

    def test_a_batch_completed_at_once_makes_no_host_call_and_returns_exact_columns(self):
        Retriable = self.sdk._core.Retriable
        Record = self.sdk._core.Record

        class Plugin:
            def async_invoke(self, record):
                name = record.json()["name"]
                if name == "none":
                    return []
                if name == "two":
                    return [Record("k2", 12, b"22"), Record(None, None, b"")]
                if name == "fail":
                    raise Retriable("busy")
                if name == "bad":
                    return [Record("k", 1, b"ok"), Record("k", 1, "not bytes")]
                return [Record(None, -5, b"one")]

        e = self.plugin(Plugin)
        result = self.invoke_columns(
            e, self.batch(("none", {}), ("two", {}), ("fail", {}), ("bad", {}), ("one", {}))
        )
        self.assertEqual(self.host.held, [])
        self.assertEqual(
            [entry for entry in self.host.journal if entry[0] not in ("complete", "fail")], []
        )
        types = self.sdk.types
        self.assertEqual(
            result,
            types.BatchCompletions(
                [0, 1, 4],
                [0, 2, 3],
                types.EventColumns(b"22one", [2, 2, 5], ["k2", None, None], [12, None, -5]),
                [
                    (2, types.Failure("retriable", "busy")),
                    (3, types.Failure("fatal", "TypeError: the enricher must return a list of "
                                               "Records: an output's payload must be bytes, not str")),
                ],
            ),
        )

    def test_the_user_batch_handler_completing_at_once_holds_nothing(self):
        class Plugin:
            def async_invoke_batch(self, records):
                return [[r, r] if i else ValueError("no") for i, r in enumerate(records)]

        e = self.plugin(Plugin)
        result = self.invoke_columns(e, self.batch(("a", {}), ("b", {})))
        self.assertEqual(result.completed, [1])
        self.assertEqual(result.output_ends, [2])
        self.assertEqual(result.outputs.keys, ["key-b", "key-b"])
        self.assertEqual(result.outputs.timestamps, [7, 7])
        self.assertEqual(result.failed, [(0, self.sdk.types.Failure("fatal", "ValueError: no"))])
        self.assertEqual(self.host.held, [])

    def test_a_record_that_reports_usage_or_asks_headers_is_held_alone(self):
        sdk = self.sdk

        class Plugin:
            def async_invoke(self, record):
                name = record.json()["name"]
                if name == "u":
                    sdk._core.report_usage("m", 3, 4)
                    sdk._core.report_usage("m", 5, 6)  # one begin per record
                if name == "h":
                    record.headers()
                return [record.with_json({"out": name})]

        class HeaderFuture(Future):
            def input_headers(self):
                self.host.journal.append(("input-headers", self.name))
                return []

        e = self.plugin(Plugin)
        pairs = self.batch(("a", {}), ("u", {}), ("b", {}))
        pairs.insert(3, (self.event("h"), HeaderFuture(self.host, "h")))
        pairs.append((self.event("c"), Future(self.host, "c")))
        result = self.invoke_columns(e, pairs, held=[1, 3])
        # Held records complete through their handle, during the call; the others in the result.
        self.assertEqual(
            self.host.journal,
            [
                ("begin", "u"),
                ("usage", 3),
                ("usage", 5),
                ("complete", "u", [{"out": "u"}]),
                ("input-headers", "h"),
                ("complete", "h", [{"out": "h"}]),
                ("complete", "a", [{"out": "a"}]),
                ("complete", "b", [{"out": "b"}]),
                ("complete", "c", [{"out": "c"}]),
            ],
        )
        self.assertEqual(result.completed, [0, 2, 4])

    def test_a_future_kept_past_its_call_never_takes_a_later_call_for_its_own(self):
        http = self.sdk.http
        kept = {}

        class Plugin:
            async def async_invoke(self, record):
                name = record.json()["name"]
                kept[name] = record._source  # the record's future, as the SDK holds it
                if name == "late":
                    await http.get("http://x/")
                if name == "second":
                    # Futures of the first call, completed in the call and kept, or held.
                    kept["early"].complete([record.with_json({"again": 1})])
                    kept["late"].complete([record.with_json({"from": "second"})])
                    # Its headers are out of reach (its call ended): no `hold` of this call's record 0.
                    assert kept["early"].input_headers() == []
                return [record.with_json({"out": name})]

        e = self.plugin(Plugin)
        first = self.invoke_columns(e, self.batch(("early", {}), ("late", {})), held=[1])
        self.assertEqual(first.completed, [0])
        del self.host.journal[:]
        second = self.invoke_columns(e, self.batch(("second", {})))
        # early's second completion reaches nothing (first wins anyway); late's goes through its
        # handle, not into the second call's result.
        self.assertEqual(second.completed, [0])
        self.assertEqual(second.output_ends, [1])
        self.assertEqual(
            self.host.journal,
            [("complete", "late", [{"from": "second"}]), ("complete", "second", [{"out": "second"}])],
        )
        del self.host.journal[:]
        self.answer(e, 101, {})
        self.assertEqual(self.host.journal, [("complete", "late", [{"out": "late"}])])

    def test_code_resumed_after_the_call_begins_no_record(self):
        http = self.sdk.http
        sdk = self.sdk

        class Plugin:
            async def async_invoke(self, record):
                if record.json()["name"] == "b":
                    await sdk._runtime.never()  # kept, held at the end, never begun
                resp = await http.get("http://x/" + record.json()["name"])
                sdk._core.report_usage("m", resp.json()["n"], 0)
                return []

        e = self.plugin(Plugin)
        self.invoke_columns(e, self.batch(("a", {}), ("b", {})), held=[0, 1])
        self.assertEqual(self.host.journal, [("begin", "a"), ("send", 101, "http://x/a")])
        del self.host.journal[:]
        # In on-response the host knows the record: no `begin` (of b, the last record of the call).
        self.answer(e, 101, {"n": 1})
        self.assertEqual(self.host.journal, [("usage", 1), ("complete", "a", [])])

    def test_a_class_without_either_handler_is_refused(self):
        class Plugin:
            pass

        with self.assertRaises(TypeError):
            self.sdk._runtime.run(Plugin)


if __name__ == "__main__":
    unittest.main()
