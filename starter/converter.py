"""storyloom's Temporal data converter: pydantic payloads, and failures small enough to be kept.

The Temporal server keeps an activity's last failure only up to a size limit (4 KiB on the
dev server, ``limit.mutableStateActivityFailureSize.error``); a larger one is replaced by a
server failure whose message is "Failure exceeds size limit.", which is what a user watching a
retried step then sees. The SDK's default converter sends the full Python stack trace of every
exception in the cause chain, and one failed HTTP call through httpx/httpcore is already ~5 KiB.
``CompactFailureConverter`` keeps every message and type, the innermost frames of each stack
trace, and at most ``MAX_CAUSES`` causes; the whole traceback still goes to the worker's log.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverter

__all__ = ["MAX_CAUSES", "STACK_CHARS", "CompactFailureConverter", "data_converter"]

STACK_CHARS = 600  # the last frames of each level's stack trace (where it was raised)
MAX_CAUSES = 3  # causes kept below the top failure (ours → its client error → the socket's)


def _trim(failure: Failure, depth: int = 0) -> None:
    if len(failure.stack_trace) > STACK_CHARS:
        failure.stack_trace = "…\n" + failure.stack_trace[-STACK_CHARS:]
    if failure.HasField("cause"):
        if depth >= MAX_CAUSES:
            failure.ClearField("cause")
        else:
            _trim(failure.cause, depth + 1)


class CompactFailureConverter(DefaultFailureConverter):
    """The default failure converter, with stack traces and cause chains trimmed (see above)."""

    def to_failure(self, exception: BaseException, payload_converter: Any,
                   failure: Failure) -> None:
        super().to_failure(exception, payload_converter, failure)
        _trim(failure)


data_converter: DataConverter = dataclasses.replace(
    pydantic_data_converter, failure_converter_class=CompactFailureConverter)
