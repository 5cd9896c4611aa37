"""The watch folder: complete files only, once each; bad files to quarantine; the watcher goes on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.e2e_fixtures import render_notice_file

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float = 240.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def running_watcher(kiroku_env):
    from flows.watch import InboxWatcher

    watcher = InboxWatcher(kiroku_env, settle_seconds=1.5)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            watcher.scan()
            time.sleep(0.3)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield watcher
    stop.set()
    thread.join(timeout=10)
    watcher.close(wait=True)


def test_a_file_written_in_chunks_is_read_once_when_complete(kiroku_env, running_watcher, tmp_path: Path) -> None:
    from kiroku import wiring

    scan = render_notice_file(tmp_path / "回答.png", "道路占用の期間について（回答）", number="新土第３３号")
    data = scan.read_bytes()
    dest = kiroku_env.inbox / "土木課" / "回答.png"
    dest.parent.mkdir(parents=True)
    chunks = 6
    with dest.open("wb") as f:  # a slow copy: 3 seconds, the file open all along
        for i in range(chunks):
            f.write(data[i * len(data) // chunks:(i + 1) * len(data) // chunks])
            f.flush()
            time.sleep(0.5)
    done = kiroku_env.done_dir / "土木課" / "回答.png"
    assert _wait_for(lambda: running_watcher.completed or running_watcher.failures)
    assert running_watcher.failures == []
    assert done.read_bytes() == data
    time.sleep(3)  # a second hand-over would have happened by now
    assert len(running_watcher.completed) == 1
    hits = wiring.catalog(kiroku_env).search("道路占用")
    assert len(hits) == 1 and hits[0].department == "土木課"


def test_a_corrupt_file_is_quarantined_and_the_next_good_one_archived(kiroku_env, running_watcher,
                                                                       tmp_path: Path) -> None:
    inbox = kiroku_env.inbox
    corrupt = inbox / "壊れた.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    quarantined = kiroku_env.quarantine_dir / "壊れた.jpg"
    reason = quarantined.with_name("壊れた.jpg.error.txt")
    assert _wait_for(reason.exists), "the corrupt file was not quarantined"
    assert not corrupt.exists() and quarantined.exists()
    assert "reason:" in reason.read_text(encoding="utf-8")

    good = render_notice_file(tmp_path / "報告.png", "庁舎点検の結果について（報告）", number="新総第９９号")
    (inbox / "報告.png").write_bytes(good.read_bytes())
    assert _wait_for((kiroku_env.done_dir / "報告.png").exists), f"failures: {running_watcher.failures}"


def test_links_odd_names_and_empty_files_each_get_their_outcome(kiroku_env, running_watcher, tmp_path: Path) -> None:
    """The manual check of issue 8, automated: a good scan with a Shift_JIS name, a link to
    /etc/passwd, a dangling link, a zero-byte file and a 250-byte name, all at once."""
    import base64
    import os

    from kiroku import wiring

    inbox, quarantine = kiroku_env.inbox, kiroku_env.quarantine_dir
    (inbox / "総務課").mkdir()
    sjis = "庁舎点検（報告）.png".encode("cp932")
    good = render_notice_file(tmp_path / "g.png", "庁舎点検の結果について（報告）", number="新総第７７号")
    passwd_before = os.stat("/etc/passwd")
    os.symlink("/etc/passwd", inbox / "総務課" / "passwd.png")
    os.symlink(inbox / "消えた.pdf", inbox / "dangling.pdf")
    (inbox / "空.pdf").write_bytes(b"")
    long_name = "令和七年度第一回定例会議事録" * 5 + "（追加資料その二）abcdefghijklm.pdf"  # 254 bytes
    assert 250 <= len(long_name.encode()) <= 255
    (inbox / long_name).write_bytes(b"%PDF-1.4 truncated")
    (inbox / "総務課" / os.fsdecode(sjis)).write_bytes(good.read_bytes())

    done = kiroku_env.done_dir / "総務課" / os.fsdecode(sjis)
    assert _wait_for(done.exists), f"failures: {running_watcher.failures}"
    link_q = quarantine / "総務課" / "passwd.png"
    assert _wait_for(lambda: os.path.islink(link_q) and os.path.islink(quarantine / "dangling.pdf"))
    empty_q = quarantine / "空.pdf"
    assert _wait_for(lambda: Path(f"{empty_q}.error.txt").exists())
    assert _wait_for(lambda: any(p.name.endswith(".pdf.error.txt") and p.name.startswith("令和七年度")
                                 for p in quarantine.iterdir()))

    # the link's target was never read, moved or written
    after = os.stat("/etc/passwd")
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (passwd_before.st_ino, passwd_before.st_mtime_ns,
                                                                 passwd_before.st_size)
    assert os.readlink(link_q) == "/etc/passwd"
    # reasons in plain Japanese first
    for note in (Path(f"{link_q}.error.txt"), Path(f"{empty_q}.error.txt")):
        text = note.read_text(encoding="utf-8")
        assert text.startswith("この書類は保管できませんでした") and "対処:" in text and "reason:" in text
    # and the reason is the file's own problem, not a fault of ours on the way
    assert "ファイルが空です" in Path(f"{empty_q}.error.txt").read_text(encoding="utf-8")
    assert all(len(os.fsencode(p.name)) <= 255 for p in quarantine.iterdir())
    # the Shift_JIS name is kept for people and as its bytes
    hits = wiring.catalog(kiroku_env).search("庁舎点検")
    assert len(hits) == 1
    record = wiring.catalog(kiroku_env).get(hits[0].record_id)
    assert record.source.filename == "庁舎点検（報告）.png"
    assert base64.b64decode(record.source.filename_bytes) == sjis
    assert record.source.department == "総務課"
    assert not any(inbox.rglob("*.*")), list(inbox.rglob("*"))  # nothing left waiting in the inbox


def test_a_run_whose_process_died_is_marked_crashed_in_prefect(kiroku_env) -> None:
    """In-process runs die with their worker and nothing tells the server: the watcher that
    notices the dead process marks the run Crashed, so the UI never shows it Running for good."""
    import subprocess
    import sys

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.watch import InboxWatcher
    from processors.archive import ledger

    @flow(name="ingest-document")
    def stand_in() -> None:  # only its name is used: the run is created as the real one is
        pass

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(stand_in, name="総務課/死んだ.png", state=Running())
    scan = kiroku_env.inbox / "死んだ.png"
    scan.write_bytes(b"\x89PNG")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    book = ledger.Ledger(kiroku_env.home)
    book.handed_over(scan, None, None)
    book.mark_running(scan, int(dead.stdout), flow_run_id=str(run.id))
    watcher = InboxWatcher(kiroku_env, settle_seconds=0.2, submit=lambda p, d: True)
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        assert state is not None and state.type.value == "CRASHED", state
        assert "処理プロセスが停止しました" in (state.message or "")
        assert watcher.ledger.get(scan).state == "retry"
    finally:
        watcher.close(wait=True)
