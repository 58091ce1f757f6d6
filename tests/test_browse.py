"""Browsing a job's results: keyset pages over filters and sorts on SQLite and PostgreSQL, cursor checks,
the histogram and verdict counts, a 100,000-row job's far pages and their plans, and thumbnails made by
a real scan."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from images import jpeg_bytes, png_bytes
from PIL import Image
from sqlalchemy import event, insert, select, text

from aiscan.jobs.settings import get_settings
from aiscan.jobs.store import db as store_db
from aiscan.jobs.store.browse import (
    BadCursor,
    BadFilter,
    Page,
    ResultFilter,
    Sort,
    p_real_histogram,
    results_page,
    thumbnail_of,
    verdict_counts,
)
from aiscan.jobs.store.models import DetectorModel, Job, Result, ResultRow, Thumbnail
from aiscan.jobs.store.operations import upsert_results
from aiscan.jobs.store.queries import register_model
from aiscan.jobs.store.refs import uri_key
from aiscan.model.thumbnails import thumbnail

SORTS: list[Sort] = ["p_real", "-p_real", "image_uri"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[store_db.Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'browse.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = store_db.Database(url, auto_upgrade=True)
    yield database
    database.dispose()


def _job(db: store_db.Database) -> tuple[int, int]:
    with db.session() as s:
        model = s.scalar(select(DetectorModel).limit(1))
        if model is None:
            model = register_model(s, name="m", path="/nowhere", sha256="0" * 64, meta={})
        job = Job(sources=["/x"], model_id=model.id, chunk_size=8, options={})
        s.add(job)
        s.flush()
        return job.id, model.id


def _mixed_rows(n: int) -> list[ResultRow]:
    """Scored rows with many equal p-scores, failed rows without one, every third with a thumbnail."""
    rows = []
    for i in range(n):
        if i % 6 == 5:
            row = ResultRow(f"/a/{i:03d}.png", error_kind="missing" if i % 12 == 5 else "truncated")
        else:
            p = (i % 5) / 4  # 0, .25, .5, .75, 1: ties everywhere
            label = "fake" if p < 0.4 else "real" if p > 0.6 else "uncertain"
            row = ResultRow(f"/a/{i:03d}.png", p_real=p, label=label, verdict=label)
        if i % 3 == 0:
            row.thumbnail = b"\xff\xd8 not really a jpeg " + str(i).encode()
        rows.append(row)
    return rows


def _all_pages(
    db: store_db.Database, job_id: int, sort: Sort, filters: ResultFilter, limit: int
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    with db.session() as s:
        while True:
            page = results_page(s, job_id, limit=limit, cursor=cursor, filters=filters, sort=sort)
            assert len(page.items) <= limit
            items += page.items
            if page.next_cursor is None:
                return items
            assert len(page.items) == limit
            cursor = page.next_cursor


def _expected(rows: list[Result], sort: Sort) -> list[int]:
    """Row ids in the order a sort promises: unscored rows last in both p-score orders, ties by id."""
    scored = [r for r in rows if r.p_real is not None]
    unscored = sorted((r for r in rows if r.p_real is None), key=lambda r: r.id)
    if sort == "image_uri":
        return [r.id for r in sorted(rows, key=lambda r: (r.image_uri, r.id))]
    if sort == "p_real":
        ordered = sorted(scored, key=lambda r: (r.p_real, r.id))
    else:
        ordered = sorted(scored, key=lambda r: (-(r.p_real or 0), -r.id))
    return [r.id for r in ordered + unscored]


@pytest.mark.parametrize(
    "filters",
    [
        ResultFilter(),
        ResultFilter(verdict="real"),
        ResultFilter(label="fake"),
        ResultFilter(error_kind="missing"),
        ResultFilter(verdict="error"),
        ResultFilter(verdict="ai_declared"),
    ],
    ids=["all", "verdict-real", "label-fake", "error-missing", "verdict-error", "none-match"],
)
def test_pages_walk_every_matching_row_once_in_sort_order(
    db: store_db.Database, filters: ResultFilter
) -> None:
    job_id, model_id = _job(db)
    other_job, _ = _job(db)
    stamp = datetime.now(UTC)
    with db.session() as s:
        upsert_results(s, job_id, model_id, _mixed_rows(61), classified_at=stamp)
        upsert_results(s, other_job, model_id, _mixed_rows(10), classified_at=stamp)
    with db.session() as s:
        rows = [
            r
            for r in s.scalars(select(Result).where(Result.job_id == job_id))
            if (filters.verdict is None or r.verdict == filters.verdict)
            and (filters.label is None or r.label == filters.label)
            and (filters.error_kind is None or r.error_kind == filters.error_kind)
        ]
        thumbs = set(s.scalars(select(Thumbnail.uri_key).where(Thumbnail.job_id == job_id)))
        by_id = {r.id: r for r in rows}
        s.expunge_all()
    for sort in SORTS:
        for limit in (1, 7, 100):
            items = _all_pages(db, job_id, sort, filters, limit)
            assert [item["result_id"] for item in items] == _expected(rows, sort), (sort, limit)
    for item in items:
        row = by_id[item["result_id"]]
        assert item["image_uri"] == row.image_uri and item["p_real"] == row.p_real
        assert item["model"] == "m:1" and item["verdict"] == row.verdict
        assert item["has_thumbnail"] == (row.uri_key in thumbs)


def test_unscored_rows_come_last_in_both_directions_even_across_a_page_boundary(
    db: store_db.Database,
) -> None:
    job_id, model_id = _job(db)
    rows = [ResultRow(f"/n/{i}", error_kind="truncated") for i in range(3)]
    rows += [ResultRow(f"/s/{i}", p_real=p, label="real") for i, p in enumerate([0.9, 0.1, 0.5])]
    with db.session() as s:
        upsert_results(s, job_id, model_id, rows, classified_at=datetime.now(UTC))
    orders: list[tuple[Sort, list[float]]] = [("p_real", [0.1, 0.5, 0.9]), ("-p_real", [0.9, 0.5, 0.1])]
    for sort, scores in orders:
        with db.session() as s:
            first = results_page(s, job_id, limit=4, cursor=None, filters=ResultFilter(), sort=sort)
            assert first.next_cursor is not None
            rest = results_page(
                s, job_id, limit=4, cursor=first.next_cursor, filters=ResultFilter(), sort=sort
            )
        p_reals = [item["p_real"] for item in first.items + rest.items]
        assert p_reals == [*scores, None, None, None]
        assert [i["image_uri"] for i in first.items + rest.items][3:] == ["/n/0", "/n/1", "/n/2"]
        assert rest.next_cursor is None


def _cursor(body: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_cursors_that_were_not_handed_out_for_the_query_are_refused(tmp_path: Path) -> None:
    db = store_db.Database(f"sqlite:///{tmp_path / 'c.db'}", auto_upgrade=True)
    job_id, model_id = _job(db)
    other_job, _ = _job(db)
    rows = [ResultRow(f"/c/{i}", p_real=i / 10, label="fake") for i in range(10)]
    with db.session() as s:
        upsert_results(s, job_id, model_id, rows, classified_at=datetime.now(UTC))

    def page(
        cursor: str | None, sort: Sort = "p_real", filters: ResultFilter | None = None, job: int = job_id
    ) -> Page:
        with db.session() as s:
            return results_page(s, job, limit=3, cursor=cursor, filters=filters or ResultFilter(), sort=sort)

    good = page(None).next_cursor
    assert good is not None
    body = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    mangled = [
        "not a cursor!",
        "",
        _cursor({"v": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        _cursor(body | {"v": 2}),
        _cursor(body | {"i": -1}),
        _cursor(body | {"i": "7"}),
        _cursor(body | {"k": "0.2"}),
        _cursor(body | {"k": 7.5}),
        "A" * 70_000,
    ]
    for cursor in mangled:
        with pytest.raises(BadCursor, match="start again from the first page"):
            page(cursor)
    # A well-formed cursor of another query: another sort, filter or job.
    for kwargs in ({"sort": "-p_real"}, {"filters": ResultFilter(label="fake")}, {"job": other_job}):
        with pytest.raises(BadCursor, match="another job, sort or filter"):
            page(good, **kwargs)
    with pytest.raises(BadCursor):
        page(_cursor(body | {"f": "0" * 16}))
    assert [i["p_real"] for i in page(good).items] == [0.3, 0.4, 0.5]
    db.dispose()


def test_unknown_filters_sorts_and_limits_are_refused_with_the_known_values(tmp_path: Path) -> None:
    with pytest.raises(BadFilter, match="unknown verdict 'bogus': use one of ai_declared, capture_declared"):
        ResultFilter(verdict="bogus")
    with pytest.raises(BadFilter, match="unknown label 'ai_declared': use one of real, fake, uncertain"):
        ResultFilter(label="ai_declared")
    with pytest.raises(BadFilter, match=r"unknown error kind 'oops'.*not_an_image"):
        ResultFilter(error_kind="oops")
    db = store_db.Database(f"sqlite:///{tmp_path / 'f.db'}", auto_upgrade=True)
    job_id, _ = _job(db)
    with db.session() as s:
        with pytest.raises(BadFilter, match="unknown sort 'size'"):
            results_page(s, job_id, limit=5, cursor=None, filters=ResultFilter(), sort="size")  # type: ignore[arg-type]
        for limit in (0, 1001):
            with pytest.raises(BadFilter, match="limit must be between 1 and 1000"):
                results_page(s, job_id, limit=limit, cursor=None, filters=ResultFilter(), sort="p_real")
        with pytest.raises(BadFilter, match="bins"):
            p_real_histogram(s, job_id, bins=0)
        assert results_page(s, job_id, limit=5, cursor=None, filters=ResultFilter(), sort="p_real") == Page(
            [], None
        )
    db.dispose()


def test_histogram_bins_and_verdict_counts(db: store_db.Database) -> None:
    job_id, model_id = _job(db)
    scores = [0.0, 0.049, 0.05, 0.5, 0.51, 0.999, 1.0, 1.0]
    rows = [ResultRow(f"/h/{i}", p_real=p, label="real", verdict="real") for i, p in enumerate(scores)]
    rows += [
        ResultRow("/h/bad", error_kind="truncated"),
        ResultRow("/h/ai", p_real=0.7, verdict="ai_declared"),
    ]
    with db.session() as s:
        upsert_results(s, job_id, model_id, rows, classified_at=datetime.now(UTC))
    with db.session() as s:
        counts = p_real_histogram(s, job_id)
        assert len(counts) == 20 and sum(counts) == 9
        assert counts[0] == 2 and counts[1] == 1 and counts[10] == 2 and counts[14] == 1 and counts[19] == 3
        assert p_real_histogram(s, job_id, bins=2) == [3, 6]
        assert verdict_counts(s, job_id) == {"real": 8, "error": 1, "ai_declared": 1}
        assert p_real_histogram(s, job_id + 1) == [0] * 20 and verdict_counts(s, job_id + 1) == {}


@contextmanager
def _statements(db: store_db.Database) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (and their parameters) sent to ``db`` inside the block."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def _plan(db: store_db.Database, statement: str, parameters: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if db.engine.dialect.name == "sqlite" else "EXPLAIN "
    with db.engine.connect() as conn:
        return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(prefix + statement, parameters))


def test_a_far_page_of_a_100k_row_job_reads_the_index_and_has_the_right_rows(db: store_db.Database) -> None:
    job_id, model_id = _job(db)
    n = 100_000
    rng = np.random.default_rng(7)
    # Few distinct scores, so ties span pages; every 50th row failed (no score).
    scores = np.round(rng.random(n), 3)
    stamp = datetime.now(UTC)
    with db.session() as s:
        for start in range(0, n, 10_000):
            s.execute(
                insert(Result),
                [
                    {
                        "job_id": job_id,
                        "model_id": model_id,
                        "image_uri": f"/big/{i:06d}.jpg",
                        "uri_key": uri_key(f"/big/{i:06d}.jpg"),
                        "p_real": None if i % 50 == 0 else float(scores[i]),
                        "verdict": "error" if i % 50 == 0 else "real",
                        "classified_at": stamp,
                    }
                    for i in range(start, min(n, start + 10_000))
                ],
            )
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    with db.session() as s:
        ordered = [
            row_id
            for row_id, _p in sorted(
                s.execute(select(Result.id, Result.p_real).where(Result.job_id == job_id)),
                key=lambda r: (r[1] is None, -(r[1] or 0.0), -r[0] if r[1] is not None else r[0]),
            )
        ]
    assert len(ordered) == n
    limit, far = 900, 108
    cursor = None
    with db.session() as s:
        for _ in range(far):
            page = results_page(s, job_id, limit=limit, cursor=cursor, filters=ResultFilter(), sort="-p_real")
            cursor = page.next_cursor
        with _statements(db) as seen:
            page = results_page(s, job_id, limit=limit, cursor=cursor, filters=ResultFilter(), sort="-p_real")
    assert [item["result_id"] for item in page.items] == ordered[far * limit : (far + 1) * limit]
    # Page 109 crosses from the 98,000 scored rows into the unscored ones: both reads are index range scans.
    queries = [(st, p) for st, p in seen if "FROM results" in st and "ORDER BY" in st]
    assert len(queries) == 2
    for statement, parameters in queries:
        plan = _plan(db, statement, parameters)
        assert "ix_results_job_p_real" in plan, plan
        if db.engine.dialect.name == "sqlite":
            assert "TEMP B-TREE" not in plan, plan
        else:
            assert "Sort" not in plan and "Seq Scan" not in plan, plan


# -- thumbnails made by a real scan ---------------------------------------------------------------------


def test_thumbnail_is_a_small_jpeg_with_the_longest_side_at_most_the_size() -> None:
    rng = np.random.default_rng(1)
    for height, width in ((3000, 200), (150, 200), (10, 12), (1, 5000)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        data = thumbnail(pixels)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert max(im.size) == min(96, max(width, height))
    with Image.open(io.BytesIO(thumbnail(np.zeros((500, 400, 3), np.uint8), size=32))) as im:
        assert im.size == (26, 32)
    with pytest.raises(ValueError, match="at least 1"):
        thumbnail(np.zeros((5, 5, 3), np.uint8), size=0)


def test_a_scan_stores_one_thumbnail_per_decoded_image(
    home: Path, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "wide.jpg").write_bytes(jpeg_bytes(1, (400, 100)))
    (archive / "square.png").write_bytes(png_bytes(2, (120, 120)))
    (archive / "broken.jpg").write_bytes(jpeg_bytes(3)[:200])
    (archive / "notes.jpg").write_bytes(b"not an image at all")
    job_id = json.loads(invoke("scan", str(archive), "--json"))["job_id"]
    db = store_db.open_database(get_settings().database_url)
    with db.session() as s:
        items = results_page(s, job_id, limit=10, cursor=None, filters=ResultFilter(), sort="image_uri")
        by_name = {Path(item["image_uri"]).name: item for item in items.items}
        assert set(by_name) == {"wide.jpg", "square.png", "broken.jpg", "notes.jpg"}
        sizes = {}
        for name, item in by_name.items():
            data = thumbnail_of(s, job_id, item["result_id"])
            assert item["has_thumbnail"] == (data is not None), name
            if data is not None:
                with Image.open(io.BytesIO(data)) as im:
                    assert im.format == "JPEG"
                    sizes[name] = im.size
        assert sizes == {"wide.jpg": (96, 24), "square.png": (96, 96)}
        # Only through its own job: a result id of another job, or none at all, gives nothing.
        assert thumbnail_of(s, job_id + 1, by_name["wide.jpg"]["result_id"]) is None
        assert thumbnail_of(s, job_id, 10_000) is None
    # Scanned again (a second job), each job keeps its own thumbnails.
    second = json.loads(invoke("scan", str(archive), "--json"))["job_id"]
    with db.session() as s:
        assert (
            s.scalar(select(text("count(*)")).select_from(Thumbnail).where(Thumbnail.job_id == second)) == 2
        )
