"""The bucket is the authority (docs/archive-path.md §1), against a real `weed mini`.

Idempotent store (reuse, never a second version), archived_record, the PUT that
landed after its timeout, fixity (verify), catalog rebuild from the bucket, the
bucket probe and tamper-evident mode on a bucket created without Object Lock.
Each test uses its own bucket: locked objects can never be cleaned up, and verify
and rebuild read a whole bucket.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from processors.archive.archiving import (
    archived_record,
    catalog_record,
    iter_archived_records,
    rebuild_catalog,
    store_record,
)
from processors.archive.catalog import Catalog
from processors.archive.failures import TransientFailure, describe, failure_kind
from processors.archive.fixity import verify_archive
from processors.archive.storage import (
    JST,
    ObjectLockError,
    TransientStorageError,
    keys_for,
)
from processors.document import record_id_for
from schemas.record import Metadata, Page, Record, Retention, Source

KIROKU = str(Path(sys.executable).with_name("kiroku"))


def _bucket(seaweed, prefix: str = "ap") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    seaweed.store(name).ensure_bucket()
    return name


def _scan(tmp_path: Path, label: str) -> Path:
    path = tmp_path / f"{label}.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + label.encode() + os.urandom(512))
    return path


def _pdf(tmp_path: Path, label: str) -> Path:
    path = tmp_path / f"{label}-{uuid.uuid4().hex[:6]}.pdf"
    # document.pdf embeds its creation time, so every pass makes other bytes
    path.write_bytes(f"%PDF-1.7\n% {label} {time.time_ns()}\n".encode() + os.urandom(256))
    return path


def _record(scan: Path, text: str, *, title: str, day: dt.date | None = None) -> Record:
    data = scan.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    today = dt.datetime.now(JST).date()
    return Record(
        id=record_id_for(sha),
        source=Source(filename=scan.name, sha256=sha, bytes=len(data), format="png", department="総務課",
                      received_at=dt.datetime(2025, 4, 1, 9, 0, tzinfo=dt.timezone.utc)),
        pages=[Page(index=0, text=text, dpi=300, width_px=100, height_px=100, engine="rapidocr")],
        text=text,
        metadata=Metadata(title=title, document_type="通知", document_date=day, fiscal_year=2025),
        retention=Retention(rule="type:通知", period="3年", period_years=3, start_date=today,
                            expiry_date=today + dt.timedelta(days=3 * 365), disposition="廃棄"),
    )


def _versions(client, bucket: str, key: str) -> list[dict]:
    return [v for v in client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key]


# ------------------------------------------------------------------ errors
def test_transient_storage_error_is_a_transient_failure_in_japanese():
    exc = TransientStorageError("PutObject s3://b/k: ReadTimeoutError", "RequestTimeout")
    assert isinstance(exc, TransientFailure) and failure_kind(exc) == "transient"
    assert exc.code == "RequestTimeout"
    assert describe(exc).startswith("保存先ストレージ") and "ReadTimeoutError" in describe(exc)


# ------------------------------------------------------------------ store: idempotent, the bucket decides
def test_store_is_idempotent_and_archived_record_reads_the_bucket(seaweed, tmp_path):
    store = seaweed.store(_bucket(seaweed))
    scan = _scan(tmp_path, "notice")
    record = _record(scan, "庁舎の節電について", title="節電の取組について")
    assert archived_record(store, record.source.sha256) is None

    first = store_record(store, record, _pdf(tmp_path, "a"), scan)
    keys = keys_for(record.id, "png")
    assert first.archive.record_key == keys.record == f"records/{record.id}/record.json"
    assert first.archive.integrity == "object-lock"
    stored = [e for e in first.events if e.type == "stored"]
    assert len(stored) == 1 and first.archive.version_id in stored[0].detail

    found = archived_record(store, record.source.sha256)
    assert found == first
    # a second pass (new PDF bytes, as every pass makes) writes nothing and returns the stored record
    again = store_record(store, record, _pdf(tmp_path, "b"), scan)
    assert again == first
    client = seaweed.client()
    for key in (keys.original, keys.document, keys.record):
        assert len(_versions(client, store.bucket, key)) == 1, key


def test_unfinished_pass_is_completed_by_reusing_its_versions(seaweed, tmp_path):
    """A crash after original and document.pdf were stored, before record.json: the next pass reuses them."""
    store = seaweed.store(_bucket(seaweed))
    scan = _scan(tmp_path, "crash")
    record = _record(scan, "本文", title="照会")
    keys = keys_for(record.id, "png")
    until = record.retention.expiry_date - dt.timedelta(days=400)  # the crashed pass locked for less
    early_pdf = store.put_once(keys.document, _pdf(tmp_path, "first"), content_type="application/pdf",
                               retain_until=until)
    early_original = store.put_once(keys.original, scan, content_type="image/png", retain_until=until,
                                    expected_sha256=record.source.sha256)
    assert archived_record(store, record.source.sha256) is None  # no record.json: not archived

    archived = store_record(store, record, _pdf(tmp_path, "second"), scan)
    assert archived.archive.version_id == early_pdf.version_id
    assert archived.archive.sha256 == early_pdf.sha256
    assert archived.archive.original_version_id == early_original.version_id
    assert "reused from an earlier pass" in archived.events[-1].detail
    client = seaweed.client()
    for key in (keys.original, keys.document, keys.record):
        assert len(_versions(client, store.bucket, key)) == 1, key
    # the reused versions' locks were lengthened to this record's 満了日 (never shortened)
    assert store.retention_of(keys.document, early_pdf.version_id).retained_through == record.retention.expiry_date


def test_two_versions_of_one_key_the_oldest_wins_and_the_log_says_so(seaweed, tmp_path, caplog):
    store = seaweed.store(_bucket(seaweed))
    scan = _scan(tmp_path, "race")
    record = _record(scan, "本文", title="競合")
    keys = keys_for(record.id, "png")
    until = record.retention.expiry_date
    older = store.put_verified(keys.document, _pdf(tmp_path, "machine-a").read_bytes(),
                               content_type="application/pdf", retain_until=until, reuse_existing=False)
    store.put_verified(keys.document, _pdf(tmp_path, "machine-b").read_bytes(),
                       content_type="application/pdf", retain_until=until, reuse_existing=False)
    with caplog.at_level(logging.WARNING, logger="processors.archive.storage"):
        archived = store_record(store, record, _pdf(tmp_path, "c"), scan)
    assert archived.archive.version_id == older.version_id
    assert any("using the oldest" in m for m in caplog.messages)


def test_original_with_other_bytes_is_never_reused(seaweed, tmp_path):
    from processors.archive.storage import IntegrityError

    store = seaweed.store(_bucket(seaweed))
    scan = _scan(tmp_path, "mismatch")
    record = _record(scan, "本文", title="x")
    keys = keys_for(record.id, "png")
    store.put_once(keys.original, b"someone else's bytes", content_type="image/png",
                   retain_until=record.retention.expiry_date)
    with pytest.raises(IntegrityError, match="none with SHA-256"):
        store_record(store, record, _pdf(tmp_path, "a"), scan)


@pytest.mark.slow
def test_a_put_that_times_out_but_lands_is_not_sent_again(seaweed, tmp_path, caplog):
    """The issue's case: the server paused mid-PUT, the client timed out, the server then stored it.

    botocore would re-send (two locked versions); kiroku asks the bucket first.
    """
    store = seaweed.store(_bucket(seaweed), upload_read_timeout=1.0)
    key = f"records/{uuid.uuid4().hex[:16]}/document.pdf"
    data = _pdf(tmp_path, "paused").read_bytes()
    pid = seaweed.pid
    store.client.head_bucket(Bucket=store.bucket)  # clients made and connected before pausing
    store.upload_client.head_bucket(Bucket=store.bucket)
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(2.5, os.kill, (pid, signal.SIGCONT))  # after the timeout (~2 s), before the check (~3 s)
    resume.start()
    try:
        with caplog.at_level(logging.WARNING, logger="processors.archive.storage"):
            stored = store.put_verified(key, data, content_type="application/pdf",
                                        retain_until=dt.date.today() + dt.timedelta(days=30), reuse_existing=False)
    finally:
        resume.join()
        os.kill(pid, signal.SIGCONT)
    versions = _versions(seaweed.client(), store.bucket, key)
    assert [v["VersionId"] for v in versions] == [stored.version_id]
    assert any("checking whether it landed" in m for m in caplog.messages)
    assert any("had landed after all" in m for m in caplog.messages)


def test_versions_are_listed_in_the_servers_order_not_by_id_or_second(seaweed):
    """Five PUTs in one second: LastModified ties and SeaweedFS ids sort newest first."""
    store = seaweed.store(_bucket(seaweed))
    key = f"records/{uuid.uuid4().hex[:16]}/document.pdf"
    until = dt.date.today() + dt.timedelta(days=10)
    put = [store.upload_client.put_object(Bucket=store.bucket, Key=key, Body=str(i).encode(),
                                          ObjectLockMode="COMPLIANCE",
                                          ObjectLockRetainUntilDate=dt.datetime.combine(until, dt.time(),
                                                                                        dt.timezone.utc))["VersionId"]
           for i in range(5)]
    assert [v.version_id for v in store.versions_of(key)] == put


def test_retention_extension_is_an_event_in_a_new_record_json(seaweed, tmp_path):
    from processors.archive.archiving import extend_stored_retention

    store = seaweed.store(_bucket(seaweed))
    (record,) = _store_some(store, tmp_path, 1)
    extended = extend_stored_retention(store, record, "10年")
    assert extended.events[-1].type == "retention_extended" and "3年 → 10年" in extended.events[-1].detail
    assert archived_record(store, record.source.sha256) == extended  # the newest record.json is the record
    assert len(store.versions_of(record.archive.record_key)) == 2  # the old one stays as history
    assert verify_archive(store).ok


# ------------------------------------------------------------------ verify
def _store_some(store, tmp_path: Path, n: int) -> list[Record]:
    out = []
    for i in range(n):
        scan = _scan(tmp_path, f"doc{i}")
        out.append(store_record(store, _record(scan, f"第{i}号の本文 道路占用", title=f"通知{i}"),
                                _pdf(tmp_path, f"d{i}"), scan))
    return out


def test_verify_ok_then_tampering_is_reported(seaweed, tmp_path):
    store = seaweed.store(_bucket(seaweed))
    first, second = _store_some(store, tmp_path, 2)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog_record(catalog, first)

    report = verify_archive(store, catalog=catalog)
    assert report.ok, report.findings
    assert report.records == 2 and report.checked == 6  # 2 record.json + 2 originals + 2 PDFs
    assert report.uncatalogued == [second.id]
    assert report.summary().startswith("検証OK")
    events = [e for e in catalog.get(first.id).events if e.type == "verified"]
    assert len(events) == 1 and events[0].outcome == "success"

    client = seaweed.client()
    # COMPLIANCE forbids deleting or overwriting a version, but anyone may add a newer one
    client.put_object(Bucket=store.bucket, Key=first.archive.key, Body=b"%PDF forged")
    client.put_object(Bucket=store.bucket, Key=f"records/{second.id}/extra.txt", Body=b"stray")
    client.delete_object(Bucket=store.bucket, Key=second.archive.original_key)  # only a delete marker
    report = verify_archive(store, catalog=catalog)
    assert not report.ok
    assert [(f.key, f.record_id) for f in report.of("changed")] == [(first.archive.key, first.id)]
    assert [(f.key, f.record_id) for f in report.of("untracked")] == [(f"records/{second.id}/extra.txt", second.id)]
    assert [(f.key, f.version_id) for f in report.of("missing")] == [(second.archive.original_key, None)]
    assert report.checked == 6  # the recorded versions themselves are intact and were re-read
    assert report.summary().startswith("検証で問題が見つかりました")
    data = report.to_json()
    assert {"checked", "changed", "missing", "untracked"} <= data.keys() and data["ok"] is False
    verified = [e for e in catalog.get(first.id).events if e.type == "verified"]
    assert verified[-1].outcome == "failure"


def test_verify_command_exit_code_and_json(seaweed, tmp_path):
    bucket = _bucket(seaweed)
    store = seaweed.store(bucket)
    (record,) = _store_some(store, tmp_path, 1)
    env = {**os.environ, "KIROKU_HOME": str(seaweed.settings.home), "KIROKU_S3_BUCKET": bucket,
           "KIROKU_S3_PORT": str(seaweed.settings.weed_ports["s3.port"]),
           "KIROKU_CATALOG_URL": f"sqlite:///{tmp_path / 'cli.db'}", "KIROKU_CONFIG": str(tmp_path / "none.toml")}
    ok = subprocess.run([KIROKU, "verify", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["checked"] == 3
    assert "検証OK" in ok.stderr
    rebuilt = subprocess.run([KIROKU, "catalog", "rebuild"], capture_output=True, text=True, env=env, timeout=300)
    assert rebuilt.returncode == 0 and "1 件" in rebuilt.stderr, rebuilt.stderr
    found = subprocess.run([KIROKU, "search", "道路占用", "--json"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert [h["record_id"] for h in json.loads(found.stdout)] == [record.id]
    seaweed.client().put_object(Bucket=bucket, Key=record.archive.original_key, Body=b"not the scan")
    bad = subprocess.run([KIROKU, "verify"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1
    assert "検証で問題が見つかりました" in bad.stderr and "変更 1" in bad.stderr


# ------------------------------------------------------------------ catalog rebuild
def test_catalog_rebuild_gives_identical_search_results(seaweed, tmp_path):
    from processors.archive.catalog import Catalog

    store = seaweed.store(_bucket(seaweed))
    day = dt.date(2025, 6, 1)
    texts = ["道路占用の許可について 道路", "道路の補修工事 契約", "職員研修の実施 道路", "契約の締結について",
             "道路 道路 道路 占用"]
    records = []
    for i, text in enumerate(texts):
        scan = _scan(tmp_path, f"r{i}")
        # equal dates and one stored_at: only the final tie-break decides their order
        records.append(store_record(store, _record(scan, text, title=f"文書{i % 2}", day=day), _pdf(tmp_path, str(i)),
                                    scan, now=dt.datetime(2025, 6, 2, tzinfo=dt.timezone.utc)))
    db = tmp_path / "catalog.db"
    catalog = Catalog(f"sqlite:///{db}")
    for r in reversed(records):  # catalogued in another order than the rebuild will use
        catalog_record(catalog, r)
    catalog_record(catalog, records[0])  # idempotent upsert by id
    assert catalog.count() == len(records)
    queries = ["道路", "契約", "文書1", "占用", None, "研修 道路"]
    before = {q: [dataclasses.asdict(h) for h in catalog.search(q)] for q in queries}
    before_records = {r.id: catalog.get(r.id) for r in records}
    catalog.close()

    db.unlink()
    for extra in tmp_path.glob("catalog.db-*"):
        extra.unlink()
    rebuilt = Catalog(f"sqlite:///{db}")
    assert rebuilt.count() == 0
    assert rebuild_catalog(store, rebuilt) == len(records)
    after = {q: [dataclasses.asdict(h) for h in rebuilt.search(q)] for q in queries}
    assert after == before
    assert all(after[q] for q in queries)
    for r in records:  # the same record, history included (catalogued once)
        got = rebuilt.get(r.id)
        assert got.model_dump(exclude={"events"}) == before_records[r.id].model_dump(exclude={"events"})
        assert [e.type for e in got.events] == ["stored", "catalogued"]
    assert rebuild_catalog(store, rebuilt) == len(records) and rebuilt.count() == len(records)  # again: no-op


def test_rebuild_and_verify_read_the_old_layout(seaweed, tmp_path):
    """Archives written by the previous version keep records under records/<fiscal year>/<id>/."""
    store = seaweed.store(_bucket(seaweed))
    scan = _scan(tmp_path, "legacy")
    record = _record(scan, "旧形式の記録", title="旧")
    prefix = f"records/2024/{record.id}/"
    until = record.retention.expiry_date
    original = store.put_verified(prefix + "original.png", scan, content_type="image/png", retain_until=until)
    pdf = store.put_verified(prefix + "document.pdf", _pdf(tmp_path, "old"), content_type="application/pdf",
                             retain_until=until)
    from schemas.record import Archive

    old = record.model_copy(update={"archive": Archive(
        bucket=store.bucket, key=pdf.key, version_id=pdf.version_id, sha256=pdf.sha256, pdfa="2b",
        original_key=original.key, original_version_id=original.version_id, record_key=prefix + "record.json",
        stored_at=dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc))})
    store.put_verified(prefix + "record.json", old.model_dump_json().encode(), content_type="application/json",
                       retain_until=until)
    (new,) = _store_some(store, tmp_path, 1)
    assert sorted(r.id for r, _, _ in iter_archived_records(store)) == sorted([old.id, new.id])
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert rebuild_catalog(store, catalog) == 2
    assert catalog.get(old.id).archive.key == prefix + "document.pdf"
    report = verify_archive(store)
    assert report.ok and report.records == 2 and report.checked == 6


def test_an_empty_catalog_over_a_full_bucket_is_rebuilt_at_start(seaweed, tmp_path, caplog):
    from kiroku import wiring

    bucket = _bucket(seaweed)
    stored = _store_some(seaweed.store(bucket), tmp_path, 2)
    settings = dataclasses.replace(seaweed.settings, bucket=bucket, catalog_url=f"sqlite:///{tmp_path / 'lost.db'}")
    with caplog.at_level(logging.WARNING, logger="kiroku"):
        catalog = wiring.catalog(settings)
    assert catalog.count() == 2 and {r.id for r in stored} == {h.record_id for h in catalog.search("道路")}
    assert any(m.startswith("目録が空ですが") for m in caplog.messages)


# ------------------------------------------------------------------ probe and tamper-evident mode
def test_probe_and_tamper_evident_mode_on_a_bucket_without_object_lock(seaweed, tmp_path):
    bucket = f"plain-{uuid.uuid4().hex[:10]}"
    seaweed.client().create_bucket(Bucket=bucket)  # as a domestic S3 without Object Lock gives it

    locked = seaweed.store(_bucket(seaweed)).probe()
    assert locked.object_lock and locked.versioning == "Enabled" and locked.sha256_checksums
    assert locked.describe("object-lock").startswith("保管方式: オブジェクトロック")

    strict = seaweed.store(bucket)
    probe = strict.probe()
    assert not probe.object_lock and not probe.locks and probe.sha256_checksums
    with pytest.raises(ObjectLockError) as refused:
        strict.require_storable(probe)
    assert str(refused.value).startswith("保存先バケットがオブジェクトロックに対応していない")
    assert failure_kind(refused.value) == "transient"  # scans wait in the inbox, not quarantine

    evident = seaweed.store(bucket, integrity="tamper-evident")
    evident.ensure_bucket()  # switches versioning on
    probe = evident.require_storable()
    assert probe.versioning == "Enabled" and not probe.object_lock
    assert probe.describe("tamper-evident").startswith("保管方式: 改ざん検知モード")

    first, second = _store_some(evident, tmp_path, 2)
    assert first.archive.integrity == "tamper-evident"
    from processors.archive.archiving import extend_stored_retention

    first = extend_stored_retention(evident, first, "10年")  # no locks to move; a new record.json version
    assert "tamper-evident" in next(e.detail for e in first.events if e.type == "stored")
    assert verify_archive(evident).ok
    client = seaweed.client()
    # without a lock the version can really be deleted: verify is what notices
    client.delete_object(Bucket=bucket, Key=first.archive.key, VersionId=first.archive.version_id)
    client.put_object(Bucket=bucket, Key=second.archive.original_key, Body=b"replaced")
    report = verify_archive(evident)
    assert [(f.key, f.version_id) for f in report.of("missing")] == [(first.archive.key, first.archive.version_id)]
    assert [f.key for f in report.of("changed")] == [second.archive.original_key]


def test_services_status_says_the_integrity_mode(seaweed, tmp_path):
    bucket = f"plain-{uuid.uuid4().hex[:10]}"
    seaweed.store(bucket, integrity="tamper-evident").ensure_bucket()
    env = {**os.environ, "KIROKU_HOME": str(seaweed.settings.home), "KIROKU_S3_BUCKET": bucket,
           "KIROKU_S3_PORT": str(seaweed.settings.weed_ports["s3.port"]),
           "KIROKU_STORAGE_INTEGRITY": "tamper-evident", "KIROKU_CONFIG": str(tmp_path / "none.toml"),
           "KIROKU_PREFECT_PORT": str(seaweed.settings.prefect_port)}
    out = subprocess.run([KIROKU, "services", "status"], capture_output=True, text=True, env=env, timeout=120)
    assert "保管方式: 改ざん検知モード" in out.stderr, out.stderr


# ------------------------------------------------------------------ through the ingest flow
@pytest.mark.slow
def test_ingest_after_a_lost_catalog_finds_the_bucket_copy(kiroku_env, tmp_path, monkeypatch):
    """Ingest, lose the catalog, ingest the same scan again: one record, one version of each object."""
    from flows.ingest import ingest_document
    from kiroku import wiring
    from kiroku.config import load_settings
    from tests.e2e_fixtures import render_notice_file

    scan = render_notice_file(tmp_path / "照会.png", "職員研修の実施状況について（照会）", number="総務第５６号")
    first = ingest_document(str(scan), "総務課", move_source=False)
    record = wiring.catalog(kiroku_env).get(first["id"])
    assert [e.type for e in record.events] == ["received", "read", "stored", "catalogued"]
    assert record.events[0].detail.startswith("総務課/照会.png")
    assert "rapidocr" in record.events[1].detail or "tesseract" in record.events[1].detail

    monkeypatch.setenv("KIROKU_CATALOG_URL", f"sqlite:///{tmp_path / 'lost-catalog.db'}")
    settings = load_settings()
    second = ingest_document(str(scan), "総務課", move_source=False)
    assert second["duplicate"] and second["id"] == first["id"]
    assert wiring.catalog(settings).get(first["id"]) is not None
    store = wiring.archive_store(settings)
    for key in (record.archive.key, record.archive.original_key, record.archive.record_key):
        assert len(store.versions_of(key)) == 1, key
    assert verify_archive(store).ok

    from flows.verify import verify_archive_flow

    result = verify_archive_flow()
    assert result["ok"] and result["records"] == 1 and result["checked"] == 3
