"""An embedded C2PA manifest store -> its trust state, generator and IPTC source types, with c2pa-python.

Offline: remote manifests, OCSP and every other network fetch are off (no host is allowed).
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aiscan.model.provenance.containers import sniff_mime
from aiscan.model.provenance.errors import TrustAnchorError
from aiscan.model.provenance.evidence import C2paState
from aiscan.model.provenance.vocabulary import Declared, declares, short_term

# Codes that only say the signer (or its timestamp authority) is under no configured anchor: the
# signature and bindings may still be good, so they make a manifest `untrusted`, not `invalid`.
UNTRUSTED_CODES = frozenset({"signingCredential.untrusted", "timeStamp.untrusted"})
# Actions whose digitalSourceType describes where the asset's content came from.
SOURCE_ACTIONS = ("c2pa.created", "c2pa.edited")
ACTIONS_LABELS = ("c2pa.actions", "c2pa.actions.v2")
# A trust anchors file is a handful of root certificates; anything far larger is a wrong path.
MAX_ANCHORS_BYTES = 4 * 1024 * 1024
# c2pa-rs decompresses compressed manifest stores; a bomb stops here.
_MAX_DECOMPRESSED_MB = 16
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class C2paFacts:
    """What one manifest store says, and how far it can be trusted."""

    state: C2paState
    generator: str | None = None
    source_types: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrustAnchors:
    """The PEM text of the trust anchor certificates C2PA signers are checked against."""

    pem: str
    count: int
    source: str

    @classmethod
    def load(cls, path: Path) -> TrustAnchors:
        """The anchors in ``path`` (parsed once per path and modification time)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise _anchor_error(path, "does not exist") from None
        except OSError as exc:
            raise _anchor_error(path, f"cannot be read ({exc.strerror or exc})") from None
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with _anchors_lock:
            cached = _anchors_cache.get(key)
        if cached is not None:
            return cached
        anchors = cls._parse(path, stat.st_size)
        _context(anchors)  # c2pa must accept the anchors now, not at the first image
        with _anchors_lock:
            _anchors_cache[key] = anchors
        return anchors

    @classmethod
    def _parse(cls, path: Path, size: int) -> TrustAnchors:
        if path.is_dir():
            raise _anchor_error(path, "is a directory")
        if size > MAX_ANCHORS_BYTES:
            raise _anchor_error(path, f"is {size} bytes, over {MAX_ANCHORS_BYTES}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _anchor_error(path, f"cannot be read ({exc.strerror or exc})") from None
        if _PEM_BEGIN not in data:
            raise _anchor_error(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise _anchor_error(path, f"holds a PEM certificate that does not parse ({exc})") from None
        # Only the certificates go to c2pa, re-encoded: keys or comments in the file are left out.
        pem = b"".join(cert.public_bytes(Encoding.PEM) for cert in certificates).decode("ascii")
        return cls(pem=pem, count=len(certificates), source=str(path))


def _anchor_error(path: Path, problem: str) -> TrustAnchorError:
    problem = " ".join(problem.split())  # one line, whatever the OS or c2pa said
    return TrustAnchorError(
        f"C2PA trust anchors file {path} {problem}: give a PEM file of trust anchor certificates"
    )


_anchors_lock = threading.Lock()
_anchors_cache: dict[tuple[str, int, int], TrustAnchors] = {}
_contexts_lock = threading.Lock()
_contexts: dict[tuple[str | None, int], c2pa.Context] = {}


def _settings(trust: TrustAnchors | None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "verify": {
            "verify_trust": True,
            "remote_manifest_fetch": False,
            "ocsp_fetch": False,
        },
        # An empty allow list refuses every host: no fetch of any kind even if a default changes.
        "core": {"allowed_network_hosts": [], "max_decompressed_manifest_size_in_mb": _MAX_DECOMPRESSED_MB},
    }
    if trust is not None:
        settings["trust"] = {"trust_anchors": trust.pem}
    return settings


def _context(trust: TrustAnchors | None) -> c2pa.Context:
    """The c2pa Context of ``trust``, made once per process: c2pa refuses a parent's Context after fork."""
    key = (trust.pem if trust is not None else None, os.getpid())
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            try:
                context = c2pa.Context.from_dict(_settings(trust))
            except c2pa.C2paError as exc:
                if trust is None:
                    raise
                raise _anchor_error(Path(trust.source), f"is refused by c2pa ({exc})") from None
            _contexts[key] = context
        return context


def read_c2pa(data: bytes, mime: str | None, trust: TrustAnchors | None) -> C2paFacts | None:
    """The facts of ``data``'s embedded manifest store, or None without one (or with a remote one only)."""
    context = _context(trust)
    try:
        with c2pa.Reader(_mime(data, mime), io.BytesIO(data), context=context) as reader:
            store = reader.json()
    except c2pa.C2paError.ManifestNotFound:
        return None
    except c2pa.C2paError as exc:
        message = str(exc)
        if message.startswith(("Remote:", "RemoteManifest:")):
            # Only a URL to a manifest elsewhere: nothing embedded to validate, and nothing is fetched.
            return None
        return C2paFacts(C2paState.INVALID, evidence={"error": f"{type(exc).__name__}: {message}"})
    return facts_of(_json(store))


def _json(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _mime(data: bytes, mime: str | None) -> str | None:
    """``mime`` when c2pa reads it, else the type the magic bytes name; None lets c2pa guess."""
    if mime:
        mime = mime.split(";", 1)[0].strip().lower()
        if mime in _supported():
            return mime
    return sniff_mime(data)


_supported_lock = threading.Lock()
_supported_types: frozenset[str] | None = None


def _supported() -> frozenset[str]:
    global _supported_types
    with _supported_lock:
        if _supported_types is None:
            _supported_types = frozenset(c2pa.Reader.get_supported_mime_types())
        return _supported_types


def facts_of(store: dict[str, Any]) -> C2paFacts:
    """The facts of a manifest store as c2pa-rs reports it (``Reader.json()``)."""
    manifests = store.get("manifests")
    manifests = manifests if isinstance(manifests, dict) else {}
    active = manifests.get(store.get("active_manifest"))
    active = active if isinstance(active, dict) else {}
    results = store.get("validation_results")
    results = results if isinstance(results, dict) else {}
    statuses = results.get("activeManifest")
    statuses = statuses if isinstance(statuses, dict) else {}
    failures = _codes(statuses.get("failure"))
    validation_state = store.get("validation_state")

    actions = _actions(active)
    claim_generator = _claim_generator(active)
    # The tool that made an AI edit names the generator, over the camera that captured the original.
    agent = next(
        (
            a["software_agent"]
            for a in actions
            if a["software_agent"] and declares(a["source_type"]) is Declared.AI
        ),
        None,
    ) or next((a["software_agent"] for a in actions if a["action"] == "c2pa.created"), None)
    source_types = [a["source_type"] for a in actions if a["action"] in SOURCE_ACTIONS and a["source_type"]]

    evidence: dict[str, Any] = {
        "validation_state": validation_state,
        "claim_generator": claim_generator,
        "actions": actions,
        "failures": failures,
        "informational": _codes(statuses.get("informational")),
        "manifests": len(manifests),
    }
    signer = active.get("signature_info")
    if isinstance(signer, dict):
        evidence["signer"] = {k: signer[k] for k in ("issuer", "common_name", "alg", "time") if k in signer}
    ingredient_failures = _ingredient_failures(results.get("ingredientDeltas"))
    if ingredient_failures:
        # The active manifest's own signature and bindings decide its state; a bad ingredient is noted.
        evidence["ingredient_failures"] = ingredient_failures
    return C2paFacts(
        state=_state(validation_state, failures),
        generator=agent or claim_generator,
        source_types=source_types,
        evidence={k: v for k, v in evidence.items() if v not in (None, [], {})},
    )


def _state(validation_state: Any, failures: list[str]) -> C2paState:
    if validation_state == "Invalid" or any(code not in UNTRUSTED_CODES for code in failures):
        return C2paState.INVALID
    if validation_state == "Trusted":
        return C2paState.TRUSTED
    if validation_state == "Valid":
        return C2paState.UNTRUSTED
    return C2paState.INVALID  # a state this version of c2pa-rs does not report: not to be believed


def _codes(statuses: Any) -> list[str]:
    """The distinct ``code`` values of a validation status list, in order."""
    if not isinstance(statuses, list):
        return []
    codes = [s.get("code") for s in statuses if isinstance(s, dict)]
    return list(dict.fromkeys(c for c in codes if isinstance(c, str)))


def _ingredient_failures(deltas: Any) -> list[str]:
    if not isinstance(deltas, list):
        return []
    found: list[str] = []
    for delta in deltas:
        results = delta.get("validationDeltas") if isinstance(delta, dict) else None
        if isinstance(results, dict):
            found.extend(_codes(results.get("failure")))
    return list(dict.fromkeys(found))


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every action of the manifest's actions assertions (v1 and v2), in order."""
    found: list[dict[str, Any]] = []
    assertions = manifest.get("assertions")
    for assertion in assertions if isinstance(assertions, list) else []:
        if not isinstance(assertion, dict) or assertion.get("label") not in (
            "c2pa.actions",
            "c2pa.actions.v2",
        ):
            continue
        data = assertion.get("data")
        data = data if isinstance(data, dict) else {}
        agents = data.get("softwareAgents")
        agents = agents if isinstance(agents, list) else []
        entries = data.get("actions")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            agent = entry.get("softwareAgent")
            index = entry.get("softwareAgentIndex")
            if agent is None and isinstance(index, int) and 0 <= index < len(agents):
                agent = agents[index]
            source = entry.get("digitalSourceType")
            found.append(
                {
                    "action": str(entry.get("action", "")),
                    "source_type": short_term(source) if isinstance(source, str) else None,
                    "software_agent": _agent_name(agent),
                }
            )
    return found


def _agent_name(agent: Any) -> str | None:
    """A software agent or claim generator as text: a v1 string, or a v2 ``name`` plus ``version``."""
    if isinstance(agent, str):
        return agent.strip() or None
    if isinstance(agent, dict) and isinstance(agent.get("name"), str):
        version = agent.get("version")
        text = f"{agent['name']} {version}" if isinstance(version, str) and version else agent["name"]
        return text.strip() or None
    return None


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos:
        name = _agent_name(infos[0])
        if name:
            return name
    return _agent_name(manifest.get("claim_generator"))
