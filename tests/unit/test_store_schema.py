"""The store's schema on SQLite and PostgreSQL: Alembic builds it, upgrades are idempotent and
safe when the worker and the CLI start together, and it matches the models exactly."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from activities.errors import StoreError
from activities.store.db import Store, open_store, upgrade
from activities.store.models import Base

TABLES = {"stories", "nodes", "characters", "node_characters", "assets", "render_leases"}
HEAD = "0003"  # the newest migration


# ---- schema ---------------------------------------------------------------------------------


def _tables_and_version(conn: Connection) -> tuple[set[str], str | None]:
    names = set(inspect(conn).get_table_names())
    version = None
    if "alembic_version" in names:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    return names, version


async def test_upgrade_creates_tables_and_a_second_run_changes_nothing(db_url: str) -> None:
    await upgrade(db_url)
    async with await open_store(db_url) as store:
        async with store.engine.connect() as conn:
            names, version = await conn.run_sync(_tables_and_version)
        assert TABLES <= names and version == HEAD
        story = await store.repo.create_story("A fox learns to sail")

    await upgrade(db_url)

    async with await open_store(db_url) as store:
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_tables_and_version) == (names, HEAD)
        assert (await store.repo.get_story(story.id)).premise == "A fox learns to sail"


async def test_two_upgrades_at_once_on_an_empty_database_both_succeed(db_url: str) -> None:
    await asyncio.gather(upgrade(db_url), upgrade(db_url))
    async with await open_store(db_url) as store, store.engine.connect() as conn:
        names, version = await conn.run_sync(_tables_and_version)
    assert TABLES <= names and version == HEAD


async def test_worker_and_cli_upgrading_together_from_two_processes(tmp_path: Path) -> None:
    # SQLite is where processes meet through file locks; PostgreSQL's advisory lock is per
    # connection, which the in-process race above already exercises.
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'storyloom.db'}"
    code = "import asyncio, sys; from activities.store.db import upgrade; asyncio.run(upgrade(sys.argv[1]))"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, db_url, stderr=asyncio.subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        for _ in range(2)
    ]
    results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-800:] for _, err in results]
    async with await open_store(db_url) as store, store.engine.connect() as conn:
        names, version = await conn.run_sync(_tables_and_version)
    assert TABLES <= names and version == HEAD


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


async def test_migrations_build_exactly_the_models_schema(store: Store) -> None:
    async with store.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_sqlite_parent_directory_is_created(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'deep' / 'er' / 'storyloom.db'}"
    await upgrade(url)
    assert (tmp_path / "deep" / "er" / "storyloom.db").is_file()


async def test_unsupported_url_says_which_drivers_work() -> None:
    with pytest.raises(StoreError, match="sqlite\\+aiosqlite"):
        await open_store("sqlite:///tmp/x.db")


