"""The in-memory queue, running slot and history of one emulated ComfyUI process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finished", "Ledger", "QueueItem", "now_ms"]

HISTORY_CAP = 10000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class QueueItem:
    """One accepted prompt: `[number, prompt_id, graph, extra_data, outputs_to_execute]`."""

    number: float
    prompt_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    seq: int

    def entry(self) -> list[Any]:
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return cid if isinstance(cid, str) else None

    @property
    def create_time(self) -> int | None:
        value = self.extra_data.get("create_time")
        return value if isinstance(value, int) else None


@dataclass
class Finished:
    """A finished run: `kind` is completed | failed | cancelled (the jobs API status)."""

    item: QueueItem
    kind: str
    outputs: dict[str, Any]
    messages: list[list[Any]]
    start_ms: int
    end_ms: int
    error: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        ok = self.kind == "completed"
        return {
            "status_str": "success" if ok else "error",
            "completed": ok,
            "messages": self.messages,
        }

    def history_entry(self) -> dict[str, Any]:
        return {
            "prompt": self.item.entry(),
            "outputs": self.outputs,
            "status": self.status(),
            "meta": self.meta,
        }


class Ledger:
    """Queue order is (number, arrival); history keeps insertion order and the last run per id."""

    def __init__(self) -> None:
        self.number = 0
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, Finished] = {}
        self._seq = 0

    def allocate_number(self, explicit: Any, front: bool) -> float:
        """The server's rule: an explicit number is used as a float and does not advance the
        counter; otherwise the counter (negated with `front`) is used and advances."""
        if explicit is not None:
            return float(explicit)
        number: float = -self.number if front else self.number
        self.number += 1
        return number

    def put(
        self,
        number: float,
        prompt_id: str,
        graph: dict[str, Any],
        extra: dict[str, Any],
        outputs: list[str],
    ) -> QueueItem:
        self._seq += 1
        item = QueueItem(number, prompt_id, graph, extra, outputs, self._seq)
        self.pending.append(item)
        self.pending.sort(key=lambda i: (i.number, i.seq))
        return item

    def take(self) -> QueueItem | None:
        if self.running is not None or not self.pending:
            return None
        self.running = self.pending.pop(0)
        return self.running

    def finish(self, result: Finished) -> None:
        pid = result.item.prompt_id
        if pid not in self.history and len(self.history) >= HISTORY_CAP:
            self.history.pop(next(iter(self.history)))
        self.history[pid] = result
        if self.running is result.item:
            self.running = None

    def delete_pending(self, ids: set[str]) -> bool:
        before = len(self.pending)
        self.pending = [i for i in self.pending if i.prompt_id not in ids]
        return len(self.pending) != before

    @property
    def remaining(self) -> int:
        return len(self.pending) + (1 if self.running is not None else 0)

    def live(self, prompt_id: str) -> tuple[str, QueueItem] | None:
        """The first live match for an id: running first, then pending in queue order."""
        if self.running is not None and self.running.prompt_id == prompt_id:
            return "in_progress", self.running
        for item in self.pending:
            if item.prompt_id == prompt_id:
                return "pending", item
        return None

    def history_slice(self, max_items: int | None, offset: int) -> dict[str, Any]:
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for i, (pid, result) in enumerate(self.history.items()):
            if i < offset:
                continue
            out[pid] = result.history_entry()
            if max_items is not None and len(out) >= max_items:
                break
        return out
