"""Real servers on 127.0.0.1 for tests: moto's S3 server and an HTTP server with injectable faults.

Self-contained (stdlib, plus moto for :func:`moto_s3`), so tests running real Celery workers can import
it too. :func:`guard_loopback` makes any connection to a non-loopback address fail and be recorded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# -- S3 --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_s3(port: int = 0) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (port 0: any free port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _, bound = server.get_host_and_port()
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the loopback guard ----------------------------------------------------------------------------


@dataclass
class LoopbackGuard:
    """What the patched socket functions saw: every connect address, and what they refused."""

    connections: list[Any] = field(default_factory=list)
    violations: list[Any] = field(default_factory=list)


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name: connect() would resolve it, which is traffic too


def dummy_aws_env(monkeypatch: Any, tmp_path: Path, secret: str) -> None:
    """Dummy credentials; no shared config files and no instance metadata, so nothing leaves loopback."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


def guard_loopback(monkeypatch: Any) -> LoopbackGuard:
    """Patch ``socket.socket.connect``/``connect_ex`` so non-loopback connects fail before any packet,
    and ``socket.getaddrinfo`` so no real name is looked up (DNS is traffic too).

    The caller must assert ``guard.violations`` is empty: code under test may catch the OSError.
    """
    guard = LoopbackGuard()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address: Any) -> None:
        guard.connections.append(address)
        if not _is_loopback(address):
            guard.violations.append(address)
            raise OSError(f"test guard: refused a connection to non-loopback {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        # resolving a real name sends a DNS query; IP literals and "localhost" resolve locally
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name != "localhost" and not _is_ip(name):
            guard.violations.append(("dns", name))
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: refused to resolve {name!r}")
        return real_getaddrinfo(host, port, *args, **kwargs)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return guard


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
        return True
    except ValueError:
        return False


# -- HTTP with faults ------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str | None = "image/jpeg"
    delay: float = 0.0
    fail_first: int = 0
    fail_status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    fail_headers: dict[str, str] = field(default_factory=dict)
    drip: float = 0.0  # seconds between chunks: a server that trickles its body


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultyHTTPServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.owner.ssl_context is not None:
            # handshake in the handler thread, so a client that aborts it cannot stall accept()
            request = self.owner.ssl_context.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        # clients hang up on purpose (timeouts, size caps, refused certificates): not worth a traceback
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 10  # an idle keep-alive connection closes by itself

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        _key, route, hit = owner._hit(self.path, dict(self.headers.items()))
        try:
            if route is None:
                self._send(404, {"Content-Type": "text/plain"}, b"no such route", head)
                return
            if route.delay and owner._stopping.wait(route.delay):
                return
            if hit <= route.fail_first:
                headers = {"Content-Type": "text/plain", **route.fail_headers}
                self._send(route.fail_status, headers, b"injected failure", head)
                return
            headers = {"Content-Type": route.content_type} if route.content_type else {}
            headers.update(route.headers)
            if route.chunks is None:
                self._send(route.status, headers, route.body, head)
            else:
                self._send_chunked(route.status, headers, route.chunks, head, route.drip)
            owner.finished[_key] += 1
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_chunked(
        self, status: int, headers: dict[str, str], chunks: list[bytes], head: bool, drip: float
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            if drip and self.server.owner._stopping.wait(drip):
                return
        self.wfile.write(b"0\r\n\r\n")


class FaultyHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (any free port) whose routes can fail on purpose.

    ``hits[path]`` counts requests per route path (query ignored); ``requests`` records each one;
    ``finished[path]`` counts responses sent whole.
    Pass ``ssl_context`` (a server-side context) to serve HTTPS instead.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start the server first (use it as a context manager)"
        return self._server.server_address[1]

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def add(
        self,
        path: str,
        body: bytes = b"",
        status: int = 200,
        content_type: str | None = "image/jpeg",
        delay: float = 0.0,
        fail_first: int = 0,
        fail_status: int = 500,
        headers: dict[str, str] | None = None,
        chunks: list[bytes] | None = None,
        fail_headers: dict[str, str] | None = None,
        drip: float = 0.0,
    ) -> str:
        """Serve ``path``; returns its full URL. ``chunks`` sends a chunked body (no Content-Length),
        ``drip`` seconds apart."""
        route = Route(
            body,
            status,
            content_type,
            delay,
            fail_first,
            fail_status,
            dict(headers or {}),
            chunks,
            dict(fail_headers or {}),
            drip,
        )
        with self._lock:
            self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer ``path`` with a redirect to ``location``; returns its full URL."""
        return self.add(path, status=status, content_type=None, headers={"Location": location})

    def _hit(self, raw_path: str, headers: dict[str, str]) -> tuple[str, Route | None, int]:
        with self._lock:
            route = self.routes.get(raw_path)
            key = raw_path
            if route is None:
                key = urlsplit(raw_path).path
                route = self.routes.get(key)
            self.hits[key] += 1
            self.requests.append(Seen(raw_path, headers))
            return key, route, self.hits[key]

    def start(self) -> FaultyHTTPServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultyHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed_context(hostname: str) -> ssl.SSLContext:
    """A server-side TLS context with a fresh self-signed certificate for ``hostname`` (needs
    ``cryptography``); clients using public CAs refuse it, which is the point."""
    import datetime
    import tempfile
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx.load_cert_chain(cert_path, key_path)
    return ctx
