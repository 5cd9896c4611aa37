"""kiroku on several machines: a worker machine taking runs from a shared Prefect server's work pool.

The machines share one Prefect server (on PostgreSQL), one S3 bucket with Object Lock
and one PostgreSQL catalog; deploy/prefect.yaml defines the deployments and the
`kiroku` work pool, deploy/compose.yaml and deploy/systemd/ run the pieces. No
home-made scheduler: the worker is Prefect's own process worker (polling, heartbeats,
the run limit, claiming a run with its Pending state so no two workers take it).

Two ways to execute a claimed run:
- warm (the default, `kiroku worker --pool kiroku`): Prefect's ProcessWorker with its
  `run` step replaced: the flow run executes in a thread of the worker process itself
  (prefect.flow_engine.run_flow on the claimed run), with the worker's warm reader
  processes (kiroku/readers.py). The OCR models are loaded once per worker, not per
  document. Measured in bench/scale_out.py: a cold process per run spent most of a
  one-page document loading Python, Prefect and the models again.
- cold (`--cold`): Prefect's stock process worker, a fresh Python process per run
  (`prefect worker start --type process`), for flows whose code changes under a
  running worker.
Every document is still its own flow run, named after its file, with its artifact.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from kiroku.config import Settings, usable_cpu_count

SOURCE_DIR = Path(__file__).resolve().parents[1]  # where flows/ is: the deployments' working directory
# Prefect's default is to ask the server for new runs every 10 s; a scan should not wait that long.
DEFAULT_QUERY_SECONDS = "2"


def pool_worker_command(pool: str, *, name: str | None = None, limit: int | None = None) -> list[str]:
    """`prefect worker start` for the kiroku work pool (process type: runs in this machine's venv)."""
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect) if prefect.exists() else (shutil.which("prefect") or "prefect"),
            "worker", "start", "--pool", pool, "--type", "process"]
    if name:
        argv += ["--name", name]
    argv += ["--limit", str(limit or usable_cpu_count())]
    return argv


def pool_worker_env(settings: Settings) -> dict[str, str]:
    """The worker's environment: the flow runs it starts inherit it (settings, credentials)."""
    env = dict(os.environ)
    env.setdefault("KIROKU_SOURCE", str(SOURCE_DIR))
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", DEFAULT_QUERY_SECONDS)
    env.setdefault("KIROKU_HOME", str(settings.home))
    return env


def run_pool_worker(settings: Settings, pool: str, *, name: str | None = None, limit: int | None = None) -> int:
    """Become Prefect's stock process worker (exec: signals reach it directly); returns only on failure."""
    argv = pool_worker_command(pool, name=name, limit=limit)
    try:
        os.execve(argv[0], argv, pool_worker_env(settings))
    except OSError as exc:
        print(f"Prefect ワーカーを起動できません (cannot start the Prefect worker {argv[0]}): {exc}", file=sys.stderr)
        return 1
    return 0  # not reached


# --------------------------------------------------------------------------- the warm worker


def flow_for_entrypoint(entrypoint: str) -> Any:
    """The flow object a deployment's entrypoint names, imported as a normal module when it is
    kiroku's own (`flows/ingest.py:ingest_document` -> flows.ingest), so that the run shares
    this process's reader pool and listeners instead of a second copy of the module."""
    path, _, attr = entrypoint.partition(":")
    file = (SOURCE_DIR / path).resolve()
    try:
        module = ".".join(file.relative_to(SOURCE_DIR).with_suffix("").parts)
    except ValueError:
        module = ""
    if module and file.exists():
        return getattr(importlib.import_module(module), attr)
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(entrypoint)


_flows: dict[Any, Any] = {}
_flows_lock = threading.Lock()


def _flow_of_run(flow_run: Any) -> Any:
    """The flow of a claimed run, from its deployment's entrypoint (cached per deployment)."""
    with _flows_lock:
        if flow_run.deployment_id in _flows:
            return _flows[flow_run.deployment_id]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(flow_run.deployment_id)
    flow = flow_for_entrypoint(deployment.entrypoint)
    with _flows_lock:
        _flows[flow_run.deployment_id] = flow
    return flow


def run_claimed_flow_run(flow_run: Any) -> int:
    """Execute a run this worker claimed, here; 0 when the engine reported its end (any state),
    1 when it could not even start (the worker then marks the run crashed)."""
    from prefect.flow_engine import run_flow

    flow = _flow_of_run(flow_run)
    state = run_flow(flow, flow_run=flow_run, return_type="state")
    return 0 if state is not None and state.is_final() else 1


def runs_to_ask_for(free_slots: float | None) -> int:
    """How many scheduled runs a poll asks the server for, given the worker's free run slots.

    Twice the free slots: two workers polling at the same moment are sent the same oldest
    runs, and the one whose claims fail still finds others. None free: one, so the poll
    still tells the server this queue is served (its "ready" status in the UI) at almost
    no cost. Unknown (no limit): Prefect's default page."""
    if free_slots is None or free_slots == float("inf"):
        return 200
    return max(1, 2 * int(free_slots))


# Prefect's foreman marks a work queue and its deployments "not ready" 60 s after their last
# poll; a full worker polls this often to keep them ready and otherwise not at all.
READY_POLL_SECONDS = 15.0


def should_poll(free_slots: float | None, seconds_since_poll: float) -> bool:
    """Whether a worker asks the server for runs now.

    With no free slot a poll can only return runs it must leave, and each poll costs the
    server the query and two background tasks (marking the queue and deployment ready):
    together 6 % of its samples under py-spy with two busy workers polling every second
    (bench/scale_out.py). A full worker skips polls, but for one every READY_POLL_SECONDS."""
    if free_slots is None or free_slots > 0:
        return True
    return seconds_since_poll >= READY_POLL_SECONDS


def warm_worker_class() -> type:
    """Prefect's ProcessWorker with the run executed in this process (see the module docstring)."""
    import anyio
    from prefect.exceptions import InfrastructureNotAvailable
    from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

    import warnings

    warnings.filterwarnings("ignore", message=".*WarmProcessWorker.*matches existing registered type",
                            category=UserWarning)  # same pool type as ProcessWorker, on purpose

    class WarmProcessWorker(ProcessWorker):
        """Claims runs like ProcessWorker; runs them in a thread here, with warm readers."""

        draining: threading.Event | None = None  # set: claim nothing more (the worker is recycling)

        _polled_at: float = float("-inf")  # time.monotonic() of the last poll sent to the server

        async def get_and_submit_flow_runs(self) -> list:
            import time

            from prefect.types._datetime import now

            if self.draining is not None and self.draining.is_set():
                return []
            free = self.limiter.available_tokens if self._limiter else None
            if self._has_successfully_synced and not should_poll(free, time.monotonic() - self._polled_at):
                self._last_polled_time = now("UTC")  # alive and serving: the health check must not fail
                return []
            self._polled_at = time.monotonic()
            return await super().get_and_submit_flow_runs()

        async def _get_scheduled_flow_runs(self) -> list:
            """Only as many scheduled runs as this worker could start (see runs_to_ask_for).

            Prefect's worker asks for every scheduled run of the pool (up to 200) at every
            poll and starts the few it has room for: with a backlog of 60 runs and a poll a
            second, the server serialized 60 runs per poll per worker, its most expensive
            endpoint under py-spy (bench/scale_out.py)."""
            import datetime as dt

            from httpx import HTTPStatusError
            from prefect.client.schemas.responses import WorkerFlowRunResponse
            from prefect.types._datetime import now

            ask = runs_to_ask_for(self.limiter.available_tokens if self._limiter else None)
            body: dict[str, Any] = {
                "scheduled_before": str(now("UTC") + dt.timedelta(seconds=int(self._prefetch_seconds))),
                "limit": ask}
            if self._work_queues:
                body["work_queue_names"] = list(self._work_queues)
            try:
                response = await self.client.request("POST", "/work_pools/{name}/get_scheduled_flow_runs",
                                                     path_params={"name": self._work_pool_name}, json=body)
            except HTTPStatusError as exc:
                if exc.response.status_code == 404:  # no pool yet: the next heartbeat creates it
                    return []
                raise
            return WorkerFlowRunResponse.model_validate_list(response.json())

        async def run(self, flow_run: Any, configuration: ProcessJobConfiguration,
                      task_status: Optional[anyio.abc.TaskStatus[int]] = None) -> ProcessWorkerResult:
            if task_status is not None:
                task_status.started(os.getpid())
            code = await anyio.to_thread.run_sync(run_claimed_flow_run, flow_run)
            return ProcessWorkerResult(status_code=code, identifier=str(os.getpid()))

        async def kill_infrastructure(self, infrastructure_pid: str, configuration: Any,
                                      grace_seconds: int = 30) -> None:
            # the "infrastructure" is this worker: never kill it to cancel one run
            raise InfrastructureNotAvailable("the run executes inside the warm kiroku worker")

    return WarmProcessWorker


def run_warm_worker(settings: Settings, pool: str, *, name: str | None = None, limit: int | None = None) -> int:
    """Warm the readers, then poll the work pool and execute its runs in this process until stopped."""
    import anyio

    from kiroku.readers import bound_malloc, shared_pool

    bound_malloc()  # page images pass through this process too (see kiroku/readers.py)
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

    pool_obj = shared_pool(settings)
    print("kiroku worker: 読み取りプロセスを準備しています (warming the readers)…", file=sys.stderr, flush=True)
    pool_obj.wait_warm()
    # runs in flight: four per reader. Each run waits on the shared server (claim, states, the
    # global OCR slot's lease) as well as on its reader; with two per reader a worker pinned to one
    # core used 46 % of it (bench/scale_out.py, 1 worker: 78 CPU s in 171 s), with four 95 %.
    limit = limit or 4 * pool_obj.size
    worker = warm_worker_class()(work_pool_name=pool, name=name, limit=limit)
    # Memory: page images pass through this process, and glibc does not give all of it back. Above
    # worker_max_rss_mb the worker claims no more runs, finishes the ones in hand and exits with
    # RECYCLE_EXIT; systemd (Restart=always) starts it again, as the supervisor does for `make run`.
    from kiroku.supervise import RECYCLE_EXIT, watch_memory

    stop, recycle = threading.Event(), threading.Event()
    worker.draining = stop
    threading.Thread(target=watch_memory, args=(settings.worker_max_rss_mb, stop, recycle), daemon=True,
                     name="kiroku-memory").start()
    # a run waits at most this long for a free worker to notice it (Prefect's default: 10 s)
    query = float(os.environ.get("PREFECT_WORKER_QUERY_SECONDS") or DEFAULT_QUERY_SECONDS)
    try:
        with temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: query}):
            anyio.run(_serve_until_drained, worker, stop)
    except KeyboardInterrupt:
        pass
    return RECYCLE_EXIT if recycle.is_set() else 0


def _runs_in_hand(worker: Any) -> int:
    """Runs the worker has claimed and not finished (its run limiter's borrowed tokens)."""
    try:
        return int(worker.limiter.borrowed_tokens)
    except Exception:  # noqa: BLE001 - no limiter before the worker has set itself up
        return 0


async def _serve_until_drained(worker: Any, stop: threading.Event, settle: float = 3.0) -> None:
    """Prefect's worker loop, until `stop` is set and the runs in hand have ended.

    `settle` seconds pass after `stop` before the count is trusted: a poll already under way
    when it was set may still be claiming the runs it fetched (a run is claimed, moved to
    Pending, only after it got one of the limiter's tokens)."""
    import anyio

    stopped_at: float | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(worker.start)
        while True:
            await anyio.sleep(1)
            if not stop.is_set():
                continue
            stopped_at = stopped_at if stopped_at is not None else anyio.current_time()
            if anyio.current_time() - stopped_at >= settle and _runs_in_hand(worker) == 0:
                break
        group.cancel_scope.cancel()
