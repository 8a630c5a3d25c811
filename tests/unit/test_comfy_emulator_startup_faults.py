"""Start-up settings of the ComfyUI emulator (``--checkpoint-load-delay``) survive a
``POST /_emulator/faults``: faults are merged over them (issue 13: a POST silently reset the
cold-checkpoint cost, so a bench measured a GPU without load times). Over a real socket."""

from __future__ import annotations

from pathlib import Path

import httpx

from emulators.comfyui import ComfyEmulator


async def test_a_faults_post_keeps_the_start_up_settings(tmp_path: Path) -> None:
    emulator = ComfyEmulator(tmp_path / "comfy", time_scale=0.02,
                             faults={"checkpoint_load_delay": 3.0})
    url = await emulator.start()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            posted = await http.post("/_emulator/faults", json={"step_delay": 0.5})
            assert posted.status_code == 200, posted.text
            faults = (await http.get("/_emulator/faults")).json()
            # e76591a: checkpoint_load_delay was back to 0.0 after this POST.
            assert faults["checkpoint_load_delay"] == 3.0 and faults["step_delay"] == 0.5
            await http.post("/_emulator/faults", json={})  # "no faults" keeps them too
            assert (await http.get("/_emulator/faults")).json()["checkpoint_load_delay"] == 3.0
            await http.post("/_emulator/faults", json={"checkpoint_load_delay": 0})
            assert (await http.get("/_emulator/faults")).json()["checkpoint_load_delay"] == 0.0
        emulator.set_faults({})  # the in-process setter follows the same rule
        assert emulator.core.faults.checkpoint_load_delay == 3.0
    finally:
        await emulator.stop()
