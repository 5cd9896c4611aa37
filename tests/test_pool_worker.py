"""`kiroku worker --pool`: the warm pool worker of a scale-out, against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KIROKU = str(Path(sys.executable).with_name("kiroku"))


@pytest.mark.slow
def test_a_pool_worker_over_its_memory_limit_claims_nothing_more_and_exits_75(tmp_path: Path) -> None:
    """worker_max_rss_mb = 1: at its first look at its memory the worker stops polling the pool,
    waits for the runs in hand (none here) and exits with 75, which systemd's Restart=always
    (deploy/systemd/kiroku-worker@.service) answers by starting it again."""
    from kiroku import services
    from kiroku.supervise import RECYCLE_EXIT

    settings = services.test_settings(tmp_path / "server")
    services.up(settings, s3=False)
    try:
        config = tmp_path / "kiroku.toml"
        config.write_text('worker_max_rss_mb = 1\nocr_engine = "tesseract"\n', encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KIROKU_", "PREFECT_", "AWS_"))}
        env.update(KIROKU_HOME=str(tmp_path / "worker"), KIROKU_CONFIG=str(config),
                   KIROKU_HOME_RECORD=str(tmp_path / "no-record"), KIROKU_OCR_CONCURRENCY="1",
                   PREFECT_API_URL=settings.prefect_url, PREFECT_HOME=str(tmp_path / "worker" / "prefect"),
                   PREFECT_WORKER_QUERY_SECONDS="1")
        done = subprocess.run([KIROKU, "worker", "--pool", "kiroku-test", "--name", "w1"], env=env,
                              capture_output=True, text=True, timeout=240)
    finally:
        services.down(settings, s3=False)
    output = done.stdout + done.stderr
    assert done.returncode == RECYCLE_EXIT, output[-3000:]
    assert "作業プロセスを入れ替えます" in output
    assert "Traceback" not in output
