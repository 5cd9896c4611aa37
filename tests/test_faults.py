"""The quick form of the fault-injection suite (bench/faults.py) as part of `make test`.

It starts a private `kiroku run` (real SeaweedFS, Prefect server, worker and watcher),
injects the faults, counts outcomes from the bucket and the folders, and must find no
scan lost, archived twice or stuck. It runs as a child process so that its kills,
SIGSTOPs and tmpfs mount can never touch the pytest process or the session's services.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("archived_once", "archived_twice", "quarantined", "stuck", "lost")
# Scenarios the quick form must run; peer-inputs and disk-full may be skipped with a stated reason
# (no ../shared; no way to mount a small file system for var/).
REQUIRED = {"baseline", "malformed", "odd-names", "same-content", "symlinks", "slow-writers", "burst",
            "kill-reader", "kill-uploader", "catalog-locked", "storage-paused", "storage-killed", "catalog-lost"}
MAY_SKIP = {"peer-inputs", "disk-full"}


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KIROKU_FAULTS") == "0", reason="KIROKU_FAULTS=0 skips the ~10 min fault suite")
@pytest.mark.timeout(2400)
def test_quick_fault_suite_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIROKU_", "PREFECT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "faults.py"), "--quick", "--json", str(out),
                           "--workdir", str(tmp_path / "work")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=2300)
    table = proc.stdout + "\n" + proc.stderr[-3000:]
    assert out.exists(), f"the suite wrote no JSON (exit {proc.returncode}):\n{table}"
    rows = json.loads(out.read_text(encoding="utf-8"))
    detail = json.loads(out.with_name(out.name + ".details.json").read_text(encoding="utf-8"))

    assert rows, table
    for row in rows:
        assert set(row) == {"scenario", "files", *COLUMNS}, row
        counted = sum(row[c] for c in COLUMNS)
        assert counted >= row["files"], f"{row['scenario']}: {counted} outcomes for {row['files']} files"
    skipped = {d["scenario"]: d["skipped"] for d in detail["rows"] if d["skipped"]}
    assert not (set(skipped) - MAY_SKIP), f"scenarios that did not run: {skipped}\n{table}"
    ran = {r["scenario"] for r in rows}
    assert REQUIRED <= ran, f"missing scenarios {REQUIRED - ran}\n{table}"
    assert all(r["files"] > 0 for r in rows if r["scenario"] not in skipped), table

    bad = {r["scenario"]: {c: r[c] for c in ("archived_twice", "stuck", "lost") if r[c]} for r in rows}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"scans lost, archived twice or stuck: {bad}\n{table}"
    assert proc.returncode == 0, table
