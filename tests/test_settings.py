"""The settings object reads AISCAN_* variables, with clear errors for unusable values."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiscan.jobs.errors import ConfigError
from aiscan.jobs.settings import Settings


def test_defaults_put_everything_under_home(tmp_path: Path) -> None:
    s = Settings.from_env({"AISCAN_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'aiscan.db'}"
    assert s.models_dir == tmp_path.resolve() / "models"
    assert (s.batch_size, s.chunk_size, s.broker_url) == (32, 256, None)


def test_values_are_read_and_typed() -> None:
    s = Settings.from_env(
        {
            "AISCAN_DATABASE_URL": "postgresql+psycopg://u@h/db",
            "AISCAN_CHUNK_SIZE": "17",
            "AISCAN_BATCH_SIZE": "8",
            "AISCAN_URL_TIMEOUT": "2.5",
        }
    )
    assert (s.database_url, s.chunk_size, s.batch_size, s.url_timeout) == (
        "postgresql+psycopg://u@h/db",
        17,
        8,
        2.5,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AISCAN_CHUNK_SIZE", "lots", "is not an integer"),
        ("AISCAN_BATCH_SIZE", "0", "must be at least 1"),
        ("AISCAN_URL_TIMEOUT", "nan", "must be a finite number"),
        ("AISCAN_URL_TIMEOUT", "inf", "must be a finite number"),
        ("AISCAN_URL_TIMEOUT", "-inf", "must be a finite number"),
        ("AISCAN_URL_TIMEOUT", "-1", "must be at least 0.1"),
        ("AISCAN_URL_TIMEOUT", "1e300", "must be at most"),
        ("AISCAN_BATCH_SIZE", str(10**12), "must be at most 4096"),
        ("AISCAN_CHUNK_SIZE", "100001", "must be at most 100000"),
        ("AISCAN_VISIBILITY_TIMEOUT", "inf", "is not an integer"),
        ("AISCAN_URL_TIMEOUT", "soon", "is not a number"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}=.*{message}"):
        Settings.from_env({name: value})


@pytest.mark.parametrize("value", ["http://[bad", "ftp://host", "http://h:port", "host:9000", "http://"])
def test_a_bad_s3_endpoint_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="AISCAN_S3_ENDPOINT_URL"):
        Settings.from_env({"AISCAN_S3_ENDPOINT_URL": value})


def test_a_good_s3_endpoint_is_kept() -> None:
    s = Settings.from_env({"AISCAN_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
