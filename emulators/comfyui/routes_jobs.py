"""The jobs API (§3.5): /api/jobs, /api/jobs/{id}, and the two cancel endpoints."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emulators.comfyui.core import CORE, Core
from emulators.comfyui.ledger import Finished, QueueItem
from emulators.comfyui.routes_queue import is_canonical_uuid, server_error

__all__ = ["jobs_routes"]

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


def _outputs_counts(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    total, previewable, preview = 0, 0, None
    for node_id, ui in outputs.items():
        for media, items in ui.items():
            if not isinstance(items, list):
                continue
            total += len(items)
            if media in ("images", "video", "audio", "gifs"):
                previewable += len(items)
                if preview is None and items:
                    preview = {**items[0], "nodeId": node_id, "mediaType": media}
    return total, previewable, preview


def job_shape(status: str, item: QueueItem, done: Finished | None, *, full: bool) -> dict[str, Any]:
    """The single-job shape (full) or the list summary (without outputs/status/workflow)."""
    job: dict[str, Any] = {
        "id": item.prompt_id,
        "status": status,
        "priority": item.number,
        "create_time": item.create_time,
    }
    if done is None:
        job.update(outputs_count=0, previewable_outputs_count=0)
        return job
    total, previewable, preview = _outputs_counts(done.outputs)
    job.update(
        execution_start_time=done.start_ms,
        execution_end_time=done.end_ms,
        outputs_count=total,
        previewable_outputs_count=previewable,
    )
    if preview is not None:
        job["preview_output"] = preview
    if full:
        job["outputs"] = done.outputs
        job["execution_status"] = done.status()
        job["workflow"] = {"prompt": item.graph, "extra_data": item.extra_data}
    if done.error is not None:
        job["execution_error"] = done.error
    return job


def find_job(core: Core, pid: str, *, full: bool = True) -> dict[str, Any] | None:
    live = core.ledger.live(pid)
    if live is not None:
        return job_shape(live[0], live[1], None, full=full)
    done = core.ledger.history.get(pid)
    return job_shape(done.kind, done.item, done, full=full) if done is not None else None


def _all_jobs(core: Core) -> list[dict[str, Any]]:
    ledger = core.ledger
    jobs = []
    if ledger.running is not None:
        jobs.append(job_shape("in_progress", ledger.running, None, full=False))
    jobs.extend(job_shape("pending", item, None, full=False) for item in ledger.pending)
    live = {j["id"] for j in jobs}
    jobs.extend(
        job_shape(d.kind, d.item, d, full=False)
        for pid, d in ledger.history.items()
        if pid not in live
    )
    return jobs


def _flat_error(text: str) -> web.Response:
    return web.json_response({"error": text}, status=400)


async def list_jobs(request: web.Request) -> web.Response:
    query = request.rel_url.query
    wanted = [s.strip() for s in query.get("status", "").split(",") if s.strip()]
    bad = [s for s in wanted if s not in STATUSES]
    if bad:
        return _flat_error(
            f"Invalid status value(s): {', '.join(bad)}. Valid values: {', '.join(STATUSES)}"
        )
    sort_by = query.get("sort_by", "created_at")
    if sort_by not in ("created_at", "execution_duration"):
        return _flat_error("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc")
    if sort_order not in ("asc", "desc"):
        return _flat_error("sort_order must be 'asc' or 'desc'")
    limit: int | None = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            return _flat_error("limit must be an integer")
        if limit <= 0:
            return _flat_error("limit must be a positive integer")
    try:
        offset = max(0, int(query.get("offset", "0")))
    except ValueError:
        return _flat_error("offset must be an integer")
    jobs = _all_jobs(request.app[CORE])
    if wanted:
        jobs = [j for j in jobs if j["status"] in wanted]
    workflow_id = query.get("workflow_id")
    if workflow_id is not None:
        jobs = [j for j in jobs if _workflow_id(request.app[CORE], j["id"]) == workflow_id]

    def key(job: dict[str, Any]) -> float:
        if sort_by == "execution_duration":
            return float(job.get("execution_end_time", 0) - job.get("execution_start_time", 0))
        return float(job.get("create_time") or 0)

    jobs.sort(key=key, reverse=sort_order == "desc")
    page = jobs[offset : offset + limit if limit is not None else None]
    return web.json_response(
        {
            "jobs": page,
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": len(jobs),
                "has_more": offset + len(page) < len(jobs),
            },
        }
    )


def _workflow_id(core: Core, pid: str) -> Any:
    live = core.ledger.live(pid)
    item = live[1] if live is not None else core.ledger.history[pid].item
    info = item.extra_data.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, dict) else None
    return workflow.get("id") if isinstance(workflow, dict) else None


async def get_job(request: web.Request) -> web.Response:
    job = find_job(request.app[CORE], request.match_info["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


async def _cancel(core: Core, pid: str) -> bool:
    live = core.ledger.live(pid)
    if live is None:
        return False
    if live[0] == "in_progress":
        return core.interrupt(pid)
    core.ledger.delete_pending({pid})
    await core.broadcast_status()
    return True


async def cancel_job(request: web.Request) -> web.Response:
    cancelled = await _cancel(request.app[CORE], request.match_info["job_id"])
    return web.json_response({"cancelled": cancelled})


async def cancel_jobs(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return server_error()
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        return _flat_error("job_ids must be a list")
    invalid = [str(i) for i in ids if not is_canonical_uuid(i)]
    if invalid:
        return web.json_response(
            {"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, status=400
        )
    results = [await _cancel(request.app[CORE], pid) for pid in ids]
    return web.json_response({"cancelled": any(results)})


def jobs_routes() -> list[tuple[str, str, Any]]:
    """Paths are absolute: the jobs API exists only under /api."""
    return [
        ("GET", "/api/jobs", list_jobs),
        ("POST", "/api/jobs/cancel", cancel_jobs),
        ("GET", "/api/jobs/{job_id}", get_job),
        ("POST", "/api/jobs/{job_id}/cancel", cancel_job),
    ]
