"""ComfyUI emulator: /view and upload rules, LoadImage, jobs API shapes, and every fault."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import websockets

from emulators.comfyui import ComfyEmulator
from tests.fixtures.comfy_emulator import (
    collect_frames,
    simple_graph,
    txt2img_graph,
    wait_job_status,
)
from tests.fixtures.common import wait_until


async def test_view_serves_outputs_without_path_escape(comfy_emulator: ComfyEmulator) -> None:
    out = comfy_emulator.root_dir / "output" / "sub"
    out.mkdir(parents=True)
    (out / "a.png").write_bytes(b"\x89PNG-bytes")
    cases: list[tuple[dict[str, str], int]] = [
        ({"filename": "a.png", "subfolder": "sub"}, 200),
        ({"filename": "a.png", "subfolder": "sub", "type": "output"}, 200),
        ({}, 404),
        ({"filename": "missing.png"}, 404),
        ({"filename": "../../etc/passwd"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        # a real 0.33.0 server only refuses a leading "/" or ".."; otherwise it keeps the
        # basename, so "sub/a.png" looks for output/a.png (404) and "x/a.png" in sub works
        ({"filename": "sub/a.png"}, 404),
        ({"filename": "x/a.png", "subfolder": "sub"}, 200),
        ({"filename": "a.png", "subfolder": "../../../../etc"}, 403),
        ({"filename": "passwd", "subfolder": "/etc"}, 403),
        ({"filename": "a.png", "type": "models"}, 400),
    ]
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        for params, status in cases:
            r = await client.get("/view", params=params)
            assert r.status_code == status, params
            if status != 200:
                assert r.content == b""
        encoded = await client.get("/api/view?filename=..%2F..%2Fetc%2Fpasswd")
        ok = await client.get("/view", params={"filename": "a.png", "subfolder": "sub"})
    assert encoded.status_code == 400
    assert ok.content == b"\x89PNG-bytes"
    assert ok.headers["content-type"] == "image/png"
    assert ok.headers["content-disposition"] == 'filename="a.png"'
    assert ok.headers["x-content-type-options"] == "nosniff"


async def upload(
    client: httpx.AsyncClient, name: str, data: bytes, **fields: str
) -> httpx.Response:
    return await client.post(
        "/upload/image", files={"image": (name, data, "image/png")}, data=fields
    )


async def test_upload_renames_dedupes_and_refuses_escape(comfy_emulator: ComfyEmulator) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        first = await upload(client, "ref.png", b"one", subfolder="storyloom/refs")
        same = await upload(client, "ref.png", b"one", subfolder="storyloom/refs")
        other = await upload(client, "ref.png", b"two", subfolder="storyloom/refs")
        third = await upload(client, "ref.png", b"three", subfolder="storyloom/refs")
        overwrite = await upload(
            client, "ref.png", b"new", subfolder="storyloom/refs", overwrite="true"
        )
        escape = await upload(client, "x.png", b"x", subfolder="../..")
        missing = await client.post(
            "/upload/image", data={"type": "input"}, files={"other": ("a", b"a")}
        )
    assert first.json() == {"name": "ref.png", "subfolder": "storyloom/refs", "type": "input"}
    assert same.json()["name"] == "ref.png"
    assert other.json()["name"] == "ref (1).png"
    assert third.json()["name"] == "ref (2).png"
    assert overwrite.json()["name"] == "ref.png"
    folder = comfy_emulator.root_dir / "input" / "storyloom" / "refs"
    assert sorted(p.name for p in folder.iterdir()) == ["ref (1).png", "ref (2).png", "ref.png"]
    assert (folder / "ref.png").read_bytes() == b"new"
    assert (escape.status_code, escape.content) == (400, b"")
    assert missing.status_code == 400


async def test_load_image_carries_size_and_rejects_non_images(
    comfy_emulator: ComfyEmulator,
) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        pid = (
            await client.post("/prompt", json={"prompt": simple_graph(width=30, height=20)})
        ).json()["prompt_id"]
        await wait_job_status(client, pid, {"completed"})
        png = (await client.get("/view", params={"filename": "probe_00001_.png"})).content
        await upload(client, "ref.png", png)
        await upload(client, "corrupt.png", b"not an image")
        info = (await client.get("/object_info/LoadImage")).json()
        assert info["LoadImage"]["input"]["required"]["image"][0] == ["corrupt.png", "ref.png"]
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
            "2": {
                "class_type": "ImageScale",
                "inputs": {
                    "image": ["1", 0],
                    "upscale_method": "bilinear",
                    "width": 60,
                    "height": 0,
                    "crop": "disabled",
                },
            },
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {
                "class_type": "SaveImage",
                "inputs": {"images": ["3", 0], "filename_prefix": "scaled"},
            },
        }
        ok = (await client.post("/prompt", json={"prompt": graph})).json()["prompt_id"]
        await wait_job_status(client, ok, {"completed"})
        scaled = (await client.get("/view", params={"filename": "scaled_00001_.png"})).content
        graph["1"]["inputs"]["image"] = "corrupt.png"
        bad = (await client.post("/prompt", json={"prompt": graph})).json()["prompt_id"]
        job = await wait_job_status(client, bad, {"failed"})
    assert int.from_bytes(scaled[16:20], "big") == 60 and int.from_bytes(scaled[20:24], "big") == 40
    error = job["execution_error"]
    assert (
        error["node_type"] == "LoadImage"
        and error["exception_type"] == "PIL.UnidentifiedImageError"
    )
    assert error["exception_message"].startswith("cannot identify image file")
    assert error["current_inputs"] == {"image": ["corrupt.png"]}
    assert job["execution_status"]["status_str"] == "error"


async def test_jobs_api_shapes_filters_and_cancel(comfy_emulator: ComfyEmulator) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        done = (
            await client.post(
                "/prompt", json={"prompt": simple_graph(), "extra_data": {"storyloom": {"shot": 3}}}
            )
        ).json()
        await wait_job_status(client, done["prompt_id"], {"completed"})
        await client.post("/_emulator/faults", json={"step_delay": 10.0})
        running = (await client.post("/prompt", json={"prompt": txt2img_graph(steps=100)})).json()
        pending = (await client.post("/prompt", json={"prompt": simple_graph("p")})).json()
        live = await wait_job_status(client, running["prompt_id"], {"in_progress"})
        waiting = (await client.get(f"/api/jobs/{pending['prompt_id']}")).json()
        full = (await client.get(f"/api/jobs/{done['prompt_id']}")).json()
        listing = (await client.get("/api/jobs", params={"status": "pending,in_progress"})).json()
        bad = [
            await client.get("/api/jobs", params=p)
            for p in ({"status": "running"}, {"limit": "0"}, {"sort_by": "x"}, {"offset": "a"})
        ]
        missing = [await client.get(f"/api/jobs/{i}") for i in (str(uuid.uuid4()), "nope")]
        no_prefix = await client.get("/jobs")
        batch_bad = await client.post("/api/jobs/cancel", json={"job_ids": ["bad-id", 3]})
        batch_type = await client.post("/api/jobs/cancel", json={"job_ids": "x"})
        cancel_pending = await client.post(f"/api/jobs/{pending['prompt_id']}/cancel")
        cancel_running = await client.post(
            "/api/jobs/cancel", json={"job_ids": [running["prompt_id"]]}
        )
        cancel_done = await client.post(f"/api/jobs/{done['prompt_id']}/cancel")
        cancelled = await wait_job_status(client, running["prompt_id"], {"cancelled"})
        gone = await client.get(f"/api/jobs/{pending['prompt_id']}")
    assert set(live) == {
        "id",
        "status",
        "priority",
        "create_time",
        "outputs_count",
        "previewable_outputs_count",
    }
    assert waiting["status"] == "pending" and waiting["priority"] == 2
    assert full["status"] == "completed" and full["outputs_count"] == 1
    assert full["workflow"]["extra_data"]["storyloom"] == {"shot": 3}
    assert full["execution_status"]["completed"] is True
    assert full["preview_output"] == {
        "filename": "probe_00001_.png",
        "subfolder": "",
        "type": "output",
        "nodeId": "2",
        "mediaType": "images",
    }
    assert full["execution_end_time"] >= full["execution_start_time"] >= full["create_time"]
    assert sorted(j["status"] for j in listing["jobs"]) == ["in_progress", "pending"]
    assert listing["pagination"] == {"offset": 0, "limit": None, "total": 2, "has_more": False}
    assert "outputs" not in listing["jobs"][0]
    assert [r.status_code for r in bad] == [400] * 4
    assert bad[0].json() == {
        "error": "Invalid status value(s): running. Valid values: pending, "
        "in_progress, completed, failed, cancelled"
    }
    assert bad[1].json() == {"error": "limit must be a positive integer"}
    assert all(r.status_code == 404 and r.json() == {"error": "Job not found"} for r in missing)
    assert no_prefix.status_code == 404
    assert batch_bad.json() == {
        "error": "job_ids contains invalid id(s)",
        "invalid_ids": ["bad-id", "3"],
    }
    assert batch_type.json() == {"error": "job_ids must be a list"}
    assert cancel_pending.json() == {"cancelled": True}
    assert cancel_running.json() == {"cancelled": True}
    assert cancel_done.json() == {"cancelled": False}
    assert cancelled["execution_status"]["messages"][-1][0] == "execution_interrupted"
    assert gone.status_code == 404


async def test_faults_endpoint_validates_and_clears(comfy_emulator: ComfyEmulator) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        unknown = await client.post(
            "/_emulator/faults", json={"gpu_on_fire": True, "step_delay": 1}
        )
        typed = await client.post("/_emulator/faults", json={"ws_drop_after_steps": "two"})
        ok = await client.post("/_emulator/faults", json={"error_at_node": "VAEDecode"})
        active = (await client.get("/_emulator/faults")).json()
        await client.post("/_emulator/faults", json={})
        cleared = (await client.get("/_emulator/faults")).json()
    assert unknown.status_code == 400 and "gpu_on_fire" in unknown.json()["error"]
    assert typed.status_code == 400
    assert ok.status_code == 200 and active["error_at_node"] == "VAEDecode"
    assert cleared["error_at_node"] is None


async def test_error_at_node_fails_the_run_with_runtime_error(
    comfy_emulator: ComfyEmulator,
) -> None:
    comfy_emulator.set_faults({"error_at_node": "VAEDecode"})
    url = comfy_emulator.url.replace("http", "ws") + "/ws?clientId=e"
    async with (
        websockets.connect(url) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await ws.recv()
        pid = (
            await client.post("/prompt", json={"prompt": txt2img_graph(), "client_id": "e"})
        ).json()["prompt_id"]
        frames = await collect_frames(ws, pid)
        history = (await client.get(f"/history/{pid}")).json()[pid]
    error = next(f["data"] for f in frames if f["type"] == "execution_error")
    assert error["node_id"] == "8" and error["exception_type"] == "RuntimeError"
    assert sorted(error["current_outputs"]) == sorted(txt2img_graph())  # every node of the run
    assert set(error["executed"]) == {"3", "4", "5", "6", "7"}
    assert [f["type"] for f in frames][-3:] == ["execution_error", "status", "executing"]
    assert history["status"] == {
        "status_str": "error",
        "completed": False,
        "messages": history["status"]["messages"],
    }
    assert history["status"]["messages"][-1] == ["execution_error", error]
    assert comfy_emulator.stats["failed"] == 1


async def test_ws_drop_after_steps_aborts_sockets_but_run_completes(
    comfy_emulator: ComfyEmulator,
) -> None:
    comfy_emulator.set_faults({"ws_drop_after_steps": 2})
    url = comfy_emulator.url.replace("http", "ws") + "/ws?clientId=d"
    progress: list[int] = []
    async with (
        websockets.connect(url) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await ws.recv()
        pid = (
            await client.post("/prompt", json={"prompt": txt2img_graph(steps=6), "client_id": "d"})
        ).json()["prompt_id"]
        try:
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "progress":
                    progress.append(frame["data"]["value"])
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is None  # abnormal closure, no close frame (1006)
        job = await wait_job_status(client, pid, {"completed"})
    assert progress == [1, 2]
    assert job["outputs_count"] == 1
    assert comfy_emulator.stats["ws_drops"] == 1


async def test_suppress_ws_completion_keeps_http_truthful(comfy_emulator: ComfyEmulator) -> None:
    comfy_emulator.set_faults({"suppress_ws_completion": True})
    url = comfy_emulator.url.replace("http", "ws") + "/ws?clientId=s"
    seen: list[dict[str, Any]] = []
    async with (
        websockets.connect(url) as ws,
        httpx.AsyncClient(base_url=comfy_emulator.url) as client,
    ):
        await ws.recv()
        pid = (
            await client.post("/prompt", json={"prompt": simple_graph(), "client_id": "s"})
        ).json()["prompt_id"]
        await wait_job_status(client, pid, {"completed"})

        async def drained() -> bool:
            seen.append(json.loads(await ws.recv()))
            return (
                seen[-1]["type"] == "status"
                and seen[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0
            )

        await wait_until(drained, timeout=5)
    types = [f["type"] for f in seen]
    assert "executed" in types and "execution_success" not in types
    assert not any(f["type"] == "executing" and f["data"]["node"] is None for f in seen)


async def test_restart_fault_drops_state(comfy_emulator: ComfyEmulator) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        pid = (await client.post("/prompt", json={"prompt": simple_graph()})).json()["prompt_id"]
        await wait_job_status(client, pid, {"completed"})
        r = await client.post("/_emulator/faults", json={"restart": True})
        assert r.status_code == 200
        assert (await client.get(f"/history/{pid}")).json() == {}
        stats = (await client.get("/_emulator/stats")).json()
        system = (await client.get("/system_stats")).json()
        features = (await client.get("/api/features")).json()
        free = await client.post("/free", json={"unload_models": True, "free_memory": True})
    assert stats["restarts"] == 1 and stats["executed_by_prompt"] == {pid: 1}
    assert system["system"]["comfyui_version"] == "0.33.0" and system["devices"][0]["type"] == "cpu"
    assert features["max_upload_size"] == 104857600
    assert (free.status_code, free.content) == (200, b"")


async def test_jobs_limit_that_is_not_a_number_has_its_own_message(
    comfy_emulator: ComfyEmulator,
) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        words = await client.get("/api/jobs", params={"limit": "abc"})
        zero = await client.get("/api/jobs", params={"limit": "0"})
    assert (words.status_code, words.json()) == (400, {"error": "limit must be an integer"})
    assert (zero.status_code, zero.json()) == (400, {"error": "limit must be a positive integer"})
