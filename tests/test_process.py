"""`kiroku process` in-process (kiroku.process.process_files): outputs per input, and a
coordinating loop that leaves the cores to the workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kiroku.services import test_settings
from kiroku.process import process_files
from tests.pagegen import render_notice


def _three_page_tiff(path: Path) -> Path:
    pages = [render_notice(dpi=200) for _ in range(3)]
    pages[0].save(path, save_all=True, append_images=pages[1:], dpi=(200, 200), compression="tiff_lzw")
    return path


def test_a_multipage_scan_is_read_while_the_main_thread_mostly_waits(tmp_path: Path) -> None:
    """While later pages of a document are being read, the coordinating thread must sleep.

    It once polled in a loop (wait() returned at once because it was handed futures that
    were already done) and took half a core from the two that read pages; the thread's
    CPU time against the wall time shows it.
    """
    scan = _three_page_tiff(tmp_path / "3枚.tif")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    settings = test_settings(tmp_path)
    wall0, cpu0 = time.monotonic(), time.thread_time()
    outcomes = process_files([scan, empty], tmp_path / "out", settings, engine="tesseract", workers=1)
    wall, cpu = time.monotonic() - wall0, time.thread_time() - cpu0

    good, bad = outcomes
    assert good.error is None and good.record is not None
    assert [p.index for p in good.record.pages] == [0, 1, 2]
    assert all("節電の取組" in p.text.replace(" ", "") for p in good.record.pages)
    stored = json.loads((tmp_path / "out" / "3枚.json").read_text(encoding="utf-8"))
    assert len(stored["pages"]) == 3
    assert (tmp_path / "out" / "3枚.pdf").read_bytes().startswith(b"%PDF-")
    assert bad.record is None and "empty" in (bad.error or "")
    assert cpu < 0.3 * wall, f"the coordinating thread used {cpu:.1f} s of CPU in {wall:.1f} s"
