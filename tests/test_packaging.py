"""The built wheel: one import name in site-packages, and commands that ignore the user's own folders."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A directory a user might run aiscan in: modules named like aiscan's folders, which must never load.
HOSTILE_MODULE = "raise SystemExit('the user\\'s own {name} was imported instead of aiscan\\'s')\n"


def _site_packages(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str], set[str]]:
    """A fresh venv outside the repository with the built wheel installed (dependencies borrowed).

    Returns the venv and site-packages' entries before and after installing the wheel.
    """
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=root,
    )
    (wheel,) = dist.glob("aiscan-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = _site_packages(venv)
    # Dependencies come from the test environment's site-packages, added as a plain path: its .pth
    # files (the editable install's import hook among them) are not processed, so `aiscan` can only
    # come from the wheel.
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    before = set(os.listdir(site))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return venv, before, set(os.listdir(site))


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    """A working directory holding its own worker.py, migrations/, jobs/ and model/."""
    work = tmp_path / "project"
    work.mkdir()
    (work / "worker.py").write_text(HOSTILE_MODULE.format(name="worker.py"))
    for name in ("migrations", "jobs", "model", "training"):
        (work / name).mkdir()
        (work / name / "__init__.py").write_text(HOSTILE_MODULE.format(name=f"{name}/"))
    (work / "migrations" / "env.py").write_text(HOSTILE_MODULE.format(name="migrations/env.py"))
    return work


def _run(
    venv: Path, args: list[str], cwd: Path, home: Path, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "AISCAN_HOME": str(home / "aiscan")}
    return subprocess.run(args, cwd=cwd, env=env | settings, capture_output=True, text=True, timeout=300)


def test_wheel_installs_only_the_aiscan_package(wheel_venv: tuple[Path, set[str], set[str]]) -> None:
    venv, before, after = wheel_venv
    added = after - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"aiscan"}
    assert [name for name in added if name.endswith(".dist-info")] == ["aiscan-0.1.0.dist-info"]
    installed = _site_packages(venv) / "aiscan"
    assert sorted(p.name for p in installed.iterdir() if p.name != "__pycache__") == [
        "jobs",
        "migrations",
        "model",
        "training",
        "worker",
    ]
    # Migrations ship as package data; bench/ and tests/ are not installed.
    assert (installed / "migrations" / "versions" / "0001_initial.py").is_file()
    assert (installed / "migrations" / "script.py.mako").is_file()
    # The web app's templates and assets, and the HTML report's template, ship as package data too.
    web = installed / "jobs" / "web"
    for page in ("base.html", "check.html", "job.html", "jobs.html", "scan.html", "error.html"):
        assert (web / "templates" / page).is_file(), page
    assert (web / "static" / "aiscan.css").is_file() and (web / "static" / "aiscan.js").is_file()
    assert (installed / "jobs" / "templates" / "report.html").is_file()
    assert not (_site_packages(venv) / "tests").exists() and not (_site_packages(venv) / "bench").exists()


def test_commands_from_a_directory_with_its_own_modules(
    wheel_venv: tuple[Path, set[str], set[str]], hostile_dir: Path, tmp_path: Path
) -> None:
    venv = wheel_venv[0]
    python = str(venv / "bin" / "python")
    where = _run(
        venv,
        [python, "-c", "import aiscan.jobs, aiscan.migrations; print(aiscan.jobs.__file__)"],
        hostile_dir,
        tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(_site_packages(venv) / "aiscan" / "jobs"))

    help_ = _run(venv, [str(venv / "bin" / "aiscan"), "--help"], hostile_dir, tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert "Audit image archives" in help_.stdout

    # Celery puts the working directory first on sys.path: the user's worker.py must not shadow ours.
    report = _run(
        venv,
        [python, "-m", "celery", "-A", "aiscan.worker", "report"],
        hostile_dir,
        tmp_path,
        AISCAN_BROKER_URL="redis://127.0.0.1:6379/15",
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "aiscan.classify_chunk" in report.stdout or "broker_url" in report.stdout
    assert "was imported instead" not in report.stdout + report.stderr

    # Alembic's script location is the installed package, not ./migrations.
    database = tmp_path / "server.db"
    upgrade = _run(
        venv,
        [str(venv / "bin" / "aiscan"), "db", "upgrade"],
        hostile_dir,
        tmp_path,
        AISCAN_DATABASE_URL=f"sqlite:///{database}",
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert "database at revision" in upgrade.stdout
    assert database.is_file()


def test_worker_starts_from_a_directory_with_its_own_modules(
    wheel_venv: tuple[Path, set[str], set[str]], hostile_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    venv = wheel_venv[0]
    log_path = tmp_path / "worker.log"
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AISCAN_HOME": str(tmp_path / "aiscan"),
        "AISCAN_BROKER_URL": redis_url,
    }
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            [str(venv / "bin" / "aiscan"), "worker", "--concurrency", "1", "--name", "packaging@%h"],
            cwd=hostile_dir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while " ready." not in log_path.read_text(errors="replace") and worker.poll() is None:
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        text = log_path.read_text(errors="replace")
        assert " ready." in text, text[-3000:]
        assert "aiscan.classify_chunk" in text and "was imported instead" not in text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
