"""The `storyloom` command: parses arguments and hands each command to its module.

``main()`` is the console script. It ends with flush + ``os._exit`` (notes §6: a process that ran
a Worker may abort at interpreter exit otherwise). Errors are one readable paragraph on stderr,
the traceback goes to the log file; exit 2 for bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from starter.logs import FILE_ONLY, flush_logs, setup_logging
from starter.outcome import EXIT_FAILED, EXIT_USAGE, CliFailure
from starter.settings import Settings

__all__ = ["app", "main"]

logger = logging.getLogger("storyloom.cli")

app = typer.Typer(
    name="storyloom", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Illustrated, branching stories with Ollama + ComfyUI, made durable by Temporal.",
)


def _settings(component: str, *, console_level: int = logging.WARNING) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise CliFailure(f"The configuration is invalid (STORYLOOM_* environment): {exc}",
                         EXIT_USAGE) from exc
    setup_logging(settings.data_dir, component=component, console_level=console_level,
                  log_json=settings.log_json)
    return settings


def _run(coro_fn: Callable[..., Coroutine[Any, Any, int | None]], *args: Any, **kw: Any) -> None:
    """Run an async command; turn its outcome into an exit code (raises typer.Exit)."""
    try:
        code = asyncio.run(coro_fn(*args, **kw)) or 0
    except CliFailure as exc:
        print(exc.message, file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        logger.error("command failed", exc_info=exc, extra=FILE_ONLY)
        print(f"storyloom failed: {type(exc).__name__}: {exc}. The traceback is in the log "
              "(data dir, logs/).", file=sys.stderr)
        code = EXIT_FAILED
    raise typer.Exit(code)


def _guard(fn: Callable[..., None]) -> Callable[..., None]:
    """Configuration errors raised before the command runs become a paragraph and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> None:
        try:
            fn(*args, **kw)
        except CliFailure as exc:
            print(exc.message, file=sys.stderr)
            raise typer.Exit(exc.code) from exc

    return wrapper


@app.command()
@_guard
def up(
    emulate: Annotated[bool, typer.Option(help="Also run emulated Ollama and ComfyUI")] = False,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not start a worker")] = False,
    headless: Annotated[bool, typer.Option(help="No Temporal web UI")] = False,
    time_scale: Annotated[float, typer.Option(help="Emulator delay factor")] = 1.0,
) -> None:
    """Start the Temporal dev server, a worker and (with --emulate) both emulators."""
    from starter.up import run_up

    settings = _settings("up", console_level=logging.INFO)
    _run(run_up, settings, emulate=emulate, worker=not no_worker, headless=headless,
         time_scale=time_scale)


@app.command()
@_guard
def emulate(
    which: Annotated[str, typer.Argument(help="ollama, comfyui or all")] = "all",
    port: Annotated[int | None, typer.Option(help="Ollama emulator port")] = None,
    comfy_port: Annotated[int | None, typer.Option(help="ComfyUI emulator port")] = None,
    time_scale: Annotated[float, typer.Option(help="Multiply every emulated delay")] = 1.0,
    root: Annotated[Path | None, typer.Option(help="ComfyUI emulator root dir")] = None,
) -> None:
    """Run the emulated Ollama and/or ComfyUI in the foreground (Ctrl-C stops)."""
    from starter.emulate import port_of, run_foreground

    if which not in ("ollama", "comfyui", "all"):
        raise CliFailure(f"unknown emulator {which!r}: choose ollama, comfyui or all", EXIT_USAGE)
    settings = _settings(f"emulator-{which}", console_level=logging.INFO)
    kinds = ["ollama", "comfyui"] if which == "all" else [which]
    _run(run_foreground, kinds,
         ollama_port=port or port_of(settings.ollama_url, 11434),
         comfy_port=comfy_port or (port if which == "comfyui" and port else
                                   port_of(settings.comfyui_url, 8188)),
         time_scale=time_scale, root_dir=root or settings.data_dir / "comfyui")


@app.command()
@_guard
def worker(
    role: Annotated[str, typer.Option(help="llm, image, db or all")] = "all",
    gpu: Annotated[str | None, typer.Option(help="GPU name: which image queue to serve")] = None,
) -> None:
    """Run a worker for one role until SIGTERM/Ctrl-C (drains running activities)."""
    from starter.worker import run_worker
    from workflows_temporal.policies import ROLES

    if role not in ROLES:
        raise CliFailure(f"unknown role {role!r}: choose one of {', '.join(ROLES)}", EXIT_USAGE)
    settings = _settings(f"worker-{role}", console_level=logging.INFO)

    async def go() -> int:
        from starter.temporal_client import TemporalUnreachable

        try:
            await run_worker(settings, role, gpu=gpu)
        except TemporalUnreachable as exc:
            raise CliFailure(str(exc), EXIT_USAGE) from exc
        return 0

    _run(go)


@app.command()
@_guard
def scene(
    direction: Annotated[str, typer.Argument(help="What happens in this scene")],
    story: Annotated[str | None, typer.Option(help="Continue this story")] = None,
    parent: Annotated[str | None, typer.Option(help="Branch from this node")] = None,
    no_illustrate: Annotated[bool, typer.Option("--no-illustrate")] = False,
    model: Annotated[str | None, typer.Option(help="Ollama model")] = None,
    template: Annotated[str | None, typer.Option(help="ComfyUI template")] = None,
    style: Annotated[str | None, typer.Option(help="Style words for text and image")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: from the workflow id)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result JSON")] = False,
    detach: Annotated[bool, typer.Option(help="Start and print the workflow id")] = False,
) -> None:
    """Write (and illustrate) one scene; exit 0 when the scene exists, 1 when it failed."""
    from starter.scene_command import build_request, run_scene

    settings = _settings("cli")
    request = build_request(settings, direction, story_id=story, parent_node_id=parent,
                            illustrate=not no_illustrate, model=model, template=template,
                            style=style, seed=seed)
    _run(run_scene, settings, request, as_json=json_out, detach=detach)


@app.command()
@_guard
def watch(
    workflow_id: str,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result JSON")] = False,
) -> None:
    """Follow a scene workflow until it ends (same output and exit codes as `scene`)."""
    from starter.scene_command import watch_scene

    _run(watch_scene, _settings("cli"), workflow_id, as_json=json_out)


@app.command()
@_guard
def cancel(workflow_id: str) -> None:
    """Cancel a running scene; its node records 'cancelled by user'."""
    from starter.scene_command import cancel_scene

    _run(cancel_scene, _settings("cli"), workflow_id)


@app.command()
@_guard
def show(ident: Annotated[str, typer.Argument(help="A node id or a story id")]) -> None:
    """Show a node (text, image, notes) or a story (its tree)."""
    from starter.browse import show as show_ident

    _run(show_ident, _settings("cli"), ident)


@app.command("list")
@_guard
def list_cmd() -> None:
    """List the stories, newest first."""
    from starter.browse import list_stories

    _run(list_stories, _settings("cli"))


@app.command()
@_guard
def doctor() -> None:
    """Check Temporal, the database, Ollama (models) and ComfyUI (templates); exit 1 on failure."""
    from starter.doctor import format_check, run_checks

    settings = _settings("cli")

    async def go() -> int:
        checks = await run_checks(settings)
        for check in checks:
            print(format_check(check))
        return 0 if all(c.ok for c in checks) else EXIT_FAILED

    _run(go)


def main() -> None:
    """Console-script entry: run the app, then flush and ``os._exit`` with its code."""
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    except BaseException:  # last resort: never a traceback on the terminal
        logger.critical("storyloom crashed", exc_info=True, extra=FILE_ONLY)
        print("storyloom crashed; the traceback is in the log (data dir, logs/).",
              file=sys.stderr)
        code = EXIT_FAILED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        flush_logs()
    os._exit(code)


if __name__ == "__main__":
    main()
