"""The error hierarchy of storyloom's outside calls, and its mapping to Temporal.

Clients make one attempt and raise one of these; the engine decides whether to retry, from
``retryable`` alone (ARCHITECTURE rule 1). Every error names the service, where, and what to do::

    StoryloomError                      .retryable, .service, .where, .hint
    ├── TransportError                  the call did not get a complete answer        (retryable)
    │   ├── ServiceUnavailable          connection refused / reset / DNS
    │   ├── ServiceTimeout              connect, first-byte or idle-gap timeout
    │   └── TruncatedStream             EOF before the stream's final line
    ├── StatusError                     the server answered, with a failure
    │   ├── ServiceBusy                 503 (and 429/502/504 from proxies)       (retryable)
    │   ├── ServerError                 500, mid-stream error line               (retryable)
    │   ├── BadRequest                  400/403/405, unknown route               (final)
    │   └── ModelNotFound               404 for a model; lists installed models  (final)
    ├── ContentError                    the answer arrived but is unusable          (final)
    │   ├── StructuredOutputError       invalid JSON or schema mismatch
    │   ├── EmptyAnswer                 a finished answer without text (e.g. all in `thinking`)
    │   └── OutputMissing               a finished ComfyUI job without the expected output
    ├── ComfyValidationError            /prompt 400 with node_errors               (final)
    ├── ComfyExecutionError             the job ran and failed at a node           (final)
    │   └── ComfyOutOfMemory            ... out of GPU memory (VRAM is transient)  (retryable)
    ├── JobLost                         accepted job vanished (server restart)     (retryable)
    ├── JobCancelled                    the job was interrupted / cancelled        (final)
    ├── TemplateError                   a template or its parameters are invalid   (final)
    └── StoreError                      a database row is missing or inconsistent  (final)

``to_application_error`` is the one place where these become ``ApplicationError``; the type
name is the class name, so retry policies and tests can name it.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError

__all__ = [
    "BadRequest",
    "ComfyExecutionError",
    "ComfyOutOfMemory",
    "ComfyValidationError",
    "ContentError",
    "EmptyAnswer",
    "JobCancelled",
    "JobLost",
    "ModelNotFound",
    "OutputMissing",
    "ServerError",
    "ServiceBusy",
    "ServiceTimeout",
    "ServiceUnavailable",
    "StatusError",
    "StoreError",
    "StoryloomError",
    "StructuredOutputError",
    "TemplateError",
    "TransportError",
    "TruncatedStream",
    "to_application_error",
]


class StoryloomError(Exception):
    """Base of every error storyloom raises on purpose.

    ``service`` is "ollama", "comfyui", "store", "templates"...; ``where`` a URL, node, model or
    parameter; ``hint`` what the user can do. ``details`` is a small JSON-able dict for machines.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        where: str = "",
        hint: str = "",
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        self.message = message
        self.service = service
        self.where = where
        self.hint = hint
        self.details = dict(details or {})
        self.status = status
        super().__init__(self.describe())

    def describe(self) -> str:
        """One readable sentence: what failed, where, and what to do."""
        text = f"{self.service}: {self.message}" if self.service else self.message
        if self.where:
            text += f" (at {self.where})"
        if self.hint:
            text += f". {self.hint}"
        return text


class TransportError(StoryloomError):
    retryable = True


class ServiceUnavailable(TransportError):
    pass


class ServiceTimeout(TransportError):
    pass


class TruncatedStream(TransportError):
    pass


class StatusError(StoryloomError):
    pass


class ServiceBusy(StatusError):
    retryable = True


class ServerError(StatusError):
    retryable = True


class BadRequest(StatusError):
    retryable = False


class ModelNotFound(StatusError):
    retryable = False

    def __init__(self, model: str, installed: list[str], **kw: Any) -> None:
        self.model = model
        self.installed = list(installed)
        shown = ", ".join(installed) if installed else "none"
        kw.setdefault("hint", f"Install it with `ollama pull {model}` or choose one of: {shown}")
        kw.setdefault("details", {"model": model, "installed": installed})
        super().__init__(f"model '{model}' is not installed", **kw)


class ContentError(StoryloomError):
    retryable = False


class StructuredOutputError(ContentError):
    pass


class EmptyAnswer(ContentError):
    """The model finished without any text, e.g. a thinking model that answered in `thinking`."""


class OutputMissing(ContentError):
    pass


class ComfyValidationError(StoryloomError):
    """ComfyUI rejected the graph. ``problems`` lists (node_id, class_type, input, message)."""

    retryable = False

    def __init__(self, message: str, problems: list[dict[str, str]], **kw: Any) -> None:
        self.problems = problems
        kw.setdefault("details", {"problems": problems})
        listed = "; ".join(
            f"node {p.get('node_id')} ({p.get('class_type')}) input {p.get('input') or '-'}: "
            f"{p.get('message')}"
            for p in problems
        )
        super().__init__(f"{message}: {listed}" if listed else message, **kw)


class ComfyExecutionError(StoryloomError):
    """The prompt ran and failed: ``node_id``, ``node_type``, ``exception_type``.

    ComfyUI's ``execution_error`` is kilobytes (tensor reprs, the whole graph, server paths,
    a traceback): only these three and the first line of ``exception_message``, cut at
    ``FIRST_LINE_LIMIT`` characters, reach the message and ``details`` (and so the workflow's
    history and the node's error). ``exception_message`` keeps the whole text for local logs.
    """

    retryable = False
    FIRST_LINE_LIMIT = 300

    def __init__(
        self, *, node_id: str, node_type: str, exception_type: str, exception_message: str,
        **kw: Any,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        kw.setdefault(
            "details",
            {"node_id": node_id, "node_type": node_type, "exception_type": exception_type},
        )
        first_line = exception_message.strip().splitlines()[0] if exception_message.strip() else ""
        if len(first_line) > self.FIRST_LINE_LIMIT:  # one line can hold a whole file listing
            first_line = first_line[: self.FIRST_LINE_LIMIT - 1] + "…"
        super().__init__(
            f"node {node_id} ({node_type}) failed with {exception_type}: {first_line}", **kw
        )


class ComfyOutOfMemory(ComfyExecutionError):
    """A node ran out of GPU memory (``torch.cuda.OutOfMemoryError``, "CUDA out of memory").

    Retryable: VRAM is a transient state; after the scheduler's eviction (or another model's
    unload) the same graph can succeed. ``is_out_of_memory`` tells it from other failures.
    """

    retryable = True

    @staticmethod
    def is_out_of_memory(exception_type: str, exception_message: str) -> bool:
        text = f"{exception_type} {exception_message}".lower()
        return "outofmemoryerror" in text or "out of memory" in text


class JobLost(StoryloomError):
    retryable = True


class JobCancelled(StoryloomError):
    retryable = False


class TemplateError(StoryloomError):
    retryable = False


class StoreError(StoryloomError):
    retryable = False


def to_application_error(exc: StoryloomError) -> ApplicationError:
    """The single translation from our errors to Temporal's; keeps the cause chained."""
    err = ApplicationError(
        exc.describe(),
        exc.details,
        type=type(exc).__name__,
        non_retryable=not exc.retryable,
    )
    err.__cause__ = exc
    return err
