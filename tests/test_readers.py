"""kiroku/readers.py: warm reader processes that may die, hang or grow; only the page they hold fails."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from kiroku.readers import ReaderPool, wait_until
from processors.archive.failures import ReaderCrashed, failure_kind
from tests import reader_jobs


@pytest.fixture
def small_pool():
    pool = ReaderPool("", 2, preload=[])
    yield pool
    pool.close()


def test_a_hanging_job_is_timed_out_and_its_reader_replaced(small_pool: ReaderPool) -> None:
    before = set(small_pool.pids())
    hung = small_pool.submit(reader_jobs.hang, time_limit=1.5, label="hang p1")
    fine = small_pool.submit(reader_jobs.slow_echo, "ok", 0.2)
    assert fine.result(timeout=30)[0] == "ok"
    with pytest.raises(ReaderCrashed) as info:
        hung.result(timeout=30)
    assert failure_kind(info.value) == "crashed"
    assert "制限時間" in str(info.value) and "hang p1" in str(info.value)
    assert wait_until(lambda: len(small_pool.pids()) == 2, 30)
    assert set(small_pool.pids()) != before
    # the replacement reads
    assert small_pool.submit(reader_jobs.slow_echo, 7, 0).result(timeout=30)[0] == 7


def test_a_segfault_fails_only_its_job(small_pool: ReaderPool) -> None:
    crashed = small_pool.submit(reader_jobs.crash, label="bad page")
    others = [small_pool.submit(reader_jobs.slow_echo, i, 0.1) for i in range(6)]
    with pytest.raises(ReaderCrashed) as info:
        crashed.result(timeout=30)
    assert "SIGSEGV" in str(info.value)
    assert [f.result(timeout=30)[0] for f in others] == list(range(6))
    assert sum(s.crashes for s in small_pool.stats()) == 1


def test_a_reader_is_replaced_after_max_jobs_and_above_its_memory_limit() -> None:
    with ReaderPool("", 1, max_jobs=3, max_rss_mb=120, preload=[]) as pool:
        pids = [pool.submit(reader_jobs.slow_echo, i, 0).result(timeout=30)[1] for i in range(7)]
        assert len(set(pids[:3])) == 1 and pids[3] != pids[0] and pids[6] != pids[3]
        grown = pool.submit(reader_jobs.grow, 200).result(timeout=30)
        after = pool.submit(reader_jobs.slow_echo, 0, 0).result(timeout=30)[1]
        assert after != grown, "a reader above its memory limit must be replaced"
        stats = pool.stats()[0]
        assert stats.replaced >= 3 and stats.peak_rss_mb >= 200


def _three_page_tiff(path: Path) -> Path:
    from tests.pagegen import render_notice

    pages = [render_notice(dpi=200) for _ in range(3)]
    pages[0].save(path, save_all=True, append_images=pages[1:], dpi=(200, 200), compression="tiff_lzw")
    return path


@pytest.mark.slow
def test_sigkill_mid_page_fails_that_page_and_the_rest_is_read(tmp_path: Path) -> None:
    """The real reading job: kill -9 the reader holding page 2; pages 1 and 3 and the next document are read."""
    from kiroku.process import _read_page
    from processors.reading.images import load_document

    doc = load_document(_three_page_tiff(tmp_path / "3枚.tif"))
    with ReaderPool("tesseract", 2) as pool:
        futures = [pool.submit(_read_page, p, "tesseract", label=f"3枚.tif p{p.index + 1}") for p in doc.pages]
        assert wait_until(lambda: "3枚.tif p2" in pool.busy().values(), 120, 0.01)
        victim = next(pid for pid, label in pool.busy().items() if label == "3枚.tif p2")
        os.kill(victim, signal.SIGKILL)
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(timeout=240))
            except ReaderCrashed as exc:
                outcomes.append(exc)
        assert isinstance(outcomes[1], ReaderCrashed) and "SIGKILL" in str(outcomes[1])
        for i in (0, 2):
            prepared, page = outcomes[i]
            assert "節電の取組" in page.text.replace(" ", ""), i
        again = load_document(_three_page_tiff(tmp_path / "次.tif"))
        t0 = time.monotonic()
        pages = [pool.submit(_read_page, p, "tesseract").result(timeout=240)[1] for p in again.pages]
        assert all("節電の取組" in p.text.replace(" ", "") for p in pages), time.monotonic() - t0
        assert victim not in pool.pids()
