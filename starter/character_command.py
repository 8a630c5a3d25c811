"""`storyloom character list|set-image|describe`: let the user take control of a story's cast.

The canonical look is what every later image prompt repeats verbatim; the reference picture is
what the ``scene_with_reference`` template conditions on. Both take effect from the next scene.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from activities.errors import StoreError
from starter.console import screen
from starter.outcome import EXIT_OK, EXIT_USAGE, CliFailure
from starter.settings import Settings
from starter.tree_command import open_store

__all__ = ["describe_character", "list_characters", "set_character_image"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


async def list_characters(settings: Settings, story_id: str) -> int:
    """A table: name, canonical look, reference picture."""
    store = await open_store(settings)
    try:
        try:
            cast = await store.repo.list_characters(story_id)
        except StoreError as exc:
            raise CliFailure(exc.describe(), EXIT_USAGE) from exc
        if not cast:
            print(f"story {story_id} has no characters yet")
            return EXIT_OK
        table = Table("name", "canonical look", "reference image", title=f"story {story_id}")
        for person in cast:
            table.add_row(escape(person.name), escape(person.look or "(none yet)"),
                          escape(person.reference_image or "(none yet)"))
        screen().print(table)
        return EXIT_OK
    finally:
        await store.close()


async def describe_character(settings: Settings, story_id: str, name: str, look: str) -> int:
    """Replace (or define) the canonical look of ``name``."""
    store = await open_store(settings)
    try:
        try:
            person = await store.repo.set_character_look(story_id, name, look)
        except StoreError as exc:
            raise CliFailure(exc.describe(), EXIT_USAGE) from exc
        print(f"{person.name}: {person.look}")
        return EXIT_OK
    finally:
        await store.close()


def _copy_into_media(settings: Settings, source: Path) -> tuple[Path, str, int]:
    """Copy the picture into media/references/<sha256><suffix> (temp name, then rename)."""
    if not source.is_file():
        raise CliFailure(f"{source} is not a file", EXIT_USAGE)
    if source.suffix.lower() not in _IMAGE_SUFFIXES:
        raise CliFailure(f"{source} is not a picture ({', '.join(sorted(_IMAGE_SUFFIXES))})",
                         EXIT_USAGE)
    data = source.read_bytes()
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
    target, sha, size = _copy_into_media(settings, file)
    store = await open_store(settings)
    try:
        try:
            person = await store.repo.set_character_image(story_id, name, str(target), sha,
                                                          size=size)
        except StoreError as exc:
            raise CliFailure(exc.describe(), EXIT_USAGE) from exc
        print(f"{person.name}: reference image {person.reference_image}")
        return EXIT_OK
    finally:
        await store.close()
