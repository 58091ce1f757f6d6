"""Provenance through whole scans: the columns of every report, verdict counts, trust anchors and
--skip-known, over real signed files, XMP packets and generator text chunks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from metadata_images import (
    a1111_png,
    comfyui_png,
    jpeg_bytes,
    jpeg_with_exif,
    jpeg_with_xmp,
    png_with_text,
    xmp_packet,
)
from results import job_rows

from aiscan.jobs.settings import get_settings
from bench.c2pa_signing import Chain, make_chain, make_unrelated_chain, sign, tamper

LABELS = {"real", "fake", "uncertain"}


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return make_chain(tmp_path / "pki")


@pytest.fixture
def archive(tmp_path: Path, chain: Chain) -> Path:
    """One image of every kind of provenance, and some without."""
    files = {
        "a1111.png": a1111_png("juggernautXL_v9"),
        "comfy.png": comfyui_png("sd_xl_base_1.0.safetensors"),
        "iptc_ai.jpg": jpeg_with_xmp(xmp_packet("trainedAlgorithmicMedia", form="element")),
        # An unsigned capture claim declares nothing: anyone can write it.
        "iptc_capture.jpg": jpeg_with_xmp(xmp_packet("digitalCapture")),
        "camera.jpg": jpeg_with_exif(make="Canon", model="EOS R5", software="Firmware Version 1.8.1"),
        "signed_ai.jpg": sign(jpeg_bytes((80, 60)), "image/jpeg", chain, software_agent="Adobe Firefly"),
        "signed_capture.jpg": sign(
            jpeg_bytes((72, 56)),
            "image/jpeg",
            chain,
            source_type="digitalCapture",
            software_agent=None,
            claim_generator="Leica Camera/1.2",
        ),
        "tampered.jpg": tamper(sign(jpeg_bytes((96, 64)), "image/jpeg", chain)),
        "plain.png": png_with_text({}, (50, 40)),
    }
    whole = a1111_png("dreamshaper_8", size=(200, 160))
    # Cut inside the pixel data: the text chunk before it still declares the generator.
    files["cut.png"] = whole[: len(whole) * 2 // 3]
    root = tmp_path / "archive"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _by_name(job_id: int) -> dict[str, object]:
    return {Path(uri).name: row for uri, row in job_rows(job_id).items()}


def test_every_kind_of_provenance_gets_its_columns_and_verdict(
    home: Path, archive: Path, invoke: Callable[..., str]
) -> None:
    summary = json.loads(invoke("scan", str(archive), "--json"))
    rows = _by_name(summary["job_id"])
    assert len(rows) == 10

    def check(name: str, provenance: str, verdict: str | None, **columns: object) -> None:
        row = rows[name]
        assert row.provenance == provenance, name
        if verdict is None:  # the model's own label
            assert row.label in LABELS and row.verdict == row.label, name
        else:
            assert row.verdict == verdict, name
        for column, value in columns.items():
            assert getattr(row, column) == value, (name, column)

    check("a1111.png", "metadata", "ai_declared", source_type=None, c2pa_state=None)
    assert "juggernautXL_v9" in rows["a1111.png"].generator
    assert "sd_xl_base_1.0" in rows["comfy.png"].generator
    assert rows["comfy.png"].generator.startswith("ComfyUI")
    check("comfy.png", "metadata", "ai_declared")
    check("iptc_ai.jpg", "iptc", "ai_declared", source_type="trainedAlgorithmicMedia")
    check("iptc_capture.jpg", "iptc", None, source_type="digitalCapture", c2pa_state=None)
    check("camera.jpg", "none", None, generator=None, source_type=None)
    assert rows["camera.jpg"].evidence["exif"]["Make"] == "Canon"
    check(
        "signed_ai.jpg",
        "c2pa",
        "ai_declared",
        c2pa_state="untrusted",
        source_type="trainedAlgorithmicMedia",
        generator="Adobe Firefly",
    )
    check(
        "signed_capture.jpg", "c2pa", "capture_declared", c2pa_state="untrusted", source_type="digitalCapture"
    )
    # Tampered after signing: its state shows, but it declares nothing, and the model decides.
    check("tampered.jpg", "c2pa", None, c2pa_state="invalid", source_type=None)
    check("plain.png", "none", None, evidence=None)
    # A declaration stands even when the pixels cannot be read.
    check("cut.png", "metadata", "ai_declared", error_kind="truncated", label=None)

    verdicts = summary["verdicts"]
    assert verdicts["ai_declared"] == 5 and verdicts["capture_declared"] == 1
    assert sum(verdicts.values()) == summary["counts"]["done"] == 10
    shown = invoke("jobs", "show", str(summary["job_id"]))
    assert "verdicts: ai_declared: 5, capture_declared: 1" in shown


def test_reports_carry_the_provenance_columns(home: Path, archive: Path, invoke: Callable[..., str]) -> None:
    job_id = json.loads(invoke("scan", str(archive), "--json"))["job_id"]
    columns = ("verdict", "provenance", "generator", "source_type", "c2pa_state", "evidence")
    records = list(csv.DictReader(io.StringIO(invoke("report", str(job_id), "--format", "csv"))))
    assert len(records) == 10 and all(c in records[0] for c in columns)
    by_name = {Path(r["image_uri"]).name: r for r in records}
    signed = by_name["signed_ai.jpg"]
    columns_of_signed = [signed[c] for c in ("verdict", "provenance", "c2pa_state")]
    assert columns_of_signed == ["ai_declared", "c2pa", "untrusted"]
    evidence = json.loads(signed["evidence"])
    assert evidence["c2pa"] and "Adobe Firefly" in json.dumps(evidence)
    assert by_name["plain.png"]["evidence"] == "" and by_name["plain.png"]["c2pa_state"] == ""

    lines = [json.loads(line) for line in invoke("report", str(job_id), "--format", "jsonl").splitlines()]
    jsonl = {Path(r["image_uri"]).name: r for r in lines}
    assert jsonl["comfy.png"]["evidence"]["metadata"]  # nested, not a string
    assert jsonl["iptc_ai.jpg"]["source_type"] == "trainedAlgorithmicMedia"
    assert jsonl["tampered.jpg"]["c2pa_state"] == "invalid" and jsonl["tampered.jpg"]["verdict"] in LABELS


def _rescan(invoke: Callable[..., str], archive: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return _by_name(json.loads(invoke("scan", str(archive), "--json"))["job_id"])


def test_a_configured_trust_anchor_makes_its_signers_trusted(
    home: Path, archive: Path, chain: Chain, tmp_path: Path, invoke: Callable[..., str], monkeypatch
) -> None:
    anchored = _rescan(invoke, archive, monkeypatch, AISCAN_C2PA_TRUST_ANCHORS=str(chain.anchors_file))
    assert anchored["signed_ai.jpg"].c2pa_state == "trusted"
    assert anchored["signed_capture.jpg"].c2pa_state == "trusted"
    assert anchored["signed_capture.jpg"].verdict == "capture_declared"
    assert anchored["tampered.jpg"].c2pa_state == "invalid"  # an anchor does not mend a broken hash

    other = make_unrelated_chain(tmp_path / "other-pki")
    unrelated = _rescan(invoke, archive, monkeypatch, AISCAN_C2PA_TRUST_ANCHORS=str(other.anchors_file))
    assert unrelated["signed_ai.jpg"].c2pa_state == "untrusted"
    assert unrelated["signed_ai.jpg"].verdict == "ai_declared"  # untrusted is still a valid declaration


def test_skip_known_carries_the_provenance_without_reading_it_again(
    home: Path, archive: Path, invoke: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiscan.jobs import scoring

    first = _by_name(json.loads(invoke("scan", str(archive), "--json"))["job_id"])
    reads: list[int] = []
    original = scoring.read_provenance

    def counting(data, trust=None):  # type: ignore[no-untyped-def]
        reads.append(len(data))
        return original(data, trust)

    monkeypatch.setattr(scoring, "read_provenance", counting)
    second = _by_name(json.loads(invoke("scan", str(archive), "--json", "--skip-known"))["job_id"])
    # Only the cut file, which has no score to reuse, is read again.
    assert reads == [(archive / "cut.png").stat().st_size]
    columns = ("verdict", "provenance", "generator", "source_type", "c2pa_state", "evidence", "p_real")
    for name, row in first.items():
        assert [getattr(second[name], c) for c in columns] == [getattr(row, c) for c in columns], name


def test_a_bad_trust_anchors_file_stops_the_scan_before_its_job(
    home: Path, tmp_path: Path, archive: Path, invoke: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiscan.jobs.inprocess import run_scan
    from aiscan.model.provenance.errors import TrustAnchorError

    not_pem = tmp_path / "anchors.pem"
    not_pem.write_text("these are not certificates\n")
    monkeypatch.setenv("AISCAN_C2PA_TRUST_ANCHORS", str(not_pem))
    get_settings.cache_clear()
    with pytest.raises(TrustAnchorError, match="no PEM certificate"):
        settings = get_settings()
        run_scan(settings, [str(archive)], model_ref=None, chunk_size=8, batch_size=4, show_progress=False)
    # The CLI's one line for it is in test_bad_config; here: no job was left behind.
    assert json.loads(invoke("jobs", "list", "--json")) == []
