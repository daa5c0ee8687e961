"""One way to open a service's SQL database and bring its schema up to date.

Every service that owns tables (hitl, ingest, judge, the trainer) opens them with
`make_engine(url)`: SQLite under the data folder by default, PostgreSQL in production. SQLite
gets the same settings everywhere: WAL (readers beside the writer, no commit lost to a killed
process), NORMAL sync, foreign keys on, and one busy timeout long enough that a slow machine
makes writers wait instead of fail (slowness is backpressure). Its schema changes are Alembic
revisions in the service's own `migrations` package, applied by `migrate()` at start-up;
`run_migrations()` is what each package's `env.py` calls.

Needs the `db` extra of raftloop-core (SQLAlchemy and Alembic).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import Engine, MetaData, create_engine, event, inspect, text

SQLITE_BUSY_TIMEOUT_S = 60
"""How long a SQLite writer waits for the lock before failing; one figure for every service."""


def sqlalchemy_url(url: str) -> str:
    """`url` with the driver SQLAlchemy should use: `postgresql://` means psycopg 3."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    immediate_writes: bool = False,
) -> Engine:
    """An engine for `url` (SQLite or PostgreSQL) with the platform's settings.

    `immediate_writes` makes every SQLite transaction take the write lock when it begins
    (`BEGIN IMMEDIATE`): a service whose transactions read, then write under concurrency (hitl's
    claims) queues its writers instead of failing them with SQLITE_BUSY on lock upgrade.
    """
    url = sqlalchemy_url(url)
    if not url.startswith("sqlite"):
        return create_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
        )
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=max_overflow,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _: Any) -> None:
        if immediate_writes:
            # Let SQLAlchemy, not the driver, decide when transactions begin.
            dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cur.close()

    if immediate_writes:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(url: str, migrations: Path) -> Config:
    """An Alembic config for a service's packaged `migrations` folder."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, migrations: Path) -> None:
    """Bring the schema to the newest revision of `migrations` (idempotent).

    Each service's first revision creates only the tables that are missing and the later ones
    add only what is missing, so a database that a release before migrations made with
    `create_all` is upgraded in place, without a table created twice or a row lost.
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False), migrations)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas that start together take turns: PostgreSQL's DDL is transactional, so
            # the second sees the first's tables and version, and has nothing left to do.
            key = zlib.crc32(migrations.parent.name.encode())
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def run_migrations(
    metadata: MetaData | Sequence[MetaData], *, version_table: str = "alembic_version"
) -> None:
    """The body of a service's `migrations/env.py`.

    It runs on the connection `migrate()` passes, or on the config's URL when Alembic's own
    command line runs it. `version_table` is the service's own, so services may share one
    PostgreSQL database.
    """
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=metadata, version_table=version_table
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            context.configure(
                connection=conn, target_metadata=metadata, version_table=version_table
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def missing_tables(names: list[str]) -> set[str]:
    """Which of `names` the database of the running migration does not have yet."""
    have = set(inspect(op.get_bind()).get_table_names())
    return set(names) - have


def has_column(table: str, column: str) -> bool:
    """Whether `table` of the running migration's database has `column`."""
    return column in {c["name"] for c in inspect(op.get_bind()).get_columns(table)}
