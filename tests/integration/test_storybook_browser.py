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


async def test_a_book_in_the_data_dir_shows_the_pictures_where_they_are(
        browser: Browser, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'storyloom.db'}"
    await upgrade(url)
    store = await open_store(url)
    try:
        ids = await make_story(store, tmp_path / "media")
        page = write_html(await load_book(store, ids.story), tmp_path / "storybook",
                          home=tmp_path)
    finally:
        await store.close()

    visit = await browser.visit(page.as_uri())

    images = visit.probe["images"]
    assert images and all(i["src"].startswith("../media/") for i in images), images
    assert all(i["complete"] and i["w"] > 0 for i in images), images
    assert not (tmp_path / "storybook" / "images").exists()


async def test_the_probe_notices_a_script_that_runs(browser: Browser, tmp_path: Path) -> None:
    """Control: the same checks on an unescaped page without CSP do see the script."""
    page = tmp_path / "unsafe.html"
    page.write_text(f"<html><body><p>{HOSTILE}</p><script>window.pwned = 1</script></body></html>")

    visit = await browser.visit(page.as_uri())

    assert "alert: 1" in visit.dialogs
    assert visit.probe["pwned"] and visit.probe["scripts"] == 2
    assert visit.probe["handlers"] == ["onerror"]


def _descendants(root: int) -> set[int]:
    """Running processes below ``root`` (children, grandchildren, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] not in ("Z", "X"):
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


async def test_closing_the_browser_leaves_no_process_and_no_profile(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><body><p>hello</p></body></html>")
    async with Browser(width=400, height=300) as b:
        await b.visit(page.as_uri())
        assert b._proc is not None
        helpers = _descendants(b._proc.pid) | {b._proc.pid}
        profile = Path(b._tmp.name)  # the folder the teardown must remove
        assert len(helpers) > 1  # the browser runs helper processes (zygote, renderer, ...)

    assert not profile.exists()
    still = [pid for pid in helpers if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] not in "ZX"]
    assert still == [], f"chromium processes outlived the browser: {still}"


# A stand-in for Chromium whose helper process outlives the browser process by a moment and
# keeps writing into the profile, as Chromium's helpers do on a loaded machine.
FAKE_HELPER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: None)
profile = sys.argv[1]
open(os.path.join(profile, "helper.pid"), "w").write(str(os.getpid()))
give_up = time.monotonic() + 30  # bounded, even if nobody ever says stop
while not os.path.exists(os.path.join(profile, "stop")) and time.monotonic() < give_up:
    time.sleep(0.01)
end = time.monotonic() + 1.0
while time.monotonic() < end:
    os.makedirs(os.path.join(profile, "Crashpad"), exist_ok=True)
    open(os.path.join(profile, "Crashpad", "report"), "w").write("x")
    time.sleep(0.01)
"""
FAKE_BROWSER = """
import os, signal, subprocess, sys, time
profile = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--user-data-dir="))
subprocess.Popen([sys.executable, "-c", HELPER, profile])
while not os.path.exists(os.path.join(profile, "helper.pid")):
    time.sleep(0.01)
def bye(*_):
    open(os.path.join(profile, "stop"), "w").close()
    os._exit(0)
signal.signal(signal.SIGTERM, bye)
open(os.path.join(profile, "DevToolsActivePort"), "w").write("1\\n/devtools/browser/x\\n")
while True:
    time.sleep(1)
"""


async def test_teardown_waits_for_helpers_that_outlive_the_browser(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tests.fixtures import chromium

    fake = tmp_path / "fake-chromium"
    fake.write_text(f"#!{sys.executable}\nHELPER = {FAKE_HELPER!r}\n{FAKE_BROWSER}")
    fake.chmod(0o755)
    monkeypatch.setattr(chromium, "require_chromium", lambda: str(fake))

    async with chromium.Browser() as b:
        profile = Path(b._tmp.name)
        helper = int((profile / "helper.pid").read_text())

    assert not Path(f"/proc/{helper}").exists() or (
        Path(f"/proc/{helper}/stat").read_text().split(") ")[-1][0] in "ZX")
    assert not profile.exists()
