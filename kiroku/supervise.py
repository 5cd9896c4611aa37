"""`make run`: bring up the embedded services, the flow worker and the watcher; Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from kiroku.config import Settings


def _start_worker(settings: Settings) -> subprocess.Popen:
    """The process that serves the ingest deployments; its own process group so Ctrl-C reaches it once."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.run_dir / "worker.log", "ab")  # noqa: SIM115 - owned by the child
    kiroku = Path(sys.executable).with_name("kiroku")
    cmd = [str(kiroku), "worker"] if kiroku.exists() else [sys.executable, "-m", "kiroku.cli", "worker"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ))


def _start_web(settings: Settings) -> subprocess.Popen:
    """`kiroku serve` on the configured host and port (127.0.0.1:8080 unless kiroku.toml [web] says otherwise)."""
    log = open(settings.run_dir / "web.log", "ab")  # noqa: SIM115 - owned by the child
    kiroku = Path(sys.executable).with_name("kiroku")
    cmd = [str(kiroku), "serve"] if kiroku.exists() else [sys.executable, "-m", "kiroku.cli", "serve"]
    cmd += ["--host", settings.web_host, "--port", str(settings.web_port)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ))


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_all(settings: Settings, echo: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C (or SIGTERM); returns the exit code. Stops only what it started."""
    from kiroku import services
    from kiroku.runtime import prepare_prefect

    # Ctrl-C must stop everything even when a parent shell started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    echo("kiroku: starting the embedded services (the first start takes about half a minute)…")
    with services.running_services(settings) as statuses:
        for st in statuses:
            echo(st.describe())
        api = prepare_prefect(settings, require_server=True)
        worker = _start_worker(settings)
        web = _start_web(settings)
        settings.inbox.mkdir(parents=True, exist_ok=True)
        ui = api.removesuffix("/api")
        echo("")
        echo("kiroku is running.")
        echo(f"  Drop scans into   {settings.inbox}/<課名>/   (e.g. {settings.inbox}/総務課/)")
        echo(f"  Watch the flows   {ui}")
        echo(f"  Archivists' web   http://{settings.web_host}:{settings.web_port}/   "
             "(users: .venv/bin/kiroku users add NAME --role 文書管理者 --clearance 2)")
        echo("  Search            .venv/bin/kiroku search 契約      (or: .venv/bin/kiroku search --help)")
        echo(f"  Done / problems   {settings.done_dir}  /  {settings.quarantine_dir}")
        echo("  Ctrl-C stops everything.")
        from flows.watch import watch_inbox

        try:
            watch_inbox(settings, use_deployment=True, stop=threading.Event())
        except KeyboardInterrupt:
            pass
        finally:
            echo("stopping…")
            _stop(web)
            _stop(worker)
    return 0
