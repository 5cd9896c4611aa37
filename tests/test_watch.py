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
