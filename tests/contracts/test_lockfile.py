"""constraints.txt, the lockfile, covers every declared dependency and satisfies its range (#19).

`make install`, CI and the Dockerfiles install through it. A dependency added to a pyproject
without `make lock` would be resolved freshly on each machine; this test names it instead.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "constraints.txt"
PYPROJECTS = sorted([*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")])
OURS = {canonicalize_name(tomllib.loads(p.read_text())["project"]["name"]) for p in PYPROJECTS}


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared() -> list[tuple[str, Requirement]]:
    """(where, requirement) for every third-party requirement of every lib and service."""
    found: list[tuple[str, Requirement]] = []
    for path in PYPROJECTS:
        project = tomllib.loads(path.read_text())["project"]
        where = str(path.relative_to(ROOT))
        extras = project.get("optional-dependencies", {})
        for spec in [*project.get("dependencies", []), *extras.get("test", [])]:
            found.append((where, Requirement(spec)))
    for line in (ROOT / "dev-requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            found.append(("dev-requirements.txt", Requirement(line)))
    return [(w, r) for w, r in found if canonicalize_name(r.name) not in OURS]


def test_the_lockfile_pins_only_exact_versions_and_no_project_package() -> None:
    pins = _locked()
    assert pins, "constraints.txt is empty: run `make lock`"
    assert not OURS & pins.keys(), "the lockfile must not pin the project's own packages"
    assert str(pins["torch"]) == "2.13.0", "torch stays at the local CPU wheel's 2.13.0"


@pytest.mark.parametrize(
    ("where", "requirement"), _declared(), ids=lambda v: str(v) if isinstance(v, str) else ""
)
def test_every_declared_dependency_is_locked_within_its_range(
    where: str, requirement: Requirement
) -> None:
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"{requirement} does not apply on this platform")
    pins = _locked()
    name = canonicalize_name(requirement.name)
    assert name in pins, (
        f"{where} needs {requirement}, which constraints.txt lacks: run `make lock`"
    )
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"{where} needs {requirement}, but constraints.txt pins {pins[name]}: run `make lock`"
    )
