"""The watch folder against `kiroku process` on the same documents, back to back, in one run.

    .venv/bin/python bench/watch_throughput.py [--corpus ../shared/samples] [--json FILE]

1. `kiroku process` reads the documents into a temporary folder (pages/min from its wall time).
2. A private `kiroku run` (own KIROKU_HOME, free ports, real SeaweedFS and Prefect) is
   started; once it says it is running, one document is dropped into its inbox on the
   idle system (drop -> "archived" line: the first-document latency), then all the
   others at once (pages/min from the first drop of the batch to the last outcome).
3. Peak resident memory (VmHWM) of the worker and of every reader process is sampled
   throughout.

The two figures are measured on this noisy 2-core machine one after the other: the
ratio is the figure to read. `kiroku process`'s time includes its readers' warm-up
(a fresh command); the watch folder's does not (its readers are warm, which is the
point of them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.run_fixtures import KIROKU, start_run, write_instance  # noqa: E402

OUTCOMES = ("保存しました", "隔離しました", "受付フォルダに残しました", "は保存済みです")


def corpus(path: Path) -> tuple[list[Path], int]:
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    docs = manifest["documents"]
    return [path / d["file"] for d in docs], sum(d["pages"] for d in docs)


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _role(pid: int, worker: int | None) -> str | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    if "kiroku.supervise --worker" in cmd:
        return "worker"
    if "forkserver" in cmd:
        return "forkserver" if ppid == worker else f"reader {pid}"
    return None


def run_process(inputs: list[Path], pages: int, work: Path, env: dict) -> dict:
    out = work / "process-out"
    t0 = time.monotonic()
    done = subprocess.run([KIROKU, "process", *map(str, inputs), "--out", str(out)], env=env,
                          capture_output=True, text=True)
    seconds = time.monotonic() - t0
    return {"seconds": round(seconds, 1), "pages": pages, "pages_per_min": round(pages / seconds * 60, 1),
            "exit": done.returncode}


def run_watch(inputs: list[Path], pages: int, work: Path, env: dict) -> dict:
    root = work / "instance"
    root.mkdir()
    env = {**write_instance(root), **{k: v for k, v in env.items() if k == "PYTHONPATH"}}
    run = start_run(root, env)
    peaks: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            worker = run.worker_pid()
            for pid in run.descendants():
                role = _role(pid, worker)
                if role:
                    peaks[role] = max(peaks.get(role, 0.0), _hwm_mb(pid))

    threading.Thread(target=sample, daemon=True).start()
    try:
        run.wait_for("kiroku is running", 300)
        time.sleep(5)  # idle for a moment, as a system is between scans
        inbox = root / "inbox" / "総務課"
        inbox.mkdir(parents=True)
        staging = root / "staging"
        staging.mkdir()

        def drop(src: Path) -> None:
            tmp = staging / src.name
            shutil.copy2(src, tmp)
            tmp.rename(inbox / src.name)  # atomic: the watcher sees it whole

        n = len(run.lines)
        t0 = time.monotonic()
        drop(inputs[0])
        i = run.wait_for(inputs[0].name, 300, start=n)
        while not any(o in run.lines[i] for o in OUTCOMES):
            i = run.wait_for(inputs[0].name, 300, start=i + 1)
        first = time.monotonic() - t0
        n = len(run.lines)
        t0 = time.monotonic()
        for src in inputs[1:]:
            drop(src)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            finished = sum(1 for ln in run.lines[n:] if any(o in ln for o in OUTCOMES))
            if finished >= len(inputs) - 1:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - t0
        batch_pages = pages - _pages_of(inputs[0])
        outcome_lines = [ln for ln in run.lines if any(o in ln for o in OUTCOMES)]
        return {"first_document_seconds": round(first, 1), "seconds": round(seconds, 1),
                "pages": batch_pages, "pages_per_min": round(batch_pages / seconds * 60, 1),
                "archived": sum("保存しました" in ln for ln in outcome_lines),
                "not_archived": [ln for ln in outcome_lines if "保存しました" not in ln],
                "peak_rss_mb": {k: round(v) for k, v in sorted(peaks.items())}}
    finally:
        stop.set()
        run.interrupt()


_PAGES: dict[str, int] = {}


def _pages_of(path: Path) -> int:
    return _PAGES.get(path.name, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "samples")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    inputs, pages = corpus(args.corpus)
    manifest = json.loads((args.corpus / "manifest.json").read_text(encoding="utf-8"))
    _PAGES.update({d["file"]: d["pages"] for d in manifest["documents"]})
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIROKU_", "PREFECT_API"))}
    with tempfile.TemporaryDirectory(prefix="kiroku-watch-bench-") as tmp:
        work = Path(tmp)
        env["KIROKU_HOME"] = str(work / "process-var")
        env["KIROKU_HOME_RECORD"] = str(work / "no-record")
        proc = run_process(inputs, pages, work, env)
        watch = run_watch(inputs, pages, work, env)
    ratio = round(watch["pages_per_min"] / proc["pages_per_min"], 2)
    print(f"documents {len(inputs)}, pages {pages} ({args.corpus})")
    print(f"kiroku process      {proc['pages_per_min']:6.1f} pages/min ({proc['pages']} pages in {proc['seconds']} s)")
    print(f"watch folder        {watch['pages_per_min']:6.1f} pages/min ({watch['pages']} pages in {watch['seconds']} s, "
          f"{watch['archived']} archived)")
    print(f"ratio               {ratio:6.2f}   (target >= 0.9)")
    print(f"first document      {watch['first_document_seconds']:6.1f} s from drop to archived, idle system "
          f"(target <= 20 s)")
    print("peak RSS (VmHWM)    " + ", ".join(f"{k} {v} MB" for k, v in watch["peak_rss_mb"].items()))
    for line in watch["not_archived"]:
        print("  not archived:", line)
    if args.json:
        args.json.write_text(json.dumps({"process": proc, "watch": watch, "ratio": ratio}, ensure_ascii=False,
                                        indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
