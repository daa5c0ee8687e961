"""`raftloop`: one program to run the platform, look at it and drive it."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from raftloop_cli.demo import demo as demo_command
from raftloop_cli.services import SERVICES, ServiceSpec, installed_services
from raftloop_cli.supervisor import StartupError, Supervisor
from raftloop_core.credentials import credentials_path, ensure_dev_credentials
from raftloop_core.embedded import DEFAULT_STORAGE, EmbeddedBroker, EmbeddedBrokerError
from raftloop_core.messaging import BrokerUnreachable, ensure_topics
from raftloop_core.ops import group_status, topic_status
from raftloop_core.settings import KafkaSettings, RuntimeSettings, SettingsError

app = typer.Typer(
    help="raftloop: continuous improvement for production LLM chatbots.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
KNOWN_ERRORS = (SettingsError, StartupError, EmbeddedBrokerError, BrokerUnreachable, ValueError)

BrokerPort = Annotated[
    int,
    typer.Option(
        "--broker-port",
        envvar="RAFTLOOP_BROKER_PORT",
        min=1,
        max=65535,
        help="Port of the embedded broker.",
    ),
]
Port = Annotated[
    int,
    typer.Option(
        "--port",
        envvar="RAFTLOOP_BROKER_PORT",
        min=1,
        max=65535,
        help="Port to listen on (127.0.0.1).",
    ),
]
Storage = Annotated[
    str,
    typer.Option(
        "--storage",
        envvar="RAFTLOOP_BROKER_STORAGE",
        help="Tansu storage: memory://tansu/, s3://bucket/ or postgres://...",
    ),
]


def fail(message: str) -> typer.Exit:
    """Print one clear error line and return the exit to raise."""
    console.print(f"[bold red]raftloop: error:[/] {message}", soft_wrap=True)
    return typer.Exit(2)


def _settings() -> tuple[RuntimeSettings, KafkaSettings]:
    try:
        return RuntimeSettings(), KafkaSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise fail(f"bad setting {exc.title}.{where}: {first['msg']}") from None


@app.command()
def broker(port: Port = 9092, storage: Storage = DEFAULT_STORAGE) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) with every topic created."""
    runtime, kafka = _settings()
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        created = ensure_topics(kafka)
        console.print(
            f"using {kafka.bootstrap_servers}; created {len(created)} topics; "
            "nothing started (KAFKA_BOOTSTRAP_SERVERS is set)"
        )
        return
    embedded = EmbeddedBroker(
        port=port, storage=storage, log_path=runtime.path("logs", "broker.log")
    )
    with embedded:
        kafka = kafka.model_copy(update={"bootstrap_servers": embedded.bootstrap_servers})
        created = ensure_topics(kafka)
        console.print(
            f"broker listening on {embedded.bootstrap_servers} "
            f"({len(created)} topics created); Ctrl-C stops it"
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                if embedded.proc and embedded.proc.poll() is not None:
                    raise fail(f"the broker exited with code {embedded.proc.returncode}")
        except KeyboardInterrupt:
            pass


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Show topics with end offsets, and consumer groups with their lag."""
    _, kafka = _settings()
    topics, groups = topic_status(kafka), group_status(kafka)
    if as_json:
        print(
            json.dumps(
                {
                    "topics": [
                        {
                            "name": t.name,
                            "end_offset": t.end_offset,
                            "partitions": [asdict(p) for p in t.partitions],
                        }
                        for t in topics
                    ],
                    "groups": [
                        {
                            "group_id": g.group_id,
                            "state": g.state,
                            "lag": g.lag,
                            "partitions": [asdict(p) | {"lag": p.lag} for p in g.partitions],
                        }
                        for g in groups
                    ],
                },
                indent=2,
            )
        )
        return
    table = Table("topic", "partitions", "end offset", title=f"topics on {kafka.bootstrap_servers}")
    for t in topics:
        table.add_row(t.name, str(len(t.partitions)), str(t.end_offset))
    console.print(table)
    groups_table = Table(
        "group", "topic", "committed", "end offset", "lag", title="consumer groups"
    )
    for g in groups:
        for topic in sorted({p.topic for p in g.partitions}):
            parts = [p for p in g.partitions if p.topic == topic]
            groups_table.add_row(
                g.group_id,
                topic,
                str(sum(p.committed or 0 for p in parts)),
                str(sum(p.end_offset for p in parts)),
                str(sum(p.lag for p in parts)),
            )
    console.print(groups_table)


@app.command()
def up(
    port: BrokerPort = 9092,
    storage: Storage = DEFAULT_STORAGE,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            envvar="RAFTLOOP_SERVICES",
            help="Comma-separated subset of services to run ('broker' alone: just the broker).",
        ),
    ] = None,
) -> None:
    """Run the whole platform on embedded defaults until Ctrl-C."""
    runtime, kafka = _settings()
    data_dir = runtime.data_dir.resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    services = installed_services()
    if only is not None:
        wanted = {name.strip() for name in only.split(",") if name.strip()} - {"broker"}
        unknown = wanted - {s.name for s in services}
        if unknown:
            raise fail(
                f"unknown or not installed service(s): {', '.join(sorted(unknown))}; "
                f"installed: {', '.join(s.name for s in services) or 'none'}"
            )
        services = [s for s in services if s.name in wanted]
    for spec in services:
        _ = spec.port  # a bad <SVC>_PORT fails here, before anything starts
    try:
        # Nothing runs yet: Ctrl-C here simply ends the program.
        _prepare_models()
        if not runtime.production:
            ensure_dev_credentials(runtime.model_copy(update={"data_dir": data_dir}))
    except KeyboardInterrupt:
        console.print("stopped.")
        raise typer.Exit(0) from None
    sup = Supervisor(console, data_dir, env={"RAFTLOOP_DATA_DIR": str(data_dir)})
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, sup.request_stop)
    code = 0
    try:
        code = _run(sup, runtime, kafka, services, port=port, storage=storage)
    except KNOWN_ERRORS as exc:
        console.print(f"[bold red]raftloop: error:[/] {exc}", soft_wrap=True)
        code = 2
    finally:
        console.print("stopping…")
        sup.stop_all()
        console.print("stopped.")
    raise typer.Exit(code)


def _run(
    sup: Supervisor,
    runtime: RuntimeSettings,
    kafka: KafkaSettings,
    services: list[ServiceSpec],
    *,
    port: int,
    storage: str,
) -> int:
    """Start the broker and the services in order, then watch them; 0 after a requested stop."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        address = kafka.bootstrap_servers
    else:
        address = sup.start_broker(port, storage)
    kafka = kafka.model_copy(update={"bootstrap_servers": address})
    sup.env["KAFKA_BOOTSTRAP_SERVERS"] = address
    ensure_topics(kafka)
    console.print(f"[bold]broker[/] {address}")
    for spec in services:
        if sup.stopping or not sup.wait_healthy(sup.start(spec)):
            return 0
        console.print(f"[bold green]{spec.name} ready[/] {spec.url}")
    if any(s.name == "ingest" for s in services):
        _seed_demo_knowledge_base(sup, runtime)
    if sup.stopping:
        return 0
    _print_urls(runtime, sup.data_dir, address, [s.name for s in services])
    return sup.watch()


def _seed_demo_knowledge_base(sup: Supervisor, runtime: RuntimeSettings) -> None:
    """Publish the demo handbook on a development platform (a no-op once it is there)."""
    if runtime.production or os.environ.get("RAFTLOOP_DEMO_KB", "true").lower() in ("0", "false"):
        return
    try:
        kb = importlib.import_module("raftloop_demo_kb")
    except ModuleNotFoundError:
        return
    done = sup.run_task(
        [sys.executable, "-m", "raftloop_cli", "kb", "add", str(kb.docs_dir())],
        env={**os.environ, **sup.env},
    )
    if done is None:
        return  # stopped meanwhile
    lines = (done.stdout + done.stderr).strip().splitlines()
    summary = lines[-1] if lines else f"exit {done.returncode}"
    if done.returncode != 0:
        console.print(f"[yellow]demo handbook not added:[/] {summary}")
    else:
        console.print(f"demo handbook (RAFTLOOP_DEMO_KB=false skips it): {summary}")


def _prepare_models() -> None:
    try:
        models = importlib.import_module("raftloop_models")
    except ModuleNotFoundError:
        return
    console.print("preparing SmolLM2 (converted once from its offline wheel; ~20 s the first time)")
    try:
        models.ensure_smollm2()
    except models.ModelUnavailable as exc:
        raise fail(str(exc)) from None


def _print_urls(runtime: RuntimeSettings, data_dir: Path, broker: str, names: list[str]) -> None:
    urls = {spec.name: spec.url for spec in SERVICES if spec.name in names}
    table = Table("what", "where", title="raftloop is up", show_header=False)
    table.add_row("Kafka broker", broker)
    if "gateway" in urls:
        table.add_row("OpenAI API", f"{urls['gateway']}/v1")
    if "hitl" in urls:
        table.add_row("Review UI", urls["hitl"])
        table.add_row("Ops pages", f"{urls['hitl']}/ops")
    for name, url in urls.items():
        table.add_row(f"{name} health", f"{url}/healthz")
    if not runtime.production:
        table.add_row(
            "Credentials", str(credentials_path(runtime.model_copy(update={"data_dir": data_dir})))
        )
    table.add_row("Logs", str(data_dir / "logs"))
    console.print(table)
    console.print("raftloop is up. Press Ctrl-C to stop.")


app.command("demo")(demo_command)


# Which service contributes each subcommand: only that service's CLI is imported, since some
# (ingest's PII models, the trainer's torch) take seconds to import.
SERVICE_COMMANDS = {
    "kb": "ingest",
    "train": "trainer",
    "eval": "trainer",
    "adapters": "trainer",
    "hitl": "hitl",
}


def _register_service_commands(argv: list[str]) -> None:
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in {"up", "broker", "status"}:
        return
    owner = SERVICE_COMMANDS.get(command or "")
    for spec in SERVICES:
        if owner is not None and spec.name != owner:
            continue
        try:
            module = importlib.import_module(f"{spec.package}.cli")
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == spec.package or exc.name.startswith(spec.package)):
                continue  # that service (or its CLI) is not installed
            raise
        module.register(app)


def main() -> None:
    """Entry point of the `raftloop` program."""
    _register_service_commands(sys.argv[1:])
    try:
        app()
    except KNOWN_ERRORS as exc:
        console.print(f"[bold red]raftloop: error:[/] {exc}", soft_wrap=True)
        sys.exit(2)
