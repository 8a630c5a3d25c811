"""Templates: filling is structural, every rejection names template/parameter/node, and the
shipped templates validate against the real 0.33.0 node definitions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from activities.errors import TemplateError
from activities.templates import DEFAULT_TEMPLATES_DIR, WorkflowManager

OBJECT_INFO = Path("/work/shared/protocols/comfyui-object-info-0.33.0.json")


@pytest.fixture(scope="module")
def manager() -> WorkflowManager:
    return WorkflowManager()


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    return dict(json.loads(OBJECT_INFO.read_text()))


def test_ships_scene_reference_and_probe(manager: WorkflowManager) -> None:
    assert manager.names() == ["probe", "scene", "scene_with_reference"]
    assert manager.manifest("scene").output_node == "9"
    ref = manager.graph("scene_with_reference")
    classes = {node["class_type"] for node in ref.values()}
    assert {"LoadImage", "VAEEncode", "KSampler", "SaveImage"} <= classes
    assert ref["3"]["inputs"]["latent_image"] == ["12", 0] and ref["3"]["inputs"]["denoise"] < 1


@pytest.mark.parametrize("name", ["probe", "scene", "scene_with_reference"])
def test_shipped_templates_validate_against_object_info(
    manager: WorkflowManager, definitions: dict[str, Any], name: str
) -> None:
    # That server had no checkpoints installed, so file lists are not checked here.
    assert manager.check_against_definitions(name, definitions, check_files=False) == []


def test_check_finds_what_comfyui_would_reject(
    manager: WorkflowManager, definitions: dict[str, Any]
) -> None:
    problems = manager.check_against_definitions("scene", definitions)
    assert problems == [("template scene: node 4 (CheckpointLoaderSimple) input 'ckpt_name': "
                         "'v1-5-pruned-emaonly.safetensors' is not in the server's list "
                         "(nothing installed)")]
    without_sampler = {k: v for k, v in definitions.items() if k != "KSampler"}
    assert "node 3: class 'KSampler' is not known to the server" in " ".join(
        manager.check_against_definitions("scene", without_sampler, check_files=False))


def test_render_fills_inputs_on_a_copy(manager: WorkflowManager) -> None:
    text = 'a fox in a "red" coat {curly} %s'
    graph = manager.render("scene", {"positive": text, "seed": 42, "width": 768, "cfg": 5,
                                     "sampler": "dpmpp_2m"})
    assert graph["6"]["inputs"]["text"] == text
    assert graph["3"]["inputs"]["seed"] == 42 and graph["3"]["inputs"]["cfg"] == 5.0
    assert graph["3"]["inputs"]["sampler_name"] == "dpmpp_2m"
    assert graph["5"]["inputs"]["width"] == 768 and graph["5"]["inputs"]["height"] == 512
    assert graph["7"]["inputs"]["text"] == manager.manifest("scene").parameters["negative"].default
    assert manager.graph("scene")["6"]["inputs"]["text"] == ""  # the template itself is untouched


@pytest.mark.parametrize(
    ("params", "parameter", "node", "words"),
    [
        ({"positive": "x", "colour": 1}, "colour", "", "unknown parameter"),
        ({"seed": 1}, "positive", "6", "is missing"),
        ({"positive": "x", "seed": "12"}, "seed", "3", "must be an integer"),
        ({"positive": "x", "seed": True}, "seed", "3", "must be an integer"),
        ({"positive": 3}, "positive", "6", "must be a string"),
        ({"positive": "x", "width": 10_000}, "width", "5", "above the maximum"),
        ({"positive": "x", "steps": 0}, "steps", "3", "below the minimum"),
        ({"positive": "x", "sampler": "turbo"}, "sampler", "3", "not one of"),
        ({"positive": "x", "filename_prefix": "../escape"}, "filename_prefix", "9", "does not match"),
    ],
)
def test_render_rejections_name_template_parameter_and_node(
    manager: WorkflowManager, params: dict[str, Any], parameter: str, node: str, words: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        manager.render("scene", params)
    err = caught.value
    assert err.details == {"template": "scene", "parameter": parameter, "node": node}
    assert words in str(err) and "template scene" in str(err) and parameter in str(err)
    assert not err.retryable


def test_denoise_of_the_reference_template_must_stay_below_one(manager: WorkflowManager) -> None:
    with pytest.raises(TemplateError) as caught:
        manager.render("scene_with_reference",
                       {"positive": "x", "reference_image": "storyloom/ref.png", "denoise": 1.0})
    assert caught.value.details["parameter"] == "denoise" and caught.value.details["node"] == "3"


def test_unknown_template_lists_the_known_ones(manager: WorkflowManager) -> None:
    with pytest.raises(TemplateError, match="known: probe, scene, scene_with_reference"):
        manager.render("sketch", {})


def _copy_templates(tmp_path: Path) -> Path:
    shutil.copytree(DEFAULT_TEMPLATES_DIR, tmp_path / "t", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path / "t"


def test_a_link_to_a_missing_node_is_rejected_naming_node(tmp_path: Path) -> None:
    folder = _copy_templates(tmp_path)
    graph = json.loads((folder / "scene.json").read_text())
    graph["8"]["inputs"]["samples"] = ["99", 0]
    (folder / "scene.json").write_text(json.dumps(graph))
    with pytest.raises(TemplateError) as caught:
        WorkflowManager(folder)
    assert "node 8 input samples links to missing node 99" in str(caught.value)
    assert caught.value.details == {"template": "scene", "parameter": "samples", "node": "8"}


def test_a_manifest_pointing_at_a_missing_input_is_rejected(tmp_path: Path) -> None:
    folder = _copy_templates(tmp_path)
    manifest = json.loads((folder / "probe.manifest.json").read_text())
    manifest["parameters"]["color"]["input"] = "colour"
    (folder / "probe.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TemplateError) as caught:
        WorkflowManager(folder)
    assert caught.value.details == {"template": "probe", "parameter": "color", "node": "1"}


@pytest.mark.parametrize("name", ["probe", "scene", "scene_with_reference"])
async def test_shipped_templates_pass_the_servers_own_check(
    comfy_emulator: Any, manager: WorkflowManager, name: str
) -> None:
    from activities.comfyui.client import ComfyClient

    async with ComfyClient(comfy_emulator.url) as client:
        assert await manager.check_against_server(client, name) == []


async def test_server_check_names_a_missing_checkpoint(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    from activities.comfyui.client import ComfyClient

    folder = _copy_templates(tmp_path)
    manifest = json.loads((folder / "scene.manifest.json").read_text())
    manifest["parameters"]["checkpoint"]["default"] = "dreamy.safetensors"
    (folder / "scene.manifest.json").write_text(json.dumps(manifest))
    graph = json.loads((folder / "scene.json").read_text())
    graph["4"]["inputs"]["ckpt_name"] = "dreamy.safetensors"
    (folder / "scene.json").write_text(json.dumps(graph))
    async with ComfyClient(comfy_emulator.url) as client:
        [problem] = await WorkflowManager(folder).check_against_server(client, "scene")
    assert "node 4 (CheckpointLoaderSimple) input 'ckpt_name'" in problem
    assert "'dreamy.safetensors' is not in the server's list" in problem
