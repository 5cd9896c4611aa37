"""kiroku/services.py: real `weed mini` and Prefect server processes, supervised."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kiroku import services
from kiroku.services import (
    ADMIN_GRPC_OFFSET,
    PREFECT,
    WEED,
    ServiceError,
    free_ports,
    listening_sockets,
    port_is_free,
    test_settings,
)

REPO = Path(__file__).resolve().parents[1]


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


# ------------------------------------------------------------------ helpers
def test_free_ports_and_test_settings_do_not_collide(tmp_path):
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(port_is_free(p) for p in ports)
    s = test_settings(tmp_path)
    used = [p for p in s.weed_ports.values() if p] + [s.prefect_port]
    assert len(set(used)) == len(used)
    assert s.weed_ports["admin.port.grpc"] == s.weed_ports["admin.port"] + ADMIN_GRPC_OFFSET
    assert s.weed_ports["s3.port.iceberg"] == 0 and s.weed_ports["s3.port.lance"] == 0
    assert s.home == tmp_path / "var" and s.embedded_s3 and s.prefect_api_url is None


def test_listening_sockets_reads_proc():
    # The parser that the loopback check relies on must see a socket we know about.
    with socket.socket() as any_if, socket.socket() as lo:
        any_if.bind(("0.0.0.0", 0))
        any_if.listen()
        lo.bind(("127.0.0.1", 0))
        lo.listen()
        found = set(listening_sockets(os.getpid()))
        assert ("0.0.0.0", any_if.getsockname()[1]) in found
        assert ("127.0.0.1", lo.getsockname()[1]) in found


# ------------------------------------------------------------------ the session's weed mini
def test_weed_listens_only_on_loopback(seaweed):
    sockets = listening_sockets(seaweed.pid)
    assert sockets, "weed mini listens on nothing?"
    assert {addr for addr, _ in sockets} == {"127.0.0.1"}, sockets
    ports = {port for _, port in sockets}
    configured = {p for flag, p in seaweed.settings.weed_ports.items() if p and flag != "webdav.port"}
    # Every port it opens is one we configured (nothing on a default like 8181/9101/7333)...
    assert ports <= configured, ports - configured
    # ...and the S3, filer, master and volume servers are among them.
    for flag in ("s3.port", "filer.port", "master.port", "volume.port"):
        assert seaweed.settings.weed_ports[flag] in ports
    assert seaweed.settings.weed_ports["webdav.port"] not in ports  # WebDAV disabled


def test_weed_runs_without_telemetry_or_autocreate(seaweed):
    argv = _cmdline(seaweed.pid)
    assert Path(argv[0]).name == "weed" and argv[1] == "mini"
    for flag in ("-master.telemetry=false", "-ip.bind=127.0.0.1", "-webdav=false", "-admin.ui=false",
                 "-s3.autoCreateBucket=false", "-disableHttp", f"-dir={seaweed.settings.weed_dir}"):
        assert flag in argv
    # A put into a bucket that does not exist must not create an unlocked one.
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as exc:
        seaweed.client().put_object(Bucket="kiroku-auto-created", Key="x", Body=b"x")
    assert exc.value.response["Error"]["Code"] == "NoSuchBucket"


def _http(method: str, url: str) -> int:
    req = urllib.request.Request(url, method=method, headers={"Origin": "http://evil.example"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_weed_http_back_doors_are_closed(seaweed, archive, key_prefix):
    """Nothing but signed S3 can remove a locked object: the unauthenticated HTTP APIs are shut."""
    import datetime as dt

    stored = archive.put_verified(key_prefix + "document.pdf", b"%PDF back doors", content_type="application/pdf",
                                  retain_until=dt.date.today() + dt.timedelta(days=30))
    ports, bucket = seaweed.settings.weed_ports, archive.bucket
    attempts = {
        # master: a plain GET that drops the bucket's volumes (a web page could send it via <img>)
        "master /col/delete": ("GET", f"http://127.0.0.1:{ports['master.port']}/col/delete?collection={bucket}"),
        # filer: deletes files, including locked versions, without any S3 check
        "filer DELETE": ("DELETE", f"http://127.0.0.1:{ports['filer.port']}/buckets/{bucket}/?recursive=true"),
        "filer GET": ("GET", f"http://127.0.0.1:{ports['filer.port']}/buckets/{bucket}/{stored.key}.versions/"),
        # volume server: deletes a needle by file id
        "volume DELETE": ("DELETE", f"http://127.0.0.1:{ports['volume.port']}/1,01637037d6"),
    }
    codes = {name: _http(method, url) for name, (method, url) in attempts.items()}
    assert all(code in (401, 403, 404, 405) for code in codes.values()), codes
    assert archive.get_verified(stored.key, stored.version_id) == b"%PDF back doors"


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")  # + empty SETTINGS


def _grpc_answer(port: int, tls_dir: Path | None, client_cert: bool) -> bytes:
    """First bytes a gRPC port sends back to an HTTP/2 preface (plain TCP if tls_dir is None)."""
    import ssl

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if tls_dir is None:
            raw.sendall(_H2_PREFACE)
            return raw.recv(64)
        ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["h2"])
        if client_cert:
            ctx.load_cert_chain(str(tls_dir / "weed.pem"), str(tls_dir / "weed.key"))
        with ctx.wrap_socket(raw) as conn:
            conn.sendall(_H2_PREFACE)
            return conn.recv(64)


def test_weed_grpc_ports_require_a_client_certificate(seaweed):
    """Without mTLS any local program (`weed shell` fs.rm...) could delete locked versions via gRPC."""
    import ssl

    tls_dir = seaweed.settings.weed_dir / services.TLS_DIR
    grpc_ports = {flag: p for flag, p in seaweed.settings.weed_ports.items() if flag.endswith(".grpc") and p}
    assert {"master.port.grpc", "volume.port.grpc", "filer.port.grpc", "s3.port.grpc"} <= set(grpc_ports)
    for flag, port in grpc_ports.items():
        assert _grpc_answer(port, None, False) == b"", flag  # plain HTTP/2: hung up on
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            _grpc_answer(port, tls_dir, client_cert=False)
        # Control: with weed's own certificate the same port talks HTTP/2 (a SETTINGS frame).
        answer = _grpc_answer(port, tls_dir, client_cert=True)
        assert len(answer) >= 9 and answer[3] == 0x04, (flag, answer)
    for name in ("ca.pem", "weed.pem", "weed.key"):
        assert stat.S_IMODE((tls_dir / name).stat().st_mode) == 0o600


def test_s3_identity_is_private_and_never_logged(seaweed):
    path = services.identity_path(seaweed.settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(seaweed.settings.weed_dir.stat().st_mode) == 0o700
    ident = json.loads(path.read_text())["identities"][0]
    secret = ident["credentials"][0]["secretKey"]
    assert seaweed.credentials.secret_access_key == secret and len(secret) >= 40
    assert secret not in repr(seaweed.credentials)
    assert secret not in services.log_file(seaweed.settings, WEED).read_text(errors="replace")
    assert services.ensure_s3_identity(seaweed.settings) == seaweed.credentials  # generated once
    security = seaweed.settings.weed_dir / services.SECURITY_FILE
    assert stat.S_IMODE(security.stat().st_mode) == 0o600 and "[jwt.filer_signing]" in security.read_text()


def test_status_of_running_weed(seaweed):
    by_name = {st.name: st for st in services.status(seaweed.settings)}
    weed = by_name[WEED]
    assert weed.running and weed.answering and weed.pid == seaweed.pid
    assert weed.url == seaweed.settings.s3_url
    assert not by_name[PREFECT].running  # the session fixture starts weed only


# ------------------------------------------------------------------ failures are explained
def test_port_in_use_is_refused_clearly(tmp_path):
    s = test_settings(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", s.weed_ports["filer.port"]))
        squatter.listen()
        with pytest.raises(ServiceError, match="filer.port"):
            services.up(s, prefect=False)
    assert services.service_pid(s, WEED) is None


def test_crash_at_start_shows_log_tail(tmp_path):
    s = test_settings(tmp_path)
    s = dataclasses.replace(s, weed_ports={**s.weed_ports, "no.such.flag": free_ports(1)[0]})
    with pytest.raises(ServiceError, match="flag provided but not defined"):
        services.up(s, prefect=False, timeout=30)
    assert services.service_pid(s, WEED) is None


# ------------------------------------------------------------------ whole life cycle (slow)
@pytest.mark.slow
def test_up_down_status_are_idempotent_with_prefect(tmp_path):
    s = test_settings(tmp_path)
    try:
        t0 = time.monotonic()
        first = {st.name: st for st in services.up(s)}
        startup = time.monotonic() - t0
        assert set(first) == {WEED, PREFECT}, first
        assert all(st.running and st.answering and st.started for st in first.values())

        again = {st.name: st for st in services.up(s)}  # nothing new is started
        assert {n: st.pid for n, st in again.items()} == {n: st.pid for n, st in first.items()}
        assert not any(st.started for st in again.values())

        status = {st.name: st for st in services.status(s)}
        assert all(st.running and st.answering for st in status.values())
        assert status[PREFECT].url == f"http://127.0.0.1:{s.prefect_port}/api"
        # The Prefect server keeps its state under <home>/prefect and listens on loopback only.
        assert (s.prefect_home / "prefect.db").is_file()
        prefect_sockets = listening_sockets(first[PREFECT].pid)
        assert ("127.0.0.1", s.prefect_port) in prefect_sockets
        assert {a for a, _ in prefect_sockets} == {"127.0.0.1"}

        services.archive_store(s).ensure_bucket()  # some data, to find again after a restart
        pids = [st.pid for st in first.values()]
    finally:
        services.down(s)
    services.down(s)  # again: nothing to do, no error
    after = {st.name: st for st in services.status(s)}
    assert not any(st.running for st in after.values())
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not list(s.run_dir.glob("*.pid"))
    assert port_is_free(s.weed_ports["s3.port"]) and port_is_free(s.prefect_port)
    print(f"\nweed + prefect up in {startup:.1f} s")

    # Restarting reuses the data: the bucket made above is still there.
    with services.running_services(s, prefect=False) as started:
        assert [st.name for st in started] == [WEED]
        store = services.archive_store(s)
        store.check_object_lock()
        weed_pid = started[0].pid
    assert not Path(f"/proc/{weed_pid}").exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_children(tmp_path):
    """`make run` in a terminal: SIGINT to the foreground process stops weed too."""
    s = test_settings(tmp_path)
    script = (
        "import sys, time, json\n"
        "from pathlib import Path\n"
        "from kiroku.config import Settings\n"
        "from kiroku.services import running_services\n"
        "a = json.loads(sys.argv[1])\n"
        "s = Settings(home=Path(a['home']), inbox=Path(a['inbox']), weed_ports=a['ports'])\n"
        "with running_services(s, prefect=False):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
    )
    arg = json.dumps({"home": str(s.home), "inbox": str(s.inbox), "ports": s.weed_ports})
    with subprocess.Popen([sys.executable, "-c", script, arg], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            weed_pid = services.service_pid(s, WEED)
            assert weed_pid is not None and Path(f"/proc/{weed_pid}").exists()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            stderr = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            services.down(s)
    assert proc.returncode != 0  # KeyboardInterrupt propagated after cleanup
    assert "KeyboardInterrupt" in stderr
    assert not Path(f"/proc/{weed_pid}").exists()
    assert services.service_pid(s, WEED) is None
