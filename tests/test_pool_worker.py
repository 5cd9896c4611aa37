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


def test_runs_to_ask_for_is_twice_the_free_slots_and_one_when_full() -> None:
    from kiroku.scaleout import runs_to_ask_for

    assert runs_to_ask_for(3) == 6
    assert runs_to_ask_for(0) == 1
    assert runs_to_ask_for(None) == 200


def test_a_full_worker_polls_only_to_stay_ready() -> None:
    from kiroku.scaleout import READY_POLL_SECONDS, should_poll

    assert should_poll(1, 0.0) and should_poll(None, 0.0)
    assert not should_poll(0, 1.0)
    assert should_poll(0, READY_POLL_SECONDS)
    assert READY_POLL_SECONDS < 60  # Prefect marks a queue not ready 60 s after its last poll


@pytest.mark.slow
def test_a_warm_worker_asks_the_server_only_for_runs_it_could_start(tmp_path: Path) -> None:
    """Five runs wait in the pool. Prefect's own poll fetches all five; the warm worker with one
    free slot (of one) fetches two, and with none free one, from the real server; and full, it
    does not poll again until READY_POLL_SECONDS have passed."""
    import asyncio

    from kiroku import services
    from kiroku.scaleout import warm_worker_class

    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = services.test_settings(tmp_path / "server")
    services.up(settings, s3=False)

    async def polls() -> tuple[int, int, int, int]:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.workers.process import ProcessWorker

        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="kiroku-poll", type="process"))
            flow_id = await client.create_flow_from_name("poll-test")
            deployment = await client.create_deployment(flow_id=flow_id, name="poll-test", work_pool_name="kiroku-poll",
                                                        entrypoint="flows/verify.py:verify_archive")
            for _ in range(5):
                await client.create_flow_run_from_deployment(deployment)
        async with ProcessWorker(work_pool_name="kiroku-poll", limit=1) as stock:
            await stock.sync_with_backend()
            everything = len(await stock._get_scheduled_flow_runs())
        async with warm_worker_class()(work_pool_name="kiroku-poll", limit=1) as warm:
            await warm.sync_with_backend()
            one_free = len(await warm._get_scheduled_flow_runs())
            warm.limiter.acquire_on_behalf_of_nowait("a run in hand")
            none_free = len(await warm._get_scheduled_flow_runs())
            sent = 0
            ask = warm._get_scheduled_flow_runs

            async def counted() -> list:
                nonlocal sent
                sent += 1
                return await ask()

            warm._get_scheduled_flow_runs = counted
            for _ in range(3):  # the first after the tests above has not been timed: it polls
                await warm.get_and_submit_flow_runs()
        return everything, one_free, none_free, sent

    try:
        # a settings context, not the environment: earlier tests of the session may have entered one
        with temporary_settings(updates={PREFECT_API_URL: settings.prefect_url}):
            assert asyncio.run(polls()) == (5, 2, 1, 1)
    finally:
        services.down(settings, s3=False)


@pytest.mark.slow
def test_the_scale_out_hand_over_starts_named_runs_and_finds_a_deployment_deployed_again(tmp_path: Path) -> None:
    """flows/watch.py DeploymentRuns against a real server: each start is one Scheduled run of the
    deployment with the scan's name and parameters; after the deployment is deleted and deployed
    again (a new id), the next start finds the new deployment by its name."""
    import asyncio

    from kiroku import services
    from flows.watch import DeploymentRuns

    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = services.test_settings(tmp_path / "server")
    services.up(settings, s3=False)

    async def deploy() -> str:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate

        async with get_client() as client:
            try:
                await client.create_work_pool(WorkPoolCreate(name="kiroku-handover", type="process"))
            except Exception:  # noqa: BLE001 - made by the first call
                pass
            flow_id = await client.create_flow_from_name("ingest-document")
            return str(await client.create_deployment(flow_id=flow_id, name="kiroku", work_pool_name="kiroku-handover",
                                                      entrypoint="flows/ingest.py:ingest_document"))

    async def delete(deployment_id: str) -> None:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            await client.delete_deployment(deployment_id)

    try:
        with temporary_settings(updates={PREFECT_API_URL: settings.prefect_url}):
            first = asyncio.run(deploy())
            runs = DeploymentRuns("ingest-document/kiroku")
            try:
                a = runs.start({"path": "/inbox/総務課/通知.pdf", "department": "総務課"}, "総務課/通知.pdf")
                b = runs.start({"path": "/inbox/回答.png", "department": None}, "回答.png")
                assert (a.name, b.name) == ("総務課/通知.pdf", "回答.png")
                assert a.parameters == {"path": "/inbox/総務課/通知.pdf", "department": "総務課"}
                assert str(a.deployment_id) == str(b.deployment_id) == first
                assert a.state.is_scheduled() and b.state.is_scheduled()
                asyncio.run(delete(first))
                second = asyncio.run(deploy())
                c = runs.start({"path": "/inbox/x.png", "department": None}, "x.png")
                assert str(c.deployment_id) == second != first
            finally:
                runs.close()
    finally:
        services.down(settings, s3=False)
