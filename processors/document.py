"""The record-level stages: start a record from a loaded scan, read a page, assemble the document.

Each function takes the record (or one page) and returns a new one, so the same
functions serve `kiroku process` (plain parallel Python) and the Prefect flows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from processors.reading.pages import LoadedDocument, PageText, PreparedPage, SourcePage
from schemas.record import Page, Record, Source

FORM_FEED = "\f"


def record_id_for(sha256: str) -> str:
    """A record id derived from the scan's content: the same scan always gets the same id,
    which is what makes "already archived?" a lookup rather than a guess."""
    return sha256[:16]


def start_record(loaded: LoadedDocument, *, department: str | None = None,
                 received_at: dt.datetime | None = None, filename: str | None = None) -> Record:
    """The record as it is known before any page is read: where the scan came from."""
    source = Source(
        filename=filename or loaded.path.name,
        sha256=loaded.sha256,
        bytes=loaded.bytes,
        format=loaded.format,
        department=department or None,
        received_at=received_at or dt.datetime.now(dt.timezone.utc).replace(microsecond=0),
    )
    return Record(id=record_id_for(loaded.sha256), source=source)


def prepare_and_read(source: SourcePage, engine_name: str) -> tuple[PreparedPage, Page]:
    """Prepare one page and read it: the unit of work that runs one per core.

    Blank backs are kept (the archive shows every sheet) but never sent to OCR,
    which would only invent text from bleed-through.
    """
    from processors.reading.ocr import get_engine
    from processors.reading.prepare import prepare_page

    prepared = prepare_page(source)
    prepared.source_encoding = prepared.source_encoding or source.encoding
    text = PageText(engine="") if prepared.blank else get_engine(engine_name).read(prepared)
    return prepared, page_from(prepared, text)


def page_from(prepared: PreparedPage, text: PageText) -> Page:
    """The page's entry in the record: geometry found while preparing it, and what was read."""
    width, height = prepared.archive_image.size
    return Page(
        index=prepared.index,
        text="" if prepared.blank else text.text,
        blank=prepared.blank,
        skew_deg=round(float(prepared.skew_deg), 2),
        rotation_deg=int(prepared.rotation_deg) % 360,  # type: ignore[arg-type]
        writing_mode=prepared.writing_mode,  # type: ignore[arg-type]
        confidence=round(float(text.confidence), 1),
        dpi=int(round(prepared.dpi)),
        width_px=width,
        height_px=height,
        engine=text.engine or None,
        lines=[] if prepared.blank else text.lines,
        regions=[] if prepared.blank else text.regions,
        tables=[] if prepared.blank else text.tables,
    )


def with_pages(record: Record, pages: list[Page]) -> Record:
    """The record with its pages, and the document text joined by form feeds as the schema promises."""
    ordered = sorted(pages, key=lambda p: p.index)
    return record.model_copy(update={
        "pages": ordered,
        "text": FORM_FEED.join(p.text for p in ordered),
    })


def write_record_json(record: Record, path: Path) -> None:
    """record.json as the evaluation and archivists read it: UTF-8, Japanese kept readable."""
    path.write_text(record.model_dump_json(indent=1), encoding="utf-8")


def extract_metadata(record: Record, *, start_rule: str = "fiscal", schedule: str | None = None,
                     policy: str | None = None, types: str | None = None) -> Record:
    """Metadata, personal data, classification and retention read from the document's text.

    The word boxes go along so the extractor can use the letter's layout (issuer block
    right-aligned under the date, addressee at the left). The schedule, policy and type
    files default to those in schemas/; start_rule is the municipality's 起算日 rule.
    """
    from processors.records.extract import extract_from_text

    result = extract_from_text(record.text, pages=record.pages, start_rule=start_rule, schedule=schedule,
                               policy=policy, types=types)
    return record.model_copy(update={
        "metadata": result.metadata,
        "pii": result.pii,
        "classification": result.classification,
        "retention": result.retention,
    })


def write_archive_pdf(record: Record, pages: list[tuple[PreparedPage, Page]], pdf_path: Path) -> str:
    """The searchable PDF/A; returns the flavour it was validated as (never a silent downgrade)."""
    from processors.reading.pdfa import PdfInfo, write_archive_pdf as write_pdf

    md = record.metadata
    info = PdfInfo(title=md.title or record.source.filename, creator=md.issuer, date=md.document_date,
                   record_id=record.id, subject=md.document_type)
    by_index = {p.index: p for p in record.pages}
    ordered = sorted(pages, key=lambda pair: pair[0].index)
    return write_pdf([(prepared, by_index.get(prepared.index, page)) for prepared, page in ordered], pdf_path, info)


def finish_document(record: Record, pages: list[tuple[PreparedPage, Page]], pdf_path: Path,
                    extract_options: dict | None = None) -> Record:
    """Everything after reading, for `kiroku process`: assemble, extract, write the PDF/A."""
    record = with_pages(record, [page for _, page in pages])
    record = extract_metadata(record, **(extract_options or {}))
    write_archive_pdf(record, pages, pdf_path)
    return record
