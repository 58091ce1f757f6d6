"""The one settings object: every AISCAN_* environment variable is read here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from jobs.errors import ConfigError

PREFIX = "AISCAN_"
T = TypeVar("T", int, float)


def _number(env: Mapping[str, str], name: str, default: T, minimum: T) -> T:
    """The number in AISCAN_<name>, of the type of ``default``, or ``default`` when unset."""
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not {noun}") from None
    if not value >= minimum:  # also refuses nan
        raise ConfigError(f"{PREFIX}{name}={value} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    """Runtime configuration; build it with :func:`get_settings` or :meth:`from_env`."""

    home: Path
    database_url: str
    broker_url: str | None = None
    result_backend: str | None = None
    s3_endpoint_url: str | None = None
    batch_size: int = 32
    chunk_size: int = 256
    fetch_concurrency: int = 8
    max_image_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 128_000_000
    url_timeout: float = 20.0

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def is_embedded_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get(PREFIX + "HOME") or Path.home() / ".local" / "share" / "aiscan")
        home = home.expanduser().resolve()
        database_url = env.get(PREFIX + "DATABASE_URL") or f"sqlite:///{home / 'aiscan.db'}"
        return cls(
            home=home,
            database_url=database_url,
            broker_url=env.get(PREFIX + "BROKER_URL") or None,
            result_backend=env.get(PREFIX + "RESULT_BACKEND") or None,
            s3_endpoint_url=env.get(PREFIX + "S3_ENDPOINT_URL") or None,
            batch_size=_number(env, "BATCH_SIZE", 32, 1),
            chunk_size=_number(env, "CHUNK_SIZE", 256, 1),
            fetch_concurrency=_number(env, "FETCH_CONCURRENCY", 8, 1),
            max_image_bytes=_number(env, "MAX_IMAGE_BYTES", 64 * 1024 * 1024, 1),
            max_pixels=_number(env, "MAX_PIXELS", 128_000_000, 1),
            url_timeout=_number(env, "URL_TIMEOUT", 20.0, 0.1),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings.from_env()
