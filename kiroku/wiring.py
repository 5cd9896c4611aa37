"""The configured storage and catalog, built once per process from Settings."""

from __future__ import annotations

import threading
from functools import lru_cache

from kiroku.config import Settings
from processors.archive.catalog import Catalog
from processors.archive.storage import ArchiveStore

_bucket_checked: set[tuple[str, str]] = set()
_lock = threading.Lock()


def archive_store(settings: Settings) -> ArchiveStore:
    """The archive bucket, checked once per process to exist with Object Lock enabled."""
    from kiroku.services import archive_store as build

    store = build(settings)
    with _lock:
        if (settings.s3_url, settings.bucket) not in _bucket_checked:
            store.ensure_bucket()
            _bucket_checked.add((settings.s3_url, settings.bucket))
    return store


@lru_cache(maxsize=8)
def _catalog(url: str) -> Catalog:
    return Catalog(url)


def catalog(settings: Settings) -> Catalog:
    settings.home.mkdir(parents=True, exist_ok=True)
    return _catalog(settings.catalog)
