"""Signed C2PA files made offline, for the tests and the bench: a root, intermediate and ES256 leaf
certificate, and c2pa's Builder signing images with a ``c2pa.actions`` assertion. No TSA, no network."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiscan.model.provenance.vocabulary import IPTC_PREFIX

_PEM = serialization.Encoding.PEM
# c2pa-rs accepts these EKUs on a signing certificate; emailProtection is the common one.
_SIGNING_EKU = ExtendedKeyUsageOID.EMAIL_PROTECTION


@dataclass(frozen=True)
class Chain:
    """A signing chain: ``chain_pem`` is the leaf then the intermediate, as c2pa wants it."""

    root_pem: bytes
    chain_pem: bytes
    key_pem: bytes
    anchors_file: Path


@dataclass(frozen=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aiscan tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: _Issuer | None,
    *,
    ca: bool,
) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer`` (self-signed without one), valid from a day ago."""
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name)
    signer = issuer or _Issuer(subject, key)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True
        ).add_extension(_key_usage(cert_sign=True), critical=True)
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([_SIGNING_EKU]), critical=False)
        )
    return builder.sign(signer.key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _build_chain(directory: Path, label: str) -> Chain:
    root_key, mid_key, leaf_key = _new_key(), _new_key(), _new_key()
    root = _certificate(f"{label} Root CA", root_key, None, ca=True)
    mid = _certificate(f"{label} Intermediate CA", mid_key, _Issuer(root.subject, root_key), ca=True)
    leaf = _certificate(f"{label} Signer", leaf_key, _Issuer(mid.subject, mid_key), ca=False)
    root_pem = root.public_bytes(_PEM)
    directory.mkdir(parents=True, exist_ok=True)
    anchors = directory / "anchors.pem"
    anchors.write_bytes(root_pem)
    key_pem = leaf_key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Chain(root_pem, leaf.public_bytes(_PEM) + mid.public_bytes(_PEM), key_pem, anchors)


_chains: dict[tuple[Path, str], Chain] = {}


def make_chain(directory: Path) -> Chain:
    """The signing chain of ``directory`` (made once per directory); its root is in ``anchors.pem``."""
    key = (directory.resolve(), "aiscan")
    if key not in _chains or not _chains[key].anchors_file.exists():
        _chains[key] = _build_chain(directory, "aiscan")
    return _chains[key]


def make_unrelated_chain(directory: Path) -> Chain:
    """Another chain under a root unrelated to :func:`make_chain`'s, for anchors that do not match."""
    key = (directory.resolve(), "other")
    if key not in _chains or not _chains[key].anchors_file.exists():
        _chains[key] = _build_chain(directory, "Unrelated")
    return _chains[key]


def _split_generator(claim_generator: str) -> dict[str, str]:
    name, _, version = claim_generator.partition("/")
    return {"name": name, "version": version} if version else {"name": name}


def manifest_definition(
    mime: str,
    *,
    actions: list[dict[str, Any]],
    claim_generator: str = "aiscan-tests/1.0",
) -> dict[str, Any]:
    """A manifest definition with one ``c2pa.actions`` assertion holding ``actions``."""
    return {
        "claim_generator_info": [_split_generator(claim_generator)],
        "title": "aiscan test image",
        "format": mime,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
    }


def make_action(name: str, source_type: str | None, software_agent: str | None) -> dict[str, Any]:
    """One action: ``source_type`` a short IPTC term, written as its URI."""
    entry: dict[str, Any] = {"action": name}
    if source_type is not None:
        entry["digitalSourceType"] = IPTC_PREFIX + source_type
    if software_agent is not None:
        entry["softwareAgent"] = {"name": software_agent}
    return entry


def _signing_context() -> c2pa.Context:
    # Signing must not check the test chain against any trust list, nor reach a network.
    return c2pa.Context.from_dict(
        {
            "verify": {
                "verify_after_sign": False,
                "verify_trust": False,
                "ocsp_fetch": False,
                "remote_manifest_fetch": False,
            },
            "builder": {"thumbnail": {"enabled": False}},
        }
    )


def sign_manifest(
    data: bytes,
    mime: str,
    chain: Chain,
    definition: dict[str, Any],
    *,
    remote_url: str | None = None,
) -> bytes:
    """``data`` signed with ``definition``; with ``remote_url`` the store is not embedded, only its URL."""
    info = c2pa.C2paSignerInfo(
        alg=c2pa.C2paSigningAlg.ES256, sign_cert=chain.chain_pem, private_key=chain.key_pem, ta_url=None
    )
    with (
        _signing_context() as context,
        c2pa.Signer.from_info(info) as signer,
        c2pa.Builder(json.dumps(definition), context=context) as builder,
    ):
        if remote_url is not None:
            builder.set_no_embed()
            builder.set_remote_url(remote_url)
        out = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(data), out)
        return out.getvalue()


def sign(
    data: bytes,
    mime: str,
    chain: Chain,
    *,
    source_type: str | None = "trainedAlgorithmicMedia",
    software_agent: str | None = "Test Generator 1.0",
    claim_generator: str = "aiscan-tests/1.0",
    action: str = "c2pa.created",
) -> bytes:
    """``data`` (JPEG, PNG ...) signed with one action declaring ``source_type`` (a short IPTC term).

    c2pa-rs calls a manifest whose first action is not a ``c2pa.created`` with a source type malformed."""
    return sign_actions(
        data, mime, chain, [make_action(action, source_type, software_agent)], claim_generator=claim_generator
    )


def sign_actions(
    data: bytes,
    mime: str,
    chain: Chain,
    actions: list[dict[str, Any]],
    *,
    claim_generator: str = "aiscan-tests/1.0",
) -> bytes:
    """``data`` signed with several actions (:func:`make_action`), e.g. a capture then an AI edit."""
    definition = manifest_definition(mime, actions=actions, claim_generator=claim_generator)
    return sign_manifest(data, mime, chain, definition)


def tamper(signed: bytes) -> bytes:
    """``signed`` with one byte of its image data changed (the manifest store untouched)."""
    out = bytearray(signed)
    offset = _image_data_offset(signed)
    # Keep JPEG scan data free of new markers: never write 0xFF.
    out[offset] = 0x00 if out[offset] != 0x00 else 0x01
    return bytes(out)


def _image_data_offset(data: bytes) -> int:
    """An offset inside the pixel data: the middle of a PNG's first IDAT or of a JPEG's last scan."""
    if data.startswith(b"\x89PNG"):
        at = data.index(b"IDAT")
        length = int.from_bytes(data[at - 4 : at], "big")
        return at + 4 + length // 2
    if data.startswith(b"\xff\xd8"):
        start = data.rindex(b"\xff\xda")
        return (start + len(data)) // 2
    raise ValueError("tamper knows JPEG and PNG only")
