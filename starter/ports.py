"""Is a TCP port already taken? (Checked before a server is started on it.)"""

from __future__ import annotations

import socket

__all__ = ["port_in_use"]


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
