"""The ComfyUI emulator runs graphs as a real 0.33.0 server would: frames, files, queue, restart."""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from emulators.comfyui import ComfyEmulator
from tests.fixtures.comfy_emulator import (
    collect_frames,
    simple_graph,
    txt2img_graph,
    wait_job_status,
)
from tests.fixtures.common import wait_until


def ws_url(emu: ComfyEmulator, client_id: str | None = None) -> str:
    base = emu.url.replace("http://", "ws://") + "/ws"
    return base + (f"?clientId={client_id}" if client_id else "")


async def first_frame(ws: ClientConnection) -> dict[str, Any]:
    import json

    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Parse a PNG, checking signature and every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, payload))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return chunks


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    chunks = png_chunks(data)
    width, height = struct.unpack(">II", chunks[0][1][:8])
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


async def test_simple_graph_frames_follow_protocol_order(comfy_emulator: ComfyEmulator) -> None:
    async with (
        websockets.connect(ws_url(comfy_emulator, "cid-1")) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        hello = await first_frame(ws)
        assert hello == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "cid-1"},
        }
        r = await client.post("/prompt", json={"prompt": simple_graph(), "client_id": "cid-1"})
        assert r.status_code == 200
        body = r.json()
        assert body["number"] == 0 and body["node_errors"] == {}
        pid = body["prompt_id"]
        frames = await collect_frames(ws, pid)
    assert [f["type"] for f in frames] == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert [
        f["data"]["status"]["exec_info"]["queue_remaining"] for f in frames if f["type"] == "status"
    ] == [1, 1, 0]
    assert [f["data"]["node"] for f in frames if f["type"] == "executing"] == ["1", "2", None]
    states = [f["data"]["nodes"] for f in frames if f["type"] == "progress_state"]
    assert states[0]["1"]["state"] == "running"
    assert {k: v["state"] for k, v in states[2].items()} == {"1": "finished", "2": "running"}
    executed = next(f["data"] for f in frames if f["type"] == "executed")
    image = {"filename": "probe_00001_.png", "subfolder": "", "type": "output"}
    assert executed == {
        "node": "2",
        "display_node": "2",
        "output": {"images": [image]},
        "prompt_id": pid,
    }
    assert (comfy_emulator.root_dir / "output" / "probe_00001_.png").is_file()


async def test_txt2img_graph_writes_png_carrying_latent_size(comfy_emulator: ComfyEmulator) -> None:
    graph = txt2img_graph(seed=7, steps=5, size=80)
    async with (
        websockets.connect(ws_url(comfy_emulator, "painter")) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await first_frame(ws)
        pid = str(uuid.uuid4())
        r = await client.post(
            "/prompt", json={"prompt": graph, "client_id": "painter", "prompt_id": pid}
        )
        assert r.json()["prompt_id"] == pid
        frames = await collect_frames(ws, pid)
        history = (await client.get(f"/history/{pid}")).json()[pid]
        view = await client.get(
            "/view",
            params={"filename": "shot_00001_.png", "subfolder": "storyloom", "type": "output"},
        )
    progress = [
        (f["data"]["value"], f["data"]["max"], f["data"]["node"])
        for f in frames
        if f["type"] == "progress"
    ]
    assert progress == [(k, 5, "3") for k in range(1, 6)]
    order = [f["data"]["node"] for f in frames if f["type"] == "executing"][:-1]
    assert (
        order.index("4") < order.index("6") < order.index("3") < order.index("8") < order.index("9")
    )
    assert frames[-3]["type"] == "execution_success"
    assert history["status"]["status_str"] == "success" and history["status"]["completed"] is True
    assert [m[0] for m in history["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert history["prompt"][1] == pid and history["prompt"][4] == ["9"]
    assert history["outputs"] == {
        "9": {
            "images": [{"filename": "shot_00001_.png", "subfolder": "storyloom", "type": "output"}]
        }
    }
    assert history["meta"]["9"] == {
        "node_id": "9",
        "display_node": "9",
        "parent_node": None,
        "real_node_id": "9",
    }
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    assert view.headers["content-disposition"] == 'filename="shot_00001_.png"'
    width, height, _ = png_pixels(view.content)
    assert (width, height) == (80, 80)
    text = dict(p.split(b"\x00", 1) for k, p in png_chunks(view.content) if k == b"tEXt")
    import json

    assert json.loads(text[b"prompt"]) == graph


async def run_to_end(client: httpx.AsyncClient, graph: dict[str, Any], **extra: Any) -> str:
    r = await client.post("/prompt", json={"prompt": graph, **extra})
    assert r.status_code == 200, r.text
    pid: str = r.json()["prompt_id"]
    await wait_job_status(client, pid, {"completed", "failed", "cancelled"})
    return pid


async def test_png_pixels_are_deterministic_per_seed_and_text(tmp_path: Path) -> None:
    files = []
    for n, seed in enumerate([11, 11, 12]):
        emu = ComfyEmulator(tmp_path / f"run{n}", time_scale=0.01)
        await emu.start()
        try:
            async with httpx.AsyncClient(base_url=emu.url) as client:
                await run_to_end(client, txt2img_graph(seed=seed, prefix="det"))
        finally:
            await emu.stop()
        files.append((tmp_path / f"run{n}" / "output" / "det_00001_.png").read_bytes())
    assert files[0] == files[1]
    pixels = [png_pixels(f)[2] for f in files]
    assert pixels[0] != pixels[2]
    assert len(set(pixels[0])) > 2, "a sampled image is not a flat colour"


async def test_resubmission_is_cached_but_a_new_seed_runs(comfy_emulator: ComfyEmulator) -> None:
    out = comfy_emulator.root_dir / "output" / "storyloom"
    async with (
        websockets.connect(ws_url(comfy_emulator, "c")) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await first_frame(ws)
        for seed, expect_cached, expect_file in [
            (1, [], "shot_00001_.png"),
            (1, ["4", "6", "7", "5", "3", "8", "9"], "shot_00001_.png"),
            (2, ["4", "6", "7", "5"], "shot_00002_.png"),
        ]:
            r = await client.post(
                "/prompt", json={"prompt": txt2img_graph(seed=seed), "client_id": "c"}
            )
            frames = await collect_frames(ws, r.json()["prompt_id"])
            cached = next(f["data"]["nodes"] for f in frames if f["type"] == "execution_cached")
            assert cached == expect_cached
            executed = next(f["data"] for f in frames if f["type"] == "executed")
            assert executed["output"]["images"][0]["filename"] == expect_file
            ran_sampler = any(f["type"] == "progress" for f in frames)
            assert ran_sampler == ("3" not in expect_cached)
    assert sorted(p.name for p in out.iterdir()) == ["shot_00001_.png", "shot_00002_.png"]


async def slow(emu: ComfyEmulator, client: httpx.AsyncClient) -> None:
    """Make each sampler step take 0.1 s (step_delay × time_scale)."""
    r = await client.post("/_emulator/faults", json={"step_delay": 10.0})
    assert r.status_code == 200


async def test_duplicate_prompt_id_runs_twice_and_last_history_wins(
    comfy_emulator: ComfyEmulator,
) -> None:
    pid = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        await slow(comfy_emulator, client)
        first = await client.post(
            "/prompt", json={"prompt": txt2img_graph(steps=3, prefix="one"), "prompt_id": pid}
        )
        second = await client.post(
            "/prompt", json={"prompt": txt2img_graph(steps=3, prefix="two"), "prompt_id": pid}
        )
        assert (first.json()["number"], second.json()["number"]) == (0, 1)
        assert first.json()["prompt_id"] == second.json()["prompt_id"] == pid
        queue = (await client.get("/queue")).json()
        ids = [e[1] for e in queue["queue_running"] + queue["queue_pending"]]
        assert ids == [pid, pid] and all(len(e) == 5 for e in queue["queue_pending"])
        job = await wait_job_status(client, pid, {"in_progress"})
        assert job["priority"] == 0
        await wait_until(lambda: comfy_emulator.stats["completed"] == 2, timeout=10)
        history = (await client.get(f"/history/{pid}")).json()[pid]
    assert history["outputs"]["9"]["images"][0]["filename"] == "two_00001_.png"
    assert history["prompt"][0] == 1
    stats = comfy_emulator.stats
    assert stats["executed_by_prompt"] == {pid: 2} and stats["submitted"] == 2


async def test_queue_delete_and_clear_touch_pending_only(comfy_emulator: ComfyEmulator) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        await slow(comfy_emulator, client)
        a = (await client.post("/prompt", json={"prompt": txt2img_graph(steps=5)})).json()
        b = (await client.post("/prompt", json={"prompt": simple_graph("b")})).json()
        c = (await client.post("/prompt", json={"prompt": simple_graph("c")})).json()
        await wait_job_status(client, a["prompt_id"], {"in_progress"})
        r = await client.post("/queue", json={"delete": [a["prompt_id"], b["prompt_id"], "nope"]})
        assert r.status_code == 200 and r.content == b"" and "content-type" not in r.headers
        queue = (await client.get("/queue")).json()
        assert [e[1] for e in queue["queue_running"]] == [a["prompt_id"]]
        assert [e[1] for e in queue["queue_pending"]] == [c["prompt_id"]]
        assert (await client.get(f"/api/jobs/{b['prompt_id']}")).status_code == 404
        r = await client.post("/queue", json={"clear": True})
        assert r.content == b""
        assert (await client.get("/queue")).json()["queue_pending"] == []
        done = await wait_job_status(client, a["prompt_id"], {"completed"})
        history = (await client.get("/history")).json()
    assert done["outputs_count"] == 1
    assert list(history) == [a["prompt_id"]]  # deleted/cleared prompts never ran


async def test_interrupt_only_hits_the_matching_prompt(comfy_emulator: ComfyEmulator) -> None:
    async with (
        websockets.connect(ws_url(comfy_emulator, "w")) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await first_frame(ws)
        await slow(comfy_emulator, client)
        pid = (
            await client.post(
                "/prompt", json={"prompt": txt2img_graph(steps=200), "client_id": "w"}
            )
        ).json()["prompt_id"]
        await wait_job_status(client, pid, {"in_progress"})
        r = await client.post("/interrupt", json={"prompt_id": str(uuid.uuid4())})
        assert r.status_code == 200 and r.content == b""
        before = comfy_emulator.stats["sampler_steps"]
        await wait_until(
            lambda: comfy_emulator.stats["sampler_steps"] >= before + 2,
            what="sampler still stepping after a non-matching interrupt",
        )
        assert (await client.get(f"/api/jobs/{pid}")).json()["status"] == "in_progress"
        r = await client.post("/interrupt", json={"prompt_id": pid})
        assert r.content == b""
        frames = await collect_frames(ws, pid)
        job = await wait_job_status(client, pid, {"cancelled"})
        history = (await client.get(f"/history/{pid}")).json()[pid]
    interrupted = next(f["data"] for f in frames if f["type"] == "execution_interrupted")
    assert interrupted["node_id"] == "3" and interrupted["node_type"] == "KSampler"
    assert set(interrupted["executed"]) == {"4", "5", "6", "7"}
    assert [f["type"] for f in frames][-2:] == ["status", "executing"]
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1][0] == "execution_interrupted"
    assert job["outputs_count"] == 0 and "preview_output" not in job
    assert comfy_emulator.stats["interrupted"] == 1
    assert comfy_emulator.stats["sampler_steps"] < 200


async def test_interrupt_lands_after_the_next_nodes_executing_frame(
    comfy_emulator: ComfyEmulator,
) -> None:
    """As on a real 0.33.0 server: a node that does not check for interrupts runs to its end;
    the next node still gets progress_state(running) and `executing`, then is interrupted."""
    graph = simple_graph("inv")
    graph["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    graph["2"]["inputs"]["images"] = ["3", 0]
    comfy_emulator.set_faults({"node_delay": 50})  # 0.5 s per node
    async with (
        websockets.connect(ws_url(comfy_emulator, "i")) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await first_frame(ws)
        pid = (await client.post("/prompt", json={"prompt": graph, "client_id": "i"})).json()[
            "prompt_id"
        ]
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "executing":
            frames.append(json.loads(await ws.recv()))
        assert frames[-1]["data"]["node"] == "1"
        await client.post("/interrupt", json={"prompt_id": pid})
        frames += await collect_frames(ws, pid)
    seen = [f for f in frames if f["type"] != "status"]
    kinds = [(f["type"], f["data"].get("node")) for f in seen]
    assert kinds[-4:] == [
        ("progress_state", None), ("executing", "3"), ("execution_interrupted", None),
        ("executing", None)]
    assert seen[-4]["data"]["nodes"]["3"]["state"] == "running"
    interrupted = next(f["data"] for f in frames if f["type"] == "execution_interrupted")
    assert (interrupted["node_id"], interrupted["executed"]) == ("3", ["1"])


async def test_other_clients_see_only_status_frames(comfy_emulator: ComfyEmulator) -> None:
    async with (
        websockets.connect(ws_url(comfy_emulator, "owner")) as owner,
        websockets.connect(ws_url(comfy_emulator)) as other,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await first_frame(owner)
        hello = await first_frame(other)
        sid = hello["data"]["sid"]
        assert len(sid) == 32 and all(ch in "0123456789abcdef" for ch in sid)
        pid = (
            await client.post("/prompt", json={"prompt": simple_graph(), "client_id": "owner"})
        ).json()["prompt_id"]
        await collect_frames(owner, pid)
        marker = (await client.post("/prompt", json={"prompt": simple_graph("m")})).json()
        await wait_job_status(client, marker["prompt_id"], {"completed"})
        import json

        seen = []
        while len([t for t in seen if t == "status"]) < 6:
            seen.append(json.loads(await other.recv())["type"])
    # the anonymous prompt broadcasts progress_state, but never executing/executed/success
    assert set(seen) <= {"status", "progress_state"}
    assert "status" in seen


async def test_reconnect_mid_run_gets_status_then_current_node(
    comfy_emulator: ComfyEmulator,
) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        await slow(comfy_emulator, client)
        pid = (
            await client.post(
                "/prompt", json={"prompt": txt2img_graph(steps=100), "client_id": "re"}
            )
        ).json()["prompt_id"]
        await wait_until(lambda: comfy_emulator.stats["sampler_steps"] >= 1)
        async with websockets.connect(ws_url(comfy_emulator, "re")) as ws:
            hello = await first_frame(ws)
            current = await first_frame(ws)
        await client.post(f"/api/jobs/{pid}/cancel")
    assert hello["type"] == "status" and hello["data"]["sid"] == "re"
    assert current == {"type": "executing", "data": {"node": "3"}}


async def test_restart_loses_queue_and_history_but_keeps_files(
    comfy_emulator: ComfyEmulator,
) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        done = await run_to_end(client, simple_graph())
        await slow(comfy_emulator, client)
        running = (await client.post("/prompt", json={"prompt": txt2img_graph(steps=100)})).json()
        pending = (await client.post("/prompt", json={"prompt": simple_graph("p")})).json()
        await wait_job_status(client, running["prompt_id"], {"in_progress"})
        async with websockets.connect(ws_url(comfy_emulator, "x")) as ws:
            await first_frame(ws)
            comfy_emulator.restart()
            try:
                await ws.recv()
                raise AssertionError("socket survived a restart")
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is None  # no close frame: an abnormal (1006) closure
        for pid in (done, running["prompt_id"], pending["prompt_id"]):
            assert (await client.get(f"/history/{pid}")).json() == {}
            assert (await client.get(f"/api/jobs/{pid}")).status_code == 404
        assert (await client.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
        assert (await client.get("/history")).json() == {}
        view = await client.get("/view", params={"filename": "probe_00001_.png"})
        assert view.status_code == 200
        await client.post("/_emulator/faults", json={})
        r = await client.post("/prompt", json={"prompt": simple_graph()})
        assert r.json()["number"] == 0
        job = await wait_job_status(client, r.json()["prompt_id"], {"completed"})
    assert job["preview_output"]["filename"] == "probe_00002_.png"
    stats = comfy_emulator.stats
    assert stats["restarts"] == 1 and stats["executed"] == 3 and stats["completed"] == 2
