"""The `kiroku` command: process, ingest, watch, search, show, get, services, run, extract, retention, register.

Prefect is imported only inside the commands that need it, after `prepare_prefect`
has pointed it at var/prefect and the right server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kiroku.config import Settings, load_settings

app = typer.Typer(help="kiroku (記録): scanned Japanese records in, searchable locked PDF/A archive out.",
                  no_args_is_help=True, add_completion=False)
services_app = typer.Typer(help="The embedded S3 (SeaweedFS) and Prefect server under ./var.", no_args_is_help=True)
retention_app = typer.Typer(help="Retention (保存期間) of archived records.", no_args_is_help=True)
register_app = typer.Typer(help="The 行政文書ファイル管理簿 (register of administrative document files).",
                           no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(retention_app, name="retention")
app.add_typer(register_app, name="register")
catalog_app = typer.Typer(help="The catalog (目録): an index of the archive bucket.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
from kiroku.webcli import serve as _serve, users_app  # noqa: E402 - the web app's commands

app.add_typer(users_app, name="users")
app.command("serve")(_serve)

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _settings(*, need_home: bool = False, need_storage: bool = False) -> Settings:
    """The settings; with need_home/need_storage, one plain line and exit 1 when the data folder
    is missing or storage does not answer (rather than an empty catalog or a traceback)."""
    from kiroku.config import missing_home_message

    settings = load_settings()
    if need_home and (message := missing_home_message(settings)):
        err.print(f"[red]{message}")
        raise typer.Exit(1)
    if need_storage:
        from kiroku import services

        if not services.s3_answers(settings):
            how = "`kiroku services up` か `make run` で起動してください" if settings.embedded_s3 else "管理者に連絡してください"
            err.print(f"[red]保存先ストレージが応答しません。{how} (storage at {settings.s3_url} is not answering)")
            raise typer.Exit(3)
    return settings


def _prefect(settings: Settings, *, require_server: bool = False) -> str | None:
    from kiroku.runtime import prepare_prefect

    return prepare_prefect(settings, require_server=require_server)


def _shown(path: Path) -> str:
    """A path as a person reads it (a Shift_JIS name decoded), safe to print."""
    from rich.markup import escape

    from processors.archive.names import display_path

    return escape(display_path(path))


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


# --------------------------------------------------------------------------- reading


@app.command()
def process(
    inputs: Annotated[list[Path], typer.Argument(help="scans: PNG, JPEG, TIFF or PDF", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for <stem>.pdf and <stem>.json")],
    engine: Annotated[Optional[str], typer.Option(help="OCR engine: tesseract, rapidocr or auto")] = None,
    workers: Annotated[Optional[int], typer.Option(help="pages read at once (default: one per core)")] = None,
) -> None:
    """Read scans into searchable PDF/A files and record JSON, without storing them."""
    from kiroku.process import process_files

    settings = _settings()
    failed = 0
    with _progress() as bar:
        job = bar.add_task("reading", total=len(inputs))

        def done(outcome) -> None:
            nonlocal failed
            bar.advance(job)
            if outcome.error:
                failed += 1
                err.print(f"[red]✗ {_shown(outcome.input)}: {outcome.error}")
            elif outcome.pdf is not None:  # which output is whose: 001.jpg and 001.png do not share one
                err.print(f"✓ {_shown(outcome.input)} → {_shown(outcome.pdf)}", highlight=False)
                if outcome.record is not None:
                    from processors.document import describe_warning

                    for page in outcome.record.pages:
                        for code in page.warnings:
                            err.print(f"[yellow]⚠ {_shown(outcome.input)} {page.index + 1}ページ目: "
                                      f"{describe_warning(code)}", highlight=False)

        process_files(list(inputs), out, settings, engine=engine, workers=workers, on_done=done)
    err.print(f"{len(inputs) - failed} of {len(inputs)} read into {out}")
    raise typer.Exit(1 if failed else 0)


@app.command()
def extract(
    textfiles: Annotated[list[Path], typer.Argument(help="plain UTF-8 text; pages separated by form feeds",
                                                    exists=True, dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    start_rule: Annotated[Optional[str], typer.Option(help="起算日 rule: fiscal, calendar or completion "
                                                            "(default: the configured one, else fiscal)")] = None,
) -> None:
    """Metadata, personal data, classification and retention from text, without OCR."""
    from processors.records.extract import extract_from_text

    options = _settings().extract_options
    if start_rule:
        options["start_rule"] = start_rule
    results = []
    for path in textfiles:
        result = extract_from_text(path.read_text(encoding="utf-8"), **options)
        results.append({
            "file": str(path),
            "metadata": result.metadata.model_dump(mode="json"),
            "pii": [p.model_dump(mode="json") for p in result.pii],
            "classification": result.classification,
            "retention": result.retention.model_dump(mode="json") if result.retention else None,
        })
    if as_json:
        print(json.dumps(results if len(results) > 1 else results[0], ensure_ascii=False, indent=1))
        return
    for r in results:
        table = Table(title=r["file"], show_header=False)
        for key, value in r["metadata"].items():
            if key != "evidence":
                table.add_row(key, "" if value is None else str(value))
        table.add_row("classification", r["classification"] or "")
        if r["retention"]:
            ret = r["retention"]
            table.add_row("retention", f"{ret['period']} {ret['disposition']} "
                                       f"{ret['start_date'] or ''} → {ret['expiry_date'] or ''} ({ret['rule']})")
        for p in r["pii"]:
            table.add_row(f"pii:{p['type']}", p["value"])
        console.print(table)


# --------------------------------------------------------------------------- archiving


@app.command()
def ingest(
    inputs: Annotated[list[Path], typer.Argument(help="scans to archive")],
    department: Annotated[Optional[str], typer.Option("--department", "-d", help="e.g. 総務課")] = None,
    move: Annotated[bool, typer.Option(help="move each scan to var/done (or var/quarantine) afterwards")] = False,
) -> None:
    """Process, store and catalog scans: one Prefect flow run per document."""
    from processors.archive import inbox

    try:
        department = inbox.safe_department(department)
    except inbox.DepartmentRefused as exc:
        err.print(f"[red]{exc}", highlight=False)
        raise typer.Exit(2) from exc
    settings = _settings()
    failed = 0
    # checked here, not by typer's exists=True (which follows links): a link is refused, never read
    paths = []
    for p in inputs:
        if inbox.is_link(p):
            failed += 1
            where, why = "", inbox.link_refusal(p)
            if move:
                dest = inbox.quarantine_link(Path(os.path.abspath(p)), settings.quarantine_dir, department)
                where = f" 隔離フォルダに移しました: {_shown(dest)}"
            err.print(f"[red]✗ {_shown(p)}: {why}{where}", highlight=False)
        elif not p.is_file():
            failed += 1
            err.print(f"[red]✗ {_shown(p)}: ファイルが見つかりません (no such file)", highlight=False)
        else:
            paths.append(Path(os.path.abspath(p)))  # abspath, not resolve(): names stay as given
    if not paths:
        raise typer.Exit(1)
    _settings(need_storage=True)  # links and missing files are refused above without storage
    _prefect(settings)
    from flows.ingest import ingest_many

    with _progress() as bar:
        job = bar.add_task("archiving", total=len(paths))

        def done(path: Path, result) -> None:
            nonlocal failed
            bar.advance(job)
            if isinstance(result, BaseException):
                failed += 1
                err.print(f"[red]✗ {_shown(path)}: {result}", highlight=False)
            else:
                note = " (already archived)" if result.get("duplicate") else ""
                err.print(f"[green]✓ {_shown(path)} → {result['id']}{note}", highlight=False)

        ingest_many(paths, department, move_source=move, on_done=done)
    raise typer.Exit(1 if failed else 0)


@app.command()
def watch(
    inbox: Annotated[Optional[Path], typer.Argument(help="the watch folder (default ./inbox)")] = None,
    settle: Annotated[float, typer.Option(help="seconds a file must stay unchanged before it is read")] = 2.0,
    via_deployment: Annotated[bool, typer.Option(help="start runs of the served deployment (`kiroku worker`) "
                                                      "instead of running them here with warm readers")] = False,
) -> None:
    """Watch the inbox: every complete scan becomes an ingest-document flow run."""
    settings = _settings()
    if inbox is not None:
        settings = load_settings(inbox=inbox)
    api = _prefect(settings)
    from flows.watch import watch_inbox

    err.print(f"watching {settings.inbox} (sub-folders are departments); Ctrl-C stops")
    watch_inbox(settings, settle_seconds=settle, use_deployment=via_deployment and api is not None)


@app.command()
def search(
    text: Annotated[Optional[str], typer.Argument(help="words in the title or text (two characters are enough)")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", help="document type, e.g. 通知")] = None,
    number: Annotated[Optional[str], typer.Option(help="文書番号")] = None,
    issuer: Annotated[Optional[str], typer.Option(help="part of the issuer")] = None,
    from_: Annotated[Optional[dt.datetime], typer.Option("--from", formats=["%Y-%m-%d"], help="dated on or after")] = None,
    to: Annotated[Optional[dt.datetime], typer.Option("--to", formats=["%Y-%m-%d"], help="dated on or before")] = None,
    fiscal_year: Annotated[Optional[int], typer.Option(help="年度, e.g. 2025 for 令和7年度")] = None,
    department: Annotated[Optional[str], typer.Option(help="e.g. 総務課")] = None,
    limit: Annotated[int, typer.Option(help="at most this many results")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find archived records by metadata and full text."""
    from kiroku import wiring
    from processors.archive import query

    # the web app's search, at the highest clearance: the CLI is the operator's, at the archive's own machine
    try:
        result = query.search(wiring.catalog(_settings(need_home=True)), query.SearchQuery(
            text=text, document_type=type_, number=number, issuer=issuer,
            date_from=from_.date() if from_ else None, date_to=to.date() if to else None,
            fiscal_year=fiscal_year, department=department, per_page=max(1, min(limit, 500))),
            query.CLEARANCES[-1], facets=False, mask=False)
    except query.QueryError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    hits = result.hits
    if as_json:
        print(json.dumps([{**dataclasses.asdict(h), "snippet": "".join(t for t, _ in h.snippet)} for h in hits],
                         ensure_ascii=False, indent=1, default=str))
        return
    if not hits:
        err.print("no records found")
        raise typer.Exit(1)
    for h in hits:
        head = "  ".join(x for x in (str(h.document_date or "----------"), h.document_type or "", h.document_number or "",
                                     h.title or "") if x)
        console.print(f"[bold]{h.record_id}[/bold]  {head}")
        who = "  ".join(x for x in (h.issuer, h.department) if x)
        if who:
            console.print(f"    {who}")
        if h.snippet:
            shown = "".join(f"[bold yellow]{escape(t)}[/bold yellow]" if hit else escape(t) for t, hit in h.snippet)
            console.print(f"    [dim]{' '.join(shown.split())}[/dim]")
    more = f" of {result.total}" if result.total > len(hits) else ""
    err.print(f"{len(hits)}{more} record(s); `kiroku show ID` for details, `kiroku get ID -o FILE` for the PDF/A")


@app.command()
def show(record_id: Annotated[str, typer.Argument(help="record id (from `kiroku search`)")],
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Everything kiroku knows about one record."""
    from kiroku import wiring

    record = wiring.catalog(_settings(need_home=True)).get(record_id)
    if record is None:
        err.print(f"no record {record_id}")
        raise typer.Exit(1)
    if as_json:
        print(record.model_dump_json(indent=1, exclude={"pages": {"__all__": {"lines"}}}))
        return
    md, ret, arc = record.metadata, record.retention, record.archive
    table = Table(title=f"{record.id}  {md.title or record.source.filename}", show_header=False)
    for key, value in md.model_dump(exclude={"evidence"}).items():
        table.add_row(key, "" if value is None else str(value))
    table.add_row("department", record.source.department or "")
    table.add_row("source", f"{record.source.filename} ({record.source.bytes} bytes, sha256 {record.source.sha256[:16]}…)")
    table.add_row("pages", str(len(record.pages)))
    table.add_row("classification", record.classification or "")
    if ret:
        table.add_row("retention", f"{ret.period} → {ret.disposition}; 起算日 {ret.start_date or '-'}; "
                                   f"満了日 {ret.expiry_date or '-'}{'; legal hold' if ret.legal_hold else ''}")
    if arc:
        table.add_row("archive", f"s3://{arc.bucket}/{arc.key} (version {arc.version_id}, PDF/A-{arc.pdfa})")
    for p in record.pii:
        table.add_row(f"pii:{p.type}", p.value)
    console.print(table)


@app.command()
def get(record_id: Annotated[str, typer.Argument(help="record id")],
        output: Annotated[Path, typer.Option("-o", "--output", help="where to write the PDF/A")],
        original: Annotated[bool, typer.Option(help="fetch the original scan instead of the PDF/A")] = False) -> None:
    """Download a record's PDF/A (or original scan) from storage, verifying its SHA-256."""
    from kiroku import wiring
    from processors.archive.archiving import fetch_verified

    settings = _settings(need_home=True, need_storage=True)
    record = wiring.catalog(settings).get(record_id)
    if record is None or record.archive is None:
        err.print(f"no archived record {record_id}")
        raise typer.Exit(1)
    data = fetch_verified(wiring.archive_store(settings), record, original=original)
    output.write_bytes(data)
    err.print(f"wrote {output} ({len(data)} bytes, SHA-256 verified)")


# --------------------------------------------------------------------------- retention and register


@retention_app.command("due")
def retention_due(on: Annotated[Optional[dt.datetime], typer.Option(formats=["%Y-%m-%d"],
                                                                       help="date to check (default today)")] = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Records whose retention has expired by a date, split into 移管 (transfer) and 廃棄 (destroy)."""
    from kiroku import wiring

    day = on.date() if on else dt.date.today()
    records = wiring.catalog(_settings(need_home=True)).due_for_disposition(day)
    groups: dict[str, list] = {"移管": [], "廃棄": []}
    for r in records:
        groups.setdefault(r.retention.disposition, []).append({
            "id": r.id, "title": r.metadata.title, "document_type": r.metadata.document_type,
            "expiry_date": str(r.retention.expiry_date) if r.retention.expiry_date else None,
            "period": r.retention.period,
            "location": f"s3://{r.archive.bucket}/{r.archive.key}" if r.archive else None})
    if as_json:
        print(json.dumps({"on": day.isoformat(), **groups}, ensure_ascii=False, indent=1))
        return
    for disposition, rows in groups.items():
        table = Table("ID", "満了日", "保存期間", "種別", "件名", "保存場所", title=f"{disposition} ({len(rows)})")
        for row in rows:
            table.add_row(row["id"], row["expiry_date"] or "", row["period"], row["document_type"] or "",
                          row["title"] or "", row["location"] or "")
        console.print(table)


@retention_app.command("extend")
def retention_extend(
    record_id: Annotated[str, typer.Argument(help="record id")],
    period: Annotated[Optional[str], typer.Option(help="new 保存期間, e.g. 10年 or 永年")] = None,
    until: Annotated[Optional[dt.datetime], typer.Option(formats=["%Y-%m-%d"], help="new 満了日")] = None,
) -> None:
    """延長: lengthen a record's retention; the stored objects' locks move with it. Shortening is refused."""
    from kiroku import wiring
    from processors.archive.archiving import extend_stored_retention
    from processors.archive.storage import StorageError

    if (period is None) == (until is None):
        err.print("give exactly one of --period or --until")
        raise typer.Exit(2)
    settings = _settings(need_home=True, need_storage=True)
    catalog = wiring.catalog(settings)
    record = catalog.get(record_id)
    if record is None:
        err.print(f"no record {record_id}")
        raise typer.Exit(1)
    try:
        record = extend_stored_retention(wiring.archive_store(settings), record, period,
                                         until.date() if until else None)
    except (ValueError, StorageError) as exc:  # shortening refused by the schedule logic or by the server
        err.print(f"[red]refused: {exc}")
        raise typer.Exit(1) from exc
    catalog.add(record)
    ret = record.retention
    err.print(f"{record.id}: {ret.period}, 満了日 {ret.expiry_date or '-'}{' (legal hold)' if ret.legal_hold else ''}")


@register_app.command("export")
def register_export(output: Annotated[Path, typer.Option("-o", "--output", help="CSV file to write")],
                    fiscal_year: Annotated[Optional[int], typer.Option(help="年度 to export (default all)")] = None) -> None:
    """Write the 行政文書ファイル管理簿 as CSV (UTF-8 with BOM, so Excel opens it)."""
    from kiroku import wiring
    from processors.archive.catalog import write_register_csv

    rows = wiring.catalog(_settings(need_home=True)).register_rows(fiscal_year)
    write_register_csv(rows, output)
    err.print(f"wrote {len(rows)} rows to {output}")


# --------------------------------------------------------------------------- proving the archive


@app.command()
def verify(as_json: Annotated[bool, typer.Option("--json", help="machine-readable report on stdout")] = False,
           update_catalog: Annotated[bool, typer.Option(help="record a `verified` event in the catalog")] = True
           ) -> None:
    """Re-read every stored object and check its SHA-256 against record.json (exit 1 on any problem)."""
    from kiroku import wiring
    from processors.archive.fixity import verify_archive
    from processors.archive.storage import TransientStorageError

    settings = _settings()
    try:
        report = verify_archive(wiring.archive_store(settings),
                                catalog=wiring.catalog(settings) if update_catalog else None)
    except TransientStorageError as exc:
        err.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=1, default=str))
    else:
        for f in report.findings:
            err.print(f"[red]{f.kind}[/red] {f.record_id or '-'} {f.key} {f.version_id or ''}: {f.detail}")
        if report.uncatalogued:
            err.print(f"目録に未登録の記録: {', '.join(report.uncatalogued[:20])}"
                      f"{' …' if len(report.uncatalogued) > 20 else ''} (`kiroku catalog rebuild`)")
    err.print(("[green]" if report.ok else "[red]") + report.summary())
    raise typer.Exit(0 if report.ok else 1)


@catalog_app.command("rebuild")
def catalog_rebuild() -> None:
    """Recreate the catalog from the bucket alone (the newest record.json of each record)."""
    from kiroku import wiring
    from processors.archive.archiving import rebuild_catalog
    from processors.archive.catalog import Catalog

    settings = _settings()
    store = wiring.archive_store(settings)
    with Catalog(settings.catalog) as catalog:
        count = rebuild_catalog(store, catalog)
    err.print(f"目録を保管庫から再構築しました: {count} 件 (catalog rebuilt from s3://{store.bucket}: {count} records)")


# --------------------------------------------------------------------------- services


@services_app.command("up")
def services_up() -> None:
    """Start the embedded S3 and Prefect server in the background; returns once they answer."""
    from kiroku import services

    for st in services.up(_settings()):
        err.print(st.describe())


@services_app.command("down")
def services_down() -> None:
    """Stop the embedded services (safe to repeat)."""
    from kiroku import services

    for st in services.down(_settings()):
        err.print(st.describe())


@services_app.command("status")
def services_status() -> None:
    """Which embedded services are running, and where."""
    from kiroku import services

    settings = _settings()
    running = True
    s3_up = False
    for st in services.status(settings):
        running &= st.running
        s3_up |= st.name == services.WEED and (st.answering or not st.managed)
        err.print(st.describe())
    if s3_up:
        from kiroku.wiring import bucket_probe

        probe = bucket_probe(settings)
        err.print(probe.describe(settings.integrity) if probe else
                  f"保管方式: バケット {settings.bucket} はまだありません(最初の保存時に作成) "
                  f"(integrity {settings.integrity})")
    from kiroku.schedule import Scheduler

    for line in Scheduler(settings).status_lines():
        err.print(f"定期処理 (make run) {line}", highlight=False)
    raise typer.Exit(0 if running else 3)


@app.command()
def worker(
    pool: Annotated[Optional[str], typer.Option(help="take runs from this Prefect work pool (deploy/prefect.yaml), "
                                                     "as a worker machine of a shared server")] = None,
    name: Annotated[Optional[str], typer.Option(help="worker name shown in the Prefect UI (default: host name)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="flow runs at once on this machine (default: four per "
                                                      "reader when warm, one per core when cold)")] = None,
    cold: Annotated[bool, typer.Option("--cold", help="with --pool: Prefect's stock process worker, a fresh "
                                                      "process (and model load) per run")] = False,
) -> None:
    """Serve the ingest flows so that runs triggered in the Prefect UI or by the watcher get picked up.

    With --pool, take runs from a shared Prefect server's work pool: by default in this
    process, with readers that load the OCR models once (see kiroku/scaleout.py).
    """
    settings = _settings()
    _prefect(settings, require_server=True)
    if pool:
        from kiroku.scaleout import run_pool_worker, run_warm_worker

        if cold:
            raise typer.Exit(run_pool_worker(settings, pool, name=name, limit=limit))
        raise typer.Exit(run_warm_worker(settings, pool, name=name, limit=limit))
    from flows.serve import serve_flows

    serve_flows()


@app.command()
def notify(off: Annotated[bool, typer.Option("--off", help="remove the notice")] = False) -> None:
    """Notify operators of failed or crashed runs: a Prefect automation posting to notify_webhook_url."""
    settings = _settings()
    _prefect(settings, require_server=True)
    from flows.notify import apply_failure_notice

    url = None if off else settings.notify_webhook_url
    if not off and not url:
        err.print("通知先が設定されていません: kiroku.toml の [prefect] notify_webhook_url か "
                  "KIROKU_NOTIFY_WEBHOOK_URL を設定してください (no webhook configured; notices stay off)")
        raise typer.Exit(2)
    apply_failure_notice(url)
    err.print("失敗・異常終了の通知を設定しました (notices on)" if url else "通知を止めました (notices off)")


@app.command()
def run() -> None:
    """Everything `make run` does: services, flow worker and the inbox watcher, until Ctrl-C."""
    from kiroku.supervise import run_all

    sys.exit(run_all(_settings(), echo=err.print))


if __name__ == "__main__":  # pragma: no cover
    app()
