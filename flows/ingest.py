"""Ingesting scans: one flow run per document, a task per stage.

The flow reads like the process a records officer would describe: load the scan;
under the lock for its content, ask whether it is archived already (catalog, then
bucket); read its pages in the warm reader processes; extract what it is; write
the PDF/A; store it locked; catalog it; and only then take it out of the inbox.
The work itself lives in processors/ and kiroku/readers.py.

A failure is handled by its kind (processors.archive.failures): a scan that can
never be archived goes to quarantine with a reason; one that met a passing fault
(storage down, disk full) stays in the inbox and is tried again later by itself;
one whose reader died or hung is tried again a bounded number of times. The
failure artifact says which of these really happened.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from kiroku import wiring
from kiroku.config import Settings, load_settings
from kiroku.runtime import start_ephemeral_server_once
from processors import document
from processors.archive import failures, inbox
from processors.archive.locks import content_lock
from processors.reading.pages import LoadedDocument, PreparedPage, SourcePage
from schemas.record import Page, Record

os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def _document_run_name() -> str:
    params = flow_run.parameters
    name = Path(params["path"]).name
    department = params.get("department")
    return f"{department}/{name}" if department else name


# --------------------------------------------------------------------------- progress
# Listeners told of each document's steps (received, reading, archived, quarantined,
# kept): the live terminal of `make run` is one. A listener must not raise.
Listener = Callable[[str, str, dict], None]
LISTENERS: list[Listener] = []


def _progress(source: Path, department: str | None, step: str, **detail: object) -> None:
    name = f"{department}/{source.name}" if department else source.name
    for listener in list(LISTENERS):
        try:
            listener(name, step, detail)
        except Exception:  # noqa: BLE001 - the terminal must never stop an ingest
            pass


# --------------------------------------------------------------------------- tasks


@task(name="load scan", cache_policy=NO_CACHE)
def load_scan(path: Path, settings: Settings) -> LoadedDocument:
    from processors.reading.images import load_document

    return load_document(path, max_pixels=settings.max_image_pixels, default_dpi=settings.default_dpi)


@task(name="find earlier copy", cache_policy=NO_CACHE)
def find_earlier_copy(sha256: str, settings: Settings) -> Record | None:
    """The catalog first (cheap), then the bucket, which is the authority (docs/archive-path.md §1):
    a record stored by a pass that crashed before cataloguing is found there and catalogued now."""
    earlier = wiring.catalog(settings).find_by_sha256(sha256)
    if earlier is not None:
        return earlier
    from processors.archive import archiving

    if not hasattr(archiving, "archived_record"):  # the storage branch brings it
        return None
    stored = archiving.archived_record(wiring.archive_store(settings), sha256)
    if stored is not None:
        wiring.catalog(settings).add(stored)
    return stored


def _read_in_reader(source: SourcePage, engine: str) -> tuple[PreparedPage, Page]:
    from kiroku.process import _read_page

    return _read_page(source, engine)


@task(name="read page", task_run_name="read page {source.index}", cache_policy=NO_CACHE, tags=["ocr"])
def read_page(source: SourcePage, settings: Settings, label: str) -> tuple[PreparedPage, Page]:
    """One page in a warm reader process; ReaderCrashed if that process dies or hangs."""
    from kiroku.readers import page_time_limit, shared_pool

    limit = page_time_limit(source, settings.reader_time_limit, settings.reader_time_limit_per_mpx)
    return shared_pool(settings).submit(_read_in_reader, source, settings.ocr_engine, time_limit=limit,
                                        label=f"{label} p{source.index + 1}").result()


@task(name="extract metadata", cache_policy=NO_CACHE)
def extract_metadata(record: Record, settings: Settings) -> Record:
    from kiroku.readers import shared_pool

    return shared_pool(settings).submit(_extract, record, settings.extract_options,
                                        time_limit=settings.reader_time_limit,
                                        label=f"{record.source.filename} (metadata)").result()


def _extract(record: Record, options: dict) -> Record:
    return document.extract_metadata(record, **options)


@task(name="write PDF/A", cache_policy=NO_CACHE)
def write_pdfa(record: Record, pages: list[tuple[PreparedPage, Page]], pdf_path: Path,
               settings: Settings) -> str:
    """In a reader too: image encoding and validation would otherwise hold this process's GIL."""
    from kiroku.readers import shared_pool

    return shared_pool(settings).submit(document.write_archive_pdf, record, pages, pdf_path,
                                        time_limit=settings.reader_time_limit * 2,
                                        label=f"{record.source.filename} (PDF/A)").result()


@task(name="store in archive", cache_policy=NO_CACHE)
def store_archive(record: Record, pdf_path: Path, original: Path, settings: Settings) -> Record:
    """No retries here: a storage fault is transient, so the scan stays in the inbox and the
    whole document is tried again later (a retry inside the run held a reader slot and gave
    up after ~31 s of outage, then quarantined for good)."""
    from processors.archive.archiving import store_record

    return store_record(wiring.archive_store(settings), record, pdf_path, original)


@task(name="catalog record", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def catalog_record(record: Record, settings: Settings) -> None:
    wiring.catalog(settings).add(record)


@task(name="move to done", cache_policy=NO_CACHE)
def move_to_done(path: Path, department: str | None, settings: Settings) -> Path:
    return inbox.move_to(path, settings.done_dir, department)


# --------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class Settled:
    """What became of a scan that was not archived this time."""

    kind: failures.FailureKind
    reason: str
    disposition: str  # "quarantined" | "kept" (in the inbox, for a retry) | "left" (not ours to move)
    where: Path | None = None
    attempt: int = 1
    retry_at: dt.datetime | None = None

    def markdown(self, name: str) -> str:
        if self.disposition == "quarantined":
            what = (f"隔離しました: `{self.where}`（理由は `{Path(str(self.where)).name}.error.txt`）\n\n"
                    f"Moved to quarantine with a reason file.")
        elif self.disposition == "kept":
            when = self.retry_at.astimezone().strftime("%H:%M:%S") if self.retry_at else "-"
            tries = (f"{self.attempt} 回目 / 最大 {failures.MAX_CRASH_ATTEMPTS} 回"
                     if self.kind == "crashed" else f"{self.attempt} 回目")
            what = (f"受付フォルダに残しました。{when} ごろ自動で再試行します（{tries}）。\n\n"
                    f"Kept in the inbox; tried again by itself at about {when} (attempt {self.attempt}).")
        else:
            what = "ファイルは移動していません。\n\nThe file was not moved (ingest without --move)."
        return f"## 保存できませんでした: {name}\n\n**理由 / reason:** {self.reason}\n\n{what}\n"


# transient faults: 30 s, 1, 2, 4 ... minutes, at most 10; a crashed read: again after 10 s
TRANSIENT_FIRST_DELAY = 30.0
TRANSIENT_MAX_DELAY = 600.0
CRASH_RETRY_DELAY = 10.0
_attempts: dict[tuple[str, str], int] = {}
_attempts_lock = threading.Lock()
# the last settlement per inbox path, for the watcher that handed the scan over
SETTLED: dict[str, Settled] = {}


def _settle_failure(path: Path, department: str | None, exc: BaseException, settings: Settings,
                    move_source: bool) -> Settled:
    """Decide what becomes of a scan that failed, by the failure's kind.

    Stand-in for processors.archive.ledger.settle_failure (the intake branch), which
    keeps the attempts in var/state/ so that a restart forgets nothing; this one keeps
    them in memory. When the ledger lands, this body becomes one call to it.
    """
    kind = failures.failure_kind(exc)
    reason = failures.describe(exc)
    if not move_source or not path.exists():
        return Settled(kind, reason, "left")
    key = (str(path), kind)
    with _attempts_lock:
        attempt = _attempts.get(key, 0) + 1
        _attempts[key] = attempt
    now = dt.datetime.now(dt.timezone.utc)
    if kind == "transient":
        delay = min(TRANSIENT_MAX_DELAY, TRANSIENT_FIRST_DELAY * 2 ** (attempt - 1))
        return Settled(kind, reason, "kept", attempt=attempt, retry_at=now + dt.timedelta(seconds=delay))
    if kind == "crashed" and attempt < failures.MAX_CRASH_ATTEMPTS:
        return Settled(kind, reason, "kept", attempt=attempt,
                       retry_at=now + dt.timedelta(seconds=CRASH_RETRY_DELAY))
    if kind == "crashed":
        reason = failures.japanese_reason(
            f"読み取り処理が {attempt} 回続けて異常終了したため隔離しました", reason)
    with _attempts_lock:
        for k in [k for k in _attempts if k[0] == str(path)]:
            del _attempts[k]
    return Settled(kind, reason, "quarantined", where=inbox.quarantine(
        path, settings.quarantine_dir, department, reason), attempt=attempt)


def _forget_attempts(path: Path) -> None:
    with _attempts_lock:
        for k in [k for k in _attempts if k[0] == str(path)]:
            del _attempts[k]


# --------------------------------------------------------------------------- flows


def _agent() -> str:
    from processors.archive.events import kiroku_agent

    return kiroku_agent("ingest-document")


def _leave_inbox(source: Path, department: str | None, settings: Settings, move_source: bool) -> None:
    if move_source and source.exists():
        move_to_done(source, department, settings)
    _forget_attempts(source)


@flow(name="ingest-document", flow_run_name=_document_run_name, log_prints=False,
      task_runner=ThreadPoolTaskRunner(max_workers=max(2, os.cpu_count() or 1)))
def ingest_document(path: str, department: str | None = None, move_source: bool = True) -> dict:
    """Archive one scan: read it, store it locked, catalog it; only then let it leave the inbox.

    A scan that fails is quarantined, kept for a retry or left alone according to the
    failure's kind; the run fails with the reason so the operator sees it in the UI.
    """
    from processors.archive.events import with_event

    settings = load_settings()
    logger = get_run_logger()
    source = Path(path)
    name = f"{department}/{source.name}" if department else source.name
    t0 = time.monotonic()
    pdf_path: Path | None = None
    _progress(source, department, "received")
    try:
        loaded = load_scan(source, settings)
        with content_lock(settings.home, loaded.sha256):
            earlier = find_earlier_copy(loaded.sha256, settings)
            if earlier is not None:
                logger.info("%s is already archived as %s (same SHA-256); not archiving it twice",
                            source.name, earlier.id)
                _leave_inbox(source, department, settings, move_source)
                _progress(source, department, "duplicate", id=earlier.id)
                create_markdown_artifact(
                    key="kiroku-record", markdown=f"## 保存済み: {name}\n\n同じ内容の記録 `{earlier.id}` が"
                    f"すでに保存されています。二重には保存しません。\n\nAlready archived as {earlier.id}.\n",
                    description=f"{source.name} is already archived as {earlier.id}")
                return {"id": earlier.id, "duplicate": True,
                        "key": earlier.archive.key if earlier.archive else None}

            record = document.start_record(loaded, department=department, filename=source.name)
            record = with_event(record, "received", agent=_agent(), detail=name, at=record.source.received_at)
            _progress(source, department, "reading", pages=len(loaded.pages))
            futures = read_page.map(loaded.pages, settings=unmapped(settings), label=unmapped(name))
            del loaded
            pages = futures.result()
            record = document.with_pages(record, [page for _, page in pages])
            record = with_event(record, "read", agent=_agent(), detail=f"{len(pages)} pages, {settings.ocr_engine}")
            record = extract_metadata(record, settings)
            work = settings.home / "work" / record.id
            work.mkdir(parents=True, exist_ok=True)
            pdf_path = work / "document.pdf"
            write_pdfa(record, pages, pdf_path, settings)
            del pages
            _progress(source, department, "storing")
            record = store_archive(record, pdf_path, source, settings)
            catalog_record(record, settings)
            _leave_inbox(source, department, settings, move_source)
    except Exception as exc:
        settled = _settle_failure(source, department, exc, settings, move_source)
        SETTLED[str(source)] = settled
        logger.error("could not archive %s (%s, %s): %s", name, settled.kind, settled.disposition, settled.reason)
        _progress(source, department, settled.disposition, reason=settled.reason, kind=settled.kind,
                  attempt=settled.attempt, retry_at=settled.retry_at.isoformat() if settled.retry_at else None)
        create_markdown_artifact(key="kiroku-failed", markdown=settled.markdown(name),
                                 description=f"Not archived: {source.name} ({settled.disposition})")
        raise
    finally:
        if pdf_path is not None:
            _clean_work(pdf_path)
    SETTLED.pop(str(source), None)
    create_markdown_artifact(key="kiroku-record", markdown=record_markdown(record),
                             description=f"Archived {source.name} as {record.id}")
    logger.info("archived %s as %s at s3://%s/%s", source.name, record.id,
                record.archive.bucket, record.archive.key)
    _progress(source, department, "archived", id=record.id, pages=len(record.pages),
              seconds=round(time.monotonic() - t0, 1), warnings=_warnings(record))
    return {"id": record.id, "duplicate": False, "key": record.archive.key}


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
    workers = workers or max(1, os.cpu_count() or 1)
    start_ephemeral_server_once()

    def one(p: Path):
        try:
            result = ingest_document(str(p), department, move_source)
        except BaseException as exc:  # noqa: BLE001 - reported per file, the batch goes on
            result = exc
        if on_done:
            on_done(p, result)
        return result

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        results = list(pool.map(one, paths))
    return results


@flow(name="ingest-batch", log_prints=False)
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
        ("頁数", str(len(record.pages))),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    md_text = f"## {md.title or record.source.filename}\n\n| 項目 | 値 |\n|---|---|\n{body}\n"
    if warns := _warnings(record):
        md_text += ("\n**確認してください / please check:** " + ", ".join(warns)
                    + "\n\n(`ink_but_no_text`: 画像にインクがあるのに文字が読めませんでした / "
                      "the page has ink but no text was read)\n")
    return md_text
