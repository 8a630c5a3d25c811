"""Inputs and outputs shared by workflows and activities: pure data, one model per step.

Rules: only ids, paths, hashes and short texts (ARCHITECTURE rule 3). Every field has a default
or is required from the first version on, so fields can be added without breaking histories.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = [
    "LOST_JOB_NOTE",
    "MAX_DIRECTION_CHARS",
    "MAX_LOOK_CHARS",
    "MAX_SEED",
    "MAX_STORY_SCENES",
    "MAX_STYLE_CHARS",
    "AttachImageInput",
    "CastCharacter",
    "CharacterLook",
    "EmbedTextsInput",
    "EmbeddedTexts",
    "ExtractCastInput",
    "FreeVramInput",
    "GpuSharing",
    "ImageParams",
    "ImageStatus",
    "LoadContextInput",
    "RecallMemoriesInput",
    "RecalledContext",
    "RenderInput",
    "RenderProgress",
    "RenderResult",
    "RetryImageRequest",
    "SaveNodeInput",
    "SavedNode",
    "SceneCast",
    "SceneContext",
    "SceneRequest",
    "SceneResult",
    "SceneSaved",
    "StepTimings",
    "StoreEmbeddingInput",
    "StoryRequest",
    "StoryResult",
    "UpsertCharactersInput",
    "UpsertCharactersResult",
    "WriteProgress",
    "WriteSceneInput",
    "WrittenScene",
]

MAX_SCENE_CHARS = 24_000  # a scene is ~1-3k words; bounded so history payloads stay small
# Limits on what a user types (the CLI checks these same constants before starting anything).
MAX_DIRECTION_CHARS = 4_000  # a scene's direction, and a story's premise
MAX_STYLE_CHARS = 500  # --style: a few words, repeated in every text and image prompt
MAX_STORY_SCENES = 1_000  # --scenes: one StoryRequest carries one direction per scene
MAX_SEED = 2**64 - 1  # ComfyUI's KSampler seed range is 0 .. 2**64-1
MAX_LOOK_CHARS = 1_000  # a character's canonical look, repeated in every image prompt
# The node note of a render ComfyUI lost (restart: queue and history gone) and that was submitted
# again (ARCHITECTURE rule 4): the one case where a prompt may run twice.
LOST_JOB_NOTE = "ComfyUI lost the job; it was submitted again"


class ImageStatus(StrEnum):
    SKIPPED = "skipped"
    PENDING = "pending"
    RENDERING = "rendering"
    DONE = "done"
    FAILED = "failed"


class GpuSharing(StrEnum):
    SHARED = "shared"  # Ollama and ComfyUI on one GPU: unload the LLM before each render
    SEPARATE = "separate"


# ---- the workflow's own input and output -------------------------------------------------


class SceneRequest(BaseModel):
    """Start one scene. ``story_id`` None means: start a new story with this direction as premise."""

    direction: str = Field(min_length=1, max_length=MAX_DIRECTION_CHARS)
    story_id: str | None = None
    parent_node_id: str | None = None
    illustrate: bool = True
    model: str | None = None  # None: the worker's configured text model
    template: str | None = None  # None: the worker's configured template
    style: str = Field(default="", max_length=MAX_STYLE_CHARS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # None: from the workflow id
    gpu_sharing: GpuSharing = GpuSharing.SHARED
    # Story memory (issue 6): None = no embedding and no recall (the pre-memory behaviour).
    embed_model: str | None = None
    context_budget_tokens: int = Field(default=1500, ge=1)
    # Signal the parent StoryWorkflow ``scene_saved`` right after save_node (pipelining).
    notify_parent: bool = False
    gpu: str = ""  # which GPU renders: the image task queue policies.image_queue(gpu)
    # Image settings (STORYLOOM_CHECKPOINT / _IMAGE_WIDTH / _IMAGE_HEIGHT), chosen by the
    # starter and carried in the request so a running story keeps them; None: template default.
    checkpoint: str | None = None
    image_width: int | None = Field(default=None, ge=1)
    image_height: int | None = Field(default=None, ge=1)
    # Text models tried in order when ``model`` is missing or refuses (STORYLOOM_FALLBACK_MODELS
    # of the starting terminal); None: the worker's own list (requests of older starters).
    fallback_models: list[str] | None = None


class StepTimings(BaseModel):
    """Seconds spent per step, measured from workflow time (deterministic)."""

    text_s: float = 0.0  # start of the scene until its node is saved (the LLM phase)
    write_s: float = 0.0
    illustrate_s: float = 0.0
    total_s: float = 0.0


class SceneResult(BaseModel):
    story_id: str
    node_id: str
    workflow_id: str
    title: str
    image_status: ImageStatus
    image_path: str | None = None
    image_sha256: str | None = None
    image_error: str | None = None
    timings: StepTimings = Field(default_factory=StepTimings)


# ---- 1 load_context (db) ------------------------------------------------------------------


class LoadContextInput(BaseModel):
    workflow_id: str
    direction: str
    story_id: str | None = None
    parent_node_id: str | None = None


class CharacterLook(BaseModel):
    name: str
    look: str  # canonical visual description
    reference_image: str | None = None  # local path of the reference picture, if any


class SceneContext(BaseModel):
    """What the writer needs: the story (created if new), the path's summaries, known characters."""

    story_id: str
    premise: str
    parent_node_id: str | None = None
    depth: int = 0  # depth the new node will have (root = 0)
    summaries: list[str] = Field(default_factory=list)  # ancestors' summaries, root first
    characters: list[CharacterLook] = Field(default_factory=list)


# ---- 2 write_scene (llm) ------------------------------------------------------------------


class WriteSceneInput(BaseModel):
    workflow_id: str
    model: str
    premise: str
    direction: str
    summaries: list[str] = Field(default_factory=list)
    characters: list[CharacterLook] = Field(default_factory=list)
    style: str = ""
    seed: int = 0
    memories: list[str] = Field(default_factory=list)  # recalled earlier scenes (story memory)
    fallback_models: list[str] | None = None  # None: the worker's STORYLOOM_FALLBACK_MODELS


class WriteProgress(BaseModel):
    """Heartbeat details of write_scene."""

    tokens: int = 0
    model: str = ""


class WrittenScene(BaseModel):
    title: str
    text: str = Field(max_length=MAX_SCENE_CHARS)
    summary: str
    model: str  # the model that actually wrote it (a fallback may differ from the request)
    tokens: int = 0
    fallback_note: str | None = None


# ---- 3 save_node (db) ---------------------------------------------------------------------


class SaveNodeInput(BaseModel):
    workflow_id: str  # the idempotency key: one node per workflow id
    story_id: str
    parent_node_id: str | None = None
    direction: str
    title: str
    text: str = Field(max_length=MAX_SCENE_CHARS)
    summary: str
    model: str
    illustrate: bool = True
    note: str | None = None  # a fallback taken while writing, appended to the node's notes


class SavedNode(BaseModel):
    node_id: str
    story_id: str
    depth: int
    created: bool  # False when the row already existed (a retry or replay)


# ---- 4 extract_cast (llm) -----------------------------------------------------------------


class ExtractCastInput(BaseModel):
    workflow_id: str
    model: str
    text: str = Field(max_length=MAX_SCENE_CHARS)
    known_characters: list[CharacterLook] = Field(default_factory=list)
    seed: int = 0


class CastCharacter(BaseModel):
    name: str
    look: str


class SceneCast(BaseModel):
    characters: list[CastCharacter] = Field(default_factory=list)
    setting: str = ""
    visual_prompt: str = ""


# ---- 5 upsert_characters (db) -------------------------------------------------------------


class UpsertCharactersInput(BaseModel):
    story_id: str
    node_id: str
    characters: list[CastCharacter] = Field(default_factory=list)


class UpsertCharactersResult(BaseModel):
    """Canonical looks (the stored one wins over a new extraction) and reference pictures."""

    characters: list[CharacterLook] = Field(default_factory=list)


# ---- 6 free_llm_vram (llm) ----------------------------------------------------------------


class FreeVramInput(BaseModel):
    model: str
    deadline_s: float = 30.0


# ---- 7 render (image) ---------------------------------------------------------------------


class RenderInput(BaseModel):
    workflow_id: str
    node_id: str
    step: str = "render"  # with workflow_id, the seed of the deterministic prompt_id
    template: str
    positive: str
    negative: str = ""
    seed: int
    width: int | None = None  # pixels; None: the template's default
    height: int | None = None
    reference_image: str | None = None  # local path; uploaded to ComfyUI before submit
    # Issue 13: the ComfyUI of a GPU whose worker is gone and which had accepted this job:
    # follow (and download) it there instead of rendering it twice.
    adopt_from: str | None = None
    checkpoint: str | None = None  # None: the template's default


class RenderProgress(BaseModel):
    """Heartbeat details of render: which job, where it is."""

    prompt_id: str
    # starting | submitted | queued | running | downloading | cancelling
    state: str = "submitted"
    queue_position: int | None = None
    node: str | None = None
    step: int = 0
    steps: int = 0


class RenderResult(BaseModel):
    prompt_id: str
    image_path: str
    sha256: str
    template: str
    resubmitted: bool = False  # the job was lost by ComfyUI and submitted again


# ---- 8 attach_image (db) ------------------------------------------------------------------


class AttachImageInput(BaseModel):
    node_id: str
    status: ImageStatus
    image_path: str | None = None
    sha256: str | None = None
    error: str | None = None
    prompt_id: str | None = None
    template: str | None = None
    seed: int | None = None
    note: str | None = None  # a fallback or an event worth recording on the node
    prompt: str | None = None  # the positive image prompt, kept for `storyloom retry-image`
    # The image settings of the render (kept for retry-image); None: not known / template default.
    checkpoint: str | None = None
    image_width: int | None = None
    image_height: int | None = None


# ---- RetryImageWorkflow: render a node's illustration again ------------------------------


class RetryImageRequest(BaseModel):
    """Render ``node_id``'s image again.

    ``settings_chosen`` True (starters since issue 11's fixes): ``template``, ``model``,
    ``checkpoint`` and the size are exactly what to render with; the starter chose them (a
    flag, else the node's recorded value, else the terminal's setting). False (requests of
    older starters, kept for replay): the node's recorded values win and these fill the gaps.
    """

    node_id: str
    template: str
    model: str  # the text model, for extract_cast when the node has no stored image prompt
    gpu_sharing: GpuSharing = GpuSharing.SHARED
    gpu: str = ""
    attempt: int = 1  # the n-th retry of this node: part of the workflow id, so a new prompt id
    # Image settings used when the node recorded none (None: the template's default).
    checkpoint: str | None = None
    image_width: int | None = Field(default=None, ge=1)
    image_height: int | None = Field(default=None, ge=1)
    settings_chosen: bool = False


class ImageParams(BaseModel):
    """What a node's illustration was made from (output of the db step load_image_params)."""

    node_id: str
    story_id: str
    workflow_id: str
    title: str
    text: str = Field(max_length=MAX_SCENE_CHARS)
    model: str
    image_status: ImageStatus
    template: str | None = None
    seed: int | None = None
    prompt: str | None = None
    # The image settings the node was rendered with, when the store recorded them.
    checkpoint: str | None = None
    image_width: int | None = None
    image_height: int | None = None


# ---- story memory (issue 6): embed_texts (llm), store_embedding + recall_memories (db) -----


class EmbedTextsInput(BaseModel):
    model: str
    texts: list[str] = Field(min_length=1, max_length=16)


class EmbeddedTexts(BaseModel):
    """One vector per text (a 384-float vector is ~8 KB in history: keep texts few)."""

    vectors: list[list[float]] = Field(default_factory=list)


class StoreEmbeddingInput(BaseModel):
    node_id: str
    vector: list[float]
    model: str = ""


class RecallMemoriesInput(BaseModel):
    story_id: str
    parent_node_id: str  # the path is root .. this node
    query: list[float]  # the embedded direction of the new scene
    budget_tokens: int = 1500
    max_memories: int = 3


class RecalledContext(BaseModel):
    """What fits the budget: the latest summaries (root first) and relevant older ones."""

    recent: list[str] = Field(default_factory=list)
    memories: list[str] = Field(default_factory=list)
    memory_node_ids: list[str] = Field(default_factory=list)


class SceneSaved(BaseModel):
    """Signal of a child SceneWorkflow to its StoryWorkflow: my node exists."""

    workflow_id: str
    node_id: str
    story_id: str


# ---- StoryWorkflow: N scenes in a row -----------------------------------------------------


class StoryRequest(BaseModel):
    """Write ``directions`` as consecutive scenes, each continuing from the previous node.

    ``story_id`` None: the first scene starts a new story. ``next_index``, ``node_ids`` and
    ``paused`` are carried across continue-as-new; starters leave them at their defaults.
    """

    directions: list[str] = Field(min_length=1, max_length=MAX_STORY_SCENES)
    story_id: str | None = None
    parent_node_id: str | None = None
    illustrate: bool = True
    model: str | None = None
    template: str | None = None
    style: str = Field(default="", max_length=MAX_STYLE_CHARS)
    gpu_sharing: GpuSharing = GpuSharing.SHARED
    next_index: int = 0
    node_ids: list[str] = Field(default_factory=list)
    images_failed: int = 0
    paused: bool = False
    embed_model: str | None = None
    context_budget_tokens: int = Field(default=1500, ge=1)
    scenes: list[SceneResult] = Field(default_factory=list)  # carried across continue-as-new
    elapsed_s: float = 0.0  # makespan of earlier runs (continue-as-new)
    # Image settings for every scene of the story (see SceneRequest); None: template default.
    checkpoint: str | None = None
    image_width: int | None = Field(default=None, ge=1)
    image_height: int | None = Field(default=None, ge=1)
    fallback_models: list[str] | None = None  # see SceneRequest


class StoryResult(BaseModel):
    story_id: str
    node_ids: list[str] = Field(default_factory=list)  # in story order
    last_node_id: str | None = None
    images_failed: int = 0
    scenes: list[SceneResult] = Field(default_factory=list)  # with per-scene phase timings
    makespan_s: float = 0.0  # first scene start to last scene end, workflow time
