"""Scale-out on Prefect + PostgreSQL: 1, 2, 3 workers and 1 again, in turn, on the same kind of documents.

    .venv/bin/python bench/scale_out.py --json scale_out.json [--documents 60] [--workers 1,2,3,1]

What it starts, all under one temporary folder and on free ports, all stopped at the end:
- a PostgreSQL cluster (the Debian postgresql server binaries, initdb/pg_ctl, run as the
  postgres user when this runs as root) holding the Prefect server's database and, per
  run, a fresh kiroku catalog database;
- one Prefect server on that PostgreSQL, with basic auth, and the `kiroku` process work
  pool, the `ocr-pages` global concurrency limit and the deployments of
  deploy/prefect.yaml (applied with `prefect deploy`, as an operator would);
- one SeaweedFS (`weed mini`) as the shared S3, a fresh Object Lock bucket per run;
- N workers `kiroku worker --pool kiroku --name wI`, each pinned to one core (taskset)
  to stand in for one small machine: this box has only 2 cores, so "3 machines" share them.
  A worker is warm by default (it claims runs from the pool like Prefect's process worker
  and executes them in its own process, with one reader that loaded the models once;
  kiroku/scaleout.py); `--cold` measures Prefect's stock process worker instead (a fresh
  Python process and model load per run).

Before the runs and after them, `machine_ceiling` measures what this machine gives two
independent one-core jobs (`kiroku process`, one reader, pinned): the bound against which
the 2-worker speed-up is to be read, since the 2 vCPUs here do not compute twice what one
does when both are busy.

Every document is submitted as its own `ingest-document` run (the watch folder's
path). The bucket is the judge: a document is archived once when its
records/<id>/record.json has exactly one version, twice when more, lost when none.
Runs per worker come from the workers' own log lines ("Worker 'wI' submitting flow run").
Redis is not started: Prefect needs it only to run several server (API) processes;
deploy/compose.yaml has it for that case.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POOL = "kiroku"
OCR_LIMIT = "ocr-pages"
DEPLOYMENT = "ingest-document/ingest-document"
BATCH_DEPLOYMENT = "ingest-batch/ingest-batch"
DEPARTMENTS = ["総務課", "税務課", "市民課", "建設課"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- PostgreSQL
@dataclass
class Postgres:
    base: Path
    bindir: Path
    port: int
    prefix: list[str]

    def url(self, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str) -> None:
        subprocess.run(self.prefix + [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                      "-U", "postgres", name], check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run(self.prefix + [str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast",
                                      "stop"], capture_output=True, timeout=60)


def start_postgres(base: Path) -> Postgres:
    pg_ctls = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not pg_ctls:
        raise SystemExit("PostgreSQL のサーバーがありません (no PostgreSQL server binaries: apt-get install postgresql)")
    bindir = Path(pg_ctls[-1]).parent
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base.mkdir(parents=True)
    if prefix:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8",
                             "--locale=C.UTF-8", "--auth=trust"], check=True, capture_output=True, timeout=120)
    # Prefect's server and several workers each keep a pool of connections
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w",
                             "-t", "60", "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 "
                                               f"-c max_connections=300 -c fsync=off", "start"],
                   check=True, capture_output=True, timeout=120)
    return Postgres(base, bindir, port, prefix)


# --------------------------------------------------------------------------- Prefect server
def wait_health(api: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"Prefect server exited; see {log}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:  # noqa: S310 - loopback
                if json.loads(r.read()) is True:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"Prefect server did not answer within {timeout:.0f} s; see {log}")


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    out = log.open("ab")
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_started(workers: list[subprocess.Popen], logs: dict[str, Path], timeout: float = 300) -> None:
    """Until every worker's log says Prefect's "Worker '<name>' started!" (after its readers warmed)."""
    deadline = time.monotonic() + timeout
    pending = dict(zip(logs, workers))
    while pending and time.monotonic() < deadline:
        for name, proc in list(pending.items()):
            if proc.poll() is not None:
                raise SystemExit(f"worker {name} exited; see {logs[name]}:\n"
                                 f"{logs[name].read_text(errors='replace')[-2000:]}")
            if f"Worker '{name}' started" in logs[name].read_text(errors="replace"):
                del pending[name]
        time.sleep(0.5)
    if pending:
        raise SystemExit(f"workers {sorted(pending)} did not start within {timeout:.0f} s")


def prefect_cli(args: list[str], env: dict[str, str]) -> str:
    exe = str(Path(sys.executable).with_name("prefect"))
    done = subprocess.run([exe, "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


# --------------------------------------------------------------------------- documents
def make_documents(folder: Path, n: int, tag: str) -> list[tuple[Path, str]]:
    """n distinct one-page notices (200 dpi PNG), spread over departments."""
    from tests.e2e_fixtures import render_notice_file

    titles = ["庁舎における節電の取組について（通知）", "防災訓練の実施について（依頼）",
              "固定資産税の納期について（お知らせ）", "道路占用許可申請について（回答）",
              "職員研修の開催について（通知）", "補助金交付決定について（通知）"]
    out = []
    for i in range(n):
        dept = DEPARTMENTS[i % len(DEPARTMENTS)]
        (folder / dept).mkdir(parents=True, exist_ok=True)
        number = f"新総第{1000 + i}号"
        title = titles[i % len(titles)]
        path = folder / dept / f"{tag}-{i:03d}.png"
        render_notice_file(path, title, number=f"{number}", skew=(i % 5 - 2) * 0.7)
        out.append((path, dept))
    return out


def record_id(path: Path) -> str:
    import hashlib

    from processors.document import record_id_for

    return record_id_for(hashlib.sha256(path.read_bytes()).hexdigest())


# --------------------------------------------------------------------------- the machine's own ceiling
def machine_ceiling(folder: Path, documents: int, cores: int) -> dict:
    """What two independent one-core jobs get from this machine, with no coordination at all.

    `kiroku process` with one reader, pinned to core 0 alone, then two at once on cores 0
    and 1, each on its own copy of the same one-page notices. On a machine whose cores are
    independent the pair reads 2.0x the pages/min of one; on this virtual machine two busy
    vCPUs are slower than one (their host's hyperthreads or neighbours), so no scale-out on
    it can beat this ratio: it is the bound the workers' speed-up is to be read against."""
    if cores < 2:
        return {}
    sets = [make_documents(folder / f"set{i}", documents, f"c{i}") for i in range(2)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIROKU_", "PREFECT_"))}
    kiroku = str(Path(sys.executable).with_name("kiroku"))

    def start(core: int, docs: list[tuple[Path, str]], tag: str) -> subprocess.Popen:
        home = folder / f"home-{tag}"
        home.mkdir(parents=True, exist_ok=True)
        run_env = dict(env, KIROKU_HOME=str(home), KIROKU_OCR_CONCURRENCY="1",
                       KIROKU_CONFIG=str(folder / "no-kiroku.toml"), KIROKU_HOME_RECORD=str(folder / "no-record"))
        return subprocess.Popen(["taskset", "-c", str(core), kiroku, "process", *(str(d) for d, _ in docs),
                                 "--out", str(folder / f"out-{tag}")], env=run_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    t0 = time.monotonic()
    alone = start(0, sets[0], "alone")
    if alone.wait() != 0:
        return {"error": "kiroku process failed"}
    one = documents / (time.monotonic() - t0) * 60
    t0 = time.monotonic()
    pair = [start(i, sets[i], f"pair{i}") for i in range(2)]
    if any(p.wait() != 0 for p in pair):
        return {"error": "kiroku process failed"}
    two = 2 * documents / (time.monotonic() - t0) * 60
    shutil.rmtree(folder, ignore_errors=True)
    return {"one_core_pages_per_minute": round(one, 2), "two_cores_pages_per_minute": round(two, 2),
            "ratio": round(two / one, 2), "documents_each": documents}


# --------------------------------------------------------------------------- one run
def batches(docs: list[tuple[Path, str]], size: int) -> list[tuple[list[Path], str]]:
    """Documents grouped by department, then cut into runs of at most `size` scans."""
    by_dept: dict[str, list[Path]] = {}
    for path, dept in docs:
        by_dept.setdefault(dept, []).append(path)
    return [(paths[i:i + size], dept) for dept, paths in by_dept.items() for i in range(0, len(paths), size)]


async def submit_and_wait(docs: list[tuple[Path, str]], mode: str, batch_size: int,
                          timeout: float) -> tuple[float, list, dict[str, int]]:
    """Submit every document (mode document: one ingest-document run each; mode batch:
    ingest-batch runs of batch_size, each document still its own ingest-document subflow run)
    and wait until every submitted run is final. Returns seconds, runs, documents per run id."""
    from prefect.client.orchestration import get_client

    from flows.watch import DeploymentRuns  # what `kiroku watch --via-deployment` hands over with

    t0 = time.time()
    ids = []
    weight: dict[str, int] = {}
    starter = DeploymentRuns(DEPLOYMENT if mode == "document" else BATCH_DEPLOYMENT)
    try:
        if mode == "document":
            for path, dept in docs:
                run = starter.start({"path": str(path), "department": dept, "move_source": False})
                ids.append(run.id)
                weight[str(run.id)] = 1
        else:
            for paths, dept in batches(docs, batch_size):
                run = starter.start({"paths": [str(p) for p in paths], "department": dept, "move_source": False})
                ids.append(run.id)
                weight[str(run.id)] = len(paths)
    finally:
        starter.close()
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    final: dict = {}
    async with get_client() as client:
        # one query every 2 s for the runs not yet final: the harness must not load the server
        # it measures (a read per run per poll was 4 % of the server's CPU under py-spy)
        while len(final) < len(ids) and time.monotonic() <= deadline:
            open_ids = [i for i in ids if str(i) not in final]
            for r in await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=open_ids)),
                                                 limit=len(open_ids)):
                if r.state and r.state.is_final():
                    final[str(r.id)] = r
            if len(final) < len(ids):
                await asyncio.sleep(2)
        runs = [final.get(str(i)) or await client.read_flow_run(i) for i in ids]
    ends = [r.end_time.timestamp() for r in runs if r.end_time]
    seconds = (max(ends) if ends else time.time()) - t0
    return seconds, runs, weight


_ACCESS_LINE = re.compile(r'"(GET|POST|PATCH|PUT|DELETE) (/api/[^ ?"]*)')
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def requests_per_document(server_log: Path, start: int, documents: int) -> dict[str, float]:
    """The server's access-log lines from byte `start` on, per endpoint (ids as {id}), per document.

    The harness's own requests (submitting runs, polling their states) are counted too and
    show as such: deployments/name, create_flow_run, flow_runs/filter."""
    counts: dict[str, int] = {}
    with server_log.open("rb") as log:
        log.seek(start)
        for line in log.read().decode("utf-8", "replace").splitlines():
            if m := _ACCESS_LINE.search(line):
                key = f"{m.group(1)} {_UUID.sub('{id}', m.group(2))}"
                counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return {"total": round(sum(counts.values()) / documents, 2)} | {k: round(v / documents, 2) for k, v in ordered}


def bucket_counts(store, expected: set[str]) -> dict[str, int]:  # noqa: ANN001 - ArchiveStore
    """Versions of records/<id>/record.json per record id, straight from the bucket."""
    counts: dict[str, int] = {}
    paginator = store.client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=store.bucket, Prefix="records/"):
        for v in page.get("Versions", []):
            parts = v["Key"].split("/")  # records/<年度>/<id>/record.json
            if len(parts) >= 3 and parts[-1] == "record.json":
                counts[parts[-2]] = counts.get(parts[-2], 0) + 1
    return {i: counts.get(i, 0) for i in expected} | {i: c for i, c in counts.items() if i not in expected}


async def per_worker(names: list[str], run_ids: list, weight: dict[str, int]) -> dict[str, int]:
    """Which worker started each run, from the run's own log ("Worker 'wI' submitting flow run ...")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    pattern = re.compile(r"Worker '([^']+)' submitting flow run")
    seen: dict[str, str] = {}
    async with get_client() as client:
        for i in range(0, len(run_ids), 20):
            chunk = run_ids[i:i + 20]
            offset = 0
            while True:
                logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=chunk)),
                                              limit=200, offset=offset)
                for log in logs:
                    if (m := pattern.search(log.message)) and log.flow_run_id:
                        seen.setdefault(str(log.flow_run_id), m.group(1))
                if len(logs) < 200:
                    break
                offset += 200
    out = {name: 0 for name in names}
    for run_id, name in seen.items():
        out[name] = out.get(name, 0) + weight.get(run_id, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    parser.add_argument("--documents", type=int, default=60)
    parser.add_argument("--workers", default="1,2,3,1",
                        help="comma-separated worker counts, run in turn (speed-ups are against the mean of the 1s)")
    parser.add_argument("--mode", choices=["document", "batch"], default="document",
                        help="document: one ingest-document deployment run per scan (what the watch folder "
                             "does); batch: ingest-batch runs of --batch-size scans, each still its own "
                             "ingest-document run")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--cold", action="store_true",
                        help="Prefect's stock process worker (a fresh process per run) instead of the warm worker")
    parser.add_argument("--runs-per-worker", type=int, default=None,
                        help="flow runs at once per worker (default: 4 in document mode, 1 in batch mode)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one run's documents")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--ceiling-documents", type=int, default=12,
                        help="documents per `kiroku process` in the machine-ceiling check before and after "
                             "the runs (0: skip it)")
    parser.add_argument("--count-requests", action="store_true",
                        help="turn on the Prefect server's access log and write its requests per document, "
                             "by endpoint, into each run (what a document costs the server)")
    parser.add_argument("--no-ocr-limit", action="store_true",
                        help="workers do not use the ocr-pages global concurrency limit (its cost on the server)")
    args = parser.parse_args()

    from kiroku import services
    from processors.archive.catalog import Catalog
    from processors.archive.storage import ArchiveStore

    cores = os.cpu_count() or 1
    runs_per_worker = args.runs_per_worker or (4 if args.mode == "document" else 1)
    base = Path(tempfile.mkdtemp(prefix="kiroku-scale-"))
    if os.geteuid() == 0:
        os.chmod(base, 0o755)
    load_before = os.getloadavg()
    print(f"kiroku scale-out bench in {base}; load average before: {load_before[0]:.2f}", flush=True)
    procs: list[subprocess.Popen] = []
    pg = None
    weed_settings = None
    result: dict = {"runs": [], "cores": cores, "load_average_before": load_before[0]}
    try:
        pg = start_postgres(base / "pg")
        pg.createdb("prefect")
        result["database"] = "postgresql " + pg.bindir.parent.name

        weed_settings = services.test_settings(base / "weed")
        services.up(weed_settings, prefect=False)
        creds = services.s3_credentials(weed_settings)

        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        auth = f"kiroku:{secrets.token_urlsafe(18)}"
        server_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        server_env.update(
            PREFECT_HOME=str(base / "prefect-server"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_DATABASE_CONNECTION_URL=pg.url("prefect", "asyncpg"),
            PREFECT_SERVER_API_AUTH_STRING=auth, PREFECT_API_AUTH_STRING=auth, PREFECT_API_URL=api,
            PREFECT_SERVER_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING", **services.PREFECT_SERVER_TUNING)
        server_log = base / "prefect-server.log"
        t_server = time.monotonic()
        server = spawn([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                        "--port", str(port), "--analytics-off"]
                       + (["--log-level", "INFO"] if args.count_requests else []), server_env, server_log)
        procs.append(server)
        wait_health(api, server, server_log)
        print(f"Prefect server on PostgreSQL answering after {time.monotonic() - t_server:.1f} s", flush=True)

        client_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        client_env.update(PREFECT_HOME=str(base / "prefect-client"), PREFECT_API_URL=api,
                          PREFECT_API_AUTH_STRING=auth, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                          PREFECT_LOGGING_LEVEL="WARNING")
        os.environ.update(client_env)
        for k in [k for k in os.environ if k.startswith("PREFECT_") and k not in client_env]:
            del os.environ[k]
        prefect_cli(["work-pool", "create", POOL, "--type", "process", "--overwrite"], client_env)
        # one slot per reader of the largest run (each worker has one reader, KIROKU_OCR_CONCURRENCY=1):
        # the limit is there to be exercised, not to throttle the figure
        max_workers = max(int(x) for x in args.workers.split(","))
        prefect_cli(["gcl", "create", OCR_LIMIT, "--limit", str(max_workers)], client_env)
        prefect_cli(["deploy", "--prefect-file", "deploy/prefect.yaml", "-n", "ingest-document", "-n", "ingest-batch"],
                    client_env)

        if args.ceiling_documents:
            result["machine_ceiling_before"] = machine_ceiling(base / "ceiling", args.ceiling_documents, cores)
            print(f"machine ceiling: {json.dumps(result['machine_ceiling_before'])}", flush=True)
        for index, n_workers in enumerate(int(x) for x in args.workers.split(",")):
            tag = f"w{n_workers}" + (f"r{index}" if any(r["workers"] == n_workers for r in result["runs"]) else "")
            docs = make_documents(base / "docs" / tag, args.documents, tag)
            expected = {record_id(p) for p, _ in docs}
            bucket = f"scale-{tag}-{secrets.token_hex(3)}"
            store = ArchiveStore(weed_settings.s3_url, weed_settings.region, bucket, creds)
            store.ensure_bucket()
            catalog_db = f"catalog_{tag}"
            pg.createdb(catalog_db)
            Catalog(pg.url(catalog_db)).close()  # tables created once, before workers race to

            worker_env = dict(client_env)
            worker_env.update(
                KIROKU_S3_ENDPOINT_URL=weed_settings.s3_url, KIROKU_S3_BUCKET=bucket,
                AWS_ACCESS_KEY_ID=creds.access_key_id, AWS_SECRET_ACCESS_KEY=creds.secret_access_key,
                KIROKU_CATALOG_URL=pg.url(catalog_db), KIROKU_OCR_GLOBAL_LIMIT="" if args.no_ocr_limit else OCR_LIMIT,
                KIROKU_OCR_CONCURRENCY="1", KIROKU_CONFIG=str(base / "no-kiroku.toml"),
                PREFECT_WORKER_QUERY_SECONDS="1", KIROKU_SOURCE=str(ROOT), PREFECT_LOGGING_LEVEL="INFO",
                PREFECT_CLIENT_CSRF_SUPPORT_ENABLED="false",  # as deploy/worker.env.example
                PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
            workers: list[subprocess.Popen] = []
            logs: dict[str, Path] = {}
            kiroku = str(Path(sys.executable).with_name("kiroku"))
            for i in range(1, n_workers + 1):
                name = f"{tag}-worker{i}"
                env = dict(worker_env, KIROKU_HOME=str(base / "homes" / name),
                           PREFECT_HOME=str(base / "homes" / name / "prefect"))
                Path(env["KIROKU_HOME"]).mkdir(parents=True)
                logs[name] = base / f"{name}.log"
                core = (i - 1) % cores
                argv = ["taskset", "-c", str(core), kiroku, "worker", "--pool", POOL, "--name", name,
                        "--limit", str(runs_per_worker)] + (["--cold"] if args.cold else [])
                workers.append(spawn(argv, env, logs[name]))
            procs.extend(workers)
            wait_started(workers, logs)  # a warm worker loads its models first: not part of the figure
            time.sleep(1)
            load0 = os.getloadavg()[0]
            cpu_before = sum(_group_cpu(w.pid) for w in workers)
            shared_groups = _shared_groups(server, weed_settings, pg)
            shared_before = {name: _group_cpu(g) for name, g in shared_groups.items()}
            print(f"{n_workers} worker(s): submitting {len(docs)} documents", flush=True)
            log_start = server_log.stat().st_size
            seconds, runs, weight = asyncio.run(submit_and_wait(docs, args.mode, args.batch_size, args.timeout))
            time.sleep(2)  # let the workers reap their last flow-run processes
            cpu_used = sum(_group_cpu(w.pid) for w in workers) - cpu_before
            shared_by = {name: round(_group_cpu(g) - shared_before[name], 1) for name, g in shared_groups.items()}
            shared_used = sum(shared_by.values())
            load1 = os.getloadavg()[0]
            for w in workers:
                stop(w)
            counts = bucket_counts(store, expected)
            states = {}
            for r in runs:
                states[r.state.type.value if r.state else "NONE"] = states.get(r.state.type.value if r.state else "NONE", 0) + 1
            pages = len(docs)  # one page each
            run = {
                "workers": n_workers, "mode": args.mode, "ocr_limit": not args.no_ocr_limit, "warm": not args.cold, "documents": len(docs), "pages": pages, "seconds": round(seconds, 1),
                "pages_per_minute": round(pages / seconds * 60, 2) if seconds else None,
                "archived_once": sum(1 for i in expected if counts[i] == 1),
                "archived_twice": sum(1 for i in expected if counts[i] > 1),
                "lost": sum(1 for i in expected if counts[i] == 0),
                "unexpected_records": sum(1 for i in counts if i not in expected),
                "per_worker": asyncio.run(per_worker(list(logs), [r.id for r in runs], weight)),
                "run_states": states,
                "database": result["database"],
                "worker_cpu_seconds": round(cpu_used, 1),
                "load_average_during": [round(load0, 2), round(load1, 2)],
            }
            run["servers_cpu_seconds"] = round(shared_used, 1)  # Prefect server + PostgreSQL + SeaweedFS
            run["servers_cpu_seconds_by"] = shared_by
            if cpu_used and pages:
                run["cpu_hours_per_10000_pages"] = round(cpu_used / pages * 10000 / 3600, 1)
                run["cpu_hours_per_10000_pages_with_servers"] = round(
                    (cpu_used + shared_used) / pages * 10000 / 3600, 1)
            if args.count_requests:
                run["requests_per_document"] = requests_per_document(server_log, log_start, len(docs))
            result["runs"].append(run)
            print(json.dumps(run, ensure_ascii=False), flush=True)
            store.close()
        # against the mean of the 1-worker runs: the default order 1,2,3,1 has one before and one
        # after, since this shared machine's speed drifts by 20 % within one bench run
        ones = [r["pages_per_minute"] for r in result["runs"] if r["workers"] == 1 and r["pages_per_minute"]]
        for r in result["runs"]:
            if ones and r["pages_per_minute"]:
                r["speedup_vs_1"] = round(r["pages_per_minute"] / (sum(ones) / len(ones)), 2)
        if args.ceiling_documents:
            result["machine_ceiling_after"] = machine_ceiling(base / "ceiling", args.ceiling_documents, cores)
            print(f"machine ceiling: {json.dumps(result['machine_ceiling_after'])}", flush=True)
            ratios = [result[k]["ratio"] for k in ("machine_ceiling_before", "machine_ceiling_after")
                      if result[k].get("ratio")]
            if ratios and (two := next((r for r in result["runs"] if r["workers"] == 2), None)):
                ceiling = sum(ratios) / len(ratios)
                print(f"2 workers: {two.get('speedup_vs_1')}x of 1; two independent one-core jobs: "
                      f"{ceiling:.2f}x of one on this machine (target 1.6x)", flush=True)
        result["load_average_after"] = os.getloadavg()[0]
    finally:
        for p in reversed(procs):
            stop(p)
        if weed_settings is not None:
            services.down(weed_settings, prefect=False)
        if pg is not None:
            pg.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


def _shared_groups(server: subprocess.Popen, weed_settings, pg: Postgres) -> dict[str, int]:  # noqa: ANN001
    """Process groups of the shared services by name: the Prefect server, weed mini, the PostgreSQL postmaster."""
    from kiroku import services

    groups = {"prefect": server.pid}
    if (pid := services.service_pid(weed_settings, services.WEED)) is not None:
        groups["seaweedfs"] = pid
    try:
        postmaster = int((pg.base / "data" / "postmaster.pid").read_text().split()[0])
        groups["postgresql"] = os.getpgid(postmaster)
    except (OSError, ValueError, IndexError):
        pass
    return groups


def _group_cpu(pgid: int) -> float:
    """CPU seconds (user+system, children reaped included) of every live process in a process group.

    A worker's flow runs are its children; when one ends, the worker reaps it and its
    CPU time moves into the worker's cutime/cstime, which /proc/<pid>/stat shows.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            raw = Path(stat).read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[2]) != pgid:  # field 5: pgrp
            continue
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += (utime + stime + cutime + cstime) / ticks
    return total


if __name__ == "__main__":
    raise SystemExit(main())
