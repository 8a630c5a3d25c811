"""Write and sniff PNG files with zlib + struct only (no Pillow)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

__all__ = ["PNG_SIGNATURE", "encode_png", "png_size"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(width: int, height: int, rows: Iterable[bytes], text: dict[str, str]) -> bytes:
    """An 8-bit RGB PNG; `rows` yields `height` rows of `3 * width` bytes; `text` → tEXt chunks."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    compressor = zlib.compressobj(6)
    parts = [compressor.compress(b"\x00" + row) for row in rows]
    parts.append(compressor.flush())
    chunks = [PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    for key, value in text.items():
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")))
    chunks.append(_chunk(b"IDAT", b"".join(parts)))
    chunks.append(_chunk(b"IEND", b""))
    return b"".join(chunks)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG; raises ValueError when the bytes are not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise ValueError("PNG with zero size")
    return int(width), int(height)
