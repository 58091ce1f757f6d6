"""thumbnails made at scan time, and the indexes that browse a job's results

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "thumbnails",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uri_key", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "uri_key", name="pk_thumbnails"),
    )
    # Keyset pages by p-score read this index in order; counts by verdict read the other.
    op.create_index("ix_results_job_p_real", "results", ["job_id", "p_real", "id"])
    op.create_index("ix_results_job_verdict", "results", ["job_id", "verdict"])


def downgrade() -> None:
    op.drop_index("ix_results_job_verdict", table_name="results")
    op.drop_index("ix_results_job_p_real", table_name="results")
    op.drop_table("thumbnails")
