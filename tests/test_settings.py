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
        ("AISCAN_URL_TIMEOUT", "nan", "must be at least"),
        ("AISCAN_URL_TIMEOUT", "soon", "is not a number"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}=.*{message}"):
        Settings.from_env({name: value})
