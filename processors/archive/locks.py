"""One pass at a time per scan content: a lock per SHA-256 under var/locks/.

Two copies of one scan dropped at once, a retry racing a slow first attempt, or the
watcher and `kiroku ingest` handling the same file must not both decide "not yet
archived" and both store it. The stretch "is it archived? -> store -> catalog" runs
under this lock. It is an flock(2) lock, so it is released by the kernel when the
holding process dies (kill -9 included) and never needs cleaning up by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# flock locks belong to open file descriptions, so threads of one process need their own guard
_thread_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def _thread_lock(sha256: str) -> threading.Lock:
    with _guard:
        return _thread_locks.setdefault(sha256, threading.Lock())


@contextlib.contextmanager
def content_lock(home: Path, sha256: str) -> Iterator[None]:
    """Hold the lock for this content, waiting for whoever holds it now."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    folder = home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with _thread_lock(sha256):
        fd = os.open(folder / f"{sha256}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
