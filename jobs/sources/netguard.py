"""The SSRF guard: which addresses a URL fetch may connect to, and host resolution that checks them all.

Private, loopback, link-local and other non-public addresses are refused, looking through the IPv6
forms that embed an IPv4 address (mapped, 6to4, NAT64), unless the settings allow them.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

from aiscan.jobs.errors import FetchError
from aiscan.jobs.settings import Settings
from aiscan.model.errors import ErrorKind

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DNSUnavailable(Exception):
    """The resolver failed temporarily; another attempt may succeed."""


@functools.lru_cache(maxsize=32)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (None when it is), looking inside IPv6 forms of IPv4 too."""
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour:
            candidates.append(ip.sixtofour)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for a in candidates:
        for reason, flag in (
            ("loopback", a.is_loopback),
            ("link-local", a.is_link_local),
            ("multicast", a.is_multicast),
            ("unspecified", a.is_unspecified),
            ("private", a.is_private),
            ("reserved", a.is_reserved),
            ("non-public", not a.is_global),
        ):
            if flag:
                return reason
    return None


def check_address(host: str, address: str, settings: Settings) -> None:
    """Raise FetchError(refused_address) unless ``address`` may be connected to under ``settings``."""
    if settings.url_allow_private:
        return
    ip = ipaddress.ip_address(address)
    reason = _refusal(ip)
    if reason is None:
        return
    nets = _networks(settings.url_allow_networks)
    forms = [ip, *([ip.ipv4_mapped] if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else [])]
    if any(form in net for form in forms for net in nets):
        return
    shown = host if host == address else f"{host} ({address})"
    raise FetchError(
        ErrorKind.REFUSED_ADDRESS,
        f"refused to connect to {shown}: a {reason} address (allow it with AISCAN_URL_ALLOW_NETWORKS)",
    )


def resolve(host: str, port: int, settings: Settings) -> list[str]:
    """The addresses of ``host``, all of them checked: one refused address refuses the host; a resolver
    failure that may pass raises DNSUnavailable, a name that does not resolve FetchError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise DNSUnavailable(f"cannot resolve {host}: temporary DNS failure") from None
        raise FetchError(ErrorKind.CONNECTION_ERROR, f"cannot resolve host {host}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        check_address(host, address, settings)
    return addresses
