"""A real uvicorn server on 127.0.0.1 (a free port) for web tests: ``with serve(settings) as url``, or the
``web_url`` fixture (import it into a test module) serving the app of the test's AISCAN_HOME."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from aiscan.jobs.settings import Settings, get_settings
from aiscan.jobs.web.app import create_app

_START_TIMEOUT = 60.0


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The app for ``settings`` served by uvicorn in a thread; yields its base URL (no trailing /)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test web server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def web_url(home: Path) -> Iterator[str]:
    """The app of the test's AISCAN_HOME (tiny default model) on a real server: its base URL."""
    get_settings.cache_clear()
    with serve(get_settings()) as url:
        yield url
