"""A `make run`-style check of the intake rules, by hand: real `kiroku watch`, real SeaweedFS.

    .venv/bin/python bench/intake_check.py [--keep] [--timeout 600]      (or: make intake-check)

Starts SeaweedFS on free ports under a temporary folder, runs the real `kiroku watch`
command on a fresh inbox, and drops into it what issue 8 found stopping or fooling the
watch folder: a good scan, a symlink to /etc/passwd, a dangling link, a good scan whose
name is Shift_JIS bytes, a zero-byte file and a 254-byte name. It prints where each one
ends up (done / quarantine with the first lines of its reason / still in the inbox) as it
happens, checks that /etc/passwd was not touched and that `kiroku watch` is still
running, then stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _drop(inbox: Path, work: Path) -> dict[str, Path]:
    from tests.pagegen import DEFAULT_LINES, render_notice

    def notice(title: str, number: str) -> bytes:
        lines = list(DEFAULT_LINES)
        lines[0], lines[4] = number, title
        path = work / f"{uuid.uuid4().hex}.png"
        render_notice(lines, dpi=200).save(path, dpi=(200, 200))
        return path.read_bytes()

    (inbox / "総務課").mkdir(parents=True, exist_ok=True)
    files = {
        "good scan": inbox / "総務課" / "節電通知.png",
        "Shift_JIS name": inbox / "総務課" / os.fsdecode("庁舎点検（報告）.png".encode("cp932")),
        "link to /etc/passwd": inbox / "総務課" / "passwd.png",
        "dangling link": inbox / "消えたファイル.pdf",
        "zero bytes": inbox / "空のファイル.pdf",
        "254-byte name": inbox / ("令和七年度第一回定例会議事録" * 5 + "（追加資料その二）abcdefghijklm.pdf"),
    }
    files["good scan"].write_bytes(notice("庁舎における節電の取組について（通知）", "新総第１２３４号"))
    files["Shift_JIS name"].write_bytes(notice("庁舎点検の結果について（報告）", "新総第７７号"))
    os.symlink("/etc/passwd", files["link to /etc/passwd"])
    os.symlink(inbox / "どこにもない.pdf", files["dangling link"])
    files["zero bytes"].write_bytes(b"")
    files["254-byte name"].write_bytes(b"%PDF-1.4\n% truncated by a failed copy\n")
    return files


def _where(path: Path, inbox: Path, home: Path) -> str:
    from processors.archive.names import display_path

    rel = path.relative_to(inbox)
    if os.path.lexists(path):
        return "inbox (waiting)"
    done = home / "done" / rel
    if os.path.lexists(done):
        return f"done/{display_path(rel)}"
    qdir = home / "quarantine" / rel.parent
    if qdir.is_dir():
        stem = os.fsencode(rel.name)[:60]
        for p in sorted(qdir.iterdir()):
            if os.fsencode(p.name).startswith(stem) and not p.name.endswith(".error.txt"):
                note = Path(f"{p}.error.txt")
                reason = note.read_text(encoding="utf-8").splitlines()[1] if note.exists() else "(no reason file!)"
                return f"quarantine ({reason})"
    return "gone (neither done nor quarantine!)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder to look at")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every outcome")
    args = parser.parse_args()

    from kiroku import services

    tmp = Path(tempfile.mkdtemp(prefix="kiroku-intake-check-"))
    settings = services.test_settings(tmp)
    inbox, home = settings.inbox, settings.home
    inbox.mkdir(parents=True)
    passwd = os.stat("/etc/passwd")
    print(f"folder: {tmp}\nstarting SeaweedFS on free ports…", flush=True)
    services.up(settings, prefect=False)
    env = {**os.environ, "KIROKU_HOME": str(home), "KIROKU_INBOX": str(inbox),
           "KIROKU_S3_PORT": str(settings.weed_ports["s3.port"]), "KIROKU_PREFECT_PORT": str(settings.prefect_port),
           "KIROKU_CATALOG_URL": f"sqlite:///{tmp / 'catalog.db'}", "KIROKU_CONFIG": str(tmp / "no-kiroku.toml"),
           "PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    kiroku = Path(sys.executable).with_name("kiroku")
    log = (tmp / "watch.log").open("wb")
    watch = subprocess.Popen([str(kiroku), "watch", "--settle", "1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    code = 1
    try:
        files = _drop(inbox, tmp)
        print("dropped:", ", ".join(files), flush=True)
        t0 = time.monotonic()
        last: dict[str, str] = {}
        while time.monotonic() - t0 < args.timeout:
            now = {k: _where(p, inbox, home) for k, p in files.items()}
            for k, v in now.items():
                if last.get(k) != v:
                    print(f"{time.monotonic() - t0:6.1f}s  {k:20}  {v}", flush=True)
            last = now
            if not any(v.startswith("inbox") for v in now.values()) or watch.poll() is not None:
                break
            time.sleep(2)
        after = os.stat("/etc/passwd")
        untouched = (after.st_ino, after.st_mtime_ns, after.st_size) == (passwd.st_ino, passwd.st_mtime_ns,
                                                                         passwd.st_size)
        alive = watch.poll() is None
        print("\nresult:")
        for k, v in last.items():
            print(f"  {k:20}  {v}")
        print(f"  /etc/passwd untouched: {untouched}")
        print(f"  kiroku watch still running: {alive}")
        expected = {"good scan": "done", "Shift_JIS name": "done", "link to /etc/passwd": "quarantine",
                    "dangling link": "quarantine", "zero bytes": "quarantine", "254-byte name": "quarantine"}
        ok = untouched and alive and all(last[k].startswith(v) for k, v in expected.items())
        print("ALL AS EXPECTED" if ok else "NOT AS EXPECTED (see watch.log)")
        code = 0 if ok else 1
    finally:
        if watch.poll() is None:
            os.killpg(watch.pid, signal.SIGINT)
            try:
                watch.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(watch.pid, signal.SIGKILL)
                watch.wait()
        log.close()
        services.down(settings, prefect=False)
        if args.keep or code:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
