"""The ORM tables of the story store (SQLAlchemy 2 declarative); the schema itself is Alembic's.

No ``relationship()``: the repository queries explicitly, so nothing lazy-loads on a detached
object in async code. Free text is ``Text`` so PostgreSQL never rejects a long title that SQLite
would have accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Asset",
    "Base",
    "Character",
    "Node",
    "NodeCharacter",
    "RenderLeaseRow",
    "SeedType",
    "Story",
    "UtcDateTime",
    "utcnow",
]

# Stable constraint names, so migrations can address them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class SeedType(TypeDecorator[int]):
    """A ComfyUI seed (0..2**64-1) stored as decimal text: no backend integer holds it whole."""

    impl = String(24)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        return None if value is None else str(int(value))

    def process_result_value(self, value: str | None, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that always reads back timezone-aware UTC (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Story(Base):
    """One story: a premise and the settings it was started with."""

    __tablename__ = "stories"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    premise: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Node(Base):
    """One scene of the story tree; ``workflow_id`` is its idempotency key."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    story_id: Mapped[str] = mapped_column(ForeignKey("stories.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    workflow_id: Mapped[str] = mapped_column(Text, unique=True)
    direction: Mapped[str] = mapped_column(Text, default="")
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(Text, default="")
    image_status: Mapped[str] = mapped_column(String(16), default="pending")
    image_path: Mapped[str | None] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    image_error: Mapped[str | None] = mapped_column(Text)
    image_prompt_id: Mapped[str | None] = mapped_column(String(64))
    image_template: Mapped[str | None] = mapped_column(Text)
    image_seed: Mapped[int | None] = mapped_column(SeedType)
    image_prompt: Mapped[str | None] = mapped_column(Text)
    # {"checkpoint", "width", "height"} the illustration was rendered with (None: not recorded)
    image_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    notes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    summary_embedding: Mapped[list[float] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Asset(Base):
    """A file on disk, known by its sha256; ``kind`` is "image" (a render) or "reference"."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("sha256", "kind"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Character(Base):
    """A character of one story; the first ``look`` stored is canonical."""

    __tablename__ = "characters"
    __table_args__ = (UniqueConstraint("story_id", "name_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    story_id: Mapped[str] = mapped_column(ForeignKey("stories.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    name_key: Mapped[str] = mapped_column(Text)
    look: Mapped[str] = mapped_column(Text, default="")
    reference_asset_id: Mapped[str | None] = mapped_column(ForeignKey("assets.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NodeCharacter(Base):
    """Who appears in which scene."""

    __tablename__ = "node_characters"

    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), primary_key=True)
    character_id: Mapped[str] = mapped_column(ForeignKey("characters.id"), primary_key=True)


class RenderLeaseRow(Base):
    """Fencing token of one ComfyUI prompt: the highest attempt seen holds the render."""

    __tablename__ = "render_leases"

    prompt_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
