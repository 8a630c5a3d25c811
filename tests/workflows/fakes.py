"""Stand-ins for storyloom's activities, registered under the real names, and their workers.

``FakeStudio`` behaves like the real services seen from the workflow: a story store with
nodes (so tests read what a user would see on the node), an Ollama that knows some models, a
ComfyUI that may reject templates or block until cancelled. It records every call with the
workflow id that made it, so tests only look at their own workflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from workflows_temporal.contracts import (
    AttachImageInput,
    CastCharacter,
    CharacterLook,
    EmbeddedTexts,
    EmbedTextsInput,
    ExtractCastInput,
    FreeVramInput,
    ImageParams,
    ImageStatus,
    LoadContextInput,
    RecalledContext,
    RecallMemoriesInput,
    RenderInput,
    RenderResult,
    SavedNode,
    SaveNodeInput,
    SceneCast,
    SceneContext,
    StoreEmbeddingInput,
    UpsertCharactersInput,
    UpsertCharactersResult,
    WriteSceneInput,
    WrittenScene,
)
from workflows_temporal.gpu_contracts import LeaseGrant, LeaseRequest
from workflows_temporal.policies import DB_QUEUE, IMAGE_QUEUE, LEASE_QUEUE, LLM_QUEUE
from workflows_temporal.retry_image import RetryImageWorkflow
from workflows_temporal.scene import SceneWorkflow
from workflows_temporal.story import StoryWorkflow

__all__ = ["FakeStudio", "run_workers"]


def _final(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


@dataclass
class FakeStudio:
    """Store + Ollama + ComfyUI stand-ins. Configure the fields, then read ``nodes``/``calls``."""

    models: set[str] = field(default_factory=lambda: {"llama3.2"})
    cast: list[CastCharacter] = field(
        default_factory=lambda: [CastCharacter(name="Mira", look="a girl in a yellow coat")]
    )
    stored_looks: dict[str, CharacterLook] = field(default_factory=dict)
    rejected_templates: set[str] = field(default_factory=set)  # render raises ComfyExecutionError
    failing: dict[str, ApplicationError] = field(default_factory=dict)  # activity -> error
    block_render: bool = False  # render waits (heartbeating) until cancelled
    write_gate: asyncio.Event | None = None  # write_scene waits (heartbeating) until it is set
    writing: list[str] = field(default_factory=list)  # workflow ids whose write_scene started
    render_started: asyncio.Event = field(default_factory=asyncio.Event)
    render_cancelled: list[str] = field(default_factory=list)  # workflow ids
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Story memory (issue 6): load_context returns these summaries when set; recall answers.
    summaries: list[str] | None = None
    recalled: RecalledContext = field(
        default_factory=lambda: RecalledContext(recent=["recent"], memories=["a memory"])
    )
    render_gate: asyncio.Event | None = None  # render waits (heartbeating) until it is set
    # render waits WITHOUT heartbeating until it is set, then returns its picture: it never
    # hears of a cancel (like a render that finished before its next heartbeat)
    render_deaf_gate: asyncio.Event | None = None
    timeline: list[tuple[str, str, str]] = field(default_factory=list)  # (step, wid, start|end)

    def inputs(self, name: str, workflow_id: str) -> list[Any]:
        """What activity ``name`` received from workflow ``workflow_id``, in order."""
        return [arg for n, wid, arg in self.calls if n == name and wid == workflow_id]

    def _enter(self, name: str, arg: Any) -> str:
        wid = activity.info().workflow_id or ""
        self.calls.append((name, wid, arg))
        if name in self.failing:
            raise self.failing[name]
        return wid

    @activity.defn(name="load_context")
    async def load_context(self, inp: LoadContextInput) -> SceneContext:
        self._enter("load_context", inp)
        story_id = inp.story_id or f"story-{uuid.uuid5(uuid.NAMESPACE_URL, inp.workflow_id)}"
        return SceneContext(
            story_id=story_id,
            premise=inp.direction,
            parent_node_id=inp.parent_node_id,
            summaries=["before"] if self.summaries is None else list(self.summaries),
        )

    @activity.defn(name="write_scene")
    async def write_scene(self, inp: WriteSceneInput) -> WrittenScene:
        wid = self._enter("write_scene", inp)
        self.writing.append(wid)
        self.timeline.append(("write_scene", wid, "start"))
        while self.write_gate is not None and not self.write_gate.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.05)
        if inp.model not in self.models:
            raise _final(
                f"ollama: model {inp.model!r} not found (at http://127.0.0.1:11434/api/generate)."
                f" Installed: {', '.join(sorted(self.models))}; run `ollama pull {inp.model}`",
                "ModelNotFound",
            )
        title = " ".join(inp.direction.split()[:3]).title()
        text = f"{inp.direction}. Mira walked into the fog, her yellow coat bright."
        self.timeline.append(("write_scene", wid, "end"))
        return WrittenScene(title=title, text=text, summary=text[:60], model=inp.model, tokens=42)

    @activity.defn(name="save_node")
    async def save_node(self, inp: SaveNodeInput) -> SavedNode:
        self._enter("save_node", inp)
        node_id = f"node-{uuid.uuid5(uuid.NAMESPACE_URL, inp.workflow_id)}"
        created = node_id not in self.nodes
        node = self.nodes.setdefault(node_id, {"image_status": ImageStatus.PENDING})
        node.update(
            title=inp.title, text=inp.text, story_id=inp.story_id, parent=inp.parent_node_id
        )
        return SavedNode(node_id=node_id, story_id=inp.story_id, depth=0, created=created)

    @activity.defn(name="extract_cast")
    async def extract_cast(self, inp: ExtractCastInput) -> SceneCast:
        self._enter("extract_cast", inp)
        return SceneCast(characters=self.cast, setting="a foggy harbour", visual_prompt="harbour")

    @activity.defn(name="upsert_characters")
    async def upsert_characters(self, inp: UpsertCharactersInput) -> UpsertCharactersResult:
        self._enter("upsert_characters", inp)
        looks = [
            self.stored_looks.get(c.name) or CharacterLook(name=c.name, look=c.look)
            for c in inp.characters
        ]
        return UpsertCharactersResult(characters=looks)

    @activity.defn(name="free_llm_vram")
    async def free_llm_vram(self, inp: FreeVramInput) -> None:
        self._enter("free_llm_vram", inp)

    @activity.defn(name="try_gpu")
    async def try_gpu(self, req: LeaseRequest) -> LeaseGrant:
        """The fast path finds the GPU busy: the scene goes on with acquire_gpu."""
        self._enter("try_gpu", req)
        return LeaseGrant(holder=req.holder)

    @activity.defn(name="acquire_gpu")
    async def acquire_gpu(self, req: LeaseRequest) -> LeaseGrant:
        """A scheduler with one idle GPU: the pinned one, else the default GPU."""
        self._enter("acquire_gpu", req)
        return LeaseGrant(holder=req.holder, granted=True, gpu=req.gpu or "", kind=req.kind)

    @activity.defn(name="render")
    async def render(self, inp: RenderInput) -> RenderResult:
        wid = self._enter("render", inp)
        self.render_started.set()
        self.timeline.append(("render", wid, "start"))
        while self.render_gate is not None and not self.render_gate.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.05)
        if self.render_deaf_gate is not None:
            await self.render_deaf_gate.wait()
        if self.block_render:
            try:
                while True:
                    activity.heartbeat()
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                self.render_cancelled.append(wid)
                raise
        if inp.template in self.rejected_templates:
            raise _final(
                f"comfyui: node 12 (IPAdapter) failed: cannot load {inp.reference_image}",
                "ComfyExecutionError",
            )
        digest = hashlib.sha256(f"{inp.positive}|{inp.seed}|{inp.template}".encode()).hexdigest()
        prompt_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{inp.workflow_id}/{inp.step}"))
        self.timeline.append(("render", wid, "end"))
        return RenderResult(
            prompt_id=prompt_id,
            image_path=f"media/{digest[:16]}.png",
            sha256=digest,
            template=inp.template,
        )

    @activity.defn(name="load_image_params")
    async def load_image_params(self, node_id: str) -> ImageParams:
        """A node this studio saved (or any id: a made-up node), with its stored prompt."""
        self._enter("load_image_params", node_id)
        node = self.nodes.get(node_id, {})
        return ImageParams(node_id=node_id, story_id="story-1", workflow_id="scene-1",
                           title="Scene", text="Mira walks.", model="llama3.2",
                           image_status=node.get("image_status", ImageStatus.FAILED),
                           template="scene", seed=7, prompt="Mira in the fog")

    @activity.defn(name="attach_image")
    async def attach_image(self, inp: AttachImageInput) -> None:
        self._enter("attach_image", inp)
        self.nodes.setdefault(inp.node_id, {}).update(
            image_status=inp.status, image_path=inp.image_path, error=inp.error, note=inp.note
        )

    @activity.defn(name="embed_texts")
    async def embed_texts(self, inp: EmbedTextsInput) -> EmbeddedTexts:
        self._enter("embed_texts", inp)
        return EmbeddedTexts(vectors=[[float(len(t)), 1.0] for t in inp.texts])

    @activity.defn(name="store_embedding")
    async def store_embedding(self, inp: StoreEmbeddingInput) -> None:
        self._enter("store_embedding", inp)
        self.nodes.setdefault(inp.node_id, {})["embedding"] = inp.vector

    @activity.defn(name="recall_memories")
    async def recall_memories(self, inp: RecallMemoriesInput) -> RecalledContext:
        self._enter("recall_memories", inp)
        return self.recalled


async def run_workers(stack: AsyncExitStack, client: Client, studio: FakeStudio) -> str:
    """Start one worker per queue the workflow uses; returns the (fresh) workflow queue."""
    workflow_queue = f"test-{uuid.uuid4()}"
    queues: dict[str, dict[str, Any]] = {
        workflow_queue: {"workflows": [SceneWorkflow, StoryWorkflow, RetryImageWorkflow],
                         "activities": [studio.try_gpu]},
        LLM_QUEUE: {
            "activities": [
                studio.write_scene,
                studio.extract_cast,
                studio.free_llm_vram,
                studio.embed_texts,
            ]
        },
        DB_QUEUE: {
            "activities": [
                studio.load_context,
                studio.save_node,
                studio.upsert_characters,
                studio.attach_image,
                studio.load_image_params,
                studio.store_embedding,
                studio.recall_memories,
            ]
        },
        LEASE_QUEUE: {"activities": [studio.acquire_gpu]},
        # A short throttle so a cancel reaches the heartbeating render at once.
        IMAGE_QUEUE: {
            "activities": [studio.render],
            "max_heartbeat_throttle_interval": timedelta(milliseconds=100),
        },
    }
    for queue, options in queues.items():
        await stack.enter_async_context(Worker(client, task_queue=queue, **options))
    return workflow_queue
