"""Write a ``Book`` as a self-contained HTML storybook: ``index.html`` plus its ``images/``.

The page needs no network and runs no script: a Content-Security-Policy meta tag allows only
images from the page's own folder (or data: URIs) and inline style. Every text comes from an LLM
and is untrusted, so every text and attribute value goes through ``html.escape`` and attribute
values are always double-quoted; image files are copied under names we choose (content hash),
never under a name taken from the data.

One copy of each picture: a book written inside the data directory (the demo's
``storybook/``) links to the pictures where storyloom keeps them (``media/``); a book
exported anywhere else gets its own copies in ``images/``. ``write_html`` writes only into a
new or empty folder or into an earlier storyloom book (``--force`` overrides), and removes only
the pictures that page itself copied earlier and no longer shows (``starter.book_files``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from html import escape
from pathlib import Path
from urllib.parse import quote

from starter.book import Book, BookCharacter, BookScene
from starter.book_files import record_pictures
from workflows_temporal.scene_prompts import is_continuation

__all__ = ["CSP", "GENERATOR", "IMAGE_SUFFIXES", "ImageShelf", "NotABookFolder", "is_book_folder",
           "render_html", "write_html"]

CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
GENERATOR = '<meta name="generator" content="storyloom">'  # marks a folder as a storyloom book
_OLD_MARK = '<footer class="meta">storyloom story '  # books written before the generator tag


class NotABookFolder(ValueError):
    """The target folder holds other files: writing the book there could overwrite them."""

_STYLE = """
body { font-family: Georgia, serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; background: #fbf8f1; line-height: 1.55; }
h1 { font-size: 2.1rem; margin-bottom: .2rem; } .premise { font-style: italic; color: #555; }
nav ul { list-style: none; padding-left: 1.1rem; } nav > ul { padding-left: 0; }
section.scene { border-top: 1px solid #d8cfbf; margin-top: 2rem; padding-top: 1rem; }
figure { margin: 1rem 0; } figure img { width: 100%; max-width: 24rem; border-radius: 6px; }
figcaption { font-style: italic; font-size: .9rem; color: #666; }
.meta, .branches { font-size: .9rem; color: #555; } .failed { color: #9a2b12; }
.cast { display: flex; flex-wrap: wrap; gap: 1rem; }
.character { width: 13rem; } .character img { width: 100%; border-radius: 6px; }
a { color: #5a3d8a; }
"""


def _e(text: object) -> str:
    """Escape for element content and double-quoted attribute values alike."""
    return escape(str(text), quote=True)


def _anchor(prefix: str, ident: str) -> str:
    return f"{prefix}-" + re.sub(r"[^A-Za-z0-9_-]", "_", ident)


class ImageShelf:
    """Where each picture is for a page written into ``out_dir``.

    With ``home`` (the data directory) containing both ``out_dir`` and the picture, the page
    links to the picture where it is (a relative path). Otherwise the picture is copied into
    ``out_dir/images/`` once, named by its content hash. ``written`` lists the copies.
    """

    def __init__(self, out_dir: Path | None, home: Path | None = None) -> None:
        self._out = out_dir
        self._dir = out_dir / "images" if out_dir is not None else None
        self._home = home.resolve() if home is not None else None
        self._done: dict[str, str | None] = {}
        self.written: set[str] = set()

    def href(self, source: str | None) -> str | None:
        if not source:
            return None
        if source not in self._done:
            self._done[source] = self._place(Path(source))
        return self._done[source]

    def _inside_home(self, path: Path) -> bool:
        return self._home is not None and path.resolve().is_relative_to(self._home)

    def _place(self, path: Path) -> str | None:
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES or not path.is_file():
            return None
        if self._out is not None and self._inside_home(self._out) and self._inside_home(path):
            rel = os.path.relpath(path.resolve(), self._out.resolve())
            return "/".join(quote(part) for part in Path(rel).parts)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
        name = f"{digest}{suffix}"
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self._dir / name)
            self.written.add(name)
        return f"images/{name}"


def _paragraphs(text: str) -> str:
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "\n".join(f"<p>{_e(b)}</p>" for b in blocks)


def _toc_chain(book: Book, scene: BookScene | None) -> str:
    """``<ul>`` of a scene and the scenes that follow it one by one; a scene with several
    branches holds them in a nested list inside its own ``<li>`` (valid HTML: li > ul)."""
    items = []
    while scene is not None:
        kids = [k for k in (book.scene(c) for c in scene.children) if k is not None]
        branches = ""
        if len(kids) > 1:
            branches = "<ul>" + "".join(f"<li>{_toc_chain(book, k)}</li>" for k in kids) + "</ul>"
        items.append(f'<li><a href="#{_anchor("scene", scene.id)}">{_e(scene.title)}</a>'
                     f"{branches}</li>")
        scene = kids[0] if len(kids) == 1 else None
    return "<ul>" + "\n".join(items) + "</ul>"


def _toc(book: Book) -> str:
    roots = [s for s in book.scenes if s.parent_id is None or book.scene(s.parent_id) is None]
    lists = "\n".join(_toc_chain(book, root) for root in roots)
    return f"<nav><h2>Contents</h2>\n{lists}\n</nav>"


def _caption(scene: BookScene) -> str | None:
    """The user's direction, not the instruction storyloom wrote for a story's next scene."""
    return None if is_continuation(scene.direction) else scene.direction


def _figure(scene: BookScene, images: ImageShelf) -> str:
    href = images.href(scene.image_path) if scene.image_status == "done" else None
    if href is not None:
        caption = _caption(scene)
        return (f'<figure><img src="{_e(href)}" alt="{_e(scene.title)}">'
                + (f"<figcaption>{_e(caption)}</figcaption>" if caption else "") + "</figure>")
    if scene.image_status == "failed":
        return f'<p class="meta failed">No picture: {_e(scene.image_error or "render failed")}</p>'
    if scene.image_status == "done":
        return '<p class="meta failed">The picture file is missing.</p>'
    return ""


def _branches(book: Book, scene: BookScene) -> str:
    links = []
    for child_id in scene.children:
        child = book.scene(child_id)
        if child is not None:
            caption = _caption(child)
            links.append(f'<li><a href="#{_anchor("scene", child.id)}">{_e(child.title)}</a>'
                         + (f" — {_e(caption)}" if caption else "") + "</li>")
    if not links:
        return '<p class="branches">The end of this branch.</p>'
    head = "What happens next:" if len(links) == 1 else "Choose a branch:"
    return f'<div class="branches">{head}<ul>{"".join(links)}</ul></div>'


def _scene(book: Book, scene: BookScene, images: ImageShelf) -> str:
    parts = [f'<section class="scene" id="{_e(_anchor("scene", scene.id))}">',
             f"<h2>{_e(scene.title)}</h2>"]
    parent = book.scene(scene.parent_id) if scene.parent_id else None
    if parent is not None:
        parts.append(f'<p class="meta">Follows <a href="#{_anchor("scene", parent.id)}">'
                     f"{_e(parent.title)}</a></p>")
    parts.append(_figure(scene, images))
    parts.append(_paragraphs(scene.text))
    if scene.characters:
        names = ", ".join(f'<a href="#{_anchor("character", n)}">{_e(n)}</a>'
                          for n in scene.characters)
        parts.append(f'<p class="meta">In this scene: {names}</p>')
    parts.append(_branches(book, scene))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _character(character: BookCharacter, images: ImageShelf) -> str:
    href = images.href(character.reference_image)
    picture = f'<img src="{_e(href)}" alt="{_e(character.name)}">' if href else ""
    return (f'<div class="character" id="{_e(_anchor("character", character.name))}">'
            f"{picture}<h3>{_e(character.name)}</h3><p>{_e(character.look)}</p></div>")


def render_html(book: Book, out_dir: Path | None = None, images: ImageShelf | None = None) -> str:
    """The page's HTML; with ``out_dir``, also places the pictures (see ``ImageShelf``)."""
    images = images or ImageShelf(out_dir)
    body = [f"<h1>{_e(book.title)}</h1>", f'<p class="premise">{_e(book.premise)}</p>']
    if book.path_to is None and len(book.scenes) > 1:
        body.append(_toc(book))
    body.extend(_scene(book, s, images) for s in book.scenes)
    if book.characters:
        body.append('<section id="characters"><h2>Characters</h2><div class="cast">')
        body.extend(_character(c, images) for c in book.characters)
        body.append("</div></section>")
    if not book.scenes:
        body.append("<p>This story has no scenes yet.</p>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        GENERATOR,
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(book.title)}</title><style>{_STYLE}</style></head><body>",
        *body,
        f'<footer class="meta">storyloom story {_e(book.story_id)}</footer>',
        "</body></html>",
        "",
    ])


def is_book_folder(folder: Path) -> bool:
    """True for a folder that does not exist, is empty, or holds a storyloom book."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        return True
    page = folder / "index.html"
    try:
        head = page.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return GENERATOR in head or _OLD_MARK in head


def write_html(book: Book, out_dir: Path, *, home: Path | None = None,
               force: bool = False) -> Path:
    """Write ``out_dir/index.html`` (and ``out_dir/images/*`` for pictures from outside
    ``home``); returns the page's path.

    Raises NotABookFolder, before writing anything, when ``out_dir`` is a file or a non-empty
    folder that is not a storyloom book, unless ``force``. Pictures this page copied before
    and no longer shows are removed, and only those (``starter.book_files``: a Markdown export
    beside it keeps its pictures; a foreign file is never touched)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotABookFolder(f"{out_dir} is a file, not a folder: name a new or empty folder "
                             "for the storybook.")
    ours = is_book_folder(out_dir)
    if not ours and not force:
        raise NotABookFolder(
            f"{out_dir} is not empty and holds no storyloom book; writing there could overwrite "
            "its files. Choose a new or empty folder, or add --force to write into it anyway.")
    out_dir.mkdir(parents=True, exist_ok=True)
    images = ImageShelf(out_dir, home)
    page = out_dir / "index.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(render_html(book, out_dir, images), encoding="utf-8")
    tmp.replace(page)
    record_pictures(out_dir, page.name, images.written)
    return page
