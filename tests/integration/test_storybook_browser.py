"""The exported storybook in a real browser: every picture shows, no script runs, it looks right.

Headless Debian Chromium over the DevTools protocol (tests/fixtures/chromium.py). A control page
proves the probe notices a script when one does run, so the "nothing ran" check can fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from activities.store.db import open_store, upgrade
from starter.book import load_book
from starter.export_html import write_html
from tests.fixtures.chromium import Browser, require_chromium
from tests.fixtures.storybook import HOSTILE, make_story

pytestmark = [pytest.mark.asyncio(loop_scope="session")]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with Browser(width=900, height=1200) as b:
        yield b


@pytest_asyncio.fixture(loop_scope="session")
async def book_page(tmp_path: Path) -> Path:
    url = f"sqlite+aiosqlite:///{tmp_path / 'storyloom.db'}"
    await upgrade(url)
    store = await open_store(url)
    try:
        ids = await make_story(store, tmp_path / "media")
        return write_html(await load_book(store, ids.story), tmp_path / "book")
    finally:
        await store.close()


async def test_storybook_shows_every_picture_and_runs_no_script(browser: Browser,
                                                                book_page: Path,
                                                                tmp_path: Path) -> None:
    visit = await browser.visit(book_page.as_uri())

    images = visit.probe["images"]
    assert len(images) >= 4, images  # two scenes and two character references
    assert all(i["complete"] and i["w"] > 0 for i in images), images
    assert visit.dialogs == [] and visit.console == []
    assert visit.probe["scripts"] == 0 and visit.probe["handlers"] == []
    assert not visit.probe["pwned"]
    assert HOSTILE in visit.probe["text"]  # the reader sees the model's markup as text
    assert visit.screenshot.startswith(PNG_MAGIC) and len(visit.screenshot) > 10_000
    (tmp_path / "storybook.png").write_bytes(visit.screenshot)


async def test_the_probe_notices_a_script_that_runs(browser: Browser, tmp_path: Path) -> None:
    """Control: the same checks on an unescaped page without CSP do see the script."""
    page = tmp_path / "unsafe.html"
    page.write_text(f"<html><body><p>{HOSTILE}</p><script>window.pwned = 1</script></body></html>")

    visit = await browser.visit(page.as_uri())

    assert "alert: 1" in visit.dialogs
    assert visit.probe["pwned"] and visit.probe["scripts"] == 2
    assert visit.probe["handlers"] == ["onerror"]
