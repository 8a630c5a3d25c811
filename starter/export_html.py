"""Write a ``Book`` as a self-contained HTML storybook: ``index.html`` plus its ``images/``.

The page needs no network and runs no script: a Content-Security-Policy meta tag allows only
images from the page's own folder (or data: URIs) and inline style. Every text comes from an LLM
and is untrusted, so every text and attribute value goes through ``html.escape`` and attribute
values are always double-quoted; image files are copied under names we choose (content hash),
never under a name taken from the data.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from html import escape
from pathlib import Path

from starter.book import Book, BookCharacter, BookScene

__all__ = ["CSP", "IMAGE_SUFFIXES", "ImageShelf", "render_html", "write_html"]

CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})

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
    """Copies pictures into ``images/`` once each, named by content hash; returns their href."""

    def __init__(self, out_dir: Path | None) -> None:
        self._dir = out_dir / "images" if out_dir is not None else None
        self._done: dict[str, str | None] = {}

    def href(self, source: str | None) -> str | None:
        if not source:
            return None
        if source not in self._done:
            self._done[source] = self._copy(Path(source))
        return self._done[source]

    def _copy(self, path: Path) -> str | None:
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES or not path.is_file():
            return None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
        name = f"{digest}{suffix}"
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self._dir / name)
        return f"images/{name}"


def _paragraphs(text: str) -> str:
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "\n".join(f"<p>{_e(b)}</p>" for b in blocks)


def _toc(book: Book) -> str:
    lines = ["<nav><h2>Contents</h2>"]
    depth = -1
    for scene in book.scenes:
        rel = scene.depth - (book.scenes[0].depth if book.scenes else 0)
        while depth < rel:
            lines.append("<ul>")
            depth += 1
        while depth > rel:
            lines.append("</ul>")
            depth -= 1
        lines.append(f'<li><a href="#{_anchor("scene", scene.id)}">{_e(scene.title)}</a></li>')
    lines.extend(["</ul>"] * (depth + 1))
    lines.append("</nav>")
    return "\n".join(lines)


def _figure(scene: BookScene, images: ImageShelf) -> str:
    href = images.href(scene.image_path) if scene.image_status == "done" else None
    if href is not None:
        return (f'<figure><img src="{_e(href)}" alt="{_e(scene.title)}">'
                f"<figcaption>{_e(scene.direction)}</figcaption></figure>")
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
            links.append(f'<li><a href="#{_anchor("scene", child.id)}">{_e(child.title)}</a>'
                         f" — {_e(child.direction)}</li>")
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


def render_html(book: Book, out_dir: Path | None = None) -> str:
    """The page's HTML; with ``out_dir``, also copies the pictures into ``out_dir/images``."""
    images = ImageShelf(out_dir)
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
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(book.title)}</title><style>{_STYLE}</style></head><body>",
        *body,
        f'<footer class="meta">storyloom story {_e(book.story_id)}</footer>',
        "</body></html>",
        "",
    ])


def write_html(book: Book, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/images/*``; returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "index.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(render_html(book, out_dir), encoding="utf-8")
    tmp.replace(page)
    return page
