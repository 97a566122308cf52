"""Initial catalog: objects, checkpoints, entries, chunk lists, refs, store settings.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "objects",
        sa.Column("id", ID, primary_key=True),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("raw_bytes", sa.BigInteger(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column("base_id", ID, nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_objects_base_id", "objects", ["base_id"])
    op.create_table(
        "checkpoints",
        sa.Column("id", ID, primary_key=True),
        sa.Column("parent_id", ID, sa.ForeignKey("checkpoints.id"), nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("logical_bytes", sa.BigInteger(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_checkpoints_parent_id", "checkpoints", ["parent_id"])
    op.create_index("ix_checkpoints_created_at_us", "checkpoints", ["created_at_us"])
    op.create_table(
        "entries",
        sa.Column("checkpoint_id", ID, sa.ForeignKey("checkpoints.id"), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("key_path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dtype", sa.String(32), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("digest", ID, nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_entries_checkpoint_key", "entries", ["checkpoint_id", "key_path"], unique=True
    )
    op.create_table(
        "entry_chunks",
        sa.Column("checkpoint_id", ID, primary_key=True),
        sa.Column("entry_idx", sa.Integer(), primary_key=True),
        sa.Column("chunk_idx", sa.Integer(), primary_key=True),
        sa.Column("object_id", ID, sa.ForeignKey("objects.id"), nullable=False),
    )
    op.create_index("ix_entry_chunks_object_id", "entry_chunks", ["object_id"])
    op.create_table(
        "refs",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("checkpoint_id", ID, sa.ForeignKey("checkpoints.id"), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in ("refs", "entry_chunks", "entries", "checkpoints", "objects", "store_meta"):
        op.drop_table(table)
