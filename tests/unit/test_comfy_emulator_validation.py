"""POST /prompt rejects bad graphs with the real server's 400 envelope and error types (§2.3)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest

from emulators.comfyui import ComfyEmulator
from tests.fixtures.comfy_emulator import simple_graph, txt2img_graph

SERVER_TROUBLE = "500 Internal Server Error\n\nServer got itself in trouble"


async def post(emu: ComfyEmulator, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=emu.url) as client:
        return await client.post("/api/prompt", json=body)


def graph_with(
    node: str, name: str, value: Any, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    graph = copy.deepcopy(base or simple_graph())
    graph[node]["inputs"][name] = value
    return graph


async def test_whole_prompt_errors(comfy_emulator: ComfyEmulator) -> None:
    cases: list[tuple[Any, str, str]] = [
        ({"client_id": "x"}, "no_prompt", "No prompt provided"),
        ([1, 2], "no_prompt", "No prompt provided"),
        (
            {"prompt": simple_graph(), "prompt_id": "ABC"},
            "invalid_prompt_id",
            "prompt_id must be a valid UUID",
        ),
        (
            {"prompt": simple_graph(), "prompt_id": str(uuid.uuid4()).upper()},
            "invalid_prompt_id",
            "prompt_id must be a valid UUID",
        ),
        (
            {"prompt": simple_graph(), "prompt_id": 7},
            "invalid_prompt_id",
            "prompt_id must be a valid UUID",
        ),
        ({"prompt": {}}, "prompt_no_outputs", "Prompt has no outputs"),
        ({"prompt": {"1": simple_graph()["1"]}}, "prompt_no_outputs", "Prompt has no outputs"),
        (
            {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}},
            "missing_node_type",
            "Node 'NoSuchNode' not found. The custom node may not be installed.",
        ),
    ]
    for body, kind, message in cases:
        r = await post(comfy_emulator, body)
        assert r.status_code == 400, body
        payload = r.json()
        assert payload["node_errors"] == {}
        assert payload["error"]["type"] == kind and payload["error"]["message"] == message
        assert set(payload["error"]) == {"type", "message", "details", "extra_info"}
    r = await post(comfy_emulator, {"prompt": {"1": {"inputs": {}}}})
    error = r.json()["error"]
    assert error["details"] == "Node ID '#1'"
    assert error["extra_info"] == {"node_id": "1", "class_type": None, "node_title": None}
    assert comfy_emulator.stats["submitted"] == 0


@pytest.mark.parametrize(
    ("graph", "node", "kind", "message", "details"),
    [
        (
            {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 8, "height": 8, "batch_size": 1},
                },
                "2": simple_graph()["2"],
            },
            "1",
            "required_input_missing",
            "Required input is missing",
            "color",
        ),
        (
            graph_with("1", "width", 99999),
            "1",
            "value_bigger_than_max",
            "Value 99999 bigger than max of 16384",
            "width",
        ),
        (
            graph_with("1", "width", 0),
            "1",
            "value_smaller_than_min",
            "Value 0 smaller than min of 1",
            "width",
        ),
        (
            graph_with("1", "width", "abc"),
            "1",
            "invalid_input_type",
            "Failed to convert an input value to a INT value",
            "width, abc, invalid literal for int() with base 10: 'abc'",
        ),
        (
            graph_with("4", "ckpt_name", "nope.ckpt", txt2img_graph()),
            "4",
            "value_not_in_list",
            "Value not in list",
            (
                "ckpt_name: 'nope.ckpt' not in "
                "['v1-5-pruned-emaonly.safetensors', 'sd_xl_base_1.0.safetensors']"
            ),
        ),
        (
            graph_with("2", "images", ["99", 0]),
            "2",
            "exception_during_validation",
            "Exception when validating node",
            "'99'",
        ),
        (
            graph_with("8", "samples", ["5", 0], txt2img_graph())
            | {"10": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}}},
            "10",
            "custom_validation_failed",
            "Custom validation failed for node",
            "image - Invalid image file: does_not_exist.png",
        ),
    ],
)
async def test_per_input_errors(
    comfy_emulator: ComfyEmulator,
    graph: dict[str, Any],
    node: str,
    kind: str,
    message: str,
    details: str,
) -> None:
    if node == "10":  # make LoadImage an input of the saved image so it is validated
        graph["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}
        del graph["9"]
    r = await post(comfy_emulator, {"prompt": graph})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    entry = body["node_errors"][node]
    assert entry["class_type"] == graph[node]["class_type"]
    assert entry["dependent_outputs"]
    error = entry["errors"][0]
    assert (error["type"], error["message"], error["details"]) == (kind, message, details)
    if kind == "exception_during_validation":
        assert error["extra_info"]["exception_type"] == "KeyError"
        assert body["error"]["details"] == "Exception when validating node: '99'"


async def test_return_type_mismatch_names_both_types(comfy_emulator: ComfyEmulator) -> None:
    graph = simple_graph() | {"3": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    (comfy_emulator.root_dir / "input" / "x.png").write_bytes(b"\x89PNG")
    graph["2"]["inputs"]["images"] = ["3", 1]
    r = await post(comfy_emulator, {"prompt": graph})
    error = r.json()["node_errors"]["2"]["errors"][0]
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "images, received_type(MASK) mismatch input_type(IMAGE)"
    assert error["extra_info"]["linked_node"] == ["3", 1]


async def test_non_json_and_non_object_prompt_give_plain_500(comfy_emulator: ComfyEmulator) -> None:
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as client:
        bad = await client.post("/prompt", content=b"{nope")
        string_prompt = await client.post("/prompt", json={"prompt": "a string"})
        free_empty = await client.post("/free", content=b"")
        history_bad = await client.get("/history", params={"max_items": "abc"})
    for r in (bad, string_prompt, free_empty, history_bad):
        assert r.status_code == 500
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.text == SERVER_TROUBLE


async def test_number_counts_every_post_and_front_negates(comfy_emulator: ComfyEmulator) -> None:
    first = await post(comfy_emulator, {"prompt": simple_graph()})
    await post(comfy_emulator, {"prompt": {}})  # rejected, still counted
    front = await post(comfy_emulator, {"prompt": simple_graph(), "front": True})
    explicit = await post(comfy_emulator, {"prompt": simple_graph(), "number": 5})
    after = await post(comfy_emulator, {"prompt": simple_graph()})
    assert first.json()["number"] == 0
    assert front.json()["number"] == -2
    assert explicit.json()["number"] == 5.0
    assert after.json()["number"] == 3


async def test_input_config_is_always_type_and_options(comfy_emulator: ComfyEmulator) -> None:
    graph = simple_graph() | {
        "3": {"class_type": "ImageScale", "inputs": {
            "image": ["1", 0], "upscale_method": "nope", "width": 32, "height": 32,
            "crop": "disabled"}},
    }
    graph["2"]["inputs"]["images"] = ["3", 0]
    r = await post(comfy_emulator, {"prompt": graph})
    error = r.json()["node_errors"]["3"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"] == {
        "input_name": "upscale_method",
        "input_config": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}],
        "received_value": "nope",
    }


async def test_custom_validation_failure_names_only_the_input(
    comfy_emulator: ComfyEmulator,
) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    r = await post(comfy_emulator, {"prompt": graph})
    error = r.json()["node_errors"]["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert error["extra_info"] == {"input_name": "image"}


async def test_link_to_a_missing_output_slot_fails_the_linking_node(
    comfy_emulator: ComfyEmulator,
) -> None:
    r = await post(comfy_emulator, {"prompt": graph_with("2", "images", ["1", 5])})
    body = r.json()
    assert r.status_code == 400 and list(body["node_errors"]) == ["2"]
    error = body["node_errors"]["2"]["errors"][0]
    assert (error["type"], error["details"]) == (
        "exception_during_validation", "tuple index out of range")
    assert error["extra_info"]["exception_type"] == "IndexError"
    assert body["error"]["details"] == "Exception when validating node: tuple index out of range"
    assert body["node_errors"]["2"]["class_type"] == "SaveImage"
