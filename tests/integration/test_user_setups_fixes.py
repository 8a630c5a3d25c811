"""Issue 11, a fresh user's findings, end to end through the `storyloom` CLI with a real dev
server, both emulators and a worker as processes over sockets:

- `retry-image` recovers a failed picture: its flags (--checkpoint, --width/--height,
  --template) win over the node's record, a terminal setting it does not use is named with its
  flag, and a picture that fails again is exit 1 with the reason;
- a checkpoint the server lacks is refused before the scene starts (exit 2, nothing created);
  when the terminal cannot reach ComfyUI the scene starts and the stored reason keeps its fix
  hint (STORYLOOM_CHECKPOINT and the server's checkpoints), uncut;
- image sizes outside the template's range or step are refused naming the variable;
- the terminal's STORYLOOM_FALLBACK_MODELS reach the worker;
- `doctor` with the probe template does not check the reference template's checkpoint.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from emulators.comfyui.png import png_size
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.processes import CLI, Services, start_services
from tests.fixtures.records import node_row
from workflows_temporal.contracts import SceneResult

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

DIRECTION = "A lighthouse keeper finds a talking fox"
SDXL = "sd_xl_base_1.0.safetensors"
DREAMSHAPER = "dreamshaper_8.safetensors"
DEFAULT_CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", SDXL]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    services = await start_services(tmp_path_factory.mktemp("user-setups"))
    try:
        yield services
    finally:
        await services.close()


async def _storyloom(stack: Services, *args: str, env: dict[str, str] | None = None,
                     timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*CLI, *args], env={**stack.env, **(env or {})}, capture_output=True,
        text=True, timeout=timeout,
    )


async def _get(url: str) -> Any:
    async with httpx.AsyncClient(timeout=5.0) as http:
        reply = await http.get(url)
        reply.raise_for_status()
        return reply.json()


def _count(db_file: Path, table: str) -> int:
    if not db_file.exists():
        return 0
    with sqlite3.connect(db_file) as db:
        try:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:  # no schema yet
            return 0


async def _graph_of(stack: Services, node_id: str) -> dict[str, Any]:
    prompt_id = node_row(stack.db_file, node_id)["image_prompt_id"]
    graph: dict[str, Any] = (await _get(f"{stack.comfy_url}/history/{prompt_id}"))[prompt_id][
        "prompt"][2]
    return graph


def _classes(graph: dict[str, Any], class_type: str) -> list[dict[str, Any]]:
    return [n["inputs"] for n in graph.values() if n["class_type"] == class_type]


async def test_retry_image_flags_recover_a_failed_picture(stack: Services) -> None:
    # A node made with a checkpoint the server had then, and whose render failed.
    await stack.emulator_post(stack.comfy_url, {
        "checkpoints": [DREAMSHAPER, *DEFAULT_CHECKPOINTS], "error_at_node": "KSampler"})
    try:
        run = await _storyloom(stack, "scene", DIRECTION, "--json",
                               env={"STORYLOOM_CHECKPOINT": DREAMSHAPER})
    finally:
        await stack.emulator_post(stack.comfy_url, {})  # the server no longer has dreamshaper
    assert run.returncode == 0, run.stderr
    node = SceneResult.model_validate_json(run.stdout).node_id
    assert node_row(stack.db_file, node)["image_status"] == "failed"

    # The terminal picks another checkpoint: the retry says which flag uses it, and refuses the
    # node's own (gone) checkpoint before starting (e76591a: rc 0, "failed again").
    plain = await _storyloom(stack, "retry-image", node, env={"STORYLOOM_CHECKPOINT": SDXL})
    assert plain.returncode == 2, (plain.stdout, plain.stderr)
    assert f"--checkpoint {SDXL}" in plain.stderr
    assert DREAMSHAPER in plain.stderr and SDXL in plain.stderr

    # A retry whose picture fails again is exit 1 with the reason (e76591a: exit 0).
    await stack.emulator_post(stack.comfy_url, {"error_at_node": "KSampler"})
    try:
        again = await _storyloom(stack, "retry-image", node, "--checkpoint", SDXL)
    finally:
        await stack.emulator_post(stack.comfy_url, {})
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert "KSampler" in again.stderr
    assert node_row(stack.db_file, node)["image_status"] == "failed"

    # The flags win (e76591a: there were no such options).
    fixed = await _storyloom(stack, "retry-image", node, "--json", "--checkpoint", SDXL,
                             "--width", "320", "--height", "256")
    assert fixed.returncode == 0, (fixed.stdout, fixed.stderr)
    row = node_row(stack.db_file, node)
    assert row["image_status"] == "done"
    assert png_size(Path(row["image_path"]).read_bytes()) == (320, 256)
    graph = await _graph_of(stack, node)
    assert [n["ckpt_name"] for n in _classes(graph, "CheckpointLoaderSimple")] == [SDXL]

    # --template wins over the node's template (e76591a: ignored for a node that recorded one).
    probe = await _storyloom(stack, "retry-image", node, "--force", "--json", "--template",
                             "probe", "--width", "96", "--height", "80")
    assert probe.returncode == 0, (probe.stdout, probe.stderr)
    row = node_row(stack.db_file, node)
    assert png_size(Path(row["image_path"]).read_bytes()) == (96, 80)
    assert _classes(await _graph_of(stack, node), "EmptyImage")


async def test_a_missing_checkpoint_is_refused_before_the_scene_starts(stack: Services) -> None:
    stories = _count(stack.db_file, "stories")
    run = await _storyloom(stack, "scene", DIRECTION, env={"STORYLOOM_CHECKPOINT": DREAMSHAPER})
    assert run.returncode == 2, (run.stdout, run.stderr)  # e76591a: 0, picture failed later
    assert "STORYLOOM_CHECKPOINT" in run.stderr and SDXL in run.stderr
    assert _count(stack.db_file, "stories") == stories


async def test_an_unreachable_comfyui_starts_and_the_reason_keeps_its_checkpoint_hint(
    stack: Services,
) -> None:
    """The terminal cannot see ComfyUI (the worker can): the scene starts anyway, and the
    render's refusal is stored with a hint naming STORYLOOM_CHECKPOINT and the server's list."""
    dead = f"http://127.0.0.1:{free_port()}"
    run = await _storyloom(stack, "scene", DIRECTION, "--json", env={
        "STORYLOOM_CHECKPOINT": DREAMSHAPER, "STORYLOOM_COMFYUI_URL": dead})
    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)
    assert result.image_status == "failed"
    reason = node_row(stack.db_file, result.node_id)["image_error"]
    assert reason == result.image_error
    # e76591a: "... Fix the te…" (the end cut off, no setting named).
    assert "STORYLOOM_CHECKPOINT" in reason and "--checkpoint" in reason, reason
    assert SDXL in reason.rpartition("STORYLOOM_CHECKPOINT")[2], reason
    assert not reason.endswith("…"), reason


@pytest.mark.parametrize("width", ["0", "-5", "32", "10000", "513"])
async def test_an_image_size_outside_the_template_is_refused_naming_the_variable(
    stack: Services, width: str
) -> None:
    stories = _count(stack.db_file, "stories")
    run = await _storyloom(stack, "scene", DIRECTION, env={"STORYLOOM_IMAGE_WIDTH": width})
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert f"STORYLOOM_IMAGE_WIDTH={width}" in run.stderr, run.stderr
    assert "64 to 2048 in steps of 8" in run.stderr, run.stderr
    assert _count(stack.db_file, "stories") == stories


async def test_the_terminals_fallback_models_reach_the_worker(stack: Services) -> None:
    await stack.emulator_post(stack.ollama_url, {"missing_models": ["qwen3"]})
    try:
        run = await _storyloom(stack, "scene", DIRECTION, "--json", "--model", "qwen3",
                               "--no-illustrate",
                               env={"STORYLOOM_FALLBACK_MODELS": '["llama3.2"]'})
    finally:
        await stack.emulator_post(stack.ollama_url, {})
    # e76591a: the CLI accepted qwen3 (a fallback is installed) but the worker had no
    # fallback list, so the scene failed.
    assert run.returncode == 0, (run.stdout, run.stderr)
    result = SceneResult.model_validate_json(run.stdout)
    row = node_row(stack.db_file, result.node_id)
    assert row["model"].startswith("llama3.2"), row["model"]
    assert len(row["text"]) > 200


async def test_doctor_with_the_probe_template_skips_the_reference_checkpoint(
    stack: Services,
) -> None:
    await stack.emulator_post(stack.comfy_url, {"checkpoints": []})
    try:
        probe = await _storyloom(stack, "doctor", env={"STORYLOOM_TEMPLATE": "probe"})
        scene = await _storyloom(stack, "doctor")
    finally:
        await stack.emulator_post(stack.comfy_url, {})
    probe_out = probe.stdout + probe.stderr
    assert probe.returncode == 0, probe_out  # e76591a: 1, scene_with_reference's checkpoint
    assert "scene_with_reference" not in probe_out, probe_out
    scene_out = scene.stdout + scene.stderr
    assert scene.returncode == 1, scene_out
    assert "the server has no checkpoints" in scene_out, scene_out
    assert "one of: none" not in scene_out, scene_out


async def test_the_emulator_renders_a_latent_width_rounded_down_to_8(stack: Services) -> None:
    """ComfyUI's EmptyLatentImage makes a latent of width // 8 (object_info step 8), so a
    graph posted with 513 decodes to a 512-wide picture (e76591a's emulator: 513)."""
    from activities.templates import WorkflowManager

    graph = WorkflowManager().render("scene", {"positive": "a fox", "width": 513, "height": 260,
                                               "seed": 1})
    async with httpx.AsyncClient(timeout=5.0) as http:
        posted = (await http.post(stack.comfy_url + "/prompt", json={"prompt": graph})).json()
        prompt_id = posted["prompt_id"]

        async def finished() -> bool:
            return bool((await http.get(f"{stack.comfy_url}/history/{prompt_id}")).json())

        await wait_until(finished, timeout=60, interval=0.1, what="the render")
        entry = (await http.get(f"{stack.comfy_url}/history/{prompt_id}")).json()[prompt_id]
        image = next(i for out in entry["outputs"].values() for i in out.get("images", []))
        data = (await http.get(stack.comfy_url + "/view", params=image)).content
    assert png_size(data) == (512, 256)


async def test_retry_image_refuses_a_size_off_the_templates_step(stack: Services) -> None:
    run = await _storyloom(stack, "scene", DIRECTION, "--json")
    assert run.returncode == 0, run.stderr
    node = SceneResult.model_validate_json(run.stdout).node_id
    retry = await _storyloom(stack, "retry-image", node, "--force", "--width", "513")
    assert retry.returncode == 2, (retry.stdout, retry.stderr)
    assert "--width=513" in retry.stderr and "steps of 8" in retry.stderr, retry.stderr


async def test_a_probe_story_never_renders_with_the_reference_template(stack: Services) -> None:
    """A character with a picture is drawn with the template's reference variant only when it
    has one: the probe template's scenes are all rendered with probe."""
    run = await _storyloom(stack, "story", DIRECTION, "--scenes", "3", "--json",
                           env={"STORYLOOM_TEMPLATE": "probe"}, timeout=240)
    assert run.returncode == 0, run.stderr
    import json

    nodes = json.loads(run.stdout)["nodes"]
    templates = [node_row(stack.db_file, n["node_id"])["image_template"] for n in nodes]
    assert templates == ["probe"] * len(nodes), templates


async def test_a_terminal_ollama_url_the_workers_do_not_use_is_named(stack: Services) -> None:
    """The worker calls its own STORYLOOM_OLLAMA_URL; a terminal that set another one is told
    in one line (e76591a: silently ignored)."""
    elsewhere = f"http://127.0.0.1:{free_port()}"
    run = await _storyloom(stack, "scene", DIRECTION, "--json", "--no-illustrate",
                           env={"STORYLOOM_OLLAMA_URL": elsewhere})
    assert run.returncode == 0, (run.stdout, run.stderr)  # the workers' Ollama wrote it
    warned = [line for line in run.stderr.splitlines()
              if "STORYLOOM_OLLAMA_URL" in line and elsewhere in line]
    assert len(warned) == 1 and stack.ollama_url in warned[0], run.stderr
    same = await _storyloom(stack, "scene", DIRECTION, "--json", "--no-illustrate")
    assert same.returncode == 0, same.stderr
    assert "this terminal's STORYLOOM_OLLAMA_URL" not in same.stderr, same.stderr
