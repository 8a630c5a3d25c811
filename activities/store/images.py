"""The illustration part of the repository: image state of nodes, notes, and render leases."""

from __future__ import annotations

import os
import re

from sqlalchemy import select, update

from activities.errors import StoreError
from activities.store.cast import ensure_asset
from activities.store.dialects import upsert_where
from activities.store.lookups import require_node
from activities.store.models import Character, Node, NodeCharacter, RenderLeaseRow, utcnow
from activities.store.transactions import Transactions
from workflows_temporal.contracts import AttachImageInput, ImageParams, ImageStatus

__all__ = ["ImagesPart", "append_note"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def append_note(node: Node, note: str) -> None:
    # Reassigned (not appended in place) so the JSON column is seen as changed; a note already
    # present is not added again, so a retried write leaves one copy.
    if any(entry.get("text") == note for entry in node.notes or []):
        return
    node.notes = [*(node.notes or []), {"at": utcnow().isoformat(), "text": note}]


def _check_image(inp: AttachImageInput) -> None:
    if inp.status is ImageStatus.DONE and not (inp.image_path and inp.sha256):
        raise StoreError(
            "a finished image needs its path and sha256",
            service="store",
            where=f"node {inp.node_id}",
            hint="Pass image_path and sha256 from the render result, or a status other than done",
        )
    if inp.sha256 is not None and not _SHA256.fullmatch(inp.sha256):
        raise StoreError(
            f"sha256 {inp.sha256!r} is not 64 lowercase hex digits",
            service="store",
            where=f"node {inp.node_id}",
            hint="Pass hashlib.sha256(data).hexdigest() of the image file",
        )


class ImagesPart(Transactions):
    """Image fields of nodes and render fencing. Every write is idempotent."""

    async def attach_image(self, inp: AttachImageInput) -> None:
        """Record the outcome of a render on the node (status, file, error, note).

        A done image is recorded as an asset; characters of the node without a reference
        picture take it as theirs (the first good render wins). Raises StoreError (final) on an
        unknown node or an incomplete done image; nothing is written then.
        """
        _check_image(inp)
        async with self.writing() as s:
            node = await require_node(s, inp.node_id)
            node.image_status = inp.status.value
            node.image_path = inp.image_path
            node.image_sha256 = inp.sha256
            node.image_error = inp.error
            node.image_prompt_id = inp.prompt_id
            node.image_template = inp.template
            if inp.seed is not None:  # an attach that does not know the seed keeps it
                node.image_seed = inp.seed
            if inp.prompt is not None:  # kept across attaches that do not know it
                node.image_prompt = inp.prompt
            settings = {"checkpoint": inp.checkpoint, "width": inp.image_width,
                        "height": inp.image_height}
            if any(v is not None for v in settings.values()):  # kept like the prompt
                node.image_settings = settings
            if inp.note:
                append_note(node, inp.note)
            if inp.status is ImageStatus.DONE and inp.image_path and inp.sha256:
                size = os.path.getsize(inp.image_path) if os.path.isfile(inp.image_path) else None
                aid = await ensure_asset(s, inp.image_path, inp.sha256, "image", size)
                in_scene = select(NodeCharacter.character_id).where(
                    NodeCharacter.node_id == node.id
                )
                await s.execute(
                    update(Character)
                    .where(Character.id.in_(in_scene), Character.reference_asset_id.is_(None))
                    .values(reference_asset_id=aid)
                )

    async def image_params(self, node_id: str) -> ImageParams:
        """What the node's illustration was made from (template, seed, prompt) and its state;
        StoreError (final) if there is no such node."""
        async with self.reading() as s:
            node = await require_node(s, node_id)
            settings = node.image_settings or {}
            return ImageParams(
                node_id=node.id, story_id=node.story_id, workflow_id=node.workflow_id,
                title=node.title, text=node.text, model=node.model,
                image_status=ImageStatus(node.image_status), template=node.image_template,
                seed=node.image_seed, prompt=node.image_prompt,
                checkpoint=settings.get("checkpoint"), image_width=settings.get("width"),
                image_height=settings.get("height"),
            )

    async def set_image_status(self, node_id: str, status: ImageStatus) -> None:
        """Set the node's image status (e.g. pending before ``retry-image``); idempotent."""
        async with self.writing() as s:
            node = await require_node(s, node_id)
            node.image_status = ImageStatus(status).value
            if status is not ImageStatus.FAILED:
                node.image_error = None

    async def add_note(self, node_id: str, note: str) -> None:
        """Record an event on the node (a fallback, a resubmitted job); a repeat is not added."""
        async with self.writing() as s:
            append_note(await require_node(s, node_id), note)

    async def take_render_lease(self, prompt_id: str, attempt: int, holder: str) -> bool:
        """Compare-and-set fencing of a render: True iff no attempt higher than ``attempt``
        holds ``prompt_id``; then ``attempt`` holds it. One statement, race-safe on both backends.
        """
        async with self.writing() as s:
            values = {
                "prompt_id": prompt_id, "attempt": attempt, "holder": holder,
                "updated_at": utcnow(),
            }
            stmt = upsert_where(
                self.dialect(s), RenderLeaseRow, values, ["prompt_id"],
                ["attempt", "holder", "updated_at"], where=RenderLeaseRow.attempt <= attempt,
            ).returning(RenderLeaseRow.attempt)
            conn = await s.connection()
            return (await conn.execute(stmt)).first() is not None

    async def render_lease_taken(self, prompt_id: str) -> bool:
        """True when some attempt took the render lease of ``prompt_id``: the lease is taken
        right before the prompt is posted, so that attempt (or one before it) submitted it."""
        async with self.reading() as s:
            found = await s.execute(
                select(RenderLeaseRow.attempt).where(RenderLeaseRow.prompt_id == prompt_id))
            return found.first() is not None
