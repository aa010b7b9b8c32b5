"""Native unit test of the SDK's status rule against the shared table:
    python3 -m unittest discover -s sdk/python/tests
The module is loaded by path: the package itself imports the WIT bindings, which exist only
inside a component."""

import importlib.util
import pathlib
import unittest

HERE = pathlib.Path(__file__).resolve().parent
TABLE = HERE.parent.parent.parent / "wit" / "retriable-statuses.txt"


def load_status_module():
    spec = importlib.util.spec_from_file_location("waio_status", HERE.parent / "waio" / "_status.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def listed(status):
    for line in TABLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        low, _, high = line.partition("-")
        if int(low) <= status <= int(high or low):
            return True
    return False


class RetriableStatus(unittest.TestCase):
    def test_the_rule_is_the_shared_table(self):
        rule = load_status_module().is_retriable_status
        for status in range(100, 700):
            self.assertEqual(rule(status), listed(status), f"status {status}")


if __name__ == "__main__":
    unittest.main()
