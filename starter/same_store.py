"""One store seen from every terminal: the CLI reads the store the running workers write.

Workers put their data dir and store (password hidden) in their Temporal identity
(``starter.pollers.worker_identity``); DescribeTaskQueue on the db queue lists them. A terminal
that set neither ``STORYLOOM_DATA_DIR`` nor ``STORYLOOM_DATABASE_URL`` adopts the store of the
running workers (same machine, no password in the URL). A terminal whose own setting differs is
told exactly what to export: refused (exit 2) by commands that start or change something,
warned by commands that only read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType

from starter.outcome import EXIT_USAGE, CliFailure
from starter.pollers import live_pollers, store_of
from starter.settings import Settings
from starter.temporal_client import connect
from workflows_temporal.policies import DB_QUEUE

__all__ = ["WorkerStore", "align_store", "worker_stores"]

logger = logging.getLogger(__name__)
_PROBE_TIMEOUT_S = 1.5
_STORE_ENV = ("STORYLOOM_DATA_DIR", "STORYLOOM_DATABASE_URL")


@dataclass(frozen=True)
class WorkerStore:
    """Where a live db worker keeps stories."""

    worker: str  # pid@host
    host: str
    data_dir: str
    store: str  # the database URL, password hidden


async def worker_stores(settings: Settings) -> list[WorkerStore] | None:
    """The stores of the live db workers; None when Temporal does not answer."""
    try:
        client = await connect(settings, timeout=_PROBE_TIMEOUT_S)
        pollers = await asyncio.wait_for(live_pollers(
            client, DB_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY), _PROBE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - no Temporal: nothing to compare with
        logger.info("store check skipped: %s", exc)
        return None
    found = []
    for poller in pollers:
        parsed = store_of(poller.identity)
        if parsed is not None:
            host, info = parsed
            found.append(WorkerStore(poller.identity.split(" ", 1)[0], host,
                                     info.get("data_dir", ""), info.get("store", "")))
    return found


def _export_line(theirs: WorkerStore) -> str:
    if "***" in theirs.store:
        return ("export STORYLOOM_DATABASE_URL='" + theirs.store.replace("***", "<password>")
                + "'")
    default = f"sqlite+aiosqlite:///{Path(theirs.data_dir) / 'storyloom.db'}"
    if theirs.store == default:
        return f"export STORYLOOM_DATA_DIR='{theirs.data_dir}'"
    return (f"export STORYLOOM_DATA_DIR='{theirs.data_dir}' "
            f"STORYLOOM_DATABASE_URL='{theirs.store}'")


def _adopt(settings: Settings, theirs: WorkerStore) -> Settings:
    default = f"sqlite+aiosqlite:///{Path(theirs.data_dir) / 'storyloom.db'}"
    return settings.model_copy(update={
        "data_dir": Path(theirs.data_dir),
        "database_url": "" if theirs.store == default else theirs.store})


async def align_store(settings: Settings, *, changes: bool) -> Settings:
    """``settings`` reading the running workers' store (see the module docstring).

    ``changes``: the command starts or changes something (refuse a different store, exit 2)
    rather than only reading (warn on stderr).
    """
    stores = await worker_stores(settings)
    if not stores or any(s.store == settings.store_label for s in stores):
        return settings
    distinct = {s.store: s for s in stores}
    explicit = any(os.environ.get(name) for name in _STORE_ENV)
    if len(distinct) == 1:
        theirs = next(iter(distinct.values()))
        if not explicit and theirs.host == socket.gethostname() and "***" not in theirs.store:
            logger.info("using the store of the running worker %s: %s", theirs.worker,
                        theirs.store)
            return _adopt(settings, theirs)
        message = (f"The worker {theirs.worker} polling Temporal at {settings.temporal_address} "
                   f"stores stories in {theirs.store}, but this terminal uses "
                   f"{settings.store_label}: run `{_export_line(theirs)}` so both use one store.")
    else:
        listed = "; ".join(f"{s.worker}: {s.store}" for s in distinct.values())
        message = (f"The workers polling Temporal at {settings.temporal_address} use different "
                   f"stores ({listed}), and this terminal uses {settings.store_label}: give every "
                   "worker and this terminal one STORYLOOM_DATA_DIR / STORYLOOM_DATABASE_URL.")
    if changes:
        raise CliFailure(message, EXIT_USAGE)
    print(f"warning: {message}", file=sys.stderr)
    return settings
