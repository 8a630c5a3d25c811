"""`storyloom doctor`: check every service, model and template; one line each, with the fix.

Temporal (address, namespace), the database (migrations), Ollama (version, text and embed
models), ComfyUI (version, the templates in use and the checkpoint in use: doctor_comfyui.py).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starter.clients import ollama_client
from starter.settings import Settings
from starter.temporal_client import TemporalUnreachable, connect

__all__ = ["Check", "format_check", "run_checks"]

logger = logging.getLogger(__name__)


@dataclass
class Check:
    """One line of the report: ``ok`` False means ``fix`` says what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def format_check(check: Check) -> str:
    mark = "ok  " if check.ok else "FAIL"
    line = f"{mark} {check.name:<10} {check.detail}"
    return line + (f"\n     fix: {check.fix}" if not check.ok and check.fix else "")


async def _temporal(settings: Settings) -> Check:
    try:
        client = await connect(settings, timeout=3.0)
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.temporal_namespace)
        )
    except TemporalUnreachable:
        return Check("temporal", False, f"nothing answers at {settings.temporal_address}",
                     "run `storyloom up`, or set STORYLOOM_TEMPORAL_ADDRESS")
    except Exception as exc:  # noqa: BLE001 - the namespace is missing or refused
        return Check("temporal", False,
                     f"{settings.temporal_address} answers but namespace "
                     f"{settings.temporal_namespace!r} is unusable: {exc}",
                     f"temporal operator namespace create -n {settings.temporal_namespace} "
                     f"--address {settings.temporal_address}")
    return Check("temporal", True,
                 f"{settings.temporal_address}, namespace {settings.temporal_namespace}")


async def _database(settings: Settings) -> Check:
    url = settings.effective_database_url
    shown = url.split("@")[-1] if "@" in url else url  # never print a password
    try:
        from activities.store.db import upgrade

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade(url)
    except Exception as exc:  # noqa: BLE001 - any failure is a FAIL line
        return Check("database", False, f"{shown}: {exc}",
                     "check STORYLOOM_DATABASE_URL and that the database server is up")
    return Check("database", True, f"{shown} (migrations up to date)")


def _model_names(models: Any) -> list[str]:
    names = []
    for m in models or []:
        name = m if isinstance(m, str) else (
            m.get("name") if isinstance(m, dict) else getattr(m, "name", None)
            or getattr(m, "model", None))
        if name:
            names.append(str(name))
    return names


def _installed(wanted: str, names: list[str]) -> bool:
    full = wanted if ":" in wanted else wanted + ":latest"
    return wanted in names or full in names


def _ollama_fix(url: str) -> str:
    """What to do when Ollama does not answer at ``url``: drop a path (storyloom adds
    ``/api/...`` itself), else start the server."""
    path = url.split("://", 1)[-1].partition("/")[2]
    if path:
        return (f"remove /{path} from STORYLOOM_OLLAMA_URL / OLLAMA_HOST: it is the server's "
                f"address ({url.removesuffix('/' + path)}); storyloom adds /api/... itself")
    return ("start Ollama (`ollama serve`), set OLLAMA_HOST, or use "
            "`storyloom up --emulate`")


async def _ollama(settings: Settings) -> list[Check]:
    client = ollama_client(settings)
    try:
        try:
            version = await client.version()
            names = _model_names(await client.list_models())
        except Exception as exc:  # noqa: BLE001 - any failure is a FAIL line
            return [Check("ollama", False, f"{settings.ollama_url}: {exc}",
                          _ollama_fix(settings.ollama_url))]
        checks = [Check("ollama", True, f"{settings.ollama_url}, version {version}")]
        for label, model in (("text model", settings.text_model),
                             ("embed model", settings.embed_model)):
            if _installed(model, names):
                checks.append(Check("ollama", True, f"{label} {model} installed"))
            else:
                checks.append(Check("ollama", False,
                                    f"{label} {model} is not installed; installed: "
                                    f"{', '.join(names) or 'none'}",
                                    f"ollama pull {model}"))
        return checks
    finally:
        await client.aclose()


async def _comfyui(settings: Settings) -> list[Check]:
    from starter.doctor_comfyui import comfyui_checks

    return await comfyui_checks(settings)


async def _workers(settings: Settings) -> list[Check]:
    """One line per task queue a scene needs: the live workers polling it, or the fix."""
    from starter.pollers import need_pollers, queues_needed, start_hint

    try:
        client = await connect(settings, timeout=3.0)
    except TemporalUnreachable:
        return []  # the temporal line already says so
    checks = []
    for need in queues_needed(gpu=settings.gpu):
        polled = await need_pollers(client, need)  # any GPU's image queue for a scene
        for queue, pollers in polled.items():
            who = ", ".join(sorted({p.identity.split(" ", 1)[0] for p in pollers}))
            checks.append(Check("worker", True, f"{queue}: polled by {who}"))
        if polled:
            continue
        checks.append(Check("worker", False, f"{need.queue}: no worker is polling it, so "
                            "scenes wait", f"start one: {start_hint([need])}"))
    from starter.same_store import worker_stores

    for theirs in {s.store: s for s in await worker_stores(settings) or []}.values():
        if theirs.store == settings.store_label:
            checks.append(Check("store", True, f"{theirs.worker} writes the store this "
                                f"terminal reads ({theirs.store})"))
        else:
            checks.append(Check("store", False, f"{theirs.worker} writes {theirs.store}, but "
                                f"this terminal reads {settings.store_label}",
                                f"export STORYLOOM_DATA_DIR={theirs.data_dir} (or the worker's "
                                "STORYLOOM_DATABASE_URL)"))
    return checks


# STORYLOOM_ variables that are not settings but are read elsewhere (tests, benchmarks).
_OTHER_VARIABLES = ("STORYLOOM_REAL_", "STORYLOOM_TEST_", "STORYLOOM_BENCH_")


def unknown_variables(environ: Mapping[str, str]) -> list[Check]:
    """One FAIL line per ``STORYLOOM_*`` variable that is no setting (so it is ignored), with
    the closest setting's name when there is one (a misspelling such as CHECKPIONT)."""
    known = sorted(f"STORYLOOM_{name.upper()}" for name in Settings.model_fields)
    checks = []
    for name in sorted(environ):
        if (not name.startswith("STORYLOOM_") or name in known
                or name.startswith(_OTHER_VARIABLES)):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        fix = (f"rename it {close[0]}" if close else
               "unset it; `storyloom --help` and the README list the settings")
        checks.append(Check("config", False, f"{name} is not a storyloom setting: it is "
                            "ignored", fix))
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order; never raises (an unexpected error becomes a failed line)."""
    checks: list[Check] = unknown_variables(os.environ)
    for name, probe in (("temporal", _temporal), ("database", _database),
                        ("ollama", _ollama), ("comfyui", _comfyui), ("worker", _workers)):
        try:
            found = await probe(settings)
        except Exception as exc:
            logger.exception("doctor check %s crashed", name)
            found = Check(name, False, f"the check itself failed: {exc}", "see the log")
        checks.extend(found if isinstance(found, list) else [found])
    return checks
