"""Stage "store": the PDF/A, the original scan and record.json into the locked archive bucket.

Every object is sent with its SHA-256, locked (Object Lock COMPLIANCE) until the
record's 満了日 and read back and verified before the record says it is stored.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from processors.archive.storage import ArchiveStore, keys_for
from schemas.record import Archive, Record

PDFA_FLAVOUR = "2b"
CONTENT_TYPES = {"pdf": "application/pdf", "png": "image/png", "jpeg": "image/jpeg", "tiff": "image/tiff"}
EXTENSIONS = {"pdf": "pdf", "png": "png", "jpeg": "jpg", "tiff": "tif"}


def lock_for(record: Record, today: dt.date) -> tuple[dt.date | None, bool]:
    """(retain-until date, legal hold) for a record.

    - a dated expiry locks until then; an expiry already past (an old paper record
      scanned late) still gets a lock until tomorrow, so nothing is stored unprotected,
      and `kiroku retention due` lists it at once;
    - 永年, 1年未満 (no expiry: destroyed only when a person decides it is no longer
      needed) and records whose date could not be read get a legal hold, which only
      an authorised person can lift.
    """
    ret = record.retention
    if ret is None or ret.legal_hold or ret.expiry_date is None:
        return None, True
    return max(ret.expiry_date, today + dt.timedelta(days=1)), False


def _ascii_metadata(record: Record) -> dict[str, str]:
    """A few searchable facts on the objects themselves; Japanese values are encoded by the store."""
    md = record.metadata
    values = {
        "record-id": record.id,
        "document-type": md.document_type,
        "title": md.title,
        "document-number": md.document_number,
        "document-date": md.document_date.isoformat() if md.document_date else None,
        "department": record.source.department,
        "source-filename": record.source.filename,
    }
    return {k: v for k, v in values.items() if v}


def store_record(store: ArchiveStore, record: Record, pdf_path: Path, original: Path,
                 *, now: dt.datetime | None = None) -> Record:
    """Store the three objects and return the record with its archive location filled in."""
    now = now or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    keys = keys_for(record.id, record.metadata.fiscal_year, EXTENSIONS.get(record.source.format, "bin"))
    retain_until, legal_hold = lock_for(record, now.date())
    meta = _ascii_metadata(record)

    original_obj = store.put_verified(keys.original, original, content_type=CONTENT_TYPES.get(record.source.format,
                                      "application/octet-stream"), metadata=meta,
                                      retain_until=retain_until, legal_hold=legal_hold)
    if original_obj.sha256 != record.source.sha256:
        raise ValueError(f"{record.source.filename} changed while it was being archived")
    pdf_obj = store.put_verified(keys.document, pdf_path, content_type="application/pdf", metadata=meta,
                                 retain_until=retain_until, legal_hold=legal_hold)
    archived = record.model_copy(update={"archive": Archive(
        bucket=store.bucket, key=keys.document, version_id=pdf_obj.version_id, sha256=pdf_obj.sha256,
        pdfa=PDFA_FLAVOUR, original_key=keys.original, original_version_id=original_obj.version_id,
        record_key=keys.record, stored_at=now, retain_until=retain_until)})
    store.put_verified(keys.record, archived.model_dump_json(indent=1).encode("utf-8"),
                       content_type="application/json; charset=utf-8", metadata=meta,
                       retain_until=retain_until, legal_hold=legal_hold)
    return archived


def fetch_verified(store: ArchiveStore, record: Record, *, original: bool = False) -> bytes:
    """The archived PDF/A (or original scan) as stored, checked against the SHA-256 on record."""
    arc = record.archive
    if arc is None:
        raise ValueError(f"record {record.id} is not archived")
    if original:
        return store.get_verified(arc.original_key, arc.original_version_id, expected_sha256=record.source.sha256)
    return store.get_verified(arc.key, arc.version_id, expected_sha256=arc.sha256)


def extend_stored_retention(store: ArchiveStore, record: Record, new_period: str | None = None,
                            new_expiry: dt.date | None = None) -> Record:
    """延長: lengthen a record's retention and move the Object Lock of every stored object with it.

    Shortening is refused twice over: by the schedule logic before anything is sent,
    and by the server (COMPLIANCE mode), which is the authority. A new record.json
    version is written; the earlier one stays locked as the history of the decision.
    """
    from processors.records.retention import extend_retention

    arc = record.archive
    if arc is None or record.retention is None:
        raise ValueError(f"record {record.id} is not archived with a retention")
    extended = record.model_copy(update={"retention": extend_retention(record.retention, new_period, new_expiry)})
    until, hold = lock_for(extended, dt.date.today())
    objects = [(arc.key, arc.version_id), (arc.original_key, arc.original_version_id)]
    for key, version in objects:
        if hold:
            store.set_legal_hold(key, version, True)
        elif until and until != arc.retain_until:
            store.extend_retention(key, version, until)
    extended = extended.model_copy(update={"archive": arc.model_copy(update={"retain_until": until})})
    store.put_verified(arc.record_key, extended.model_dump_json(indent=1).encode("utf-8"),
                       content_type="application/json; charset=utf-8", metadata=_ascii_metadata(extended),
                       retain_until=until, legal_hold=hold)
    return extended
