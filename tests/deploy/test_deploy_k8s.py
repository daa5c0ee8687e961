"""deploy/k8s: the overlays render with kustomize and every object passes a schema check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # ships no type information
from deploy_tools import DEPLOY, SERVICES, run, tool, used

from raftloop_core.testing import require_module
from raftloop_core.topics import TOPIC_SPECS, Topic

pytestmark = pytest.mark.integration

K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
WORKLOADS = {"Deployment", "StatefulSet"}


def _render(overlay: str) -> list[dict[str, Any]]:
    done = run(tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """One overlay rendered by `kubectl kustomize` (kustomize built into kubectl)."""
    return _render(request.param)


def _by_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in kinds]


def test_manifests_pass_the_kubernetes_schema(rendered: list[dict[str, Any]]) -> None:
    kv = require_module(
        "kubernetes_validate", "pip install kubernetes-validate (bundled schemas, offline)"
    )
    version = kv.latest_version()
    used("kubernetes-validate", f"{kv.version.__version__}, schemas of Kubernetes {version}")
    checked = 0
    for doc in rendered:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked structurally below, kubernetes-validate has no schema for it
        kv.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 15


def test_every_workload_has_probes_and_resources(rendered: list[dict[str, Any]]) -> None:
    workloads = {doc["metadata"]["name"]: doc for doc in _by_kind(rendered, *WORKLOADS)}
    assert {f"raftloop-{svc}" for svc in SERVICES} <= set(workloads)
    for name, doc in workloads.items():
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["resources"]["requests"]["memory"], name
        assert container["resources"]["limits"]["memory"], name
        assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_no_credentials_in_the_manifests(rendered: list[dict[str, Any]]) -> None:
    assert not _by_kind(rendered, "Secret"), "Secrets are created by the operator, never shipped"
    for doc in _by_kind(rendered, *WORKLOADS, "CronJob", "Job"):
        spec = doc["spec"].get("jobTemplate", {}).get("spec", doc["spec"])
        for container in spec["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if any(w in env["name"] for w in ("KEY", "SECRET", "PASSWORD", "DATABASE_URL")):
                    assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]
    config = _by_kind(rendered, "ConfigMap")[0]["data"]
    assert config["RAFTLOOP_MODE"] == "production"
    assert config["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert config["KAFKA_REPLICATION_FACTOR"] == "3"


def test_judge_and_ingest_scale_on_their_consumer_lag(rendered: list[dict[str, Any]]) -> None:
    from raftloop_ingest.settings import IngestSettings
    from raftloop_judge.settings import JudgeSettings

    groups = {
        "raftloop-judge": (JudgeSettings().consumer_group, Topic.INTERACTION_INGESTED),
        "raftloop-ingest": (IngestSettings().group_id, Topic.CHAT_COMPLETED),
    }
    deployments = {doc["metadata"]["name"] for doc in _by_kind(rendered, "Deployment")}
    scaled = {
        doc["spec"]["scaleTargetRef"]["name"]: doc for doc in _by_kind(rendered, "ScaledObject")
    }
    assert set(scaled) == set(groups)
    for target, doc in scaled.items():
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        assert target in deployments
        (trigger,) = doc["spec"]["triggers"]
        group, topic = groups[target]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["topic"] == topic
        assert int(trigger["metadata"]["lagThreshold"]) > 0
        assert doc["spec"]["maxReplicaCount"] <= TOPIC_SPECS[topic].partitions


def test_trainer_runs_as_a_job_with_the_shared_registry(rendered: list[dict[str, Any]]) -> None:
    (cron,) = _by_kind(rendered, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "/opt/raftloop/trainer_run_once.py"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert "raftloop-registry" in claims
    pvcs = {doc["metadata"]["name"]: doc for doc in _by_kind(rendered, "PersistentVolumeClaim")}
    assert pvcs["raftloop-registry"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_production_trainer_job_asks_for_a_gpu() -> None:
    (cron,) = _by_kind(_render("production"), "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "TRAINER_DEVICE", "value": "cuda"} in container["env"]


def test_base_renders_as_plain_manifests_too() -> None:
    """Without kustomize the base files are still valid YAML objects (kubectl apply -f base/)."""
    files = [p for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml"]
    listed = yaml.safe_load((K8S / "base/kustomization.yaml").read_text())["resources"]
    assert sorted(p.name for p in files) == sorted(listed)
    for path in files:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            assert doc["apiVersion"]
            assert doc["kind"]
            assert doc["metadata"]["name"].startswith("raftloop-")


def test_base_manifests_pass_the_schema_without_kustomize() -> None:
    """The same schema check on the base files as written, for machines without kubectl."""
    kv = require_module(
        "kubernetes_validate", "pip install kubernetes-validate (bundled schemas, offline)"
    )
    version = kv.latest_version()
    used("kubernetes-validate", f"{kv.version.__version__}, schemas of Kubernetes {version}")
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc["apiVersion"].startswith("keda.sh/"):
                kv.validate(doc, version, strict=True)
