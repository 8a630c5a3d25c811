"""The async ComfyUI client: queue, ask, cancel and free; one attempt per call, typed errors.

Progress over the WebSocket lives in ``follow.py``, file transfer in ``files.py``; this class
is the one entry point and owns the one shared ``httpx.AsyncClient``. Nothing here retries:
the engine does (ARCHITECTURE rule 1). Completion is always read over HTTP (§10.1).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from activities.comfyui import files
from activities.comfyui.follow import Watcher
from activities.comfyui.models import ComfyTimeouts, Downloaded, FileRef, JobState, JobStatus
from activities.comfyui.refusal import validation_error
from activities.comfyui.transport import SERVICE, ComfyHttp, parse_json
from activities.errors import OutputMissing

__all__ = ["ComfyClient"]

_JOB_STATES = {
    "pending": JobState.PENDING,
    "in_progress": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}
_NOT_FOUND = frozenset({404})
_DEFAULT_TIMEOUTS = ComfyTimeouts()


class ComfyClient:
    """One ComfyUI server. Every method makes one attempt and raises a StoryloomError subclass
    (service "comfyui"): ServiceUnavailable / ServiceTimeout / ServerError / ServiceBusy are
    retryable; BadRequest, ComfyValidationError, OutputMissing are final.

    ``client_id`` (one per worker process) is sent with every prompt and used for the
    WebSocket, so only our socket receives our prompts' execution frames.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        timeouts: ComfyTimeouts = _DEFAULT_TIMEOUTS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeouts = timeouts
        self.client_id = client_id or uuid.uuid4().hex
        self.http = ComfyHttp(
            base_url, connect=timeouts.connect, read=timeouts.read, transport=transport
        )
        self._has_jobs_api: bool | None = None
        self._object_info: dict[str, dict[str, Any]] = {}

    @property
    def base_url(self) -> str:
        return self.http.base_url

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- submit ----------------------------------------------------------------------------

    async def queue_prompt(
        self, graph: dict[str, Any], prompt_id: str, *, extra_data: dict[str, Any] | None = None,
        client_id: str | None = None,
    ) -> int:
        """Queue ``graph`` under ``prompt_id`` (canonical lowercase UUID); returns the queue number.

        ``client_id`` (default: this client's) is the WebSocket clientId that receives the
        prompt's execution frames (§4.4). Not idempotent: the server runs duplicates (§2.4), so
        look the id up first. Raises ComfyValidationError (final) for any 400, in 0.33's shape or
        an older server's (refusal.py), listing node id, class, input and ComfyUI's message.
        """
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id or self.client_id,
                                "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        response = await self.http.request("POST", "/prompt", json=body, accept=frozenset({400}))
        where = self.http.url("/prompt")
        if response.status_code == 400:
            raise validation_error(response, graph, where)
        answer = parse_json(response, where)
        number = answer.get("number", 0) if isinstance(answer, dict) else 0
        return int(number) if isinstance(number, int | float) else 0

    # ---- state -----------------------------------------------------------------------------

    async def job_status(self, prompt_id: str) -> JobStatus:
        """Where the job is, from ``/api/jobs/<id>``, or ``/history`` + ``/queue`` on servers
        without the jobs API. A removed, never-seen or restart-lost job is UNKNOWN."""
        if self._has_jobs_api is not False:
            response = await self.http.request(
                "GET", f"/api/jobs/{prompt_id}", accept=_NOT_FOUND
            )
            if response.status_code == 200:
                self._has_jobs_api = True
                return await self._from_job(parse_json(response, self.http.url("/api/jobs")),
                                            prompt_id)
            if self._has_jobs_api is None:
                probe = await self.http.request("GET", "/api/jobs", params={"limit": 1},
                                                accept=_NOT_FOUND)
                self._has_jobs_api = probe.status_code != 404
            if self._has_jobs_api:
                return JobStatus(JobState.UNKNOWN)
        return await self._from_history(prompt_id)

    async def _from_job(self, job: dict[str, Any], prompt_id: str) -> JobStatus:
        state = _JOB_STATES.get(str(job.get("status")), JobState.UNKNOWN)
        if state is JobState.UNKNOWN:  # a job without a status we know: ask history instead
            return await self._from_history(prompt_id)
        position = await self._queue_position(prompt_id) if state is JobState.PENDING else None
        outputs = job.get("outputs")
        if state is JobState.COMPLETED and not isinstance(outputs, dict):
            # A server whose job entry lacks the outputs: history has them.
            return await self._from_history(prompt_id)
        return JobStatus(
            state, queue_position=position, outputs=dict(outputs or {}),
            error=job.get("execution_error") if state is JobState.FAILED else None,
        )

    async def _from_history(self, prompt_id: str) -> JobStatus:
        history = await self.http.get_json(f"/history/{prompt_id}")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if not isinstance(entry, dict) or not entry:
            queue = await self.http.get_json("/queue")
            if any(item[1] == prompt_id for item in queue.get("queue_running", [])):
                return JobStatus(JobState.RUNNING)
            position = _position_in(queue, prompt_id)
            if position is not None:
                return JobStatus(JobState.PENDING, queue_position=position)
            return JobStatus(JobState.UNKNOWN)
        return _history_status(entry)

    async def _queue_position(self, prompt_id: str) -> int | None:
        return _position_in(await self.http.get_json("/queue"), prompt_id)

    async def outputs(self, prompt_id: str, node_id: str) -> list[FileRef]:
        """The images output node ``node_id`` wrote. OutputMissing (final) if there are none or
        the job is not completed."""
        status = await self.job_status(prompt_id)
        where = f"{self.base_url} prompt {prompt_id} node {node_id}"
        if status.state is not JobState.COMPLETED:
            raise OutputMissing(
                f"job is {status.state}, not completed", service=SERVICE, where=where,
                hint="Wait for the job to finish before reading its outputs",
            )
        images = (status.outputs.get(node_id) or {}).get("images") or []
        refs = [FileRef(str(i["filename"]), str(i.get("subfolder", "")), str(i.get("type", "output")))
                for i in images if isinstance(i, dict) and i.get("filename")]
        if not refs:
            raise OutputMissing(
                "the finished job has no image from this node", service=SERVICE, where=where,
                hint="Check the template's output_node; it must be a SaveImage node",
                details={"prompt_id": prompt_id, "node_id": node_id,
                         "nodes_with_output": sorted(status.outputs)},
            )
        return refs

    # ---- progress and files ----------------------------------------------------------------

    def watch(self, client_id: str | None = None) -> Watcher:
        """``async with client.watch(cid) as w:`` opens the WebSocket as clientId ``cid``
        (default: this client's); submit inside with the same ``client_id``, then
        ``async for event in w.follow(prompt_id)``."""
        return Watcher(self, client_id)

    async def download(self, ref: FileRef, dest_dir: Path, *, stem: str) -> Downloaded:
        """Fetch an output into ``dest_dir`` as ``<stem>-<sha256[:12]><ext>`` (see files.py)."""
        return await files.download(self.http, ref, dest_dir, stem=stem)

    async def upload_image(
        self, path: Path, *, subfolder: str = "storyloom", overwrite: bool = False
    ) -> FileRef:
        """Upload to the input folder; use the returned name (the server may rename)."""
        return await files.upload_image(self.http, path, subfolder=subfolder, overwrite=overwrite)

    # ---- control ---------------------------------------------------------------------------

    async def cancel(self, prompt_id: str, *, confirm_within: float = 10.0) -> bool:
        """Cancel this prompt only (pending: dequeue; running: interrupt) and confirm over HTTP.

        True when the job is now cancelled or gone; False when it had already finished or is
        still running after ``confirm_within`` seconds. Idempotent.
        """
        if self._has_jobs_api is not False:
            response = await self.http.request(
                "POST", f"/api/jobs/{prompt_id}/cancel", accept=_NOT_FOUND
            )
            self._has_jobs_api = response.status_code != 404
        if not self._has_jobs_api:
            await self.http.request("POST", "/queue", json={"delete": [prompt_id]})
            await self.http.request("POST", "/interrupt", json={"prompt_id": prompt_id})
        deadline = time.monotonic() + confirm_within
        while True:
            state = (await self.job_status(prompt_id)).state
            if state in (JobState.CANCELLED, JobState.UNKNOWN):
                return True
            if state in (JobState.COMPLETED, JobState.FAILED) or time.monotonic() > deadline:
                return False
            await asyncio.sleep(min(0.2, self.timeouts.poll_interval))

    async def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """Ask ComfyUI to unload models / free memory between prompts (no confirmation exists)."""
        await self.http.request(
            "POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory}
        )

    async def object_info(self, class_name: str) -> dict[str, Any]:
        """The node definition of one class (``{}`` if the server lacks it); cached when found."""
        if class_name in self._object_info:
            return self._object_info[class_name]
        info = await self.http.get_json(f"/object_info/{class_name}")
        definition = info.get(class_name, {}) if isinstance(info, dict) else {}
        if definition:
            self._object_info[class_name] = definition
        return dict(definition)

    async def system_stats(self) -> dict[str, Any]:
        """``/system_stats``: version, OS, devices. A cheap liveness probe."""
        stats = await self.http.get_json("/system_stats")
        return dict(stats)


def _position_in(queue: dict[str, Any], prompt_id: str) -> int | None:
    """Prompts ahead of ``prompt_id`` (running included), or None if it is not pending."""
    pending = sorted(queue.get("queue_pending", []), key=lambda item: item[0])
    for index, item in enumerate(pending):
        if item[1] == prompt_id:
            return len(queue.get("queue_running", [])) + index
    return None


def _history_status(entry: dict[str, Any]) -> JobStatus:
    """The state of a finished ``/history`` entry, liberal about what older servers leave out.

    Only a terminal ``execution_error`` / ``execution_interrupted`` message or ``status_str``
    ``"error"`` proves failure; an entry without ``status`` (servers before it existed), without
    ``status_str`` or without ``messages`` is completed: a finished job is never read as failed
    because a field is missing.
    """
    raw_status, raw_outputs = entry.get("status"), entry.get("outputs")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    outputs: dict[str, Any] = dict(raw_outputs) if isinstance(raw_outputs, dict) else {}
    raw_messages = status.get("messages")
    messages: list[Any] = raw_messages if isinstance(raw_messages, list) else []
    last_type, last_data = "", {}
    if messages and isinstance(messages[-1], list | tuple) and len(messages[-1]) == 2:
        last_type, last_data = str(messages[-1][0]), messages[-1][1]
    if last_type == "execution_interrupted":
        return JobStatus(JobState.CANCELLED, outputs=outputs)
    if last_type == "execution_error":
        error = last_data if isinstance(last_data, dict) else {"exception_message": str(last_data)}
        return JobStatus(JobState.FAILED, outputs=outputs, error=error)
    if status.get("status_str") == "error":
        return JobStatus(JobState.FAILED, outputs=outputs,
                         error={"exception_message": f"ComfyUI's history says {status}"})
    return JobStatus(JobState.COMPLETED, outputs=outputs)
