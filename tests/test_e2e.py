"""The whole pipeline on real parts: tesseract, pikepdf's PDF/A validator, SeaweedFS, Prefect, the catalog."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pikepdf
import pikepdf.pdfa
import pytest
from botocore.exceptions import ClientError

from tests.e2e_fixtures import render_notice_file

pytestmark = pytest.mark.slow
TITLE = "庁舎における節電の取組について（通知）"
KIROKU = str(Path(sys.executable).with_name("kiroku"))


def _nfkc_nospace(s: str) -> str:
    return "".join(unicodedata.normalize("NFKC", s).split())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KIROKU, *args], capture_output=True, text=True, timeout=600)


def test_ingest_store_search_fetch_and_lock(kiroku_env, notice_png: Path, tmp_path: Path) -> None:
    from flows.ingest import ingest_document
    from kiroku import wiring

    result = ingest_document(str(notice_png), "総務課", move_source=False)
    record = wiring.catalog(kiroku_env).get(result["id"])
    assert record is not None and record.archive is not None
    assert record.source.department == "総務課"
    assert record.metadata.document_type == "通知"
    assert _nfkc_nospace(record.metadata.title or "") == _nfkc_nospace(TITLE)
    assert record.retention is not None and record.retention.period == "3年"

    # `kiroku search` finds it by a word of its title (a separate process, as an archivist runs it)
    found = _cli("search", "節電", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert [h["record_id"] for h in hits] == [record.id]
    assert _cli("search", "契約", "--json").stdout.strip() in ("[]", "")

    # `kiroku get` fetches the PDF/A back from S3 and verifies its checksum
    out = tmp_path / "fetched.pdf"
    got = _cli("get", record.id, "-o", str(out))
    assert got.returncode == 0, got.stderr
    report = pikepdf.pdfa.validate_written(out, "2b")
    assert report.passed, report.findings
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, check=True).stdout
    title_line = next(line for line in text.splitlines() if "節電" in line)
    assert " " not in title_line.strip(), title_line
    assert _nfkc_nospace(TITLE) in _nfkc_nospace(text)

    # the archive is locked: the server refuses to delete the stored version
    store = wiring.archive_store(kiroku_env)
    with pytest.raises(ClientError) as refused:
        store.client.delete_object(Bucket=store.bucket, Key=record.archive.key, VersionId=record.archive.version_id)
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "ObjectLocked")
    # the original scan is kept bit for bit, and record.json carries the Japanese metadata intact
    assert store.get_verified(record.archive.original_key) == notice_png.read_bytes()
    stored = json.loads(store.get_verified(record.archive.record_key))
    assert stored["metadata"]["title"] == record.metadata.title
    assert stored["source"]["department"] == "総務課"


def test_the_same_scan_is_not_archived_twice(kiroku_env, tmp_path: Path) -> None:
    from flows.ingest import ingest_document

    scan = render_notice_file(tmp_path / "照会.png", "職員研修の実施状況について（照会）", number="総務第５６号")
    first = ingest_document(str(scan), None, move_source=False)
    second = ingest_document(str(scan), None, move_source=False)
    assert second["duplicate"] and second["id"] == first["id"]


def test_cli_ingest_reports_a_bad_file_and_archives_the_good_one(kiroku_env, tmp_path: Path) -> None:
    good = render_notice_file(tmp_path / "依頼.png", "防災訓練への参加について（依頼）", number="新総第７号")
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good.read_bytes()[:2000])
    run = _cli("ingest", str(good), str(bad), "--department", "危機管理課")
    assert run.returncode == 1
    assert "truncated.png" in run.stderr
    hits = json.loads(_cli("search", "防災訓練", "--json").stdout)
    assert len(hits) == 1 and hits[0]["department"] == "危機管理課"


def test_retention_extends_but_never_shortens(kiroku_env, tmp_path: Path) -> None:
    from flows.ingest import ingest_document
    from kiroku import wiring

    scan = render_notice_file(tmp_path / "延長.png", "文書管理の見直しについて（通知）", number="新総第８号")
    rid = ingest_document(str(scan), "総務課", move_source=False)["id"]
    record = wiring.catalog(kiroku_env).get(rid)
    assert record.retention.period == "3年"
    old_expiry = record.retention.expiry_date

    longer = _cli("retention", "extend", rid, "--period", "10年")
    assert longer.returncode == 0, longer.stderr
    extended = wiring.catalog(kiroku_env).get(rid)
    assert extended.retention.period == "10年" and extended.retention.expiry_date > old_expiry
    store = wiring.archive_store(kiroku_env)
    lock = store.retention_of(extended.archive.key, extended.archive.version_id)
    assert lock.retained_through == extended.retention.expiry_date

    shorter = _cli("retention", "extend", rid, "--period", "1年")
    assert shorter.returncode == 1 and "refused" in shorter.stderr
    assert wiring.catalog(kiroku_env).get(rid).retention.period == "10年"

    due = json.loads(_cli("retention", "due", "--on", "2099-01-01", "--json").stdout)
    assert rid in [r["id"] for r in due["廃棄"]]

    register = tmp_path / "管理簿.csv"
    assert _cli("register", "export", "-o", str(register)).returncode == 0
    raw = register.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM, so Excel opens it
    lines = raw.decode("utf-8-sig").splitlines()
    assert lines[0].split(",")[:3] == ["年度", "分類", "名称"]
    assert any("文書管理の見直し" in line and "10年" in line for line in lines[1:])
