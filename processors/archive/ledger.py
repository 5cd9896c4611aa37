"""The intake ledger: what the watcher handed over, and how each hand-over ended, kept in var/state/.

The watcher used to remember hand-overs in memory, so a run that crashed left its scan
in the inbox until someone restarted kiroku, and a restart forgot everything. This
ledger is a small SQLite file (var/state/intake.db) with one row per file in the
inbox, keyed by the path's bytes (any name, Shift_JIS included):

    waiting -> handed_over -> running(pid) -> done | quarantined
                                     \\-> retry (retry_at) -> handed_over ...

The flow reports what happened through `mark_running`, `settle_failure` and `finish`;
the watcher asks `due` whether a file should be handed over (again) now. Failure kinds
(processors/archive/failures.py) decide the outcome:

- rejected: quarantined at once, with the reason file;
- transient: stays in the inbox, tried again after 15 s, doubling up to 10 min, for as
  long as it takes (storage may be down for a weekend);
- crashed: tried again; after MAX_CRASH_ATTEMPTS crashes, quarantined with that reason.

A run whose process died (pid gone) or ran past the per-document time limit is a
crash too, noticed by the watcher, so no scan waits for a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from processors.archive import failures, inbox
from processors.archive.failures import MAX_CRASH_ATTEMPTS, ReaderCrashed
from processors.archive.names import display_name, display_path, readable

log = logging.getLogger("kiroku.ledger")

State = Literal["waiting", "handed_over", "running", "retry", "quarantined", "done"]
Action = Literal["quarantined", "retry", "done", "left"]

FIRST_RETRY_SECONDS = 15.0
MAX_RETRY_SECONDS = 600.0
DOCUMENT_TIME_LIMIT_SECONDS = 30 * 60.0  # a single document running longer than this has hung
HANDOVER_TIME_LIMIT_SECONDS = 60 * 60.0  # handed over but never started (a lost run): hand over again

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intake (
    path BLOB PRIMARY KEY,         -- the path's bytes on disk
    name TEXT NOT NULL,            -- the name as a person reads it
    department TEXT,
    size INTEGER, mtime_ns INTEGER,
    sha256 TEXT,
    state TEXT NOT NULL,
    pid INTEGER, pid_start TEXT, started_at REAL,
    handed_at REAL,
    retry_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,   -- crashes so far
    transient_attempts INTEGER NOT NULL DEFAULT 0,
    last_reason TEXT,
    destination BLOB,
    flow_run_id TEXT,                      -- the Prefect run working on it, to mark Crashed if its process died
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS intake_state ON intake(state);
"""


@dataclass(frozen=True)
class Entry:
    path: Path
    name: str
    department: str | None
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    state: State
    pid: int | None
    pid_start: str | None
    started_at: float | None
    handed_at: float | None
    retry_at: float | None
    attempts: int
    transient_attempts: int
    last_reason: str | None
    destination: Path | None
    flow_run_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to a scan after its run ended: the truth for logs and artifacts."""

    action: Action  # quarantined: moved with its reason file; retry: still in the inbox; done; left: nothing done
    path: Path
    reason: str = ""
    destination: Path | None = None
    retry_at: float | None = None
    attempts: int = 0

    @property
    def message(self) -> str:
        """One line for the terminal and the Prefect artifact, Japanese first."""
        name = display_name(self.path.name)
        if self.action == "quarantined":
            if self.destination is not None and not os.path.lexists(self.destination):
                # a hard link on another file system: only its inbox name was removed (processors/archive/inbox.py)
                return (f"{name}: 受付フォルダから名前を取り除き、理由を隔離フォルダに置きました"
                        f"（{display_path(Path(f'{self.destination}{inbox.ERROR_SUFFIX}'))}）。理由: {self.reason}")
            return f"{name}: 隔離フォルダに移しました（{display_path(self.destination)}）。理由: {self.reason}"
        if self.action == "retry":
            wait = max(0, round((self.retry_at or time.time()) - time.time()))
            return f"{name}: 受付フォルダに残し、約{wait}秒後に自動で再試行します。理由: {self.reason}"
        if self.action == "done":
            return f"{name}: 保管しました（{display_path(self.destination)}）"
        return f"{name}: 受付フォルダに残っています（移動できませんでした）。理由: {self.reason}"


def _key(path: Path | str) -> bytes:
    return os.fsencode(os.path.abspath(path))


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, so a reused pid is not taken for the old run."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int | None, pid_start: str | None = None) -> bool:
    """Whether that very process is still running."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal answer is all there is
    fields = stat_line.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False  # exited, not yet reaped by its parent
    return pid_start is None or fields[19] == pid_start


def retry_delay(transient_attempts: int) -> float:
    """15 s, 30 s, 1 min, ... at most 10 min between tries; never gives up."""
    return min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, transient_attempts - 1))


class Ledger:
    """The SQLite ledger under <home>/state/; safe to use from several threads and processes."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "state" / "intake.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(intake)")}
            if "flow_run_id" not in columns:  # a ledger written before runs were remembered
                db.execute("ALTER TABLE intake ADD COLUMN flow_run_id TEXT")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (opened once: a hand-over look may write a thousand rows)."""
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            self._local.db, self._local.pid = db, os.getpid()
        yield db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _entry(row: sqlite3.Row) -> Entry:
        return Entry(
            path=Path(os.fsdecode(row["path"])), name=row["name"], department=row["department"],
            size=row["size"], mtime_ns=row["mtime_ns"], sha256=row["sha256"], state=row["state"],
            pid=row["pid"], pid_start=row["pid_start"], started_at=row["started_at"],
            handed_at=row["handed_at"], retry_at=row["retry_at"], attempts=row["attempts"],
            transient_attempts=row["transient_attempts"], last_reason=row["last_reason"],
            destination=Path(os.fsdecode(row["destination"])) if row["destination"] else None,
            flow_run_id=row["flow_run_id"])

    def get(self, path: Path | str) -> Entry | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM intake WHERE path = ?", (_key(path),)).fetchone()
        return self._entry(row) if row else None

    def entries(self, *states: State) -> list[Entry]:
        with self._db() as db:
            if states:
                marks = ",".join("?" * len(states))
                rows = db.execute(f"SELECT * FROM intake WHERE state IN ({marks})", states).fetchall()
            else:
                rows = db.execute("SELECT * FROM intake").fetchall()
        return [self._entry(r) for r in rows]

    # ------------------------------------------------------------------ writing

    def _upsert(self, db: sqlite3.Connection, path: Path | str, **values: object) -> None:
        key = _key(path)
        values["updated_at"] = time.time()
        if db.execute("SELECT 1 FROM intake WHERE path = ?", (key,)).fetchone():
            sets = ", ".join(f"{k} = ?" for k in values)
            db.execute(f"UPDATE intake SET {sets} WHERE path = ?", (*values.values(), key))
        else:
            values.setdefault("name", display_name(Path(path).name))
            values.setdefault("state", "waiting")
            cols = ", ".join(["path", *values])
            db.execute(f"INSERT INTO intake ({cols}) VALUES ({','.join('?' * (len(values) + 1))})",
                       (key, *values.values()))

    def handed_over(self, path: Path, department: str | None, state: inbox.FileState | None,
                    *, fresh: bool = False) -> None:
        """The watcher gave the file to a run. `fresh`: a new or changed file (a re-drop after a
        fix counts as new), whose earlier attempts are forgotten; otherwise they are kept."""
        values: dict[str, object] = {
            "department": department, "state": "handed_over", "handed_at": time.time(),
            "size": state.size if state else None, "mtime_ns": state.mtime_ns if state else None,
            "pid": None, "pid_start": None, "started_at": None, "retry_at": None}
        if fresh:
            values.update(name=display_name(path.name), sha256=None, attempts=0, transient_attempts=0,
                          last_reason=None, destination=None)
        with self._tx() as db:
            self._upsert(db, path, **values)

    def mark_running(self, path: Path | str, pid: int, sha256: str | None = None,
                     flow_run_id: str | None = None) -> None:
        with self._tx() as db:
            values: dict[str, object] = {"state": "running", "pid": pid, "pid_start": _pid_start(pid),
                                         "started_at": time.time(), "retry_at": None, "flow_run_id": flow_run_id}
            if sha256:
                values["sha256"] = sha256
            self._upsert(db, path, **values)

    def record(self, path: Path | str, state: State, **values: object) -> None:
        with self._tx() as db:
            self._upsert(db, path, state=state, **values)

    def forget(self, path: Path | str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM intake WHERE path = ?", (_key(path),))

    def prune(self, present: set[Path], *, keep_seconds: float = 30 * 86400) -> None:
        """Drop rows of files no longer in the inbox that nobody is working on, and old history."""
        keys = {_key(p) for p in present}
        with self._tx() as db:
            rows = db.execute("SELECT path FROM intake WHERE state IN ('waiting', 'retry', 'handed_over')").fetchall()
            gone = [(row["path"],) for row in rows if row["path"] not in keys]
            db.executemany("DELETE FROM intake WHERE path = ?", gone)
            db.execute("DELETE FROM intake WHERE state IN ('done', 'quarantined') AND updated_at < ?",
                       (time.time() - keep_seconds,))

    def note_content(self, path: Path | str, sha256: str) -> None:
        """The scan's SHA-256, once the run has read it (so an operator can find its record)."""
        with self._tx() as db:
            self._upsert(db, path, sha256=sha256)


ACTIVE: tuple[State, ...] = ("waiting", "handed_over", "running", "retry")


# --------------------------------------------------------------------------- the flow's API


_ledgers: dict[Path, Ledger] = {}
_ledgers_guard = threading.Lock()


def ledger_for(settings) -> Ledger:  # noqa: ANN001 - kiroku.config.Settings (kept import-free)
    """The ledger under settings.home, opened once per process."""
    home = Path(settings.home)
    with _ledgers_guard:
        if home not in _ledgers or not _ledgers[home].path.parent.is_dir():
            _ledgers[home] = Ledger(home)
        return _ledgers[home]


def _settings(settings):  # noqa: ANN001, ANN202
    if settings is not None:
        return settings
    from kiroku.config import load_settings

    return load_settings()


def mark_running(path: Path | str, pid: int | None = None, settings=None, *, sha256: str | None = None,  # noqa: ANN001
                 flow_run_id: str | None = None) -> None:
    """The run `flow_run_id` has started on this file in process `pid` (default: this one)."""
    ledger_for(_settings(settings)).mark_running(path, pid or os.getpid(), sha256, flow_run_id)


def settle_failure(path: Path | str, department: str | None, exc: BaseException, settings=None) -> Outcome:  # noqa: ANN001
    """Decide and do what a failed run means for its scan; returns what actually happened.

    rejected -> quarantine now; transient -> stays, retry with back-off; crashed ->
    retry, quarantine after MAX_CRASH_ATTEMPTS. A quarantine move that fails (disk
    full) leaves the scan in the inbox to be tried again: the Outcome then says
    "retry", never "quarantined".
    """
    settings = _settings(settings)
    path = Path(path)
    ledger = ledger_for(settings)
    kind = failures.failure_kind(exc)
    reason = readable(failures.describe(exc))
    entry = ledger.get(path)
    attempts = entry.attempts if entry else 0
    transient_attempts = entry.transient_attempts if entry else 0
    if not os.path.lexists(path):
        kept: State = entry.state if entry and entry.state in ("done", "quarantined") else "waiting"
        ledger.record(path, kept, last_reason=reason, pid=None)  # "waiting" rows of gone files are pruned
        return Outcome("left", path, reason=f"{reason}（ファイルはもう受付フォルダにありません）")
    if kind == "crashed":
        attempts += 1
        if attempts >= MAX_CRASH_ATTEMPTS:
            exc = ReaderCrashed(f"読み取り処理が{attempts}回続けて異常終了しました", reason)
            kind = "rejected"
            reason = readable(str(exc))
    if kind == "rejected":
        try:
            dest = inbox.quarantine(path, settings.quarantine_dir, department, exc,
                                    advice=inbox.ADVICE["crashed"] if isinstance(exc, ReaderCrashed) else None)
        except inbox.MoveFailed as move_exc:
            transient_attempts += 1
            at = time.time() + retry_delay(transient_attempts)
            ledger.record(path, "retry", department=department, retry_at=at, attempts=attempts,
                      transient_attempts=transient_attempts,
                          last_reason=f"{reason} / {move_exc}", pid=None)
            return Outcome("retry", path, reason=f"{reason}（隔離フォルダに移せませんでした: {move_exc.japanese}）",
                           retry_at=at, attempts=attempts)
        ledger.record(path, "quarantined", department=department, attempts=attempts, last_reason=reason,
                      destination=os.fsencode(dest), retry_at=None, pid=None)
        return Outcome("quarantined", path, reason=reason, destination=dest, attempts=attempts)
    if kind == "transient":
        transient_attempts += 1
        delay = retry_delay(transient_attempts)
    else:  # crashed, not yet the last time
        delay = FIRST_RETRY_SECONDS
    at = time.time() + delay
    ledger.record(path, "retry", department=department, retry_at=at, attempts=attempts,
                      transient_attempts=transient_attempts,
                  last_reason=reason, pid=None)
    return Outcome("retry", path, reason=reason, retry_at=at, attempts=attempts)


def finish(path: Path | str, department: str | None, settings=None) -> Outcome:  # noqa: ANN001
    """The scan is archived: move it to done and say so in the ledger.

    If done/ cannot take it (full), the scan stays in the inbox and is handed over
    again later; that pass finds it archived and only moves it.
    """
    settings = _settings(settings)
    path = Path(path)
    ledger = ledger_for(settings)
    try:
        dest = inbox.move_to(path, settings.done_dir, department)
    except inbox.MoveFailed as exc:
        return settle_failure(path, department, exc, settings)
    ledger.record(path, "done", department=department, destination=os.fsencode(dest), retry_at=None, pid=None,
                  last_reason=None)
    return Outcome("done", path, destination=dest)


def due(entry: Entry | None, state: inbox.FileState, now: float | None = None) -> bool:
    """Whether a settled file in the inbox should be handed over now, given its ledger entry."""
    now = time.time() if now is None else now
    if entry is None or (entry.size, entry.mtime_ns) != (state.size, state.mtime_ns):
        return True
    if entry.state in ("waiting", "done", "quarantined"):
        return True  # never handed over, or a re-drop of a file that left once
    if entry.state == "retry":
        return entry.retry_at is None or now >= entry.retry_at
    return False  # handed_over / running: the watcher's `_check_run` decides when those have failed


def stale_reason(entry: Entry, now: float | None = None, *, document_limit: float = DOCUMENT_TIME_LIMIT_SECONDS,
                 handover_limit: float = HANDOVER_TIME_LIMIT_SECONDS) -> BaseException | None:
    """Why a run the ledger says is under way has in fact ended without moving its scan, or None."""
    now = time.time() if now is None else now
    if entry.state == "running":
        if not pid_alive(entry.pid, entry.pid_start):
            return ReaderCrashed("読み取り処理が途中で終了しました（プロセスが見つかりません）",
                                 f"process {entry.pid} that was archiving this file is gone")
        if entry.started_at and now - entry.started_at > document_limit:
            return ReaderCrashed("読み取りが制限時間内に終わりませんでした",
                                 f"running for {now - entry.started_at:.0f} s (limit {document_limit:.0f} s)")
    return None
