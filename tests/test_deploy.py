"""The Docker deployment as far as it can be checked without a Docker engine: docker-compose.yml against
the Compose schema, its aiscan commands against the real CLI, the Dockerfile's install against `make setup`,
and `aiscan worker --events` exec'ing Celery with -E."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from jsonschema import Draft7Validator

from aiscan.jobs.cli import celery_worker_argv, cli
from aiscan.jobs.tasks import QUEUES
from bench.processes import aiscan_argv, aiscan_env

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
SCHEMA_FILE = Path(__file__).parent / "data" / "compose-spec.json"

# What `docker compose config` would be given: the one required variable set, every other one unset.
COMPOSE_ENV = {"AISCAN_API_TOKEN": "t" * 40}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal $.
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution for the forms the compose file uses; a required unset one raises."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if not missing:
            return value or ""
        if op is not None and op.endswith("?"):
            raise ValueError(f"required variable {name}: {arg}")
        return arg if op is not None else ""

    return _VARIABLE.sub(replace, text)


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str] = COMPOSE_ENV) -> dict[str, Any]:
    """docker-compose.yml as Compose reads it: YAML with merge keys resolved, then variables substituted."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    result: dict[str, Any] = _interpolated(document, env)
    return result


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert "draft-07" in schema["$schema"]
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _errors(validator: Draft7Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


# ---------------------------------------------------------------- the compose file against the schema


def test_compose_file_is_valid_compose_spec(validator: Draft7Validator, compose: dict[str, Any]) -> None:
    assert _errors(validator, compose) == []
    assert "version" not in compose


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda d: d["services"]["web"].update(restart_when="always"), id="unknown-service-key"),
        pytest.param(
            lambda d: d["services"]["web"]["depends_on"]["migrate"].update(condition="service_done"),
            id="unknown-depends-on-condition",
        ),
        pytest.param(lambda d: d["services"]["postgres"].update(healthcheck="pg_isready"), id="wrong-type"),
        pytest.param(lambda d: d.update(x_volumes={}), id="unknown-top-level-key"),
    ],
)
def test_a_broken_compose_file_fails_validation(
    validator: Draft7Validator, compose: dict[str, Any], breakage: Any
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert _errors(validator, broken) != []


def test_the_api_token_is_required() -> None:
    with pytest.raises(ValueError, match="set AISCAN_API_TOKEN"):
        load_compose({})


def test_the_stack_has_the_services_and_their_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = "redis postgres minio minio-init migrate worker-gpu worker-cpu beat flower web"
    assert set(services) >= set(expected.split())
    conditions = {
        (name, dep): spec["condition"]
        for name, service in services.items()
        for dep, spec in service.get("depends_on", {}).items()
    }
    assert conditions[("migrate", "postgres")] == "service_healthy"
    assert conditions[("minio-init", "minio")] == "service_healthy"
    for name in ("worker-gpu", "worker-cpu", "beat", "web"):
        assert conditions[(name, "migrate")] == "service_completed_successfully"
    # Every condition waits on something that can satisfy it.
    for (_, dep), condition in conditions.items():
        if condition == "service_healthy":
            assert "healthcheck" in services[dep], dep
    assert services["postgres"]["healthcheck"]["test"][1].startswith("pg_isready")
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["worker-gpu"]["build"]["args"]["VARIANT"] == "cuda"
    # Published ports are on the loopback interface only.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), name


def test_aiscan_containers_share_home_and_settings(compose: dict[str, Any]) -> None:
    aiscan = [s for s in compose["services"].values() if "build" in s]
    assert len(aiscan) == 5
    for service in aiscan:
        env = service["environment"]
        assert env["AISCAN_HOME"] == "/data/aiscan"
        assert "aiscan-home:/data/aiscan" in service["volumes"]
        assert env["AISCAN_BROKER_URL"] == "redis://redis:6379/0"
        assert env["AISCAN_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["AISCAN_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert compose["services"]["web"]["environment"]["AISCAN_API_TOKEN"] == COMPOSE_ENV["AISCAN_API_TOKEN"]


def test_no_secret_without_a_variable() -> None:
    """Every password or key in the file comes from a variable; its default is a documented local one."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    secret_names = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
    found = 0
    for service in raw["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if secret_names.search(name):
                found += 1
                assert str(value).startswith("${"), name
                default = re.fullmatch(r"\$\{\w+(?::-(.*)|:\?.*)\}", value)
                assert default is not None, name
                assert default.group(1) in (None, "aiscan-local", "aiscan-local-only"), name
    assert found >= 4


# ---------------------------------------------------------------- aiscan commands against the real CLI


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_entrypoint_is_aiscan() -> None:
    instructions = _dockerfile_instructions()
    entrypoints = [json.loads(rest) for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints == [["aiscan"]]
    assert ("USER", "aiscan") in instructions


def parse_aiscan(args: Sequence[str]) -> click.Context:
    """Parse ``aiscan ARGS`` down to its leaf command with the real CLI, running nothing."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="aiscan")
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest and not rest[0].startswith("-"), f"expected a subcommand of {ctx.command_path}: {rest}"
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            raise click.UsageError(f"no command {rest[0]!r}", ctx)
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=rest[0], parent=ctx)
            command, rest = sub, rest[1:]
        else:
            return sub.make_context(rest[0], rest[1:], parent=ctx, resilient_parsing=False)
    raise AssertionError("unreachable")


def aiscan_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    """The argv after `aiscan` of every service built from this Dockerfile (its ENTRYPOINT is aiscan)."""
    commands = {}
    for name, service in compose["services"].items():
        if "build" in service:
            assert "entrypoint" not in service, name
            command = service["command"]
            commands[name] = shlex.split(command) if isinstance(command, str) else list(command)
    return commands


def test_every_aiscan_command_parses(compose: dict[str, Any]) -> None:
    commands = aiscan_commands(compose)
    leaves = {name: parse_aiscan(args) for name, args in commands.items()}
    assert {name: ctx.command.name for name, ctx in leaves.items()} == {
        "migrate": "upgrade",
        "worker-gpu": "worker",
        "worker-cpu": "worker",
        "beat": "beat",
        "web": "serve",
    }
    gpu = leaves["worker-gpu"].params
    assert (gpu["gpus"], gpu["queues"], gpu["events"]) == (1, "aiscan.classify", True)
    assert gpu["concurrency"] is None  # one pool process per GPU
    cpu = leaves["worker-cpu"].params
    assert (cpu["gpus"], cpu["queues"], cpu["events"]) == (0, "aiscan.plan", True)
    assert leaves["web"].params == {"host": "0.0.0.0", "port": 8000}


@pytest.mark.parametrize(
    ("env", "cpu_queues"),
    [({}, {"aiscan.plan"}), ({"AISCAN_CPU_QUEUES": "aiscan.plan,aiscan.classify"}, set(QUEUES))],
)
def test_workers_cover_every_queue(env: dict[str, str], cpu_queues: set[str]) -> None:
    """Every queue has a consumer; without a GPU, one CPU worker can take both (README's recipe)."""
    compose = load_compose({**COMPOSE_ENV, **env})
    commands = aiscan_commands(compose)
    workers = {name: parse_aiscan(args) for name, args in commands.items() if args[0] == "worker"}
    queues = {name: set(ctx.params["queues"].split(",")) for name, ctx in workers.items()}
    assert queues["worker-gpu"] == {"aiscan.classify"}
    assert queues["worker-cpu"] == cpu_queues
    assert queues["worker-gpu"] | queues["worker-cpu"] == set(QUEUES)


def test_an_unknown_option_fails_to_parse(compose: dict[str, Any]) -> None:
    """The parse above is live: the same commands with an option aiscan lacks are refused."""
    for name, args in aiscan_commands(compose).items():
        with pytest.raises(click.NoSuchOption):
            parse_aiscan([*args, "--no-such-option"])
        with pytest.raises(click.UsageError):
            parse_aiscan(["nosuchcommand", *args])
        assert name


def test_worker_healthchecks_ping_their_own_node(compose: dict[str, Any]) -> None:
    """A healthcheck pings NAME@$HOSTNAME, so the worker's --name must be NAME@%h (%h: the hostname)."""
    for name in ("worker-gpu", "worker-cpu"):
        service = compose["services"][name]
        node = parse_aiscan(aiscan_commands(compose)[name]).params["name"]
        assert node == f"{name}@%h"
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        assert f"-d {name}@$HOSTNAME" in test[1]
        assert test[1].startswith("celery -A aiscan.worker inspect ping")


# ---------------------------------------------------------------- Dockerfile install == make setup


def _make_variables() -> dict[str, str]:
    variables = {}
    for line in MAKEFILE.read_text().splitlines():
        match = re.match(r"^([A-Z_]+)\s*[:?]?=\s*(.*?)\s*$", line)
        if match:
            variables[match.group(1)] = match.group(2)
    return variables


def _expand_make(text: str, variables: Mapping[str, str]) -> str:
    for _ in range(10):  # variables refer to variables ($(BIN) is $(VENV)/bin)
        text = re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], text)
    return text


def make_setup_commands(extras: str) -> list[list[str]]:
    """The $(STAMP) recipe of the Makefile (what `make setup` runs), with EXTRAS=extras, as argv lists."""
    lines = MAKEFILE.read_text().splitlines()
    start = lines.index("$(STAMP): pyproject.toml") + 1
    recipe = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    variables = {**_make_variables(), "EXTRAS": extras}
    commands = [shlex.split(_expand_make(line, variables)) for line in recipe]
    return [argv for argv in commands if argv[0] != "touch"]  # the stamp is make's bookkeeping


def dockerfile_install_commands(extras: str) -> list[list[str]]:
    """The commands of the Dockerfile's RUN that builds the virtual environment, ${EXTRAS} substituted."""
    instructions = _dockerfile_instructions()
    runs = [rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest]
    assert len(runs) == 1, runs
    commands = []
    for part in runs[0].split("&&"):
        commands.append(shlex.split(interpolate(part, {"EXTRAS": extras})))
    return commands


@pytest.mark.parametrize(("variant", "extras"), [("cpu", "cpu"), ("cuda", "gpu")])
def test_dockerfile_installs_as_make_setup_does(variant: str, extras: str) -> None:
    """Same commands as `make setup` (which CI runs), the extras aside."""
    # Each base stage names its extras; the final stage is built FROM base-${VARIANT}.
    stages: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for keyword, rest in _dockerfile_instructions():
        if keyword == "FROM":
            current = rest.split(" AS ")[-1] if " AS " in rest else rest
        stages.setdefault(current, []).append((keyword, rest))
    assert ("ENV", f"EXTRAS={extras}") in stages[f"base-{variant}"]
    assert "base-${VARIANT}" in stages
    assert ("ARG", "VARIANT=cpu") in _dockerfile_instructions()
    assert dockerfile_install_commands(extras) == make_setup_commands(extras)
    assert make_setup_commands(extras)[-1][-1] == f".[{extras}]"


def test_install_parity_check_is_live() -> None:
    """Another extras value, or the make default, would be told apart."""
    assert dockerfile_install_commands("cpu") != make_setup_commands("cpu,dev")
    assert make_setup_commands("cpu")[0] == ["python3", "-m", "venv", ".venv"]


# ---------------------------------------------------------------- aiscan worker --events


def test_events_flag_adds_dash_e() -> None:
    plain = celery_worker_argv(["aiscan.plan"], 1, "w@%h", "INFO")
    with_events = celery_worker_argv(["aiscan.plan"], 1, "w@%h", "INFO", events=True)
    assert "-E" not in plain
    assert with_events == [*plain, "-E"]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return []
    return [part.decode() for part in raw.split(b"\0") if part]


@pytest.fixture
def started_worker(redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = aiscan_env(os.environ, AISCAN_BROKER_URL=redis_url, AISCAN_HOME=str(tmp_path / "home"))
    args = ["worker", "--events", "--queues", "aiscan.plan", "--name", "events-test@%h"]
    argv = aiscan_argv([*args, "--loglevel", "ERROR"])
    quiet = subprocess.DEVNULL
    # A session of its own: one killpg reaches the exec'd Celery parent and its pool.
    with subprocess.Popen(argv, env=env, stdout=quiet, stderr=quiet, start_new_session=True) as proc:
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_worker_events_execs_celery_with_dash_e(started_worker: subprocess.Popen[bytes]) -> None:
    """`aiscan worker` execs Celery in place, so its pid's command line becomes the Celery one."""
    argv: list[str] = []
    deadline = time.monotonic() + 300  # a bound on a hang, not a timing assertion
    while time.monotonic() < deadline and started_worker.poll() is None:
        argv = _cmdline(started_worker.pid)
        if "celery" in argv:
            break
        time.sleep(0.1)
    assert "celery" in argv, f"exit status {started_worker.poll()}, command line {argv}"
    assert (
        argv[argv.index("celery") :]
        == celery_worker_argv(["aiscan.plan"], 1, "events-test@%h", "ERROR", events=True)[2:]
    )
