"""how a score was made: views scored, and the most fake view's box and p_real

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("tiles", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tile_box", sa.String(64), nullable=True))
        batch.add_column(sa.Column("tile_p_real", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("tile_p_real")
        batch.drop_column("tile_box")
        batch.drop_column("tiles")
