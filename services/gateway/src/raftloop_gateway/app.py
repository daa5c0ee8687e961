"""`create_app`: wiring only. Everything with I/O comes in as an argument from `main.build`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftloop_core.api import ApiError, KeyStore, error_response, install_error_handlers, require
from raftloop_core.events import AdapterPromoted, AdapterRolledBack
from raftloop_core.limits import install_request_guards
from raftloop_core.messaging import ensure_topics
from raftloop_core.registry import AdapterRefused, AdapterRegistry
from raftloop_core.service import ReadinessCheck, add_ops_routes, broker_check
from raftloop_core.telemetry import instrument_broker
from raftloop_core.topics import Topic
from raftloop_gateway.adapters import KafkaSender
from raftloop_gateway.admin import build_admin_router
from raftloop_gateway.capture import CapturePublisher
from raftloop_gateway.chat import ChatService
from raftloop_gateway.domain import Backend, GatewayError, Retriever
from raftloop_gateway.hotswap import ServingState
from raftloop_gateway.routes import RequestIdMiddleware, build_router
from raftloop_gateway.settings import GatewaySettings
from raftloop_gateway.spool import Spool

log = logging.getLogger(__name__)


def _subscribe(broker: KafkaBroker, state: ServingState) -> None:
    # No consumer group: every gateway replica must see every switch. The alias file is the
    # truth, so replaying old switches on start is harmless (older revisions are ignored).
    options: dict[str, Any] = {"auto_offset_reset": "earliest"}

    async def follow(event: AdapterPromoted | AdapterRolledBack) -> None:
        # A tenant this gateway has not served yet reads its alias on its first request.
        seen = state.tenants.get(event.tenant)
        if event.alias == state.alias and seen is not None and event.revision > seen.revision:
            await state.refresh(event.tenant, min_revision=event.revision)

    @broker.subscriber(Topic.ADAPTER_PROMOTED, **options)  # type: ignore[untyped-decorator]
    async def on_adapter_promoted(event: AdapterPromoted) -> None:
        """adapter.promoted -> re-read that tenant's alias and load the adapter."""
        await follow(event)

    @broker.subscriber(Topic.ADAPTER_ROLLED_BACK, **options)  # type: ignore[untyped-decorator]
    async def on_adapter_rolled_back(event: AdapterRolledBack) -> None:
        """adapter.rolled_back -> re-read that tenant's alias."""
        await follow(event)


async def _connect(broker: KafkaBroker, sender: KafkaSender, settings: GatewaySettings) -> None:
    """Start the broker, retrying in the background: the gateway answers (and spools) meanwhile."""
    delay = 0.5
    while True:
        try:
            await asyncio.to_thread(ensure_topics, settings.kafka)
            await broker.start()
            sender.connected = True
            log.info("broker connected", extra={"servers": settings.kafka.bootstrap_servers})
            return
        except Exception as exc:  # noqa: BLE001  # retried until the broker answers, whatever failed
            log.warning("broker not reachable; retrying", extra={"error": repr(exc)[:300]})
            with contextlib.suppress(Exception):
                await broker.stop()
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)


async def _probe(settings: GatewaySettings) -> bool:
    """The broker answers and every topic exists (a broker that came back empty gets them)."""
    try:
        await asyncio.to_thread(ensure_topics, settings.kafka)
    except Exception as exc:  # noqa: BLE001  # any failure means the broker is not back yet
        log.info("broker still unreachable", extra={"error": repr(exc)[:200]})
        return False
    return True


async def _warm_up(backend: Backend, state: ServingState) -> None:
    """Load the model, pick up the serving adapter, then start watching the alias."""
    start = getattr(backend, "start", None)
    try:
        if start is not None:
            await start()
        await state.refresh()
    except Exception:
        log.exception("the model could not be loaded; chat requests answer 503")
        return
    finally:
        state.start()
    # Long-lived startup objects (model, clients, routes) leave the GC's view, so collections
    # in the request path scan less: shorter pauses in the latency tail.
    gc.collect()
    gc.freeze()


def create_app(
    settings: GatewaySettings,
    *,
    keys: KeyStore,
    backend: Backend,
    registry: AdapterRegistry,
    broker: KafkaBroker,
    retriever: Retriever | None = None,
) -> FastAPI:
    """The gateway's HTTP app: OpenAI routes, admin routes, ops routes, capture and hot-swap."""
    state = ServingState(registry, backend, alias=settings.alias, poll_s=settings.alias_poll_s)
    sender = KafkaSender(broker, timeout_s=settings.publish_timeout_ms / 1000 + 5)
    capture = CapturePublisher(
        sender,
        Spool(
            settings.state_dir / "spool",
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
        ),
        queue_size=settings.capture_queue,
        linger_s=settings.capture_linger_ms / 1000,
        probe=lambda: _probe(settings),
    )
    service = ChatService(
        settings,
        backend=backend,
        state=state,
        sink=capture if settings.capture else None,
        retriever=retriever,
    )
    _subscribe(broker, state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001  # FastAPI's signature
        capture.start()
        connecting = asyncio.create_task(_connect(broker, sender, settings), name="connect")
        # The model loads in the background: /healthz answers at once, chat answers 503 until
        # the model is ready, and /readyz says when it is.
        warming = asyncio.create_task(_warm_up(backend, state), name="warm-up")
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            await state.stop()
            await capture.stop()
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
            with contextlib.suppress(Exception):
                await broker.stop()
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    app = FastAPI(title="raftloop gateway", version="0.1.0", lifespan=lifespan)
    app.state.service = service
    app.state.capture = capture
    install_error_handlers(app)
    install_request_guards(app, settings.request_limits())
    _install_domain_errors(app)
    app.add_middleware(RequestIdMiddleware)  # outermost: errors carry the id too
    metrics = CollectorRegistry()
    _capture_metrics(metrics, capture)
    _engine_metrics(metrics, backend)
    instrument_broker(broker, metrics, service="gateway")
    metrics.register(ServingAdapterInfo(state))
    add_ops_routes(
        app,
        service="gateway",
        registry=metrics,
        checks=[
            ReadinessCheck("model", _async_value(lambda: backend.ready)),
            # The capture check covers the broker: while it is down answers are spooled, and
            # only a full spool makes the gateway unready. The broker's own state is shown but
            # does not take every replica out of service during a Kafka outage.
            ReadinessCheck("capture", _async_value(lambda: capture.accepting)),
            ReadinessCheck("broker", broker_check(broker).check, required=False),
        ],
        keys=keys,
        protect=settings.runtime.ops_protected,
    )
    any_key = Depends(require(keys, "client", "internal"))
    app.include_router(build_router(service, any_key=any_key, chat_key=any_key))
    app.include_router(build_admin_router(service, admin_key=Depends(require(keys, "admin"))))
    return app


def _async_value(read: Any) -> Any:
    async def check() -> bool:
        return bool(read())

    return check


def _engine_metrics(metrics: CollectorRegistry, backend: Backend) -> None:
    """Rows in the batch, jobs waiting, steps and tokens of the local engine (0 before load)."""

    def read(name: str) -> Callable[[], float]:
        def value() -> float:
            engine = getattr(backend, "engine", None)
            return float(getattr(engine, name, 0)) if engine is not None else 0.0

        return value

    for name, doc, attr in (
        ("raftloop_gateway_engine_running", "Sequences in the running batch.", "running"),
        ("raftloop_gateway_engine_waiting", "Requests waiting to join the batch.", "waiting"),
        ("raftloop_gateway_engine_steps", "Batched decode steps run.", "steps"),
        ("raftloop_gateway_engine_tokens", "Tokens generated.", "tokens"),
        ("raftloop_gateway_engine_adapters", "LoRA adapters loaded.", "adapters_loaded"),
    ):
        Gauge(name, doc, registry=metrics).set_function(read(attr))


def _capture_metrics(metrics: CollectorRegistry, capture: CapturePublisher) -> None:
    for name, doc, read in (
        ("raftloop_gateway_capture_published", "Events published.", lambda: capture.published),
        (
            "raftloop_gateway_capture_spooled",
            "Events written to the spool.",
            lambda: capture.spooled,
        ),
        ("raftloop_gateway_capture_backlog", "Events queued in memory.", lambda: capture.backlog),
        ("raftloop_gateway_spool_bytes", "Bytes in the disk spool.", lambda: capture.spool.size),
    ):
        Gauge(name, doc, registry=metrics).set_function(read)


class ServingAdapterInfo(Collector):
    """`raftloop_gateway_serving_adapter_info`: 1 per tenant for the adapter served (and canary).

    The tenant label names only tenants this gateway has served (or the default one); keep
    `/metrics` operator-only where tenant names are private (RAFTLOOP_PROTECT_OPS).
    """

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def describe(self) -> Iterable[Metric]:
        """The family without samples, so registering does not read the state."""
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        """Per tenant: `serving` always (`base` = no adapter), `canary` when set."""
        family = self._family()
        alias = self.state.alias
        for tenant, now in list(self.state.tenants.items()):
            serving = now.serving or "base"
            family.add_metric([tenant, alias, serving, "serving", str(now.revision)], 1)
            if now.canary.adapter_id and now.canary.share > 0:
                family.add_metric([tenant, alias, now.canary.adapter_id, "canary", ""], 1)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "raftloop_gateway_serving_adapter_info",
            "The adapter this gateway serves under each tenant's alias (base = the base model).",
            labels=["tenant", "alias", "adapter_id", "role", "revision"],
        )


def _install_domain_errors(app: FastAPI) -> None:
    async def on_gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        headers = {"retry-after": str(exc.retry_after)} if exc.retry_after else None
        return error_response(
            ApiError(exc.status, exc.message, code=exc.code, param=exc.param, headers=headers)
        )

    async def on_refused(_: Request, exc: Exception) -> JSONResponse:
        return error_response(ApiError(409, str(exc), code="adapter_refused"))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(AdapterRefused, on_refused)
