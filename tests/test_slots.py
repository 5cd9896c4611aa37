"""OCR slots: how many pages a worker reads at once, alone and against the shared global limit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

from flows.slots import global_ocr_slot, local_reader_slot


@pytest.mark.skipif(shutil.which("taskset") is None or (os.cpu_count() or 1) < 2, reason="needs taskset and 2 cores")
def test_a_worker_pinned_to_one_core_counts_one_core() -> None:
    """taskset / CPUAffinity= / a container's --cpus: the readers are sized by what the process may use."""
    code = "from kiroku.config import usable_cpu_count; print(usable_cpu_count())"
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "1"


def test_local_reader_slot_lets_only_as_many_pages_through_as_readers() -> None:
    inside, peak, lock = [0], [0], threading.Lock()

    def page() -> None:
        with local_reader_slot(2):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=page) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2


def test_pages_waiting_for_a_busy_reader_hold_no_global_slot(kiroku_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """One reader, three runs in flight: the worker holds one slot of the cluster's limit, not three,
    so the other machines can read (bench/scale_out.py gave 1.01x for 2 workers before this)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"ocr-test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=3))
    monkeypatch.setenv("KIROKU_OCR_GLOBAL_LIMIT", name)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def page() -> None:
        with global_ocr_slot(1):
            entered.release()
            release.wait(30)

    threads = [threading.Thread(target=page) for _ in range(3)]
    for t in threads:
        t.start()
    assert entered.acquire(timeout=60), "no page got a slot"
    time.sleep(1.0)  # the other two would have taken their slots by now if they could
    with get_client(sync_client=True) as client:
        held = client.read_global_concurrency_limit_by_name(name).active_slots
    release.set()
    for t in threads:
        t.join(60)
    assert held == 1
    assert all(entered.acquire(timeout=30) for _ in range(2)), "the waiting pages never read"
