"""Pages per minute of `kiroku process` against OCRmyPDF on the same corpus, in one run.

    .venv/bin/python bench/throughput.py [--corpus ../shared/samples] [--rounds 1]

These machines have 2 noisy cores, so absolute figures drift from day to day; the
ratio of two commands measured back to back is what this script is for. OCRmyPDF
is installed into its own venv (bench/.venv-ocrmypdf) so it cannot disturb ours,
and run as score.py's baseline runs it: `-l jpn --deskew --rotate-pages
--output-type pdfa`, one input after another (its own page-level parallelism on).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OCRMYPDF_VENV = ROOT / "bench" / ".venv-ocrmypdf"


def corpus_inputs(corpus: Path) -> tuple[list[Path], int]:
    """The corpus' scans and their page count (from manifest.json, as score.py counts them)."""
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    docs = manifest["documents"]
    return [corpus / d["file"] for d in docs], sum(d["pages"] for d in docs)


def ensure_ocrmypdf() -> Path:
    exe = OCRMYPDF_VENV / "bin" / "ocrmypdf"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(OCRMYPDF_VENV)], check=True)
        subprocess.run([str(OCRMYPDF_VENV / "bin" / "pip"), "install", "-q", "ocrmypdf"], check=True)
    return exe


def time_kiroku(inputs: list[Path], out: Path) -> float:
    kiroku = Path(sys.executable).with_name("kiroku")
    t0 = time.monotonic()
    subprocess.run([str(kiroku), "process", *map(str, inputs), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def time_ocrmypdf(exe: Path, inputs: list[Path], out: Path) -> float:
    env = dict(os.environ)
    env.pop("OMP_THREAD_LIMIT", None)  # its own default, as its users run it
    t0 = time.monotonic()
    for path in inputs:
        subprocess.run([str(exe), "-l", "jpn", "--deskew", "--rotate-pages", "--output-type", "pdfa",
                        str(path), str(out / f"{path.stem}.pdf")], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "samples")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two commands this many times")
    a = ap.parse_args()
    inputs, pages = corpus_inputs(a.corpus)
    exe = ensure_ocrmypdf()
    rows = []
    for r in range(a.rounds):
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            k = time_kiroku(inputs, Path(d1))
            o = time_ocrmypdf(exe, inputs, Path(d2))
        rows.append((k, o))
        print(f"round {r + 1}: kiroku {k:.1f} s ({pages / k * 60:.1f} pages/min)   "
              f"ocrmypdf {o:.1f} s ({pages / o * 60:.1f} pages/min)   ratio {o / k:.2f}x")
    k = sum(r[0] for r in rows) / len(rows)
    o = sum(r[1] for r in rows) / len(rows)
    print(f"{len(inputs)} documents, {pages} pages, {os.cpu_count()} cores")
    print(f"kiroku   {pages / k * 60:6.1f} pages/min")
    print(f"ocrmypdf {pages / o * 60:6.1f} pages/min")
    print(f"ratio    {o / k:6.2f}x  (kiroku's pages/min over OCRmyPDF's)")


if __name__ == "__main__":
    main()
