"""Fixtures that run the real services: one `weed mini` for the whole test session.

tests/conftest.py imports everything listed in __all__. SeaweedFS starts on free
ports under a temporary folder (so tests run beside a live `make run`), once per
session because every start costs a couple of seconds, and is stopped at the end.
Tests share its bucket, so each one writes under its own key prefix (`key_prefix`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = ["Seaweed", "seaweed", "seaweed_bucket", "archive", "key_prefix"]

TEST_BUCKET = "kiroku-test"


@dataclass
class Seaweed:
    """A running `weed mini`: its settings, S3 credentials and how long it took to answer."""

    settings: Any  # kiroku.config.Settings
    credentials: Any  # processors.archive.storage.S3Credentials
    startup_seconds: float

    @property
    def pid(self) -> int:
        from kiroku import services

        pid = services.service_pid(self.settings, services.WEED)
        assert pid is not None, "weed mini is not running"
        return pid

    def store(self, bucket: str = TEST_BUCKET, **kwargs: Any):  # -> ArchiveStore
        from processors.archive.storage import ArchiveStore

        return ArchiveStore(self.settings.s3_url, self.settings.region, bucket, self.credentials, **kwargs)

    def client(self) -> Any:
        """A raw boto3 client with the same credentials, for doing what ArchiveStore must not."""
        return self.store().client


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    from kiroku import services

    settings = services.test_settings(tmp_path_factory.mktemp("seaweed"))
    t0 = time.monotonic()
    services.up(settings, prefect=False)
    started = time.monotonic() - t0
    try:
        yield Seaweed(settings, services.s3_credentials(settings), started)
    finally:
        services.down(settings, prefect=False)


@pytest.fixture(scope="session")
def seaweed_bucket(seaweed: Seaweed) -> str:
    seaweed.store(TEST_BUCKET).ensure_bucket()
    return TEST_BUCKET


@pytest.fixture
def archive(seaweed: Seaweed, seaweed_bucket: str):  # -> ArchiveStore
    """An ArchiveStore on the session's Object Lock bucket."""
    store = seaweed.store(seaweed_bucket)
    yield store
    store.close()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses (locked objects can never be cleaned up)."""
    return f"t/{uuid.uuid4().hex[:12]}/"
