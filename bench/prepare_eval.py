"""How well does the prepare stage find each page's geometry? Truth vs found, per page.

    .venv/bin/python bench/prepare_eval.py [--samples ../shared/samples] [--full] [--turns 90,180,270]

For every page of every sample it prints the truth and what prepare found (rotation,
writing mode, skew, blank) and the time taken, then a summary: rotation, writing-mode
and blank accuracy, median and max absolute skew error (non-blank pages, as the
evaluator scores them). By default only the geometry is analysed; --full runs the
whole prepare_page (archive and OCR images too) so its timing is the stage's real cost.
--turns also reads every page turned a further quarter, half or three-quarter turn
clockwise (the truth's rotation plus the turn is then expected): twelve documents
become four times as many orientation cases.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processors.reading.images import load_document  # noqa: E402
from processors.reading.prepare import analyse_geometry, prepare_page  # noqa: E402


def _cpu() -> float:
    """CPU seconds of this process and of the tesseract runs it waited for: on a shared
    machine this, not the wall clock, is what a page costs."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, default=ROOT.parent / "shared" / "samples")
    ap.add_argument("--full", action="store_true", help="time the whole prepare_page, not just the analysis")
    ap.add_argument("--turns", default="", help="extra clockwise turns to try every page in too, e.g. 90,180,270")
    args = ap.parse_args()
    turns = [0] + [int(t) for t in args.turns.split(",") if t.strip()]
    truths = sorted(args.samples.glob("*.truth.json"))
    if not truths:
        print(f"no samples under {args.samples}", file=sys.stderr)
        return 2
    rows = []
    print(f"{'page':12s} {'rot t/f':>9s} {'mode t/f':>11s} {'skew t/f':>14s} {'err':>6s} {'blank t/f':>10s} {'wall':>6s} {'cpu':>6s}  notes")
    for tpath in truths:
        truth = json.loads(tpath.read_text(encoding="utf-8"))
        doc = load_document(args.samples / truth["file"])
        for (page, tp), turn in ((pt, t) for pt in zip(doc.pages, truth["pages"]) for t in turns):
            page.image.load()  # decoding the file is the load stage's cost, not ours
            if turn:
                page = replace(page, image=page.image.rotate(-turn, expand=True), jpeg_bytes=None,
                               dpi=page.dpi if turn == 180 else page.dpi[::-1])
                tp = dict(tp, rotation_deg=(tp["rotation_deg"] + turn) % 360)
            t0, c0 = time.perf_counter(), _cpu()
            if args.full:
                pp = prepare_page(page)
                found = dict(rotation=pp.rotation_deg, mode=pp.writing_mode, skew=pp.skew_deg, blank=pp.blank)
                note = f"ocr_scale={pp.ocr_scale:.2f} mode={pp.archive_image.mode} jpeg={'kept' if pp.archive_jpeg else '-'}"
            else:
                geo = analyse_geometry(page)
                found = dict(rotation=geo.rotation_deg, mode=geo.writing_mode, skew=geo.skew_deg, blank=geo.blank)
                note = ""
                if geo.orientation is not None:
                    ev = geo.orientation.evidence
                    note = f"axis={ev.axis} start={ev.start_side:+.2f}" + (f" osd={ev.osd_rotation}/{ev.osd_confidence:.1f}" if ev.osd_rotation is not None else "")
                    if ev.trial:
                        note += " trial=" + ",".join(f"{r}{m[0]}:{c:.0f}" for (r, m), c in ev.trial.items())
            dt, dc = time.perf_counter() - t0, _cpu() - c0
            err = abs(found["skew"] - tp["skew_deg"])
            rows.append((tp, found, err, dt, dc))
            flag = "" if (tp["blank"] or (found["rotation"] == tp["rotation_deg"] and found["mode"] == tp["writing_mode"])) else "  <-- WRONG"
            if found["blank"] != tp["blank"]:
                flag = "  <-- BLANK WRONG"
            print(
                f"{truth['id']}/{page.index}{'+' + str(turn) if turn else '':<4s} {tp['rotation_deg']:>4d}/{found['rotation']:<4d} "
                f"{tp['writing_mode'][:4]:>5s}/{found['mode'][:4]:<5s} {tp['skew_deg']:>+6.2f}/{found['skew']:<+7.2f} "
                f"{'' if tp['blank'] else f'{err:.2f}':>6s} {str(tp['blank'])[0]:>5s}/{str(found['blank'])[0]:<4s} {dt:>5.2f}s {dc:>5.2f}s  {note}{flag}"
            )
    nonblank = [r for r in rows if not r[0]["blank"]]
    errs = [r[2] for r in nonblank]
    n = len(nonblank)
    rot_ok = sum(r[1]["rotation"] == r[0]["rotation_deg"] for r in nonblank)
    mode_ok = sum(r[1]["mode"] == r[0]["writing_mode"] for r in nonblank)
    blank_ok = sum(r[1]["blank"] == r[0]["blank"] for r in rows)
    times = [r[3] for r in rows]
    cpus = [r[4] for r in rows]
    print()
    print(f"pages {len(rows)} (non-blank {n})")
    print(f"rotation accuracy      {rot_ok}/{n} = {rot_ok / n:.1%}")
    print(f"writing mode accuracy  {mode_ok}/{n} = {mode_ok / n:.1%}")
    print(f"blank accuracy         {blank_ok}/{len(rows)} = {blank_ok / len(rows):.1%}")
    print(f"skew |err| median {statistics.median(errs):.3f} deg  mean {statistics.mean(errs):.3f}  max {max(errs):.3f}")
    print(f"wall per page: median {statistics.median(times):.2f}s  mean {statistics.mean(times):.2f}s  max {max(times):.2f}s"
          f"  ({'prepare_page' if args.full else 'analysis only'})")
    print(f"CPU per page (incl. tesseract): median {statistics.median(cpus):.2f}s  mean {statistics.mean(cpus):.2f}s"
          f"  max {max(cpus):.2f}s")
    ok = rot_ok == n and mode_ok == n and blank_ok == len(rows) and statistics.median(errs) <= 0.2 and max(errs) <= 0.5
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
