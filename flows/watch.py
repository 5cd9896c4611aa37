"""The watch folder: every complete scan dropped into the inbox becomes an ingest-document run.

A file is handed over only when it has stopped changing for a quiet period and no
process still has it open for writing, so a scan copied slowly over a share is read
once, whole. The watcher never stops on a bad file: the flow quarantines it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import watchfiles

from kiroku.config import Settings
from processors.archive import inbox

log = logging.getLogger("kiroku.watch")
DEPLOYMENT = "ingest-document/kiroku"


class InboxWatcher:
    """Tracks files in the inbox until they are complete, then hands each over exactly once."""

    def __init__(self, settings: Settings, *, settle_seconds: float = 2.0, use_deployment: bool = False,
                 workers: int | None = None, gate: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.gate = gate  # False while storage is down: scans wait in the inbox, none fails for it
        self.settle_seconds = settle_seconds
        self.use_deployment = use_deployment
        self._seen: dict[Path, tuple[inbox.FileState, float]] = {}
        self._submitted: dict[Path, inbox.FileState] = {}
        self._retry_at: dict[Path, float] = {}  # kept in the inbox after a passing fault: hand over again then
        if not use_deployment:
            from kiroku.readers import shared_pool
            from kiroku.runtime import start_ephemeral_server_once

            start_ephemeral_server_once()
            shared_pool(settings)  # readers warm up now, not on the first scan
        # documents in flight in this process: two per reader, so that while one document is
        # stored and catalogued the next one's pages already keep the readers busy
        workers = workers or 2 * max(1, settings.ocr_concurrency or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiroku-ingest")
        self.failures: list[tuple[Path, str]] = []
        self.completed: list[tuple[Path, dict]] = []

    def scan(self, now: float | None = None) -> list[Path]:
        """One look at the inbox; returns the files handed over this time."""
        now = time.monotonic() if now is None else now
        root = self.settings.inbox
        present = {p for p in root.rglob("*") if inbox.is_candidate(p)}
        for gone in set(self._seen) - present:
            del self._seen[gone]
        for gone in set(self._submitted) - present:
            del self._submitted[gone]
            self._retry_at.pop(gone, None)
        for path, due in list(self._retry_at.items()):
            if now >= due:  # its retry is due: forget the hand-over, so it is handed over again
                self._submitted.pop(path, None)
                del self._retry_at[path]
        ready = []
        for path in sorted(present):
            state = inbox.file_state(path)
            if state is None:
                continue
            if self._submitted.get(path) == state:
                continue  # handed over already and not changed since: the run will move it
            previous = self._seen.get(path)
            if previous is None or previous[0] != state:
                self._seen[path] = (state, now)
                continue
            if now - previous[1] < self.settle_seconds or inbox.open_for_writing(path):
                continue
            if self._hand_over(path):
                self._submitted[path] = state
                self._seen.pop(path, None)
                ready.append(path)
        return ready

    def _hand_over(self, path: Path) -> bool:
        if self.gate is not None and not self.gate():
            return False
        department = inbox.department_for(path, self.settings.inbox)
        if self.use_deployment:
            return self._trigger_deployment(path, department)
        self._pool.submit(self._run_here, path, department)
        return True

    def _trigger_deployment(self, path: Path, department: str | None) -> bool:
        from prefect.deployments import run_deployment

        name = f"{department}/{path.name}" if department else path.name
        try:
            run_deployment(DEPLOYMENT, parameters={"path": str(path), "department": department},
                           flow_run_name=name, timeout=0, as_subflow=False)
        except Exception as exc:  # noqa: BLE001 - the server may still be starting; try again next look
            log.warning("could not start a run for %s yet: %s", path.name, exc)
            return False
        log.info("started ingest-document run %s", name)
        return True

    def _run_here(self, path: Path, department: str | None) -> None:
        from flows.ingest import ingest_document

        try:
            result = ingest_document(str(path), department)
            self.completed.append((path, result))
        except Exception as exc:  # noqa: BLE001 - already quarantined and logged by the flow
            self.failures.append((path, str(exc)))
            log.error("%s was not archived: %s", path.name, exc)
            from flows.ingest import SETTLED

            settled = SETTLED.pop(str(path), None)
            if settled is not None and settled.disposition == "kept" and settled.retry_at is not None:
                import datetime as dt

                wait = (settled.retry_at - dt.datetime.now(dt.timezone.utc)).total_seconds()
                self._retry_at[path] = time.monotonic() + max(0.0, wait)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


def watch_inbox(settings: Settings, *, settle_seconds: float = 2.0, use_deployment: bool = False,
                stop: threading.Event | None = None, gate: Callable[[], bool] | None = None) -> None:
    """Run until stopped: wake on file-system events, and look at least every second anyway
    (events can be missed on network shares)."""
    settings.inbox.mkdir(parents=True, exist_ok=True)
    watcher = InboxWatcher(settings, settle_seconds=settle_seconds, use_deployment=use_deployment, gate=gate)
    stop = stop or threading.Event()
    try:
        for _ in watchfiles.watch(settings.inbox, stop_event=stop, rust_timeout=1000, yield_on_timeout=True,
                                  raise_interrupt=False):
            watcher.scan()
            if stop.is_set():
                break
    finally:
        watcher.close(wait=True)
