"""schedules: recurring scans, their claimed runs, and the marks that make a run incremental

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("model_ref", sa.String(200), nullable=True),
        sa.Column("every_s", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(100), nullable=True),
        sa.Column("rescan_on_model_change", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("tag_objects", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.Column("last_completed_job_id", sa.Integer(), nullable=True),
        sa.Column("last_model_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
    )
    op.create_index("ix_schedules_due", "schedules", ["paused", "next_due_at"])
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "schedule_id", sa.Integer(), sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("schedule_id", "due_at", name="uq_schedule_runs_due"),
    )
    op.create_table(
        "schedule_marks",
        sa.Column(
            "schedule_id", sa.Integer(), sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("uri_key", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", "uri_key", name="pk_schedule_marks"),
    )
    op.create_table(
        "schedule_seen",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uri_key", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "uri_key", name="pk_schedule_seen"),
    )
    # Not batch mode on SQLite: rebuilding `jobs` would drop it, and with foreign keys on that deletes
    # every chunk and result by cascade. SQLite adds a column with its REFERENCES clause in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE jobs ADD COLUMN schedule_id INTEGER REFERENCES schedules (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("jobs", sa.Column("schedule_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_jobs_schedule_id", "jobs", "schedules", ["schedule_id"], ["id"], ondelete="SET NULL"
        )
    op.add_column("jobs", sa.Column("schedule_stats", sa.JSON(), nullable=True))
    op.create_index("ix_jobs_schedule_id", "jobs", ["schedule_id"])
    op.add_column("results", sa.Column("tag_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("results", "tag_error")
    op.drop_index("ix_jobs_schedule_id", table_name="jobs")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite (3.35+) drops a column in place, unless a constraint names it: its REFERENCES goes with it.
        op.execute("ALTER TABLE jobs DROP COLUMN schedule_stats")
        op.execute("ALTER TABLE jobs DROP COLUMN schedule_id")
    else:
        op.drop_constraint("fk_jobs_schedule_id", "jobs", type_="foreignkey")
        op.drop_column("jobs", "schedule_stats")
        op.drop_column("jobs", "schedule_id")
    op.drop_table("schedule_seen")
    op.drop_table("schedule_marks")
    op.drop_table("schedule_runs")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_table("schedules")
