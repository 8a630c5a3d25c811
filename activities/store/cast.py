"""The characters part of the repository: canonical looks, who is in which scene, references."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from activities.errors import StoreError
from activities.store.dialects import insert_or_ignore, upsert_where
from activities.store.ids import asset_id, character_id, name_key
from activities.store.lookups import require_node_of_story, require_story
from activities.store.models import Asset, Character, NodeCharacter, utcnow
from activities.store.transactions import Transactions
from workflows_temporal.contracts import (
    CharacterLook,
    UpsertCharactersInput,
    UpsertCharactersResult,
)

__all__ = ["MAX_NAME_CHARS", "CastPart", "characters_of", "ensure_asset"]

MAX_NAME_CHARS = 200


async def characters_of(
    session: AsyncSession, story_id: str, keys: list[str] | None = None
) -> list[CharacterLook]:
    """The story's characters (or those with ``keys``, in that order) with reference paths."""
    stmt = (
        select(Character.name, Character.name_key, Character.look, Asset.path)
        .outerjoin(Asset, Asset.id == Character.reference_asset_id)
        .where(Character.story_id == story_id)
        .order_by(Character.created_at, Character.name_key)
    )
    if keys is not None:
        stmt = stmt.where(Character.name_key.in_(keys))
    rows = (await session.execute(stmt)).all()
    looks = {r.name_key: CharacterLook(name=r.name, look=r.look, reference_image=r.path)
             for r in rows}
    order = keys if keys is not None else [r.name_key for r in rows]
    return [looks[k] for k in order if k in looks]


async def ensure_asset(
    session: AsyncSession, path: str, sha256: str, kind: str, size: int | None
) -> str:
    """The id of the asset with this content and kind, recording it first if new."""
    values = {
        "id": asset_id(kind, sha256), "path": path, "sha256": sha256, "kind": kind,
        "size": size, "created_at": utcnow(),
    }
    conn = await session.connection()
    await conn.execute(
        insert_or_ignore(conn.dialect.name, Asset, values, ["sha256", "kind"])
    )
    found = await session.execute(
        select(Asset.id).where(Asset.sha256 == sha256, Asset.kind == kind)
    )
    return found.scalar_one()


def _clean_name(name: str, story_id: str) -> str:
    cleaned = " ".join(name.split())
    if len(cleaned) > MAX_NAME_CHARS:
        raise StoreError(
            f"character name is {len(cleaned)} characters long (at most {MAX_NAME_CHARS})",
            service="store",
            where=f"story {story_id}, character {cleaned[:40]!r}...",
            hint="Give the character a short name; put the description in its look",
        )
    return cleaned


class CastPart(Transactions):
    """Characters of a story. The first description stored is canonical; writes are upserts."""

    async def _ensure_character(
        self, s: AsyncSession, story_id: str, name: str, look: str
    ) -> str:
        key = name_key(name)
        values = {
            "id": character_id(story_id, key), "story_id": story_id, "name": name,
            "name_key": key, "look": look, "reference_asset_id": None, "created_at": utcnow(),
        }
        conn = await s.connection()
        await conn.execute(
            insert_or_ignore(self.dialect(s), Character, values, ["story_id", "name_key"])
        )
        if look:  # a character first seen without a description takes the first real one
            await conn.execute(
                update(Character)
                .where(Character.story_id == story_id, Character.name_key == key)
                .where(Character.look == "")
                .values(look=look)
            )
        found = await s.execute(
            select(Character.id).where(Character.story_id == story_id, Character.name_key == key)
        )
        return found.scalar_one()

    async def upsert_characters(self, inp: UpsertCharactersInput) -> UpsertCharactersResult:
        """Record the scene's cast; returns each one's canonical look and reference picture.

        Idempotent. Blank names are skipped; a known name keeps its stored look. Raises
        StoreError (final) when the node is unknown or belongs to another story.
        """
        async with self.writing() as s:
            await require_node_of_story(s, inp.node_id, inp.story_id)
            keys: list[str] = []
            for person in inp.characters:
                name = _clean_name(person.name, inp.story_id)
                if not name or name_key(name) in keys:
                    continue
                cid = await self._ensure_character(s, inp.story_id, name, person.look.strip())
                conn = await s.connection()
                await conn.execute(
                    insert_or_ignore(
                        self.dialect(s), NodeCharacter,
                        {"node_id": inp.node_id, "character_id": cid},
                        ["node_id", "character_id"],
                    )
                )
                keys.append(name_key(name))
            return UpsertCharactersResult(characters=await characters_of(s, inp.story_id, keys))

    async def list_characters(self, story_id: str) -> list[CharacterLook]:
        """The story's characters, oldest first; StoreError if the story is unknown."""
        async with self.reading() as s:
            await require_story(s, story_id)
            return await characters_of(s, story_id)

    async def set_character_look(self, story_id: str, name: str, look: str) -> CharacterLook:
        """Set (or define) a character's canonical look; the user's word replaces the stored one."""
        cleaned = _clean_name(name, story_id)
        if not cleaned or not look.strip():
            raise StoreError(
                "a character needs a name and a look", service="store",
                where=f"story {story_id}", hint="Give both a non-empty name and description",
            )
        key = name_key(cleaned)
        async with self.writing() as s:
            await require_story(s, story_id)
            values = {
                "id": character_id(story_id, key), "story_id": story_id, "name": cleaned,
                "name_key": key, "look": look.strip(), "reference_asset_id": None,
                "created_at": utcnow(),
            }
            conn = await s.connection()
            await conn.execute(
                upsert_where(self.dialect(s), Character, values, ["story_id", "name_key"], ["look"])
            )
            return (await characters_of(s, story_id, [key]))[0]

    async def set_character_image(
        self, story_id: str, name: str, path: str, sha256: str, *, size: int | None = None
    ) -> CharacterLook:
        """Make the picture at ``path`` the character's reference (replacing any earlier one)."""
        key = name_key(name)
        async with self.writing() as s:
            await require_story(s, story_id)
            found = await s.execute(
                select(Character).where(Character.story_id == story_id, Character.name_key == key)
            )
            character = found.scalar_one_or_none()
            if character is None:
                known = ", ".join(c.name for c in await characters_of(s, story_id)) or "none yet"
                raise StoreError(
                    f"story '{story_id}' has no character named '{name}'",
                    service="store",
                    where=f"story {story_id}",
                    hint=f"Known characters: {known}. Characters appear when a scene names them",
                )
            character.reference_asset_id = await ensure_asset(s, path, sha256, "reference", size)
            await s.flush()
            return (await characters_of(s, story_id, [key]))[0]
