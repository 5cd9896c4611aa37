"""The peer-inputs outcome table: `kiroku process` over every file in ../shared/peer-inputs.

Each file's outcome (archived with N pages, or refused with its reason) is compared with
what the file's row in ../shared/peer-inputs/README.md expects (the "→" column):

* correct: archived where the README expects processing (with the right page count
  where the README names one), or refused where it expects a refusal;
* refused-with-reason: refused, with a Japanese-first reason, where the README allows
  either ("refuse clearly, or ...");
* wrong: archived where a refusal is expected, refused where processing is expected,
  the wrong number of pages, or a refusal without a Japanese reason.

Page warnings (ink_but_no_text, pdf_text_unreadable, source_text_differs) are shown too.

    python bench/peer_inputs.py [--peer DIR] [--out DIR] [--json FILE] [--engine NAME]

Runs the real CLI in a child process (as a user would), so it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PEER = ROOT.parent / "shared" / "peer-inputs"

# what the README's "→" column says, reduced to: archive, refuse, or either
REFUSE = {
    "yomitoku__small.jpg", "yomitoku__invalid.jpg", "yomitoku__invalid.pdf", "pikepdf__graph-encrypted.pdf",
    "pikepdf__fuzz_378014596.pdf", "ocrmypdf__hugemono.pdf", "ocrmypdf__invalid.pdf", "ocrmypdf__livecycle.pdf",
}
EITHER = {
    # "refuse with a clear error, or ..." (a default DPI, flattening, conversion)
    "ocrmypdf__baiona.png", "ocrmypdf__baiona_alpha.png", "ocrmypdf__baiona_cmyk.jpg", "ocrmypdf__baiona_gray.png",
    "ocrmypdf__jbig2_baddevicen.pdf", "ocrmypdf__poster.pdf",
    # "skip or refuse per policy", "refuse or skip as born-digital", "decide by policy"
    "ocrmypdf__overlay.pdf", "ocrmypdf__graph_ocred.pdf", "ocrmypdf__tagged.pdf", "ocrmypdf__vector.pdf",
    # "process (or flag as blank)", "treat as a blank page": kiroku refuses a PDF with no content at all
    "ocrmypdf__blank.pdf", "ocrmypdf__no_contents.pdf",
}
PAGES = {"ocrmypdf__multipage.pdf": 6, "ocrmypdf__3small.pdf": 3, "ocrmypdf__cardinal.pdf": 4,
         "yomitoku__sampldoc.tif": 2, "yomitoku__test.tiff": 2, "ocrmypdf__tagged.pdf": 2}
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


def expectation(name: str) -> str:
    if name in REFUSE:
        return "refuse"
    if name in EITHER:
        return "either"
    return "archive"


def run_process(files: list[Path], out: Path, engine: str | None) -> dict[str, str]:
    """`kiroku process` over the files; returns each refused file's reason (from the terminal)."""
    cmd = [sys.executable, "-m", "kiroku.cli", "process", *map(str, files), "-o", str(out)]
    if engine:
        cmd += ["--engine", engine]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100000", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=7200)
    reasons: dict[str, str] = {}
    names = {f.name for f in files}
    for line in proc.stderr.splitlines():
        line = line.strip()
        if line.startswith("✗ "):
            head, _, reason = line[2:].partition(": ")
            if head in names:
                reasons[head] = reason
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode not in (0, 1) else "")
    return reasons


def judge(name: str, expected: str, record: dict | None, reason: str | None) -> tuple[str, str]:
    """(outcome text, verdict) for one file."""
    if record is not None:
        n = len(record.get("pages", []))
        outcome = f"archived, {n} page{'s' if n != 1 else ''}"
        if expected == "refuse":
            return outcome, "wrong"
        want = PAGES.get(name)
        if want is not None and n != want:
            return outcome + f" (expected {want})", "wrong"
        return outcome, "correct"
    if reason is None:
        return "no output and no reason", "wrong"
    outcome = f"refused: {reason}"
    if expected == "archive":
        return outcome, "wrong"
    if not _JAPANESE.search(reason.split("(")[0]):
        return outcome, "wrong"  # a refusal a records officer cannot read
    return outcome, "correct" if expected == "refuse" else "refused-with-reason"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    ap.add_argument("--out", type=Path, default=None, help="folder for the PDF/A and JSON (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    ap.add_argument("--engine", default=None)
    args = ap.parse_args(argv)
    files = sorted(p for p in args.peer.iterdir() if p.is_file() and p.name != "README.md")
    if not files:
        print(f"no peer inputs in {args.peer}", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="kiroku-peer-"))
    out.mkdir(parents=True, exist_ok=True)
    reasons = run_process(files, out, args.engine)
    rows = []
    for f in files:
        js = out / f"{f.stem}.json"
        record = json.loads(js.read_text(encoding="utf-8")) if js.exists() else None
        expected = expectation(f.name)
        outcome, verdict = judge(f.name, expected, record, reasons.get(f.name))
        warnings = sorted({w for p in (record or {}).get("pages", []) for w in p.get("warnings", [])})
        rows.append({"file": f.name, "expected": expected, "outcome": outcome, "verdict": verdict,
                     "warnings": warnings})
    width = max(len(r["file"]) for r in rows)
    print(f"{'file':<{width}}  {'expected':<8}  {'verdict':<19}  outcome")
    for r in rows:
        note = f"  [{', '.join(r['warnings'])}]" if r["warnings"] else ""
        print(f"{r['file']:<{width}}  {r['expected']:<8}  {r['verdict']:<19}  {r['outcome'][:160]}{note}")
    counts = {k: sum(r["verdict"] == k for r in rows) for k in ("correct", "refused-with-reason", "wrong")}
    print(f"\n{len(rows)} files: {counts['correct']} correct, {counts['refused-with-reason']} refused with reason, "
          f"{counts['wrong']} wrong")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "counts": counts}, ensure_ascii=False, indent=1), encoding="utf-8")
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
