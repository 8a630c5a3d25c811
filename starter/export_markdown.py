"""Write a ``Book`` as Markdown for a notes app: headings per scene, pictures, branches, cast.

LLM text is untrusted here too: many Markdown viewers render inline HTML, so ``<`` and ``&``
are written as entities and Markdown link/heading syntax in titles is backslash-escaped.
With a file, pictures are linked where storyloom keeps them when the file lies in the data
directory, and copied into ``images/`` beside it otherwise (relative links); on stdout the
links point at the pictures where they are. Every scene is a level-2 heading: branches are
said in words, not by ever smaller headings.
"""

from __future__ import annotations

import re
from pathlib import Path

from starter.book import Book, BookScene
from starter.book_files import foreign_pictures, record_pictures
from starter.export_html import ImageShelf, NotABookFolder
from workflows_temporal.scene_prompts import is_continuation

__all__ = ["check_markdown_folder", "render_markdown", "write_markdown"]

_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]#!|])")


def _text(value: str) -> str:
    """Body text: no HTML can get through; Markdown emphasis is left alone."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _inline(value: str) -> str:
    """A title or name on one line: also no link, image, heading or table syntax."""
    return _INLINE_SPECIAL.sub(r"\\\1", _text(" ".join(value.split())))


def _uri(path: str | None) -> str | None:
    return Path(path).resolve().as_uri() if path and Path(path).is_file() else None


def _picture(scene: BookScene, images: ImageShelf | None) -> str | None:
    if scene.image_status == "failed":
        return f"*No picture: {_inline(scene.image_error or 'render failed')}*"
    if scene.image_status != "done" or not scene.image_path:
        return None
    href = images.href(scene.image_path) if images else _uri(scene.image_path)
    return f"![{_inline(scene.title)}](<{href}>)" if href else "*The picture file is missing.*"


def _scene(book: Book, scene: BookScene, images: ImageShelf | None) -> list[str]:
    out = [f"## {_inline(scene.title)}", ""]
    parent = book.scene(scene.parent_id) if scene.parent_id else None
    if parent is not None and len(parent.children) > 1:
        out += [f"*A branch after “{_inline(parent.title)}”*", ""]
    if not is_continuation(scene.direction):
        out += [f"*{_inline(scene.direction)}*", ""]
    if (picture := _picture(scene, images)) is not None:
        out += [picture, ""]
    out += [_text(scene.text.strip()), ""]
    if scene.characters:
        out += ["In this scene: " + ", ".join(_inline(n) for n in scene.characters), ""]
    if book.path_to is None and len(scene.children) > 1:
        titles = [c.title for cid in scene.children if (c := book.scene(cid)) is not None]
        out += ["Branches: " + " · ".join(_inline(t) for t in titles), ""]
    return out


def render_markdown(book: Book, out_dir: Path | None = None, home: Path | None = None) -> str:
    """The Markdown text; with ``out_dir`` pictures are placed as ``ImageShelf`` does."""
    return _render(book, ImageShelf(out_dir, home) if out_dir is not None else None)


def _render(book: Book, images: ImageShelf | None) -> str:
    lines = [f"# {_inline(book.title)}", "", f"> {_inline(book.premise)}", ""]
    for scene in book.scenes:
        lines += _scene(book, scene, images)
    if book.characters:
        lines += ["## Characters", ""]
        for character in book.characters:
            href = images.href(character.reference_image) if images else (
                _uri(character.reference_image))
            picture = f" ![{_inline(character.name)}](<{href}>)" if href else ""
            lines.append(f"- **{_inline(character.name)}**: {_inline(character.look)}{picture}")
        lines.append("")
    return "\n".join(lines)


def check_markdown_folder(path: Path, *, force: bool = False) -> None:
    """NotABookFolder when ``images/`` beside ``path`` holds files no storyloom export there
    wrote, unless ``force``; nothing is written."""
    images_dir = path.parent / "images"
    foreign = foreign_pictures(path.parent)
    if foreign and not force:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise NotABookFolder(
            f"{images_dir} holds files storyloom did not write ({shown}); the pictures of "
            f"{path.name} would go there among them. Write the notes into another folder, or "
            "add --force to write there anyway (those files are never removed).")


def write_markdown(book: Book, path: Path, *, home: Path | None = None,
                   force: bool = False) -> Path:
    """Write the Markdown file (and, for pictures from outside ``home``, ``images/`` beside
    it); returns ``path``.

    Raises NotABookFolder, before writing anything, when ``images/`` beside it holds files no
    storyloom export there wrote, unless ``force`` (the rule of ``write_html``). Pictures this
    file copied before and no longer shows are removed, and only those."""
    check_markdown_folder(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    shelf = ImageShelf(path.parent, home)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_render(book, shelf), encoding="utf-8")
    tmp.replace(path)
    record_pictures(path.parent, path.name, shelf.written)
    return path
