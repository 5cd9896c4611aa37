"""Ingesting scans: one flow run per document, a task per stage that does real work.

The flow reads like the process a records officer would describe: load the scan,
read its pages, extract what it is, write the PDF/A, store it locked, catalog it,
and only then take it out of the inbox. The work itself lives in processors/.

Tasks are the stages worth watching, retrying or limiting (`read page` per page,
`extract metadata and write PDF/A`, `store and catalog`); steps that take milliseconds
(loading the scan, looking for an earlier copy, moving it to done/) are plain code of the
flow. Each task costs the Prefect server three state events: with many small tasks the
server, not the reader, sets the pace (bench/scale_out.py, bench/watch_throughput.py).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import cv2
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from kiroku import wiring
from kiroku.config import Settings, load_settings, usable_cpu_count
from kiroku.runtime import start_ephemeral_server_once
from flows.slots import global_ocr_slot, local_slot_count
from processors import document
from processors.archive import inbox, ledger
from processors.archive.failures import KirokuFailure
from processors.archive.locks import content_lock
from processors.archive.names import decode_path, display_name, encode_path, readable
from processors.reading.pages import LoadedDocument, PreparedPage, SourcePage
from schemas.record import Page, Record

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
cv2.setNumThreads(1)  # pages already run one per core; OpenCV's own threads would only compete


# Listeners told of each document's steps (received, reading, archived, quarantined,
# retry): the live terminal of `make run` is one. A listener must not raise.
Listener = Callable[[str, str, dict], None]
LISTENERS: list[Listener] = []


def _progress(source: Path, department: str | None, step: str, **detail: object) -> None:
    name = display_name(source.name)
    name = f"{department}/{name}" if department else name
    for listener in list(LISTENERS):
        try:
            listener(name, step, detail)
        except Exception:  # noqa: BLE001 - the terminal must never stop an ingest
            pass


def _document_run_name() -> str:
    params = flow_run.parameters
    name = display_name(decode_path(params["path"]).name)
    department = params.get("department")
    return f"{department}/{name}" if department else name


# --------------------------------------------------------------------------- tasks


def load_scan(path: Path, settings: Settings) -> LoadedDocument:
    """The scan's pages; InputRejected (empty, truncated, a bomb) with its reason otherwise.

    A plain step of the flow, not a task: every task costs the Prefect server about 30 ms of
    CPU for its three state events (bench/watch_throughput.py counts the server's CPU), and the
    flow run's own state and log already say why a scan was refused."""
    from processors.reading.images import load_document

    return load_document(path, max_pixels=settings.max_image_pixels, default_dpi=settings.default_dpi)


def find_earlier_copy(sha256: str, settings: Settings) -> Record | None:
    """Catalog first (cheap), then the bucket, which is the authority; a bucket hit is catalogued now.

    A plain step of the flow, not a task (see load_scan): it takes milliseconds, and the
    flow's log says when a copy was found."""
    from processors.archive.archiving import archived_record, catalog_record

    catalog = wiring.catalog(settings)
    found = catalog.find_by_sha256(sha256)
    if found is None:
        found = archived_record(wiring.archive_store(settings), sha256)
        if found is not None:
            found = catalog_record(catalog, found, detail="found in the bucket by a later pass")
    return found


def _read_in_reader(source: SourcePage, engine: str) -> tuple[PreparedPage, Page]:
    from kiroku.process import _read_page

    return _read_page(source, engine)


@task(name="read page", task_run_name="read page {source.index}", cache_policy=NO_CACHE)
def read_page(source: SourcePage, settings: Settings, label: str) -> tuple[PreparedPage, Page]:
    """One page in a warm reader process (kiroku/readers.py); ReaderCrashed if it dies or hangs."""
    from kiroku.readers import page_time_limit, shared_pool

    limit = page_time_limit(source, settings.reader_time_limit, settings.reader_time_limit_per_mpx)
    pool = shared_pool(settings)
    with global_ocr_slot(pool.size):  # across machines, when KIROKU_OCR_GLOBAL_LIMIT is set
        return pool.submit(_read_in_reader, source, settings.ocr_engine, time_limit=limit,
                           label=f"{label} p{source.index + 1}").result()


@task(name="extract metadata and write PDF/A", cache_policy=NO_CACHE)
def extract_and_write_pdfa(record: Record, pages: list[tuple[PreparedPage, Page]], pdf_path: Path,
                           settings: Settings) -> Record:
    """Metadata, retention and the PDF/A, in one reader job as `kiroku process` does: image
    encoding and validation would otherwise hold this process's GIL, and one job instead of two
    spares a wait in the readers' queue and a task's worth of events on the Prefect server."""
    from kiroku.readers import shared_pool

    return shared_pool(settings).submit(document.finish_document, record, pages, pdf_path,
                                        settings.extract_options, time_limit=settings.reader_time_limit * 2,
                                        label=f"{record.source.filename} (metadata, PDF/A)").result()


def _transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry only faults that can go away: storage (network, 5xx, throttling) or the catalog's
    database (locked, connection lost). Storing again is safe: store_record finds what an
    earlier try committed, and cataloguing is an upsert."""
    from sqlalchemy.exc import OperationalError

    from processors.archive.storage import TransientStorageError

    try:
        state.result()
    except (TransientStorageError, OperationalError):
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


@task(name="store and catalog", cache_policy=NO_CACHE, retries=4,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_condition_fn=_transient)
def store_and_catalog(record: Record, pdf_path: Path, original: Path, settings: Settings) -> Record:
    """Store the three objects locked and read them back, then catalog the record: one task,
    since the two share one retry story (both idempotent) and a task fewer is three state
    events fewer on the Prefect server per document."""
    from processors.archive.archiving import catalog_record, store_record

    stored = store_record(wiring.archive_store(settings), record, pdf_path, original)
    catalog_record(wiring.catalog(settings), stored)
    return stored


def move_to_done(path: Path, department: str | None, settings: Settings) -> ledger.Outcome:
    """Take the scan out of the inbox (a plain step, like find_earlier_copy). done/ full: the
    scan stays in the inbox and the ledger hands it over again later."""
    return ledger.finish(path, department, settings)


@task(name="quarantine scan", cache_policy=NO_CACHE)
def quarantine_scan(path: Path, department: str | None, exc: BaseException, settings: Settings) -> ledger.Outcome:
    # by failure kind: quarantine, or keep in the inbox and retry later (processors/archive/ledger.py)
    return ledger.settle_failure(path, department, exc, settings)


# --------------------------------------------------------------------------- flows


def _results_not_kept() -> dict:
    """Flow options for runs whose outcome lives in the archive and the catalog, not in Prefect.

    Without a result storage and persist_result of its own, a flow run asks the server for
    its default result storage three times before it starts (GET /admin/storage: three of
    about 30 requests per one-page document, bench/scale_out.py with the server's access log).
    Nothing is persisted, so Prefect's own local storage path is named (as a Path: a block
    would have to be saved on the server first) and never written."""
    from prefect.settings import get_current_settings

    return {"persist_result": False, "result_storage": Path(get_current_settings().results.local_storage_path)}


@flow(name="ingest-document", flow_run_name=_document_run_name, log_prints=False,
      task_runner=ThreadPoolTaskRunner(max_workers=max(2, usable_cpu_count())), **_results_not_kept())
def ingest_document(path: str, department: str | None = None, move_source: bool = True) -> dict:
    """Archive one scan: read it, store it locked, catalog it; only then let it leave the inbox.

    A scan that cannot be archived goes to quarantine with a reason file, and the
    run fails with that reason so the operator sees it in the Prefect UI.
    """
    settings = load_settings()
    logger = get_run_logger()
    source = decode_path(path)  # a Shift_JIS name travels base64 (processors/archive/names.py)
    shown = display_name(source.name)
    department = inbox.safe_department(department)
    label = f"{department}/{shown}" if department else shown
    t0 = time.monotonic()
    _progress(source, department, "received")
    try:
        inbox.refuse_link(source)  # never read through a link
        if move_source:
            ledger.mark_running(source, settings=settings, flow_run_id=flow_run.get_id())
        loaded = load_scan(source, settings)
        if move_source:
            ledger.ledger_for(settings).note_content(source, loaded.sha256)
        with content_lock(settings.home, loaded.sha256):  # archived? -> store -> catalog, one pass per content
            earlier = find_earlier_copy(loaded.sha256, settings)
            if earlier is not None:
                logger.info("%s is already archived as %s (same SHA-256); not archiving it twice",
                            shown, earlier.id)
                if move_source:
                    move_to_done(source, department, settings)
                _progress(source, department, "duplicate", id=earlier.id)
                return {"id": earlier.id, "duplicate": True,
                        "key": earlier.archive.key if earlier.archive else None}

            record = document.start_record(loaded, department=department)
            _progress(source, department, "reading", pages=len(loaded.pages))
            futures = read_page.map(loaded.pages, settings=unmapped(settings), label=unmapped(label))
            del loaded
            pages = futures.result()
            work = settings.home / "work" / record.id
            work.mkdir(parents=True, exist_ok=True)
            pdf_path = work / "document.pdf"
            # quote(): Prefect would otherwise walk every line and word of the OCR result looking
            # for futures to resolve (9 % of the worker's CPU under py-spy)
            record = extract_and_write_pdfa(quote(record), quote(pages), pdf_path, settings)
            del pages
            _progress(source, department, "storing")
            record = store_and_catalog(quote(record), pdf_path, source, settings)
    except Exception as exc:
        reason = readable(str(exc) or type(exc).__name__)  # a Shift_JIS name in it would break the API's JSON
        logger.error("could not archive %s: %s", shown, reason)
        what = "The scan was left where it was (not moved)."
        step, detail = "left", {"reason": reason}
        if move_source and os.path.lexists(source):
            outcome = quarantine_scan(source, department, exc, settings)
            logger.error("%s", outcome.message)  # says "quarantined" only when it was
            what = outcome.message
            step = "quarantined" if outcome.action == "quarantined" else (
                "kept" if outcome.action == "retry" else "left")
            detail = {"reason": reason, "attempt": outcome.attempts,
                      "retry_at": dt.datetime.fromtimestamp(outcome.retry_at, dt.timezone.utc).isoformat()
                      if outcome.retry_at else None}
        _progress(source, department, step, **detail)
        create_markdown_artifact(
            key="kiroku-failed", description=f"Not archived: {shown}",
            markdown=f"## Not archived: {shown}\n\n**Reason:** {reason}\n\n{what}",
        )
        if isinstance(exc, KirokuFailure):
            # an expected condition (a refused scan, storage down, a reader that died): the run is
            # Failed with its reason and the caller gets the exception, but no traceback is logged
            return Failed(message=f"{shown}: {reason}", data=exc)  # type: ignore[return-value]
        raise
    if move_source:
        move_to_done(source, department, settings)
    _clean_work(pdf_path)
    create_markdown_artifact(key="kiroku-record", markdown=record_markdown(record),
                             description=f"Archived {shown} as {record.id}")
    logger.info("archived %s as %s at s3://%s/%s", shown, record.id,
                record.archive.bucket, record.archive.key)
    _progress(source, department, "archived", id=record.id, pages=len(record.pages),
              seconds=round(time.monotonic() - t0, 1), warnings=_warnings(record))
    return {"id": record.id, "duplicate": False, "key": record.archive.key}


def keep_prefect_client() -> None:
    """For a long-lived thread that runs flow after flow: one Prefect API client for the thread's
    life. Otherwise each flow run builds its own (an httpx client and an SSL context with the CA
    bundle: 8 % of the worker's CPU under py-spy). Prefect's engine reuses the client it finds in
    the thread's context (SyncClientContext.get_or_create); it is closed when the process ends."""
    from prefect.context import SyncClientContext

    SyncClientContext().__enter__()


def run_here_without_heartbeats() -> None:
    """Thread initializer for `make run`'s worker, whose flow runs execute in its own threads:
    one Prefect client per thread (keep_prefect_client), and no flow-run heartbeats.

    A heartbeat thread per run emits an event at its start and, at its end, is joined for up
    to a second (it sleeps in one-second steps): a run thread idle for that long while scans
    wait. Heartbeats serve to find runs whose process died; here the watcher's ledger does
    that itself and sets such runs Crashed (flows/watch.py, mark_run_crashed). Runs on a pool
    worker of another machine keep Prefect's heartbeats."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    keep_prefect_client()
    # temporary_settings is a generator context manager: entered and dropped, it is closed at
    # once by the garbage collector, which restores the settings (heartbeats stayed on that way).
    # Held by the thread, it lasts as long as the thread.
    held = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    held.__enter__()
    _THREAD_SETTINGS.held = held


_THREAD_SETTINGS = threading.local()  # what run_here_without_heartbeats entered, per thread


def _warnings(record: Record) -> list[str]:
    """Page warnings a person should look at, e.g. 'p2: ink_but_no_text'."""
    return [f"p{p.index + 1}: {w}" for p in record.pages for w in p.warnings]


def _clean_work(pdf_path: Path) -> None:
    pdf_path.unlink(missing_ok=True)
    try:
        pdf_path.parent.rmdir()
    except OSError:
        pass


def ingest_many(paths: list[Path], department: str | None, *, move_source: bool = True,
                workers: int | None = None, on_done: Callable[[Path, dict | BaseException], None] | None = None) -> list:
    """Run one ingest-document flow per scan, a few at once; pages share the OCR slots."""
    workers = workers or local_slot_count()
    start_ephemeral_server_once()

    def one(p: Path):
        try:
            result = ingest_document(encode_path(p), department, move_source)
        except BaseException as exc:  # noqa: BLE001 - reported per file, the batch goes on
            result = exc
        if on_done:
            on_done(p, result)
        return result

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest", initializer=keep_prefect_client) as pool:
        results = list(pool.map(one, paths))
    return results


@flow(name="ingest-batch", log_prints=False, **_results_not_kept())
def ingest_batch(paths: list[str], department: str | None = None, move_source: bool = True) -> dict:
    """Archive many scans, each as its own ingest-document run; OCR is limited to one page per core."""
    results = ingest_many([Path(p) for p in paths], department, move_source=move_source)
    failed = [str(p) for p, r in zip(paths, results) if isinstance(r, BaseException)]
    get_run_logger().info("archived %d of %d scans", len(paths) - len(failed), len(paths))
    return {"archived": len(paths) - len(failed), "failed": failed}


def record_markdown(record: Record) -> str:
    """What an operator sees on a completed run: what the document is and where it lies."""
    md, ret, arc = record.metadata, record.retention, record.archive
    rows = [
        ("記録ID", record.id),
        ("ファイル", record.source.filename),
        ("部署", record.source.department or "-"),
        ("文書種別", md.document_type or "-"),
        ("件名", md.title or "-"),
        ("文書番号", md.document_number or "-"),
        ("日付", md.document_date_text or (md.document_date.isoformat() if md.document_date else "-")),
        ("発信者", md.issuer or "-"),
        ("宛先", md.addressee or "-"),
        ("保存期間", f"{ret.period} ({ret.disposition})" if ret else "-"),
        ("満了日", str(ret.expiry_date) if ret and ret.expiry_date else "-"),
        ("格納先", f"s3://{arc.bucket}/{arc.key}" if arc else "-"),
        ("SHA-256", arc.sha256 if arc else "-"),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = f"## {md.title or record.source.filename}\n\n| 項目 | 値 |\n|---|---|\n{body}\n"
    if warns := _warnings(record):
        text += ("\n**確認してください / please check:** " + ", ".join(warns)
                 + "\n\n(`ink_but_no_text`: 画像にインクがあるのに文字が読めませんでした / "
                   "the page has ink but no text was read)\n")
    return text
