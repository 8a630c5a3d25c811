"""Open the story store (async engine + sessions) and bring its schema to Alembic head.

SQLite (the embedded default) gets WAL, a busy timeout, foreign keys and ``BEGIN IMMEDIATE`` for
write transactions, so concurrent writers wait instead of failing; PostgreSQL goes through asyncpg.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from activities.errors import StoreError
from activities.store.repository import StoryRepository
from activities.store.transactions import WRITE

__all__ = ["MIGRATIONS_DIR", "Store", "alembic_config", "create_engine", "open_store", "upgrade"]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
UPGRADE_LOCK_KEY = 7_310_514_020_251_001  # any fixed 64-bit number; env.py uses the same


class Store:
    """An open store: the engine, its session factory and the repository. Close it when done."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.repo = StoryRepository(self.sessions)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _check_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreError(
            f"database URL {url!r} is not valid: {exc}",
            service="store",
            hint="Set STORYLOOM_DATABASE_URL to sqlite+aiosqlite:///path/to/storyloom.db "
            "or postgresql+asyncpg://user:pass@host/db",
        ) from exc
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise StoreError(
            f"database driver '{parsed.drivername}' is not supported (need an async driver)",
            service="store",
            where=parsed.render_as_string(hide_password=True),
            hint="Use sqlite+aiosqlite:///path or postgresql+asyncpg://user:pass@host/db",
        )
    return parsed.drivername


def _sqlite_events(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver stops issuing BEGIN; _on_begin does it
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once (SQLITE_BUSY) when
        # another writer committed in between; IMMEDIATE takes the write lock up front and
        # waits for it under busy_timeout instead.
        immediate = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str) -> AsyncEngine:
    """The async engine for ``url``; creates a SQLite file's parent directory."""
    driver = _check_url(url)
    if driver.startswith("sqlite"):
        database = make_url(url).database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        _sqlite_events(engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


async def open_store(url: str) -> Store:
    """Open the store at ``url`` (no schema change: call :func:`upgrade` first)."""
    return Store(url, create_engine(url))


def alembic_config(url: str) -> Config:
    """An Alembic config built in code: works from an installed package and from any cwd."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade_on(connection: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def upgrade(url: str) -> None:
    """Bring the schema at ``url`` to the newest migration. Idempotent; safe to run twice at once.

    The whole upgrade is one transaction holding a lock (SQLite: the write lock; PostgreSQL: an
    advisory lock): a second upgrader, in this or another process, waits and then finds the
    schema current.
    """
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE: True})
            async with conn.begin():
                # Serialise upgraders before Alembic starts (its context is process-global):
                # SQLite's BEGIN IMMEDIATE already did; PostgreSQL takes an advisory lock.
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK_KEY}
                    )
                await conn.run_sync(_upgrade_on, alembic_config(url))
    finally:
        await engine.dispose()
    logger.info("store schema at head (%s)", make_url(url).render_as_string(hide_password=True))
