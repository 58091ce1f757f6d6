"""Peak Python heap of `aiscan report --format html` for jobs of different sizes (tracemalloc).

Run: ``python -m bench.report_html_memory 2000 20000``. Each size gets a fresh SQLite database whose rows
carry a real 96-px thumbnail; a flat peak across sizes shows the report streams.
"""

from __future__ import annotations

import json
import sys
import tempfile
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from aiscan.jobs.report_html import write_html_report
from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Job, ResultRow
from aiscan.jobs.store.operations import upsert_results
from aiscan.jobs.store.queries import register_model
from aiscan.model.thumbnails import thumbnail


def peak_heap(rows: int, scratch: Path) -> dict[str, object]:
    """Fill a job with ``rows`` rows and thumbnails, then write its HTML report under tracemalloc."""
    db = Database(f"sqlite:///{scratch / f'report-{rows}.db'}", auto_upgrade=True)
    rng = np.random.default_rng(0)
    jpeg = thumbnail(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    with db.session() as s:
        model = register_model(s, name="m", path="/nowhere", sha256="0" * 64, meta={})
        job = Job(sources=[str(scratch)], model_id=model.id, chunk_size=1000, options={})
        s.add(job)
        s.flush()
        job_id, model_id = job.id, model.id
    stamp = datetime.now(UTC)
    for start in range(0, rows, 1000):
        batch = [
            ResultRow(f"/archive/{i:07d}.jpg", p_real=float(rng.random()), label="real", thumbnail=jpeg)
            for i in range(start, min(rows, start + 1000))
        ]
        with db.session() as s:
            upsert_results(s, job_id, model_id, batch, classified_at=stamp)
    out = scratch / f"report-{rows}.html"
    tracemalloc.start()
    with db.session() as s, out.open("w", encoding="utf-8") as fh:
        written = write_html_report(s, job_id, fh)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    db.dispose()
    return {
        "rows": written,
        "peak_heap_mib": round(peak / 2**20, 2),
        "file_mib": round(out.stat().st_size / 2**20, 1),
    }


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="aiscan-report-") as tmp:
        for size in sizes:
            print(json.dumps(peak_heap(size, Path(tmp))), flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [2000, 20000])
