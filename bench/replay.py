"""A replay server: answers every HTTP request with one recorded NDJSON stream, fast.

``python -m bench.replay FILE [SHOW_FILE]`` binds a free loopback port, prints it, and answers
each request (any method and path) with FILE's lines, one HTTP chunk per line as Ollama sends
them, written at once so the server is never what limits a client's parsing rate. With
SHOW_FILE, ``POST /api/show`` gets that recorded JSON instead: our client asks for the model's
capabilities before it generates (thinking models, issue 11).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

__all__ = ["encode_chunked"]


def encode_chunked(lines: list[bytes]) -> bytes:
    """The HTTP/1.1 response carrying ``lines`` (each ending in \\n) as one chunk each."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    body = b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in lines)
    return head + body + b"0\r\n\r\n"


def _whole(body: bytes) -> bytes:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    return head + body


async def _serve(path: Path, show: Path | None) -> None:
    reply = encode_chunked(path.read_bytes().splitlines(keepends=True))
    show_reply = _whole(show.read_bytes()) if show else reply

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(show_reply if head.startswith(b"POST /api/show ") else reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))
