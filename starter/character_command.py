"""`storyloom character list|set-image|describe`: let the user take control of a story's cast.

The canonical look is what every later image prompt repeats verbatim; the reference picture is
what the ``scene_with_reference`` template conditions on. Both take effect from the next scene.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Column, Table

from activities.errors import StoreError
from starter.console import screen
from starter.input_checks import check_look
from starter.outcome import EXIT_OK, EXIT_USAGE, CliFailure
from starter.settings import Settings
from starter.store_access import explain_store_error, open_reading, unknown_id
from starter.tree_command import open_store

__all__ = ["describe_character", "list_characters", "picture_problem", "set_character_image"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
_MIN_PICTURE_BYTES = 64  # no real JPEG or WebP picture is smaller
_MIN_LOOK_COLUMNS = 24  # the look column folds, but not narrower than this
_TABLE_FRAME = 10  # borders and padding of a three-column table


async def list_characters(settings: Settings, story_id: str) -> int:
    """A table: name, canonical look, reference picture."""
    store = await open_reading(settings, story_id)
    try:
        try:
            cast = await store.repo.list_characters(story_id)
        except StoreError as exc:
            raise explain_store_error(settings, exc) from exc
        if not cast:
            print(f"story {story_id} has no characters yet")
            return EXIT_OK
        console = screen()
        names = max(len(p.name) for p in cast)
        paths = max(len(p.reference_image or "(none yet)") for p in cast)
        if names + paths + _MIN_LOOK_COLUMNS + _TABLE_FRAME > console.width:
            # Too narrow for a table that keeps every path on one line: one block per
            # character, each path alone on its line, never broken by us.
            console.print(f"story {story_id}", markup=False, highlight=False)
            for person in cast:
                console.print(f"\n{person.name}\n  look: {person.look or '(none yet)'}\n"
                              f"  reference image:\n    {person.reference_image or '(none yet)'}",
                              markup=False, highlight=False)
            return EXIT_OK
        table = Table(Column("name", no_wrap=True), Column("canonical look", overflow="fold"),
                      Column("reference image", no_wrap=True), title=f"story {story_id}")
        for person in cast:
            table.add_row(escape(person.name), escape(person.look or "(none yet)"),
                          escape(person.reference_image or "(none yet)"))
        console.print(table)
        return EXIT_OK
    finally:
        await store.close()


async def _known_character(store: Any, settings: Settings, story_id: str,
                            name: str) -> None:
    """CliFailure (exit 2) unless ``story_id`` exists and has a character called ``name``."""
    from activities.store.ids import name_key

    try:
        cast = await store.repo.list_characters(story_id)
    except StoreError as exc:
        raise unknown_id(settings, story_id) from exc
    if name_key(name) not in {name_key(c.name) for c in cast}:
        known = ", ".join(c.name for c in cast) or "none yet (characters appear as scenes "
        "name them)"
        raise CliFailure(f"Story {story_id} has no character named {name!r}; its characters: "
                         f"{known}.", EXIT_USAGE)


async def describe_character(settings: Settings, story_id: str, name: str, look: str) -> int:
    """Replace the canonical look of ``name``, a character the story already has."""
    look = check_look(look)
    store = await open_store(settings)
    try:
        await _known_character(store, settings, story_id, name)
        try:
            person = await store.repo.set_character_look(story_id, name, look)
        except StoreError as exc:
            raise CliFailure(exc.describe(), EXIT_USAGE) from exc
        print(f"{person.name}: {person.look}")
        return EXIT_OK
    finally:
        await store.close()


def picture_problem(data: bytes) -> str | None:
    """Why ``data`` is not a PNG, JPEG or WebP picture ComfyUI can load; None when it is one."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 33 or data[12:16] != b"IHDR":
            return "it starts like a PNG but has no image header (a truncated file?)"
        width, height = struct.unpack(">II", data[16:24])
        return None if width and height else "its PNG header says it is 0 pixels wide or high"
    if data[:3] == b"\xff\xd8\xff":
        return None if len(data) >= _MIN_PICTURE_BYTES else "it is a truncated JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return None if len(data) >= _MIN_PICTURE_BYTES else "it is a truncated WebP"
    return f"it is not a PNG, JPEG or WebP picture (it starts with {data[:12]!r})"


def _copy_into_media(settings: Settings, source: Path) -> tuple[Path, str, int]:
    """Copy the picture into media/references/<sha256><suffix> (temp name, then rename)."""
    if not source.is_file():
        raise CliFailure(f"{source} is not a file", EXIT_USAGE)
    if source.suffix.lower() not in _IMAGE_SUFFIXES:
        raise CliFailure(f"{source} is not a picture ({', '.join(sorted(_IMAGE_SUFFIXES))})",
                         EXIT_USAGE)
    data = source.read_bytes()
    problem = picture_problem(data)
    if problem:
        raise CliFailure(f"{source} cannot be a reference picture: {problem}.", EXIT_USAGE)
    sha = hashlib.sha256(data).hexdigest()
    folder = settings.media_dir / "references"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{sha}{source.suffix.lower()}"
    if not target.exists():
        temp = target.with_name(target.name + ".part")
        shutil.copyfile(source, temp)
        temp.replace(target)
    return target, sha, len(data)


async def set_character_image(settings: Settings, story_id: str, name: str, file: Path) -> int:
    """Make ``file`` the reference picture of ``name`` (copied into the media folder)."""
    store = await open_store(settings)
    try:
        await _known_character(store, settings, story_id, name)
        target, sha, size = _copy_into_media(settings, file)
        try:
            person = await store.repo.set_character_image(story_id, name, str(target), sha,
                                                          size=size)
        except StoreError as exc:
            raise CliFailure(exc.describe(), EXIT_USAGE) from exc
        print(f"{person.name}: reference image {person.reference_image}")
        return EXIT_OK
    finally:
        await store.close()
