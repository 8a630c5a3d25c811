"""The emulator's mutable state: armed faults, loaded models, and the keep_alive/option rules."""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from emulators.gpu import BusyClock, EmulatedGpu
from emulators.ollama.catalogue import ModelSpec, normalise_name

__all__ = [
    "FAULT_KEYS",
    "FOREVER",
    "STRUCTURED_WRAPS",
    "Core",
    "Loaded",
    "ModelState",
    "check_options",
    "parse_faults",
    "parse_keep_alive",
]

FOREVER = math.inf
DEFAULT_KEEP_ALIVE_S = 300.0

# fault name -> accepted python types (times are seconds, scaled by time_scale)
FAULT_KEYS: dict[str, tuple[type, ...]] = {
    "load_delay": (int, float),  # extra seconds a cold load takes (before the first byte)
    "prompt_delay": (int, float),  # seconds of prompt evaluation, before the first byte
    "token_delay": (int, float),  # seconds between chunks
    "busy_next": (int,),  # 503 for the next N generate/chat/embed requests
    "error_after_tokens": (int,),  # error line after N chunks (stream:false -> 500)
    "truncate_after_tokens": (int,),  # clean EOF after N chunks, no done line
    "reset_after_tokens": (int,),  # abrupt socket close after N chunks
    "missing_models": (list,),  # names answered as not installed
    "fail_load": (str,),  # 500 with this runner text before any output
    "response_tokens": (int,),  # force the answer length (before num_predict)
    "tokens_per_chunk": (int,),  # pseudo-tokens per NDJSON line (default 1)
    "unload_lag": (int, float),  # seconds an unloaded model stays in /api/ps
    "max_queue": (int,),  # requests that may wait on a model load (OLLAMA_MAX_QUEUE); 503 past it
    "proxy_502_next": (int,),  # an HTML 502, as from a reverse proxy, for the next N API calls
    # Real models' habits (issue 11):
    "answer_in_thinking": (list,),  # models that, when thinking, answer only in `thinking`
    "think_always": (list,),  # models that think even when sent think:false (gpt-oss style)
    "structured_wrap": (str,),  # how `format` answers are wrapped: see STRUCTURED_WRAPS
    "empty_answers": (list,),  # done_reasons: the next generations finish at once with no text
}
# structured_wrap values: a ```json fence, the JSON as a JSON string, a sentence before it,
# and two objects in prose (ambiguous on purpose)
STRUCTURED_WRAPS = ("fence", "string", "prose", "two_objects")
_LIST_OF_NAMES = ("missing_models", "answer_in_thinking", "think_always")


def parse_faults(raw: Any) -> dict[str, Any]:
    """Validate a fault object; raises ValueError with a readable message."""
    if not isinstance(raw, dict):
        raise ValueError("faults must be a JSON object")  # noqa: TRY004
    unknown = sorted(set(raw) - set(FAULT_KEYS))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(FAULT_KEYS)}")
    faults: dict[str, Any] = {}
    for key, value in raw.items():
        types = FAULT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            kinds = "/".join(t.__name__ for t in types)
            raise ValueError(f"fault {key!r} must be of type {kinds}")  # noqa: TRY004
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                what = "model names" if key in _LIST_OF_NAMES else "strings"
                raise ValueError(f"fault {key!r} must be a list of {what}")
            value = list(value)
        elif key == "structured_wrap" and value not in STRUCTURED_WRAPS:
            raise ValueError(f"fault 'structured_wrap' must be one of {list(STRUCTURED_WRAPS)}")
        elif isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"fault {key!r} must not be negative")
        faults[key] = value
    return faults


_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def _go_duration(text: str) -> float:
    body = text[1:] if text[:1] in "+-" else text
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    if body and re.fullmatch(r"[\d.]+", body):
        raise ValueError(f'time: missing unit in duration "{text}"')
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """Seconds to stay loaded (FOREVER when negative), None when absent; ValueError as Ollama."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("Unsupported type: 'bool'")  # noqa: TRY004
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _go_duration(value)
    else:
        raise ValueError(f"Unsupported type: '{type(value).__name__}'")  # noqa: TRY004
    return FOREVER if seconds < 0 else seconds


_FLOAT_OPTS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty",
               "presence_penalty", "frequency_penalty"}
_INT_OPTS = {"num_ctx", "num_predict", "top_k", "seed", "repeat_last_n", "num_keep",
             "num_batch", "num_gpu", "num_thread", "main_gpu", "draft_num_predict"}


def check_options(options: dict[str, Any]) -> str | None:
    """The server's option type check; returns its 500 message, or None when fine."""
    for key, value in options.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in _FLOAT_OPTS and not number:
            return f'option "{key}" must be of type float32'
        if key in _INT_OPTS and not number:
            return f'option "{key}" must be of type integer'
        if key == "use_mmap" and not isinstance(value, bool):
            return f'option "{key}" must be of type boolean'
        if key == "stop" and not (
            isinstance(value, list) and all(isinstance(s, str) for s in value)
        ):
            return f'option "{key}" must be of type array'
    return None


@dataclass
class Loaded:
    spec: ModelSpec
    num_ctx: int
    expires_at: float  # epoch seconds, FOREVER for negative keep_alive
    keep_alive: float


class _Slot:
    """A model's parallel slot (``OLLAMA_NUM_PARALLEL`` 1); holding it counts as busy time."""

    def __init__(self, state: ModelState) -> None:
        self._sem = asyncio.Semaphore(1)
        self._state = state

    async def __aenter__(self) -> None:
        await self._sem.acquire()
        self._state.clock.enter()
        if self._state.gpu is not None:
            self._state.gpu.clock.enter()

    async def __aexit__(self, *exc: object) -> None:
        self._state.clock.leave()
        if self._state.gpu is not None:
            self._state.gpu.clock.leave()
        self._sem.release()


@dataclass
class ModelState:
    """Installed and loaded models. One load at a time; a cancelled load leaves the model cold.

    With ``gpu`` (``emulate all --shared-gpu``) the models live on an emulated card that a
    ComfyUI emulator shares: a load that starts while it renders is counted in
    ``vram_conflicts`` and still happens (real Ollama fits what it can beside other processes'
    memory; the protocol reference says nothing of refusing), and ``resident()`` tells the
    ComfyUI emulator that a model holds memory.
    """

    specs: dict[str, ModelSpec]
    faults: dict[str, Any]
    time_scale: float
    loaded: dict[str, Loaded] = field(default_factory=dict)
    loads: int = 0
    waiting: int = 0  # requests queued on a model load (see ``admit``)
    gpu: EmulatedGpu | None = None
    clock: BusyClock = field(default_factory=BusyClock)  # loading or generating, wall seconds
    load_s: float = 0.0  # wall seconds spent in completed loads
    vram_conflicts: int = 0  # loads started while the shared GPU's ComfyUI was rendering
    loads_beside_checkpoint: int = 0  # loads while ComfyUI kept a checkpoint in VRAM (no /free)
    loading: set[str] = field(default_factory=set)
    _load_lock: asyncio.Lock | None = None
    _slots: dict[str, _Slot] = field(default_factory=dict)

    def resident(self) -> bool:
        """A model holds GPU memory: loaded (listed in /api/ps, even while unloading) or loading."""
        return bool(self.loading) or bool(self.running())

    def lookup(self, name: str) -> ModelSpec | None:
        missing = {normalise_name(m) for m in self.faults.get("missing_models", [])}
        full = normalise_name(name)
        return None if full in missing else self.specs.get(full)

    def installed(self) -> list[ModelSpec]:
        return [s for s in self.specs.values() if self.lookup(s.name) is not None]

    def slot(self, spec: ModelSpec) -> _Slot:
        if spec.full_name not in self._slots:
            self._slots[spec.full_name] = _Slot(self)
        return self._slots[spec.full_name]

    def admit(self, spec: ModelSpec) -> bool | None:
        """Enter the scheduler's queue if ``spec`` must be loaded first (warm models bypass it).

        None: the queue is full (``max_queue``), answer 503. Otherwise whether this request was
        counted; pass that to ``leave`` once the model is loaded or the request is gone."""
        current = self.loaded.get(spec.full_name)
        if current is not None and current.expires_at > time.time():
            return False
        limit = self.faults.get("max_queue")
        if limit is not None and self.waiting >= limit:
            return None
        self.waiting += 1
        return True

    def leave(self, counted: bool) -> None:
        if counted:
            self.waiting -= 1

    def running(self) -> list[Loaded]:
        now = time.time()
        for key in [k for k, v in self.loaded.items() if v.expires_at <= now]:
            del self.loaded[key]
        return sorted(self.loaded.values(), key=lambda v: v.expires_at, reverse=True)

    async def ensure_loaded(self, spec: ModelSpec, num_ctx: int, keep_alive: float | None) -> float:
        """Load (or reload for a new num_ctx) and refresh the expiry; returns seconds spent."""
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        started = time.monotonic()
        current = self.loaded.get(spec.full_name)
        if current is None or current.num_ctx != num_ctx or current.expires_at <= time.time():
            async with self._load_lock:
                self.loaded.pop(spec.full_name, None)
                delay = spec.load_s + float(self.faults.get("load_delay", 0.0))
                if self.gpu is not None and self.gpu.rendering():
                    self.vram_conflicts += 1
                if self.gpu is not None and self.gpu.checkpoint_resident():
                    self.loads_beside_checkpoint += 1
                self.loading.add(spec.full_name)
                began = time.monotonic()
                try:
                    await asyncio.sleep(delay * self.time_scale)  # a cancel here leaves it cold
                finally:
                    self.loading.discard(spec.full_name)
                self.load_s += time.monotonic() - began
                self.loads += 1
                current = Loaded(spec, num_ctx, time.time(), DEFAULT_KEEP_ALIVE_S)
                self.loaded[spec.full_name] = current
        if keep_alive is not None:
            current.keep_alive = keep_alive
        current.expires_at = time.time() + current.keep_alive
        return time.monotonic() - started

    def unload(self, spec: ModelSpec) -> None:
        """Drop the model from /api/ps, after the ``unload_lag`` fault if armed."""
        lag = float(self.faults.get("unload_lag", 0.0)) * self.time_scale
        if lag <= 0:
            self.loaded.pop(spec.full_name, None)
            return
        asyncio.get_running_loop().call_later(lag, self.loaded.pop, spec.full_name, None)


@dataclass
class Core:
    """What every handler shares: models, faults, counters and the log of received bodies."""

    models: ModelState
    faults: dict[str, Any]
    time_scale: float
    stats: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, Any]] = field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def take_proxy_502(self) -> bool:
        """Consume one armed proxy 502 (``proxy_502_next``)."""
        left = int(self.faults.get("proxy_502_next", 0))
        if left <= 0:
            return False
        self.faults["proxy_502_next"] = left - 1
        return True

    def names(self, fault: str) -> set[str]:
        """The normalised model names a list fault (``answer_in_thinking``...) applies to."""
        return {normalise_name(m) for m in self.faults.get(fault, [])}

    def take_empty_answer(self) -> str | None:
        """Consume one armed ``empty_answers`` entry: the done_reason to finish with."""
        left = list(self.faults.get("empty_answers", []))
        if not left:
            return None
        self.faults["empty_answers"] = left[1:]
        return str(left[0])

    def take_busy(self) -> bool:
        """Consume one armed 503 (``busy_next``); True when this request must get it."""
        left = int(self.faults.get("busy_next", 0))
        if left <= 0:
            return False
        self.faults["busy_next"] = left - 1
        return True

    async def pause(self, fault: str) -> None:
        seconds = float(self.faults.get(fault, 0.0)) * self.time_scale
        if seconds > 0:
            await asyncio.sleep(seconds)

    def replace_faults(self, faults: dict[str, Any]) -> None:
        self.faults.clear()
        self.faults.update(faults)
