"""Reading pages from several threads at once, as the Prefect flow's ThreadPoolTaskRunner does.

Issue 8: `kiroku ingest` died with SIGSEGV on a 30-page TIFF and on cardinal.pdf because
two threads' orientation trial reads went through one shared tesserocr API, and a run
hung inside OpenVINO. These tests read turned pages (so that orientation trial reads
run) through the real prepare stage and the real engines, from many threads, and
require the same text as reading them one after another. A crash kills the test run
itself, so the test is run in a child process to report it as a failure.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from processors.reading import ocr

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from processors.document import prepare_and_read
    from processors.reading.pages import SourcePage
    from tests.pagegen import render_notice

    engine = sys.argv[1]
    base = render_notice(dpi=150)
    base = base.crop((0, 0, base.width, base.height // 2))
    turns = [0, 90, 180, 270]
    pages = [SourcePage(index=i, image=base.rotate(-t, expand=True) if t else base, dpi=(150.0, 150.0),
                        encoding="png") for i, t in enumerate(turns)]

    def read(page):
        prepared, record_page = prepare_and_read(page, engine)
        return record_page.rotation_deg, record_page.text

    serial = [read(p) for p in pages]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(read, pages * 3))
    assert together == serial * 3, (serial, together)
    assert all(text for _rot, text in serial), serial
    print("rotations", [rot for rot, _ in serial])
    print("ok", len(together))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tesseract", pytest.param("rapidocr", marks=pytest.mark.skipif(
    not ocr.rapidocr_available(), reason="rapidocr not installed"))])
def test_pages_read_in_threads_at_once_read_as_serially_and_never_crash(engine: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, engine], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, f"exit {proc.returncode} (a negative code is a signal: -11 SIGSEGV)\n{proc.stderr[-3000:]}"
    assert "ok 12" in proc.stdout
    # the turned copies were really turned back (so the trial reads ran)
    assert "rotations [0, 90, 180, 270]" in proc.stdout
