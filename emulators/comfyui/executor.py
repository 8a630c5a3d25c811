"""The worker: runs queued prompts one at a time, node by node, sending the §4.2/§4.3 frames."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from emulators.comfyui.core import Core
from emulators.comfyui.failure import current_inputs, server_traceback
from emulators.comfyui.ledger import Finished, QueueItem, now_ms
from emulators.comfyui.nodes import Interrupted, NodeContext, NodeFailure, run_node
from emulators.comfyui.plan import CycleError, plan_nodes, signatures
from emulators.comfyui.vram import apply_free, check_memory, prepare_gpu_node

__all__ = ["worker_loop"]

logger = logging.getLogger(__name__)


async def worker_loop(core: Core) -> None:
    """Take the lowest-numbered pending prompt whenever the runner is free; runs until cancelled."""
    while True:
        item = core.ledger.take()
        if item is None:
            core.wake.clear()
            await core.wake.wait()
            continue
        await core.broadcast_status()
        began, loading, completed = time.monotonic(), core.stats["checkpoint_load_s"], core.stats[
            "completed"]
        try:
            with core.clock.busy(), core.gpu.clock.busy():
                await _Run(core, item).execute()
            if core.stats["completed"] > completed:  # render time of good prompts, no loads
                spent = time.monotonic() - began - (core.stats["checkpoint_load_s"] - loading)
                core.stats["completed_s"] = round(core.stats["completed_s"] + spent, 4)
        except Exception:  # an emulator bug must not stop the queue
            logger.exception("comfyui emulator failed running %s", item.prompt_id)
            if core.ledger.running is item:
                core.ledger.running = None
        apply_free(core)  # a /free that arrived while the prompt ran


@dataclass
class _Run:
    core: Core
    item: QueueItem
    messages: list[list[Any]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui: dict[str, Any] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    steps_done: int = 0
    dropped: bool = False

    @property
    def pid(self) -> str:
        return self.item.prompt_id

    async def emit(
        self, kind: str, data: dict[str, Any], *, broadcast_anonymous: bool = False
    ) -> None:
        """§4.4: to the submitting client; prompts without client_id reach all or nobody."""
        cid = self.item.client_id
        if cid is not None:
            await self.core.hub.send(kind, data, cid)
        elif broadcast_anonymous:
            await self.core.hub.send(kind, data, None)

    async def _progress_state(self, node_id: str, state: str, value: float, maximum: float) -> None:
        self.states[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.pid,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        await self.emit(
            "progress_state",
            {"prompt_id": self.pid, "nodes": dict(self.states)},
            broadcast_anonymous=True,
        )

    async def execute(self) -> None:
        core, item = self.core, self.item
        ledger = core.ledger
        core.interrupt_requested = False  # the server clears stale interrupts at prompt start
        core.stats["executed"] += 1
        by_prompt = core.stats["executed_by_prompt"]
        by_prompt[self.pid] = by_prompt.get(self.pid, 0) + 1
        start = now_ms()
        start_msg = {"prompt_id": self.pid, "timestamp": start}
        self.messages.append(["execution_start", start_msg])
        await self.emit("execution_start", start_msg)
        cycle: str | None = None
        try:
            order = plan_nodes(item.graph, item.outputs)
        except CycleError as exc:
            order, cycle = [], str(exc)
        self.order = order
        sigs = signatures(item.graph, order, core.root / "input")
        cached = self._cached(order, sigs)
        cached_msg = {"nodes": cached, "prompt_id": self.pid, "timestamp": now_ms()}
        self.messages.append(["execution_cached", cached_msg])
        await self.emit("execution_cached", cached_msg)
        kind, terminal, error = "completed", "execution_success", None
        payload: dict[str, Any]
        try:
            if cycle is not None:
                raise _NodeError(
                    cycle,
                    item.graph[cycle]["class_type"],
                    "DependencyCycleError",
                    "Dependency cycle detected",
                    {},
                )
            for node_id in order:
                await self._node(node_id, sigs, node_id in cached)
            payload = {"prompt_id": self.pid, "timestamp": now_ms()}
        except Interrupted as exc:
            kind, terminal = "cancelled", "execution_interrupted"
            node_id = str(exc)
            payload = {
                "prompt_id": self.pid,
                "node_id": node_id,
                "node_type": item.graph[node_id]["class_type"],
                "executed": list(self.executed),
                "timestamp": now_ms(),
            }
        except _NodeError as exc:
            kind, terminal = "failed", "execution_error"
            payload = error = self._error_payload(exc)
        finally:
            core.cache = {s: v for s, v in core.cache.items() if s in set(sigs.values())}
        self.messages.append([terminal, payload])
        meta = {
            n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
            for n in self.ui
        }
        ledger.finish(
            Finished(item, kind, dict(self.ui), self.messages, start, now_ms(), error, meta)
        )
        core.stats["interrupted" if kind == "cancelled" else kind] += 1
        core.current_node = None
        suppress = core.faults.suppress_ws_completion
        if not suppress:
            await self.emit(terminal, payload, broadcast_anonymous=kind == "cancelled")
        await core.broadcast_status()
        if not suppress:
            await self.emit("executing", {"node": None, "prompt_id": self.pid})

    def _cached(self, order: list[str], sigs: dict[str, bytes]) -> list[str]:
        """Nodes whose signature is cached, except a faulty class and everything downstream of it."""
        faulty = self.core.faults.error_at_node
        dirty: set[str] = set()
        for node_id in order:
            node = self.item.graph[node_id]
            links = [v[0] for v in node.get("inputs", {}).values() if isinstance(v, list)]
            if node["class_type"] == faulty or any(str(src) in dirty for src in links):
                dirty.add(node_id)
        return [n for n in order if n not in dirty and sigs[n] in self.core.cache]

    async def _node(self, node_id: str, sigs: dict[str, bytes], cached: bool) -> None:
        core = self.core
        class_type: str = self.item.graph[node_id]["class_type"]
        if cached:
            outputs, ui = core.cache[sigs[node_id]]
            self.values[node_id] = outputs
            if ui is not None:
                self.ui[node_id] = ui
                await self.emit(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.pid},
                )
                await self._progress_state(node_id, "finished", 1, 1)
            return
        await self._progress_state(node_id, "running", 0.0, 1.0)
        core.current_node = node_id
        await self.emit(
            "executing", {"node": node_id, "display_node": node_id, "prompt_id": self.pid}
        )
        if core.interrupt_requested:  # the server checks just before a node runs, after `executing`
            raise Interrupted(node_id)
        inputs: dict[str, Any] = dict(self.item.graph[node_id].get("inputs", {}))
        try:
            inputs = self._inputs(node_id)
            if class_type == core.faults.error_at_node:
                raise NodeFailure(
                    "RuntimeError", f"emulated fault: {class_type} failed (error_at_node)"
                )
            await prepare_gpu_node(core, class_type, inputs)
            if class_type != "KSampler" and core.faults.node_delay > 0:
                await asyncio.sleep(core.faults.node_delay * core.time_scale)
            if class_type == core.faults.slow_node_class:  # no interrupt check inside
                await asyncio.sleep(core.faults.slow_node_seconds * core.time_scale)
            ctx = NodeContext(
                core.root,
                node_id,
                self.item.graph,
                self.item.extra_data,
                core.faults.step_delay * core.time_scale,
                lambda k, n: self._step(node_id, k, n),
                lambda: self._check(node_id),
            )
            outputs, ui = await run_node(class_type, inputs, ctx)
        except (Interrupted, asyncio.CancelledError):
            raise
        except NodeFailure as exc:
            raise _NodeError(
                node_id, class_type, exc.exception_type, exc.message, inputs, exc.traceback
            ) from exc
        except Exception as exc:  # any node crash is a runtime execution_error
            raise _NodeError(node_id, class_type, type(exc).__name__, str(exc), inputs) from exc
        self.values[node_id] = outputs
        core.cache[sigs[node_id]] = (outputs, ui)
        if ui is not None:
            self.ui[node_id] = ui
            await self.emit(
                "executed",
                {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.pid},
            )
        done = self.states[node_id]["max"]
        await self._progress_state(node_id, "finished", done, done)
        self.executed.append(node_id)

    def _check(self, node_id: str) -> None:
        if self.core.interrupt_requested:
            raise Interrupted(node_id)

    async def _step(self, node_id: str, value: int, maximum: int) -> None:
        core = self.core
        await check_memory(core, self.item.graph[node_id]["class_type"])  # an LLM loaded mid-render
        core.stats["sampler_steps"] += 1
        self.states[node_id].update(value=float(value), max=float(maximum))
        await self.emit(
            "progress",
            {"value": value, "max": maximum, "prompt_id": self.pid, "node": node_id},
            broadcast_anonymous=True,
        )
        self.steps_done += 1
        drop_after = core.faults.ws_drop_after_steps
        if drop_after is not None and not self.dropped and self.steps_done >= drop_after:
            self.dropped = True
            core.stats["ws_drops"] += 1
            core.hub.drop_all()

    def _inputs(self, node_id: str) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for name, value in self.item.graph[node_id].get("inputs", {}).items():
            if isinstance(value, list) and len(value) == 2:
                resolved[name] = self.values[str(value[0])][int(value[1])]
            else:
                resolved[name] = value
        return resolved

    def _error_payload(self, exc: _NodeError) -> dict[str, Any]:
        """As 0.33.0 sends it, with its bulk (tensor reprs, the graph, server paths)."""
        current = current_inputs(exc.class_type, exc.inputs, self.item.graph,
                                 self.item.extra_data)
        return {
            "prompt_id": self.pid,
            "node_id": exc.node_id,
            "node_type": exc.class_type,
            "executed": list(self.executed),
            "exception_message": f"{exc.message}\n",
            "exception_type": exc.exception_type,
            "traceback": list(exc.traceback or server_traceback(exc.class_type)),
            "current_inputs": current,
            # the server sends every node id of the run (its output cache's key set)
            "current_outputs": list(reversed(self.order)),
            "timestamp": now_ms(),
        }


class _NodeError(Exception):
    def __init__(
        self,
        node_id: str,
        class_type: str,
        exception_type: str,
        message: str,
        inputs: dict[str, Any],
        traceback: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.node_id, self.class_type = node_id, class_type
        self.exception_type, self.message, self.inputs = exception_type, message, inputs
        self.traceback = traceback
