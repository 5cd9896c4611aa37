"""deploy/: what cannot run here (systemd, containers, other machines) is checked statically.

Every command line in the systemd units and the compose file is checked against the
real CLI's options (`--help` of the installed kiroku and prefect), every PREFECT_*
variable against Prefect's own settings, and every deployment in prefect.yaml
against the flow its entrypoint loads. bench/scale_out.py applies prefect.yaml to a
real server (`prefect deploy`); this test keeps it honest in CI in seconds.
"""

from __future__ import annotations

import configparser
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
EXPECTED_DEPLOYMENTS = {"ingest-document", "ingest-batch", "verify-archive", "retention-report", "daily-summary"}


@functools.lru_cache(maxsize=None)
def cli_options(*command: str) -> frozenset[str]:
    """The long options a real command accepts, read from its --help."""
    exe = BIN / command[0]
    env = dict(os.environ, COLUMNS="250", PREFECT_HOME=os.environ.get("PREFECT_HOME", "/tmp"))
    done = subprocess.run([str(exe), *command[1:], "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"{' '.join(command)} --help failed: {done.stderr[-500:]}"
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", done.stdout))


def check_command(argv: list[str]) -> None:
    """argv of kiroku or prefect: the subcommand exists and every --option is one of its options."""
    prog = Path(argv[0]).name
    assert prog in ("kiroku", "prefect"), argv
    words = []
    for a in argv[1:]:
        if a.startswith("-"):
            break
        words.append(a)
    options = cli_options(prog, *words)
    used = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    assert used <= options, f"{' '.join(argv)}: unknown options {sorted(used - options)}"


@functools.lru_cache(maxsize=1)
def prefect_setting_names() -> frozenset[str]:
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    return frozenset(_get_valid_setting_names(Settings))


def check_env_names(names: set[str]) -> None:
    kiroku_names = set(re.findall(r"KIROKU_[A-Z0-9_]+", (ROOT / "kiroku" / "config.py").read_text()))
    kiroku_names |= set(re.findall(r"KIROKU_[A-Z0-9_]+", (ROOT / "kiroku" / "scaleout.py").read_text()))
    kiroku_names |= set(re.findall(r"KIROKU_[A-Z0-9_]+", (ROOT / "flows" / "slots.py").read_text()))
    for name in names:
        if name.startswith("PREFECT_REDIS_"):
            continue  # prefect-redis's own settings (compose `ha` profile)
        if name.startswith("PREFECT_"):
            assert name in prefect_setting_names(), f"{name} is not a Prefect setting"
        elif name.startswith("KIROKU_"):
            assert name in kiroku_names, f"{name} is not read by kiroku"
        else:
            assert name in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "EXTRA_PIP_PACKAGES"}, name


# --------------------------------------------------------------------------- prefect.yaml
def test_prefect_yaml_deployments_load_their_flows() -> None:
    from prefect.flows import load_flow_from_entrypoint

    doc = yaml.safe_load((DEPLOY / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = {d["name"]: d for d in doc["deployments"]}
    assert set(deployments) == EXPECTED_DEPLOYMENTS
    step = doc["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $KIROKU_SOURCE }}"  # resolved on each worker machine
    missing = []
    for name, dep in deployments.items():
        assert dep["work_pool"]["name"] == "kiroku", name
        path, func = dep["entrypoint"].split(":")
        if not (ROOT / path).exists():
            missing.append(dep["entrypoint"])
            continue
        flow = load_flow_from_entrypoint(str(ROOT / path) + ":" + func)
        assert flow.name == name, (name, flow.name)
        for sched in dep.get("schedules", []):
            from prefect.client.schemas.schedules import CronSchedule

            CronSchedule(cron=sched["cron"], timezone=sched["timezone"])  # raises on a bad cron or zone
            assert sched["timezone"] == "Asia/Tokyo"
    # flows/verify.py comes with the storage work (kiroku verify); everything else is here
    assert missing == [], missing


# --------------------------------------------------------------------------- systemd
def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(path, encoding="utf-8")
    return parser


def test_systemd_units_use_real_options() -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {"kiroku-worker@.service", "kiroku-prefect-server.service"}
    for unit in units:
        cfg = _unit(unit)
        assert cfg["Install"]["WantedBy"] == "multi-user.target"
        service = cfg["Service"]
        assert service["User"] == "kiroku" and service["Restart"] == "always", unit.name
        argv = shlex.split(service["ExecStart"])
        assert argv[0].startswith("/opt/kiroku/.venv/bin/"), argv
        check_command(argv)
        for a in argv:  # ${VAR} must come from the EnvironmentFile, which the comments document
            for var in re.findall(r"\$\{(\w+)\}", a):
                check_env_names({var})
    worker = shlex.split(_unit(DEPLOY / "systemd" / "kiroku-worker@.service")["Service"]["ExecStart"])
    assert worker[1:4] == ["worker", "--pool", "kiroku"]


def test_env_examples_name_only_real_settings() -> None:
    for example in ("worker.env.example", "server.env.example"):
        lines = [ln for ln in (DEPLOY / example).read_text(encoding="utf-8").splitlines()
                 if ln.strip() and not ln.startswith("#")]
        pairs = dict(ln.split("=", 1) for ln in lines)
        if example == "worker.env.example":
            check_env_names(set(pairs))
            assert pairs["AWS_SECRET_ACCESS_KEY"] == "" and pairs["PREFECT_API_AUTH_STRING"] == ""  # no secrets shipped
        else:
            assert all(v == "" for k, v in pairs.items() if "PASSWORD" in k or "AUTH" in k)


def test_worker_command_starts_a_prefect_process_worker() -> None:
    from kiroku.scaleout import pool_worker_command

    argv = pool_worker_command("kiroku", name="town-hall-1", limit=2)
    check_command(argv)
    assert argv[argv.index("--type") + 1] == "process" and argv[argv.index("--limit") + 1] == "2"


# --------------------------------------------------------------------------- compose
def test_compose_file_is_consistent() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = doc["services"]
    assert {"postgres", "prefect-server", "redis"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
            # a service that is always on must not wait for one that only runs in a profile
            if not svc.get("profiles"):
                assert not services[dep].get("profiles"), (name, dep)
        env = svc.get("environment", {})
        check_env_names({k for k in env if k not in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")})
        command = svc.get("command")
        if command and command[0] == "prefect":
            check_command([str(BIN / "prefect"), *command[1:]])
        for port in svc.get("ports", []):
            assert port.startswith("${KIROKU_"), f"{name}: publish on a configured address, not every interface"
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_SERVER_UI_API_URL"].startswith("${KIROKU_PREFECT_PUBLIC_URL")
    assert "postgresql+asyncpg://" in server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert "PREFECT_SERVER_API_AUTH_STRING" in server_env
    for name in ("prefect-api-2", "prefect-services"):  # several server processes: Redis as broker
        assert services[name]["environment"]["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
        assert "redis" in services[name]["depends_on"]
    # every ${VAR} the compose file needs is in server.env.example
    needed = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text(encoding="utf-8")))
    example = {ln.split("=", 1)[0] for ln in (DEPLOY / "server.env.example").read_text().splitlines()
               if "=" in ln and not ln.startswith("#")}
    assert needed <= example, needed - example


def test_the_servers_of_a_scale_out_are_tuned_like_the_embedded_one() -> None:
    """The task-run recorder's batching (kiroku/services.py) is the same in compose and systemd,
    and every name is a real Prefect setting."""
    from kiroku.services import PREFECT_SERVER_TUNING

    check_env_names(set(PREFECT_SERVER_TUNING))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    env = compose["services"]["prefect-server"]["environment"]
    assert {k: str(env.get(k)) for k in PREFECT_SERVER_TUNING} == PREFECT_SERVER_TUNING
    unit = (DEPLOY / "systemd" / "kiroku-prefect-server.service").read_text(encoding="utf-8")
    for name, value in PREFECT_SERVER_TUNING.items():
        assert f"Environment={name}={value}\n" in unit, name


@pytest.mark.skipif(not Path("/usr/bin/systemd-analyze").exists(), reason="systemd-analyze not installed")
def test_systemd_analyze_finds_no_syntax_errors(tmp_path: Path) -> None:
    """systemd's own parser: unknown keys and bad sections are errors; missing files here are expected."""
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text(encoding="utf-8")
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True,
                              text=True, timeout=60)
        out = done.stderr + done.stdout
        bad = [ln for ln in out.splitlines() if "Unknown key" in ln or "Unknown section" in ln
               or "Invalid" in ln or "bad unit file setting" in ln.lower()]
        assert not bad, f"{unit.name}: {bad}\n{text[:200]}"


def test_the_warm_worker_is_prefects_process_worker_running_the_deployments_own_flows() -> None:
    """`kiroku worker --pool` claims runs as Prefect's process worker does (same pool type) and
    runs each deployment's flow from kiroku's own modules, so runs share the warm readers."""
    import flows.ingest
    import flows.verify
    from prefect.workers.process import ProcessWorker

    from kiroku.scaleout import flow_for_entrypoint, warm_worker_class

    worker = warm_worker_class()
    assert issubclass(worker, ProcessWorker) and worker.type == "process"
    deployments = yaml.safe_load((DEPLOY / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    entry = {d["name"]: d["entrypoint"] for d in deployments}
    assert flow_for_entrypoint(entry["ingest-document"]) is flows.ingest.ingest_document
    assert flow_for_entrypoint(entry["ingest-batch"]) is flows.ingest.ingest_batch
    assert flow_for_entrypoint(entry["verify-archive"]) is flows.verify.verify_archive_flow
