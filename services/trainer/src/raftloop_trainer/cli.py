"""`raftloop train`, `raftloop eval` and `raftloop adapters list|promote|rollback`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from raftloop_core.registry import DEFAULT_TENANT, AdapterRefused, AdapterRegistry
from raftloop_trainer.settings import TrainerSettings

adapters_app = typer.Typer(help="List, promote and roll back LoRA adapters.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _admin_key(settings: TrainerSettings) -> str:
    key = os.environ.get("RAFTLOOP_ADMIN_KEY")
    if key:
        return key
    from raftloop_core.credentials import ensure_dev_credentials
    from raftloop_core.settings import SettingsError

    try:
        return ensure_dev_credentials(settings.runtime).api_keys["admin"]
    except SettingsError:
        _fail("set RAFTLOOP_ADMIN_KEY to an admin API key (production mode has no dev keys)")
        raise


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    settings = TrainerSettings()
    url = os.environ.get("TRAINER_URL", f"http://127.0.0.1:{settings.port}")
    headers = {"Authorization": f"Bearer {_admin_key(settings)}"}
    try:
        response = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"the trainer at {url} did not answer ({exc}); start it with `raftloop up`")
    if response.status_code >= 400:
        message = response.json().get("error", {}).get("message", response.text)
        _fail(f"{response.status_code}: {message}")
    return response.json()


@asynccontextmanager
async def _sink(settings: TrainerSettings) -> AsyncIterator[Any]:
    from aiokafka.errors import KafkaError

    from raftloop_core.messaging import make_broker
    from raftloop_trainer.adapters import KafkaEventSink

    broker = make_broker(settings.kafka, client_id="raftloop-cli")
    try:
        await asyncio.wait_for(broker.start(), timeout=15)
    except (TimeoutError, KafkaError, OSError) as exc:
        await broker.stop()
        _fail(
            f"no broker at {settings.kafka.bootstrap_servers} ({type(exc).__name__}); the switch "
            "must be announced to the gateway: start it with `raftloop up` or `raftloop broker`"
        )
    try:
        yield KafkaEventSink(broker)
    finally:
        await broker.stop()


def _switch(action: Callable[[AdapterRegistry, Any, TrainerSettings], Any]) -> Any:
    settings = TrainerSettings()
    registry = AdapterRegistry(settings.registry_root)

    async def go() -> Any:
        async with _sink(settings) as sink:
            return await action(registry, sink, settings)

    try:
        return asyncio.run(go())
    except (AdapterRefused, ValueError) as exc:
        _fail(str(exc))


TenantOption = Annotated[
    str,
    typer.Option(help="Tenant whose alias and adapters this acts on (each has its own)."),
]


@adapters_app.command("list")
def list_adapters(tenant: TenantOption = DEFAULT_TENANT) -> None:
    """A tenant's registered adapters, newest last; `*` marks the serving one."""
    settings = TrainerSettings()
    registry = AdapterRegistry(settings.registry_root)
    serving = registry.serving(settings.alias, tenant)
    typer.echo(
        f"{tenant}/{settings.alias}: {serving.adapter_id or 'base model'} (rev {serving.revision})"
    )
    if serving.canary_adapter_id:
        typer.echo(f"canary: {serving.canary_adapter_id} share {serving.canary_share:g}")
    for card in registry.list(tenant):
        mark = "*" if card.adapter_id == serving.adapter_id else " "
        gain = card.metrics.get("holdout.token_f1.diff")
        extra = f" token_f1 {gain:+.3f}" if gain is not None else ""
        typer.echo(
            f"{mark} {card.adapter_id}  {card.base_model}  run {card.run_id or '-'}  "
            f"data {str(card.dataset_version or '-')[:12]}{extra}"
        )


@adapters_app.command("promote")
def promote_adapter(
    adapter_id: str,
    reason: Annotated[str | None, typer.Option()] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Point a tenant's serving alias at one of its adapters and tell the gateway."""
    from raftloop_trainer import promotion
    from raftloop_trainer.main import base_model

    async def action(registry: AdapterRegistry, sink: Any, s: TrainerSettings) -> Any:
        card = registry.card(adapter_id)
        name = card.base_model or base_model(s)[1]
        return await promotion.promote(
            registry,
            sink,
            adapter_id,
            alias=s.alias,
            base_model=name,
            tenant=tenant,
            run_id=card.run_id,
            dataset_version=card.dataset_version,
            reason=reason,
        )

    state = _switch(action)
    typer.echo(f"{tenant}/{state.alias} -> {state.adapter_id} (rev {state.revision})")


@adapters_app.command("rollback")
def rollback_adapter(
    reason: Annotated[str | None, typer.Option()] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Switch a tenant's serving alias back to its previous adapter (or the base model)."""
    from raftloop_trainer import promotion

    async def action(registry: AdapterRegistry, sink: Any, s: TrainerSettings) -> Any:
        current = registry.serving(s.alias, tenant).adapter_id
        name = registry.card(current).base_model if current else "base"
        return await promotion.rollback(
            registry, sink, alias=s.alias, base_model=name, tenant=tenant, reason=reason
        )

    state = _switch(action)
    target = state.adapter_id or "base model"
    typer.echo(f"{tenant}/{state.alias} -> {target} (rev {state.revision})")


@adapters_app.command("canary")
def canary_adapter(
    adapter_id: Annotated[str, typer.Argument(help="The tenant's candidate; 'off' turns it off.")],
    share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.1,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Send a share of a tenant's conversations (sticky) to a candidate adapter."""
    from raftloop_trainer import promotion

    async def action(registry: AdapterRegistry, sink: Any, s: TrainerSettings) -> Any:  # noqa: ARG001  # _switch's callback
        candidate = None if adapter_id == "off" else adapter_id
        return await promotion.set_canary(registry, candidate, share, alias=s.alias, tenant=tenant)

    state = _switch(action)
    typer.echo(
        f"{tenant}/{state.alias} canary: {state.canary_adapter_id or 'off'} "
        f"share {state.canary_share:g} (rev {state.revision})"
    )


def train_command(
    tenant: Annotated[
        str | None,
        typer.Option(help="Tenant whose dataset trains; default: the admin key's own tenant."),
    ] = None,
    status: Annotated[bool, typer.Option("--status", help="Show progress only.")] = False,
) -> None:
    """Start a training run on the trainer service (or show its progress with --status)."""
    if status:
        typer.echo(json.dumps(_call("GET", "/v1/admin/training"), indent=2, default=str))
        return
    started = _call("POST", "/v1/admin/train", {"tenant": tenant} if tenant else {})
    run = f" {started['run_id']}" if started.get("run_id") else ""
    typer.echo(
        f"training run{run} started for {started['tenant']}; follow it with "
        "`raftloop train --status`"
    )


def eval_command(
    adapter: Annotated[str | None, typer.Option(help="Adapter id; default: base only.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder; default <data dir>/trainer/eval.")
    ] = None,
    regression: Annotated[int, typer.Option(help="General questions to include.")] = 16,
) -> None:
    """Evaluate the base model (and an adapter) on the demo hold-out and regression sets."""
    from raftloop_trainer.offline import evaluate_on_demo

    settings = TrainerSettings()
    out = out or settings.state_dir / "eval"
    try:
        payload = evaluate_on_demo(settings, adapter, out, regression=regression)
    except (AdapterRefused, ValueError) as exc:
        _fail(str(exc))
    from raftloop_trainer.report import markdown

    typer.echo(markdown(payload))
    typer.echo(f"report: {out / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add the trainer's commands to the root `raftloop` app."""
    app.command("train")(train_command)
    app.command("eval")(eval_command)
    app.add_typer(adapters_app, name="adapters")
