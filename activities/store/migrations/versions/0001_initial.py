"""Initial schema: stories, the node tree, characters, assets, render leases.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _stamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "stories",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("premise", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name="pk_stories"),
    )
    op.create_table(
        "assets",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
        sa.UniqueConstraint("sha256", "kind", name="uq_assets_sha256"),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("story_id", sa.String(40), nullable=False),
        sa.Column("parent_id", sa.String(40), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("image_status", sa.String(16), nullable=False),
        sa.Column("image_path", sa.Text(), nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("image_error", sa.Text(), nullable=True),
        sa.Column("image_prompt_id", sa.String(64), nullable=True),
        sa.Column("image_template", sa.Text(), nullable=True),
        sa.Column("image_seed", sa.String(24), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("summary_embedding", sa.JSON(), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"], name="fk_nodes_story_id_stories"),
        sa.ForeignKeyConstraint(["parent_id"], ["nodes.id"], name="fk_nodes_parent_id_nodes"),
        sa.UniqueConstraint("workflow_id", name="uq_nodes_workflow_id"),
    )
    op.create_index("ix_nodes_story_id", "nodes", ["story_id"])
    op.create_index("ix_nodes_parent_id", "nodes", ["parent_id"])
    op.create_table(
        "characters",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("story_id", sa.String(40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("look", sa.Text(), nullable=False),
        sa.Column("reference_asset_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_characters"),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_characters_story_id_stories"
        ),
        sa.ForeignKeyConstraint(
            ["reference_asset_id"], ["assets.id"],
            name="fk_characters_reference_asset_id_assets",
        ),
        sa.UniqueConstraint("story_id", "name_key", name="uq_characters_story_id"),
    )
    op.create_index("ix_characters_story_id", "characters", ["story_id"])
    op.create_table(
        "node_characters",
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("character_id", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "character_id", name="pk_node_characters"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_node_characters_node_id_nodes"),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"],
            name="fk_node_characters_character_id_characters",
        ),
    )
    op.create_table(
        "render_leases",
        sa.Column("prompt_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("prompt_id", name="pk_render_leases"),
    )


def downgrade() -> None:
    op.drop_table("render_leases")
    op.drop_table("node_characters")
    op.drop_index("ix_characters_story_id", table_name="characters")
    op.drop_table("characters")
    op.drop_index("ix_nodes_parent_id", table_name="nodes")
    op.drop_index("ix_nodes_story_id", table_name="nodes")
    op.drop_table("nodes")
    op.drop_table("assets")
    op.drop_table("stories")
