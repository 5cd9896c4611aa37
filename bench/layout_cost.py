"""CPU seconds per page that layout analysis (and the second detection look) add to reading.

    .venv/bin/python bench/layout_cost.py [--samples ../shared/samples] [--real ../shared/real] [--repeat 5]

For every page of the sample corpus and of the real pages (../shared/real/manifest.json,
images in ../shared/peer-inputs), the page is loaded and prepared as `kiroku process`
does, and RapidOCR's detection + recognition is run once with the second look on and
with the second look off, then the second look alone is timed on its boxes
(processors.reading.ocr.RapidOcrEngine._second_look). On the same boxes,
the two ways of turning boxes into lines are then timed ``--repeat`` times each:

* layout off: processors.reading.ocr.tokens_to_lines (the page banded as one block);
* layout on:  processors.reading.ocr.layout_read (ruled tables, stacked cell labels,
  spread split, recursive XY-cut, regions and table cells for the record).

Printed: per corpus, the mean CPU seconds per page of the OCR itself, of the second
look, and of each way of ordering (process CPU time, one thread: OMP_THREAD_LIMIT=1).
The machine is shared; only the differences measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processors.reading.images import load_document  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from processors.reading.ocr import (  # noqa: E402
    RapidOcrEngine,
    layout_read,
    lent_rapidocr,
    suppress_light_ink,
    tokens_to_lines,
)
from processors.reading.prepare import prepare_page  # noqa: E402

SHARED = ROOT.parent / "shared"


def corpus_files(samples: Path, real: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    if (samples / "manifest.json").exists():
        docs = json.loads((samples / "manifest.json").read_text(encoding="utf-8"))["documents"]
        out["samples"] = [samples / d["file"] for d in docs]
    if (real / "manifest.json").exists():
        pages = json.loads((real / "manifest.json").read_text(encoding="utf-8"))["pages"]
        files = [(real / p["image"]).resolve() for p in pages]
        out["real"] = [f for f in files if f.exists()]
    return out


def cpu() -> float:
    return time.process_time()


def measure(files: list[Path], repeat: int) -> dict[str, float]:
    on, off = RapidOcrEngine(second_look=1), RapidOcrEngine(second_look=0)
    totals = {"pages": 0, "ocr": 0.0, "second_look": 0.0, "order_off": 0.0, "order_on": 0.0, "added_boxes": 0}
    for path in files:
        for source in load_document(path).pages:
            page = prepare_page(source)
            if page.blank:
                continue
            gray = np.ascontiguousarray(page.ocr_image, dtype=np.uint8)
            f = min(1.0, off.det_max_side / max(gray.shape[:2]))
            det_gray = suppress_light_ink(gray)
            h, w = gray.shape[:2]
            small = det_gray if f >= 1.0 else cv2.resize(det_gray, (max(32, round(w * f)), max(32, round(h * f))),
                                                         interpolation=cv2.INTER_AREA)
            with lent_rapidocr() as engine:
                t0 = cpu()
                plain = off._tokens(engine, gray)
                t1 = cpu()
                looked = on._second_look(engine, gray, det_gray, plain, f, small)  # as _tokens calls it
                t2 = cpu()
            totals["ocr"] += t1 - t0
            totals["second_look"] += t2 - t1
            totals["added_boxes"] += len(looked) - len(plain)
            h, w = page.ocr_image.shape[:2]
            t0 = cpu()
            for _ in range(repeat):
                tokens_to_lines(looked, page.writing_mode == "vertical", page.ocr_scale, page.archive_image.size)
            t1 = cpu()
            for _ in range(repeat):
                layout_read(looked, page.writing_mode == "vertical", page.ocr_image, (w, h), page.ocr_scale,
                            page.archive_image.size)
            t2 = cpu()
            totals["order_off"] += (t1 - t0) / repeat
            totals["order_on"] += (t2 - t1) / repeat
            totals["pages"] += 1
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, default=SHARED / "samples")
    ap.add_argument("--real", type=Path, default=SHARED / "real")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    corpora = corpus_files(args.samples, args.real)
    if not corpora:
        print("no corpus found (../shared/samples, ../shared/real)", file=sys.stderr)
        return 2
    print(f"{'corpus':8} {'pages':>5} {'OCR s/page':>10} {'2nd look s/page':>15} {'boxes added':>11} "
          f"{'order off':>9} {'order on':>9} {'layout adds s/page':>18}")
    for name, files in corpora.items():
        t = measure(files, args.repeat)
        n = max(1, t["pages"])
        print(f"{name:8} {t['pages']:5d} {t['ocr'] / n:10.3f} {t['second_look'] / n:15.3f} {t['added_boxes']:11d} "
              f"{t['order_off'] / n:9.4f} {t['order_on'] / n:9.4f} {(t['order_on'] - t['order_off']) / n:18.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
