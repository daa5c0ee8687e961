"""Wiring of the hitl service: FastAPI app, Kafka consumers, outbox relay, ops monitor."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from sqlalchemy import Engine, text
from starlette.middleware.sessions import SessionMiddleware

from raftloop_core.api import KeyStore, install_error_handlers
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.limits import install_request_guards
from raftloop_core.messaging import consumer_options
from raftloop_core.service import ReadinessCheck, add_ops_routes, broker_check
from raftloop_core.telemetry import instrument_broker
from raftloop_hitl.accounts import Accounts
from raftloop_hitl.adapters import KafkaOpsMonitor, OutboxRelay, published_on_kafka
from raftloop_hitl.context import Ctx
from raftloop_hitl.db import migrate
from raftloop_hitl.domain import Backoff
from raftloop_hitl.handlers import CONSUMED, Handlers
from raftloop_hitl.routes_admin import admin_router
from raftloop_hitl.routes_api import api_router
from raftloop_hitl.routes_ops import ops_router
from raftloop_hitl.routes_ui import ui_router
from raftloop_hitl.settings import HitlSettings
from raftloop_hitl.store import RelayLeadership, ReviewStore
from raftloop_hitl.throttle import SignInThrottle
from raftloop_hitl.web import HERE, PageError, make_templates, page_error_handler, security_headers


def create_app(
    settings: HitlSettings,
    *,
    engine: Engine,
    broker: KafkaBroker,
    keys: KeyStore,
    session_secret: SecretStr,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The review service: pages, API, consumers and relay, all started by the lifespan.

    `clock` times sign-in throttling; tests pass a fake one.
    """
    store = ReviewStore(engine, lease_s=settings.lease_seconds)
    leadership = RelayLeadership(engine)
    registry = CollectorRegistry()
    instrument_broker(broker, registry, service="hitl")
    ops = KafkaOpsMonitor(settings.kafka, store, registry, cache_s=settings.ops_cache_s)
    relay = OutboxRelay(
        store,
        broker,
        prefix=settings.topic_prefix,
        poll_s=settings.outbox_poll_s,
        published=published_on_kafka(settings.kafka),
        leader=leadership.acquire,
    )
    throttle = SignInThrottle(
        engine,
        address=Backoff(settings.signin_free_failures, max_s=settings.signin_address_max_delay_s),
        account=Backoff(settings.signin_free_failures, max_s=settings.signin_account_max_delay_s),
        forget_s=settings.signin_forget_s,
        clock=clock,
    )
    ctx = Ctx(
        settings, engine, store, Accounts(engine), keys, make_templates(), relay, ops, throttle
    )
    if settings.consume:
        _subscribe(broker, settings, Handlers(store, engine))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, engine)
        await asyncio.to_thread(_seed_accounts, settings, ctx.accounts)
        tasks: list[asyncio.Task[None]] = []
        await broker.start()
        if settings.consume:
            tasks.append(asyncio.create_task(relay.run()))
        tasks.append(asyncio.create_task(ops.run(settings.ops_refresh_s)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(leadership.release)
            await broker.stop()
            engine.dispose()

    app = FastAPI(title="raftloop hitl", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_request_guards(app, settings.request_limits())
    app.add_exception_handler(PageError, page_error_handler(ctx.templates))
    secure = (
        settings.runtime.production if settings.cookie_secure is None else settings.cookie_secure
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret.get_secret_value(),
        session_cookie="raftloop_hitl",
        max_age=settings.session_max_age_s,
        same_site="strict",
        https_only=secure,
    )

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        security_headers(response)
        return response

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in (ui_router(ctx), admin_router(ctx), api_router(ctx), ops_router(ctx)):
        app.include_router(router)
    add_ops_routes(
        app,
        service="hitl",
        registry=registry,
        checks=[broker_check(broker), ReadinessCheck("database", _db_check(engine))],
        keys=keys,
        protect=settings.runtime.ops_protected,
    )
    app.state.ctx = ctx
    return app


def _subscribe(broker: KafkaBroker, settings: HitlSettings, handlers: Handlers) -> None:
    topics = {settings.topic(t): t for t in CONSUMED}
    opts = consumer_options(settings.kafka, group_id=settings.group_id)

    @broker.subscriber(*topics, **opts)  # type: ignore[untyped-decorator]  # faststream's is untyped
    async def on_event(msg: KafkaMessage) -> None:
        """Every consumed topic -> its `on_<event>` handler."""
        record: Any = msg.raw_message  # an aiokafka ConsumerRecord for a single-message subscriber
        await handlers.dispatch(topics[record.topic], msg.body)


def _seed_accounts(settings: HitlSettings, accounts: Accounts) -> None:
    if settings.admin_username and settings.admin_password:
        accounts.ensure(
            settings.admin_username,
            settings.admin_password.get_secret_value(),
            "admin",
            settings.admin_tenant,
        )
    if not settings.runtime.production:
        for account in ensure_dev_credentials(settings.runtime).accounts:
            accounts.ensure(account.username, account.password, account.role, "default")


def _db_check(engine: Engine) -> Callable[[], Awaitable[bool]]:
    def ping() -> bool:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    async def check() -> bool:
        return await asyncio.to_thread(ping)

    return check
