"""C2PA reading on real files signed in the test: trust states, source types, generators, hostile stores."""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import c2pa
import pytest
from images import encode, jpeg_bytes, png_bytes
from PIL import Image

from aiscan.model.provenance import c2pa_read
from aiscan.model.provenance.c2pa_read import C2paFacts, TrustAnchors, read_c2pa
from aiscan.model.provenance.containers import sniff_mime
from aiscan.model.provenance.errors import TrustAnchorError
from aiscan.model.provenance.evidence import C2paState
from bench.c2pa_signing import (
    Chain,
    make_action,
    make_chain,
    make_unrelated_chain,
    manifest_definition,
    sign,
    sign_actions,
    sign_manifest,
    tamper,
)

FORMATS = [("image/jpeg", jpeg_bytes), ("image/png", png_bytes)]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return make_chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="module")
def signed_jpeg(chain: Chain) -> bytes:
    return sign(jpeg_bytes(1), "image/jpeg", chain)


def _read(data: bytes, trust: TrustAnchors | None = None, mime: str | None = "image/jpeg") -> C2paFacts:
    facts = read_c2pa(data, mime, trust)
    assert facts is not None
    return facts


@pytest.mark.parametrize(("mime", "make"), FORMATS)
def test_valid_signature_without_anchors_is_untrusted(chain: Chain, mime: str, make) -> None:
    facts = _read(sign(make(1), mime, chain), mime=mime)
    assert facts.state is C2paState.UNTRUSTED
    assert facts.source_types == ["trainedAlgorithmicMedia"]
    assert facts.evidence["validation_state"] == "Valid"
    assert facts.evidence["failures"] == ["signingCredential.untrusted"]
    assert facts.evidence["signer"]["common_name"] == "aiscan Signer"


@pytest.mark.parametrize(("mime", "make"), FORMATS)
def test_signer_under_the_anchor_is_trusted(chain: Chain, mime: str, make) -> None:
    facts = _read(sign(make(2), mime, chain), TrustAnchors.load(chain.anchors_file), mime=mime)
    assert facts.state is C2paState.TRUSTED
    assert "failures" not in facts.evidence


def test_an_unrelated_anchor_leaves_it_untrusted(chain: Chain, signed_jpeg: bytes, tmp_path: Path) -> None:
    other = make_unrelated_chain(tmp_path / "other")
    assert other.root_pem != chain.root_pem
    facts = _read(signed_jpeg, TrustAnchors.load(other.anchors_file))
    assert facts.state is C2paState.UNTRUSTED


@pytest.mark.parametrize(("mime", "make"), FORMATS)
def test_tampered_pixels_are_invalid(chain: Chain, mime: str, make) -> None:
    signed = sign(make(3), mime, chain)
    trusted = TrustAnchors.load(chain.anchors_file)
    assert _read(signed, trusted, mime).state is C2paState.TRUSTED
    facts = _read(tamper(signed), trusted, mime)
    assert facts.state is C2paState.INVALID
    assert "assertion.dataHash.mismatch" in facts.evidence["failures"]


def test_capture_source_type(chain: Chain) -> None:
    facts = _read(sign(jpeg_bytes(4), "image/jpeg", chain, source_type="digitalCapture"))
    assert facts.source_types == ["digitalCapture"]


def test_ai_edit_after_a_capture_keeps_both_in_order(chain: Chain) -> None:
    signed = sign_actions(
        jpeg_bytes(5),
        "image/jpeg",
        chain,
        [
            make_action("c2pa.created", "digitalCapture", "Camera 2.1"),
            make_action("c2pa.color_adjustments", None, "Editor 3"),
            make_action("c2pa.edited", "compositeWithTrainedAlgorithmicMedia", "Fill 7"),
        ],
    )
    facts = _read(signed)
    assert facts.state is C2paState.UNTRUSTED
    assert facts.source_types == ["digitalCapture", "compositeWithTrainedAlgorithmicMedia"]
    assert facts.generator == "Fill 7"  # the AI edit's tool, not the camera
    assert [a["action"] for a in facts.evidence["actions"]] == [
        "c2pa.created",
        "c2pa.color_adjustments",
        "c2pa.edited",
    ]


def test_generator_is_the_software_agent(chain: Chain) -> None:
    signed = sign(jpeg_bytes(6), "image/jpeg", chain, software_agent="Diffuser XL 2", claim_generator="app/9")
    facts = _read(signed)
    assert facts.generator == "Diffuser XL 2"
    assert facts.evidence["claim_generator"] == "app 9"


def test_generator_falls_back_to_the_claim_generator(chain: Chain) -> None:
    signed = sign(jpeg_bytes(7), "image/jpeg", chain, software_agent=None, claim_generator="PhotoTool/4.2")
    facts = _read(signed)
    assert facts.generator == "PhotoTool 4.2"
    assert facts.state is C2paState.UNTRUSTED


def test_malformed_jumbf_is_invalid_with_the_error(signed_jpeg: bytes) -> None:
    at = signed_jpeg.index(b"jumb")
    corrupt = signed_jpeg[:at] + b"xxxx" + signed_jpeg[at + 4 :]
    facts = _read(corrupt)
    assert facts.state is C2paState.INVALID
    assert "JUMBF" in facts.evidence["error"]


def test_corrupt_claim_signature_is_invalid(signed_jpeg: bytes) -> None:
    # The last bytes of the store are the COSE signature: the JUMBF parses, the signature does not match.
    end = signed_jpeg.index(b"\xff\xdb")
    data = bytearray(signed_jpeg)
    data[end - 40] ^= 0xFF
    facts = _read(bytes(data))
    assert facts.state is C2paState.INVALID


@pytest.mark.parametrize(("mime", "make"), FORMATS)
def test_no_manifest_is_none(mime: str, make) -> None:
    assert read_c2pa(make(8), mime, None) is None


@pytest.mark.parametrize("mime", [None, "application/octet-stream", "image/png", "image/jpeg; q=1"])
def test_type_comes_from_the_bytes_when_the_given_one_is_missing_or_wrong(
    signed_jpeg: bytes, mime: str | None
) -> None:
    assert _read(signed_jpeg, mime=mime).state is C2paState.UNTRUSTED


def test_sniffed_types() -> None:
    im = Image.new("RGB", (8, 8), (10, 200, 30))
    assert sniff_mime(encode(im, "JPEG")) == "image/jpeg"
    assert sniff_mime(encode(im, "PNG")) == "image/png"
    assert sniff_mime(encode(im, "WEBP")) == "image/webp"
    assert sniff_mime(encode(im, "TIFF")) == "image/tiff"
    assert sniff_mime(encode(im, "GIF")) == "image/gif"
    assert sniff_mime(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00") == "image/avif"
    assert sniff_mime(b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00") == "image/heif"
    assert sniff_mime(b"\x00\x00\x00\x1cftypisom\x00\x00\x00\x00") is None
    assert sniff_mime(b"BM\x00\x00") is None


class _CountingHandler(BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requests": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/manifest.c2pa", seen
    finally:
        server.shutdown()
        server.server_close()


def test_remote_manifest_is_never_fetched(chain: Chain, counting_server: tuple[str, list[str]]) -> None:
    url, seen = counting_server
    definition = manifest_definition(
        "image/jpeg", actions=[make_action("c2pa.created", "digitalCapture", "C")]
    )
    remote_only = sign_manifest(jpeg_bytes(9), "image/jpeg", chain, definition, remote_url=url)
    assert url.encode() in remote_only
    assert read_c2pa(remote_only, "image/jpeg", None) is None
    assert read_c2pa(remote_only, "image/jpeg", TrustAnchors.load(chain.anchors_file)) is None
    assert seen == []
    # The same file read with c2pa's defaults does fetch: the server above would have seen it.
    with pytest.raises(c2pa.C2paError), c2pa.Reader("image/jpeg", io.BytesIO(remote_only)):
        pass
    assert seen == ["/manifest.c2pa"]


def test_anchors_load_once_per_modification(chain: Chain, tmp_path: Path) -> None:
    path = tmp_path / "anchors.pem"
    path.write_bytes(b"# our roots\n" + chain.root_pem)
    first = TrustAnchors.load(path)
    assert first.count == 1
    assert first.pem.encode() == chain.root_pem
    assert TrustAnchors.load(path) is first
    other = make_unrelated_chain(tmp_path / "other")
    path.write_bytes(chain.root_pem + other.root_pem)
    os.utime(path, ns=(1, 1))
    second = TrustAnchors.load(path)
    assert second.count == 2


def test_missing_anchors_file(tmp_path: Path) -> None:
    with pytest.raises(TrustAnchorError, match="does not exist"):
        TrustAnchors.load(tmp_path / "nowhere.pem")


def test_anchors_file_without_a_certificate(tmp_path: Path) -> None:
    path = tmp_path / "anchors.pem"
    path.write_text("not a certificate\n")
    with pytest.raises(TrustAnchorError, match="holds no PEM certificate"):
        TrustAnchors.load(path)


def test_anchors_file_with_a_broken_certificate(tmp_path: Path) -> None:
    path = tmp_path / "anchors.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TrustAnchorError, match="does not parse"):
        TrustAnchors.load(path)


def test_anchors_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TrustAnchorError, match="is a directory"):
        TrustAnchors.load(tmp_path)


def test_oversized_anchors_file_is_refused_by_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "huge.pem"
    with path.open("wb") as out:
        out.truncate(c2pa_read.MAX_ANCHORS_BYTES + 1)
    with pytest.raises(TrustAnchorError, match=f"over {c2pa_read.MAX_ANCHORS_BYTES}"):
        TrustAnchors.load(path)


def test_anchor_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "anchors.pem"
    path.write_text("")
    with pytest.raises(TrustAnchorError) as caught:
        TrustAnchors.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "PEM file of trust anchor certificates" in message


def test_threads_read_at_once(chain: Chain) -> None:
    trust = TrustAnchors.load(chain.anchors_file)
    files = [sign(jpeg_bytes(20 + i), "image/jpeg", chain) for i in range(4)]
    files += [tamper(f) for f in files[:2]] + [jpeg_bytes(30)]
    expected = [read_c2pa(f, "image/jpeg", trust) for f in files]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            assert list(pool.map(lambda f: read_c2pa(f, "image/jpeg", trust), files)) == expected
    assert [e.state if e else None for e in expected] == [C2paState.TRUSTED] * 4 + [C2paState.INVALID] * 2 + [
        None
    ]


def _state_in_child(data: bytes, anchors: Path, out: Any) -> None:
    facts = read_c2pa(data, "image/jpeg", TrustAnchors.load(anchors))
    out.put(facts.state.value if facts else None)


def test_a_forked_worker_reads_with_its_own_context(chain: Chain, signed_jpeg: bytes) -> None:
    # A prefork pool's child inherits the parent's cached c2pa Context, which c2pa refuses after fork.
    assert _read(signed_jpeg, TrustAnchors.load(chain.anchors_file)).state is C2paState.TRUSTED
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_state_in_child, args=(signed_jpeg, chain.anchors_file, queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == "trusted"
