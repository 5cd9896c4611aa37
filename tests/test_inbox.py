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
