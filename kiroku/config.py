"""kiroku's settings: defaults for the embedded set-up, overridden by kiroku.toml and the environment.

With nothing configured kiroku runs everything itself under ./var (or $KIROKU_HOME):
SeaweedFS for S3, a Prefect server, a SQLite catalog. Setting an S3 endpoint (or a
Prefect API URL) switches that part to an external service and kiroku starts nothing
for it. Credentials come only from the standard AWS variables or the generated file
under var/, never from kiroku.toml, so the file can be shared without leaking them.
"""

from __future__ import annotations

import os
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
    weed_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_WEED_PORTS))
    ocr_engine: str = "rapidocr"  # measured best (bench/ocr_eval.py); tesseract and auto on request
    ocr_concurrency: int = 0  # 0: one per core
    # the municipality's records rules (data files default to those in schemas/)
    retention_start_rule: str = "fiscal"  # 起算日: fiscal (4月1日 after), calendar (1月1日 after) or completion
    retention_schedule: str | None = None
    classification_policy: str | None = None
    document_types: str | None = None
    max_image_pixels: int = 200_000_000
    default_dpi: int = 300

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
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

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


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from defaults < kiroku.toml < environment < explicit overrides."""
    home = Path(os.environ.get("KIROKU_HOME", "var"))
    inbox = Path(os.environ.get("KIROKU_INBOX", "inbox"))
    values: dict[str, object] = {}

    path = config_file or Path(os.environ.get("KIROKU_CONFIG", "kiroku.toml"))
    if path.exists():
        with path.open("rb") as f:
            data = tomllib.load(f)
        for section in ("storage", "prefect", "catalog", "ocr", "retention", "kiroku"):
            values.update(data.get(section, {}))
        values.update({k: v for k, v in data.items() if not isinstance(v, dict)})
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
    }
    for env, key in env_map.items():
        if os.environ.get(env):
            values[key] = os.environ[env]
    if (port := _env_int("KIROKU_PREFECT_PORT")) is not None:
        values["prefect_port"] = port
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


def with_ports(settings: Settings, weed_ports: dict[str, int], prefect_port: int | None = None) -> Settings:
    """A copy using other ports (tests pick free ones so they can run beside `make run`)."""
    return replace(settings, weed_ports={**settings.weed_ports, **weed_ports},
                   prefect_port=prefect_port or settings.prefect_port)
