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
                 received_at: dt.datetime | None = None, filename: str | None = None,
                 filename_bytes: str | None = None) -> Record:
    """The record as it is known before any page is read: where the scan came from.

    The file name is kept for people (NFC, a Shift_JIS name decoded) and, when the
    bytes on disk differ from that, as those bytes (processors/archive/names.py).
    """
    if filename is None:
        from processors.archive.names import display_name, name_bytes_b64

        filename, filename_bytes = display_name(loaded.path.name), name_bytes_b64(loaded.path.name)
    source = Source(
        filename=filename,
        filename_bytes=filename_bytes,
        sha256=loaded.sha256,
        bytes=loaded.bytes,
        format=loaded.format,
        department=department or None,
        received_at=received_at or dt.datetime.now(dt.timezone.utc).replace(microsecond=0),
    )
    from processors.archive.events import kiroku_agent, with_event

    record = Record(id=record_id_for(loaded.sha256), source=source)
    where = f"{source.department}/{source.filename}" if source.department else source.filename
    return with_event(record, "received", agent=kiroku_agent("intake"), at=source.received_at,
                      detail=f"{where} ({source.bytes} bytes, {source.format}, SHA-256 {source.sha256})")


def prepare_and_read(source: SourcePage, engine_name: str) -> tuple[PreparedPage, Page]:
    """Prepare one page and read it: the unit of work that runs one per core.

    Blank backs are kept (the archive shows every sheet) but never sent to OCR,
    which would only invent text from bleed-through.
    """
    from processors.reading.ocr import get_engine
    from processors.reading.prepare import prepare_page

    if source.pdf_lines is not None:
        # a born-digital PDF page whose own text is trustworthy: shown as rendered, read from the PDF
        prepared = as_shown(source)
        text = PageText(lines=list(source.pdf_lines), engine=PDF_TEXT_ENGINE)
    else:
        prepared = prepare_page(source)
        prepared.source_encoding = prepared.source_encoding or source.encoding
        text = PageText(engine="") if prepared.blank else get_engine(engine_name).read(prepared)
    carry_pdf_facts(source, prepared)
    return prepared, page_from(prepared, text)


PDF_TEXT_ENGINE = "pdf-text"  # Page.engine of a page whose text is the PDF's own
# below this similarity (0-100) between a scanner's text layer and kiroku's reading the
# two witnesses disagree, and the page says so (cmyk.pdf's layer decodes as 䴀甀氀...)
SOURCE_TEXT_MIN_SIMILARITY = 30.0


def as_shown(source: SourcePage) -> PreparedPage:
    """A page taken as the PDF shows it: no turn, no deskew (the PDF's text boxes must stay on it)."""
    import numpy as np

    lines = source.pdf_lines or []
    vertical = sum(1 for line in lines if line.vertical) > len(lines) / 2
    return PreparedPage(
        index=source.index, archive_image=source.image, ocr_image=np.zeros((1, 1), dtype=np.uint8), ocr_scale=1.0,
        dpi=max(1, int(round(source.dpi[0]))), rotation_deg=0, skew_deg=0.0,
        writing_mode="vertical" if vertical else "horizontal", blank=False, archive_jpeg=source.jpeg_bytes,
        source_encoding=source.encoding,
    )


def carry_pdf_facts(source: SourcePage, prepared: PreparedPage) -> None:
    """What the loader learnt from a PDF page that the archive and the record keep: its exact
    page size (turned with the page), its own text, its warnings."""
    if source.page_size_pt is not None:
        w, h = source.page_size_pt
        sw, sh = source.image.size
        if prepared.rotation_deg in (90, 270):
            w, h, sw, sh = h, w, sh, sw
        # deskewing grows the canvas (white corners): the page grows with it, at the same
        # resolution, so nothing is squeezed; an unchanged page keeps the input's size exactly
        aw, ah = prepared.archive_image.size
        prepared.page_size_pt = (w * aw / sw, h * ah / sh) if (aw, ah) != (sw, sh) else (w, h)
        prepared.user_unit = source.user_unit
    prepared.source_text = source.source_text
    prepared.warnings = list(source.warnings)


def page_from(prepared: PreparedPage, text: PageText) -> Page:
    """The page's entry in the record: geometry found while preparing it, and what was read."""
    width, height = prepared.archive_image.size
    return Page(
        source_text=prepared.source_text,
        warnings=page_warnings(prepared, text),
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
    )


# Page.warnings codes, as a records officer reads them (Japanese first, the code after)
WARNING_TEXT = {
    "ink_but_no_text": "インクがあるのに文字が読み取れませんでした。画像を確認してください",
    "pdf_text_unreadable": "PDFの文字情報が読めない（文字コードの対応がない）ため、画像から読み直しました",
    "source_text_differs": "スキャナーが付けた文字情報とkirokuの読み取りが大きく異なります",
}


def describe_warning(code: str) -> str:
    """One page warning for a person: the Japanese sentence, then the code."""
    text = WARNING_TEXT.get(code)
    return f"{text} ({code})" if text else code


def page_warnings(prepared: PreparedPage, text: PageText) -> list[str]:
    """What a person should look at on this page.

    ``ink_but_no_text``: the page is not blank (preparing it found ink) but reading found
    no text; an archive page must never be silently empty. ``source_text_differs``: the
    scanner's own text layer and kiroku's reading disagree (one of them is wrong).
    """
    warnings = list(prepared.warnings)
    read = text.text.strip()
    if not prepared.blank and not read and "ink_but_no_text" not in warnings:
        warnings.append("ink_but_no_text")
    if prepared.source_text and read and text.engine != PDF_TEXT_ENGINE:
        from rapidfuzz import fuzz

        a, b = "".join(prepared.source_text.split()), "".join(read.split())
        if fuzz.ratio(a, b) < SOURCE_TEXT_MIN_SIMILARITY:
            warnings.append("source_text_differs")
    return warnings


def with_pages(record: Record, pages: list[Page]) -> Record:
    """The record with its pages, and the document text joined by form feeds as the schema promises.

    Called once, when reading is done, so it also adds the `read` event (engines, page count).
    """
    from processors.archive.events import kiroku_agent, with_event

    ordered = sorted(pages, key=lambda p: p.index)
    record = record.model_copy(update={
        "pages": ordered,
        "text": FORM_FEED.join(p.text for p in ordered),
    })
    engines = sorted({p.engine for p in ordered if p.engine}) or ["none (blank pages)"]
    blank = sum(p.blank for p in ordered)
    return with_event(record, "read", agent=kiroku_agent("read"),
                      detail=f"{len(ordered)} page(s), {blank} blank; engine {', '.join(engines)}")


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
