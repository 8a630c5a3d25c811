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

from starter.cli_help import StoryloomTyper
from starter.console import guard_pipes
from starter.input_checks import check_scenes, explain_settings, template_names
from starter.logs import FILE_ONLY, flush_logs, setup_logging
from starter.outcome import EXIT_FAILED, EXIT_USAGE, CliFailure
from starter.settings import Settings
from workflows_temporal.contracts import MAX_DIRECTION_CHARS, MAX_STORY_SCENES, MAX_STYLE_CHARS

__all__ = ["app", "main"]

logger = logging.getLogger("storyloom.cli")

app = StoryloomTyper(
    name="storyloom", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Illustrated, branching stories with Ollama + ComfyUI, made durable by Temporal.",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"storyloom {version('storyloom')}")
        except PackageNotFoundError:
            print("storyloom (not installed: run ./dev setup)")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit")]
    = False,
) -> None:
    """Illustrated, branching stories with Ollama + ComfyUI, made durable by Temporal."""


def _settings(component: str, *, console_level: int = logging.WARNING,
              store: str | None = None) -> Settings:
    """The settings; ``store`` "reads"/"changes": the command uses the story store, so it must
    be the one the running workers write (``starter.same_store``; "changes" refuses another)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise explain_settings(exc) from exc
    if store is not None:
        from starter.same_store import align_store

        settings = asyncio.run(align_store(settings, changes=store == "changes"))
    from starter.store_access import store_missing

    if component == "cli":  # front-end commands speak in one paragraph; logs go to the file
        console_level = logging.CRITICAL + 1
    setup_logging(settings.data_dir, component=component, console_level=console_level,
                  log_json=settings.log_json,
                  to_file=not (store == "reads" and store_missing(settings)))
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
    except BrokenPipeError:  # only raised before guard_pipes (tests calling commands directly)
        code = 0
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
    port: Annotated[int | None, typer.Option(
        help="Port of the emulator (with `all`: Ollama's; default from STORYLOOM_OLLAMA_URL, "
        "or STORYLOOM_COMFYUI_URL for `comfyui`)")] = None,
    comfy_port: Annotated[int | None, typer.Option(
        help="ComfyUI emulator port with `all` (default from STORYLOOM_COMFYUI_URL)")] = None,
    time_scale: Annotated[float, typer.Option(help="Multiply every emulated delay")] = 1.0,
    root: Annotated[Path | None, typer.Option(help="ComfyUI emulator root dir")] = None,
    gpus: Annotated[int, typer.Option(
        min=1, max=16, help="Emulated GPUs: one ComfyUI each, on consecutive ports")] = 1,
    shared_gpu: Annotated[bool, typer.Option(
        help="Ollama shares GPU 0 with ComfyUI: a render beside a loaded LLM runs out of "
             "memory (needs `all`)")] = False,
    shared_gpu_with: Annotated[str | None, typer.Option(
        help="Ollama emulator URL whose GPU the ComfyUI emulator shares (another process; "
             "with `comfyui`)")] = None,
    checkpoint_load_delay: Annotated[float, typer.Option(
        min=0.0, help="Seconds a cold ComfyUI checkpoint takes to load (× time scale)")] = 0.0,
) -> None:
    """Run the emulated Ollama and/or ComfyUI in the foreground (Ctrl-C stops)."""
    from starter.emulate import GpuLayout, port_of, run_foreground

    if which not in ("ollama", "comfyui", "all"):
        raise CliFailure(f"unknown emulator {which!r}: choose ollama, comfyui or all", EXIT_USAGE)
    settings = _settings(f"emulator-{which}", console_level=logging.INFO)
    kinds = ["ollama", "comfyui"] if which == "all" else [which]
    _run(run_foreground, kinds,
         ollama_port=port or port_of(settings.ollama_url, 11434),
         comfy_port=comfy_port or (port if which == "comfyui" and port else
                                   port_of(settings.comfyui_url, 8188)),
         time_scale=time_scale, root_dir=root or settings.data_dir / "comfyui",
         layout=GpuLayout(gpus, shared_gpu, shared_gpu_with, checkpoint_load_delay))


@app.command()
@_guard
def worker(
    role: Annotated[str, typer.Option(help="llm, image, db or all")] = "all",
    gpu: Annotated[str | None, typer.Option(help="GPU name: which image queue to serve")] = None,
) -> None:
    """Run a worker for one role until SIGTERM/Ctrl-C (drains running activities)."""
    from starter.worker import run_worker
    from workflows_temporal.policies import ROLES, check_gpu_name

    if role not in ROLES:
        raise CliFailure(f"unknown role {role!r}: choose one of {', '.join(ROLES)}", EXIT_USAGE)
    try:
        check_gpu_name(gpu or "")
    except ValueError as exc:
        raise CliFailure(f"--gpu: {exc}", EXIT_USAGE) from exc
    settings = _settings(f"worker-{role}", console_level=logging.INFO)

    async def go() -> int:
        from starter.gpu_worker import GpuRefused
        from starter.temporal_client import TemporalUnreachable

        try:
            await run_worker(settings, role, gpu=gpu)
        except (TemporalUnreachable, GpuRefused) as exc:
            raise CliFailure(str(exc), EXIT_USAGE) from exc
        return 0

    _run(go)


@app.command()
@_guard
def scene(
    direction: Annotated[list[str], typer.Argument(
        help=f"What happens in this scene (at most {MAX_DIRECTION_CHARS} characters; several "
        "words need no quotes)", show_default=False)],
    story: Annotated[str | None, typer.Option(
        help="Continue this story after its latest scene")] = None,
    parent: Annotated[str | None, typer.Option(metavar="NODE", help="Branch from this node")]
    = None,
    no_illustrate: Annotated[bool, typer.Option(
        "--no-illustrate", help="Write the text only: no cast, no picture")] = False,
    model: Annotated[str | None, typer.Option(help="Ollama model")] = None,
    template: Annotated[str | None, typer.Option(
        help=f"ComfyUI template: {', '.join(template_names())}")] = None,
    style: Annotated[str | None, typer.Option(
        help=f"Style words for text and image (at most {MAX_STYLE_CHARS} characters)")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Image seed, 0 to 2**64-1 (default: from the story and node)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result JSON")] = False,
    detach: Annotated[bool, typer.Option(help="Start and print the workflow id")] = False,
) -> None:
    """Write (and illustrate) one scene; exit 0 when the scene exists, 1 when it failed."""
    from starter.scene_command import build_request, run_scene

    settings = _settings("cli", store="changes")
    request = build_request(settings, " ".join(direction), story_id=story,
                            parent_node_id=parent,
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
    """Cancel a running scene and wait (up to 15 s) until it has ended; its node records
    'cancelled by user'. A run that cannot take the cancel is terminated, and says so."""
    from starter.scene_command import cancel_scene

    _run(cancel_scene, _settings("cli"), workflow_id)


@app.command()
@_guard
def show(ident: Annotated[str, typer.Argument(help="A node id or a story id")]) -> None:
    """Show a node (text, image, notes) or a story (its tree)."""
    from starter.browse import show as show_ident

    _run(show_ident, _settings("cli", store="reads"), ident)


@app.command("list")
@_guard
def list_cmd() -> None:
    """List the stories, newest first."""
    from starter.browse import list_stories

    _run(list_stories, _settings("cli", store="reads"))


@app.command()
@_guard
def doctor() -> None:
    """Check Temporal, the database, Ollama (models) and ComfyUI (templates); exit 1 on failure."""
    from starter.doctor import format_check, run_checks

    settings = _settings("cli", store="reads")

    async def go() -> int:
        checks = await run_checks(settings)
        for check in checks:
            print(format_check(check))
        return 0 if all(c.ok for c in checks) else EXIT_FAILED

    _run(go)


@app.command()
@_guard
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its data")] = Path(
        "demo-data"),
    keep: Annotated[bool | None, typer.Option(
        help="Stay up after the story until Ctrl-C (default: when run in a terminal)")] = None,
    time_scale: Annotated[float, typer.Option(help="Emulator delay factor")] = 0.2,
) -> None:
    """Write a 3-scene illustrated story end to end on the embedded defaults."""
    from starter.demo import run_demo

    os.environ["STORYLOOM_DATA_DIR"] = str(data_dir.resolve())
    settings = _settings("demo", console_level=logging.WARNING)
    _run(run_demo, settings, keep=sys.stdin.isatty() if keep is None else keep,
         time_scale=time_scale)


@app.command()
@_guard
def export(
    story: Annotated[str, typer.Argument(help="The story id (storyloom list)")],
    file: Annotated[Path | None, typer.Argument(help="Markdown file (with --markdown)")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the storybook into this folder")] = None,
    markdown: Annotated[bool, typer.Option(help="Write Markdown to FILE (no FILE: stdout)")]
    = False,
    path: Annotated[str | None, typer.Option(help="Only the path from the root to this node")]
    = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write the storybook into a folder that holds other files")] = False,
) -> None:
    """Export a story: a self-contained HTML storybook (--html DIR) and/or Markdown."""
    from starter.export_command import STDOUT, run_export

    if file is not None and not markdown:
        raise CliFailure(f"{file} is a Markdown file name: add --markdown", EXIT_USAGE)
    _run(run_export, _settings("cli", store="reads"), story, html_dir=html, path_to=path,
         force=force,
         markdown=(str(file) if file else STDOUT) if markdown else None)


@app.command()
@_guard
def ui(story: Annotated[str, typer.Argument(help="The story id")]) -> None:
    """Print the Temporal UI link listing that story's workflows (exit 2: no such story;
    1: the UI does not answer)."""
    from starter.ui_link import show_story_link

    _run(show_story_link, _settings("cli", store="reads"), story)


@app.command("retry-image")
@_guard
def retry_image(
    node: Annotated[str, typer.Argument(help="The node whose illustration to render again")],
    force: Annotated[bool, typer.Option(help="Render again even if the image is done")] = False,
    template: Annotated[str | None, typer.Option(
        help=f"Render with this template ({', '.join(template_names())}); default: the "
        "node's")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Render with this checkpoint file; default: the node's")] = None,
    width: Annotated[int | None, typer.Option(
        help="Image width in pixels; default: the node's")] = None,
    height: Annotated[int | None, typer.Option(
        help="Image height in pixels; default: the node's")] = None,
    model: Annotated[str | None, typer.Option(
        help="Text model for the picture's prompt when the node has none; default: the "
        "node's")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result JSON")] = False,
) -> None:
    """Render a node's illustration again (its own workflow): with the settings the node was
    made with, except those given as options. Exit 1 if the picture fails again."""
    from starter.input_checks import check_template
    from starter.retry_command import run_retry_image

    if template is not None:
        check_template(template)
    if model is not None and not model.strip():
        raise CliFailure("--model is empty: name an Ollama model, e.g. --model llama3.2",
                         EXIT_USAGE)
    if checkpoint is not None and not checkpoint.strip():
        raise CliFailure("--checkpoint is empty: name a checkpoint file, e.g. "
                         "--checkpoint v1-5-pruned-emaonly.safetensors", EXIT_USAGE)
    _run(run_retry_image, _settings("cli", store="changes"), node, force=force,
         template=template, checkpoint=checkpoint, image_width=width, image_height=height,
         model=model, as_json=json_out)


@app.command()
@_guard
def story(
    words: Annotated[list[str] | None, typer.Argument(
        help="The premise; or `pause|unpause|cancel STORY` to control a running story",
        show_default=False)] = None,
    scenes: Annotated[int, typer.Option(
        help=f"How many scenes to write (1 to {MAX_STORY_SCENES})")] = 3,
    illustrate: Annotated[bool, typer.Option(help="Illustrate each scene")] = True,
    continue_: Annotated[str | None, typer.Option(
        "--continue", metavar="STORY", help="Write --scenes more scenes of a stopped story (by story id), "
        "after its latest scene")] = None,
    parent: Annotated[str | None, typer.Option(
        metavar="NODE",
        help="With --continue: continue after this node (a story with several branches)")]
    = None,
    model: Annotated[str | None, typer.Option(
        help="Ollama model (default: STORYLOOM_TEXT_MODEL)")] = None,
    resume: Annotated[str | None, typer.Option("--resume", hidden=True)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result JSON")] = False,
    detach: Annotated[bool, typer.Option(help="Start and print the workflow id")] = False,
) -> None:
    """Write a story of --scenes scenes, each continuing the last (progress: scene k of N).

    Control a running story: `storyloom story pause STORY`, `storyloom story unpause STORY`
    (holds/releases it between scenes), `storyloom story cancel STORY`. STORY is the story id
    or the story workflow id. A stopped story gets more scenes with
    `storyloom story --continue STORY --scenes N`.
    """
    from starter.story_command import (
        CONTROL_ACTIONS,
        build_story_request,
        continue_story,
        control_story,
        control_words_problem,
        run_story,
    )

    args = list(words or [])
    if resume is not None:
        raise CliFailure(control_words_problem(["--resume"]) or "", EXIT_USAGE)
    problem = control_words_problem(args)
    if problem:
        raise CliFailure(problem, EXIT_USAGE)
    settings = _settings("cli", store="changes")
    if model is not None:
        if not model.strip():
            raise CliFailure("--model is empty: name an Ollama model, e.g. --model llama3.2",
                             EXIT_USAGE)
        settings = settings.model_copy(update={"text_model": model.strip()})
    if continue_ is not None:
        if args:
            raise CliFailure("--continue takes no premise: the story already has one.",
                             EXIT_USAGE)
        check_scenes(scenes)
        _run(continue_story, settings, continue_, scenes, illustrate=illustrate, parent=parent,
             as_json=json_out, detach=detach)
    elif parent is not None:
        raise CliFailure("--parent goes with --continue STORY (a new story has no parent).",
                         EXIT_USAGE)
    elif args and args[0] in CONTROL_ACTIONS:
        _run(control_story, settings, args[0], args[1])
    else:
        premise = " ".join(args)
        request = build_story_request(settings, premise, scenes, illustrate=illustrate)
        _run(run_story, settings, premise.strip(), request, as_json=json_out, detach=detach)


@app.command()
@_guard
def tree(story_id: Annotated[str, typer.Argument(help="The story id")]) -> None:
    """Draw a story's tree of scenes: titles, image status, node ids."""
    from starter.tree_command import show_tree

    _run(show_tree, _settings("cli", store="reads"), story_id)


character_app = StoryloomTyper(help="A story's characters: canonical looks and reference images.",
                            no_args_is_help=True)
app.add_typer(character_app, name="character")


@character_app.command("list")
@_guard
def character_list(story_id: str) -> None:
    """List the story's characters with their canonical look and reference picture."""
    from starter.character_command import list_characters

    _run(list_characters, _settings("cli", store="reads"), story_id)


@character_app.command("set-image")
@_guard
def character_set_image(story_id: str, name: str, file: Path) -> None:
    """Make FILE the character's reference picture (used by later scenes)."""
    from starter.character_command import set_character_image

    _run(set_character_image, _settings("cli", store="changes"), story_id, name, file)


@character_app.command("describe")
@_guard
def character_describe(story_id: str, name: str, look: str) -> None:
    """Set the character's canonical look (repeated verbatim in later image prompts)."""
    from starter.character_command import describe_character

    _run(describe_character, _settings("cli", store="changes"), story_id, name, look)


def _log_crash(exc: BaseException) -> str:
    """Write the current exception's traceback to the log file (setting logging up first when
    the crash came before any command did); says where it went."""
    try:
        if not logging.getLogger().handlers:  # else Python's last resort prints it on stderr
            setup_logging(Settings().data_dir, component="cli", console_level=logging.CRITICAL + 1)
        logger.critical("storyloom crashed", exc_info=exc, extra=FILE_ONLY)
        return "the traceback is in the log (data dir, logs/)."
    except Exception:  # noqa: BLE001 - no log to write to: still no traceback on the screen
        return "no log could be written (check STORYLOOM_DATA_DIR)."


def _one_line_listings(typer_app: typer.Typer) -> None:
    """Each command's line in a ``--help`` listing is its docstring's first paragraph as one
    sentence the help wraps at the terminal's width (the docstring's own line breaks cut the
    `cancel` and `ui` lines mid-sentence)."""
    for command in typer_app.registered_commands:
        doc = command.help or (command.callback.__doc__ if command.callback else None)
        if command.short_help is None and doc:
            command.short_help = " ".join(doc.strip().split("\n\n", 1)[0].split())
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _one_line_listings(group.typer_instance)


_one_line_listings(app)


def main() -> None:
    """Console-script entry: run the app, then flush and ``os._exit`` with its code."""
    code = 0
    guard_pipes()  # `storyloom list | head -1`: the reader leaving early is not a failure
    try:
        app(prog_name="storyloom")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    except BaseException as exc:  # noqa: BLE001 - last resort: never a traceback on the screen
        print(f"storyloom crashed; {_log_crash(exc)}", file=sys.stderr)
        code = EXIT_FAILED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        flush_logs()
    os._exit(code)


if __name__ == "__main__":
    main()
