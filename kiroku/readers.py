"""Warm reader processes that may die: the one place pages are read, for `kiroku process` and the flows.

Why our own small pool rather than concurrent.futures.ProcessPoolExecutor: when one
worker of a ProcessPoolExecutor dies (a SIGSEGV inside a native OCR library, the
OOM killer, kill -9) the whole executor is "broken" and every page in flight, of
every document, fails with it; and it has no time limit, so a page that hangs
(observed: 4.5 min at 0 % CPU inside OpenVINO) holds a core for good. Here:

- N reader processes (one per core by default) are forked from a forkserver that
  imported the heavy modules once; each loads and warms the OCR models once;
- a page is sent to one reader; if that reader dies, only its page fails, with
  `processors.archive.failures.ReaderCrashed`, and a fresh reader takes its place;
- a page that takes longer than its time limit gets its reader killed and replaced,
  and fails the same way;
- memory is bounded: a reader is replaced, between pages, after `max_jobs` jobs or
  when its resident memory passes `max_rss_mb`. The peak resident memory (VmHWM) of
  every reader is kept in `stats()` so benchmarks can state it.

One thread in the calling process looks after each reader (sends a job, waits for
the answer, the reader's death or the deadline, whichever comes first). Jobs are
plain picklable callables, so the same pool runs page reading, metadata extraction
and PDF/A writing.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from kiroku.config import usable_cpu_count
from processors.archive.failures import ReaderCrashed

log = logging.getLogger("kiroku.readers")

# imported once in the forkserver, so every reader starts with them loaded
PRELOAD = ["processors.document", "processors.reading.ocr", "processors.reading.prepare",
           "processors.reading.pdfa", "processors.records.metadata"]
DEFAULT_TIME_LIMIT = 120.0  # seconds for one job before its reader is killed
# glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
# page images (5-30 MB each) come from the heap arenas of whichever thread decoded them and
# are not given back: resident memory then only grows. A fixed threshold keeps every block
# above 1 MB in its own mapping, returned to the system when freed (bench/watch_throughput.py
# --soak shows the difference).
MMAP_THRESHOLD = 1024 * 1024
ARENA_MAX = 4


def bound_malloc() -> bool:
    """Fix glibc's mmap threshold (and cap its arenas) in this process; False when not glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        m_mmap_threshold, m_arena_max = -3, -8  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(libc.mallopt(m_arena_max, ARENA_MAX))
    except (OSError, AttributeError):
        return False
STOP_GRACE = 5.0


def _rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB from /proc; (0, 0) when it is gone or not Linux."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _reader_main(conn: Connection, engine: str) -> None:
    """A reader process: single-threaded libraries, warm models, then jobs until told to stop.

    Ctrl-C at the terminal reaches the whole process group; a reader ignores it and
    is stopped by its pool (or ends by itself when the pool's process is gone and
    the pipe closes).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    bound_malloc()
    os.environ["OMP_THREAD_LIMIT"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - opencv is a dependency
        pass
    if engine:
        from processors.reading.ocr import warm_up

        warm_up(engine)
        _warm_extraction()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, args = job
        try:
            result = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - sent back to the caller as it is
            result = ("err", exc)
        try:
            conn.send(result)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            conn.send(("err", RuntimeError(f"{type(exc).__name__}: {exc} (while returning "
                                           f"{type(result[1]).__name__})")))


def _warm_extraction() -> None:
    """Load the extraction's rules and data files now: on a first document they took 6 s."""
    try:
        from processors.records.extract import extract_from_text

        extract_from_text("新総第1号\n令和7年4月1日\n各課長　様\n総務部長\n庁舎の点検について（通知）\n")
    except Exception:  # noqa: BLE001 - warming is an optimisation; the real call reports errors
        log.debug("extraction warm-up failed", exc_info=True)


@dataclass
class _Job:
    future: Future
    fn: Callable[..., Any]
    args: tuple
    time_limit: float
    label: str


@dataclass
class ReaderStats:
    """What one reader slot has done so far (a slot keeps its number across replacements)."""

    slot: int
    pid: int | None = None
    jobs: int = 0  # jobs of the current process
    total_jobs: int = 0
    crashes: int = 0
    timeouts: int = 0
    replaced: int = 0  # recycled for memory or job count
    peak_rss_mb: float = 0.0  # highest VmHWM of any process this slot ran
    busy_with: str | None = None
    peaks: list[float] = field(default_factory=list)  # VmHWM of each finished process, MB


class _Slot:
    """One reader process and the thread that feeds it."""

    def __init__(self, pool: "ReaderPool", number: int) -> None:
        self.pool = pool
        self.stats = ReaderStats(slot=number)
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.thread = threading.Thread(target=self._loop, name=f"kiroku-reader-{number}", daemon=True)

    # ---------------------------------------------------------------- process life
    def start_process(self) -> None:
        parent, child = self.pool.ctx.Pipe(duplex=True)
        proc = self.pool.ctx.Process(target=_reader_main, args=(child, self.pool.engine),
                                     name=f"kiroku-reader-{self.stats.slot}", daemon=True)
        proc.start()
        child.close()
        self.proc, self.conn = proc, parent
        self.stats.pid, self.stats.jobs = proc.pid, 0

    def _note_peak(self) -> None:
        if self.proc is not None and self.proc.pid:
            _, hwm = _rss_kb(self.proc.pid)
            if hwm:
                self.stats.peak_rss_mb = max(self.stats.peak_rss_mb, hwm / 1024)

    def stop_process(self, *, kill: bool = False) -> None:
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        if proc is None:
            return
        _, hwm = _rss_kb(proc.pid) if proc.pid else (0, 0)
        if hwm:
            self.stats.peaks.append(round(hwm / 1024, 1))
            self.stats.peak_rss_mb = max(self.stats.peak_rss_mb, hwm / 1024)
        if not kill and conn is not None:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
            proc.join(STOP_GRACE)
        if proc.is_alive():
            proc.kill()
            proc.join(STOP_GRACE)
        if conn is not None:
            conn.close()
        proc.close()

    def _recycle_if_due(self) -> None:
        """Replace the reader between jobs when it has read enough pages or grown too large."""
        if self.proc is None:
            return
        rss, _ = _rss_kb(self.proc.pid)
        too_big = self.pool.max_rss_mb and rss / 1024 > self.pool.max_rss_mb
        if self.stats.jobs >= self.pool.max_jobs or too_big:
            log.info("replacing reader %s after %d jobs (%.0f MB resident)", self.proc.pid,
                     self.stats.jobs, rss / 1024)
            self.stop_process()
            self.stats.replaced += 1
            self.start_process()

    # ---------------------------------------------------------------- the feeding thread
    def _loop(self) -> None:
        while True:
            job = self.pool.jobs.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                outcome = self._run(job)
            except BaseException as exc:  # noqa: BLE001 - never lose a future
                outcome = ("err", exc)
            finally:
                self.stats.busy_with = None
            kind, payload = outcome
            if kind == "ok":
                job.future.set_result(payload)
            else:
                job.future.set_exception(payload)
            self.stats.total_jobs += 1
            if self.proc is None and not self.pool.closed:
                self.start_process()
            elif self.proc is not None:
                self._note_peak()
                self._recycle_if_due()

    def _run(self, job: _Job) -> tuple[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self.stop_process(kill=True)
            self.start_process()
        for attempt in (1, 2):
            assert self.conn is not None and self.proc is not None
            pid = self.proc.pid
            try:
                self.conn.send((job.fn, job.args))
                break
            except (OSError, ValueError) as exc:
                if attempt == 2:
                    return self._crashed(job, f"no reader could take {job.label or 'the job'}: {exc}")
                # the reader died before it had the job, so the job is not to blame: a fresh reader gets it
                self.stop_process(kill=True)
                self.start_process()
        assert self.conn is not None and self.proc is not None
        self.stats.jobs += 1
        self.stats.busy_with = job.label
        ready = wait([self.conn, self.proc.sentinel], timeout=job.time_limit)
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass  # died while answering: fall through to a crash
        if not ready:
            self.stats.timeouts += 1
            self.stop_process(kill=True)
            return ("err", ReaderCrashed(
                "読み取りが制限時間内に終わりませんでした。読み取り処理を再起動しました",
                f"{job.label or 'job'} took longer than {job.time_limit:.0f} s; reader {pid} was killed"))
        return self._crashed(job, None)

    def _crashed(self, job: _Job, detail: str | None) -> tuple[str, Any]:
        proc = self.proc
        code = None
        if proc is not None:
            proc.join(1.0)
            code = proc.exitcode
        self.stats.crashes += 1
        self.stop_process(kill=True)
        if detail is None:
            how = (f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exit code {code}")
            detail = f"reader for {job.label or 'a job'} died ({how})"
        log.warning("%s", detail)
        return ("err", ReaderCrashed("読み取り処理が異常終了しました", detail))


class ReaderPool:
    """N warm reader processes that may die; see the module docstring."""

    def __init__(self, engine: str = "", size: int | None = None, *, max_jobs: int = 200,
                 max_rss_mb: float = 1500.0, preload: list[str] | None = None) -> None:
        self.engine = engine
        self.size = max(1, size or usable_cpu_count())
        self.max_jobs = max(1, max_jobs)
        self.max_rss_mb = max_rss_mb
        self.closed = False
        # set before the forkserver starts, so the libraries it preloads see them at import
        os.environ["OMP_THREAD_LIMIT"] = "1"
        os.environ["OMP_NUM_THREADS"] = "1"
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD if preload is None else preload)
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._slots = [_Slot(self, i) for i in range(self.size)]
        for slot in self._slots:  # start all now: the models warm while the first scan is decoded
            slot.start_process()
        for slot in self._slots:
            slot.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, time_limit: float | None = None,
               label: str = "") -> Future:
        """Run fn(*args) in a reader; the future fails with ReaderCrashed if the reader dies or hangs."""
        if self.closed:
            raise RuntimeError("the reader pool is closed")
        future: Future = Future()
        self.jobs.put(_Job(future, fn, args, time_limit or DEFAULT_TIME_LIMIT, label))
        return future

    def busy(self) -> dict[int, str]:
        """{reader pid: label of the job it holds}, for tests and the live terminal."""
        return {s.stats.pid: s.stats.busy_with for s in self._slots
                if s.stats.busy_with is not None and s.stats.pid is not None}

    def wait_warm(self, timeout: float = 180.0) -> bool:
        """Block until every reader has loaded its models (each answered a first, empty job)."""
        futures = [self.submit(time.sleep, 0.2, label="warm-up") for _ in range(self.size)]
        deadline = time.monotonic() + timeout
        try:
            for f in futures:
                f.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - a slow start is not an error; pages wait for their reader
            return False
        return True

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.pid]

    def stats(self) -> list[ReaderStats]:
        for slot in self._slots:
            slot._note_peak()
        return [slot.stats for slot in self._slots]

    def close(self) -> None:
        """Stop every reader (jobs still queued fail as cancelled)."""
        if self.closed:
            return
        self.closed = True
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
        for _ in self._slots:
            self.jobs.put(None)
        for slot in self._slots:
            slot.thread.join(timeout=DEFAULT_TIME_LIMIT)
            slot.stop_process()

    def __enter__(self) -> "ReaderPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def page_time_limit(source: Any, base: float = DEFAULT_TIME_LIMIT, per_megapixel: float = 4.0) -> float:
    """A generous limit for one page: the base plus a share for its size (a 600 dpi A3 page
    is 70 megapixels and legitimately takes several times an A4 page's time)."""
    image = getattr(source, "image", None)
    size = getattr(image, "size", None)
    mpx = (size[0] * size[1] / 1e6) if size else 0.0
    return base + per_megapixel * mpx


_shared: ReaderPool | None = None
_shared_lock = threading.Lock()


def shared_pool(settings: Any) -> ReaderPool:
    """The process's one reader pool for the flows, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed:
            _shared = ReaderPool(settings.ocr_engine, settings.ocr_concurrency or None,
                                 max_jobs=settings.reader_max_jobs, max_rss_mb=settings.reader_max_rss_mb)
            atexit.register(_shared.close)
        return _shared


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll predicate until it holds or timeout passes (tests and benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
