"""The fault-injection suite: does a scan ever get lost, archived twice or stranded?

    python bench/faults.py [--quick] --json FILE [--only NAME,...] [--workdir DIR]

It runs kiroku the way `make run` does (`kiroku run`: SeaweedFS `weed mini`, a Prefect
server, the flow worker and the watcher), on private ports, with KIROKU_HOME on a
small tmpfs of its own, drops files into the inbox, injects faults (kill -9, SIGSTOP,
a locked catalog, a full disk...) and then looks at what really happened.

Why the counting ignores what kiroku says about itself: a records office must be able
to trust the outcome, not the log. So every figure comes from the world:
- archived_once / archived_twice from the bucket itself (list_object_versions and the
  record.json versions read back): one content (SHA-256) is archived twice when it has
  more than one record, a second version of its original or document.pdf, or a
  second record.json version that is not a deliberate correction (a new event such as
  `corrected` or `retention_extended`). A record.json for content that was never
  dropped (a half-written scan read too early) also counts as archived twice;
- quarantined: the file is in var/quarantine with a reason file beside it;
- stuck: the file is still in the inbox after the scenario's grace period, although
  every fault has been lifted (a file in quarantine with no reason counts here too:
  nobody would know what to do with it);
- lost: the content is nowhere: not archived, not in the inbox, not in quarantine
  (a copy in var/done without an archive copy is lost as far as the archive goes).
Each dropped file falls into exactly one of these, so `files` is their sum (records
for content never dropped come on top, in archived_twice).

Every wait has a deadline, and on exit (Ctrl-C included) every process this run
started is killed and the tmpfs is unmounted. Logs stay in the work folder.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COLUMNS = ("archived_once", "archived_twice", "quarantined", "stuck", "lost")
DELIBERATE_EVENTS = {"corrected", "retention_extended", "legal_hold", "disposition_approved", "transferred"}
REASON_SUFFIXES = (b".error.txt",)
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
GRACE_SCALE = 1.0  # --grace-scale: longer waits on a slow machine
READY_LINE = "受付を開始しました".encode()  # kiroku run prints this once the worker takes scans


class HarnessError(RuntimeError):
    """The harness itself could not do its job (a service would not start...)."""


# --------------------------------------------------------------------------- small helpers
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_SHA_CACHE: dict[tuple, str] = {}


def sha256_file(path: Path | bytes) -> str | None:
    """SHA-256 of a file (not following a final symlink's absence), cached by inode, size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def show_name(name: bytes | str) -> str:
    """A file name as a person can read it in the table (Shift_JIS decoded, newlines shown)."""
    if isinstance(name, bytes):
        for enc in ("utf-8", "cp932"):
            try:
                name = name.decode(enc)
                break
            except UnicodeDecodeError:
                continue
        else:
            name = name.decode("utf-8", "backslashreplace")
    name = name.replace("\n", "\\n")
    return name if len(name) <= 60 else name[:28] + "…" + name[-28:]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def cpu_ticks(pid: int) -> int | None:
    f = _stat_fields(pid)
    return None if f is None or f[0] in ("Z", "X") else int(f[11]) + int(f[12])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_of_home(home: Path) -> list[int]:
    """Every live process of this run: its environment names our KIROKU_HOME or its command line our folder."""
    marker = f"KIROKU_HOME={home}".encode()
    out = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in env.split(b"\0") or str(home) in cmdline(pid):
            f = _stat_fields(pid)
            if f is not None and f[0] not in ("Z", "X"):
                out.append(pid)
    return out


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def s3_connected_pids(candidates: list[int], port: int) -> list[int]:
    """Processes among `candidates` holding an established TCP connection to 127.0.0.1:port."""
    out = []
    for pid in candidates:
        inodes = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        except OSError:
            continue
        if not inodes:
            continue
        for table in ("tcp", "tcp6"):
            try:
                lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            hit = False
            for line in lines:
                parts = line.split()
                if parts[3] == "01" and parts[9] in inodes and int(parts[2].split(":")[1], 16) == port:
                    hit = True
                    break
            if hit:
                out.append(pid)
                break
    return out


# --------------------------------------------------------------------------- generated inputs
_counter = 0
_counter_lock = threading.Lock()


def page_png(tag: str, dpi: int = 150) -> bytes:
    """A distinct generated notice page (tests/pagegen.py), small enough to read in a few seconds."""
    from tests.pagegen import DEFAULT_LINES, render_notice

    global _counter
    with _counter_lock:
        _counter += 1
        n = _counter
    lines = list(DEFAULT_LINES[:8])
    lines[0] = f"新総第{n + 1000}号"
    lines[4] = f"試験文書{tag[:12]}について（通知）"
    img = render_notice(lines, dpi=dpi)
    buf = io.BytesIO()
    img.save(buf, format="PNG", dpi=(dpi, dpi))
    return buf.getvalue()


def png_bomb(side: int) -> bytes:
    """A 1-bit PNG declaring side x side pixels: a few hundred KB that would need gigabytes decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        import struct
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    import struct
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    comp = zlib.compressobj(6)
    block = (b"\0" + b"\xff" * ((side + 7) // 8)) * 500
    parts = [comp.compress(block) for _ in range(side // 500)]
    parts.append(comp.flush())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def tiff_bytes(png: bytes) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, format="TIFF", compression="tiff_lzw", dpi=(150, 150))
    return buf.getvalue()


def bad_ifd_tiff() -> bytes:
    """A TIFF header whose first IFD claims 65535 entries and points past the end of the file."""
    import struct
    return b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + b"\x00\x01\x03\x00" * 4


def encrypted_pdf(png: bytes) -> bytes:
    import pikepdf
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, format="PDF", resolution=150)
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(buf.getvalue())) as pdf:
        pdf.save(out, encryption=pikepdf.Encryption(owner="owner", user="user", R=6))
    return out.getvalue()


def tiny_png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (w, h), 255).save(buf, format="PNG", dpi=(300, 300))
    return buf.getvalue()


# --------------------------------------------------------------------------- what was dropped
@dataclasses.dataclass
class Drop:
    """One thing put into the inbox, and what kiroku should do with it."""

    scenario: str
    rel: bytes  # path under inbox/<scenario>/ (bytes: names need not be UTF-8)
    sha: str | None  # content; for a link, its target's content (None when dangling)
    expect: str  # archive | refuse | either
    label: str
    link: bytes | None = None  # readlink() of a symlink drop
    hardlink: bool = False  # a second name of a file outside the inbox
    outside: Path | None = None  # a file outside the inbox that must stay untouched
    outside_sha: str | None = None
    # filled by the audit
    outcome: str = ""
    where: str = ""
    reason: str = ""
    note: str = ""


@dataclasses.dataclass
class Row:
    scenario: str
    title: str
    drops: list[Drop]
    counts: dict[str, int]
    extra_records: list[str]
    notes: list[str]
    seconds: float
    skipped: str | None = None

    def json_row(self) -> dict:
        return {"scenario": self.scenario, "files": len(self.drops), **{k: self.counts[k] for k in COLUMNS}}


# --------------------------------------------------------------------------- the bucket, as it really is
@dataclasses.dataclass
class BucketRecord:
    rid: str
    versions: dict[str, list[str]]  # key -> version ids (newest first)
    records: list[dict]  # parsed record.json versions, oldest first
    original_ok: bool | None = None


class BucketAudit:
    """Reads the bucket with a client of its own (not kiroku's code) and says, per content, what is stored."""

    def __init__(self, endpoint: str, region: str, bucket: str, creds) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region,
            config=Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 2, "mode": "standard"},
                          s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
            **(creds.boto3_kwargs() if creds else {}))
        self._json: dict[tuple[str, str], dict | None] = {}
        self._orig: dict[tuple[str, str], str | None] = {}

    def _get(self, key: str, vid: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key, VersionId=vid)["Body"].read()

    def snapshot(self) -> dict[str, BucketRecord]:
        """Every record in the bucket, keyed by record id (the 16-hex path component of its keys)."""
        from botocore.exceptions import ClientError

        out: dict[str, BucketRecord] = {}
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket)
            entries = [v for page in pages for v in page.get("Versions", [])]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchBucket", "404"):
                return out
            raise
        entries.sort(key=lambda v: v["LastModified"])
        for v in entries:
            parts = v["Key"].split("/")
            rid = next((p for p in parts if _HEX16.match(p)), None)
            if rid is None:
                rid = "(other)"
            rec = out.setdefault(rid, BucketRecord(rid, {}, []))
            rec.versions.setdefault(v["Key"], []).append(v["VersionId"])
        for rec in out.values():
            for key, vids in rec.versions.items():
                if key.endswith("record.json"):
                    for vid in vids:
                        if (key, vid) not in self._json:
                            try:
                                self._json[(key, vid)] = json.loads(self._get(key, vid))
                            except Exception:  # noqa: BLE001 - unreadable record.json: noted as such
                                self._json[(key, vid)] = None
                        rec.records.append(self._json[(key, vid)] or {})
        return out

    def original_sha(self, rec: BucketRecord) -> str | None:
        """SHA-256 of the newest stored original.* (read back and hashed here)."""
        for key, vids in rec.versions.items():
            if "/original" in key:
                k = (key, vids[-1])
                if k not in self._orig:
                    try:
                        self._orig[k] = sha256_bytes(self._get(key, vids[-1]))
                    except Exception:  # noqa: BLE001
                        self._orig[k] = None
                return self._orig[k]
        return None


def judge_content(audit: BucketAudit, snap: dict[str, BucketRecord], sha: str) -> tuple[str, str]:
    """('none' | 'partial' | 'once' | 'twice', detail) for one content."""
    holders = [r for r in snap.values() if any(j.get("source", {}).get("sha256") == sha for j in r.records)]
    rid = sha[:16]
    if not holders:
        if rid in snap:
            names = ", ".join(sorted(k.rsplit("/", 1)[-1] for k in snap[rid].versions))
            return "partial", f"only {names} stored, no record.json"
        return "none", ""
    problems = []
    if len(holders) > 1:
        problems.append(f"{len(holders)} records ({', '.join(r.rid for r in holders)})")
    for r in holders:
        for key, vids in r.versions.items():
            base = key.rsplit("/", 1)[-1]
            if key.endswith("record.json"):
                prev_events: set[str] = set()
                for i, j in enumerate(r.records):
                    events = {e.get("type") for e in j.get("events", []) if isinstance(e, dict)}
                    if i and not ((events - prev_events) & DELIBERATE_EVENTS):
                        problems.append(f"record.json version {i + 1} of {len(r.records)} is no correction")
                        break
                    prev_events = events
            elif len(vids) > 1:
                problems.append(f"{len(vids)} versions of {base}")
    if problems:
        return "twice", "; ".join(problems)
    got = audit.original_sha(holders[0])
    if got != sha:
        return "partial", f"stored original does not match (SHA-256 {str(got)[:12]}…)"
    return "once", holders[0].rid


# --------------------------------------------------------------------------- the file system, as it really is
@dataclasses.dataclass
class Found:
    path: bytes
    sha: str | None
    link: bytes | None
    reason: str | None


def _reason_text(path: bytes) -> str | None:
    folder, name = os.path.split(path)
    try:
        siblings = os.listdir(folder or b".")
    except OSError:
        return None
    for s in siblings:
        if s != name and s.startswith(name) and s.endswith(REASON_SUFFIXES):
            try:
                text = Path(os.fsdecode(os.path.join(folder, s))).read_text(encoding="utf-8", errors="replace")
            except OSError:
                return None
            for line in text.splitlines():
                if line.lower().startswith(("reason:", "理由")):
                    return line.split(":", 1)[-1].split("：", 1)[-1].strip() or text.strip()[:200]
            return " ".join(text.split())[:200] or "(empty reason file)"
    return None


def _name_only_reason(folder: Path, rel: bytes) -> str | None:
    """The reason file kiroku leaves for a hard link it could only take the name of."""
    note = os.path.join(os.fsencode(folder), rel)
    if os.path.lexists(note):
        return None  # the link itself is there: the normal match applies
    return _reason_text(note)


def walk(root: Path, with_reasons: bool = False) -> list[Found]:
    """Every file and symlink under root (never following links), names as bytes."""
    out = []
    top = os.fsencode(root)
    if not os.path.isdir(top):
        return out
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            if name.endswith(REASON_SUFFIXES):
                continue
            if os.path.islink(p):
                out.append(Found(p, None, os.readlink(p), _reason_text(p) if with_reasons else None))
            else:
                out.append(Found(p, sha256_file(p), None, _reason_text(p) if with_reasons else None))
    return out


# --------------------------------------------------------------------------- the environment
class Kiroku:
    """A private kiroku installation: tmpfs KIROKU_HOME, private ports, `kiroku run` as a child."""

    def __init__(self, workdir: Path, tmpfs_mb: int) -> None:
        from kiroku import services

        self.workdir = workdir
        self.base = workdir / "k"
        self.base.mkdir(parents=True, exist_ok=True)
        self.outside = workdir / "outside"
        self.outside.mkdir(exist_ok=True)
        self.leftovers = workdir / "leftovers"
        self.home = self.base / "var"
        self.home.mkdir(exist_ok=True)
        self.mount_kind = self._mount(tmpfs_mb)
        ts = services.test_settings(self.base)
        self.config = self.base / "kiroku.toml"
        lines = [f"prefect_port = {ts.prefect_port}", "", "[web]", f"port = {ts.web_port}", "", "[weed_ports]"]
        lines += [f'"{k}" = {v}' for k, v in ts.weed_ports.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KIROKU_", "PREFECT_", "AWS_", "WEED_"))}
        self.env.update({"KIROKU_HOME": str(self.home), "KIROKU_INBOX": str(self.base / "inbox"),
                         "KIROKU_CONFIG": str(self.config),
                         "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
        from kiroku.config import load_settings

        old = {k: os.environ.get(k) for k in ("KIROKU_HOME", "KIROKU_INBOX", "KIROKU_CONFIG")}
        os.environ.update({k: self.env[k] for k in old})
        try:
            self.settings = load_settings()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.inbox = self.settings.inbox
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.run_log = self.workdir / "kiroku-run.log"
        self.restarts: list[str] = []
        self._audit: BucketAudit | None = None
        self.filler: Path | None = None
        self.log_mark = 0  # where the current `kiroku run`'s part of run_log begins

    # ---- mounts
    def _mount(self, mb: int) -> str:
        """A small tmpfs for var/ (so that 'disk full' can be made real); a loop image if tmpfs fails."""
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0755", "tmpfs", str(self.home)],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return "tmpfs"
        log(f"tmpfs mount failed ({r.stderr.strip()}); trying a loop-mounted image")
        image = self.workdir / "var.img"
        try:
            with open(image, "wb") as f:
                f.truncate(mb << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
            subprocess.run(["mount", "-o", "loop", str(image), str(self.home)], check=True, capture_output=True)
            return "loop"
        except (OSError, subprocess.CalledProcessError) as e:
            log(f"loop mount failed too ({e}); var/ is a plain folder and the disk-full scenario is skipped")
            image.unlink(missing_ok=True)
            return ""

    def unmount(self) -> None:
        if not self.mount_kind:
            return
        for args in (["umount", str(self.home)], ["umount", "-l", str(self.home)]):
            if subprocess.run(args, capture_output=True).returncode == 0:
                break
        (self.workdir / "var.img").unlink(missing_ok=True)
        self.mount_kind = ""

    # ---- services
    @property
    def s3_port(self) -> int:
        return self.settings.weed_ports["s3.port"]

    def service_pid(self, name: str) -> int | None:
        from kiroku import services
        return services.service_pid(self.settings, name)

    def s3_up(self) -> bool:
        from kiroku import services
        return services.s3_answers(self.settings)

    def prefect_up(self) -> bool:
        from kiroku import services
        return services.prefect_answers(self.settings)

    def worker_ready(self, since: int) -> bool:
        """Whether `kiroku run` has said, after byte `since` of its log, that it takes scans
        (it says so once the worker's readers are warm and the watcher is about to start)."""
        try:
            with open(self.run_log, "rb") as f:
                f.seek(since)
                return READY_LINE in f.read()
        except OSError:
            return False

    def runs_in_flight(self) -> bool:
        """Whether the Prefect server has flow runs scheduled, pending or running (work still in flight)."""
        body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING",
                                                                      "CANCELLING"]}}}}).encode()
        req = urllib.request.Request(self.settings.prefect_url.rstrip("/") + "/flow_runs/count", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=3) as r:  # noqa: S310 - loopback
                return int(json.loads(r.read())) > 0
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def audit(self) -> BucketAudit:
        if self._audit is None:
            from kiroku import services
            self._audit = BucketAudit(self.settings.s3_url, self.settings.region, self.settings.bucket,
                                      services.s3_credentials(self.settings))
        return self._audit

    def start(self, timeout: float = 300.0) -> float:
        """`kiroku run` in its own session; returns once its services answer and the deployment exists."""
        exe = Path(sys.executable).with_name("kiroku")
        argv = [str(exe), "run"] if exe.exists() else [sys.executable, "-m", "kiroku.cli", "run"]
        t0 = time.monotonic()
        since = self.log_mark = self.run_log.stat().st_size if self.run_log.exists() else 0
        with open(self.run_log, "ab") as out:
            out.write(f"\n--- {time.strftime('%H:%M:%S')} harness starts kiroku run\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, cwd=self.base, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"kiroku run exited with {self.proc.returncode} while starting; "
                                   f"see {self.run_log}:\n{tail(self.run_log)}")
            if self.s3_up() and self.prefect_up() and self.worker_ready(since):
                time.sleep(2.0)  # the watcher starts right after the worker
                return time.monotonic() - t0
            time.sleep(1.0)
        raise HarnessError(f"kiroku run was not ready within {timeout:.0f} s; see {self.run_log}:\n"
                           f"{tail(self.run_log)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM to `kiroku run` (it stops what it started), then SIGKILL to whatever of ours is left."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.kill_leftovers()

    def kill_leftovers(self) -> None:
        for _ in range(3):
            pids = pids_of_home(self.home)
            if not pids:
                return
            for pid in pids:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            time.sleep(1.0)

    def restart(self, why: str) -> None:
        log(f"restarting kiroku run: {why}")
        self.restarts.append(why)
        self.stop()
        self.start()

    def ensure_healthy(self) -> str | None:
        """Between scenarios: bring back whatever a scenario left broken, and say what that was."""
        if not self.alive():
            why = f"kiroku run had exited (code {self.proc.returncode if self.proc else '?'})"
            self.restart(why)
            return why
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.s3_up() and self.prefect_up() and self.worker_ready(self.log_mark):
                return None
            time.sleep(2)
        why = "a service was not answering after the scenario"
        self.restart(why)
        return why

    def restart_weed(self) -> None:
        from kiroku import services
        services.up(self.settings, prefect=False)

    # ---- the processes doing the work
    def service_groups(self) -> set[int]:
        from kiroku import services
        groups = set()
        for name in (services.WEED, services.PREFECT):
            pid = self.service_pid(name)
            if pid:
                groups.add(pgid_of(pid) or pid)
        return groups

    def workers(self) -> list[int]:
        """Our processes other than the services and `kiroku run` itself (worker, flow runs, readers)."""
        services = self.service_groups()
        main = self.proc.pid if self.proc else None
        return [p for p in pids_of_home(self.home) if p != main and pgid_of(p) not in services]

    def busiest(self, window: float = 0.6, min_share: float = 0.4) -> int | None:
        """The worker-side process using most CPU over `window` (the one reading pages), if busy enough."""
        before = {p: cpu_ticks(p) for p in self.workers()}
        time.sleep(window)
        hz = os.sysconf("SC_CLK_TCK")
        best, best_use = None, 0.0
        for p, t0 in before.items():
            t1 = cpu_ticks(p)
            if t0 is None or t1 is None:
                continue
            use = (t1 - t0) / hz / window
            if use > best_use:
                best, best_use = p, use
        return best if best_use >= min_share else None

    def uploader(self) -> int | None:
        found = s3_connected_pids(self.workers(), self.s3_port)
        return found[0] if found else None

    # ---- disk
    def fill_disk(self) -> int:
        """Fill var/ to the last byte; returns the bytes the filler took."""
        self.filler = self.home / ".faults-filler"
        written = 0
        with open(self.filler, "wb", buffering=0) as f:
            st = os.statvfs(self.home)
            free = st.f_bavail * st.f_frsize
            with contextlib.suppress(OSError):
                os.posix_fallocate(f.fileno(), 0, max(0, free - (1 << 20)))
                written = max(0, free - (1 << 20))
            f.seek(written)
            for size in (1 << 16, 4096, 1):
                try:
                    while True:
                        n = f.write(b"\0" * size)
                        if not n:
                            break
                        written += n
                except OSError:
                    pass
        return written

    def free_disk(self) -> None:
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)
            self.filler = None


def tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- scenarios
class Scenario:
    """What a scenario does: drop files (returned as Drops), inject its fault, lift it again."""

    name = ""
    title = ""
    ocr_files = 1  # how many pages it makes kiroku read (sets its grace period)

    def __init__(self, k: Kiroku, quick: bool, rng: random.Random) -> None:
        self.k, self.quick, self.rng = k, quick, rng
        self.notes: list[str] = []
        self.dir = k.inbox / self.name

    # helpers
    def put(self, name: str | bytes, data: bytes, expect: str, label: str = "") -> Drop:
        """Write the file beside the inbox and rename it in (as a scanner does), so it appears whole."""
        rel = os.fsencode(name) if isinstance(name, str) else name
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = os.path.join(os.fsencode(self.k.inbox), b".faults-" + os.urandom(6).hex().encode())
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(os.fsencode(self.dir), rel))
        return Drop(self.name, rel, sha256_bytes(data), expect, label or show_name(rel))

    def page(self, name: str, expect: str = "archive", label: str = "") -> Drop:
        return self.put(name, page_png(f"{self.name}{name}"), expect, label)

    def run(self) -> list[Drop]:  # pragma: no cover - abstract
        raise NotImplementedError

    def grace(self) -> float:
        """How long after its faults are lifted the scenario's files may take to leave the inbox."""
        base = (240.0 + 20.0 * self.ocr_files) if self.quick else (600.0 + 25.0 * self.ocr_files)
        return base * GRACE_SCALE


class Baseline(Scenario):
    name, title = "baseline", "one clean page, nothing injected"

    def run(self) -> list[Drop]:
        return [self.page("通知.png")]


class KillReader(Scenario):
    name, title = "kill-reader", "kill -9 of the process reading pages, at random moments"

    @property
    def ocr_files(self) -> int:  # type: ignore[override]
        return 2 if self.quick else 10

    def run(self) -> list[Drop]:
        drops, kills = [], 0
        for i in range(self.ocr_files):
            drops.append(self.page(f"kill-{i:02d}.png"))
            time.sleep(self.rng.uniform(0.5, 4.0))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pid = self.k.busiest()
                if pid:
                    what = cmdline(pid)[:90]
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                        self.notes.append(f"kill -9 {pid} ({what}) after {drops[-1].label}")
                    break
            else:
                self.notes.append(f"no busy reader process seen within 60 s after {drops[-1].label}")
            time.sleep(self.rng.uniform(0.5, 2.0))
        self.notes.insert(0, f"{kills} kills")
        return drops


class KillUploader(Scenario):
    name, title = "kill-uploader", "kill -9 of the process talking to S3, at random moments"

    @property
    def ocr_files(self) -> int:  # type: ignore[override]
        return 2 if self.quick else 10

    def run(self) -> list[Drop]:
        drops, kills = [], 0
        for i in range(self.ocr_files):
            drops.append(self.page(f"upload-{i:02d}.png"))
            deadline = time.monotonic() + 120
            candidates, refreshed, killed = [], 0.0, False
            target = os.path.join(os.fsencode(self.dir), drops[-1].rel)
            while time.monotonic() < deadline and os.path.lexists(target):
                if time.monotonic() - refreshed > 0.5:
                    candidates, refreshed = self.k.workers(), time.monotonic()
                found = s3_connected_pids(candidates, self.k.s3_port)
                if found:
                    pid = found[0]
                    time.sleep(self.rng.uniform(0.0, 0.3))
                    what = cmdline(pid)[:90]
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                        killed = True
                        self.notes.append(f"kill -9 {pid} ({what}) during {drops[-1].label}'s S3 traffic")
                    break
                time.sleep(0.02)
            if not killed:
                self.notes.append(f"no process was seen talking to S3 while {drops[-1].label} was in the inbox")
        self.notes.insert(0, f"{kills} kills")
        return drops


class _StorageFault(Scenario):
    """Drops pages and strikes SeaweedFS as soon as one of them is being stored."""

    ocr_files = 2

    def wait_for_upload(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.k.uploader():
                return True
            time.sleep(0.03)
        return False

    def weed_group(self) -> int:
        from kiroku import services
        pid = self.k.service_pid(services.WEED)
        if pid is None:
            raise HarnessError("SeaweedFS is not running before the storage fault")
        return pgid_of(pid) or pid


class PauseStorage(_StorageFault):
    name = "storage-paused"

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"SeaweedFS SIGSTOPped for {self.seconds:.0f} s while a scan is stored"

    @property
    def seconds(self) -> float:
        return 20.0 if self.quick else 65.0

    def run(self) -> list[Drop]:
        drops = [self.page(f"pause-{i}.png") for i in range(self.ocr_files)]
        if not self.wait_for_upload():
            self.notes.append("no upload seen within 120 s; paused anyway")
        group = self.weed_group()
        os.killpg(group, signal.SIGSTOP)
        self.notes.append(f"SIGSTOP to SeaweedFS (group {group}) for {self.seconds:.0f} s")
        try:
            time.sleep(self.seconds)
        finally:
            os.killpg(group, signal.SIGCONT)
        return drops


class KillStorage(_StorageFault):
    name, title = "storage-killed", "SeaweedFS killed (-9) while a scan is stored, then restarted"

    def run(self) -> list[Drop]:
        from kiroku import services

        drops = [self.page(f"weedkill-{i}.png") for i in range(self.ocr_files)]
        if not self.wait_for_upload():
            self.notes.append("no upload seen within 120 s; killed anyway")
        group = self.weed_group()
        os.killpg(group, signal.SIGKILL)
        self.notes.append(f"kill -9 SeaweedFS (group {group})")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid = self.k.service_pid(services.WEED)
            if pid and pgid_of(pid) != group and self.k.s3_up():
                self.notes.append("kiroku restarted SeaweedFS by itself")
                return drops
            time.sleep(1)
        self.notes.append("kiroku did not restart SeaweedFS within 20 s: the harness restarted it")
        self.k.restart_weed()
        return drops


class CatalogLocked(Scenario):
    name = "catalog-locked"

    @property
    def seconds(self) -> float:
        return 15.0 if self.quick else 45.0

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"catalog database held locked (BEGIN EXCLUSIVE) for {self.seconds:.0f} s"

    ocr_files = 2

    def run(self) -> list[Drop]:
        db = self.k.home / "catalog.db"
        if not db.exists():
            raise SkipScenario("there is no var/catalog.db to lock (nothing was catalogued before)")
        con = sqlite3.connect(str(db), timeout=5, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        try:
            drops = [self.page(f"catalog-{i}.png") for i in range(self.ocr_files)]
            time.sleep(self.seconds)
        finally:
            con.execute("ROLLBACK")
            con.close()
        return drops


class CatalogLost(Scenario):
    name, title = "catalog-lost", "catalog.db deleted, then a scan archived earlier dropped again"

    def __init__(self, *a, earlier: Callable[[], bytes | None], **kw) -> None:
        super().__init__(*a, **kw)
        self.earlier = earlier

    def run(self) -> list[Drop]:
        data = self.earlier()
        if data is None:
            data = page_png("catalog-lost")
            self.notes.append("no earlier scan available; used a new page")
        for suffix in ("", "-wal", "-shm", "-journal"):
            (self.k.home / f"catalog.db{suffix}").unlink(missing_ok=True)
        self.notes.append("deleted var/catalog.db")
        return [self.put("再投入.png", data, "archive", "再投入.png (archived before)")]


class DiskFull(Scenario):
    name = "disk-full"
    ocr_files = 2

    @property
    def seconds(self) -> float:
        return 15.0 if self.quick else 45.0

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"var/ ({self.k.mount_kind or 'no mount'}) filled to the last byte for {self.seconds:.0f} s"

    def run(self) -> list[Drop]:
        if not self.k.mount_kind:
            raise SkipScenario("var/ could not be mounted as a small file system (tmpfs or loop), "
                               "so the disk cannot be filled without filling the machine's")
        drops = [self.page(f"full-{i}.png") for i in range(self.ocr_files)]
        time.sleep(1.0)
        n = self.k.fill_disk()
        self.notes.append(f"filled var/ with {n >> 20} MiB")
        try:
            time.sleep(self.seconds)
        finally:
            self.k.free_disk()
        return drops


class Burst(Scenario):
    name = "burst"

    @property
    def ocr_files(self) -> int:  # type: ignore[override]
        return 4 if self.quick else 200

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"{self.ocr_files} distinct pages dropped at once"

    def run(self) -> list[Drop]:
        pages = [(f"burst-{i:03d}.png", page_png(f"b{i}", dpi=120)) for i in range(self.ocr_files)]
        return [self.put(n, d, "archive") for n, d in pages]

    def grace(self) -> float:
        return ((240.0 if self.quick else 600.0) + 15.0 * self.ocr_files) * GRACE_SCALE


class SlowWriters(Scenario):
    name = "slow-writers"
    ocr_files = 2

    @property
    def seconds(self) -> float:
        return 6.0 if self.quick else 24.0

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"scans written in chunks over {self.seconds:.0f} s (one in place, one as .part renamed)"

    def _slow(self, path: bytes, data: bytes, chunks: int = 6) -> None:
        step = max(1, len(data) // chunks)
        with open(path, "wb") as f:
            for i in range(0, len(data), step):
                f.write(data[i:i + step])
                f.flush()
                time.sleep(self.seconds / chunks)

    def run(self) -> list[Drop]:
        self.dir.mkdir(parents=True, exist_ok=True)
        d = os.fsencode(self.dir)
        a, b = page_png("slow-a"), page_png("slow-b")
        ta = threading.Thread(target=self._slow, args=(os.path.join(d, "ゆっくり.png".encode()), a))
        part = os.path.join(d, "転送中.png.part".encode())

        def part_then_rename() -> None:
            self._slow(part, b)
            os.rename(part, os.path.join(d, "転送中.png".encode()))

        tb = threading.Thread(target=part_then_rename)
        ta.start(), tb.start()
        ta.join(), tb.join()
        return [Drop(self.name, "ゆっくり.png".encode(), sha256_bytes(a), "archive", "ゆっくり.png (in place)"),
                Drop(self.name, "転送中.png".encode(), sha256_bytes(b), "archive", "転送中.png (.part renamed)")]


class SameContent(Scenario):
    name, title = "same-content", "one scan under 3 names at once, and twice more later"

    def run(self) -> list[Drop]:
        data = page_png("same")
        names = ["同一A.png", "同一B.png", "同一 C (写し).png"]
        tmp = []
        self.dir.mkdir(parents=True, exist_ok=True)
        for n in names:
            t = self.k.inbox / f".faults-{n}"
            t.write_bytes(data)
            tmp.append((t, self.dir / n))
        for t, dest in tmp:  # all three appear within a millisecond
            os.rename(t, dest)
        drops = [Drop(self.name, os.fsencode(n), sha256_bytes(data), "archive", n) for n, _ in zip(names, tmp)]
        deadline = time.monotonic() + self.grace()
        while time.monotonic() < deadline and any(os.path.lexists(self.dir / n) for n in names):
            time.sleep(2)
        self.notes.append("second drop after the first three " +
                          ("had left the inbox" if time.monotonic() < deadline else "did NOT leave the inbox in time"))
        drops.append(self.put("同一A.png", data, "archive", "同一A.png (again, later)"))
        drops.append(self.put("同一D.png", data, "archive", "同一D.png (later)"))
        return drops


class Symlinks(Scenario):
    name, title = "symlinks", "links in the inbox: symlinks to a scan outside, dangling, inside, to a folder; a hard link"

    def run(self) -> list[Drop]:
        self.dir.mkdir(parents=True, exist_ok=True)
        out = self.k.outside
        target = out / "外部の原本.png"
        target.write_bytes(page_png("outside"))
        tsha = sha256_file(target)
        outdir = out / "外部フォルダ"
        outdir.mkdir(exist_ok=True)
        (outdir / "中身.png").write_bytes(page_png("outside-dir"))
        drops = []
        inside = self.put("実物.png", page_png("inside"), "archive", "実物.png (a link points at it)")
        drops.append(inside)
        links = [("外部へのリンク.png", str(target), tsha, target, "link to a scan outside"),
                 ("切れたリンク.png", str(out / "存在しない.png"), None, None, "dangling link"),
                 ("内部へのリンク.png", "実物.png", inside.sha, None, "link to 実物.png in the inbox"),
                 ("外部フォルダ", str(outdir), sha256_file(outdir / "中身.png"), outdir / "中身.png",
                  "link to a folder outside")]
        for name, to, sha, guarded, label in links:
            os.symlink(to, self.dir / name)
            drops.append(Drop(self.name, os.fsencode(name), sha, "refuse", f"{name} ({label})",
                              link=os.fsencode(to), outside=guarded,
                              outside_sha=sha256_file(guarded) if guarded else None))
        # a hard link needs the inbox's file system: the outside file lives beside the inbox on it
        ledger_file = self.k.inbox.parent / "外部の台帳.png"
        ledger_file.write_bytes(page_png("outside-hardlink"))
        try:
            os.link(ledger_file, self.dir / "外部へのハードリンク.png")
        except OSError as e:
            self.notes.append(f"no hard link could be made ({e}); that case did not run")
        else:
            drops.append(Drop(self.name, os.fsencode("外部へのハードリンク.png"), sha256_file(ledger_file), "refuse",
                              "外部へのハードリンク.png (hard link to a scan outside the inbox)",
                              outside=ledger_file, outside_sha=sha256_file(ledger_file), hardlink=True))
        return drops


class Malformed(Scenario):
    name, title = "malformed", "malformed inputs of our own: truncated, empty, bad IFD, bomb, encrypted, 1x1..."
    ocr_files = 2

    def run(self) -> list[Drop]:
        good = page_png("malformed-base")
        jpeg = io.BytesIO()
        from PIL import Image
        Image.open(io.BytesIO(good)).convert("L").save(jpeg, format="JPEG", quality=85, dpi=(150, 150))
        tif = tiff_bytes(good)
        bomb = png_bomb(30000 if self.quick else 60000)
        items: list[tuple[str | bytes, bytes, str, str]] = [
            ("途中切れ.png", good[: len(good) // 2], "refuse", "truncated PNG"),
            ("途中切れ.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 3], "either", "truncated JPEG"),
            ("途中切れ.tif", tif[: len(tif) // 2], "refuse", "truncated TIFF"),
            ("空.png", b"", "refuse", "zero bytes"),
            ("壊れたIFD.tif", bad_ifd_tiff(), "refuse", "TIFF with a bad IFD"),
            ("爆弾.png", bomb, "refuse", f"PNG bomb ({len(bomb) >> 10} KiB declaring "
                                         f"{30000 if self.quick else 60000}² px)"),
            ("暗号化.pdf", encrypted_pdf(page_png("enc")), "refuse", "encrypted PDF (AES-256)"),
            ("1x1.png", tiny_png(1, 1), "refuse", "1x1 PNG"),
            ("拡張子違い.jpg", page_png("wrong-ext"), "either", "a PNG named .jpg"),
            ("画像ではない.tif", "これは画像ではありません。\n".encode() * 20, "refuse", "text named .tif"),
        ]
        return [self.put(n, d, e, f"{show_name(n)} ({lbl})") for n, d, e, lbl in items]


class OddNames(Scenario):
    name, title = "odd-names", "good pages under odd names: Shift_JIS bytes, 250 bytes, spaces, a newline"
    ocr_files = 4

    def run(self) -> list[Drop]:
        items: list[tuple[str | bytes, str]] = [
            ("通知書_SJIS.png".encode("cp932"), "Shift_JIS name bytes"),
            ("長" * 81 + "xyz.png", "250-byte name"),
            ("令和7年 通知 (写し).png", "name with spaces"),
            ("改行\n入り.png", "name with a newline"),
        ]
        return [self.put(n, page_png(f"odd{i}"), "archive", f"{show_name(n)} ({lbl})")
                for i, (n, lbl) in enumerate(items)]


QUICK_PEER = ("ocrmypdf__hugemono.pdf", "ocrmypdf__invalid.pdf", "ocrmypdf__livecycle.pdf", "yomitoku__small.jpg",
              "yomitoku__invalid.jpg", "yomitoku__invalid.pdf", "pikepdf__graph-encrypted.pdf",
              "pikepdf__fuzz_378014596.pdf", "ocrmypdf__crom.png")


def peer_expectations(readme: Path) -> dict[str, str]:
    """file -> archive | refuse | either, from the README's "expected behaviour" column (text after →)."""
    out = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.replace("\\|", "/").split("|")]
        if len(cells) < 4 or not cells[1].endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf")):
            continue
        verdict = cells[-2].split("→", 1)[-1].strip()
        low = verdict.lower()
        if verdict.startswith("**Refuse") and not low.startswith("**refuse or"):
            out[cells[1]] = "refuse"
        elif any(w in low for w in ("refuse", "skip", "decide by policy")):
            out[cells[1]] = "either"
        else:
            out[cells[1]] = "archive"
    return out


class PeerInputs(Scenario):
    name = "peer-inputs"

    def __init__(self, *a, shared: Path | None, **kw) -> None:
        super().__init__(*a, **kw)
        self.src = shared / "peer-inputs" if shared else None
        self.expect: dict[str, str] = {}

    @property
    def title(self) -> str:  # type: ignore[override]
        return "files from ../shared/peer-inputs, outcome as their README expects" + (
            " (quick: the refusals and one page)" if self.quick else "")

    @property
    def ocr_files(self) -> int:  # type: ignore[override]
        return 2 if self.quick else 70

    def run(self) -> list[Drop]:
        if self.src is None or not (self.src / "README.md").is_file():
            raise SkipScenario("../shared/peer-inputs is not present")
        self.expect = peer_expectations(self.src / "README.md")
        files = sorted(p for p in self.src.iterdir() if p.name != "README.md" and p.is_file())
        if self.quick:
            files = [p for p in files if p.name in QUICK_PEER]
        return [self.put(p.name, p.read_bytes(), self.expect.get(p.name, "either")) for p in files]


class SkipScenario(Exception):
    pass


# --------------------------------------------------------------------------- judging
def classify(k: Kiroku, drops: list[Drop], scenario: str) -> tuple[dict[str, int], list[str]]:
    """Put every drop in exactly one column, from the inbox, quarantine, done and the bucket."""
    audit = k.audit()
    snap = audit.snapshot()
    inbox = walk(k.inbox / scenario)
    quarantine = walk(k.settings.quarantine_dir, with_reasons=True)
    done = walk(k.settings.done_dir)
    dept = os.fsencode(os.sep + scenario + os.sep)

    def take(found: list[Found], d: Drop, prefer: bytes | None) -> Found | None:
        def matches(f: Found) -> bool:
            if d.link is not None:
                return f.link == d.link
            return f.link is None and f.sha == d.sha
        pool = [f for f in found if matches(f)]
        stem = os.path.splitext(os.path.basename(d.rel))[0]
        pool.sort(key=lambda f: (bool(prefer) and prefer not in f.path, not os.path.basename(f.path).startswith(stem)))
        if pool:
            found.remove(pool[0])
            return pool[0]
        return None

    counts = dict.fromkeys(COLUMNS, 0)
    for d in drops:
        d.note = ""
        verdict, detail = judge_content(audit, snap, d.sha) if d.sha else ("none", "")
        # A link pointing out of the inbox must never be followed: its target archived means it was.
        followed = d.link is not None and d.link.startswith(b"/") and verdict in ("once", "twice")
        q = f = None
        at_inbox = take(inbox, d, None)
        if at_inbox is None:
            q = take(quarantine, d, dept)
            if q is None:
                f = take(done, d, dept)
        if verdict == "twice":
            d.outcome, d.note = "archived_twice", detail
        elif at_inbox is not None:
            d.outcome, d.where = "stuck", "inbox"
        elif q is not None:
            d.where = os.fsdecode(q.path)
            if q.reason:
                d.outcome, d.reason = "quarantined", q.reason
            else:
                d.outcome, d.note = "stuck", "in quarantine without a reason file"
        elif verdict == "once":
            d.outcome, d.where = "archived_once", detail
        elif d.hardlink and (why := _name_only_reason(k.settings.quarantine_dir / scenario, d.rel)):
            # var/ on another file system: kiroku removed only the inbox's name, left the reason
            d.outcome, d.reason, d.where = "quarantined", why, "(reason file only; the content stays outside)"
        else:
            d.outcome = "lost"
            d.where = os.fsdecode(f.path) if f else ""
            d.note = {"partial": f"not archived ({detail})", "none": "not in the bucket"}[verdict] + (
                "; a copy is in var/done" if f else "; nowhere on disk either")
        if d.outside is not None:
            if d.outside_sha is not None and sha256_file(d.outside) != d.outside_sha:
                d.note += "; the file outside the inbox was moved or changed"
            if followed:
                d.note += "; the link was followed and its target archived"
        counts[d.outcome] += 1
    shas = {d.sha for d in drops if d.sha}
    extra = []
    for r in snap.values():
        for j in r.records[:1]:
            src = j.get("source", {})
            if src.get("department") == scenario and src.get("sha256") not in shas:
                extra.append(f"record {r.rid} for content never dropped ({src.get('filename')}, "
                             f"{src.get('bytes')} bytes)")
    counts["archived_twice"] += len(extra)
    return counts, extra


def settled(drops: list[Drop]) -> bool:
    return all(d.outcome in ("quarantined", "archived_once", "archived_twice") for d in drops)


def expected_ok(d: Drop) -> bool:
    if d.outcome in ("stuck", "lost", "archived_twice"):
        return False
    if "outside the inbox was moved" in d.note or "link was followed" in d.note:
        return False
    if d.expect == "archive":
        return d.outcome == "archived_once"
    if d.expect == "refuse":
        return d.outcome == "quarantined"
    return True


def move_leftovers(k: Kiroku, scenario: str) -> int:
    """Take what a scenario left in the inbox out of it, so the next scenario starts clean."""
    src = k.inbox / scenario
    if not src.exists():
        return 0
    dest = k.leftovers / scenario
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for entry in os.scandir(os.fsencode(src)):
        os.rename(entry.path, os.path.join(os.fsencode(dest), entry.name))
        n += 1
    with contextlib.suppress(OSError):
        src.rmdir()
    return n


def diagnose(k: Kiroku, d: Drop) -> str:
    """The last lines of kiroku's logs that mention the file (what happened to it, in kiroku's words)."""
    needle = show_name(d.rel).replace("\\n", "\n").split("\n")[0][:40]
    hits: list[str] = []
    logs = [k.run_log] + sorted(k.settings.run_dir.glob("*.log")) if k.settings.run_dir.exists() else [k.run_log]
    for path in logs:
        try:
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if needle and needle in line and ("rror" in line or "rash" in line or "arn" in line
                                                  or "quarantine" in line or "ailed" in line):
                    hits.append(f"{path.name}: {line.strip()[:220]}")
        except OSError:
            continue
    return " | ".join(hits[-2:])


def final_count(k: Kiroku, drops: list[Drop], sc: Scenario) -> tuple[dict[str, int], list[str]]:
    """The count that goes in the table; SeaweedFS is brought back first if kiroku took it down."""
    for attempt in range(3):
        if not k.s3_up():
            sc.notes.append("SeaweedFS was down at counting time: the harness started it to count")
            with contextlib.suppress(Exception):
                k.restart_weed()
        try:
            return classify(k, drops, sc.name)
        except Exception as e:  # noqa: BLE001 - the bucket could not be read: try again, then say so
            err = e
            time.sleep(5)
    raise HarnessError(f"could not read the bucket to count {sc.name}: {err}")


def run_scenario(k: Kiroku, sc: Scenario) -> Row:
    log(f"scenario {sc.name}: {sc.title}")
    t0 = time.monotonic()
    try:
        drops = sc.run()
    except SkipScenario as e:
        log(f"  skipped: {e}")
        return Row(sc.name, sc.title, [], dict.fromkeys(COLUMNS, 0), [], [f"skipped: {e}"], 0.0, skipped=str(e))
    deadline = time.monotonic() + sc.grace()
    idle_limit = (60.0 if sc.quick else 180.0) * GRACE_SCALE
    counts, extra = dict.fromkeys(COLUMNS, 0), []
    last_change, last_state = time.monotonic(), None
    while time.monotonic() < deadline:
        state = tuple(d.outcome for d in drops)
        if state != last_state or k.runs_in_flight():
            last_change, last_state = time.monotonic(), state
        elif time.monotonic() - last_change > idle_limit:
            sc.notes.append(f"nothing moved and no flow run was in flight for {idle_limit:.0f} s")
            break
        if not k.alive():
            words = [ln.strip() for ln in tail(k.run_log, 80).splitlines()
                     if ln.strip() and not ln.lstrip().startswith(("│", "╭", "╰", "---")) and "stopping" not in ln]
            sc.notes.append(f"kiroku run exited during the scenario (code {k.proc.returncode}); its last words: "
                            + " / ".join(words[-2:])[-400:])
            break
        with contextlib.suppress(Exception):
            counts, extra = classify(k, drops, sc.name)
            if settled(drops):
                break
        time.sleep(3)
    if settled(drops):
        time.sleep(3)  # a late second copy would land now
    elif k.alive() and time.monotonic() >= deadline:
        sc.notes.append(f"grace period of {sc.grace():.0f} s ran out")
    counts, extra = final_count(k, drops, sc)
    for d in drops:
        if not expected_ok(d):
            why = diagnose(k, d)
            if why:
                d.note = (d.note + "; " if d.note else "") + "log: " + why
    seconds = time.monotonic() - t0
    log(f"  {sc.name}: {counts} in {seconds:.0f} s")
    left = move_leftovers(k, sc.name)
    if left:
        sc.notes.append(f"{left} file(s) left in the inbox were moved aside after counting")
    return Row(sc.name, sc.title, drops, counts, extra, sc.notes, seconds)


# --------------------------------------------------------------------------- report
def render(rows: list[Row], quick: bool, startup: float) -> str:
    out = [f"kiroku fault-injection suite ({'quick' if quick else 'full'}); kiroku run ready in {startup:.0f} s", ""]
    head = ("scenario", "files", "archived_once", "archived_twice", "quarantined", "stuck", "lost")
    widths = [max(16, *(len(r.scenario) for r in rows)), 5, 13, 14, 11, 5, 4]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        cells = [r.scenario, "skip" if r.skipped else str(len(r.drops))] + [str(r.counts[c]) for c in COLUMNS]
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    out.append("")
    for r in rows:
        out.append(f"## {r.scenario}: {r.title} ({r.seconds:.0f} s)")
        for n in r.notes:
            out.append(f"   · {n}")
        for d in r.drops:
            ok = "ok " if expected_ok(d) else "BAD"
            line = f"   {ok} {d.label}: {d.outcome}"
            if d.outcome == "quarantined":
                line += f" — 理由: {d.reason[:160]}"
            if d.expect != "either" and not expected_ok(d) and d.outcome not in ("stuck", "lost", "archived_twice"):
                line += f" (expected: {d.expect})"
            if d.note:
                line += f" [{d.note[:400]}]"
            out.append(line)
        for e in r.extra_records:
            out.append(f"   BAD {e}")
    peer = next((r for r in rows if r.scenario == "peer-inputs" and not r.skipped), None)
    if peer:
        good = [d for d in peer.drops if expected_ok(d)]
        refused = [d for d in good if d.outcome == "quarantined"]
        out.append("")
        out.append(f"peer inputs: {len(peer.drops)} files: correct {len(good)} (archived {len(good) - len(refused)}, "
                   f"refused with reason {len(refused)}), wrong {len(peer.drops) - len(good)}")
    return "\n".join(out)


def details(rows: list[Row]) -> list[dict]:
    return [{"scenario": r.scenario, "title": r.title, "seconds": round(r.seconds, 1), "skipped": r.skipped,
             "notes": r.notes, "extra_records": r.extra_records,
             "files": [{"name": show_name(d.rel), "name_b64": base64.b64encode(d.rel).decode(), "label": d.label,
                        "expect": d.expect, "outcome": d.outcome, "ok": expected_ok(d), "reason": d.reason,
                        "where": d.where, "note": d.note} for d in r.drops]} for r in rows]


# --------------------------------------------------------------------------- main
def build(k: Kiroku, quick: bool, rng: random.Random, shared: Path | None) -> list[Scenario]:
    first: dict[str, bytes] = {}

    class _Base(Baseline):
        def run(self) -> list[Drop]:
            data = page_png("baseline")
            first["data"] = data
            return [self.put("通知.png", data, "archive")]

    base = _Base(k, quick, rng)
    return [base, Malformed(k, quick, rng), SameContent(k, quick, rng), Symlinks(k, quick, rng),
            SlowWriters(k, quick, rng), OddNames(k, quick, rng), PeerInputs(k, quick, rng, shared=shared), Burst(k, quick, rng),
            KillReader(k, quick, rng), KillUploader(k, quick, rng), CatalogLocked(k, quick, rng),
            PauseStorage(k, quick, rng), KillStorage(k, quick, rng), DiskFull(k, quick, rng),
            CatalogLost(k, quick, rng, earlier=lambda: first.get("data"))]


def find_shared(explicit: str | None) -> Path | None:
    for c in ([Path(explicit)] if explicit else []) + [ROOT.parent / "shared", ROOT.parents[1] / "shared"]:
        if (c / "peer-inputs").is_dir():
            return c
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the reduced form `make test` runs (a few minutes)")
    ap.add_argument("--json", required=True, type=Path, help="write the rows here (and details to FILE.details.json)")
    ap.add_argument("--only", help="comma-separated scenario names (baseline always runs first)")
    ap.add_argument("--workdir", type=Path, help="where logs and the private installation go (default: a temp dir)")
    ap.add_argument("--shared", help="the shared folder with peer-inputs/ (default: ../shared)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--tmpfs-mb", type=int, default=None)
    ap.add_argument("--grace-scale", type=float, default=1.0, help="multiply every grace period")
    args = ap.parse_args(argv)
    global GRACE_SCALE
    GRACE_SCALE = args.grace_scale
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kiroku-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work folder {workdir} (seed {seed})")
    k = Kiroku(workdir, args.tmpfs_mb or (768 if args.quick else 2048))
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    rows: list[Row] = []
    startup = 0.0
    try:
        startup = k.start()
        log(f"kiroku run is ready after {startup:.0f} s")
        scenarios = build(k, args.quick, rng, find_shared(args.shared))
        if args.only:
            wanted = set(args.only.split(",")) | {"baseline"}
            scenarios = [s for s in scenarios if s.name in wanted]
        for sc in scenarios:
            try:
                row = run_scenario(k, sc)
            except HarnessError as e:
                log(f"  {sc.name}: the harness could not finish it: {e}")
                row = Row(sc.name, sc.title, [], dict.fromkeys(COLUMNS, 0), [], [f"harness error: {e}"], 0.0,
                          skipped=f"harness error: {e}")
            rows.append(row)
            why = k.ensure_healthy()
            if why:
                row.notes.append(f"after counting, the harness had to restart kiroku run: {why}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        k.free_disk()
        with contextlib.suppress(Exception):
            for f in (k.settings.run_dir.glob("*.log") if k.settings.run_dir.exists() else []):
                shutil.copy2(f, workdir / f"var-{f.name}")
        k.stop()
        k.unmount()
        signal.signal(signal.SIGTERM, previous)
    text = render(rows, args.quick, startup)
    print(text, flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([r.json_row() for r in rows], ensure_ascii=False, indent=1) + "\n",
                         encoding="utf-8")
    args.json.with_name(args.json.name + ".details.json").write_text(
        json.dumps({"seed": seed, "workdir": str(workdir), "quick": args.quick, "restarts": k.restarts,
                    "rows": details(rows)}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (workdir / "table.txt").write_text(text + "\n", encoding="utf-8")
    log(f"logs: {workdir}")
    bad = any(r.counts[c] for r in rows for c in ("archived_twice", "stuck", "lost"))
    return 1 if bad or not rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
