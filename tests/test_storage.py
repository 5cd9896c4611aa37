"""processors/storage.py against a real `weed mini` (the session fixture `seaweed`)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

import pytest
from botocore.exceptions import ClientError

from processors.archive.storage import (
    COMPLIANCE,
    JST,
    ArchiveStore,
    IntegrityError,
    ObjectLockError,
    RetentionError,
    S3Credentials,
    StorageError,
    TransientStorageError,
    decode_metadata,
    encode_metadata,
    end_of_day,
    keys_for,
    record_id_of_key,
    retained_through,
)

JAPANESE_META = {
    "title": "令和６年度 道路占用許可について（通知）",
    "issuer": "総務課",
    "department": "  総務課  ",  # surrounding blanks that HTTP would strip
    "document-number": "総第１２３号",
    "fiscal-year": "2024",
    "empty": "",
    "looks-encoded": "=?UTF-8?B?not ours?=",
}


def _in_days(n: int) -> dt.date:
    return dt.datetime.now(JST).date() + dt.timedelta(days=n)


def _pdf_bytes(text: str) -> bytes:
    return f"%PDF-1.7\n% {text}\n".encode() + bytes(range(256)) * 40


def _error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


# ------------------------------------------------------------------ pure helpers
def test_keys_for_layout():
    keys = keys_for("0123456789abcdef", ".TIF")
    assert keys.document == "records/0123456789abcdef/document.pdf"
    assert keys.original == "records/0123456789abcdef/original.tif"
    assert keys.record == "records/0123456789abcdef/record.json"
    for bad_id in ("総務-1", "../x", "a/b", ""):
        with pytest.raises(ValueError):
            keys_for(bad_id, "pdf")
    with pytest.raises(ValueError):
        keys_for("abc", "p/df")
    # both layouts are recognised when listing: this one and the older records/<fy>/<id>/
    assert record_id_of_key(keys.record) == "0123456789abcdef"
    assert record_id_of_key("records/2024/0123456789abcdef/record.json") == "0123456789abcdef"
    assert record_id_of_key("records/unknown/abc/record.json") == "abc"
    assert record_id_of_key(keys.document) is None and record_id_of_key("t/x/record.json") is None


def test_metadata_encoding_round_trip_is_ascii():
    encoded = encode_metadata(JAPANESE_META)
    assert all(v.isascii() and v == v.strip() and v for v in encoded.values())
    assert encoded["fiscal-year"] == "2024"  # plain ASCII stays readable
    assert encoded["issuer"].startswith("=?UTF-8?B?")
    assert decode_metadata(encoded) == JAPANESE_META
    with pytest.raises(ValueError):
        encode_metadata({"Fiscal_Year": "2024"})
    with pytest.raises(ValueError):
        encode_metadata({"long": "あ" * 600})


def test_end_of_day_is_japanese_midnight():
    end = end_of_day(dt.date(2030, 3, 31))
    assert end == dt.datetime(2030, 3, 31, 15, 0, tzinfo=dt.timezone.utc)
    assert retained_through(end) == dt.date(2030, 3, 31)
    assert retained_through(end.astimezone(dt.timezone.utc)) == dt.date(2030, 3, 31)


# ------------------------------------------------------------------ bucket
def test_bucket_has_object_lock_and_versioning(seaweed, archive):
    archive.ensure_bucket()  # second call on an existing bucket: just verifies
    client = seaweed.client()
    conf = client.get_object_lock_configuration(Bucket=archive.bucket)
    assert conf["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert client.get_bucket_versioning(Bucket=archive.bucket)["Status"] == "Enabled"


def test_existing_bucket_without_lock_is_refused(seaweed):
    client = seaweed.client()
    client.create_bucket(Bucket="kiroku-unlocked")
    with pytest.raises(ObjectLockError, match="without Object Lock"):
        seaweed.store("kiroku-unlocked").ensure_bucket()


def test_ensure_bucket_creates_a_locked_bucket(seaweed):
    store = seaweed.store("kiroku-fresh")
    store.ensure_bucket()
    store.ensure_bucket()
    assert seaweed.client().get_object_lock_configuration(
        Bucket="kiroku-fresh")["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"


# ------------------------------------------------------------------ put / get
def test_put_verified_round_trip_with_japanese_metadata(seaweed, archive, key_prefix):
    data = _pdf_bytes("道路占用許可")
    expiry = _in_days(400)
    stored = archive.put_verified(key_prefix + "document.pdf", data, content_type="application/pdf",
                                  metadata=JAPANESE_META, retain_until=expiry, legal_hold=False)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data) and stored.version_id and not stored.reused

    assert archive.get_verified(stored.key, stored.version_id, expected_sha256=stored.sha256) == data

    info = archive.head(stored.key, stored.version_id)
    assert {k: info.metadata[k] for k in JAPANESE_META} == JAPANESE_META
    assert info.sha256 == stored.sha256 and info.size == len(data)
    assert info.content_type == "application/pdf"

    # The server kept the checksum we sent and returns it (x-amz-checksum-sha256).
    raw = seaweed.client().head_object(Bucket=archive.bucket, Key=stored.key,
                                       VersionId=stored.version_id, ChecksumMode="ENABLED")
    assert raw["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()

    ret = archive.retention_of(stored.key, stored.version_id)
    assert ret.mode == COMPLIANCE and not ret.legal_hold
    assert ret.retain_until == end_of_day(expiry)
    assert ret.retained_through == expiry


def test_put_from_path_and_record_json(archive, key_prefix, tmp_path):
    record = {"id": "2024-000001", "metadata": {"title": "会議録", "issuer": "議会事務局"}}
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    stored = archive.put_verified(key_prefix + "record.json", path, content_type="application/json",
                                  metadata={}, retain_until=_in_days(30), legal_hold=False)
    assert stored.size == path.stat().st_size
    assert json.loads(archive.get_verified(stored.key).decode("utf-8")) == record


def test_retry_reuses_identical_version(seaweed, archive, key_prefix):
    key, data, until = key_prefix + "document.pdf", _pdf_bytes("retry"), _in_days(60)
    first = archive.put_verified(key, data, content_type="application/pdf", retain_until=until)
    again = archive.put_verified(key, data, content_type="application/pdf", retain_until=until)
    assert again.reused and again.version_id == first.version_id
    versions = seaweed.client().list_object_versions(Bucket=archive.bucket, Prefix=key)["Versions"]
    assert len(versions) == 1
    # A longer protection than the stored one is a new version, not a reuse.
    longer = archive.put_verified(key, data, content_type="application/pdf", retain_until=_in_days(90))
    assert not longer.reused and longer.version_id != first.version_id


def test_put_refuses_unlocked_past_and_non_ascii(archive, key_prefix):
    with pytest.raises(ValueError, match="unlocked"):
        archive.put_verified(key_prefix + "a.pdf", b"x", content_type="application/pdf")
    with pytest.raises(ValueError, match="already passed"):
        archive.put_verified(key_prefix + "a.pdf", b"x", content_type="application/pdf",
                             retain_until=_in_days(-1))
    with pytest.raises(ValueError, match="ASCII"):
        archive.put_verified(key_prefix + "文書.pdf", b"x", content_type="application/pdf", legal_hold=True)


def test_server_rejects_wrong_checksum(seaweed, archive, key_prefix):
    key = key_prefix + "corrupt.pdf"
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    with pytest.raises(ClientError) as exc:
        seaweed.client().put_object(Bucket=archive.bucket, Key=key, Body=b"the real bytes",
                                    ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong)
    assert _error_code(exc.value) in ("BadDigest", "XAmzContentChecksumMismatch", "InvalidRequest")
    with pytest.raises(StorageError) as missing:
        archive.head(key)
    assert missing.value.code in ("404", "NoSuchKey")


def test_get_verified_detects_a_mismatch(archive, key_prefix):
    stored = archive.put_verified(key_prefix + "a.pdf", b"original bytes", content_type="application/pdf",
                                  retain_until=_in_days(10))
    with pytest.raises(IntegrityError, match="expected"):
        archive.get_verified(stored.key, stored.version_id, expected_sha256=hashlib.sha256(b"other").hexdigest())


# ------------------------------------------------------------------ object lock enforced by the server
def test_locked_version_cannot_be_deleted(seaweed, archive, key_prefix):
    data = _pdf_bytes("locked")
    stored = archive.put_verified(key_prefix + "document.pdf", data, content_type="application/pdf",
                                  retain_until=_in_days(3650))
    client = seaweed.client()
    for bypass in (False, True):
        with pytest.raises(ClientError) as exc:
            client.delete_object(Bucket=archive.bucket, Key=stored.key, VersionId=stored.version_id,
                                 BypassGovernanceRetention=bypass)
        assert _error_code(exc.value) == "AccessDenied"
    # Without a version id S3 only adds a delete marker; the locked version stays readable.
    client.delete_object(Bucket=archive.bucket, Key=stored.key)
    assert archive.get_verified(stored.key, stored.version_id) == data


def test_retention_can_be_extended_but_not_shortened(archive, key_prefix):
    expiry = _in_days(100)
    stored = archive.put_verified(key_prefix + "document.pdf", b"%PDF retention", content_type="application/pdf",
                                  retain_until=expiry)
    with pytest.raises(RetentionError, match="never") as exc:
        archive.extend_retention(stored.key, stored.version_id, expiry - dt.timedelta(days=1))
    assert str(expiry) in str(exc.value)  # the message says what the current date is
    assert archive.retention_of(stored.key, stored.version_id).retained_through == expiry

    later = expiry + dt.timedelta(days=365)
    ret = archive.extend_retention(stored.key, stored.version_id, later)
    assert ret.mode == COMPLIANCE and ret.retained_through == later


def test_legal_hold_blocks_delete_until_lifted(seaweed, archive, key_prefix):
    # 永年: no end date, legal hold only.
    stored = archive.put_verified(key_prefix + "document.pdf", b"%PDF eternal", content_type="application/pdf",
                                  legal_hold=True)
    ret = archive.retention_of(stored.key, stored.version_id)
    assert ret.legal_hold and ret.mode is None
    client = seaweed.client()
    with pytest.raises(ClientError) as exc:
        client.delete_object(Bucket=archive.bucket, Key=stored.key, VersionId=stored.version_id)
    assert _error_code(exc.value) == "AccessDenied"
    # Lifting the hold (which needs its own permission) is what makes the delete possible:
    # proof that the hold, not something else, was blocking it.
    archive.set_legal_hold(stored.key, stored.version_id, False)
    client.delete_object(Bucket=archive.bucket, Key=stored.key, VersionId=stored.version_id)
    with pytest.raises(StorageError):
        archive.head(stored.key, stored.version_id)


def test_unsigned_and_wrongly_signed_requests_are_refused(seaweed, archive):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    common = dict(endpoint_url=seaweed.settings.s3_url, region_name="ap-northeast-1")
    anonymous = boto3.client("s3", config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}), **common)
    forged = boto3.client("s3", aws_access_key_id=seaweed.credentials.access_key_id,
                          aws_secret_access_key="not-the-secret", config=Config(retries={"max_attempts": 1}),
                          **common)
    for client in (anonymous, forged):
        with pytest.raises(ClientError) as exc:
            client.list_objects_v2(Bucket=archive.bucket)
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unreachable_endpoint_is_transient(tmp_path):
    from kiroku.services import free_port

    store = ArchiveStore(f"http://127.0.0.1:{free_port()}", "ap-northeast-1", "kiroku-test",
                         S3Credentials("KIROKUTEST", "nothing-listens-there"), max_attempts=1, connect_timeout=1)
    with pytest.raises(TransientStorageError):
        store.put_verified("x/a.pdf", b"x", content_type="application/pdf", retain_until=_in_days(1))
