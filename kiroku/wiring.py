"""The configured storage and catalog, built once per process from Settings."""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

from kiroku.config import Settings
from processors.archive.catalog import Catalog
from processors.archive.storage import ArchiveStore, BucketProbe, StorageError

log = logging.getLogger("kiroku")

_bucket_checked: dict[tuple[str, str, str], BucketProbe] = {}
_stores: dict[tuple, ArchiveStore] = {}
_catalog_checked: set[str] = set()
_lock = threading.Lock()
_catalog_lock = threading.Lock()


def archive_store(settings: Settings) -> ArchiveStore:
    """The archive bucket, checked once per process: it exists, and it locks or tamper-evident mode was chosen.

    The probe (versioning, Object Lock and its default mode, SHA-256 checks) is
    logged once, in Japanese first, so the operator sees what the archive promises.
    Raises ObjectLockError (a TransientFailure: scans wait in the inbox) for a bucket
    that cannot lock when tamper-evident mode was not stated.
    """
    from kiroku.services import archive_store as build, s3_credentials

    creds = s3_credentials(settings)
    ident = (creds.access_key_id, creds.secret_access_key) if creds else None
    key = (settings.s3_url, settings.bucket, settings.integrity)
    with _lock:
        # one store (and its two boto3 clients) per process: building a client parses botocore's
        # service model, ~0.3 s of CPU under the GIL; per flow task that was a third of the
        # worker's CPU (py-spy, bench/watch_throughput.py). boto3 clients are thread-safe.
        store = _stores.get((key, settings.region, ident))
        if store is None:
            store = build(settings)
            store.client, store.upload_client  # noqa: B018 - created here, under the lock, not raced
            _stores[(key, settings.region, ident)] = store
        if key not in _bucket_checked:
            store.ensure_bucket()
            probe = store.require_storable()
            _bucket_checked[key] = probe
            log.info("%s", probe.describe(store.integrity))
    return store


def bucket_probe(settings: Settings) -> BucketProbe | None:
    """The probe of the configured bucket, without creating it (None if missing or unreachable)."""
    from kiroku.services import s3_credentials

    store = ArchiveStore(settings.s3_url, settings.region, settings.bucket, s3_credentials(settings),
                         max_attempts=1, connect_timeout=2.0, read_timeout=10.0,
                         integrity=settings.integrity)  # type: ignore[arg-type]
    try:
        store.client.head_bucket(Bucket=settings.bucket)
        return store.probe()
    except Exception:  # noqa: BLE001 - missing or unreachable: nothing to probe
        return None
    finally:
        store.close()


@lru_cache(maxsize=8)
def _catalog(url: str) -> Catalog:
    return Catalog(url)


def catalog(settings: Settings) -> Catalog:
    """The catalog; if it is empty while the bucket holds records, it is rebuilt from the bucket first.

    Chosen over refusing: the catalog is only an index of the bucket (docs/archive-path.md
    §1), so rebuilding loses nothing and needs no decision, and an office without IT
    staff would otherwise find search, retention due and the register blank, or the
    watch folder stopped, until someone found `kiroku catalog rebuild`. The rebuild is
    announced in the log (Japanese first). When the bucket cannot be reached the check
    is left for the next call, so it is never skipped for good.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    cat = _catalog(settings.catalog)
    if settings.catalog not in _catalog_checked:
        with _catalog_lock:
            if settings.catalog not in _catalog_checked and _catalog_matches_bucket(settings, cat):
                _catalog_checked.add(settings.catalog)
    return cat


def _catalog_matches_bucket(settings: Settings, cat: Catalog) -> bool:
    """Rebuild an empty catalog from a non-empty bucket; False if the bucket could not be asked."""
    from kiroku.services import s3_credentials
    from processors.archive.archiving import bucket_has_records, rebuild_catalog

    if cat.count() > 0:
        return True
    # Quick to fail: `kiroku search` must not hang for long when storage is down.
    store = ArchiveStore(settings.s3_url, settings.region, settings.bucket, s3_credentials(settings),
                         max_attempts=1, connect_timeout=2.0, integrity=settings.integrity)  # type: ignore[arg-type]
    try:
        if not bucket_has_records(store):
            return True
        log.warning("目録が空ですが、保管庫 s3://%s に記録があります。保管庫から目録を再構築します "
                    "(catalog %s is empty while the bucket has records: rebuilding it from the bucket)",
                    settings.bucket, settings.catalog)
        count = rebuild_catalog(store, cat)
        log.warning("目録を再構築しました: %d 件 (catalog rebuilt from the bucket: %d records)", count, count)
        return True
    except StorageError as exc:
        if exc.code in ("NoSuchBucket", "404"):
            return True  # no bucket yet: nothing archived
        log.warning("保管庫に接続できないため、目録が空かどうかの確認を後にします (%s)", exc)
        return False
    finally:
        store.close()
