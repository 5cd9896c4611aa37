"""OCR slots shared by every worker machine: a Prefect global concurrency limit.

Each worker process already limits itself to its own cores (flows.ingest.OCR_SLOTS).
With several machines against one Prefect server, the operator may also cap the
pages read at once across all of them (deploy/prefect.yaml: `prefect gcl create
ocr-pages --limit N`), e.g. to protect a shared storage link or licence-limited
hardware. The limit's name is the setting ocr_global_limit (KIROKU_OCR_GLOBAL_LIMIT);
unset, nothing is asked of the server.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from kiroku.config import usable_cpu_count


def local_slot_count() -> int:
    """Pages one worker process reads at once: KIROKU_OCR_CONCURRENCY, else one per core."""
    try:
        configured = int(os.environ.get("KIROKU_OCR_CONCURRENCY") or 0)
    except ValueError:
        configured = 0
    return max(1, configured or usable_cpu_count())


_local_gates: dict[int, threading.BoundedSemaphore] = {}
_local_gates_lock = threading.Lock()


@contextlib.contextmanager
def local_reader_slot(size: int) -> Iterator[None]:
    """Wait here, not on the server, for one of this process's `size` readers.

    A worker has several runs in flight and one reader per core; without this gate a run
    would take a global slot and then queue for a busy reader while holding it, so one
    worker could hold every slot of the cluster while reading one page at a time and the
    other machines stood idle (bench/scale_out.py: 2 workers gave 1.01x of one)."""
    size = max(1, size)
    with _local_gates_lock:
        gate = _local_gates.setdefault(size, threading.BoundedSemaphore(size))
    with gate:
        yield


@contextlib.contextmanager
def global_ocr_slot(local_readers: int) -> Iterator[None]:
    """Hold one slot of the configured global limit while a page is read (no-op when unset).

    The slot is taken inside local_reader_slot(): it is then held only by a page one of
    this process's `local_readers` is free to read now. strict=True: a limit that is
    configured but missing on the server is an error the operator must see, not a silent
    "no limit".
    """
    name = os.environ.get("KIROKU_OCR_GLOBAL_LIMIT")
    if not name:
        from kiroku.config import load_settings

        name = load_settings().ocr_global_limit
    if not name:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with local_reader_slot(local_readers), concurrency(name, occupy=1, strict=True):
        yield
