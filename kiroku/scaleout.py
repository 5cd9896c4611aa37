"""kiroku on several machines: a worker machine taking runs from a shared Prefect server's work pool.

The machines share one Prefect server (on PostgreSQL), one S3 bucket with Object Lock
and one PostgreSQL catalog; deploy/prefect.yaml defines the deployments and the
`kiroku` work pool, deploy/compose.yaml and deploy/systemd/ run the pieces. This
module only starts Prefect's own process worker with kiroku's settings: no
home-made scheduler.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from kiroku.config import Settings

SOURCE_DIR = Path(__file__).resolve().parents[1]  # where flows/ is: the deployments' working directory
# Prefect's default is to ask the server for new runs every 10 s; a scan should not wait that long.
DEFAULT_QUERY_SECONDS = "2"


def pool_worker_command(pool: str, *, name: str | None = None, limit: int | None = None) -> list[str]:
    """`prefect worker start` for the kiroku work pool (process type: runs in this machine's venv)."""
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect) if prefect.exists() else (shutil.which("prefect") or "prefect"),
            "worker", "start", "--pool", pool, "--type", "process"]
    if name:
        argv += ["--name", name]
    argv += ["--limit", str(limit or max(1, os.cpu_count() or 1))]
    return argv


def pool_worker_env(settings: Settings) -> dict[str, str]:
    """The worker's environment: the flow runs it starts inherit it (settings, credentials)."""
    env = dict(os.environ)
    env.setdefault("KIROKU_SOURCE", str(SOURCE_DIR))
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", DEFAULT_QUERY_SECONDS)
    env.setdefault("KIROKU_HOME", str(settings.home))
    return env


def run_pool_worker(settings: Settings, pool: str, *, name: str | None = None, limit: int | None = None) -> int:
    """Become the Prefect worker (exec: signals and Ctrl-C reach it directly); returns only on failure."""
    argv = pool_worker_command(pool, name=name, limit=limit)
    try:
        os.execve(argv[0], argv, pool_worker_env(settings))
    except OSError as exc:
        print(f"Prefect ワーカーを起動できません (cannot start the Prefect worker {argv[0]}): {exc}", file=sys.stderr)
        return 1
    return 0  # not reached
