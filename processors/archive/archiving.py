"""Stage "store": the PDF/A, the original scan and record.json into the locked archive bucket.

Every object is sent with its SHA-256, locked (Object Lock COMPLIANCE) until the
record's 満了日 and read back and verified before the record says it is stored.

The bucket is the authority (docs/archive-path.md §1): `archived_record` asks it
whether a content is archived, `store_record` never writes a key twice (an earlier,
unfinished pass's versions are reused) and writes record.json last, as the commit
marker, and `rebuild_catalog` recreates the catalog from the record.json files alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from processors.archive.events import kiroku_agent, with_event
from processors.archive.storage import ArchiveStore, IntegrityError, keys_for, record_id_of_key
from processors.document import record_id_for
from schemas.record import Archive, Record

if TYPE_CHECKING:
    from processors.archive.catalog import Catalog

log = logging.getLogger(__name__)

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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _record_json(record: Record) -> bytes:
    return record.model_dump_json(indent=1).encode("utf-8")


def _read_record(store: ArchiveStore, key: str, version_id: str) -> Record:
    """One record.json version, checked against the SHA-256 it was stored with."""
    return Record.model_validate_json(store.get_verified(key, version_id))


def archived_record(store: ArchiveStore, sha256: str) -> Record | None:
    """The archived record of this content, read from the bucket (None if not archived).

    record.json is the commit marker: without it an original or document.pdf is an
    unfinished pass, not an archived record. With several record.json versions (a
    correction or 延長 adds one) the newest is the record. Only this layout
    (records/<id>/) is asked; records written under the older records/<fy>/<id>/
    layout are found through the catalog, which `rebuild_catalog` fills from both.
    """
    sha256 = sha256.strip().lower()
    keys = keys_for(record_id_for(sha256), "bin")
    versions = store.versions_of(keys.record)
    if not versions:
        return None
    newest = versions[-1]
    record = _read_record(store, keys.record, newest.version_id)
    if record.source.sha256 != sha256:
        raise IntegrityError(f"s3://{store.bucket}/{keys.record} version {newest.version_id} belongs to scan "
                             f"{record.source.sha256}, not {sha256} (record id collision)")
    return record


def store_record(store: ArchiveStore, record: Record, pdf_path: Path, original: Path,
                 *, now: dt.datetime | None = None) -> Record:
    """Store the three objects and return the record with its archive location filled in.

    Idempotent: if record.json for this content exists, that record is returned and
    nothing is written; an original or document.pdf left by an unfinished earlier pass
    is reused (never PUT again). record.json is written last. Call it under
    `locks.content_lock` so two passes on one machine do not interleave.
    """
    now = now or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    existing = archived_record(store, record.source.sha256)
    if existing is not None:
        log.info("%s is already archived as %s (record.json found in the bucket); storing nothing",
                 record.source.filename, existing.id)
        return existing
    if _file_sha256(original) != record.source.sha256:
        raise ValueError(f"{record.source.filename} changed while it was being archived")
    keys = keys_for(record.id, EXTENSIONS.get(record.source.format, "bin"))
    retain_until, legal_hold = lock_for(record, now.date())
    meta = _ascii_metadata(record)

    original_obj = store.put_once(keys.original, original, content_type=CONTENT_TYPES.get(record.source.format,
                                  "application/octet-stream"), metadata=meta, retain_until=retain_until,
                                  legal_hold=legal_hold, expected_sha256=record.source.sha256)
    pdf_obj = store.put_once(keys.document, pdf_path, content_type="application/pdf", metadata=meta,
                             retain_until=retain_until, legal_hold=legal_hold)
    archived = record.model_copy(update={"archive": Archive(
        bucket=store.bucket, key=keys.document, version_id=pdf_obj.version_id, sha256=pdf_obj.sha256,
        pdfa=PDFA_FLAVOUR, original_key=keys.original, original_version_id=original_obj.version_id,
        record_key=keys.record, stored_at=now, retain_until=retain_until, integrity=store.integrity)})
    reused = [name for name, obj in (("original", original_obj), ("document.pdf", pdf_obj)) if obj.reused]
    archived = with_event(archived, "stored", agent=kiroku_agent("store"), at=now, detail=(
        f"s3://{store.bucket}/{keys.prefix}: {keys.original} version {original_obj.version_id}, "
        f"{keys.document} version {pdf_obj.version_id}; read back and SHA-256 checked; {store.integrity}"
        + (f"; reused from an earlier pass: {', '.join(reused)}" if reused else "")))
    record_obj = store.put_once(keys.record, _record_json(archived), content_type="application/json; charset=utf-8",
                                metadata=meta, retain_until=retain_until, legal_hold=legal_hold)
    if record_obj.reused:  # another pass committed between our check and our PUT: its record is the record
        return _read_record(store, keys.record, record_obj.version_id)
    return archived


def iter_archived_records(store: ArchiveStore) -> Iterator[tuple[Record, str, str]]:
    """(record, record.json key, version id): the newest record.json of every record id in the bucket.

    Reads both layouts, records/<id>/ and the older records/<fiscal year>/<id>/; if one id
    appears in both, the newer record.json wins.
    """
    newest: dict[str, tuple[dt.datetime, str, str]] = {}
    for v in store.list_versions("records/"):  # oldest first per key
        record_id = record_id_of_key(v.key)
        if record_id is None or v.delete_marker:
            continue
        if record_id not in newest or v.key == newest[record_id][1] or v.last_modified > newest[record_id][0]:
            newest[record_id] = (v.last_modified, v.key, v.version_id)
    for record_id in sorted(newest):
        _, key, version_id = newest[record_id]
        yield _read_record(store, key, version_id), key, version_id


def catalog_record(catalog: Catalog, record: Record, *, detail: str | None = None) -> Record:
    """Add (upsert) the record to the catalog with a `catalogued` event; returns what was catalogued.

    The event goes into the catalog's copy: record.json in the bucket is not rewritten
    for it (that would add a locked version per catalog write).
    """
    if not record.events or record.events[-1].type != "catalogued":
        record = with_event(record, "catalogued", agent=kiroku_agent("catalog"), detail=detail)
    catalog.add(record)
    return record


def rebuild_catalog(store: ArchiveStore, catalog: Catalog, *, batch: int = 200) -> int:
    """Recreate the catalog from the bucket alone: the newest record.json per record id.

    Records are added in the order they were stored (then by id), in batches of one
    transaction each. Returns how many records were catalogued.
    """
    found = [record for record, _, _ in iter_archived_records(store)]
    found.sort(key=lambda r: (r.archive.stored_at if r.archive else dt.datetime.min.replace(tzinfo=dt.timezone.utc),
                              r.id))
    detail = f"rebuilt from s3://{store.bucket}"
    for start in range(0, len(found), batch):
        chunk = [r if r.events and r.events[-1].type == "catalogued"
                 else with_event(r, "catalogued", agent=kiroku_agent("catalog rebuild"), detail=detail)
                 for r in found[start:start + batch]]
        catalog.add_many(chunk)
    log.info("catalog rebuilt from s3://%s: %d records", store.bucket, len(found))
    return len(found)


def bucket_has_records(store: ArchiveStore) -> bool:
    """Whether any record.json is in the bucket (either layout); reads at most a few listing pages."""
    with store._errors("ListObjectsV2", "records/"):  # noqa: SLF001 - same module family
        paginator = store.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=store.bucket, Prefix="records/"):
            if any(record_id_of_key(o["Key"]) for o in page.get("Contents", [])):
                return True
    return False


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
    for key, version in objects if store.locking else []:  # tamper-evident: nothing to lock, the record says it
        if hold:
            store.set_legal_hold(key, version, True)
        elif until and until != arc.retain_until:
            store.extend_retention(key, version, until)
    extended = extended.model_copy(update={"archive": arc.model_copy(update={"retain_until": until})})
    old = record.retention
    new = extended.retention
    extended = with_event(extended, "retention_extended", agent=kiroku_agent("retention extend"), detail=(
        f"{old.period} → {new.period}; 満了日 {old.expiry_date or '-'} → {new.expiry_date or '-'}"
        f"{'; legal hold' if hold else ''}"))
    store.put_verified(arc.record_key, extended.model_dump_json(indent=1).encode("utf-8"),
                       content_type="application/json; charset=utf-8", metadata=_ascii_metadata(extended),
                       retain_until=until, legal_hold=hold)
    return extended
