"""Where Prefect keeps its state and which server it talks to, decided before Prefect is imported.

Prefect reads its settings when it is first imported, so every kiroku command calls
`prepare_prefect(settings)` first. Its state goes under the project's data directory
(var/prefect), never ~/.prefect, so tests and several installations never share it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from kiroku.config import Settings


def api_healthy(api_url: str, timeout: float = 1.5) -> bool:
    """Whether a Prefect API answers its health check (an open port is not enough)."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200 and json.loads(resp.read() or b"false") is True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def prepare_prefect(settings: Settings, *, require_server: bool = False) -> str | None:
    """Point Prefect at the configured or embedded server, or at ephemeral mode.

    Returns the API URL in use, or None for ephemeral mode (Prefect runs a temporary
    server of its own with its database under var/prefect).
    """
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(settings.prefect_home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # "Task run 'read page 0' - Finished in state Completed()" for every task of every document,
    # each sent to the server and stored (the servers used about 1 CPU second per one-page
    # document in bench/scale_out.py). A failed task still logs (ERROR), and each run's own lines
    # (beginning, archived as ID, finished) stay.
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    if settings.prefect_api_url:
        os.environ["PREFECT_API_URL"] = settings.prefect_api_url
        return settings.prefect_api_url
    url = settings.prefect_url
    from kiroku.services import prefect_is_ours

    if prefect_is_ours(settings):  # never a server this instance did not start (see prefect_is_ours)
        os.environ["PREFECT_API_URL"] = url
        # our server does not turn on Prefect's CSRF protection (services.prefect_env): a client
        # would otherwise ask it for a token, and be refused, before its first write
        os.environ.setdefault("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", "false")
        if settings.prefect_auth_enabled and settings.prefect_auth_file.exists():
            # the embedded server's basic auth; the value is never printed
            os.environ["PREFECT_API_AUTH_STRING"] = settings.prefect_auth_file.read_text(encoding="utf-8").strip()
        return url
    if require_server:
        if api_healthy(url):
            raise RuntimeError(
                f"ポート {settings.prefect_port} の Prefect サーバーはこの kiroku ({settings.home}) が起動したものでは"
                f"ありません (the Prefect server at {url} was not started by this kiroku instance; stop it or set "
                f"another prefect_port in kiroku.toml)")
        raise RuntimeError(f"Prefect サーバーが応答しません (no Prefect server answers at {url}; "
                           f"start it with `kiroku services up`)")
    os.environ.pop("PREFECT_API_URL", None)
    return None


def start_ephemeral_server_once() -> None:
    """In ephemeral mode, start Prefect's temporary server now, from this one thread.

    Prefect starts it lazily on a flow's first API call; when several flows start at
    once in threads (a batch, the watcher) each can start its own, and only one of
    them is stopped at exit: the others live on as orphaned server processes.
    Starting it once up front makes every later call reuse it.
    """
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().start()
