"""Values that flow along graph links (images, latents, models) and deterministic pixels."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

__all__ = ["Conditioning", "Latent", "Mask", "Model", "Picture", "digest_of", "scaled_size"]


def digest_of(*parts: object) -> bytes:
    """A stable digest of printable parts (seed, prompt text, sizes...)."""
    return hashlib.sha256("\x1f".join(repr(p) for p in parts).encode("utf-8")).digest()


def scaled_size(width: int, height: int, new_w: int, new_h: int) -> tuple[int, int]:
    """ComfyUI's rule: 0 for one side keeps the aspect ratio, 0 for both keeps the size."""
    if new_w == 0 and new_h == 0:
        return width, height
    if new_w == 0:
        return max(1, round(width * new_h / height)), new_h
    if new_h == 0:
        return new_w, max(1, round(height * new_w / width))
    return new_w, new_h


@lru_cache(maxsize=2)
def _shift_tables(inverted: bool) -> tuple[bytes, ...]:
    """256 translate tables: add `shift` to every byte (mod 256), optionally then invert."""
    tables = []
    for shift in range(256):
        row = bytes(((i + shift) & 255) ^ (255 if inverted else 0) for i in range(256))
        tables.append(row)
    return tuple(tables)


@dataclass(frozen=True)
class Model:
    """MODEL / CLIP / VAE stand-in: just the checkpoint it came from."""

    kind: str
    ckpt: str

    def __str__(self) -> str:
        return f"<{self.kind} {self.ckpt}>"


@dataclass(frozen=True)
class Conditioning:
    """CONDITIONING stand-in: the encoded text."""

    text: str
    ckpt: str

    def __str__(self) -> str:
        return "<CONDITIONING>"


@dataclass(frozen=True)
class Latent:
    """LATENT stand-in; sizes are in pixels (what VAEDecode will produce)."""

    width: int
    height: int
    batch: int
    digest: bytes

    def __str__(self) -> str:
        return f"<LATENT {self.batch}x{self.width}x{self.height}>"


@dataclass(frozen=True)
class Mask:
    """MASK stand-in."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"<MASK {self.width}x{self.height}>"


@dataclass(frozen=True)
class Picture:
    """IMAGE stand-in: a batch of same-size RGB images described by a recipe, not pixels.

    Pixels are a deterministic function of the recipe: a solid colour (EmptyImage) or a gradient
    whose base colour and slopes come from `digest` (seed, prompt text, loaded bytes...).
    """

    width: int
    height: int
    batch: int
    digest: bytes
    solid: tuple[int, int, int] | None = None
    inverted: bool = False

    def __str__(self) -> str:
        return f"<IMAGE {self.batch}x{self.width}x{self.height}>"

    def scaled(self, width: int, height: int) -> Picture:
        return replace(self, width=width, height=height)

    def invert(self) -> Picture:
        return replace(self, inverted=not self.inverted)

    def rows(self, index: int) -> Iterator[bytes]:
        """The rows (3 * width bytes each) of batch image `index`."""
        if self.solid is not None:
            rgb = bytes(c ^ (255 if self.inverted else 0) for c in self.solid)
            row = rgb * self.width
            for _ in range(self.height):
                yield row
            return
        d = hashlib.sha256(self.digest + index.to_bytes(4, "big")).digest()
        slopes = [d[3 + c] % 5 + 1 for c in range(3)]
        base = bytes((d[c] + x * slopes[c]) & 255 for x in range(self.width) for c in range(3))
        dy = d[6] % 7 + 1
        tables = _shift_tables(self.inverted)
        for y in range(self.height):
            yield base.translate(tables[(y * dy) & 255])
