"""The function-length ratchet's decisions (pure logic) and the tree against its record."""

from __future__ import annotations

from pathlib import Path

from . import function_length as fl


def test_a_new_long_function_a_grown_one_and_a_stale_record_each_fail() -> None:
    found = {"a.py::new": 70, "b.py::grown": 90, "c.py::same": 65}
    recorded = {"b.py::grown": 80, "c.py::same": 65, "d.py::fixed": 61}
    failures = fl.problems(found, recorded)
    assert [f.split(":")[0] for f in failures] == ["a.py", "b.py", "d.py"]
    assert "split it into named steps" in failures[0]
    assert "grew from 80 to 90" in failures[1]
    assert "delete its line" in failures[2]


def test_a_function_that_shrank_but_is_still_long_passes() -> None:
    assert fl.problems({"a.py::f": 61}, {"a.py::f": 99}) == []


def test_nested_functions_and_methods_are_measured_by_qualified_name(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(62))
    source = f"class K:\n    def m(self):\n        def inner():\n            pass\n{body}\n"
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert dict(fl.long_functions(path, root=tmp_path)) == {"probe.py::K.m": 65}


def test_the_tree_keeps_the_ratchet() -> None:
    assert fl.problems(fl.measure(), fl.read_baseline()) == []
