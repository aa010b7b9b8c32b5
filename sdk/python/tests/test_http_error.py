"""Native unit test of how the SDK turns the WIT `http-error` cases into `HttpError`:
    python3 -m unittest discover -s sdk/python/tests
The WIT bindings exist only inside a component, so stand-ins shaped like componentize-py's
(one dataclass per case, `value` holding the text) take their place."""

import dataclasses
import importlib.util
import pathlib
import sys
import types
import unittest

HERE = pathlib.Path(__file__).resolve().parent
SDK = HERE.parent / "waio"


def wit_types():
    module = types.ModuleType("wit_world.imports.types")
    for case in ("Denied", "InvalidRequest", "Connection", "Unavailable"):
        cls = dataclasses.make_dataclass(f"HttpError_{case}", [("value", str)])
        setattr(module, cls.__name__, cls)
    module.HttpError_Timeout = dataclasses.make_dataclass("HttpError_Timeout", [])
    module.HttpResponse = dataclasses.make_dataclass(
        "HttpResponse", [("status", int), ("headers", list), ("body", bytes)]
    )
    module.Event = dataclasses.make_dataclass("Event", [("key", object), ("timestamp", object), ("payload", bytes)])
    module.FailureKind = types.SimpleNamespace(FATAL="fatal", RETRIABLE="retriable")
    return module


def load_http_module():
    """The SDK's `http` module on top of the stand-in bindings, without touching sys.modules for
    good."""
    fakes = {
        "wit_world": types.ModuleType("wit_world"),
        "wit_world.imports": types.ModuleType("wit_world.imports"),
        "wit_world.imports.types": wit_types(),
        "wit_world.imports.http": types.ModuleType("wit_world.imports.http"),
        "wit_world.imports.logging": types.ModuleType("wit_world.imports.logging"),
        "wit_world.imports.usage": types.ModuleType("wit_world.imports.usage"),
    }
    for name in ("types", "http", "logging", "usage"):
        setattr(fakes["wit_world.imports"], name, fakes[f"wit_world.imports.{name}"])
    package = types.ModuleType("waio_under_test")
    package.__path__ = [str(SDK)]
    fakes["waio_under_test"] = package
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        for name in ("_status", "_core", "http"):
            spec = importlib.util.spec_from_file_location(f"waio_under_test.{name}", SDK / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        return module, fakes["wit_world.imports.types"]
    finally:
        for name in ("_status", "_core", "http"):
            sys.modules.pop(f"waio_under_test.{name}", None)
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class HttpErrors(unittest.TestCase):
    def setUp(self):
        self.http, self.wit = load_http_module()

    def test_every_case_keeps_its_kind_text_and_retriability(self):
        w = self.wit
        for case, kind, message, retriable in [
            (w.HttpError_Denied("host x not allowed"), "denied", "request denied: host x not allowed", False),
            (w.HttpError_InvalidRequest("bad url"), "invalid-request", "invalid request: bad url", False),
            (w.HttpError_Timeout(), "timeout", "request timed out", True),
            (w.HttpError_Connection("refused"), "connection", "connection failed: refused", True),
            (
                w.HttpError_Unavailable("circuit breaker open for https://api.example.com"),
                "unavailable",
                "unavailable: circuit breaker open for https://api.example.com",
                True,
            ),
        ]:
            error = self.http._http_error(case)
            self.assertIsInstance(error, self.http.HttpError)
            self.assertEqual((error.kind, error.message, error.retriable), (kind, message, retriable))
            self.assertEqual(str(error), message)


if __name__ == "__main__":
    unittest.main()
