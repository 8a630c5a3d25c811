"""A replay server: answers every HTTP request with one recorded NDJSON stream, fast.

``python -m bench.replay FILE`` binds a free loopback port, prints it, and answers each request
(any method and path) with FILE's lines, one HTTP chunk per line as Ollama sends them, written
at once so the server is never what limits a client's parsing rate.
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


async def _serve(path: Path) -> None:
    reply = encode_chunked(path.read_bytes().splitlines(keepends=True))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(reply)
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
    asyncio.run(_serve(Path(sys.argv[1])))
