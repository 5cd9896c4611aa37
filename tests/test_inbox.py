"""The watch folder's rules, on real files in a temporary inbox."""

from __future__ import annotations

from pathlib import Path

from processors.archive import inbox


def test_department_is_the_first_sub_folder(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "総務課" / "2025").mkdir(parents=True)
    nested = root / "総務課" / "2025" / "scan.pdf"
    nested.write_bytes(b"x")
    top = root / "scan.pdf"
    top.write_bytes(b"x")
    assert inbox.department_for(nested, root) == "総務課"
    assert inbox.department_for(top, root) is None


def test_temporary_and_hidden_files_are_not_scans(tmp_path: Path) -> None:
    names = {"a.pdf": True, ".a.pdf": False, "~$a.tif": False, "a.pdf.part": False, "a.tmp": False,
             "b.tif.error.txt": False, "請求書 (1).jpg": True}
    for name, expected in names.items():
        p = tmp_path / name
        p.write_bytes(b"x")
        assert inbox.is_candidate(p) is expected, name


def test_open_for_writing_sees_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    with path.open("wb") as f:
        f.write(b"II*\x00")
        f.flush()
        assert inbox.open_for_writing(path)
    assert not inbox.open_for_writing(path)
    with path.open("rb"):
        assert not inbox.open_for_writing(path)


def test_quarantine_keeps_the_scan_and_says_why(tmp_path: Path) -> None:
    src = tmp_path / "inbox" / "税務課" / "壊れた.jpg"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"\xff\xd8broken")
    dest = inbox.quarantine(src, tmp_path / "quarantine", "税務課", "the JPEG is truncated")
    assert not src.exists()
    assert dest.read_bytes() == b"\xff\xd8broken"
    assert dest.parent.name == "税務課"
    reason = dest.with_name(dest.name + ".error.txt").read_text(encoding="utf-8")
    assert "the JPEG is truncated" in reason and "壊れた.jpg" in reason


def test_moving_never_overwrites_an_earlier_file(tmp_path: Path) -> None:
    done = tmp_path / "done"
    first = tmp_path / "a.pdf"
    first.write_bytes(b"1")
    second_dir = tmp_path / "again"
    second_dir.mkdir()
    second = second_dir / "a.pdf"
    second.write_bytes(b"2")
    d1 = inbox.move_to(first, done, None)
    d2 = inbox.move_to(second, done, None)
    assert d1 != d2
    assert {d1.read_bytes(), d2.read_bytes()} == {b"1", b"2"}


# --------------------------------------------------------------------------- links, names, departments, moves

import base64  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

from processors.archive import names  # noqa: E402

SJIS_NAME = "申請書（様式第１号）.png".encode("cp932")


def _tree(root: Path, outside: Path) -> dict[str, Path]:
    """An inbox with a scan, links of every kind and a FIFO."""
    (root / "総務課").mkdir(parents=True)
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("do not touch")
    (outside / "folder").mkdir()
    (outside / "folder" / "inner.png").write_bytes(b"png")
    paths = {"scan": root / "総務課" / "scan.png", "file_link": root / "総務課" / "passwd.png",
             "dir_link": root / "linked", "dangling": root / "dangling.pdf", "inside_link": root / "again.png",
             "secret": secret}
    paths["scan"].write_bytes(b"scan")
    os.symlink(secret, paths["file_link"])
    os.symlink(outside / "folder", paths["dir_link"])
    os.symlink(root / "nothing-here.pdf", paths["dangling"])
    os.symlink(paths["scan"], paths["inside_link"])
    os.mkfifo(root / "pipe.tif")
    return paths


def test_scan_finds_links_as_links_and_never_enters_a_linked_folder(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    paths = _tree(root, tmp_path / "outside")
    found = {e.path: e.link for e in inbox.scan(root)}
    assert found == {paths["scan"]: False, paths["file_link"]: True, paths["dir_link"]: True,
                     paths["dangling"]: True, paths["inside_link"]: True}
    assert not inbox.is_candidate(paths["file_link"]) and not inbox.is_candidate(root / "pipe.tif")
    assert inbox.is_candidate(paths["scan"])


@pytest.mark.parametrize("which", ["file_link", "dir_link", "dangling", "inside_link"])
def test_a_link_itself_goes_to_quarantine_and_its_target_is_left_alone(tmp_path: Path, which: str) -> None:
    root = tmp_path / "inbox"
    paths = _tree(root, tmp_path / "outside")
    link = paths[which]
    target_text = os.readlink(link)
    before = {p: os.lstat(p) for p in (paths["secret"], paths["scan"], tmp_path / "outside" / "folder" / "inner.png")}
    department = inbox.department_for(link, root)
    dest = inbox.quarantine_link(link, tmp_path / "quarantine", department)
    assert not os.path.lexists(link)
    assert os.path.islink(dest) and os.readlink(dest) == target_text  # the link itself, as it was
    for p, st in before.items():
        now = os.lstat(p)
        assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert paths["secret"].read_text() == "do not touch"
    reason = Path(f"{dest}.error.txt").read_text(encoding="utf-8")
    assert reason.startswith("この書類は保管できませんでした") and "シンボリックリンク" in reason
    assert "English" in reason and "symbolic link" in reason


def test_refuse_link_names_a_link_and_passes_a_file(tmp_path: Path) -> None:
    scan = tmp_path / "a.png"
    scan.write_bytes(b"x")
    os.symlink(tmp_path / "gone", tmp_path / "b.png")
    inbox.refuse_link(scan)
    with pytest.raises(inbox.LinkRefused, match="シンボリックリンク"):
        inbox.refuse_link(tmp_path / "b.png")


def test_names_are_shown_decoded_and_kept_as_bytes() -> None:
    on_disk = os.fsdecode(SJIS_NAME)
    assert names.display_name(on_disk) == "申請書（様式第１号）.png"
    assert base64.b64decode(names.name_bytes_b64(on_disk)) == SJIS_NAME
    nfd = __import__("unicodedata").normalize("NFD", "ガイド.pdf")  # as macOS writes it: カ + combining mark
    assert names.display_name(nfd) == "ガイド.pdf"
    assert names.name_bytes_b64(nfd) is not None  # the bytes on disk are not the NFC UTF-8
    assert names.name_bytes_b64("ガイド.pdf") is None
    odd = os.fsdecode(b"scan-\xff\xfe.tif")  # neither UTF-8 nor cp932
    shown = names.display_name(odd)
    assert shown.encode("utf-8") and "\\xff" in shown
    assert names.decode_path(names.encode_path(Path("/in") / odd)) == Path("/in") / odd
    assert names.encode_path("/in/普通.png") == "/in/普通.png"


def test_long_names_fit_name_max_and_never_collide(tmp_path: Path) -> None:
    folder = tmp_path / "quarantine"
    long_a = "会議録" * 27 + "A.pdf"  # 248 bytes
    long_b = "会議録" * 27 + "B.pdf"
    assert len(long_a.encode()) >= 245
    dests = []
    for name in (long_a, long_b, long_a, long_a):
        src_dir = tmp_path / f"in{len(dests)}"
        src_dir.mkdir()
        src = src_dir / name
        src.write_bytes(name.encode())
        dests.append(inbox.quarantine(src, folder, None, "壊れています"))
    assert len(set(dests)) == 4
    for dest in dests:
        note = Path(f"{dest}.error.txt")
        assert len(os.fsencode(note.name)) <= names.NAME_MAX and note.exists()
        assert dest.suffix == ".pdf"
    assert {d.read_bytes() for d in dests} == {long_a.encode(), long_b.encode()}
    assert names.fit_name(long_a, reserve=10) != names.fit_name(long_b, reserve=10)


@pytest.mark.parametrize("bad", ["../../x", "..", "a/b", "a\\b", ".hidden", "x\x00y", " 総務課", "改\n行"])
def test_a_department_must_be_one_plain_folder_name(bad: str) -> None:
    with pytest.raises(inbox.DepartmentRefused, match="部署名"):
        inbox.safe_department(bad)


def test_departments_are_nfc_and_stay_inside_their_folder(tmp_path: Path) -> None:
    import unicodedata

    assert inbox.safe_department(unicodedata.normalize("NFD", "学校教育課")) == "学校教育課"
    assert inbox.safe_department(None) is None and inbox.safe_department("") is None
    done = tmp_path / "done"
    done.mkdir()
    os.symlink(tmp_path, done / "総務課")  # someone linked a department folder out of done/
    src = tmp_path / "scan.png"
    src.write_bytes(b"x")
    with pytest.raises(inbox.DepartmentRefused):
        inbox.move_to(src, done, "総務課")
    assert src.exists()


def test_a_move_across_file_systems_leaves_no_partial_copy(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to move across")
    target = Path(tempfile.mkdtemp(dir=shm, prefix="kiroku-test-"))
    try:
        src = tmp_path / os.fsdecode(SJIS_NAME)
        src.write_bytes(b"\x89PNG" + os.urandom(3_000_000))
        data = src.read_bytes()
        dest = inbox.move_to(src, target, "総務課")
        assert not src.exists() and dest.read_bytes() == data and dest.name == src.name
        assert [p.name for p in dest.parent.iterdir()] == [src.name]
    finally:
        shutil.rmtree(target)


MOVE_ON_FULL_DISK = r"""
import os, sys
from pathlib import Path
from processors.archive import inbox
src, full = Path(sys.argv[1]), Path(sys.argv[2])
filler = full / "filler"
with open(filler, "wb") as f:
    try:
        while True:
            f.write(b"\0" * 65536)
    except OSError:
        pass
os.unlink(filler)
with open(filler, "wb") as f:
    f.write(b"\0" * (200 * 1024))   # leave less room than the scan needs
for what in ("done", "quarantine"):
    try:
        if what == "done":
            inbox.move_to(src, full / "done", "総務課")
        else:
            inbox.quarantine(src, full / "quarantine", None, "test")
        print(what, "MOVED")
    except inbox.MoveFailed as exc:
        print(what, "FAILED", exc.japanese)
left = sorted(str(p.relative_to(full)) for p in full.rglob("*")
              if p.is_file() and p.name not in ("filler", ".kiroku-names.lock"))
print("LEFT", left)
"""


def test_a_full_disk_leaves_the_scan_in_the_inbox_and_no_copy_behind(tmp_path: Path) -> None:
    """done/ on a real, tiny tmpfs (mounted in a private namespace), the inbox elsewhere."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    full = tmp_path / "full"
    full.mkdir()
    src = tmp_path / "inbox" / "大きな.tif"
    src.parent.mkdir()
    data = os.urandom(400 * 1024)
    src.write_bytes(data)
    script = tmp_path / "move.py"
    script.write_text(MOVE_ON_FULL_DISK)
    cmd = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=512k none "{full}" && '
           f'exec "{sys.executable}" "{script}" "{src}" "{full}"']
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if run.returncode != 0 and "mount" in run.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("done FAILED 移動先のディスクがいっぱいです"), run.stdout
    assert lines[1].startswith("quarantine FAILED"), run.stdout
    assert lines[2] == "LEFT []", run.stdout  # no partial copy, no reason file
    assert src.read_bytes() == data


def test_the_reason_file_is_japanese_first_then_english(tmp_path: Path) -> None:
    from processors.archive.failures import InputRejected

    src = tmp_path / os.fsdecode(SJIS_NAME)
    src.write_bytes(b"%PDF-1.7 encrypted")
    exc = InputRejected("暗号化されたPDFは読めません。パスワードを外して入れ直してください。",
                        "the PDF is encrypted (/Encrypt)")
    dest = inbox.quarantine(src, tmp_path / "q", "税務課", exc)
    assert dest.name == src.name  # kept as it was on disk
    text = Path(f"{dest}.error.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("この書類は保管できませんでした")
    assert lines[1] == "理由: 暗号化されたPDFは読めません。パスワードを外して入れ直してください。"
    assert lines[2].startswith("対処: ")
    assert lines[3] == "ファイル名: 申請書（様式第１号）.png"
    assert text.index("English") > text.index("対処")
    assert "reason: 暗号化されたPDFは読めません" in text and "(the PDF is encrypted (/Encrypt))" in text
    assert base64.b64encode(SJIS_NAME).decode() in text


def test_a_hard_link_is_refused_and_the_file_it_shares_is_left_alone(tmp_path: Path) -> None:
    """A second name for a file elsewhere (as root, `ln /etc/shadow inbox/x.png` works on one file
    system): kiroku must not read it into a locked archive; only the inbox's name is moved aside."""
    root = tmp_path / "inbox"
    (root / "総務課").mkdir(parents=True)
    outside = tmp_path / "outside" / "台帳.png"
    outside.parent.mkdir()
    outside.write_bytes(b"secret ledger")
    os.chmod(outside, 0o600)
    link = root / "総務課" / "台帳.png"
    os.link(outside, link)
    plain = root / "総務課" / "普通.png"
    plain.write_bytes(b"scan")

    found = {e.path: e.link for e in inbox.scan(root)}
    assert found == {link: True, plain: False}
    assert inbox.is_link(link) and not inbox.is_link(plain)
    with pytest.raises(inbox.LinkRefused, match="ハードリンク"):
        inbox.refuse_link(link)
    inbox.refuse_link(plain)

    before = os.lstat(outside)
    dest = inbox.quarantine_link(link, tmp_path / "quarantine", "総務課")
    assert not os.path.lexists(link)
    now = os.lstat(outside)
    assert outside.read_bytes() == b"secret ledger" and (now.st_ino, now.st_mode) == (before.st_ino, before.st_mode)
    reason = Path(f"{dest}.error.txt").read_text(encoding="utf-8")
    assert "ハードリンク" in reason and "hard link" in reason


MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /srv/share rw,relatime - nfs4 nas:/scans rw
41 27 0:51 / /srv/kiroku/inbox/建設課 rw,relatime - cifs //nas/建設 rw
42 27 0:52 / /mnt/my\\040disk rw,relatime - xfs /dev/sdb1 rw
"""


def test_mount_types_reads_the_kernels_list_with_escaped_names(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO, encoding="utf-8")
    assert inbox.mount_types(info) == {"/": "ext4", "/srv/share": "nfs4", "/srv/kiroku/inbox/建設課": "cifs",
                                       "/mnt/my disk": "xfs"}
    assert inbox.mount_types(tmp_path / "absent") == {}


def test_only_a_local_disk_has_our_clock_and_the_deepest_mount_decides(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO, encoding="utf-8")
    mounts = inbox.mount_types(info)
    assert inbox.clock_is_ours(Path("/srv/kiroku/inbox/総務課/a.pdf"), mounts)
    assert not inbox.clock_is_ours(Path("/srv/kiroku/inbox/建設課/a.pdf"), mounts)  # a share inside the inbox
    assert not inbox.clock_is_ours(Path("/srv/share/inbox/a.pdf"), mounts)
    assert inbox.clock_is_ours(Path("/mnt/my disk/a.pdf"), mounts)
    assert not inbox.clock_is_ours(Path("/srv/sharex/a.pdf"), {"/srv/share": "ext4"})  # a prefix, not a parent
    assert not inbox.clock_is_ours(Path("/a.pdf"), {})  # nothing known: not ours


def test_quiet_for_reads_the_files_own_mtime() -> None:
    now = 1_800_000_000.0
    assert inbox.quiet_for(inbox.FileState(10, int((now - 5) * 1e9)), 2.0, now)
    assert not inbox.quiet_for(inbox.FileState(10, int((now - 1) * 1e9)), 2.0, now)
    assert not inbox.quiet_for(inbox.FileState(10, int((now + 60) * 1e9)), 2.0, now)  # in the future
