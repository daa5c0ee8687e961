"""`raftloop adapters list|promote|rollback` against a real registry and the real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings
from raftloop_trainer.cli import register
from raftloop_trainer.train import LoraParams, load_model, lora_model

pytestmark = pytest.mark.integration


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main() -> None:
        """Root."""

    register(root)
    return root


def test_adapters_list_promote_rollback(
    app: typer.Typer,
    tmp_path: Path,
    tiny_model_dir: Path,
    kafka_settings: KafkaSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    _, model = load_model(tiny_model_dir, "cpu")
    lora_model(model, LoraParams(rank=4)).save_pretrained(tmp_path / "adapter")
    registry = AdapterRegistry(tmp_path / "var" / "registry")
    adapter_id = registry.add(tmp_path / "adapter", AdapterCard(base_model="tiny-llama"))
    cli = CliRunner()

    listed = cli.invoke(app, ["adapters", "list"])
    assert listed.exit_code == 0, listed.output
    assert "serving: base model (rev 0)" in listed.output
    assert adapter_id in listed.output

    promoted = cli.invoke(app, ["adapters", "promote", adapter_id])
    assert promoted.exit_code == 0, promoted.output
    assert registry.serving("serving").adapter_id == adapter_id
    assert f"* {adapter_id}" in cli.invoke(app, ["adapters", "list"]).output

    rolled = cli.invoke(app, ["adapters", "rollback", "--reason", "bad answers"])
    assert rolled.exit_code == 0, rolled.output
    assert registry.serving("serving").adapter_id is None

    again = cli.invoke(app, ["adapters", "promote", "f" * 64])
    assert again.exit_code == 1
    assert again.output.startswith("error: adapter ffffffffffff is not in the registry")
