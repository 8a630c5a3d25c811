"""The statements whose SQL differs between SQLite and PostgreSQL: insert-or-ignore and upsert-if.

Both backends speak ``INSERT ... ON CONFLICT``, which makes these single statements race-safe:
two concurrent writers never both insert, and neither sees a unique-constraint error.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase

from activities.errors import StoreError

__all__ = ["insert_or_ignore", "upsert_where"]

_Insert = postgresql.Insert | sqlite.Insert


def _insert(dialect: str, model: type[DeclarativeBase], values: dict[str, Any]) -> _Insert:
    if dialect == "postgresql":
        return postgresql.insert(model).values(**values)
    if dialect == "sqlite":
        return sqlite.insert(model).values(**values)
    raise StoreError(
        f"database dialect '{dialect}' is not supported",
        service="store",
        hint="Use SQLite (sqlite+aiosqlite:///path) or PostgreSQL (postgresql+asyncpg://...)",
    )


def insert_or_ignore(
    dialect: str, model: type[DeclarativeBase], values: dict[str, Any], keys: list[str]
) -> _Insert:
    """INSERT that does nothing when a row with the same ``keys`` exists (rowcount 0)."""
    return _insert(dialect, model, values).on_conflict_do_nothing(index_elements=keys)


def upsert_where(
    dialect: str,
    model: type[DeclarativeBase],
    values: dict[str, Any],
    keys: list[str],
    update: list[str],
    where: ColumnElement[bool] | None = None,
) -> _Insert:
    """INSERT, or on conflict UPDATE ``update`` columns to the new values when ``where`` holds.

    ``where`` compares the stored row's columns with plain values (``Model.col <= 3``); when it
    is false the statement changes nothing, which ``RETURNING`` reveals as no row.
    """
    ins = _insert(dialect, model, values)
    set_ = {name: ins.excluded[name] for name in update}
    return ins.on_conflict_do_update(index_elements=keys, set_=set_, where=where)
