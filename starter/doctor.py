"""`storyloom doctor`: check every service, model and template; one line each, with the fix.

Temporal (address, namespace), the database (migrations), Ollama (version, text and embed
models), ComfyUI (version, each template's node classes and inputs, the checkpoint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starter.clients import comfy_client, ollama_client
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


async def _ollama(settings: Settings) -> list[Check]:
    client = ollama_client(settings)
    try:
        try:
            version = await client.version()
            names = _model_names(await client.list_models())
        except Exception as exc:  # noqa: BLE001 - any failure is a FAIL line
            return [Check("ollama", False, f"{settings.ollama_url}: {exc}",
                          "start Ollama (`ollama serve`), set OLLAMA_HOST, or use "
                          "`storyloom up --emulate`")]
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


async def _checkpoint(client: Any, checkpoint: str) -> Check:
    info = await client.object_info("CheckpointLoaderSimple")
    node = info.get("CheckpointLoaderSimple", info)
    choices = node.get("input", {}).get("required", {}).get("ckpt_name", [[]])[0]
    if checkpoint in choices:
        return Check("comfyui", True, f"checkpoint {checkpoint} present")
    return Check("comfyui", False,
                 f"checkpoint {checkpoint} missing; present: {', '.join(choices) or 'none'}",
                 "put it in ComfyUI/models/checkpoints or set STORYLOOM_CHECKPOINT")


async def _comfyui(settings: Settings) -> list[Check]:
    from activities.templates import WorkflowManager
    client = comfy_client(settings)
    try:
        try:
            stats = await client.system_stats()
        except Exception as exc:  # noqa: BLE001 - any failure is a FAIL line
            return [Check("comfyui", False, f"{settings.comfyui_url}: {exc}",
                          "start ComfyUI (`python main.py --listen`), set STORYLOOM_COMFYUI_URL, "
                          "or use `storyloom up --emulate`")]
        version = stats.get("system", {}).get("comfyui_version", "unknown")
        checks = [Check("comfyui", True, f"{settings.comfyui_url}, version {version}")]
        manager = WorkflowManager()
        for name in manager.names():
            try:
                problems = await manager.check_against_server(client, name)
            except Exception as exc:  # noqa: BLE001 - any failure is a FAIL line
                problems = [str(exc)]
            if problems:
                checks.append(Check("template", False, f"{name}: {'; '.join(map(str, problems))}",
                                    "install the missing custom nodes or models in ComfyUI"))
            else:
                checks.append(Check("template", True, f"{name}: nodes and inputs match"))
        if settings.checkpoint:
            checks.append(await _checkpoint(client, settings.checkpoint))
        return checks
    finally:
        await client.aclose()


async def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order; never raises (an unexpected error becomes a failed line)."""
    checks: list[Check] = []
    for name, probe in (("temporal", _temporal), ("database", _database),
                        ("ollama", _ollama), ("comfyui", _comfyui)):
        try:
            found = await probe(settings)
        except Exception as exc:
            logger.exception("doctor check %s crashed", name)
            found = Check(name, False, f"the check itself failed: {exc}", "see the log")
        checks.extend(found if isinstance(found, list) else [found])
    return checks
