"""The watch folder: every complete scan dropped into the inbox becomes an ingest-document run.

A file is handed over only when it has stopped changing for a quiet period and no
process still has it open for writing, so a scan copied slowly over a share is read
once, whole. The watcher never stops on a bad file or an odd name:

- links are refused at once (the link itself goes to quarantine, its target is left alone);
- what was handed over, and how it ended, is in the intake ledger (var/state/), so a
  run that failed for now, crashed, died with its process or hung is handed over again
  when its retry time comes, without a restart, and a restart forgets nothing;
- a name watchfiles cannot decode (Shift_JIS from an old file server) only turns the
  event source off: the watcher goes on looking every second.

What executes a run is pluggable (`submit(path, department) -> bool`); this module
decides when and whether to hand a file over.
"""

from __future__ import annotations

import collections

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import watchfiles

from kiroku.config import Settings, usable_cpu_count
from kiroku.supervise import PREVIOUS_EXIT_ENV
from processors.archive import inbox, ledger
from processors.archive.failures import InputRejected, ReaderCrashed, WorkerDiedWithOthers
from processors.archive.names import display_name, encode_path

log = logging.getLogger("kiroku.watch")
DEPLOYMENT = "ingest-document/kiroku"

Submit = Callable[[Path, "str | None"], bool]


class InboxWatcher:
    """Tracks files in the inbox until they are complete, then hands each over until it leaves the inbox."""

    def __init__(self, settings: Settings, *, settle_seconds: float = 2.0, use_deployment: bool = False,
                 workers: int | None = None, submit: Submit | None = None,
                 gate: Callable[[], bool] | None = None,
                 document_limit: float = ledger.DOCUMENT_TIME_LIMIT_SECONDS,
                 handover_limit: float = ledger.HANDOVER_TIME_LIMIT_SECONDS) -> None:
        self.settings = settings
        self.settle_seconds = settle_seconds
        self.use_deployment = use_deployment
        self.document_limit = document_limit
        self.handover_limit = handover_limit
        # asked once per look before anything is handed over: while it says no (storage down),
        # scans wait in the inbox untouched instead of failing one by one
        self.gate = gate
        self.ledger = ledger.Ledger(settings.home)
        self._seen: dict[Path, tuple[inbox.FileState, float]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pruned = float("-inf")
        self._queued: set[Path] = set()  # handed to this process's own pool and not finished yet
        self._queued_guard = threading.Lock()
        self._deployment_runs: DeploymentRuns | None = None  # the scale-out hand-over's client
        if submit is not None:
            self.submit = submit
        elif use_deployment:
            self.submit = self._trigger_deployment
        else:
            from kiroku.runtime import start_ephemeral_server_once

            from kiroku.readers import shared_pool

            start_ephemeral_server_once()
            shared_pool(settings)  # readers warm up now, not on the first scan
            # documents in flight here: three per reader, so that while one is stored and
            # catalogued, or its run waits on the Prefect server (a SQLite lock answers 503 and
            # the client tries again 2 s later), the next ones' pages keep the readers busy
            workers = workers or 3 * max(1, settings.ocr_concurrency or usable_cpu_count())
            from flows.ingest import run_here_without_heartbeats

            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiroku-ingest",
                                            initializer=run_here_without_heartbeats)
            self.submit = self._submit_here
        self.failures: list[tuple[Path, str]] = []
        self.completed: list[tuple[Path, dict]] = []
        self.outcomes: list[ledger.Outcome] = []
        self.recover()

    # ------------------------------------------------------------------ restart

    def recover(self) -> None:
        """At start: runs left `running` by a dead process are a crash attempt; hand-overs of an
        earlier watcher whose run never reported are due again now."""
        dead = [e for e in self.ledger.entries("running") if not ledger.pid_alive(e.pid, e.pid_start)]
        in_flight = collections.Counter(e.pid for e in dead)
        killed = os.environ.get(PREVIOUS_EXIT_ENV) == str(-signal.SIGKILL)
        for entry in dead:
            why: BaseException
            if in_flight[entry.pid] > 1:  # one process, several scans: none of them is to blame yet
                why = WorkerDiedWithOthers(
                    "処理中に作業プロセスが停止しました（ほかの書類と同時）。自動で再試行します",
                    f"process {entry.pid} died holding {in_flight[entry.pid]} scans, this one among them")
            elif killed:  # kill -9 from outside (an operator, a restart script): not the scan's doing
                why = WorkerDiedWithOthers(
                    "処理中に作業プロセスが外部から停止されました（kill -9）。自動で再試行します",
                    f"process {entry.pid} was killed (SIGKILL) while it held this scan")
            else:
                why = ReaderCrashed("読み取り処理が途中で終了しました（kiroku の再起動前）",
                                    f"process {entry.pid} was archiving this file when kiroku stopped")
            self._settle(entry.path, entry.department, why)
            mark_run_crashed(entry.flow_run_id, str(why))
        for entry in self.ledger.entries("handed_over"):
            self.ledger.record(entry.path, "retry", retry_at=time.time())

    # ------------------------------------------------------------------ looking

    def scan(self, now: float | None = None) -> list[Path]:
        """One look at the inbox; returns the files handed over this time."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        root = self.settings.inbox
        found = inbox.scan(root)
        present = {e.path for e in found}
        for gone in set(self._seen) - present:
            del self._seen[gone]
        # only rows still in play: done/quarantined history can be large, and a file present
        # again after leaving once is a re-drop, treated as new
        known = {os.fsencode(os.path.abspath(e.path)): e for e in self.ledger.entries(*ledger.ACTIVE)}
        ready = []
        writers: set[tuple[int, int]] | None = None
        mounts: dict[str, str] | None = None  # read once per look, only when a new file is seen
        open_gate: bool | None = None
        for item in found:
            path = item.path
            if item.link:
                self._refuse_link(path)
                continue
            entry = known.get(os.fsencode(os.path.abspath(path)))
            if entry is not None and entry.state in ("handed_over", "running"):
                self._check_run(entry, wall)
                continue
            state = item.state
            if not ledger.due(entry, state, wall):
                continue
            previous = self._seen.get(path)
            if previous is None or previous[0] != state:
                self._seen[path] = (state, now)
                # complete on first sight only if it arrived whole (renamed or moved in, copied with
                # its times kept) on a disk whose clock is ours; otherwise it must keep still a while
                if previous is not None:
                    continue
                if mounts is None:
                    mounts = inbox.mount_types()
                if not (inbox.clock_is_ours(path, mounts) and inbox.quiet_for(state, self.settle_seconds, wall)):
                    continue
            elif now - previous[1] < self.settle_seconds:
                continue
            if open_gate is None:
                open_gate = self.gate() if self.gate is not None else True
            if not open_gate:
                continue  # settled, but storage is down: it stays in the inbox for a later look
            if writers is None:
                writers = inbox.open_for_writing_set()  # once per look, only when something has settled
            if inbox.open_for_writing(path, writers):
                continue
            try:
                department = inbox.department_for(path, root)
            except inbox.DepartmentRefused as exc:
                self._settle(path, None, exc)
                continue
            fresh = entry is None or (entry.size, entry.mtime_ns) != (state.size, state.mtime_ns) \
                or entry.state in ("done", "quarantined")
            # recorded before the run can start, so the run's own mark_running is never overwritten
            self.ledger.handed_over(path, department, state, fresh=fresh)
            if self.submit(path, department):
                self._seen.pop(path, None)
                ready.append(path)
            else:
                self.ledger.record(path, "retry", retry_at=wall)
        if now - self._pruned >= 30:
            self.ledger.prune(present)
            self._pruned = now
        return ready

    def _check_run(self, entry: ledger.Entry, wall: float) -> None:
        """A run the ledger says is under way: has it in fact ended, died or hung?"""
        reason = ledger.stale_reason(entry, wall, document_limit=self.document_limit)
        if reason is not None:
            self._settle(entry.path, entry.department, reason)
            if entry.state == "running" and not ledger.pid_alive(entry.pid, entry.pid_start):
                mark_run_crashed(entry.flow_run_id, str(reason))
        elif entry.state == "handed_over" and entry.handed_at and wall - entry.handed_at > self.handover_limit \
                and entry.path not in self._queued:  # waiting in our own pool is not lost
            log.warning("%s: 引き渡した処理が始まらないため、もう一度引き渡します", display_name(entry.path.name))
            self.ledger.record(entry.path, "retry", retry_at=wall)

    def _refuse_link(self, path: Path) -> None:
        try:
            department = inbox.department_for(path, self.settings.inbox)
        except inbox.DepartmentRefused:
            department = None
        try:
            inbox.refuse_link(path)
        except InputRejected as exc:
            self._settle(path, department, exc)

    def _settle(self, path: Path, department: str | None, exc: BaseException) -> ledger.Outcome:
        outcome = ledger.settle_failure(path, department, exc, self.settings)
        self.outcomes.append(outcome)
        (log.error if outcome.action == "quarantined" else log.warning)("%s", outcome.message)
        return outcome

    # ------------------------------------------------------------------ handing over

    def _trigger_deployment(self, path: Path, department: str | None) -> bool:
        shown = display_name(path.name)
        name = f"{department}/{shown}" if department else shown
        if self._deployment_runs is None:
            self._deployment_runs = DeploymentRuns(DEPLOYMENT)
        try:
            self._deployment_runs.start({"path": encode_path(path), "department": department}, name)
        except Exception as exc:  # noqa: BLE001 - the server may still be starting; try again next look
            log.warning("could not start a run for %s yet: %s", shown, exc)
            return False
        log.info("started ingest-document run %s", name)
        return True

    def _submit_here(self, path: Path, department: str | None) -> bool:
        assert self._pool is not None
        with self._queued_guard:
            self._queued.add(path)
        self._pool.submit(self._run_here, path, department)
        return True

    def _run_here(self, path: Path, department: str | None) -> None:
        from flows.ingest import ingest_document

        error: BaseException | None = None
        try:
            result = ingest_document(encode_path(path), department)
            self.completed.append((path, result))
        except Exception as exc:  # noqa: BLE001 - settled (quarantined or kept) by the flow
            error = exc
            self.failures.append((path, str(exc)))
            log.error("%s was not archived: %s", display_name(path.name), exc)
        finally:
            with self._queued_guard:
                self._queued.discard(path)
        self.after_run(path, department, error)

    def after_run(self, path: Path, department: str | None, error: BaseException | None) -> None:
        """A run ended. If it left the ledger saying it is still under way (it never settled
        its scan), settle it here, so the scan is tried again or quarantined, never stranded."""
        entry = self.ledger.get(path)
        if entry is None or entry.state not in ("handed_over", "running") or not os.path.lexists(path):
            return
        self._settle(path, department, error or ReaderCrashed(
            "処理が書類を移動しないまま終わりました", "the run ended without settling its scan"))

    def close(self, wait: bool = True) -> None:
        """Wait for the runs under way; scans handed over but not started stay in the inbox, and the
        ledger hands them over again at the next start (recover): a worker that stops to give its
        memory back must not first work through a queue of dozens."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
        if self._deployment_runs is not None:
            self._deployment_runs.close()


class DeploymentRuns:
    """Starts runs of one deployment for workers elsewhere to pick up: one Prefect client for
    as long as the hand-over lasts, and the deployment looked up once.

    Prefect's run_deployment opens a client per call (and asks for a CSRF token) and looks
    the deployment up by name each time: two of about 22 requests to the server per one-page
    document (bench/scale_out.py --count-requests). A deployment deployed again under the
    same name (a new id) is looked up again when the old id is not found. Not shared between
    threads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._client = None
        self._deployment_id = None

    def start(self, parameters: dict, run_name: str | None = None):  # noqa: ANN201 - prefect FlowRun
        """Create one flow run of the deployment (Scheduled, for a worker to take); returns it."""
        from prefect import get_client
        from prefect.exceptions import PrefectHTTPStatusError

        if self._client is None:
            client = get_client(sync_client=True)
            client.__enter__()
            self._client = client
        for attempt in (1, 2):
            if self._deployment_id is None:
                self._deployment_id = self._client.read_deployment_by_name(self.name).id
            try:
                return self._client.create_flow_run_from_deployment(self._deployment_id, parameters=parameters,
                                                                    name=run_name)
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404 or attempt == 2:
                    raise
                self._deployment_id = None  # deployed again under its name: look it up once more
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None


def mark_run_crashed(flow_run_id: str | None, message: str) -> bool:
    """Mark the Prefect run of a process that died Crashed; returns whether it was changed.

    Runs execute inside the worker process, so when it dies (kill -9, the OOM killer)
    nothing tells the server, and the run would show "Running" in the UI for good.
    The ledger remembers which run held the scan; the watcher that notices the dead
    process says so here. A run already in a final state is left as it is.
    """
    if not flow_run_id:
        return False
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return False
            client.set_flow_run_state(flow_run_id, Crashed(message=f"処理プロセスが停止しました: {message}"),
                                      force=True)
        return True
    except Exception as exc:  # noqa: BLE001 - Prefect may be down too; the scan itself is already settled
        log.warning("could not mark flow run %s as crashed: %s", flow_run_id, exc)
        return False


def watch_inbox(settings: Settings, *, settle_seconds: float = 2.0, use_deployment: bool = False,
                stop: threading.Event | None = None, submit: Submit | None = None,
                gate: Callable[[], bool] | None = None, poll_seconds: float = 1.0) -> None:
    """Run until stopped: wake on file-system events, and look at least every second anyway
    (events can be missed on network shares, and are lost for names watchfiles cannot decode)."""
    settings.inbox.mkdir(parents=True, exist_ok=True)
    watcher = InboxWatcher(settings, settle_seconds=settle_seconds, use_deployment=use_deployment, submit=submit,
                           gate=gate)
    stop = stop or threading.Event()
    try:
        events = True
        while not stop.is_set():
            if events:
                try:
                    for _ in watchfiles.watch(settings.inbox, stop_event=stop, rust_timeout=int(poll_seconds * 1000),
                                              yield_on_timeout=True, raise_interrupt=False):
                        _look(watcher)
                        if stop.is_set():
                            break
                    continue
                except RuntimeError as exc:  # WatchfilesRustInternalError: "Unable to decode path"
                    events = False
                    log.warning("受付フォルダの変更通知が使えなくなりました。1秒ごとの確認で監視を続けます (%s)", exc)
            _look(watcher)
            stop.wait(poll_seconds)
    finally:
        watcher.close(wait=True)


def _look(watcher: InboxWatcher) -> None:
    """One scan; an unexpected error is logged and the next look tries again (the watch never stops)."""
    try:
        watcher.scan()
    except Exception:  # noqa: BLE001 - e.g. the ledger locked for a moment
        log.exception("受付フォルダの確認に失敗しました。次の確認で再試行します")
