"""The operators' Prefect UI from another office PC: listen address, API URL, basic auth, run list.

A real embedded Prefect server is started on a non-default port, on this machine's
LAN address when it has one (else loopback), with basic auth on. Headless Chromium
(Debian's chromium + chromium-driver, started by tests/browser.py) logs in through the
UI's own login page and must show the flow runs, not an error. The screenshot is kept
under the test's tmp_path, or in $KIROKU_SCREENSHOT_DIR when set, for a human to look at.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import browser

RUN_NAMES = ["総務課/ui-check-ok.png", "税務課/ui-check-failed.png"]


def lan_address() -> str:
    """This machine's address on its default route (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # TEST-NET-1: only picks the route
            addr = s.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return addr if not addr.startswith("127.") else "127.0.0.1"


def _get(url: str, auth: str | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - test server
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def lan_prefect(tmp_path_factory: pytest.TempPathFactory):
    from kiroku import services

    host = lan_address()
    settings = services.test_settings(tmp_path_factory.mktemp("ui"), prefect_host=host, prefect_auth=True)
    assert settings.prefect_port != 4200
    services.up(settings, s3=False)
    try:
        yield settings
    finally:
        services.down(settings, s3=False)


def test_settings_follow_host_and_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiroku.config import load_settings
    from kiroku.services import prefect_command, prefect_env

    toml = tmp_path / "kiroku.toml"
    toml.write_text('[prefect]\nhost = "192.168.10.5"\nport = 4321\n', encoding="utf-8")
    settings = load_settings(toml, home=tmp_path / "var")
    assert settings.prefect_host == "192.168.10.5" and settings.prefect_port == 4321
    assert settings.prefect_auth_enabled  # beyond loopback: basic auth by default
    env = prefect_env(settings)
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://192.168.10.5:4321/api"
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == settings.prefect_auth_file.read_text().strip()
    assert settings.prefect_auth_file.stat().st_mode & 0o777 == 0o600
    argv = prefect_command(settings)
    assert argv[argv.index("--host") + 1] == "192.168.10.5" and argv[argv.index("--port") + 1] == "4321"

    monkeypatch.setenv("KIROKU_PREFECT_HOST", "0.0.0.0")
    monkeypatch.setenv("KIROKU_PREFECT_PUBLIC_URL", "http://kiroku-server.city.lan:4321")
    settings = load_settings(toml, home=tmp_path / "var")
    assert prefect_env(settings)["PREFECT_SERVER_UI_API_URL"] == "http://kiroku-server.city.lan:4321/api"
    assert settings.prefect_url == "http://127.0.0.1:4321/api"  # this PC's own commands use loopback

    monkeypatch.delenv("KIROKU_PREFECT_HOST")
    monkeypatch.delenv("KIROKU_PREFECT_PUBLIC_URL")
    local = load_settings(tmp_path / "none.toml", home=tmp_path / "var2")
    assert local.prefect_host == "127.0.0.1" and not local.prefect_auth_enabled
    assert "PREFECT_SERVER_API_AUTH_STRING" not in prefect_env(local)


@pytest.mark.slow
def test_server_listens_where_configured_and_refuses_without_credentials(lan_prefect) -> None:
    from kiroku import services

    settings = lan_prefect
    pid = services.service_pid(settings, services.PREFECT)
    assert pid is not None
    deadline = time.monotonic() + 10  # uvicorn may run in a child of the prefect CLI
    found: set[tuple[str, int]] = set()
    while time.monotonic() < deadline and (settings.prefect_host, settings.prefect_port) not in found:
        procs = [pid] + [int(p) for p in subprocess.run(["pgrep", "-g", str(pid)], capture_output=True,
                                                       text=True).stdout.split()]
        found = {s for p in procs for s in _sockets(p)}
        time.sleep(0.5)
    assert (settings.prefect_host, settings.prefect_port) in found, found
    api = f"http://{settings.prefect_host}:{settings.prefect_port}/api"
    assert _get(f"{api}/health")[0] == 200  # probes stay open
    assert _get(f"{api}/flow_runs/filter", data=b"{}")[0] == 401
    assert _get(f"{api}/flow_runs/filter", auth="kiroku:wrong", data=b"{}")[0] == 401
    auth = settings.prefect_auth_file.read_text().strip()
    assert _get(f"{api}/flow_runs/filter", auth=auth, data=b"{}")[0] == 200
    ui = json.loads(_get(f"http://{settings.prefect_host}:{settings.prefect_port}/ui-settings")[1])
    assert ui["api_url"] == api and ui["auth"] == "BASIC"
    log = services.log_file(settings, services.PREFECT).read_text(errors="replace")
    assert auth.split(":", 1)[1] not in log  # never logged


def _sockets(pid: int) -> set[tuple[str, int]]:
    from kiroku.services import listening_sockets

    try:
        return set(listening_sockets(pid))
    except OSError:
        return set()


def _make_runs(settings) -> None:  # noqa: ANN001
    """Two real flow runs (one completed, one failed) against the server, from a client process."""
    script = textwrap.dedent(f"""
        from prefect import flow
        @flow(name="ingest-document", flow_run_name="{{name}}")
        def ingest_document(name: str, fail: bool = False):
            if fail:
                raise ValueError("読めないスキャン (test)")
            return name
        ingest_document({RUN_NAMES[0]!r})
        try:
            ingest_document({RUN_NAMES[1]!r}, fail=True)
        except ValueError:
            pass
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_API_URL=f"http://{settings.prefect_host}:{settings.prefect_port}/api",
               PREFECT_API_AUTH_STRING=settings.prefect_auth_file.read_text().strip(),
               PREFECT_HOME=str(settings.prefect_home / "client"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not browser.available(), reason=browser.NOT_INSTALLED)
def test_run_list_in_headless_chromium_with_basic_auth(lan_prefect, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    settings = lan_prefect
    _make_runs(settings)
    auth = settings.prefect_auth_file.read_text().strip()
    shot = browser.screenshot_dir(tmp_path) / "prefect-runs.png"
    with browser.chromium(width=1400, height=1300) as driver:
        base = f"http://{settings.prefect_host}:{settings.prefect_port}"
        driver.get(f"{base}/runs")
        password = browser.wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"),
                                      timeout=60, message="Prefect UI showed no login form")[0]
        password.send_keys(auth + Keys.ENTER)
        # the UI keeps the credential and leaves its login form: wait for the form to go, not a fixed time
        browser.wait_until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "input[type=password]"),
                           timeout=60, message="Prefect UI kept its login form")
        driver.get(f"{base}/runs")

        def shows_runs(d) -> bool:  # noqa: ANN001
            body = d.find_element(By.TAG_NAME, "body").text
            return all(name in body for name in RUN_NAMES)

        try:
            browser.wait_until(driver, shows_runs, timeout=60, message="the run list did not show both runs")
        finally:
            driver.save_screenshot(str(shot))
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Authentication failed" not in body and "Can't connect" not in body
        assert "Failed" in body and "Completed" in body
        assert driver.current_url.startswith(base)
    assert shot.stat().st_size > 10_000
