"""Runtime behaviour of the supported node classes (what each node computes and writes)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulators.comfyui.png import encode_png, png_size
from emulators.comfyui.values import (
    Conditioning,
    Latent,
    Mask,
    Model,
    Picture,
    digest_of,
    scaled_size,
)

__all__ = ["SUPPORTED", "Interrupted", "NodeContext", "NodeFailure", "run_node"]

Outputs = tuple[Any, ...]
UiOutput = dict[str, Any] | None


class NodeFailure(Exception):
    """A runtime node error as the server reports it (`exception_type`, `exception_message`)."""

    def __init__(
        self, exception_type: str, message: str, traceback: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.traceback = traceback  # None: the executor's generic one


class Interrupted(Exception):
    """The prompt was interrupted at a step or node boundary."""


@dataclass
class NodeContext:
    """What a running node may see: folders, the graph, timing and the progress/interrupt hooks."""

    root: Path
    node_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]
    step_delay: float
    progress: Callable[[int, int], Awaitable[None]]
    check_interrupt: Callable[[], None]


async def _checkpoint(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    name = str(inp["ckpt_name"])
    return Model("MODEL", name), Model("CLIP", name), Model("VAE", name)


async def _clip(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    return (Conditioning(str(inp["text"]), inp["clip"].ckpt),)


# A latent pixel covers 8x8 image pixels: ComfyUI's EmptyLatentImage makes a tensor of
# width // 8 by height // 8 (its object_info step is 8), and VAEEncode crops the image to
# multiples of 8, so a width of 513 decodes to a 512-pixel-wide picture.
_LATENT_SCALE = 8


def _latent_pixels(size: int) -> int:
    return (size // _LATENT_SCALE) * _LATENT_SCALE


async def _empty_latent(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    w, h = _latent_pixels(int(inp["width"])), _latent_pixels(int(inp["height"]))
    b = int(inp["batch_size"])
    return (Latent(w, h, b, digest_of("empty-latent", w, h, b)),)


async def _ksampler(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    latent: Latent = inp["latent_image"]
    steps = int(inp["steps"])
    for k in range(1, steps + 1):
        ctx.check_interrupt()
        if ctx.step_delay > 0:
            await asyncio.sleep(ctx.step_delay)
        await ctx.progress(k, steps)
    ctx.check_interrupt()
    digest = digest_of(
        "ksampler",
        int(inp["seed"]),
        steps,
        float(inp["cfg"]),
        inp["sampler_name"],
        inp["scheduler"],
        float(inp["denoise"]),
        inp["positive"].text,
        inp["negative"].text,
        inp["model"].ckpt,
        latent.digest,
    )
    return (Latent(latent.width, latent.height, latent.batch, digest),)


async def _vae_decode(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    s: Latent = inp["samples"]
    return (Picture(s.width, s.height, s.batch, digest_of("decode", s.digest, inp["vae"].ckpt)),)


async def _vae_encode(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    p: Picture = inp["pixels"]
    return (Latent(_latent_pixels(p.width), _latent_pixels(p.height), p.batch,
                   digest_of("encode", p)),)


async def _load_image(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    path = ctx.root / "input" / str(inp["image"])
    data = path.read_bytes()
    try:
        w, h = png_size(data)
    except ValueError:
        raise NodeFailure(
            "PIL.UnidentifiedImageError", f"cannot identify image file '{path.resolve()}'"
        ) from None
    return Picture(w, h, 1, digest_of("load", data)), Mask(w, h)


async def _empty_image(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    color = int(inp["color"])
    rgb = ((color >> 16) & 255, (color >> 8) & 255, color & 255)
    w, h, b = int(inp["width"]), int(inp["height"]), int(inp["batch_size"])
    return (Picture(w, h, b, digest_of("empty", rgb), solid=rgb),)


async def _image_scale(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    p: Picture = inp["image"]
    return (p.scaled(*scaled_size(p.width, p.height, int(inp["width"]), int(inp["height"]))),)


async def _latent_upscale(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    s: Latent = inp["samples"]
    w, h = scaled_size(s.width, s.height, int(inp["width"]), int(inp["height"]))
    return (Latent(w, h, s.batch, s.digest),)


async def _image_invert(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    return (inp["image"].invert(),)


async def _image_blur(inp: dict[str, Any], ctx: NodeContext) -> Outputs:
    return (inp["image"],)  # a blurred solid colour or linear gradient is the same picture


def _counter(folder: Path, name: str) -> int:
    """Next SaveImage counter: one past the highest `<name>_NNNNN_` file already in the folder."""
    best = 0
    if folder.is_dir():
        for entry in os.listdir(folder):
            head = entry[: len(name) + 1]
            if os.path.normcase(head[:-1]) != os.path.normcase(name) or head[-1:] != "_":
                continue
            try:
                best = max(best, int(entry[len(name) + 1 :].split("_")[0]))
            except ValueError:
                continue
    return best + 1


def _save(inp: dict[str, Any], ctx: NodeContext, kind: str, prefix: str) -> UiOutput:
    base = (ctx.root / kind).resolve()
    norm = os.path.normpath(prefix)
    subfolder, name = os.path.dirname(norm), os.path.basename(norm)
    folder = Path(os.path.abspath(base / subfolder))
    if os.path.commonpath((str(base), str(folder))) != str(base):
        raise NodeFailure(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not "
            f"allowed.\n full_output_folder: {folder}\n         output_dir: {base}\n"
            f"         commonpath: {os.path.commonpath((str(base), str(folder)))}",
        )
    folder.mkdir(parents=True, exist_ok=True)
    pic: Picture = inp["images"]
    text = {"prompt": json.dumps(ctx.graph)}
    pnginfo = ctx.extra_data.get("extra_pnginfo")
    if isinstance(pnginfo, dict):
        text.update({str(k): json.dumps(v) for k, v in pnginfo.items()})
    counter = _counter(folder, name)
    images = []
    for index in range(pic.batch):
        filename = f"{name}_{counter:05}_.png"
        data = encode_png(pic.width, pic.height, pic.rows(index), text)
        tmp = folder / f".{filename}.part"
        tmp.write_bytes(data)
        tmp.replace(folder / filename)
        images.append({"filename": filename, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"images": images}


async def _save_image(inp: dict[str, Any], ctx: NodeContext) -> tuple[Outputs, UiOutput]:
    return (), _save(inp, ctx, "output", str(inp["filename_prefix"]))


async def _preview_image(inp: dict[str, Any], ctx: NodeContext) -> tuple[Outputs, UiOutput]:
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return (), _save(inp, ctx, "temp", f"ComfyUI_temp_{suffix}")


_PLAIN: dict[str, Callable[[dict[str, Any], NodeContext], Awaitable[Outputs]]] = {
    "CheckpointLoaderSimple": _checkpoint,
    "CLIPTextEncode": _clip,
    "EmptyLatentImage": _empty_latent,
    "KSampler": _ksampler,
    "VAEDecode": _vae_decode,
    "VAEEncode": _vae_encode,
    "LoadImage": _load_image,
    "EmptyImage": _empty_image,
    "ImageScale": _image_scale,
    "LatentUpscale": _latent_upscale,
    "ImageInvert": _image_invert,
    "ImageBlur": _image_blur,
}
_OUTPUT = {"SaveImage": _save_image, "PreviewImage": _preview_image}
SUPPORTED: frozenset[str] = frozenset(_PLAIN) | frozenset(_OUTPUT)


async def run_node(
    class_type: str, inputs: dict[str, Any], ctx: NodeContext
) -> tuple[Outputs, UiOutput]:
    """Run one node; raises NodeFailure (runtime error) or Interrupted."""
    if class_type in _OUTPUT:
        return await _OUTPUT[class_type](inputs, ctx)
    if class_type in _PLAIN:
        return await _PLAIN[class_type](inputs, ctx), None
    raise NodeFailure("NotImplementedError", f"the emulator cannot run {class_type}")
