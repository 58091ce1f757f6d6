"""results keyed by a hash of the ref, with the original kept; job duplicates and skip reasons

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_results = sa.table(
    "results",
    sa.column("id", sa.Integer),
    sa.column("job_id", sa.Integer),
    sa.column("image_uri", sa.Text),
    sa.column("uri_key", sa.String(64)),
)
_chunks = sa.table("chunks", sa.column("id", sa.Integer), sa.column("refs", sa.JSON))
_jobs = sa.table("jobs", sa.column("id", sa.Integer), sa.column("sources", sa.JSON))
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_BATCH = 5000
# PostgreSQL's btree refuses index rows past about 2.7 KB: the old (job_id, image_uri) key cannot hold more.
_OLD_KEY_BYTES = 2600
# Rows written so far hold clean text, so a key is the sha256 of image_uri's UTF-8 (as refs.uri_key).


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("uri_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("ref", sa.Text(), nullable=True))
    if bind.dialect.name == "postgresql":
        op.execute("UPDATE results SET uri_key = encode(sha256(convert_to(image_uri, 'UTF8')), 'hex')")
    else:
        _backfill_in_python(bind)
    with op.batch_alter_table("results") as batch:
        batch.alter_column("uri_key", existing_type=sa.String(64), nullable=False)
        batch.drop_constraint("uq_results_job_uri", type_="unique")
        batch.create_unique_constraint("uq_results_job_key", ["job_id", "uri_key"])
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.add_column(sa.Column("duplicates", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("skip_reasons", sa.JSON(), nullable=True))


def _backfill_in_python(bind: sa.Connection) -> None:
    last = 0
    while True:
        batch = bind.execute(
            sa.select(_results.c.id, _results.c.image_uri)
            .where(_results.c.id > last)
            .order_by(_results.c.id)
            .limit(_BATCH)
        ).all()
        if not batch:
            return
        bind.execute(
            _results.update().where(_results.c.id == sa.bindparam("rid")).values(uri_key=sa.bindparam("key")),
            [{"rid": rid, "key": hashlib.sha256(uri.encode("utf-8")).hexdigest()} for rid, uri in batch],
        )
        last = batch[-1][0]


def downgrade() -> None:
    bind = op.get_bind()
    # The old key is the raw text: rows it cannot hold (a second row of one shown form, or text past an
    # index row's limit on PostgreSQL) go; `jobs retry` under the older aiscan cannot run them anyway.
    keep = sa.select(sa.func.min(_results.c.id)).group_by(_results.c.job_id, _results.c.image_uri)
    op.execute(_results.delete().where(_results.c.id.not_in(keep.scalar_subquery())))
    long_rows = 0
    if bind.dialect.name == "postgresql":
        too_long = sa.func.octet_length(_results.c.image_uri) > _OLD_KEY_BYTES
        long_rows = bind.execute(_results.delete().where(too_long)).rowcount
    for table, column in ((_chunks, _chunks.c.refs), (_jobs, _jobs.c.sources)):
        _unpack_lists(bind, table, column)
    # Never copy-and-drop jobs on SQLite: dropping the old table would cascade-delete every chunk and
    # result. ALTER TABLE ... DROP COLUMN (SQLite 3.35+) leaves the rows where they are.
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.drop_column("skip_reasons")
        batch.drop_column("duplicates")
    # PostgreSQL indexes the rows this transaction deleted as well: only a copy of the table leaves the
    # long ones out of the old key's index.
    with op.batch_alter_table("results", recreate="always" if long_rows else "auto") as batch:
        batch.drop_constraint("uq_results_job_key", type_="unique")
        batch.create_unique_constraint("uq_results_job_uri", ["job_id", "image_uri"])
        batch.drop_column("ref")
        batch.drop_column("uri_key")
    if long_rows:
        # The copy's id sequence is new: it must start after the ids the rows kept.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('results', 'id'), coalesce(max(id), 0) + 1, false) "
            "FROM results"
        )


def _unpack_lists(bind: sa.Connection, table: sa.TableClause, column: sa.ColumnClause[Any]) -> None:
    """{"b64": ...} refs, which the older aiscan cannot read, as their escaped (shown) form."""
    for row_id, items in bind.execute(sa.select(table.c.id, column)).all():
        if any(isinstance(item, dict) for item in items or []):
            shown = [_shown(item) if isinstance(item, dict) else item for item in items]
            bind.execute(table.update().where(table.c.id == row_id).values({column.name: shown}))


def _shown(item: dict[str, str]) -> str:
    # A frozen copy of refs.decode_ref and refs.display_ref: a migration must not change with the code.
    ref = base64.b64decode(item["b64"]).decode("utf-8", "surrogatepass")

    def escape(match: re.Match[str]) -> str:
        point = ord(match.group())
        if point == 0 or 0xDC80 <= point <= 0xDCFF:
            return f"\\x{point & 0xFF:02x}"
        return f"\\u{point:04x}"

    return _UNSTORABLE.sub(escape, ref)
