"""What every request passes through: the bearer token, the upload cap and the security headers.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware): it sees the body as it arrives, so a
too-large upload is refused while it is read, never after buffering it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiscan.jobs.errors import ConfigError
from aiscan.jobs.settings import Settings

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """ConfigError when ``host`` is reachable from other machines and no AISCAN_API_TOKEN is set."""
    if not is_loopback(host) and not settings.api_token:
        raise ConfigError(
            f"refusing to serve on {host}: any host but 127.0.0.1 needs AISCAN_API_TOKEN "
            "(every request must then send `Authorization: Bearer <token>`)"
        )


class _TooLarge(Exception):
    """The request body passed the cap while it was read."""


class SecurityMiddleware:
    """Token check (when one is set), body cap, and the security headers on every response."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.expected = f"Bearer {settings.api_token}".encode() if settings.api_token else None
        self.cap = settings.max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.expected is not None and not hmac.compare_digest(
            headers.get(b"authorization", b""), self.expected
        ):
            await _json(send, 401, "missing or wrong token: send `Authorization: Bearer <AISCAN_API_TOKEN>`")
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.cap:
            await _json(send, 413, self._too_large())
            return
        state = {"read": 0, "over": False, "started": False}

        async def capped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.cap:
                    state["over"] = True
                    raise _TooLarge
            return message

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if state["over"]:
                    return  # whatever the app made of the cut body, the answer is 413 (sent below)
                state["started"] = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            elif state["over"] and not state["started"]:
                return
            await send(message)

        try:
            await self.app(scope, capped_receive, secured_send)
        except _TooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _json(send, 413, self._too_large())

    def _too_large(self) -> str:
        return f"the request is larger than {self.cap} bytes (AISCAN_MAX_UPLOAD_BYTES)"


async def _json(send: Send, status: int, message: str, **extra: Any) -> None:
    body = json.dumps({"detail": message, **extra}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
