"""`make run`: the embedded services, one ingest worker and the live terminal; Ctrl-C stops them all.

The worker is a child process (`python -m kiroku.supervise --worker`) that watches
the inbox and runs every scan as its own ingest-document flow run, in threads of
that one long-lived process, with the warm reader processes of kiroku/readers.py.
Measured against Prefect's `serve()` (a fresh Python process per flow run that
loads the OCR models again, ~10 s polling): see bench/watch_throughput.py and the
README for the figures. The flow runs are still logged on this instance's Prefect
server, named after their files, with their artifacts.

This process only supervises:
- it restarts the worker when it dies (scans it held are still in the inbox and are
  handed over again by the new worker's first look);
- it asks the services every few seconds whether they answer and says so in the
  terminal, and as a Prefect event, when one stops answering and when it is back;
- it stops every child on Ctrl-C, SIGTERM or SIGHUP however its output is piped
  (`make run | tee log` once left the worker running: the "stopping" message hit a
  closed pipe before the worker was stopped); the worker also asks the kernel to
  end it if this process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from kiroku.config import Settings

CHECK_EVERY = 5.0  # seconds between service checks
MISSES_BEFORE_DOWN = 2  # checks in a row without an answer before a service is reported down
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER = 60.0  # a worker that ran this long is healthy: the next restart is quick again
RECYCLE_EXIT = 75  # EX_TEMPFAIL: the worker ended itself to give its memory back; start it again now
PROGRESS_FD_ENV = "KIROKU_PROGRESS_FD"
SUPERVISOR_ENV = "KIROKU_SUPERVISOR_PID"
PREVIOUS_EXIT_ENV = "KIROKU_PREVIOUS_WORKER_EXIT"  # the exit code (negative: signal) of the worker replaced


def _safe(echo: Callable[[str], None]) -> Callable[[str], None]:
    """echo that never raises: a closed pipe must not stop the shutdown of the children."""
    def say(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            echo(text)
    return say


# --------------------------------------------------------------------------- the worker child


class Worker:
    """The ingest worker child: started, watched, restarted, stopped; its progress to the board."""

    def __init__(self, settings: Settings, on_progress: Callable[[str, str, dict], None],
                 on_exit: Callable[[int], None]) -> None:
        self.settings = settings
        self.on_progress = on_progress
        self.on_exit = on_exit
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.last_exit: int | None = None
        self.recycled = 0
        self._failures = 0
        self._next_start = 0.0

    def start(self) -> None:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, **{PROGRESS_FD_ENV: str(write_fd), SUPERVISOR_ENV: str(os.getpid()),
                                  "PYTHONUNBUFFERED": "1"})
        if self.last_exit is not None:  # how the previous worker ended: the new one judges its scans by it
            env[PREVIOUS_EXIT_ENV] = str(self.last_exit)
        try:
            self.proc = _spawn(self.settings, "worker.log", [sys.executable, "-m", "kiroku.supervise", "--worker"],
                               env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        self.started_at = time.monotonic()
        threading.Thread(target=self._read_progress, args=(read_fd,), daemon=True,
                         name="kiroku-progress").start()

    def _read_progress(self, fd: int) -> None:
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    event = json.loads(line)
                    self.on_progress(event["name"], event["step"], event.get("detail") or {})
                except (ValueError, KeyError, TypeError):
                    continue

    def check(self) -> None:
        """Restart the worker if it died, after a back-off that grows while it keeps dying."""
        now = time.monotonic()
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.last_exit = code
            self.proc = None
            if code == RECYCLE_EXIT:  # planned: no back-off, no warning
                self.recycled += 1
                self._next_start = now
            else:
                ran = now - self.started_at
                self._failures = 0 if ran > STABLE_AFTER else self._failures + 1
                self._next_start = now + RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
                self.on_exit(code)
        if self.proc is None and now >= self._next_start:
            self.restarts += 1
            self.start()

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        _stop_group(proc, timeout)  # the worker, its forkserver and every reader: one group


def _spawn(settings: Settings, log_name: str, cmd: list[str], env: dict[str, str],
           pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """A child in its own session (so one signal to its group reaches it and all it started),
    its output appended to var/run/<log_name>."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / log_name, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=pass_fds, env=env, start_new_session=True)


def _stop_group(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM to a child's process group, SIGKILL if it is still there after timeout; then
    SIGKILL to the group anyway, for grandchildren that outlived their parent."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _start_web(settings: Settings) -> subprocess.Popen:
    """`kiroku serve` on the configured host and port (127.0.0.1:8080 unless kiroku.toml [web] says otherwise)."""
    kiroku = Path(sys.executable).with_name("kiroku")
    cmd = [str(kiroku), "serve"] if kiroku.exists() else [sys.executable, "-m", "kiroku.cli", "serve"]
    cmd += ["--host", settings.web_host, "--port", str(settings.web_port)]
    return _spawn(settings, "web.log", cmd, dict(os.environ))


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (even by kill -9), so no worker is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    parent = os.environ.get(SUPERVISOR_ENV)
    if parent and os.getppid() != int(parent):
        sys.exit(0)  # the supervisor is already gone


def worker_main() -> int:
    """The worker child: readers warm, then the inbox watched; each scan its own flow run, in-process."""
    from kiroku.config import load_settings
    from kiroku.runtime import prepare_prefect

    from kiroku.readers import bound_malloc

    _die_with_parent()
    bound_malloc()  # the worker holds page images too (see kiroku/readers.py)
    settings = load_settings()
    prepare_prefect(settings, require_server=True)
    from flows import ingest
    from flows.watch import watch_inbox

    fd = os.environ.get(PROGRESS_FD_ENV)
    if fd:
        stream = os.fdopen(int(fd), "w", encoding="utf-8", buffering=1)
        lock = threading.Lock()

        def tell(name: str, step: str, detail: dict) -> None:
            line = json.dumps({"name": name, "step": step, "detail": detail}, ensure_ascii=False, default=str)
            with lock:
                stream.write(line + "\n")

        ingest.LISTENERS.append(tell)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us (SIGTERM)
    from kiroku.readers import shared_pool

    shared_pool(settings).wait_warm()
    ingest._progress(Path("-"), None, "ready")
    from kiroku.schedule import Scheduler

    Scheduler(settings).start()  # fixity check, daily summary, retention report: no deployments run them here
    stop = threading.Event()
    recycle = threading.Event()
    threading.Thread(target=watch_memory, args=(settings.worker_max_rss_mb, stop, recycle), daemon=True,
                     name="kiroku-memory").start()
    watch_inbox(settings, use_deployment=False, stop=stop, gate=storage_gate(settings))  # returns once the
    # runs it started have ended: the scans not handed over yet wait in the inbox for the next worker
    return RECYCLE_EXIT if recycle.is_set() else 0


def watch_memory(limit_mb: float, stop: threading.Event, recycle: threading.Event, every: float = 5.0) -> None:
    """Stop the watcher or the pool worker (and so this worker process, for the supervisor or systemd to
    start again) above limit_mb resident."""
    from kiroku.readers import _rss_kb

    while limit_mb and not stop.wait(every):
        rss_mb = _rss_kb(os.getpid())[0] / 1024
        if rss_mb > limit_mb:
            print(f"kiroku worker: 常駐メモリが {rss_mb:.0f} MB になったため、処理中の書類を終えてから作業プロセスを"
                  f"入れ替えます (resident memory {rss_mb:.0f} MB > {limit_mb:.0f} MB: finishing the runs in hand, "
                  f"then restarting)", file=sys.stderr, flush=True)
            recycle.set()
            stop.set()


def storage_gate(settings: Settings, every: float = CHECK_EVERY) -> Callable[[], bool]:
    """Whether storage answers, asked at most every few seconds: while it does not, the watcher
    hands nothing over (the scans wait in the inbox) and resumes by itself when it is back."""
    from kiroku import services

    last = {"at": -1e9, "ok": True}
    lock = threading.Lock()

    def gate() -> bool:
        with lock:
            now = time.monotonic()
            if now - last["at"] >= every:
                ok = services.s3_answers(settings, timeout=4.0)
                if ok != last["ok"]:
                    print("kiroku: 保存先ストレージが応答しないため、受付フォルダのスキャンは待機します "
                          "(storage does not answer; scans wait in the inbox)" if not ok else
                          "kiroku: 保存先ストレージが応答しました。受付を再開します (storage is back; intake resumes)",
                          file=sys.stderr, flush=True)
                last["ok"], last["at"] = ok, now
            return bool(last["ok"])
    return gate


# --------------------------------------------------------------------------- service checks


class ServiceMonitor:
    """Asks storage and Prefect whether they answer; reports each change once, then again when back."""

    def __init__(self, settings: Settings, report: Callable[[str, bool, float | None], None]) -> None:
        self.settings = settings
        self.report = report
        self.down_since: dict[str, float] = {}
        self.misses: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="kiroku-monitor")

    def checks(self) -> dict[str, Callable[[], bool]]:
        from kiroku import services

        out: dict[str, Callable[[], bool]] = {services.WEED: lambda: services.s3_answers(self.settings, timeout=4.0)}
        if self.settings.prefect_api_url:
            out[services.PREFECT] = lambda: services.prefect_answers(self.settings, timeout=4.0)
        else:
            out[services.PREFECT] = lambda: services.prefect_is_ours(self.settings, timeout=4.0)
        return out

    def check_once(self) -> None:
        for name, answers in self.checks().items():
            try:
                ok = answers()
            except Exception:  # noqa: BLE001 - a check that fails is a service that does not answer
                ok = False
            was_down = name in self.down_since
            if not ok:
                self.misses[name] = self.misses.get(name, 0) + 1
                if self.misses[name] < MISSES_BEFORE_DOWN:
                    continue  # one slow answer on a busy machine is not an outage
            else:
                self.misses[name] = 0
            if not ok and not was_down:
                self.down_since[name] = time.monotonic()
                self.report(name, False, None)
                _emit(name, False)
            elif ok and was_down:
                since = self.down_since.pop(name)
                self.report(name, True, since)
                _emit(name, True, time.monotonic() - since)

    def _loop(self) -> None:
        while not self.stop.wait(CHECK_EVERY):
            self.check_once()


def _emit(name: str, answering: bool, down_seconds: float | None = None) -> None:
    """A Prefect event an automation can act on (kiroku.service.down / kiroku.service.up)."""
    try:
        from prefect.events import emit_event

        emit_event(event=f"kiroku.service.{'up' if answering else 'down'}",
                   resource={"prefect.resource.id": f"kiroku.service.{name}", "prefect.resource.name": name},
                   payload={"down_seconds": round(down_seconds, 1) if down_seconds else None})
    except Exception:  # noqa: BLE001 - Prefect itself may be the one that is down
        pass


# --------------------------------------------------------------------------- make run


def run_all(settings: Settings, echo: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C (or SIGTERM/SIGHUP); returns the exit code. Stops only what it started."""
    from rich.console import Console

    from kiroku import services
    from kiroku.runtime import prepare_prefect
    from kiroku.terminal import Board

    say = _safe(echo)
    # Ctrl-C must stop everything even when a parent shell started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    say("kiroku: 保存先ストレージと Prefect を起動しています (starting the embedded services; the first start "
        "takes about half a minute)…")
    try:
        with services.running_services(settings) as statuses:
            for st in statuses:
                say(st.describe())
            api = prepare_prefect(settings, require_server=True)
            settings.inbox.mkdir(parents=True, exist_ok=True)
            board = Board(Console(stderr=True, soft_wrap=True))

            def worker_exited(code: int) -> None:
                board.print(f"[bold red]⚠ 作業プロセスが停止しました (exit code {code})。再起動します。"
                            f"処理中だったスキャンは受付フォルダに残っており、もう一度処理されます "
                            f"(the worker died; restarting it, its scans are retried)[/bold red]")

            ready = threading.Event()

            def progress(name: str, step: str, detail: dict) -> None:
                if step == "ready":
                    ready.set()
                else:
                    board.document(name, step, detail)

            worker = Worker(settings, progress, worker_exited)
            monitor = ServiceMonitor(settings, board.service)
            try:  # the worker is stopped before the services it uses
                worker.start()
                web = _start_web(settings)
                say("kiroku: 読み取りプロセスを準備しています (warming the readers)…")
                while not ready.wait(0.5):
                    worker.check()  # a worker that dies while starting is started again
                monitor.thread.start()
                # what another PC on the LAN opens when the services listen beyond loopback
                ui = (settings.prefect_api_url.removesuffix("/api") if settings.prefect_api_url
                      else settings.prefect_ui_url if settings.prefect_lan_exposed
                      else (api or settings.prefect_url).removesuffix("/api"))
                say("")
                say("kiroku is running. 受付を開始しました。")
                say(f"  Drop scans into   {settings.inbox}/<課名>/   (e.g. {settings.inbox}/総務課/)")
                say(f"  Watch the flows   {ui}")
                say(f"  Archivists' web   {settings.web_url}   "
                    "(users: .venv/bin/kiroku users add NAME --role 文書管理者 --clearance 2)")
                say("  Search            .venv/bin/kiroku search 契約      (or: .venv/bin/kiroku search --help)")
                say(f"  Done / problems   {settings.done_dir}  /  {settings.quarantine_dir}")
                from kiroku.schedule import describe

                say(f"  Scheduled         {describe(settings)[0]}")
                say("  Ctrl-C stops everything. Ctrl-C ですべて停止します。")
                with board:
                    while True:
                        time.sleep(0.5)
                        worker.check()
            finally:
                monitor.stop.set()
                say("stopping… 停止しています…")
                _stop_group(web if "web" in locals() else None)
                worker.stop()
    except KeyboardInterrupt:
        pass
    finally:
        say("stopped. 停止しました。")
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)

if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        raise SystemExit(worker_main())
    print("usage: python -m kiroku.supervise --worker (started by `kiroku run`)", file=sys.stderr)
    raise SystemExit(2)
