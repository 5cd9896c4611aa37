"""What kind of failure stopped a scan, and what happens to the scan because of it.

Every stage raises one of three kinds, and the intake acts on the kind alone:

- ``InputRejected``: the scan itself can never be archived (unreadable, encrypted,
  empty, a symlink out of the inbox). It goes to quarantine at once, with a reason
  a records officer can act on.
- ``TransientFailure``: something around the scan is down for now (storage, the
  catalog database, the disk, the Prefect server). The scan stays in the inbox and
  is tried again later by itself; it is never quarantined for this.
- ``ReaderCrashed``: the process reading it died or hung. That may be the machine
  (memory, a kill) or the scan (a file that crashes a library), so it is tried again
  a bounded number of times, and quarantined with this reason after the last try.

Any other exception is a bug or an input we did not foresee: treated as rejected,
with its English detail kept after the Japanese reason.

Reasons are plain Japanese first, then the English detail in parentheses: the
records officer reads the first half, the operator the second.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Literal

FailureKind = Literal["rejected", "transient", "crashed"]

# a scan whose reading crashed or hung this many times is quarantined
MAX_CRASH_ATTEMPTS = 3


class KirokuFailure(Exception):
    """A failure with a Japanese explanation for the records officer and an English detail."""

    kind: FailureKind = "rejected"

    def __init__(self, japanese: str, detail: str = "") -> None:
        super().__init__(japanese_reason(japanese, detail))
        self.japanese = japanese
        self.detail = detail


class InputRejected(KirokuFailure, ValueError):
    """The scan can never be archived as it is: quarantine it with this reason."""

    kind: FailureKind = "rejected"


class TransientFailure(KirokuFailure):
    """Something the scan depends on is down for now: keep the scan and try again later."""

    kind: FailureKind = "transient"


class ReaderCrashed(KirokuFailure):
    """The process reading the scan died, or did not answer in time."""

    kind: FailureKind = "crashed"


class WorkerDiedWithOthers(TransientFailure):
    """The worker process died while it held this scan and others: one process, many suspects.

    Runs share the worker process, so a kill, the OOM killer or a restart takes every
    scan in flight with it; counting that as a crash of each would quarantine good scans
    that were only nearby (seen: a scan quarantined after three kills aimed at others).
    Such scans are retried with back-off instead. A scan that really kills the worker
    is soon the only one in flight (the back-off grows, the inbox drains), and is then
    counted as a crash of its own (ReaderCrashed) and quarantined after MAX_CRASH_ATTEMPTS.
    A worker ended by SIGKILL (kill -9 by a person or a script) is treated the same way,
    whatever it held: a SIGSEGV or abort is what a scan can cause. (The OOM killer also
    sends SIGKILL; pages are read in reader processes with a memory cap and images are
    refused above max_image_pixels, so a scan should not bring the worker itself there;
    if one does, it is retried at most every 10 minutes, never quarantined by mistake.)
    """


def japanese_reason(japanese: str, detail: str = "") -> str:
    """One line: the Japanese reason, and the English detail after it when there is one."""
    detail = " ".join(detail.split())
    return f"{japanese} ({detail})" if detail and detail not in japanese else japanese


def failure_kind(exc: BaseException) -> FailureKind:
    """How the intake must treat an exception raised anywhere while archiving a scan."""
    if isinstance(exc, KirokuFailure):
        return exc.kind
    # storage errors say themselves whether they can pass (processors.archive.storage)
    from processors.archive.storage import TransientStorageError

    if isinstance(exc, TransientStorageError):
        return "transient"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        return "transient"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    if _is_database_unavailable(exc):
        return "transient"
    if exc.__class__.__name__ in ("BrokenProcessPool", "BrokenExecutor"):
        return "crashed"
    return "rejected"


def _is_database_unavailable(exc: BaseException) -> bool:
    """The catalog database is locked, gone or refusing connections: it will come back."""
    try:
        from sqlalchemy.exc import OperationalError as SAOperationalError
        from sqlalchemy.exc import TimeoutError as SATimeoutError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return isinstance(exc, sqlite3.OperationalError)
    return isinstance(exc, (SAOperationalError, SATimeoutError, sqlite3.OperationalError))


def describe(exc: BaseException) -> str:
    """The reason to write for a records officer: Japanese first, English detail after."""
    if isinstance(exc, KirokuFailure):
        return str(exc)
    kind = failure_kind(exc)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if kind == "transient":
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return japanese_reason("ディスクの空きがありません。空きができしだい自動で再試行します", detail)
        if _is_database_unavailable(exc):
            return japanese_reason("目録データベースに接続できません。復旧後に自動で再試行します", detail)
        return japanese_reason("保存先ストレージに接続できません。復旧後に自動で再試行します", detail)
    if kind == "crashed":
        return japanese_reason("読み取り処理が異常終了しました", detail)
    return japanese_reason("このファイルは保存できませんでした", detail)
