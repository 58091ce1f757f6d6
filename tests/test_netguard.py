"""The SSRF guard on its own: which addresses it refuses, what the settings allow, and resolution."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from aiscan.jobs.errors import FetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.netguard import DNSUnavailable, check_address, resolve
from aiscan.model.errors import ErrorKind


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The defaults: nothing private allowed."""
    return Settings.from_env({"AISCAN_HOME": str(tmp_path)})


def refused(address: str, settings: Settings) -> str | None:
    """The refusal message for ``address``, or None when the guard lets it through."""
    try:
        check_address("images.test", address, settings)
    except FetchError as exc:
        assert exc.error_kind == ErrorKind.REFUSED_ADDRESS
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(
    settings: Settings, address: str, reason: str
) -> None:
    message = refused(address, settings)
    assert message is not None
    assert f"a {reason} address" in message and "AISCAN_URL_ALLOW_NETWORKS" in message
    assert f"images.test ({address})" in message


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:10.1.2.3",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "2002:a01:203::1",  # 6to4 of 10.1.2.3: the IPv6 address itself looks global
        "64:ff9b::a01:203",  # NAT64 of 10.1.2.3
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    ],
)
def test_ipv4_inside_ipv6_is_looked_through(settings: Settings, address: str) -> None:
    assert refused(address, settings) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "2002:808:808::1"])
def test_public_addresses_pass(settings: Settings, address: str) -> None:
    assert refused(address, settings) is None


def test_allowed_networks_open_only_themselves(settings: Settings) -> None:
    lan = dataclasses.replace(settings, url_allow_networks=("10.0.0.0/8", "fd00::/8"))
    assert refused("10.1.2.3", lan) is None
    assert refused("::ffff:10.1.2.3", lan) is None  # the mapped form of an allowed address
    assert refused("fd00::1", lan) is None
    assert refused("192.168.0.1", lan) is not None
    assert refused("127.0.0.1", lan) is not None
    assert refused("169.254.169.254", lan) is not None


def test_allow_private_opens_everything(settings: Settings) -> None:
    anything = dataclasses.replace(settings, url_allow_private=True)
    for address in ("127.0.0.1", "169.254.169.254", "::1", "64:ff9b::a01:203"):
        assert refused(address, anything) is None


def answer(monkeypatch: pytest.MonkeyPatch, result: list[str] | socket.gaierror) -> None:
    """Make getaddrinfo answer ``result`` (addresses, or an error) for any name."""

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list:
        if isinstance(result, socket.gaierror):
            raise result
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in result
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_resolve_checks_every_address(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    answer(monkeypatch, ["93.184.216.34", "93.184.216.34", "93.184.216.35"])
    assert resolve("images.test", 443, settings) == ["93.184.216.34", "93.184.216.35"]
    # one internal address among public ones refuses the host: it could be the one a client picks
    answer(monkeypatch, ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(FetchError) as info:
        resolve("images.test", 443, settings)
    assert info.value.error_kind == ErrorKind.REFUSED_ADDRESS and "10.0.0.1" in str(info.value)


def test_resolver_failures(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    answer(monkeypatch, socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    with pytest.raises(DNSUnavailable, match="temporary"):
        resolve("images.test", 80, settings)
    answer(monkeypatch, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(FetchError) as info:
        resolve("images.test", 80, settings)
    assert info.value.error_kind == ErrorKind.CONNECTION_ERROR and "images.test" in str(info.value)
