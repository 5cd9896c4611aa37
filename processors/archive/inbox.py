"""The watch folder's rules: which files are scans, whose they are, when they are complete, where they go.

Intake touches only the inbox (docs/archive-path.md §4):

- the inbox is walked with os.scandir and lstat, never following a link: a symlink
  is refused and the *link itself* goes to quarantine; its target is never read,
  moved or written (kiroku may run as root, and a link could point anywhere);
- a hard link (a regular file with more than one name) is refused the same way: its
  other name may be anywhere on the file system (/etc/shadow, another office's
  files), and archiving it would lock that file's content away for decades;
- a department is one plain folder name, checked before it is used in any path, and
  every destination is checked to lie inside var/done or var/quarantine;
- a move is all or nothing: a rename on one file system, else a hidden temporary
  copy that is synced and renamed into place before the source is unlinked; if
  anything fails, the copy is removed and the scan stays in the inbox;
- names are kept as they are on disk, shortened with a hash only when they would not
  fit NAME_MAX, and never overwrite an earlier file.

Pure functions over paths, so the watcher (flows/watch.py) stays orchestration only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import stat
import threading
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from processors.archive import failures
from processors.archive.failures import InputRejected, TransientFailure
from processors.archive.names import display_name, fit_name, name_bytes_b64, readable

IGNORED_PREFIXES = (".", "~", "_")
IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial", ".swp", ".error.txt")
ERROR_SUFFIX = ".error.txt"
MAX_DEPTH = 8  # folders below a department (年度/月/...) are walked this deep, no deeper
_TEMP_PREFIX = ".kiroku-tmp-"

LINK_REFUSED = "シンボリックリンク（リンク・ショートカット）は受け付けません。リンク先のファイルそのものを受付フォルダに入れてください。"
QUARANTINED = "この書類は保管できませんでした。受付フォルダから隔離フォルダ（quarantine）に移しました。"
# a hard link on another file system than quarantine cannot be moved there without reading it
HARDLINK_NAME_ONLY = ("この書類は保管できませんでした。ハードリンクのため、受付フォルダからその名前だけを取り除きました"
                      "（中身は元の場所にそのまま残っています。隔離フォルダにはこの説明だけを置きました）。")
HARDLINK_REFUSED = ("ハードリンク（別の場所にあるファイルと同じ中身を指す別名）は受け付けません。"
                    "ファイルをコピーして受付フォルダに入れてください。")


class DepartmentRefused(InputRejected):
    """A department name that is not one plain folder name (it could point outside kiroku's folders)."""


class MoveFailed(TransientFailure):
    """A scan could not be moved out of the inbox (disk full, permissions): it stays where it was."""


class LinkRefused(InputRejected):
    """A symbolic link was dropped into the inbox."""


# --------------------------------------------------------------------------- what is in the inbox


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Entry:
    """Something in the inbox worth acting on: a regular file, or a link to refuse."""

    path: Path
    link: bool
    state: FileState


def _ignored(name: str) -> bool:
    return name.startswith(IGNORED_PREFIXES) or name.lower().endswith(IGNORED_SUFFIXES)


def is_candidate(path: Path) -> bool:
    """A regular file worth looking at (a link is not one): not hidden, not a temp file still being written."""
    if _ignored(path.name):
        return False
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def link_kind(st: os.stat_result) -> str | None:
    """'symlink' or 'hardlink' for what intake refuses as a link, None for a plain file or folder (lstat result)."""
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return "hardlink"
    return None


def is_link(path: Path) -> bool:
    """Whether the path itself is a symbolic link (dangling or not) or a hard link to a file with other names."""
    try:
        return link_kind(os.lstat(path)) is not None
    except OSError:
        return False


def scan(root: Path) -> list[Entry]:
    """Every scan and every link in the inbox, found without following any link.

    Folders are entered only when they are real folders (a link to a folder is an
    entry to refuse, not a place to look into); hidden folders and temporary files
    are skipped; FIFOs, sockets and devices are never opened.
    """
    found: list[Entry] = []

    def walk(folder: str, depth: int) -> None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return  # a folder removed or unreadable while we looked: the next look sees it
        for e in entries:
            if _ignored(e.name):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if link_kind(st) is not None:
                found.append(Entry(Path(e.path), True, FileState(st.st_size, st.st_mtime_ns)))
            elif stat.S_ISDIR(st.st_mode):
                if depth < MAX_DEPTH:
                    walk(e.path, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                found.append(Entry(Path(e.path), False, FileState(st.st_size, st.st_mtime_ns)))

    walk(os.fspath(root), 0)
    found.sort(key=lambda e: os.fsencode(e.path))
    return found


# File systems whose modification times come from this machine's own clock: a file on one
# of them whose mtime is older than the settle time has not been written to for that long.
# Network shares (nfs, cifs, sshfs and other fuse mounts) are not among them: the server
# sets the time, and its clock may run behind ours.
LOCAL_CLOCK_FILESYSTEMS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "bcachefs", "tmpfs", "ramfs", "overlay",
})


def _unescape_mount_path(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_types(mountinfo: Path = Path("/proc/self/mountinfo")) -> dict[str, str]:
    """Mount point -> file-system type, as the kernel lists them now ({} where there is no /proc)."""
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-")
            found[_unescape_mount_path(fields[4])] = fields[dash + 1]
        except (ValueError, IndexError):
            continue
    return found


def clock_is_ours(path: Path, mounts: dict[str, str]) -> bool:
    """Whether the path lies on a file system that takes its modification times from this machine.

    The deepest mount point that contains the path decides (a department folder may be a
    share mounted inside a local inbox). Unknown types count as not ours."""
    target = os.path.abspath(path)
    best = ""
    for point in mounts:
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best = point
    return mounts.get(best, "") in LOCAL_CLOCK_FILESYSTEMS


def quiet_for(state: FileState, seconds: float, now_wall: float) -> bool:
    """Whether the file's own mtime says nothing has written to it for `seconds` (and is not in the future)."""
    age = now_wall - state.mtime_ns / 1e9
    return seconds <= age


def file_state(path: Path) -> FileState | None:
    """Size and modification time of the path itself (lstat: a link is not followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return FileState(st.st_size, st.st_mtime_ns)


def open_for_writing(path: Path, writers: set[tuple[int, int]] | None = None) -> bool:
    """Whether any process on this machine holds the file open for writing (Linux /proc).

    A copy over a slow share can pause for longer than any quiet period we would wait,
    so "unchanged for a while" alone would hand a half-written scan to the pipeline.
    Where /proc cannot be read (other systems, other users' processes), the quiet
    period is the only guard. Pass `writers` (from `open_for_writing_set`) when asking
    about many files in one look: walking /proc costs about 0.1 s.
    """
    try:
        target = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(target.st_mode):
        return False
    if writers is None:
        writers = open_for_writing_set()
    return (target.st_dev, target.st_ino) in writers


def open_for_writing_set() -> set[tuple[int, int]]:
    """(device, inode) of every file some process on this machine has open for writing."""
    found: set[tuple[int, int]] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        fd_dir = pid_dir / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                flags = (pid_dir / "fdinfo" / fd).read_text()
            except OSError:
                continue
            for line in flags.splitlines():
                if line.startswith("flags:"):
                    if int(line.split()[1], 8) & 0o3 in (os.O_WRONLY, os.O_RDWR):
                        try:
                            st = os.stat(fd_dir / fd)
                        except OSError:
                            break
                        if stat.S_ISREG(st.st_mode):
                            found.add((st.st_dev, st.st_ino))
                    break
    return found


def refuse_link(path: Path) -> None:
    """Raise LinkRefused when the path is a symbolic or hard link: kiroku never reads through one."""
    try:
        st = os.lstat(path)
    except OSError:
        return  # gone: the caller's own open says so
    kind = link_kind(st)
    if kind == "symlink":
        try:
            target = os.readlink(path)  # the link's own text; the target is not touched
        except OSError:
            target = "?"
        raise LinkRefused(LINK_REFUSED, f"{display_name(path.name)} is a symbolic link to {display_name(target)}")
    if kind == "hardlink":
        raise LinkRefused(HARDLINK_REFUSED, f"{display_name(path.name)} is a hard link: the same file has "
                                            f"{st.st_nlink} names, and the others may lie outside the inbox")


# --------------------------------------------------------------------------- departments


def safe_department(name: str | None) -> str | None:
    """A department as kiroku uses it in paths: one plain folder name, NFC; None for none.

    Refused (DepartmentRefused, a one-line Japanese message): '/', '\\', '..', NUL,
    control characters, hidden names, names too long for one folder.
    """
    if name is None or name == "":
        return None
    text = unicodedata.normalize("NFC", display_name(name))
    bad = ("/" in text or "\\" in text or text in (".", "..") or text.startswith(".")
           or any(unicodedata.category(c) == "Cc" for c in text) or text.strip() != text
           or len(text.encode("utf-8")) > 200)
    if bad:
        raise DepartmentRefused(
            f"部署名「{text}」は使えません。部署名は「/」「\\」「..」を含まない、フォルダ名ひとつにしてください。",
            f"department {text!r} is not a single plain folder name")
    return text


def department_for(path: Path, inbox: Path) -> str | None:
    """The inbox sub-folder a scan was dropped in (e.g. 総務課); None for files directly in the inbox.

    Worked out from the path's text alone (no resolve(), which would follow links).
    """
    rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(inbox))
    return safe_department(rel.parts[0]) if len(rel.parts) > 1 else None


def destination_folder(root: Path, department: str | None) -> Path:
    """root/<department>, created, checked to be a real folder inside root (never a link out of it)."""
    dept = safe_department(department)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / dept if dept else root
    real_root = os.path.realpath(root)
    if os.path.commonpath([os.path.realpath(folder), real_root]) != real_root:
        raise DepartmentRefused(f"部署フォルダ「{dept}」が{root}の外を指しています。",
                                f"{folder} resolves outside {root}")
    folder.mkdir(exist_ok=True)
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise DepartmentRefused(f"部署フォルダ「{dept}」がフォルダではありません（リンクなど）。",
                                f"{folder} is not a plain folder")
    return folder


# --------------------------------------------------------------------------- moving out of the inbox

_move_guard = threading.Lock()


@contextlib.contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """One chooser of names at a time per done/quarantine root, across threads and processes."""
    with _move_guard:
        fd = os.open(root / ".kiroku-names.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def unique_destination(folder: Path, name: str, *, reserve: int = 0) -> Path:
    """A path in folder for name that overwrites nothing and fits NAME_MAX (with `reserve` bytes spare).

    Taken names include dangling links (lexists), so a quarantined link is never replaced.
    """
    folder.mkdir(parents=True, exist_ok=True)
    candidate = folder / fit_name(name, reserve=reserve)
    if not os.path.lexists(candidate) and not os.path.lexists(f"{candidate}{ERROR_SUFFIX}"):
        return candidate
    stem, suffix = os.path.splitext(name)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        candidate = folder / fit_name(f"{stem}.{stamp}-{n}{suffix}", reserve=reserve)
        if not os.path.lexists(candidate) and not os.path.lexists(f"{candidate}{ERROR_SUFFIX}"):
            return candidate
        n += 1


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_exactly(src: Path, tmp: Path) -> None:
    """src's bytes (or, for a link, the link itself) into tmp, synced; never through a link."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), tmp)
        return
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            while chunk := os.read(fin, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fout, view):]
            os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _move_exactly(src: Path, dest: Path) -> None:
    """src to dest, all or nothing; dest is known to be free (chosen under the folder lock)."""
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if link_kind(os.lstat(src)) == "hardlink":
        # copying would read a file that also lives elsewhere; dropping this one name loses
        # nothing (the content stays under its other names) and touches only the inbox
        os.unlink(src)
        return
    tmp = dest.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}")
    try:
        _copy_exactly(src, tmp)
        os.rename(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        _fsync_dir(dest.parent)
        os.unlink(src)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dest)  # the scan is still in the inbox: leave no second copy
        raise


def _move_failed(path: Path, exc: OSError) -> MoveFailed:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    japanese = ("移動先のディスクがいっぱいです。書類は受付フォルダに残し、空きができしだい自動で再試行します。" if full
                else "書類を受付フォルダから移動できませんでした。書類は受付フォルダに残し、自動で再試行します。")
    return MoveFailed(japanese, f"moving {display_name(path.name)}: {type(exc).__name__}: {exc}")


def move_to(path: Path, folder: Path, department: str | None, *, reserve: int = 0) -> Path:
    """Move a scan (or a refused link) out of the inbox into folder/<department>; returns where it went.

    Raises MoveFailed (transient: the scan is still in the inbox, no copy left behind)
    when it cannot be moved, e.g. done/ is full.
    """
    try:
        target = destination_folder(folder, department)
        with _folder_lock(folder):
            dest = unique_destination(target, path.name, reserve=reserve)
            _move_exactly(path, dest)
    except OSError as exc:
        raise _move_failed(path, exc) from exc
    return dest


# --------------------------------------------------------------------------- quarantine

ADVICE = {
    "rejected": "ファイルを開いて内容を確かめ、読める形に直してから受付フォルダに入れ直してください。",
    "crashed": "読み取りが何度も異常終了しました。ファイルが開けるか確かめ、PDFやTIFFで保存し直して入れ直してください。"
               "直らないときはシステム担当者に連絡してください。",
    "link": "リンクではなく、ファイルそのもの（コピー）を受付フォルダに入れてください。リンク先のファイルには何もしていません。",
}


def reason_text(name: str, department: str | None, reason: str | BaseException, *,
                advice: str | None = None, when: dt.datetime | None = None, headline: str | None = None) -> str:
    """The <name>.error.txt a records officer opens: what is wrong and what to do, in Japanese; then English."""
    when = when or dt.datetime.now().astimezone()
    if isinstance(reason, BaseException):
        japanese = reason.japanese if isinstance(reason, failures.KirokuFailure) else failures.describe(reason)
        detail = failures.describe(reason)
        kind = "link" if isinstance(reason, LinkRefused) else failures.failure_kind(reason)
        advice = advice or ADVICE.get(kind, ADVICE["rejected"])
    else:
        japanese = detail = reason
        advice = advice or ADVICE["rejected"]
    japanese, detail = readable(japanese), readable(detail)
    shown = display_name(name)
    raw = name_bytes_b64(name)
    lines = [
        headline or QUARANTINED,
        f"理由: {japanese}",
        f"対処: {advice}",
        f"ファイル名: {shown}",
        f"部署: {department or '-'}",
        f"隔離日時: {when.isoformat(timespec='seconds')}",
        "",
        "--- English ---",
        f"file: {shown}" + (f" (name bytes on disk, base64: {raw})" if raw else ""),
        f"department: {department or '-'}",
        f"quarantined at: {when.isoformat(timespec='seconds')}",
        f"reason: {detail}",
    ]
    return "\n".join(lines) + "\n"


def quarantine(path: Path, folder: Path, department: str | None, reason: str | BaseException,
               *, advice: str | None = None) -> Path:
    """Move a scan that cannot be archived aside, with <file>.error.txt saying why; returns where it went.

    The reason file is written first (to a hidden name) so that a full disk leaves the
    scan in the inbox rather than in quarantine without its reason. The scan itself is
    never deleted: a records officer can fix and re-drop it. Raises MoveFailed when
    nothing was moved.
    """
    try:
        target = destination_folder(folder, department)
        st = os.lstat(path)
        name_only = link_kind(st) == "hardlink" and st.st_dev != os.stat(target).st_dev
        text = reason_text(path.name, department, reason, advice=advice,
                           headline=HARDLINK_NAME_ONLY if name_only else None)
        tmp_note = target / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        with _folder_lock(folder):
            dest = unique_destination(target, path.name, reserve=len(ERROR_SUFFIX))
            note = Path(f"{dest}{ERROR_SUFFIX}")
            try:
                fd = os.open(tmp_note, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                try:
                    data = memoryview(text.encode("utf-8"))
                    while data:
                        data = data[os.write(fd, data):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                _move_exactly(path, dest)
                os.rename(tmp_note, note)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_note)
                raise
    except OSError as exc:
        raise _move_failed(path, exc) from exc
    return dest


def link_refusal(path: Path) -> str:
    """The Japanese reason a link is refused ('' for a plain file), for one-line messages."""
    try:
        refuse_link(path)
    except LinkRefused as exc:
        return exc.japanese
    return ""


def quarantine_link(path: Path, folder: Path, department: str | None) -> Path:
    """Move a symbolic link itself (never its target), or the inbox's name of a hard link, to quarantine, saying why."""
    try:
        refuse_link(path)
    except LinkRefused as exc:
        return quarantine(path, folder, department, exc)
    raise ValueError(f"{path} is not a link")
