"""Prometheus config, alert rules and the Grafana dashboard, checked by promtool."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]  # ships no type information
from deploy_tools import DEPLOY, ROOT, SERVICES, run, tool

pytestmark = pytest.mark.integration

PROM = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def test_promtool_checks_the_prometheus_config(tmp_path: Path) -> None:
    promtool = tool("promtool")
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(PROM / name, tmp_path / name)
    (tmp_path / "metrics_key").write_text("rl-test")  # compose mounts the real one here
    done = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert {f"{svc}:{port}" for svc, port in SERVICES.items()} <= targets


def test_promtool_checks_the_alert_rules() -> None:
    done = run(tool("promtool"), "check", "rules", str(PROM / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = run(tool("promtool"), "test", "rules", str(PROM / "alerts_test.yml"), cwd=PROM)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alerts_cover_what_issue_10_asks_for() -> None:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "RaftloopConsumerLagGrowing",
        "RaftloopDeadLetters",
        "RaftloopGatewayErrorRate",
        "RaftloopGatewaySpoolGrowing",
        "RaftloopGateRejectsRepeatedly",
    } <= names


def _exported_metrics() -> set[str]:
    """Metric names that the code on main registers with prometheus_client."""
    names = set()
    for path in [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/*/src/**/*.py")]:
        names.update(re.findall(r"\"((?:raftloop|hitl)_[a-z0-9_]+)\"", path.read_text()))
    # A counter may be declared with its `_total` suffix; queries name it either way.
    return names | {re.sub(r"_total$", "", name) for name in names}


def _metrics_in(expr: str) -> set[str]:
    found = set(re.findall(r"\b((?:raftloop|hitl)_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in found}


def test_alert_rules_use_only_metrics_the_services_export() -> None:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    exported = _exported_metrics()
    for group in rules["groups"]:
        for rule in group["rules"]:
            missing = _metrics_in(rule["expr"]) - exported
            assert not missing, f"{rule['alert']} uses {missing}, which nothing exports"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_json_references_only_the_provisioned_datasource(path: Path) -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uids = {source["uid"] for source in provisioned["datasources"]}
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
    text = path.read_text()
    assert set(re.findall(r'"uid":\s*"([^"]+)"', text)) <= uids | {dashboard["uid"]}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_parse_as_promql(path: Path, tmp_path: Path) -> None:
    """Every panel query goes through promtool's PromQL parser (as recording rules)."""
    promtool = tool("promtool")
    dashboard = json.loads(path.read_text())
    rules = [
        {"record": f"dashboard:panel{panel['id']}:{target['refId']}",
         "expr": target["expr"].replace("$__rate_interval", "5m")}
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]  # fmt: skip
    file = tmp_path / "dashboard-rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run(promtool, "check", "rules", str(file))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_shows_what_issue_10_asks_for() -> None:
    dashboard = json.loads((GRAFANA / "dashboards/raftloop-overview.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Topic rates",
        "Consumer lag per group",
        "Gateway latency",
        "Review queue depth",
        "Judge score distribution",
        "Serving adapter timeline",
    } <= titles
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert not _metrics_in(exprs) - _exported_metrics()
