"""one error kind for a vanished image: not_found rows become missing

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_results = sa.table("results", sa.column("error_kind", sa.String(40)))


def upgrade() -> None:
    # HTTP 404/410 used to be "not_found" while files and S3 objects said "missing" for the same thing
    op.execute(_results.update().where(_results.c.error_kind == "not_found").values(error_kind="missing"))


def downgrade() -> None:
    # Nothing to undo: the older code wrote "missing" itself, and the rows that were "not_found" can no
    # longer be told apart from the others.
    pass
