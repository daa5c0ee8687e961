"""deploy/docker/*.Dockerfile: multi-stage, non-root, healthchecked, only the service's packages.

No Docker engine runs here, so images are not built; these checks read the Dockerfiles and
check every path they copy against the repository.
"""

from __future__ import annotations

import re

import pytest
from deploy_tools import DEPLOY, ROOT, SERVICES, TORCH_SERVICES

DOCKER = DEPLOY / "docker"
OWN_LIBS = {
    "gateway": {"libs/core", "libs/models"},
    "trainer": {"libs/core", "libs/models", "libs/demo-kb"},
    "rag": {"libs/core"},
    "judge": {"libs/core"},
    "ingest": {"libs/core"},
    "hitl": {"libs/core"},
}


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("svc", sorted(SERVICES))
def test_dockerfile_is_multi_stage_non_root_and_healthchecked(svc: str) -> None:
    steps = _instructions((DOCKER / f"{svc}.Dockerfile").read_text())
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) == 2
    assert stages[0].endswith("AS builder")
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][1] :]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    users = [rest for word, rest in runtime if word == "USER"]
    assert users == ["raftloop"]
    check = next(rest for word, rest in runtime if word == "HEALTHCHECK")
    assert f"http://127.0.0.1:{SERVICES[svc]}/healthz" in check
    command = next(rest for word, rest in runtime if word == "CMD")
    assert f'"raftloop_{svc}.main:build"' in command
    assert f'"{SERVICES[svc]}"' in command


@pytest.mark.parametrize("svc", sorted(SERVICES))
def test_dockerfile_installs_only_its_own_packages(svc: str) -> None:
    steps = _instructions((DOCKER / f"{svc}.Dockerfile").read_text())
    copied = {rest.split()[0] for word, rest in steps if word == "COPY" and "--from" not in rest}
    for path in copied:
        assert (ROOT / path).exists(), f"{svc}.Dockerfile copies {path}, which does not exist"
    packages = {p for p in copied if p.startswith(("libs/", "services/"))}
    assert packages == OWN_LIBS[svc] | {f"services/{svc}"}
    installs_torch = any("torch==" in rest for word, rest in steps if word == "RUN")
    assert installs_torch == (svc in TORCH_SERVICES)
    if installs_torch:
        assert (
            "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
            in (DOCKER / f"{svc}.Dockerfile").read_text()
        )


@pytest.mark.parametrize("svc", sorted(SERVICES))
def test_service_package_that_pulls_torch_is_marked_as_such(svc: str) -> None:
    """The torch set above follows the services' declared dependencies."""
    deps = (ROOT / "services" / svc / "pyproject.toml").read_text()
    heavy = any(name in deps for name in ("raftloop-models", "sentence-transformers", "peft"))
    assert heavy == (svc in TORCH_SERVICES)


def test_cli_image_for_the_topic_job_has_no_service() -> None:
    steps = _instructions((DOCKER / "cli.Dockerfile").read_text())
    copied = {rest.split()[0] for word, rest in steps if word == "COPY" and "--from" not in rest}
    assert copied == {"constraints.txt", "libs/core", "libs/cli"}
    assert ("USER", "raftloop") in steps


@pytest.mark.parametrize("svc", sorted([*SERVICES, "cli"]))
def test_every_install_but_torchs_goes_through_the_lockfile(svc: str) -> None:
    """The image resolves what `make install` and CI resolve: the repository's constraints.txt."""
    steps = _instructions((DOCKER / f"{svc}.Dockerfile").read_text())
    assert ("COPY", "constraints.txt /src/constraints.txt") in steps
    installs = [rest for word, rest in steps if word == "RUN" and rest.startswith("pip install")]
    assert installs
    for rest in installs:
        if '"torch==' not in rest:
            assert rest.startswith("pip install -c /src/constraints.txt "), rest
