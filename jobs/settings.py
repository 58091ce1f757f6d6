"""The one settings object: every AISCAN_* environment variable is read here and nowhere else."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from aiscan.jobs.errors import ConfigError
from aiscan.model.metadata import RUNTIMES

PREFIX = "AISCAN_"
T = TypeVar("T", int, float)

# Upper bounds of the sizes and limits: beyond them a value is a typo, and would fail later as an
# allocation or an overflow deep in a scan rather than as a message naming the setting.
MAX_BATCH_SIZE = 4096
MAX_CHUNK_SIZE = 100_000
MAX_CONCURRENCY = 1024
MAX_IMAGE_BYTES = 1 << 40
MAX_PIXELS = 1 << 40
MAX_DECODE_MEMORY_MB = 1 << 20
MAX_SECONDS = 7 * 24 * 3600
MAX_RETRIES = 1000
MAX_GPUS = 1024
MAX_UPLOAD_BYTES = 1 << 34
# A schedule tick rarer than an hour would start runs of `--every 1h` schedules an hour late.
MAX_SCHEDULE_TICK = 3600


def _number(env: Mapping[str, str], name: str, default: T, minimum: T, maximum: T) -> T:
    """The number in AISCAN_<name>, of the type of ``default``, or ``default`` when unset.

    Every limit is finite: inf and nan are refused, as is anything outside [minimum, maximum].
    """
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not {noun}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{PREFIX}{name}={raw!r} must be a finite number from {minimum} to {maximum}")
    if value < minimum:
        raise ConfigError(f"{PREFIX}{name}={value} must be at least {minimum}")
    if value > maximum:
        raise ConfigError(f"{PREFIX}{name}={value} must be at most {maximum}")
    return value


def _endpoint(env: Mapping[str, str], name: str) -> str | None:
    """An http(s) endpoint URL, checked now so that a typo fails at start-up and not in every fetch."""
    raw = (env.get(PREFIX + name) or "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - parsing the port is the check: "http://h:x" raises here
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name} is not a valid URL ({exc}): give e.g. http://host:9000") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{PREFIX}{name} must be an http:// or https:// URL with a host, e.g. http://host:9000"
        )
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(PREFIX + name) or "0").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r} must be 1 or 0")


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated CIDR networks, each checked now so a typo fails at start-up."""
    raw = env.get(PREFIX + name) or ""
    nets = tuple(part.strip() for part in raw.split(",") if part.strip())
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name}: {net!r} is not an IP network such as 127.0.0.0/8") from None
    return nets


def _file(env: Mapping[str, str], name: str, what: str) -> Path | None:
    """A file the setting names, checked now so that a typo fails at start-up and not in every image."""
    raw = (env.get(PREFIX + name) or "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"{PREFIX}{name}={raw!r} {problem}: give the path of {what}")
    return path.resolve()


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(PREFIX + name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{PREFIX}{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _token(env: Mapping[str, str], name: str) -> str | None:
    """A secret token: long enough to resist guessing, and printable (it travels in a header)."""
    raw = (env.get(PREFIX + name) or "").strip()
    if not raw:
        return None
    if len(raw) < 16 or not raw.isascii() or not raw.isprintable() or " " in raw:
        # The value itself is never echoed: it is a secret.
        raise ConfigError(
            f"{PREFIX}{name} must be at least 16 printable ASCII characters without spaces, "
            "e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    return raw


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
    # Memory in MB one process's decodes may hold at once; a larger single decode is refused.
    decode_memory_mb: int = 1024
    url_timeout: float = 20.0
    url_retries: int = 3
    url_max_redirects: int = 5
    url_allow_private: bool = False
    url_allow_networks: tuple[str, ...] = ()
    s3_region: str | None = None
    s3_profile: str | None = None
    visibility_timeout: int = 3600
    task_soft_time_limit: int = 1800
    task_max_retries: int = 8
    task_retry_backoff_max: int = 120
    worker_gpus: int = 0
    # local walks: read files that symbolic links point to outside the scanned directory
    follow_links_outside_root: bool = False
    # Seconds a running job may go without progress before `aiscan beat` sends its tasks again.
    stall_timeout: int = 300
    # A PEM file of C2PA trust anchors: manifests signed under one of them are `trusted`.
    c2pa_trust_anchors: Path | None = None
    # `aiscan serve`: the bearer token every request needs (required off loopback); never in a repr or log.
    api_token: str | None = field(default=None, repr=False)
    # `aiscan serve`: the largest request body (an upload) read; a larger one is refused with 413.
    max_upload_bytes: int = 32 * 1024 * 1024
    # Seconds between two schedule ticks of `aiscan beat`: how late past its due time a schedule may start.
    schedule_tick: int = 30
    # What executes models: auto (OpenVINO on a machine without a GPU when installed), keras, openvino.
    runtime: str = "auto"

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
            s3_endpoint_url=_endpoint(env, "S3_ENDPOINT_URL"),
            batch_size=_number(env, "BATCH_SIZE", 32, 1, MAX_BATCH_SIZE),
            chunk_size=_number(env, "CHUNK_SIZE", 256, 1, MAX_CHUNK_SIZE),
            fetch_concurrency=_number(env, "FETCH_CONCURRENCY", 8, 1, MAX_CONCURRENCY),
            max_image_bytes=_number(env, "MAX_IMAGE_BYTES", 64 * 1024 * 1024, 1, MAX_IMAGE_BYTES),
            max_pixels=_number(env, "MAX_PIXELS", 128_000_000, 1, MAX_PIXELS),
            decode_memory_mb=_number(env, "DECODE_MEMORY_MB", 1024, 64, MAX_DECODE_MEMORY_MB),
            url_timeout=_number(env, "URL_TIMEOUT", 20.0, 0.1, float(MAX_SECONDS)),
            url_retries=_number(env, "URL_RETRIES", 3, 0, MAX_RETRIES),
            url_max_redirects=_number(env, "URL_MAX_REDIRECTS", 5, 0, MAX_RETRIES),
            url_allow_private=_flag(env, "URL_ALLOW_PRIVATE"),
            url_allow_networks=_networks(env, "URL_ALLOW_NETWORKS"),
            s3_region=env.get(PREFIX + "S3_REGION") or None,
            s3_profile=env.get(PREFIX + "S3_PROFILE") or None,
            visibility_timeout=_number(env, "VISIBILITY_TIMEOUT", 3600, 1, MAX_SECONDS),
            task_soft_time_limit=_number(env, "TASK_SOFT_TIME_LIMIT", 1800, 1, MAX_SECONDS),
            task_max_retries=_number(env, "TASK_MAX_RETRIES", 8, 0, MAX_RETRIES),
            task_retry_backoff_max=_number(env, "TASK_RETRY_BACKOFF_MAX", 120, 1, MAX_SECONDS),
            worker_gpus=_number(env, "WORKER_GPUS", 0, 0, MAX_GPUS),
            follow_links_outside_root=_flag(env, "FOLLOW_LINKS_OUTSIDE_ROOT"),
            stall_timeout=_number(env, "STALL_TIMEOUT", 300, 1, MAX_SECONDS),
            c2pa_trust_anchors=_file(env, "C2PA_TRUST_ANCHORS", "a PEM file of C2PA trust anchors"),
            api_token=_token(env, "API_TOKEN"),
            max_upload_bytes=_number(env, "MAX_UPLOAD_BYTES", 32 * 1024 * 1024, 1024, MAX_UPLOAD_BYTES),
            schedule_tick=_number(env, "SCHEDULE_TICK", 30, 1, MAX_SCHEDULE_TICK),
            runtime=_choice(env, "RUNTIME", "auto", RUNTIMES),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings.from_env()
