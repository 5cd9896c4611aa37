"""Stage "store": put an archived record into S3 so that nobody can alter or delete it.

Three objects are written per record under records/<record id>/ (the id is the
scan's SHA-256[:16], so the key depends on nothing but the content; archives
written by earlier versions used records/<fiscal year>/<record id>/, which every
listing still reads):
document.pdf (the searchable PDF/A), original.<ext> (the scan exactly as received)
and record.json (the full Record, UTF-8). Each one is

- sent with its SHA-256 (x-amz-checksum-sha256), so the server refuses bytes that
  were damaged on the way;
- locked with Object Lock in COMPLIANCE mode until the end of its 満了日 (or put on
  legal hold for 永年), so not even the account that wrote it can delete or shorten it;
- read back by version id and hashed again before the store counts as done.

SeaweedFS 4.48 (`weed mini`, the embedded S3) was checked to behave like AWS here:
it rejects a wrong x-amz-checksum-sha256 (400 BadDigest), returns the checksum on
GET/HEAD with ChecksumMode=ENABLED, refuses to delete a locked version or one under
legal hold (403 AccessDenied) and refuses to shorten COMPLIANCE retention (403)
while allowing it to be extended. A retain-until date in the past is refused (400).

S3 user metadata must be ASCII and loses surrounding blanks, so values are stored
encoded (see encode_metadata); the authoritative Japanese record is record.json.

Uploads are never retried by botocore: a PUT that timed out may still have been
stored (SeaweedFS paused, then resumed, kept both attempts as two locked versions).
`put_once` asks the bucket whether the earlier attempt landed before it tries again.

A bucket without Object Lock (some domestic S3 services have none) is used only in
the stated tamper-evident mode (`integrity="tamper-evident"`): versioning on, every
object's SHA-256 in record.json, and `kiroku verify` run on a schedule.

No Prefect here: the flow wraps these calls in a task and retries on
TransientStorageError.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from processors.archive.failures import KirokuFailure, TransientFailure

log = logging.getLogger(__name__)

COMPLIANCE = "COMPLIANCE"
OBJECT_LOCK = "object-lock"
TAMPER_EVIDENT = "tamper-evident"
Integrity = Literal["object-lock", "tamper-evident"]
PROBE_PREFIX = "kiroku-probe/"  # outside records/, so verify never counts it
JST = dt.timezone(dt.timedelta(hours=9), "JST")  # Japan has no daylight saving time
SHA256_META = "sha256"  # hex digest also kept in user metadata, independent of S3 checksum support
METADATA_LIMIT = 2048  # bytes of user metadata (keys + values) S3 accepts
_CHUNK = 1 << 20

_META_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENCODED_WORD = re.compile(r"^=\?utf-8\?b\?([A-Za-z0-9+/=]*)\?=$", re.IGNORECASE)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_EXT = re.compile(r"^[a-z0-9]{1,10}$")
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestTimeout", "ServiceUnavailable", "InternalError", "RequestLimitExceeded",
}


# --------------------------------------------------------------------------- errors
class StorageError(Exception):
    """Storing or reading an archived object failed; `code` is the S3 error code if any."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class TransientStorageError(StorageError, TransientFailure):
    """Worth retrying later: connection refused/reset, timeouts, 5xx, throttling.

    A TransientFailure, so the intake keeps the scan in the inbox instead of
    quarantining it; the records officer reads the Japanese half of the message.
    """

    JAPANESE = "保存先ストレージに一時的に接続できません。復旧後に自動で再試行します"

    def __init__(self, message: str, code: str | None = None):
        KirokuFailure.__init__(self, self.JAPANESE, message)
        self.code = code


class IntegrityError(StorageError):
    """The bytes read back do not match the SHA-256 they were stored with."""


class ObjectLockError(StorageError, TransientFailure):
    """The bucket cannot hold locked objects (Object Lock or versioning not enabled).

    A configuration problem, not the scan's: scans wait in the inbox (TransientFailure)
    until the operator points kiroku at a bucket that locks, or states tamper-evident mode.
    """

    JAPANESE = ("保存先バケットがオブジェクトロックに対応していないため保存できません。"
                "設定を確認してください(kiroku.toml の [storage])")

    def __init__(self, message: str, code: str | None = None):
        KirokuFailure.__init__(self, self.JAPANESE, message)
        self.code = code


class RetentionError(StorageError):
    """The server refused a retention change (COMPLIANCE can be extended, never shortened)."""


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class S3Credentials:
    """An access key pair for boto3; the secret never appears in repr or logs."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"

    def boto3_kwargs(self) -> dict[str, str]:
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}


@dataclass(frozen=True)
class StoredObject:
    """One verified object version: what record.archive needs."""

    key: str
    version_id: str
    sha256: str  # hex
    size: int
    reused: bool = False  # True: an identical, equally locked version was already there


@dataclass(frozen=True)
class ObjectRetention:
    mode: str | None  # "COMPLIANCE", "GOVERNANCE" or None (no retention)
    retain_until: dt.datetime | None
    legal_hold: bool

    @property
    def retained_through(self) -> dt.date | None:
        """The last Japanese calendar day the object is protected (its 満了日)."""
        return retained_through(self.retain_until) if self.retain_until else None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    version_id: str | None
    size: int
    sha256: str | None  # hex, from the server's checksum (or our metadata copy)
    content_type: str | None
    metadata: dict[str, str]  # decoded
    lock_mode: str | None
    retain_until: dt.datetime | None
    legal_hold: bool
    last_modified: dt.datetime | None


@dataclass(frozen=True)
class ObjectVersion:
    """One entry of ListObjectVersions (a delete marker has no size or checksum)."""

    key: str
    version_id: str
    last_modified: dt.datetime
    size: int = 0
    is_latest: bool = False
    delete_marker: bool = False


@dataclass(frozen=True)
class BucketProbe:
    """What the bucket can promise, found at start-up (`ArchiveStore.probe`)."""

    bucket: str
    versioning: str | None  # "Enabled", "Suspended" or None (never enabled)
    object_lock: bool
    default_lock_mode: str | None  # the bucket's default retention mode, if it has one
    sha256_checksums: bool  # the server refuses an upload whose x-amz-checksum-sha256 is wrong

    @property
    def locks(self) -> bool:
        return self.object_lock and self.versioning == "Enabled"

    def describe(self, integrity: str) -> str:
        """One line for `kiroku services status`: Japanese first, English after."""
        checks = "SHA-256 照合あり" if self.sha256_checksums else "SHA-256 照合なし(サーバーが検査しない)"
        if integrity == TAMPER_EVIDENT:
            return (f"保管方式: 改ざん検知モード(オブジェクトロックなし。バージョン管理 {self.versioning or '無効'}、"
                    f"{checks}、`kiroku verify` を定期実行して保全を確認) "
                    f"(bucket {self.bucket}: tamper-evident, no Object Lock, versioning {self.versioning})")
        if self.locks:
            return (f"保管方式: オブジェクトロック(COMPLIANCE、保存期間中は削除・上書き不可)、{checks} "
                    f"(bucket {self.bucket}: Object Lock enabled, default mode {self.default_lock_mode or 'none'})")
        return (f"保管方式: ロックできないバケットです。保存を拒否します "
                f"(bucket {self.bucket}: no Object Lock; set [storage] integrity = \"tamper-evident\" to use it)")


@dataclass(frozen=True)
class RecordKeys:
    prefix: str
    document: str
    original: str
    record: str


# --------------------------------------------------------------------------- pure helpers
_RECORD_JSON = re.compile(r"^records/(?:(?:\d{4}|unknown)/)?([A-Za-z0-9][A-Za-z0-9._-]*)/record\.json$")


def keys_for(record_id: str, original_ext: str) -> RecordKeys:
    """Object keys of one record: records/<record id>/{original.<ext>,document.pdf,record.json}.

    The key depends on the content alone (record id = SHA-256[:16] of the scan), so a
    second pass, another machine or a rebuilt catalog all find the same place. The
    fiscal year is not in the key: it is read from the text and could change with a
    correction, and a second pass must not land elsewhere because of it.
    """
    if not _ID.match(record_id) or ".." in record_id:
        raise ValueError(f"record id must be ASCII letters, digits, '.', '_' or '-': {record_id!r}")
    ext = original_ext.lower().lstrip(".")
    if not _EXT.match(ext):
        raise ValueError(f"unusable original file extension: {original_ext!r}")
    prefix = f"records/{record_id}/"
    return RecordKeys(prefix, prefix + "document.pdf", prefix + f"original.{ext}", prefix + "record.json")


def record_id_of_key(key: str) -> str | None:
    """The record id if `key` is a record.json, in this layout or the older records/<fy>/<id>/ one."""
    m = _RECORD_JSON.match(key)
    return m.group(1) if m else None


def end_of_day(day: dt.date) -> dt.datetime:
    """The instant a Japanese calendar day ends: next day 00:00 JST (aware).

    Retention runs *through* the 満了日, so the lock must last until that day has
    ended in Japan, whatever the server's time zone.
    """
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=JST)


def retained_through(retain_until: dt.datetime) -> dt.date:
    """Inverse of end_of_day: the last Japanese day covered by a retain-until instant."""
    if retain_until.tzinfo is None:
        retain_until = retain_until.replace(tzinfo=dt.timezone.utc)
    return (retain_until.astimezone(JST) - dt.timedelta(microseconds=1)).date()


def _needs_encoding(value: str) -> bool:
    # Non-ASCII, control characters, blanks that HTTP would strip, empty values that
    # the server drops, and anything that already looks encoded.
    return (not value.isascii() or not value.isprintable() or value != value.strip()
            or value == "" or value.startswith("=?"))


def encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Make metadata safe for S3 headers.

    Scheme (RFC 2047 "encoded-word", as AWS documents for non-ASCII metadata): a
    value that is not plain printable ASCII without surrounding blanks is stored as
    ``=?UTF-8?B?<base64 of its UTF-8 bytes>?=``; other values are stored as they are.
    Keys must be lower-case ASCII letters, digits and '-' (S3 lower-cases keys, and
    proxies drop headers with '_'). Raises ValueError beyond S3's 2 KB limit.
    """
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not _META_KEY.match(key):
            raise ValueError(f"metadata key must match [a-z0-9][a-z0-9-]*: {key!r}")
        value = str(value)
        if _needs_encoding(value):
            value = "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="
        out[key] = value
    size = sum(len(k) + len(v) for k, v in out.items())
    if size > METADATA_LIMIT:
        raise ValueError(f"metadata is {size} bytes encoded; S3 allows {METADATA_LIMIT} "
                         f"(keep the full record in record.json)")
    return out


def decode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Inverse of encode_metadata; values not in the encoded form are returned unchanged."""
    out = {}
    for key, value in metadata.items():
        m = _ENCODED_WORD.match(value)
        if m:
            try:
                value = base64.b64decode(m.group(1), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                pass  # not ours after all: keep it as stored
        out[key.lower()] = value
    return out


def _check_key(key: str) -> None:
    """Object keys are ASCII only: portable across S3 implementations, URLs and shells."""
    if not key or not key.isascii() or not key.isprintable() or key.startswith("/") or "//" in key \
            or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"object keys must be printable ASCII paths without '.', '..' or empty parts: {key!r}")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _hex_from_b64(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except ValueError:
        return None


def _sha256_of(data: bytes | Path) -> tuple[bytes, int]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return hashlib.sha256(data).digest(), len(data)
    h = hashlib.sha256()
    size = 0
    with Path(data).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.digest(), size


# --------------------------------------------------------------------------- the store
class ArchiveStore:
    """One bucket of locked, checksummed objects on an S3 endpoint (SeaweedFS or AWS).

    credentials=None uses boto3's standard chain (AWS_* variables, profiles, roles),
    which is how an external S3 is configured; the embedded SeaweedFS passes its
    generated key pair (kiroku.services.s3_credentials).
    """

    def __init__(self, endpoint_url: str | None, region: str, bucket: str,
                 credentials: S3Credentials | None = None, *, max_attempts: int = 3,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 upload_read_timeout: float = 300.0, integrity: Integrity = OBJECT_LOCK):
        if integrity not in (OBJECT_LOCK, TAMPER_EVIDENT):
            raise ValueError(f"storage integrity must be {OBJECT_LOCK!r} or {TAMPER_EVIDENT!r}: {integrity!r}")
        self.endpoint_url = endpoint_url
        self.region = region
        self.bucket = bucket
        self.integrity: Integrity = integrity
        self._credentials = credentials
        self._max_attempts = max_attempts
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._upload_read_timeout = upload_read_timeout
        self._client: Any = None
        self._upload_client: Any = None

    @property
    def locking(self) -> bool:
        """Whether objects are stored under Object Lock (False only in tamper-evident mode)."""
        return self.integrity == OBJECT_LOCK

    def __repr__(self) -> str:
        return f"ArchiveStore({self.endpoint_url!r}, {self.region!r}, {self.bucket!r})"

    def _make_client(self, *, total_attempts: int, read_timeout: float) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            connect_timeout=self._connect_timeout,
            read_timeout=read_timeout,
            # total_max_attempts counts the first request; botocore's `max_attempts` does not
            # (max_attempts=1 still re-sends once: measured, two versions from one PUT).
            retries={"total_max_attempts": total_attempts, "mode": "standard"},
            # SeaweedFS and most on-premises S3 need path-style URLs.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            # boto3 >= 1.36 adds CRC checksums to every request and insists on them in
            # responses unless told otherwise, which many S3-compatible services reject.
            # kiroku sends its own SHA-256 explicitly and asks for it back (ChecksumMode).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs = self._credentials.boto3_kwargs() if self._credentials else {}
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, config=config, **kwargs)

    @property
    def client(self) -> Any:
        """The boto3 S3 client for reads and small calls (created on first use; thread-safe).

        Modest retries: the Prefect task retries on TransientStorageError with backoff.
        """
        if self._client is None:
            self._client = self._make_client(total_attempts=self._max_attempts, read_timeout=self._read_timeout)
        return self._client

    @property
    def upload_client(self) -> Any:
        """The client for PUTs: botocore's own retries off, a generous read timeout.

        botocore re-sends a PUT after a read timeout; when the server was only paused
        it then stores both. kiroku's own retry (`put_once`) first asks the bucket.
        """
        if self._upload_client is None:
            self._upload_client = self._make_client(total_attempts=1, read_timeout=self._upload_read_timeout)
        return self._upload_client

    def close(self) -> None:
        for client in (self._client, self._upload_client):
            if client is not None:
                client.close()
        self._client = self._upload_client = None

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn boto errors into StorageError / TransientStorageError with a clear message."""
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                         FlexibleChecksumError, HTTPClientError, IncompleteReadError)

        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        try:
            yield
        except ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            msg = f"{action} {where} failed: {code or status} {err.get('Message', '')}".rstrip()
            if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
                raise TransientStorageError(msg, code) from e
            raise StorageError(msg, code) from e
        except FlexibleChecksumError as e:
            raise IntegrityError(f"{action} {where}: checksum mismatch reported by the client: {e}") from e
        except (BotoConnectionError, HTTPClientError, IncompleteReadError) as e:
            raise TransientStorageError(f"{action} {where}: {type(e).__name__}: {e}") from e
        except BotoCoreError as e:
            raise StorageError(f"{action} {where}: {type(e).__name__}: {e}") from e

    # ----------------------------------------------------------------- bucket
    def ensure_bucket(self) -> None:
        """Create the bucket with Object Lock (which turns versioning on) if missing.

        An existing bucket without Object Lock is refused: objects in it could be
        deleted, and Object Lock cannot be switched on for a bucket afterwards on
        most servers. In tamper-evident mode the bucket is created (or kept) without
        Object Lock and versioning is switched on. Safe to call repeatedly and concurrently.
        """
        from botocore.exceptions import ClientError

        exists = True
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                exists = False
            else:
                with self._errors("HeadBucket"):
                    raise
        except Exception:
            with self._errors("HeadBucket"):
                raise
        if not exists:
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.locking:
                kwargs["ObjectLockEnabledForBucket"] = True
            if self.region and self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                    with self._errors("CreateBucket"):
                        raise
            except Exception:
                with self._errors("CreateBucket"):
                    raise
        if self.locking:
            self.check_object_lock()
        else:
            self._ensure_versioning()

    def _ensure_versioning(self) -> None:
        """Tamper-evident mode: versioning must be on, so an overwrite keeps the old bytes."""
        with self._errors("GetBucketVersioning"):
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        if status == "Enabled":
            return
        with self._errors("PutBucketVersioning"):
            self.client.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        with self._errors("GetBucketVersioning"):
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        if status != "Enabled":
            raise ObjectLockError(f"bucket {self.bucket!r}: versioning could not be enabled ({status!r}); "
                                  f"tamper-evident mode needs it")

    def probe(self) -> BucketProbe:
        """What the bucket promises: versioning, Object Lock (and its default mode), SHA-256 checks.

        The checksum test sends a tiny upload under kiroku-probe/ with a deliberately
        wrong x-amz-checksum-sha256: a server that honours checksums refuses it and
        stores nothing; one that accepts it is reported (and the probe version removed
        when the bucket allows).
        """
        from botocore.exceptions import ClientError

        with self._errors("GetBucketVersioning"):
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        object_lock, default_mode = False, None
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
            object_lock = conf.get("ObjectLockEnabled") == "Enabled"
            default_mode = conf.get("Rule", {}).get("DefaultRetention", {}).get("Mode")
        except ClientError as e:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status >= 500 or status == 429:
                with self._errors("GetObjectLockConfiguration"):
                    raise
            # ObjectLockConfigurationNotFoundError, NotImplemented...: no Object Lock
        except Exception:
            with self._errors("GetObjectLockConfiguration"):
                raise
        body = b"kiroku checksum probe"
        wrong = _b64(hashlib.sha256(b"not the body").digest())
        honoured = False
        try:
            r = self.upload_client.put_object(Bucket=self.bucket, Key=PROBE_PREFIX + "checksum", Body=body,
                                              ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong)
            with contextlib.suppress(Exception):  # a default retention may forbid it: then it stays
                self.client.delete_object(Bucket=self.bucket, Key=PROBE_PREFIX + "checksum",
                                          VersionId=r.get("VersionId") or "null")
        except ClientError as e:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status >= 500 or status == 429:
                with self._errors("PutObject (checksum probe)"):
                    raise
            honoured = status == 400
        except Exception:
            with self._errors("PutObject (checksum probe)"):
                raise
        return BucketProbe(self.bucket, versioning, object_lock, default_mode, honoured)

    def require_storable(self, probe: BucketProbe | None = None) -> BucketProbe:
        """Refuse to store unless the bucket locks, or tamper-evident mode was chosen and versioning is on."""
        probe = probe or self.probe()
        if self.locking and not probe.locks:
            raise ObjectLockError(
                f"bucket {self.bucket!r} has no Object Lock (versioning {probe.versioning!r}); kiroku stores "
                f"nothing it cannot lock. Use a bucket with Object Lock, or state [storage] integrity = "
                f'"tamper-evident" (KIROKU_STORAGE_INTEGRITY) and schedule `kiroku verify`')
        if not self.locking and probe.versioning != "Enabled":
            raise ObjectLockError(f"bucket {self.bucket!r}: tamper-evident mode needs versioning, which is "
                                  f"{probe.versioning!r}")
        return probe

    def check_object_lock(self) -> None:
        """Raise ObjectLockError unless the bucket has Object Lock and versioning enabled."""
        from botocore.exceptions import ClientError

        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
                raise ObjectLockError(
                    f"bucket {self.bucket!r} exists without Object Lock, so archived objects in it could be "
                    f"deleted; kiroku refuses to use it. Configure another bucket name (storage.bucket) and "
                    f"kiroku will create it with Object Lock.", code) from e
            with self._errors("GetObjectLockConfiguration"):
                raise
        except Exception:
            with self._errors("GetObjectLockConfiguration"):
                raise
        if conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise ObjectLockError(f"bucket {self.bucket!r} does not have Object Lock enabled")
        with self._errors("GetBucketVersioning"):
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        if versioning != "Enabled":
            raise ObjectLockError(f"bucket {self.bucket!r} has Object Lock but versioning is {versioning!r}")

    # ----------------------------------------------------------------- write
    def put_verified(self, key: str, data: bytes | Path, *, content_type: str,
                     metadata: Mapping[str, str] | None = None, retain_until: dt.date | None = None,
                     legal_hold: bool = False, reuse_existing: bool = True) -> StoredObject:
        """Store `data` locked and checksummed, read it back, and return the verified version.

        retain_until is the 満了日: the object is locked in COMPLIANCE mode until that day
        has ended in Japan (end_of_day). legal_hold=True (永年, or a litigation hold) locks
        it with no end date. At least one of them is required: kiroku stores nothing
        unlocked. A 満了日 already past is refused (ValueError): such a record is due
        for 移管/廃棄, which is a decision for a person, not for the store.

        If the latest version under `key` already has the same SHA-256 and at least the
        requested protection, it is verified and returned (reused=True) instead of
        writing a duplicate locked version: this makes retries after a failure during
        read-back idempotent.

        Raises IntegrityError if the bytes read back differ (the bad version stays, locked,
        and its id is in the message), TransientStorageError for retryable faults.
        """
        until, digest, size = self._prepare_put(key, data, retain_until, legal_hold)
        sha_hex = digest.hex()
        if reuse_existing:
            existing = self._reusable(key, sha_hex, until, legal_hold)
            if existing is not None:
                self._verify_version(key, existing, sha_hex, size)
                return StoredObject(key, existing, sha_hex, size, reused=True)
        version_id = self._put_new(key, data, digest, content_type=content_type, metadata=metadata,
                                   until=until, legal_hold=legal_hold)
        self._verify_version(key, version_id, sha_hex, size)
        return StoredObject(key, version_id, sha_hex, size)

    def put_once(self, key: str, data: bytes | Path, *, content_type: str,
                 metadata: Mapping[str, str] | None = None, retain_until: dt.date | None = None,
                 legal_hold: bool = False, expected_sha256: str | None = None) -> StoredObject:
        """Store `data` under `key` unless a version is already there: never two versions of one key.

        If the key has a version (an earlier, unfinished pass; a crash after the PUT
        landed), that version is reused: read back and its SHA-256 checked, and its lock
        lengthened if it is shorter than asked (extending is always allowed). With
        `expected_sha256` (the original scan) only a version with those bytes can be
        reused; otherwise (document.pdf, which embeds its creation time) any earlier
        version of the key is this record's PDF/A. If two versions exist anyway
        (another machine raced us) the oldest is taken, the same choice on every
        machine, and the log says so.
        """
        until, digest, size = self._prepare_put(key, data, retain_until, legal_hold)
        sha_hex = digest.hex()
        chosen = self._oldest_usable(key, expected_sha256)
        if chosen is not None:
            info, _ = chosen
            self._verify_version(key, info.version_id, info.sha256 or "", info.size)  # type: ignore[arg-type]
            self._protect(info, until, legal_hold)
            return StoredObject(key, info.version_id, info.sha256, info.size, reused=True)  # type: ignore[arg-type]
        version_id = self._put_new(key, data, digest, content_type=content_type, metadata=metadata,
                                   until=until, legal_hold=legal_hold)
        # Another machine may have stored the same key at the same moment: converge on the oldest.
        chosen = self._oldest_usable(key, expected_sha256)
        if chosen is not None and chosen[0].version_id != version_id:
            info = chosen[0]
            log.warning("s3://%s/%s: another pass stored this key at the same time; using the oldest version "
                        "%s, not ours (%s), which stays in the bucket unreferenced", self.bucket, key,
                        info.version_id, version_id)
            self._verify_version(key, info.version_id, info.sha256 or "", info.size)  # type: ignore[arg-type]
            self._protect(info, until, legal_hold)
            return StoredObject(key, info.version_id, info.sha256, info.size, reused=True)  # type: ignore[arg-type]
        self._verify_version(key, version_id, sha_hex, size)
        return StoredObject(key, version_id, sha_hex, size)

    def _prepare_put(self, key: str, data: bytes | Path, retain_until: dt.date | None,
                     legal_hold: bool) -> tuple[dt.datetime | None, bytes, int]:
        _check_key(key)
        if retain_until is None and not legal_hold:
            raise ValueError(f"{key}: give retain_until (満了日) or legal_hold=True; kiroku stores nothing unlocked")
        until = end_of_day(retain_until) if retain_until is not None else None
        if self.locking and until is not None and until <= dt.datetime.now(dt.timezone.utc):
            raise ValueError(f"{key}: 満了日 {retain_until} has already passed; the record is due for "
                             f"disposition and cannot be locked until then (use legal_hold=True to keep it)")
        digest, size = _sha256_of(data)
        return until, digest, size

    def _put_new(self, key: str, data: bytes | Path, digest: bytes, *, content_type: str,
                 metadata: Mapping[str, str] | None, until: dt.datetime | None, legal_hold: bool,
                 attempts: int = 3, pause: float = 1.0) -> str:
        """PUT one new version, retrying only after asking the bucket whether the last attempt landed.

        botocore does not retry (upload_client); a timeout or reset may still have been
        stored by the server, so before each new attempt the key's versions are listed
        and one holding our SHA-256 is taken as the result.
        """
        sha_hex = digest.hex()
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket, "Key": key, "ContentType": content_type,
            "Metadata": encode_metadata({**(metadata or {}), SHA256_META: sha_hex}),
            "ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(digest),
        }
        if self.locking:
            if until is not None:
                kwargs.update(ObjectLockMode=COMPLIANCE, ObjectLockRetainUntilDate=until)
            if legal_hold:
                kwargs["ObjectLockLegalHoldStatus"] = "ON"
        response: dict[str, Any] | None = None
        for attempt in range(1, attempts + 1):
            try:
                with self._errors("PutObject", key):
                    if isinstance(data, Path):
                        with data.open("rb") as body:
                            response = self.upload_client.put_object(Body=body, **kwargs)
                    else:
                        response = self.upload_client.put_object(Body=bytes(data), **kwargs)
                break
            except TransientStorageError as e:
                log.warning("PUT s3://%s/%s attempt %d of %d failed (%s); checking whether it landed",
                            self.bucket, key, attempt, attempts, e.detail)
                time.sleep(pause * attempt)
                try:
                    landed = self._landed(key, sha_hex)
                except TransientStorageError:
                    if attempt == attempts:
                        raise
                    continue
                if landed is not None:
                    log.warning("PUT s3://%s/%s had landed after all (version %s); not sending it again",
                                self.bucket, key, landed)
                    return landed
                if attempt == attempts:
                    raise
        assert response is not None
        version_id = response.get("VersionId")
        if not version_id or version_id == "null":
            raise ObjectLockError(f"s3://{self.bucket}/{key}: the server returned no version id; "
                                  f"the bucket is not versioned, so the object is not protected")
        returned = response.get("ChecksumSHA256")
        if returned and returned != _b64(digest):
            raise IntegrityError(f"s3://{self.bucket}/{key} version {version_id}: server computed SHA-256 "
                                 f"{_hex_from_b64(returned)}, expected {sha_hex}")
        return version_id

    def _landed(self, key: str, sha_hex: str) -> str | None:
        """The id of a version of `key` holding these bytes (oldest first), if any."""
        for version in self.versions_of(key):
            if self.head(key, version.version_id).sha256 == sha_hex:
                return version.version_id
        return None

    def _oldest_usable(self, key: str, expected_sha256: str | None) -> tuple[ObjectInfo, int] | None:
        """(oldest version to reuse, how many versions the key has), or None if it has none.

        Raises IntegrityError if versions exist but none holds `expected_sha256`.
        """
        versions = self.versions_of(key)
        if not versions:
            return None
        infos = [self.head(key, v.version_id) for v in versions]
        usable = [i for i in infos if expected_sha256 is None or i.sha256 == expected_sha256]
        if not usable:
            raise IntegrityError(f"s3://{self.bucket}/{key}: {len(infos)} version(s) exist, none with SHA-256 "
                                 f"{expected_sha256}; not storing a second version over them")
        if len(infos) > 1:
            log.warning("s3://%s/%s has %d versions; using the oldest %s (deterministic choice)",
                        self.bucket, key, len(infos), usable[0].version_id)
        return usable[0], len(infos)

    def _protect(self, info: ObjectInfo, until: dt.datetime | None, legal_hold: bool) -> None:
        """Give a reused version at least the protection asked for (locks can only be lengthened)."""
        if not self.locking or info.version_id is None:
            return
        if legal_hold and not info.legal_hold:
            self.set_legal_hold(info.key, info.version_id, True)
        if until is not None and (info.lock_mode != COMPLIANCE or info.retain_until is None
                                  or info.retain_until < until):
            self.extend_retention(info.key, info.version_id, retained_through(until))

    # ----------------------------------------------------------------- listing
    def list_versions(self, prefix: str) -> list[ObjectVersion]:
        """Every version and delete marker under `prefix`, oldest first per key (paginated).

        The order within a key is the server's (S3 lists a key's versions newest first),
        not the version ids' (SeaweedFS ids sort newest first, AWS ids are random) and
        not LastModified alone (whole seconds: two PUTs in one second tie).
        """
        entries: list[tuple[tuple, ObjectVersion]] = []
        position = 0
        with self._errors("ListObjectVersions", prefix):
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for v, marker in [(v, False) for v in page.get("Versions", [])] + \
                                 [(m, True) for m in page.get("DeleteMarkers", [])]:
                    position += 1
                    ov = ObjectVersion(v["Key"], v.get("VersionId") or "null", v["LastModified"],
                                       0 if marker else int(v.get("Size", 0)), bool(v.get("IsLatest")),
                                       delete_marker=marker)
                    entries.append(((ov.key, ov.last_modified, ov.is_latest, -position), ov))
        entries.sort(key=lambda e: e[0])
        return [ov for _, ov in entries]

    def versions_of(self, key: str) -> list[ObjectVersion]:
        """The stored versions (not delete markers) of exactly `key`, oldest first."""
        _check_key(key)
        return [v for v in self.list_versions(key) if v.key == key and not v.delete_marker]

    def hash_version(self, key: str, version_id: str) -> tuple[str, int]:
        """(SHA-256 hex, size) of one version's bytes as the server returns them now."""
        with self._errors("GetObject", key):
            response = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            return self._hash_stream(response["Body"])

    def _reusable(self, key: str, sha_hex: str, until: dt.datetime | None, legal_hold: bool) -> str | None:
        """Version id of the latest version if it holds the same bytes with enough protection."""
        try:
            info = self.head(key)
        except StorageError as e:
            if e.code in ("404", "NoSuchKey", "NotFound", "405", "MethodNotAllowed"):
                return None
            raise
        if info.sha256 != sha_hex or info.version_id is None:
            return None
        if not self.locking:
            return info.version_id
        if legal_hold and not info.legal_hold:
            return None
        if until is not None:
            if info.lock_mode != COMPLIANCE or info.retain_until is None or info.retain_until < until:
                return None
        return info.version_id

    def _verify_version(self, key: str, version_id: str, sha_hex: str, size: int) -> None:
        """Read the version back and compare its SHA-256 (and the server's) with ours."""
        with self._errors("GetObject (read-back)", key):
            response = self.client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id,
                                              ChecksumMode="ENABLED")
            got_hex, got_size = self._hash_stream(response["Body"])
        server_hex = _hex_from_b64(response.get("ChecksumSHA256"))
        where = f"s3://{self.bucket}/{key} version {version_id}"
        if got_hex != sha_hex or got_size != size:
            raise IntegrityError(f"{where}: read back {got_size} bytes with SHA-256 {got_hex}, "
                                 f"stored {size} bytes with SHA-256 {sha_hex}")
        if server_hex is not None and server_hex != sha_hex:
            raise IntegrityError(f"{where}: server reports SHA-256 {server_hex}, expected {sha_hex}")

    @staticmethod
    def _hash_stream(body: BinaryIO) -> tuple[str, int]:
        h = hashlib.sha256()
        size = 0
        try:
            while chunk := body.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        finally:
            body.close()
        return h.hexdigest(), size

    # ----------------------------------------------------------------- read
    def get_verified(self, key: str, version_id: str | None = None, *,
                     expected_sha256: str | None = None) -> bytes:
        """The object's bytes, after checking them against the SHA-256 they were stored with.

        The reference is the server's x-amz-checksum-sha256, else the sha256 kept in
        user metadata; `expected_sha256` (e.g. from the catalog) is checked as well.
        Raises IntegrityError on any mismatch or if there is nothing to check against.
        """
        _check_key(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            kwargs["VersionId"] = version_id
        with self._errors("GetObject", key):
            response = self.client.get_object(**kwargs)
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        actual = hashlib.sha256(data).hexdigest()
        references = {
            "server checksum": _hex_from_b64(response.get("ChecksumSHA256")),
            "stored metadata": decode_metadata(response.get("Metadata", {})).get(SHA256_META),
            "expected": expected_sha256.lower() if expected_sha256 else None,
        }
        where = f"s3://{self.bucket}/{key} version {response.get('VersionId', version_id)}"
        if not any(references.values()):
            raise IntegrityError(f"{where}: no SHA-256 to verify against")
        for name, ref in references.items():
            if ref is not None and ref != actual:
                raise IntegrityError(f"{where}: content SHA-256 {actual} does not match the {name} {ref}")
        return data

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo:
        """Size, checksum, decoded metadata and lock state of the (latest or given) version."""
        _check_key(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            kwargs["VersionId"] = version_id
        with self._errors("HeadObject", key):
            r = self.client.head_object(**kwargs)
        meta = decode_metadata(r.get("Metadata", {}))
        return ObjectInfo(
            key=key, version_id=r.get("VersionId"), size=int(r.get("ContentLength", 0)),
            sha256=_hex_from_b64(r.get("ChecksumSHA256")) or meta.get(SHA256_META),
            content_type=r.get("ContentType"), metadata=meta,
            lock_mode=r.get("ObjectLockMode"), retain_until=r.get("ObjectLockRetainUntilDate"),
            legal_hold=r.get("ObjectLockLegalHoldStatus") == "ON", last_modified=r.get("LastModified"))

    # ----------------------------------------------------------------- locks
    def retention_of(self, key: str, version_id: str) -> ObjectRetention:
        """The version's retention and legal hold, from the dedicated Object Lock APIs."""
        from botocore.exceptions import ClientError

        _check_key(key)
        mode = until = None
        try:
            r = self.client.get_object_retention(Bucket=self.bucket, Key=key, VersionId=version_id)
            mode, until = r["Retention"].get("Mode"), r["Retention"].get("RetainUntilDate")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchObjectLockConfiguration",
                                                               "ObjectLockConfigurationNotFoundError"):
                with self._errors("GetObjectRetention", key):
                    raise
        except Exception:
            with self._errors("GetObjectRetention", key):
                raise
        hold = False
        try:
            r = self.client.get_object_legal_hold(Bucket=self.bucket, Key=key, VersionId=version_id)
            hold = r["LegalHold"].get("Status") == "ON"
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchObjectLegalHold",
                                                               "ObjectLockConfigurationNotFoundError"):
                with self._errors("GetObjectLegalHold", key):
                    raise
        except Exception:
            with self._errors("GetObjectLegalHold", key):
                raise
        return ObjectRetention(mode, until, hold)

    def extend_retention(self, key: str, version_id: str, new_date: dt.date) -> ObjectRetention:
        """Move the version's 満了日 to `new_date` (COMPLIANCE; the server refuses shortening).

        kiroku does not pre-check: the server is the authority, and its refusal is
        turned into a RetentionError that says what the current date is.
        """
        _check_key(key)
        until = end_of_day(new_date)
        try:
            with self._errors("PutObjectRetention", key):
                self.client.put_object_retention(
                    Bucket=self.bucket, Key=key, VersionId=version_id,
                    Retention={"Mode": COMPLIANCE, "RetainUntilDate": until})
        except TransientStorageError:
            raise
        except StorageError as e:
            current = None
            with contextlib.suppress(StorageError):
                current = self.retention_of(key, version_id).retained_through
            raise RetentionError(
                f"the server refused to set the 満了日 of s3://{self.bucket}/{key} version {version_id} "
                f"to {new_date} (currently {current}): COMPLIANCE retention can be extended but never "
                f"shortened or removed [{e.code}]", e.code) from e
        return self.retention_of(key, version_id)

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        """Put a legal hold on the version (or lift it); while ON nothing can delete it."""
        _check_key(key)
        with self._errors("PutObjectLegalHold", key):
            self.client.put_object_legal_hold(Bucket=self.bucket, Key=key, VersionId=version_id,
                                              LegalHold={"Status": "ON" if on else "OFF"})
