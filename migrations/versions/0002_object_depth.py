"""Delta chain depth per object, so a writer can bound restore cost without walking chains.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every object written before this revision is a full object: depth 0.
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("depth", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("depth")
