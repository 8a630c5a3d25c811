"""`storyloom export`: the storybook a reader opens, the Markdown a note-taker keeps, `ui` links."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio

from activities.store.db import Store, open_store, upgrade
from starter.book import load_book
from starter.export_html import CSP, write_html
from starter.export_markdown import render_markdown
from tests.fixtures.storybook import HOSTILE, StoryIds, make_story

CLI = [sys.executable, "-m", "starter.cli"]


@dataclass
class Page(HTMLParser):
    """What a browser would build: the tags with their attributes, and the visible text."""

    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@dataclass
class Library:
    data_dir: Path
    store: Store
    ids: StoryIds


@pytest_asyncio.fixture(loop_scope="session")
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite+aiosqlite:///{data_dir / 'storyloom.db'}"
    await upgrade(url)
    store = await open_store(url)
    try:
        yield Library(data_dir, store, await make_story(store, data_dir / "media"))
    finally:
        await store.close()


def storyloom(lib: Library, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORYLOOM_DATA_DIR": str(lib.data_dir), "STORYLOOM_LOG_JSON": "1"}
    env.pop("STORYLOOM_DATABASE_URL", None)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


async def test_hostile_scene_text_renders_as_text_not_markup(library: Library,
                                                           tmp_path: Path) -> None:
    page_file = write_html(await load_book(library.store, library.ids.story), tmp_path / "book")
    html = page_file.read_text()
    page = parse(html)

    assert not page.all("script"), "an LLM's <script> became a real element"
    visible = "".join(page.text)
    assert HOSTILE in visible  # the reader sees exactly what the model wrote
    assert "Ember's <i>Trick</i>" in visible and not page.all("i")
    for _, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), attrs
    images = page.all("img")
    assert images and all((a["src"] or "").startswith("images/") for a in images)
    assert "x" not in {a["src"] for a in images}
    assert [a["content"] for a in page.all("meta") if a.get("http-equiv")] == [CSP]


async def test_storybook_copies_every_picture_and_links_the_branches(library: Library,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "book"
    page = parse(write_html(await load_book(library.store, library.ids.story), out).read_text())

    sources = {a["src"] for a in page.all("img")}
    # two scene pictures; the root's picture is also both characters' reference (deduplicated)
    assert len(sources) == 2
    originals = {p.read_bytes() for p in (library.data_dir / "media").glob("*.png")}
    assert {(out / str(src)).read_bytes() for src in sources} == originals
    ids = {a["id"] for _, a in page.tags if a.get("id")}
    hrefs = {a["href"] for a in page.all("a")}
    for node in (library.ids.root, library.ids.hostile, library.ids.calm):
        assert f"scene-{node}" in ids and f"#scene-{node}" in hrefs
    assert all(h is not None and h.startswith("#") and h[1:] in ids for h in hrefs)
    visible = "".join(page.text)
    assert "Choose a branch:" in visible and "ComfyUI node KSampler failed" in visible
    assert "Ember <b>" in visible and 'red fox "with" a scar' in visible


async def test_path_export_keeps_only_the_chosen_branch(library: Library, tmp_path: Path) -> None:
    book = await load_book(library.store, library.ids.story, library.ids.calm)
    page = parse(write_html(book, tmp_path / "path").read_text())

    sections = [a["id"] for t, a in page.tags if t == "section" and a.get("class") == "scene"]
    assert sections == [f"scene-{library.ids.root}", f"scene-{library.ids.calm}"]
    assert "The fox said" not in "".join(page.text)


async def test_markdown_cannot_smuggle_html(library: Library, tmp_path: Path) -> None:
    text = render_markdown(await load_book(library.store, library.ids.story), tmp_path / "md")

    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("](<images/") == 4  # two scene pictures, two character references
    assert (tmp_path / "md" / "images").is_dir()


async def test_export_command_writes_book_and_markdown(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "cli-book"
    run = storyloom(library, "export", library.ids.story, "--html", str(out), "--markdown")

    assert run.returncode == 0, run.stderr
    assert "Calm Sea" in run.stdout and run.stdout.startswith("# ")  # Markdown on stdout
    assert (out / "index.html").is_file() and len(list((out / "images").iterdir())) == 2
    assert "storybook:" in run.stderr

    notes = tmp_path / "notes" / "story.md"
    run = storyloom(library, "export", library.ids.story, "--markdown", str(notes),
                    "--path", library.ids.hostile)
    assert run.returncode == 0, run.stderr
    assert "The fox said" in notes.read_text() and "Calm Sea" not in notes.read_text()


async def test_export_of_unknown_story_is_one_paragraph(library: Library, tmp_path: Path) -> None:
    run = storyloom(library, "export", "s_nope", "--html", str(tmp_path / "x"))

    assert run.returncode == 2
    assert "s_nope" in run.stderr and "storyloom list" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("story", ["s_0123abcd4567", "my story"])
def test_ui_link_lists_the_workflows_filtered_to_the_story(tmp_path: Path, story: str) -> None:
    from starter.settings import Settings
    from starter.ui_link import story_list_url

    settings = Settings(data_dir=tmp_path, temporal_address="127.0.0.1:7233",
                        temporal_ui_port=8233, temporal_namespace="default")
    link = story_list_url(settings, story)

    url = urlsplit(link)
    assert (url.scheme, url.netloc) == ("http", "127.0.0.1:8233")
    assert url.path == "/namespaces/default/workflows"
    assert " " not in link and '"' not in link
    assert parse_qs(url.query) == {"query": [f'StoryId="{story}"']}


# ---- the folder the book goes into, and one copy of each picture ------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


async def test_export_refuses_a_folder_that_holds_other_files(library: Library,
                                                              tmp_path: Path) -> None:
    foreign = tmp_path / "my-documents"
    (foreign / "images").mkdir(parents=True)
    (foreign / "index.html").write_text("<p>my own page</p>")
    (foreign / "images" / "holiday.png").write_bytes(b"not ours")
    before = _tree(foreign)

    run = storyloom(library, "export", library.ids.story, "--html", str(foreign))

    assert run.returncode == 2 and "--force" in run.stderr and str(foreign) in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert _tree(foreign) == before  # nothing written, nothing removed
    root = storyloom(library, "export", library.ids.story, "--html", "/")
    assert root.returncode == 2 and not Path("/index.html").exists()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for extra in ([], ["--force"]):
        on_file = storyloom(library, "export", library.ids.story, "--html", str(a_file), *extra)
        assert on_file.returncode == 2 and "is a file" in on_file.stderr, on_file.stderr
    assert a_file.read_text() == "mine"
    forced = storyloom(library, "export", library.ids.story, "--html", str(foreign), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (foreign / "images" / "holiday.png").read_bytes() == b"not ours"


async def test_re_export_removes_the_previous_books_pictures(library: Library,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "book"
    whole = storyloom(library, "export", library.ids.story, "--html", str(out))
    assert whole.returncode == 0, whole.stderr
    assert len(list((out / "images").iterdir())) == 2

    path = storyloom(library, "export", library.ids.story, "--html", str(out),
                     "--path", library.ids.calm)  # root + calm: calm has no picture

    assert path.returncode == 0, path.stderr
    page = parse((out / "index.html").read_text())
    shown = {str(a["src"]) for a in page.all("img")}
    assert {f"images/{p.name}" for p in (out / "images").iterdir()} == shown
    assert len(shown) == 1


async def test_a_book_in_the_data_dir_links_the_pictures_storyloom_keeps(
        library: Library) -> None:
    out = library.data_dir / "storybook"
    run = storyloom(library, "export", library.ids.story, "--html", str(out))
    notes = library.data_dir / "story.md"
    md = storyloom(library, "export", library.ids.story, str(notes), "--markdown")

    assert run.returncode == 0 and md.returncode == 0, run.stderr + md.stderr
    assert not (out / "images").exists() and not (library.data_dir / "images").exists()
    pictures = {str(p) for p in (library.data_dir / "media").glob("*.png")}
    sources = {str(a["src"]) for a in parse((out / "index.html").read_text()).all("img")}
    assert sources and all(s.startswith("../media/") for s in sources)
    assert {str((out / s).resolve()) for s in sources} == {str(Path(p).resolve())
                                                          for p in pictures}
    assert "](<media/" in notes.read_text()


class _Nesting(HTMLParser):
    """Records each element's parent tag, to find lists nested without an item between."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.pairs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("img", "meta", "br", "hr"):
            return
        self.pairs.append((self.stack[-1] if self.stack else "", tag))
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()


async def test_contents_nest_branches_inside_their_scene(library: Library,
                                                         tmp_path: Path) -> None:
    html = write_html(await load_book(library.store, library.ids.story),
                      tmp_path / "book").read_text()
    nesting = _Nesting()
    nesting.feed(html)

    assert ("ul", "ul") not in nesting.pairs
    assert all(parent in ("ul", "ol") for parent, tag in nesting.pairs if tag == "li")
    assert nesting.stack == []


async def test_generated_directions_are_no_captions_and_headings_stay_level(
        library: Library, tmp_path: Path) -> None:
    from workflows_temporal.contracts import SaveNodeInput

    premise = "A lighthouse keeper & a fox <in the storm>"
    await library.store.repo.save_node(SaveNodeInput(
        workflow_id="wf-next", story_id=library.ids.story, parent_node_id=library.ids.calm,
        title="Morning", text="The sea slept.",
        direction=f"Scene 3: continue the story of {premise}",  # as `storyloom story` writes it
        summary="Morning.", model="llama3.2"))
    book = await load_book(library.store, library.ids.story)

    html = write_html(book, tmp_path / "book").read_text()
    text = render_markdown(book)

    assert "continue the story of" not in html.lower()
    assert "continue the story of" not in text.lower()
    headings = [ln.split(" ", 1)[0] for ln in text.splitlines() if ln.startswith("#")]
    assert set(headings[1:]) == {"##"}, headings  # every scene (and the cast) at level 2


async def test_exports_sharing_a_folder_keep_each_others_pictures(library: Library,
                                                                 tmp_path: Path) -> None:
    import re

    shared = tmp_path / "shared"
    notes = storyloom(library, "export", library.ids.story, "--markdown", str(shared / "story.md"))
    assert notes.returncode == 0, notes.stderr
    linked = re.findall(r"\]\(<(images/[^>]+)>\)", (shared / "story.md").read_text())
    assert len(set(linked)) == 2, linked
    book = storyloom(library, "export", library.ids.story, "--html", str(shared), "--force")
    assert book.returncode == 0, book.stderr

    fewer = storyloom(library, "export", library.ids.story, "--html", str(shared),
                      "--path", library.ids.calm)  # this page shows one picture only

    assert fewer.returncode == 0, fewer.stderr
    assert all((shared / link).is_file() for link in linked), sorted(_tree(shared))
    again = storyloom(library, "export", library.ids.story, "--markdown", str(shared / "story.md"),
                      "--path", library.ids.calm)
    assert again.returncode == 0, again.stderr
    shown = set(re.findall(r'src="(images/[^"]+)"', (shared / "index.html").read_text()))
    assert {f"images/{p.name}" for p in (shared / "images").iterdir()} == shown  # no leftovers


async def test_markdown_refuses_a_foreign_images_folder_unless_forced(library: Library,
                                                                     tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "holiday.png").write_bytes(b"not ours")

    refused = storyloom(library, "export", library.ids.story, "--markdown",
                        str(folder / "story.md"), "--html", str(tmp_path / "book"))

    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "holiday.png" in line and "--force" in line, line
    assert not (folder / "story.md").exists() and not (tmp_path / "book").exists()
    forced = storyloom(library, "export", library.ids.story, "--markdown",
                       str(folder / "story.md"), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (folder / "images" / "holiday.png").read_bytes() == b"not ours"
    assert len(list((folder / "images").iterdir())) == 3
