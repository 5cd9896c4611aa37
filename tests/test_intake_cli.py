"""Intake rules through the `kiroku` command: departments, links, and `process --out` names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiroku.process import output_stems

KIROKU = str(Path(sys.executable).with_name("kiroku"))
REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "KIROKU_HOME": str(cwd / "var"), "KIROKU_INBOX": str(cwd / "inbox"),
           "KIROKU_CONFIG": str(cwd / "no-kiroku.toml"), "PYTHONPATH": str(REPO)}
    return subprocess.run([KIROKU, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.mark.parametrize("department", ["../../x", "a/b", "..", ".secret"])
def test_ingest_refuses_a_department_that_is_not_one_folder_name(tmp_path: Path, department: str) -> None:
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"\x89PNG")
    run = _run("ingest", "--move", "--department", department, str(scan), cwd=tmp_path)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("部署名"), run.stderr
    assert "Traceback" not in run.stderr
    assert scan.exists() and not (tmp_path / "var").exists() and not (tmp_path.parent / "x").exists()


def test_ingest_refuses_links_and_moves_only_the_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG do not touch")
    before = os.stat(outside)
    (tmp_path / "inbox").mkdir()
    link = tmp_path / "inbox" / "link.png"
    dangling = tmp_path / "inbox" / "dangling.pdf"
    os.symlink(outside, link)
    os.symlink(tmp_path / "gone.pdf", dangling)
    run = _run("ingest", "--move", str(link), str(dangling), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("シンボリックリンク") == 2 and "Traceback" not in run.stderr, run.stderr
    quarantine = tmp_path / "var" / "quarantine"
    assert os.path.islink(quarantine / "link.png") and os.path.islink(quarantine / "dangling.pdf")
    assert not os.path.lexists(link) and not os.path.lexists(dangling)
    after = os.stat(outside)
    assert outside.read_bytes() == b"\x89PNG do not touch" and after.st_mtime_ns == before.st_mtime_ns
    assert not (tmp_path / "var" / "done").exists()


def test_output_names_never_land_on_an_input_nor_on_each_other(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    a, b, c = tmp_path / "001.jpg", tmp_path / "001.png", tmp_path / "sub" / "001.tif"
    own = out / "report.pdf"  # `process report.pdf --out <its own folder>`
    json_input = out / "memo.json.png"
    stems = output_stems([a, b, c, own, tmp_path / "002.png", json_input], out)
    assert stems[a] == "001" and stems[b] == "001.png" and stems[c] == "001.tif"
    assert stems[own] == "report.pdf"  # report.pdf.pdf and report.pdf.json: the scan is not written over
    assert stems[tmp_path / "002.png"] == "002"
    assert len(set(stems.values())) == len(stems)
    long = tmp_path / ("議事録" * 30 + ".png")
    stem = output_stems([long], out)[long]
    assert len(f"{stem}.json".encode()) <= 255


@pytest.mark.slow
def test_process_keeps_every_input_and_says_which_output_is_whose(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    def page() -> Image.Image:
        img = Image.new("L", (800, 400), 255)
        ImageDraw.Draw(img).rectangle((100, 150, 700, 250), outline=0, width=6)
        return img

    scans = tmp_path / "scans"
    scans.mkdir()
    page().save(scans / "001.jpg", dpi=(200, 200))
    page().save(scans / "001.png", dpi=(200, 200))
    page().save(scans / "x.pdf", resolution=200)
    original = (scans / "x.pdf").read_bytes()
    run = _run("process", str(scans / "001.jpg"), str(scans / "001.png"), str(scans / "x.pdf"),
               "--out", str(scans), cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (scans / "x.pdf").read_bytes() == original  # the input was not written over
    for stem, source in (("001", "001.jpg"), ("001.png", "001.png"), ("x.pdf", "x.pdf")):
        assert (scans / f"{stem}.pdf").stat().st_size > 0
        record = json.loads((scans / f"{stem}.json").read_text(encoding="utf-8"))
        assert record["source"]["filename"] == source
        assert f"{source} → {scans / stem}.pdf" in run.stderr, run.stderr
    assert "3 of 3 read" in run.stderr
