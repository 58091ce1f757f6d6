"""One fork-safe, per-process cache of network clients (httpx, boto3), shared by every thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

T = TypeVar("T")

_lock = threading.Lock()
_clients: dict[Hashable, Any] = {}


def _reset_after_fork() -> None:
    # a forked worker must not share pooled sockets (or a held lock) with its parent
    global _lock
    _lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def process_client(key: Hashable, build: Callable[[], T]) -> T:
    """The client cached under ``key`` (a tuple led by the client's kind: "httpx", "s3") in this process,
    built by ``build`` on first use."""
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = build()
    return cast(T, client)
