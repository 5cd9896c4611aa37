"""A private `kiroku run`: its own KIROKU_HOME, inbox and free ports, beside any live instance.

Used by the supervision tests and bench/watch_throughput.py. The instance is
configured the way an operator would (a kiroku.toml next to its var/), and the
process is started as `make run` starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

KIROKU = str(Path(sys.executable).with_name("kiroku"))


def write_instance(root: Path, engine: str | None = None) -> dict[str, str]:
    """kiroku.toml with free ports under root; returns the environment that points at it."""
    from kiroku.services import test_settings

    s = test_settings(root)
    lines = [f"prefect_port = {s.prefect_port}"]
    if engine:
        lines.append(f'ocr_engine = "{engine}"')
    lines.append("[weed_ports]")
    lines += [f'"{k}" = {v}' for k, v in s.weed_ports.items()]
    (root / "kiroku.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIROKU_", "PREFECT_", "AWS_"))}
    env.update({"KIROKU_HOME": str(root / "var"), "KIROKU_INBOX": str(root / "inbox"),
                "KIROKU_CONFIG": str(root / "kiroku.toml"), "KIROKU_HOME_RECORD": str(root / "no-record"),
                "PREFECT_LOGGING_LEVEL": "WARNING"})
    return env


@dataclass
class RunningKiroku:
    """`kiroku run` in a pipe: its output lines as they come, and the pids of its children."""

    root: Path
    env: dict[str, str]
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 240.0, start: int = 0) -> int:
        """Index of the first output line from `start` on that contains text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(start, len(self.lines)):
                if text in self.lines[i]:
                    return i
            if self.proc.poll() is not None and not any(text in ln for ln in self.lines[start:]):
                break
            time.sleep(0.2)
        raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines[-60:]))

    def descendants(self) -> set[int]:
        """Every live process started under this `kiroku run` (any session), by parent links."""
        parents: dict[int, int] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    raw = (d / "stat").read_text()
                except OSError:
                    continue
                fields = raw[raw.rindex(")") + 2:].split()
                if fields[0] not in ("Z", "X"):
                    parents[int(d.name)] = int(fields[1])
        found, frontier = set(), {self.proc.pid}
        while frontier:
            kids = {p for p, pp in parents.items() if pp in frontier} - found
            found |= kids
            frontier = kids
        return found

    def worker_pid(self) -> int | None:
        for pid in self.descendants():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kiroku.supervise" in cmd and b"--worker" in cmd:
                return pid
        return None

    def interrupt(self, timeout: float = 90.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)


def start_run(root: Path, env: dict[str, str]) -> RunningKiroku:
    proc = subprocess.Popen([KIROKU, "run"], cwd=root, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = RunningKiroku(root, env, proc)
    threading.Thread(target=run._pump, daemon=True).start()
    return run
