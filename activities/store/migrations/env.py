"""Alembic environment of the story store: async engines, one transaction, one upgrader at a time.

Called two ways: programmatically by ``activities.store.db.upgrade`` (a connection arrives in
``config.attributes["connection"]``), or by developers through ``alembic -c
activities/store/alembic.ini ...`` (the URL comes from ``STORYLOOM_DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from activities.store.db import UPGRADE_LOCK_KEY, create_engine
from activities.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = os.environ.get("STORYLOOM_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(
            "No database URL: set STORYLOOM_DATABASE_URL "
            "(e.g. sqlite+aiosqlite:///$HOME/.local/share/storyloom/storyloom.db)"
        )
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs need batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK_KEY})
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(storyloom_write=True)
            async with conn.begin():
                await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    _run(shared)
else:
    if config.config_file_name:
        fileConfig(config.config_file_name)
    asyncio.run(_run_async(_url()))
