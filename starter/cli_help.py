"""How `storyloom --help` reads: names a user types, no Python type names.

typer (0.2x) prints every parameter's Python type in the help (``<str>``, ``<bool>``,
``<list[str]>``) and required arguments as ``{direction}`` in the usage line. storyloom's help
shows what a user types instead: flags bare, a value option with its placeholder (``--story
STORY``), arguments in capitals (``DIRECTION``, ``[WORDS]...``), the way click and most CLIs do.

``StoryloomTyper`` is a ``typer.Typer`` whose commands (and sub-apps) are ``HelpCommand`` /
``HelpGroup``; nothing else in a command changes.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["HelpCommand", "HelpGroup", "StoryloomTyper", "placeholder"]


def placeholder(name: str | None) -> str:
    """``story_id`` → ``STORY_ID``: the word a user replaces."""
    return (name or "value").upper()


def _no_type(ctx: Any = None) -> None:
    return None


def _plain_params(params: list[Any]) -> None:
    """Give each parameter a metavar a user can read, and drop the type column."""
    for param in params:
        if isinstance(param, TyperOption):
            if param.is_flag:
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = placeholder(param.name)
        elif isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = placeholder(param.name) + ("..." if param.nargs != 1 else "")
            # typer prints the argument's Python type beside its name; the name says enough.
            param.display_type_rich = _no_type  # type: ignore[method-assign]


def _usage(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = param.metavar or placeholder(param.name)
            pieces.append(name if param.required else f"[{name}]")
        elif not isinstance(param, TyperOption):
            pieces.extend(param.get_usage_pieces(ctx))
    return pieces


class HelpCommand(TyperCommand):
    """A typer command whose help and usage line show placeholders, not Python types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage(self, ctx)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _plain_params([option])
        return option


class HelpGroup(TyperGroup):
    """A typer group (the app, its sub-apps) with the same plain help for its own options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage(self, ctx), self.subcommand_metavar]

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _plain_params([option])
        return option


class StoryloomTyper(typer.Typer):
    """``typer.Typer`` whose commands default to ``HelpCommand`` and groups to ``HelpGroup``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", HelpGroup)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", HelpCommand)
        return super().command(*args, **kwargs)
