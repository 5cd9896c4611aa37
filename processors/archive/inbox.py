"""The watch folder's rules: which files are scans, whose they are, when they are complete, where they go.

Pure functions over paths, so the watcher (flows/watch.py) stays orchestration only.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

IGNORED_PREFIXES = (".", "~", "_")
IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial", ".swp", ".error.txt")


def is_candidate(path: Path) -> bool:
    """A file worth looking at: not hidden, not a temp file a scanner or copier is still writing."""
    name = path.name
    return (path.is_file() and not name.startswith(IGNORED_PREFIXES)
            and not name.lower().endswith(IGNORED_SUFFIXES))


def department_for(path: Path, inbox: Path) -> str | None:
    """The inbox sub-folder a scan was dropped in (e.g. 総務課); None for files directly in the inbox."""
    rel = path.resolve().relative_to(inbox.resolve())
    return rel.parts[0] if len(rel.parts) > 1 else None


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int


def file_state(path: Path) -> FileState | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return FileState(st.st_size, st.st_mtime_ns)


def open_for_writing(path: Path) -> bool:
    """Whether any process on this machine holds the file open for writing (Linux /proc).

    A copy over a slow share can pause for longer than any quiet period we would wait,
    so "unchanged for a while" alone would hand a half-written scan to the pipeline.
    Where /proc cannot be read (other systems, other users' processes), the quiet
    period is the only guard.
    """
    try:
        target = os.stat(path)
    except OSError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        fd_dir = pid_dir / "fd"
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(fd)
            except OSError:
                continue
            if st.st_ino != target.st_ino or st.st_dev != target.st_dev:
                continue
            try:
                flags = (pid_dir / "fdinfo" / fd.name).read_text()
            except OSError:
                continue
            for line in flags.splitlines():
                if line.startswith("flags:"):
                    mode = int(line.split()[1], 8) & 0o3
                    if mode in (os.O_WRONLY, os.O_RDWR):
                        return True
    return False


def unique_destination(folder: Path, name: str) -> Path:
    """A path in folder for name that does not overwrite an earlier file of the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    candidate = folder / name
    if not candidate.exists():
        return candidate
    stem, suffix = os.path.splitext(name)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        candidate = folder / f"{stem}.{stamp}-{n}{suffix}"
        if not candidate.exists():
            return candidate
        n += 1


def move_to(path: Path, folder: Path, department: str | None) -> Path:
    """Move a finished scan out of the inbox, keeping its department folder."""
    dest = unique_destination(folder / department if department else folder, path.name)
    shutil.move(str(path), dest)
    return dest


def quarantine(path: Path, folder: Path, department: str | None, reason: str) -> Path:
    """Move a scan that could not be archived aside, with <file>.error.txt saying why.

    The scan itself is never deleted: a records officer can fix and re-drop it.
    """
    dest = move_to(path, folder, department)
    note = dest.with_name(dest.name + ".error.txt")
    note.write_text(
        f"file: {path.name}\n"
        f"department: {department or '-'}\n"
        f"quarantined at: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}\n"
        f"reason: {reason}\n",
        encoding="utf-8",
    )
    return dest
