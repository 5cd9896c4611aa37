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
from collections.abc import Iterator


def local_slot_count() -> int:
    """Pages one worker process reads at once: KIROKU_OCR_CONCURRENCY, else one per core."""
    try:
        configured = int(os.environ.get("KIROKU_OCR_CONCURRENCY") or 0)
    except ValueError:
        configured = 0
    return max(1, configured or os.cpu_count() or 1)


@contextlib.contextmanager
def global_ocr_slot() -> Iterator[None]:
    """Hold one slot of the configured global limit while a page is read (no-op when unset).

    strict=True: a limit that is configured but missing on the server is an error the
    operator must see, not a silent "no limit".
    """
    name = os.environ.get("KIROKU_OCR_GLOBAL_LIMIT")
    if not name:
        from kiroku.config import load_settings

        name = load_settings().ocr_global_limit
    if not name:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(name, occupy=1, strict=True):
        yield
