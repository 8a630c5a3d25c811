"""Logging setup for every storyloom process: console (rich or JSON lines) plus a file in data_dir.

The console speaks JSON lines when stderr is not a terminal (or ``log_json`` says so); the file
always holds JSON lines. Records of ``storyloom.calls`` carry a ``call`` dict (activities/calllog.py)
whose fields are spread into the JSON object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["FILE_ONLY", "JsonFormatter", "flush_logs", "setup_logging"]

# ``logger.error("...", exc_info=exc, extra=FILE_ONLY)``: the traceback goes to the log file only,
# while the terminal gets the one-paragraph explanation.
FILE_ONLY = {"file_only": True}

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ``call`` fields, other extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RESERVED or key.startswith("_") or key == "file_only":
                continue
            if key == "call" and isinstance(value, dict):
                out.update(value)
            else:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _console_handler(json_lines: bool) -> logging.Handler:
    if json_lines:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        return handler
    try:
        from rich.console import Console
        from rich.logging import RichHandler

        return RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    except ImportError:  # pragma: no cover - rich is a dependency
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        return handler


def setup_logging(
    data_dir: Path,
    *,
    component: str,
    console_level: int = logging.INFO,
    log_json: bool | None = None,
    to_file: bool = True,
) -> Path:
    """Configure the root logger once per process; returns the log file's path.

    ``component`` names the file (``<data_dir>/logs/<component>.log``). The file gets DEBUG and
    up of storyloom's own loggers (INFO for libraries); the console gets ``console_level``.
    ``to_file`` False: no file and no folder (a read-only command where no store exists).
    """
    json_lines = log_json if log_json is not None else not sys.stderr.isatty()
    log_dir = data_dir / "logs"
    log_file = log_dir / f"{component}.log"

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(logging.DEBUG)
    console = _console_handler(json_lines)
    console.setLevel(console_level)
    console.addFilter(lambda record: not getattr(record, "file_only", False))
    root.addHandler(console)
    if to_file:  # a read-only command where there is no store yet creates nothing
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(JsonFormatter())
        file_handler.setLevel(logging.DEBUG)
        root.addHandler(file_handler)
    for noisy in ("httpx", "httpcore", "aiosqlite", "sqlalchemy", "websockets", "asyncio",
                  "alembic", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # storyloom.calls logs every call
    logging.getLogger("temporalio").setLevel(logging.INFO)
    return log_file


def flush_logs() -> None:
    """Flush and close every handler: ``os._exit`` skips logging's own shutdown."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # nothing is left to report to at exit
            handler.flush()
            handler.close()
