"""distributed jobs: S3 ETag on results, chunk claims

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("etag", sa.String(200), nullable=True))
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(200), nullable=True))
    op.create_index("ix_chunks_job_status", "chunks", ["job_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_chunks_job_status", table_name="chunks")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("worker")
        batch.drop_column("started_at")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("etag")
