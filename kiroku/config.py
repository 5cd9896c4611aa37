"""kiroku's settings: defaults for the embedded set-up, overridden by kiroku.toml and the environment.

With nothing configured kiroku runs everything itself under ./var (or $KIROKU_HOME):
SeaweedFS for S3, a Prefect server, a SQLite catalog. Setting an S3 endpoint (or a
Prefect API URL) switches that part to an external service and kiroku starts nothing
for it. Credentials come only from the standard AWS variables or the generated file
under var/, never from kiroku.toml, so the file can be shared without leaking them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

# SeaweedFS `weed mini` opens about ten ports; each is configurable so that tests can
# run beside a live `make run`. Keys are the `weed mini` flag names.
DEFAULT_WEED_PORTS: dict[str, int] = {
    "s3.port": 8333,
    "s3.port.grpc": 18333,
    "master.port": 9333,
    "master.port.grpc": 19333,
    "volume.port": 9340,
    "volume.port.grpc": 19340,
    "filer.port": 8888,
    "filer.port.grpc": 18888,
    "webdav.port": 7333,
    "admin.port": 23646,
    "admin.port.grpc": 33646,
    "s3.port.iceberg": 0,
    "s3.port.lance": 0,
}


@dataclass(frozen=True)
class Settings:
    home: Path
    inbox: Path
    bucket: str = "kiroku-archive"
    region: str = "ap-northeast-1"
    s3_endpoint_url: str | None = None  # None: the embedded SeaweedFS
    prefect_api_url: str | None = None  # None: the embedded Prefect server (if running) or ephemeral
    catalog_url: str | None = None  # None: SQLite under home
    # object-lock (the bucket must lock) or tamper-evident (a bucket without Object Lock:
    # versioning + SHA-256 in record.json + `kiroku verify` on a schedule); [storage] integrity
    integrity: str = "object-lock"
    prefect_port: int = 4200
    # The embedded Prefect server's listen address. 127.0.0.1 keeps it on this PC; the
    # PC's LAN address (or 0.0.0.0) lets operators open the UI from another office PC.
    prefect_host: str = "127.0.0.1"
    # The address other PCs use to reach it (http://host:port), when it differs from
    # prefect_host (behind a name, or prefect_host = 0.0.0.0). The UI's API URL follows it.
    prefect_public_url: str | None = None
    # Basic auth on the Prefect API and UI (credentials generated under var/prefect,
    # mode 0600). None: on whenever the server listens beyond loopback.
    prefect_auth: bool | None = None
    # Name of the Prefect global concurrency limit that caps OCR pages across every
    # worker machine (deploy/prefect.yaml creates it). None: only the per-process slots.
    ocr_global_limit: str | None = None
    # Prefect webhook block notified of failed and crashed runs (kiroku notify setup). Off by default.
    notify_webhook_url: str | None = None
    weed_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_WEED_PORTS))
    ocr_engine: str = "rapidocr"  # measured best (bench/ocr_eval.py); tesseract and auto on request
    ocr_concurrency: int = 0  # 0: one per core
    # warm reader processes (kiroku/readers.py): a page slower than this is failed and its reader
    # replaced; a reader is replaced after this many jobs or above this resident memory
    reader_time_limit: float = 120.0  # seconds per page, plus reader_time_limit_per_mpx per megapixel
    reader_time_limit_per_mpx: float = 4.0
    reader_max_jobs: int = 200
    reader_max_rss_mb: float = 1500.0
    # the ingest worker of `make run` hands over no more scans above this resident memory,
    # finishes those it holds and is started again (Prefect's engine keeps a little of every
    # run: bench/watch_throughput.py --soak measured +25-55 MB per document)
    worker_max_rss_mb: float = 2000.0
    # the municipality's records rules (data files default to those in schemas/)
    retention_start_rule: str = "fiscal"  # 起算日: fiscal (4月1日 after), calendar (1月1日 after) or completion
    retention_schedule: str | None = None
    classification_policy: str | None = None
    document_types: str | None = None
    max_image_pixels: int = 200_000_000
    default_dpi: int = 300
    # the archivists' web app (`kiroku serve`; kiroku.toml [web] host / port)
    web_host: str = "127.0.0.1"
    web_port: int = 8080

    # --- derived locations -------------------------------------------------
    @property
    def extract_options(self) -> dict[str, str | None]:
        """How this municipality extracts and retains: passed to processors.document.extract_metadata."""
        return {"start_rule": self.retention_start_rule, "schedule": self.retention_schedule,
                "policy": self.classification_policy, "types": self.document_types}

    @property
    def embedded_s3(self) -> bool:
        return self.s3_endpoint_url is None

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint_url or f"http://127.0.0.1:{self.weed_ports['s3.port']}"

    @property
    def prefect_url(self) -> str:
        """The API URL kiroku's own commands on this PC use."""
        return self.prefect_api_url or f"http://{self.prefect_client_host}:{self.prefect_port}/api"

    @property
    def prefect_client_host(self) -> str:
        """Where a client on this PC reaches the embedded server (loopback for a wildcard bind)."""
        return "127.0.0.1" if self.prefect_host in ("0.0.0.0", "::", "") else self.prefect_host

    @property
    def prefect_lan_exposed(self) -> bool:
        return not (self.prefect_host == "localhost" or self.prefect_host.startswith("127.")
                    or self.prefect_host == "::1")

    @property
    def prefect_auth_enabled(self) -> bool:
        return self.prefect_lan_exposed if self.prefect_auth is None else bool(self.prefect_auth)

    @property
    def prefect_ui_url(self) -> str:
        """The origin a browser uses for the UI: the public URL, else the listen address."""
        if self.prefect_public_url:
            return self.prefect_public_url.rstrip("/").removesuffix("/api")
        return lan_url(self.prefect_host, self.prefect_port)

    @property
    def web_url(self) -> str:
        """The archivists' web app as a browser reaches it: the LAN address when it listens beyond loopback."""
        return lan_url(self.web_host, self.web_port) + "/"

    @property
    def prefect_auth_file(self) -> Path:
        """user:password for Prefect's basic auth (mode 0600); never printed or logged."""
        return self.prefect_home / "api-auth"

    @property
    def catalog(self) -> str:
        return self.catalog_url or f"sqlite:///{(self.home / 'catalog.db').resolve()}"

    @property
    def done_dir(self) -> Path:
        return self.home / "done"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def run_dir(self) -> Path:
        """pid files and logs of the services kiroku supervises."""
        return self.home / "run"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def weed_dir(self) -> Path:
        return self.home / "seaweedfs"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


HOME_RECORD_ENV = "KIROKU_HOME_RECORD"


def home_record() -> Path:
    """The file, inside the virtualenv, where `make install` records the installation's var/.

    Every command then finds the same var/ from any folder: `kiroku search` run from
    another folder once opened an empty catalog of its own and said "no records".
    """
    return Path(os.environ.get(HOME_RECORD_ENV) or Path(sys.prefix) / "kiroku-home")


def record_home(home: Path) -> Path:
    """Record `home` as this installation's data folder (called by `make install`)."""
    path = home_record()
    path.write_text(str(home.resolve()) + "\n", encoding="utf-8")
    return path


def resolve_home() -> tuple[Path, str]:
    """(data folder, where that came from): $KIROKU_HOME, else the folder recorded at install,
    else ./var of the current folder."""
    if os.environ.get("KIROKU_HOME"):
        return Path(os.environ["KIROKU_HOME"]).resolve(), "KIROKU_HOME"
    with contextlib.suppress(OSError):
        recorded = home_record().read_text(encoding="utf-8").strip()
        if recorded:
            return Path(recorded), str(home_record())
    return Path("var").resolve(), "the current folder"


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from defaults < kiroku.toml < environment < explicit overrides.

    The data folder is resolved once (resolve_home); the inbox and kiroku.toml default
    to the folder that holds it (the installation folder), so they too are the same
    from wherever a command is run. A kiroku.toml in the current folder still wins.
    """
    home, _ = resolve_home()
    base = home.parent
    inbox = Path(os.environ.get("KIROKU_INBOX") or base / "inbox")
    values: dict[str, object] = {}

    local = Path("kiroku.toml")
    path = config_file or Path(os.environ.get("KIROKU_CONFIG") or (local if local.exists() else base / "kiroku.toml"))
    if path.exists():
        with path.open("rb") as f:
            data = tomllib.load(f)
        for section in ("storage", "prefect", "catalog", "ocr", "retention", "kiroku"):
            values.update(data.get(section, {}))
        # [prefect] host / port / public_url / auth / api_url: short names for the prefect_* settings
        for key, value in data.get("prefect", {}).items():
            if f"prefect_{key}" in Settings.__dataclass_fields__:
                values.pop(key, None)
                values[f"prefect_{key}"] = value
        values.update({k: v for k, v in data.items() if not isinstance(v, dict)})
        values.update({f"web_{k}": v for k, v in data.get("web", {}).items()})
        if "weed_ports" in data:
            values["weed_ports"] = {**DEFAULT_WEED_PORTS, **data["weed_ports"]}

    env_map = {
        "KIROKU_S3_ENDPOINT_URL": "s3_endpoint_url",
        "AWS_ENDPOINT_URL_S3": "s3_endpoint_url",
        "KIROKU_S3_BUCKET": "bucket",
        "AWS_DEFAULT_REGION": "region",
        "KIROKU_S3_REGION": "region",
        "KIROKU_CATALOG_URL": "catalog_url",
        "KIROKU_OCR_ENGINE": "ocr_engine",
        "KIROKU_STORAGE_INTEGRITY": "integrity",
        "PREFECT_API_URL": "prefect_api_url",
        "KIROKU_PREFECT_HOST": "prefect_host",
        "KIROKU_PREFECT_PUBLIC_URL": "prefect_public_url",
        "KIROKU_OCR_GLOBAL_LIMIT": "ocr_global_limit",
        "KIROKU_NOTIFY_WEBHOOK_URL": "notify_webhook_url",
    }
    for env, key in env_map.items():
        if os.environ.get(env):
            values[key] = os.environ[env]
    if os.environ.get("KIROKU_WEB_HOST"):
        values["web_host"] = os.environ["KIROKU_WEB_HOST"]
    if (port := _env_int("KIROKU_WEB_PORT")) is not None:
        values["web_port"] = port
    if (port := _env_int("KIROKU_PREFECT_PORT")) is not None:
        values["prefect_port"] = port
    if os.environ.get("KIROKU_PREFECT_AUTH"):
        values["prefect_auth"] = os.environ["KIROKU_PREFECT_AUTH"].lower() in ("1", "true", "yes", "on")
    if (n := _env_int("KIROKU_OCR_CONCURRENCY")) is not None:
        values["ocr_concurrency"] = n
    if (port := _env_int("KIROKU_S3_PORT")) is not None:
        values.setdefault("weed_ports", dict(DEFAULT_WEED_PORTS))
        values["weed_ports"] = {**values["weed_ports"], "s3.port": port}  # type: ignore[dict-item]

    values.update(overrides)
    home = Path(values.pop("home", home))  # type: ignore[arg-type]
    inbox = Path(values.pop("inbox", inbox))  # type: ignore[arg-type]
    known = set(Settings.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
    return Settings(home=home.resolve(), inbox=inbox.resolve(), **values)  # type: ignore[arg-type]


def missing_home_message(settings: Settings) -> str | None:
    """One line for a command that needs the data folder when it does not exist, else None."""
    if settings.home.is_dir():
        return None
    _, origin = resolve_home()
    return (f"kiroku のデータフォルダ {settings.home} がありません。kiroku を設置したフォルダで "
            f"`make install` を実行するか、KIROKU_HOME を設定してください "
            f"(no kiroku data folder at {settings.home}, taken from {origin}; set KIROKU_HOME)")


if __name__ == "__main__":  # `python -m kiroku.config --record-home DIR` (make install)
    if len(sys.argv) == 3 and sys.argv[1] == "--record-home":
        print(f"kiroku: data folder {Path(sys.argv[2]).resolve()} recorded in {record_home(Path(sys.argv[2]))}")
    else:
        print("usage: python -m kiroku.config --record-home DIR", file=sys.stderr)
        raise SystemExit(2)


def with_ports(settings: Settings, weed_ports: dict[str, int], prefect_port: int | None = None) -> Settings:
    """A copy using other ports (tests pick free ones so they can run beside `make run`)."""
    return replace(settings, weed_ports={**settings.weed_ports, **weed_ports},
                   prefect_port=prefect_port or settings.prefect_port)


def lan_address() -> str:
    """This PC's address on the office LAN (the interface of its default route), else its name.

    A UDP socket "connected" to an outside address sends nothing; it only makes the
    kernel choose the interface, whose address is what other PCs reach.
    """
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere
            address = s.getsockname()[0]
            if address and not address.startswith("0."):
                return address
    except OSError:
        pass
    return socket.getfqdn() or "127.0.0.1"


def lan_url(host: str, port: int) -> str:
    """http://host:port for a listen address: a wildcard (0.0.0.0, ::) is shown as the LAN address."""
    if host in ("0.0.0.0", "::", ""):
        host = lan_address()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def usable_cpu_count() -> int:
    """The cores this process may actually use, not the machine's total.

    A worker pinned with taskset, a systemd unit with CPUAffinity= or a container with
    `--cpus` gets fewer cores than os.cpu_count() reports; sizing the readers and the runs
    in flight by the machine's total would put two readers on one core and make them wait
    on each other (bench/scale_out.py pins one worker per core)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:  # cgroup v2 quota: "max 100000" (none) or "200000 100000" (two cores' worth)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)
