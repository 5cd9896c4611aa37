"""An archive environment for end-to-end tests: the session's real SeaweedFS, a fresh bucket,
inbox and catalog per test, and Prefect in ephemeral mode under the test session's folder.

The flows read their settings from the environment (as a served worker does), so the
fixture sets KIROKU_* variables rather than passing objects around.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["kiroku_env", "notice_png"]


@pytest.fixture
def kiroku_env(seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    from kiroku.config import load_settings
    from kiroku.runtime import prepare_prefect

    monkeypatch.setenv("KIROKU_HOME", str(seaweed.settings.home))
    monkeypatch.setenv("KIROKU_INBOX", str(tmp_path / "inbox"))
    monkeypatch.setenv("KIROKU_S3_PORT", str(seaweed.settings.weed_ports["s3.port"]))
    monkeypatch.setenv("KIROKU_PREFECT_PORT", str(seaweed.settings.prefect_port))  # nothing listens: ephemeral
    monkeypatch.setenv("KIROKU_S3_BUCKET", f"e2e-{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("KIROKU_CATALOG_URL", f"sqlite:///{tmp_path / 'catalog.db'}")
    monkeypatch.setenv("KIROKU_CONFIG", str(tmp_path / "no-kiroku.toml"))
    settings = load_settings()
    prepare_prefect(settings)
    (tmp_path / "inbox").mkdir()
    yield settings


def render_notice_file(path: Path, title: str, *, number: str = "新総第１２３４号", skew: float = 0.0) -> Path:
    """A generated municipal notice saved as a 200 dpi PNG (small enough to read quickly)."""
    from tests.pagegen import DEFAULT_LINES, distort, render_notice

    lines = list(DEFAULT_LINES)
    lines[0], lines[4] = number, title
    img = render_notice(lines, dpi=200)
    if skew:
        img = distort(img, skew_deg=skew)
    img.save(path, dpi=(200, 200))
    return path


@pytest.fixture
def notice_png(tmp_path: Path) -> Path:
    return render_notice_file(tmp_path / "通知.png", "庁舎における節電の取組について（通知）", skew=2.0)
