"""Which pictures in a book folder's ``images/`` belong to which exported file.

Several exports may share one folder (``index.html`` and ``story.md`` beside it): each one
owns exactly the pictures it copied, listed in ``.storyloom-files.json`` in the folder as
``{"owners": {"index.html": ["<hash>.png", ...], "story.md": [...]}}``. Writing a file again
removes only the pictures that file owned and no longer shows, and never one another file
still shows or one storyloom did not write (a file not listed is foreign).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MANIFEST", "foreign_pictures", "record_pictures"]

MANIFEST = ".storyloom-files.json"


def _owners(folder: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        owners = data.get("owners", {}) if isinstance(data, dict) else {}
        return {str(k): [str(n) for n in v] for k, v in owners.items() if isinstance(v, list)}
    except (OSError, ValueError):
        return {}


def foreign_pictures(folder: Path) -> list[str]:
    """Names of the files in ``folder/images`` that no storyloom export there listed."""
    images = folder / "images"
    if not images.is_dir():
        return []
    listed = {n for names in _owners(folder).values() for n in names}
    return sorted(p.name for p in images.iterdir() if p.name not in listed)


def record_pictures(folder: Path, owner: str, shown: set[str]) -> None:
    """``owner`` (a file in ``folder``) now shows exactly ``shown`` (names in
    ``folder/images``): remove the pictures it alone showed before and no longer does, and
    list ``shown`` under its name. An emptied ``images/`` is removed."""
    images = folder / "images"
    owners = _owners(folder)
    before = set(owners.pop(owner, []))
    still = {n for names in owners.values() for n in names} | shown
    for name in before - still:
        (images / name).unlink(missing_ok=True)
    if shown:
        owners[owner] = sorted(shown)
    if owners:
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"owners": owners}, indent=1), encoding="utf-8")
        tmp.replace(folder / MANIFEST)
    else:
        (folder / MANIFEST).unlink(missing_ok=True)
    if images.is_dir() and not any(images.iterdir()):
        images.rmdir()
