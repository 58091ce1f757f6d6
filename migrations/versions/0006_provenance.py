"""provenance beside the p-score: what an image declares about its origin, and the verdict

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("verdict", sa.String(20), nullable=True))
        batch.add_column(sa.Column("provenance", sa.String(20), nullable=True))
        batch.add_column(sa.Column("generator", sa.String(200), nullable=True))
        batch.add_column(sa.Column("source_type", sa.String(100), nullable=True))
        batch.add_column(sa.Column("c2pa_state", sa.String(20), nullable=True))
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
    # Rows written before provenance was read: their verdict is the model's label (or error); their
    # provenance stays NULL, "not read", which is not "none".
    results = sa.table(
        "results",
        sa.column("verdict", sa.String),
        sa.column("label", sa.String),
        sa.column("error_kind", sa.String),
    )
    op.execute(
        results.update().values(
            verdict=sa.case(
                (results.c.error_kind.is_not(None), "error"),
                (results.c.label.is_(None), "error"),
                else_=results.c.label,
            )
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        for column in ("evidence", "c2pa_state", "source_type", "generator", "provenance", "verdict"):
            batch.drop_column(column)
