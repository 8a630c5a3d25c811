"""Which workers poll storyloom's task queues (Temporal's DescribeTaskQueue), and what they say
about themselves.

An illustrated run that does not pin a GPU renders on whichever GPU the scheduler grants: its
image need is served when any registered GPU's queue (the scheduler's ``stats``) or
``storyloom-image`` has a live poller.

A poller is listed for a few minutes after its worker died, so only pollers seen within
``LIVE_WITHIN_S`` count: a live worker's long poll is renewed at least every ~60-70 s.
Workers put their store in their identity (``worker_identity``), so a CLI can tell when it
would read another store than the running stack writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.exceptions import TemporalError

from workflows_temporal.policies import (
    DB_QUEUE,
    GPU_SCHEDULER_ID,
    LLM_QUEUE,
    SCENE_WORKFLOW_QUEUE,
    image_queue,
)

__all__ = ["LIVE_WITHIN_S", "Poller", "QueueNeed", "for_terminal", "live_pollers", "need_pollers",
           "queues_needed",
           "silent_queues", "start_hint", "store_of", "unserved_message", "unserved_watch", "warn_when_unserved",
           "worker_identity"]

LIVE_WITHIN_S = 75.0
_MARK = " storyloom "


@dataclass(frozen=True)
class Poller:
    identity: str
    seen_s_ago: float


@dataclass(frozen=True)
class QueueNeed:
    """A task queue a run needs, its kind, and the worker role that serves it."""

    queue: str
    kind: TaskQueueType.ValueType
    role: str
    any_gpu: bool = False  # an image need not pinned to a GPU: any GPU's queue serves it


def queues_needed(*, illustrate: bool = True, gpu: str = "") -> list[QueueNeed]:
    """The queues a scene or story needs polled: workflows, db, llm and (illustrated) image."""
    activity = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    needs = [QueueNeed(SCENE_WORKFLOW_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, "any"),
             QueueNeed(DB_QUEUE, activity, "db"), QueueNeed(LLM_QUEUE, activity, "llm")]
    if illustrate:
        needs.append(QueueNeed(image_queue(gpu), activity, "image", any_gpu=not gpu))
    return needs


async def live_pollers(client: Client, queue: str, kind: TaskQueueType.ValueType) -> list[Poller]:
    """Pollers of ``queue`` seen within LIVE_WITHIN_S; RPC errors propagate."""
    reply = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind))
    now = time.time()
    found = []
    for poller in reply.pollers:
        seen = poller.last_access_time.ToDatetime().timestamp() if poller.HasField(
            "last_access_time") else now
        if now - seen <= LIVE_WITHIN_S:
            found.append(Poller(poller.identity, max(0.0, now - seen)))
    return found


async def _registered_gpus(client: Client) -> list[str]:
    """The GPUs alive in the scheduler's ``stats``; [] when it does not run or answer."""
    try:
        stats = await asyncio.wait_for(
            client.get_workflow_handle(GPU_SCHEDULER_ID).query("stats"), 3.0)
    except (TemporalError, TimeoutError):  # not started, or no workflow worker: none known
        return []
    gpus = stats.get("gpus", {}) if isinstance(stats, dict) else {}
    return sorted(name for name, g in gpus.items() if isinstance(g, dict) and g.get("alive"))


async def need_pollers(client: Client, need: QueueNeed) -> dict[str, list[Poller]]:
    """The queues that serve ``need`` with their live pollers (only polled ones; {}: none).
    An ``any_gpu`` need is served by ``need.queue`` or any registered GPU's image queue."""
    queues = [need.queue]
    if need.any_gpu:
        queues += [q for q in map(image_queue, await _registered_gpus(client))
                   if q not in queues]
    found = {}
    for queue in queues:
        if pollers := await live_pollers(client, queue, need.kind):
            found[queue] = pollers
    return found


async def silent_queues(client: Client, needs: list[QueueNeed]) -> list[QueueNeed]:
    """The needed queues that no live worker polls (an ``any_gpu`` need: no GPU's queue)."""
    return [need for need in needs if not await need_pollers(client, need)]


def worker_identity(data_dir: str, store: str, **services: str) -> str:
    """``pid@host storyloom {"data_dir": ..., "store": ..., ...}``: the SDK's default identity
    plus where this worker keeps stories (``store`` without a password) and the ``services`` it
    calls (``ollama_url``, ``comfyui_url``, without credentials)."""
    return (f"{os.getpid()}@{socket.gethostname()}{_MARK}"
            + json.dumps({"data_dir": data_dir, "store": store, **services}))


def store_of(identity: str) -> tuple[str, dict[str, str]] | None:
    """(host, {"data_dir", "store"}) from a storyloom worker identity; None for another one."""
    head, mark, tail = identity.partition(_MARK)
    if not mark:
        return None
    try:
        found = json.loads(tail)
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    return head.partition("@")[2], {k: str(v) for k, v in found.items()}


def start_hint(needs: list[QueueNeed]) -> str:
    """The command that starts a worker for ``needs``."""
    roles = sorted({n.role for n in needs if n.role != "any"})
    role = roles[0] if len(roles) == 1 and len(needs) == 1 else "all"
    return f"`storyloom worker --role {role}` (or `storyloom up`)"


_COMMAND = re.compile(r"`[^`]*`")


def for_terminal(text: str, stream: TextIO, width: int | None = None) -> str:
    """``text`` wrapped to the terminal's width when ``stream`` is one (``width`` overrides),
    never inside a `command` (its spaces are kept, so it stays copyable); unchanged for a
    pipe or a file."""
    if width is None:
        if not stream.isatty():
            return text
        width = shutil.get_terminal_size().columns
    glue = "\x00"
    protected = _COMMAND.sub(lambda m: m.group(0).replace(" ", glue), text)
    lines = textwrap.wrap(protected, width=max(width - 1, 20), break_long_words=False,
                          break_on_hyphens=False)
    return "\n".join(lines).replace(glue, " ")


def unserved_message(needs: list[QueueNeed], what: str = "scene") -> str:
    """The sentence for queues nobody polls: which ones, and how to start a worker."""
    queues = ", ".join(n.queue for n in needs)
    return (f"No worker is polling {queues}, so the {what} waits: start one with "
            f"{start_hint(needs)}; it goes on from where it is.")


async def warn_when_unserved(client: Client, needs: list[QueueNeed], *, what: str = "scene",
                             after_s: float = 3.0, every_s: float = 2.0,
                             out: TextIO | None = None) -> None:
    """After ``after_s``, say (once per change) which needed queues no worker polls; runs until
    cancelled. Errors asking Temporal are ignored: the progress display reports those."""
    await asyncio.sleep(after_s)
    said: list[str] = []
    while True:
        with contextlib.suppress(Exception):
            silent = await silent_queues(client, needs)
            names = [n.queue for n in silent]
            if silent and names != said:
                stream = out or sys.stderr
                print(for_terminal(unserved_message(silent, what), stream), file=stream,
                      flush=True)
            said = names
        await asyncio.sleep(every_s)


@contextlib.asynccontextmanager
async def unserved_watch(client: Client, needs: list[QueueNeed], what: str = "scene"
                         ) -> AsyncIterator[None]:
    """Run ``warn_when_unserved`` for the duration of the block."""
    task = asyncio.create_task(warn_when_unserved(client, needs, what=what))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
