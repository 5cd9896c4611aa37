"""The threads in which `make run`'s worker executes flow runs, against a real Prefect server."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


def _heartbeat_thread_alive() -> bool:
    """Whether Prefect's flow-run heartbeat thread (flow_engine._send_heartbeats) is running."""
    for thread in threading.enumerate():
        args = getattr(thread, "_args", ()) or ()
        if args and getattr(args[0], "__qualname__", "").endswith("heartbeat_loop"):
            return True
    return False


@pytest.mark.slow
def test_flow_runs_in_the_workers_threads_start_no_heartbeat_thread(tmp_path: Path) -> None:
    """A heartbeat thread per run is joined for up to a second at the run's end; the watcher's
    ledger finds dead runs itself, so `make run`'s run threads start none. The same flow in a
    plain thread does start one (Prefect's default), which shows the check sees it."""
    from prefect import flow

    from flows.ingest import run_here_without_heartbeats
    from kiroku import services

    settings = services.test_settings(tmp_path / "server")
    services.up(settings, s3=False)
    old = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ.update(PREFECT_API_URL=settings.prefect_url, PREFECT_HOME=str(tmp_path / "client"))

    @flow(name="heartbeat-check")
    def look() -> bool:
        return _heartbeat_thread_alive()

    try:
        with ThreadPoolExecutor(1, initializer=run_here_without_heartbeats) as pool:
            in_worker_threads = [pool.submit(look).result() for _ in range(2)]  # the second: a reused thread
        with ThreadPoolExecutor(1) as pool:
            in_plain_thread = pool.submit(look).result()
    finally:
        services.down(settings, s3=False)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert in_worker_threads == [False, False]
    assert in_plain_thread is True
