"""The intake ledger and the watcher that hands over from it: nothing waits for a restart.

Runs are real processes started by the watcher's pluggable hand-over: one that is
killed (SIGKILL) while it holds a scan, one that hangs, one that fails for now and
then succeeds. The watcher must notice each by itself and hand the scan over again,
quarantining it only after MAX_CRASH_ATTEMPTS crashes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from processors.archive import ledger
from processors.archive.failures import MAX_CRASH_ATTEMPTS, InputRejected, TransientFailure

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from kiroku.config import load_settings

    monkeypatch.setenv("KIROKU_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("KIROKU_INBOX", str(tmp_path / "inbox"))
    monkeypatch.setenv("KIROKU_CONFIG", str(tmp_path / "no-kiroku.toml"))
    monkeypatch.setattr(ledger, "FIRST_RETRY_SECONDS", 0.3)  # seconds instead of 15 s, for the test
    (tmp_path / "inbox").mkdir()
    return load_settings()


class Runs:
    """A hand-over that runs each scan in a real child process executing `code`."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.handed: list[Path] = []
        self.procs: list[subprocess.Popen] = []

    def __call__(self, path: Path, department: str | None) -> bool:
        self.handed.append(path)
        env = {**os.environ, "PYTHONPATH": str(REPO), "RUN_PATH": os.fsdecode(os.fsencode(path)),
               "RUN_NO": str(len(self.handed))}
        proc = subprocess.Popen([sys.executable, "-c", self.code], env=env)
        self.procs.append(proc)
        threading.Thread(target=proc.wait, daemon=True).start()  # reaped, as a worker's parent would
        return True

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _until(watcher, predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watcher.scan()
        if predicate():
            return True
        time.sleep(0.2)
    return False


KILLED = """
import os, signal
from processors.archive import ledger
ledger.mark_running(os.environ["RUN_PATH"])
os.kill(os.getpid(), signal.SIGKILL)  # the reader dies holding the scan (as SIGSEGV or OOM would)
"""


def test_a_run_killed_mid_scan_is_handed_over_again_then_quarantined(settings) -> None:
    from flows.watch import InboxWatcher

    scan = settings.inbox / "総務課" / "落ちる.tif"
    scan.parent.mkdir()
    scan.write_bytes(b"II*\x00crash")
    runs = Runs(KILLED)
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=runs)
    quarantined = settings.quarantine_dir / "総務課" / "落ちる.tif"
    try:
        assert _until(watcher, quarantined.exists), f"handed over {len(runs.handed)} times"
    finally:
        runs.stop()
    assert len(runs.handed) == MAX_CRASH_ATTEMPTS
    reason = Path(f"{quarantined}.error.txt").read_text(encoding="utf-8")
    assert f"{MAX_CRASH_ATTEMPTS}回続けて異常終了" in reason and reason.startswith("この書類は保管できませんでした")
    entry = watcher.ledger.get(scan)
    assert entry.state == "quarantined" and entry.attempts == MAX_CRASH_ATTEMPTS
    assert [o.action for o in watcher.outcomes] == ["retry"] * (MAX_CRASH_ATTEMPTS - 1) + ["quarantined"]


TRANSIENT_THEN_OK = """
import os
from pathlib import Path
from processors.archive import ledger
from processors.archive.failures import TransientFailure
ledger.FIRST_RETRY_SECONDS = 0.3  # as in the test process
path = Path(os.environ["RUN_PATH"])
ledger.mark_running(path)
if os.environ["RUN_NO"] == "1":
    ledger.settle_failure(path, None, TransientFailure("保存先ストレージに接続できません", "test: storage down"))
else:
    ledger.finish(path, None)
"""


def test_a_transient_failure_keeps_the_scan_and_it_is_tried_again_by_itself(settings) -> None:
    from flows.watch import InboxWatcher

    scan = settings.inbox / "申請書.png"
    scan.write_bytes(b"\x89PNGok")
    runs = Runs(TRANSIENT_THEN_OK)
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=runs)
    done = settings.done_dir / "申請書.png"
    try:
        assert _until(watcher, done.exists)
    finally:
        runs.stop()
    assert len(runs.handed) == 2
    assert not (settings.quarantine_dir / "申請書.png").exists()
    assert watcher.ledger.get(scan).state == "done"


HANGS = """
import os, time
from processors.archive import ledger
ledger.mark_running(os.environ["RUN_PATH"])
time.sleep(60)
"""


def test_a_run_that_hangs_past_the_document_limit_is_handed_over_again(settings) -> None:
    from flows.watch import InboxWatcher

    (settings.inbox / "止まる.pdf").write_bytes(b"%PDF-hang")
    runs = Runs(HANGS)
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=runs, document_limit=1.0)
    try:
        assert _until(watcher, lambda: len(runs.handed) >= 2, timeout=30)
        entry = watcher.ledger.get(settings.inbox / "止まる.pdf")
        assert entry.attempts >= 1 and "制限時間" in entry.last_reason
    finally:
        runs.stop()


def _left_running_by_dead_process(settings, *scans: Path, content: bytes | None = None) -> None:  # noqa: ANN001
    """The ledger as a worker leaves it when it dies holding `scans`: running, in a process now gone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    book = ledger.Ledger(settings.home)
    for scan in scans:
        if content is not None:
            scan.write_bytes(content)
        book.handed_over(scan, None, None)
        book.mark_running(scan, int(dead.stdout))


def test_a_restart_counts_a_run_left_running_by_a_dead_process(settings) -> None:
    from flows.watch import InboxWatcher

    scan = settings.inbox / "再起動.jpg"
    scan.write_bytes(b"\xff\xd8x")
    _left_running_by_dead_process(settings, scan)
    runs = Runs("pass")
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=runs)  # as after `kiroku run` restarts
    entry = watcher.ledger.get(scan)
    assert entry.state == "retry" and entry.attempts == 1 and "再起動" in entry.last_reason
    assert _until(watcher, lambda: len(runs.handed) == 1, timeout=20)
    runs.stop()


def test_back_off_doubles_to_ten_minutes_and_never_gives_up(settings, monkeypatch) -> None:
    monkeypatch.setattr(ledger, "FIRST_RETRY_SECONDS", 15.0)
    assert [ledger.retry_delay(n) for n in range(1, 8)] == [15, 30, 60, 120, 240, 480, 600]
    assert ledger.retry_delay(50) == 600
    scan = settings.inbox / "保存先停止.png"
    scan.write_bytes(b"x")
    waits = []
    for _ in range(9):
        t0 = time.time()
        outcome = ledger.settle_failure(scan, None, TransientFailure("保存先ストレージに接続できません", "down"),
                                        settings)
        assert outcome.action == "retry" and scan.exists()
        waits.append(round(outcome.retry_at - t0))
    assert waits == [15, 30, 60, 120, 240, 480, 600, 600, 600]
    assert "再試行" in outcome.message


def test_outcomes_say_quarantined_only_when_the_scan_was_moved(settings) -> None:
    bad = settings.inbox / "暗号化.pdf"
    bad.write_bytes(b"%PDF-enc")
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.quarantine_dir.write_text("not a folder")  # quarantine cannot take anything now
    refused = InputRejected("暗号化されたPDFは読めません。パスワードを外して入れ直してください。", "encrypted")
    outcome = ledger.settle_failure(bad, None, refused, settings)
    assert outcome.action == "retry" and bad.exists()
    assert "隔離フォルダに移しました" not in outcome.message and "受付フォルダに残し" in outcome.message
    settings.quarantine_dir.unlink()
    outcome = ledger.settle_failure(bad, None, refused, settings)
    assert outcome.action == "quarantined" and not bad.exists() and outcome.destination.exists()
    assert "隔離フォルダに移しました" in outcome.message


def test_watch_inbox_keeps_watching_after_a_name_watchfiles_cannot_decode(settings) -> None:
    """The real watchfiles raises on a Shift_JIS name; the watch goes on by polling."""
    from flows.watch import watch_inbox

    handed: list[Path] = []
    stop = threading.Event()
    thread = threading.Thread(target=watch_inbox, args=(settings,),
                              kwargs={"settle_seconds": 0.3, "stop": stop, "submit": lambda p, d: handed.append(p) or True},
                              daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        sjis = settings.inbox / os.fsdecode("申請書.png".encode("cp932"))
        sjis.write_bytes(b"\x89PNGsjis")
        os.symlink("/etc/passwd", settings.inbox / "passwd.png")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sjis not in handed:
            time.sleep(0.2)
        assert sjis in handed and thread.is_alive()
        later = settings.inbox / "後から.png"
        later.write_bytes(b"\x89PNGlater")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and later not in handed:
            time.sleep(0.2)
        assert later in handed and thread.is_alive()
        assert os.path.islink(settings.quarantine_dir / "passwd.png")
        assert Path("/etc/passwd").exists() and settings.inbox / "passwd.png" not in handed
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_file_dropped_again_after_quarantine_is_a_new_file(settings) -> None:
    from flows.watch import InboxWatcher

    scan = settings.inbox / "直した.pdf"
    scan.write_bytes(b"%PDF-broken")
    outcome = ledger.settle_failure(scan, None, InputRejected("壊れています", "broken"), settings)
    assert outcome.action == "quarantined"
    scan.write_bytes(b"%PDF-fixed")  # the officer fixed it and dropped it again under the same name
    handed: list[Path] = []
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=lambda p, d: handed.append(p) or True)
    assert _until(watcher, lambda: handed == [scan], timeout=10)
    entry = watcher.ledger.get(scan)
    assert entry.state == "handed_over" and entry.attempts == 0 and entry.last_reason is None


def test_a_folder_that_is_not_a_plain_department_name_sends_its_scans_to_quarantine(settings) -> None:
    from flows.watch import InboxWatcher

    odd = settings.inbox / "総務\\課"
    odd.mkdir()
    (odd / "scan.png").write_bytes(b"\x89PNG")
    handed: list[Path] = []
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=lambda p, d: handed.append(p) or True)
    assert _until(watcher, lambda: (settings.quarantine_dir / "scan.png").exists(), timeout=10)
    assert handed == []
    note = (settings.quarantine_dir / "scan.png.error.txt").read_text(encoding="utf-8")
    assert "部署名「総務\\課」は使えません" in note


def test_an_archived_scan_that_done_cannot_take_stays_and_is_tried_again(settings) -> None:
    scan = settings.inbox / "保管済み.png"
    scan.write_bytes(b"\x89PNGarchived")
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.done_dir.write_text("not a folder")  # done/ cannot take anything now
    outcome = ledger.finish(scan, None, settings)
    assert outcome.action == "retry" and scan.exists() and outcome.retry_at > time.time()
    assert ledger.ledger_for(settings).get(scan).state == "retry"
    settings.done_dir.unlink()
    outcome = ledger.finish(scan, None, settings)
    assert outcome.action == "done" and not scan.exists() and outcome.destination.read_bytes() == b"\x89PNGarchived"


def test_a_shift_jis_name_inside_an_error_message_is_written_readably(settings) -> None:
    """Readers put the file name in their messages; a raw Shift_JIS name there must not
    break the ledger (SQLite), the reason file (UTF-8) or the Prefect API (JSON)."""
    from processors.reading.pages import InputError

    raw = os.fsdecode("空の申請書.pdf".encode("cp932"))
    scan = settings.inbox / raw
    scan.write_bytes(b"")
    outcome = ledger.settle_failure(scan, None, InputError(f"{raw}: the file is empty (0 bytes)"), settings)
    assert outcome.action == "quarantined" and outcome.destination.name == raw
    note = Path(f"{outcome.destination}.error.txt").read_text(encoding="utf-8")
    assert "空の申請書.pdf: the file is empty" in note
    assert "空の申請書.pdf: the file is empty" in ledger.ledger_for(settings).get(scan).last_reason
    outcome.message.encode("utf-8")


def test_scans_that_died_together_with_their_worker_are_not_blamed(settings) -> None:
    """A worker kill takes every scan in flight with it: those are retried, not counted as their crash."""
    from flows.watch import InboxWatcher

    scans = [settings.inbox / f"同時{i}.png" for i in range(3)]
    _left_running_by_dead_process(settings, *scans, content=b"\x89PNG")
    runs = Runs("pass")
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=runs)
    try:
        for scan in scans:
            entry = watcher.ledger.get(scan)
            assert entry.state == "retry" and entry.attempts == 0, entry
            assert entry.transient_attempts == 1 and "ほかの書類と同時" in entry.last_reason
            assert scan.exists()
    finally:
        runs.stop()


def test_a_scan_alone_in_a_worker_killed_from_outside_is_not_blamed(settings, monkeypatch) -> None:
    """kill -9 of the worker (the supervisor passes on how it ended) is not the scan's crash;
    the same death without that knowledge is (test_a_restart_counts_a_run_left_running_by_a_dead_process)."""
    from flows.watch import InboxWatcher

    scan = settings.inbox / "外から停止.png"
    scan.write_bytes(b"\x89PNG")
    _left_running_by_dead_process(settings, scan)
    monkeypatch.setenv("KIROKU_PREVIOUS_WORKER_EXIT", str(-signal.SIGKILL))
    runs = Runs("pass")
    watcher = InboxWatcher(settings, settle_seconds=0.2, submit=runs)
    try:
        entry = watcher.ledger.get(scan)
        assert entry.state == "retry" and entry.attempts == 0 and "kill -9" in entry.last_reason
    finally:
        runs.stop()


def test_a_scan_that_arrived_whole_is_handed_over_at_first_sight_a_fresh_one_waits(settings, monkeypatch) -> None:
    """A scan moved in with its old modification time (a backlog copied with its times kept)
    is complete when first seen on a local disk; one written just now, or one on a network
    share whose server's clock may lag ours, must keep still for the settle time first."""
    from flows.watch import InboxWatcher
    from processors.archive import inbox

    old = settings.inbox / "昔の台帳.png"
    old.write_bytes(b"\x89PNG old")
    long_ago = time.time() - 3600
    os.utime(old, (long_ago, long_ago))
    fresh = settings.inbox / "今の台帳.png"
    fresh.write_bytes(b"\x89PNG new")
    handed: list[Path] = []
    watcher = InboxWatcher(settings, settle_seconds=30.0, submit=lambda p, d: handed.append(p) or True)
    try:
        watcher.scan()
        assert handed == [old]
        watcher.scan()
        assert handed == [old]  # the fresh one is still settling (30 s)
    finally:
        watcher.close(wait=True)

    on_share = settings.inbox / "共有の台帳.png"
    on_share.write_bytes(b"\x89PNG share")
    os.utime(on_share, (long_ago, long_ago))
    monkeypatch.setattr(inbox, "mount_types", lambda: {"/": "nfs4"})
    handed.clear()
    watcher = InboxWatcher(settings, settle_seconds=30.0, submit=lambda p, d: handed.append(p) or True)
    try:
        watcher.scan()
        assert on_share not in handed
    finally:
        watcher.close(wait=True)
