"""Fixity: prove that every archived object is still exactly what its record.json says.

`verify_archive` lists every version under records/ (both layouts), reads every
record.json version, and re-reads and hashes every object version a record.json
refers to. It reports

- checked: object versions re-read whose SHA-256 matched;
- changed: a referenced version whose bytes no longer match, a record.json that no
  longer matches its own stored checksum or cannot be read as a Record, or a *newer*
  version of a referenced key with other bytes (anyone fetching the key without a
  version id would get those bytes, so it is treated as tampering, not as history);
- missing: a referenced version that is gone (deleted in a tamper-evident bucket), or
  a referenced key whose newest entry is a delete marker;
- untracked: versions under records/ no record.json refers to (an unfinished pass,
  a duplicate left by a race, something put there by hand).

Records in the bucket that the catalog does not know are listed too (`uncatalogued`),
as a note: they are found again by `kiroku catalog rebuild`.

In tamper-evident mode (no Object Lock) this check is what proves the archive, so it
must run on a schedule (the `verify-archive` flow). No Prefect here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

from processors.archive.events import kiroku_agent, with_event
from processors.archive.storage import ArchiveStore, ObjectVersion, StorageError, TransientStorageError, \
    record_id_of_key
from schemas.record import Record

if TYPE_CHECKING:
    from processors.archive.catalog import Catalog

log = logging.getLogger(__name__)

FindingKind = Literal["changed", "missing", "untracked"]
_KIND_JA = {"changed": "変更", "missing": "欠落", "untracked": "未登録"}


@dataclass(frozen=True)
class Finding:
    """One problem verify found, with a Japanese-first explanation."""

    kind: FindingKind
    key: str
    version_id: str | None
    record_id: str | None
    detail: str


@dataclass
class VerifyReport:
    bucket: str
    integrity: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    records: int = 0  # record ids with a record.json
    checked: int = 0  # object versions re-read whose SHA-256 matched
    findings: list[Finding] = field(default_factory=list)
    uncatalogued: list[str] = field(default_factory=list)

    def of(self, kind: FindingKind) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """One line, Japanese first: what a records officer reads in the terminal or the Prefect UI."""
        changed, missing, untracked = (len(self.of(k)) for k in ("changed", "missing", "untracked"))
        head = "検証OK" if self.ok else "検証で問題が見つかりました"
        note = f"、目録に未登録の記録 {len(self.uncatalogued)} 件" if self.uncatalogued else ""
        return (f"{head}: 記録 {self.records} 件、オブジェクト {self.checked} 個の SHA-256 を確認。"
                f"変更 {changed}、欠落 {missing}、未登録 {untracked}{note} "
                f"({'OK' if self.ok else 'PROBLEMS'}: {self.records} records, {self.checked} objects checked, "
                f"{changed} changed, {missing} missing, {untracked} untracked in s3://{self.bucket}, "
                f"{self.integrity})")

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "bucket": self.bucket, "integrity": self.integrity,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "records": self.records, "checked": self.checked,
            "changed": [asdict(f) for f in self.of("changed")],
            "missing": [asdict(f) for f in self.of("missing")],
            "untracked": [asdict(f) for f in self.of("untracked")],
            "uncatalogued": self.uncatalogued,
            "summary": self.summary(),
        }


@dataclass(frozen=True)
class _Expected:
    sha256: str
    record_id: str
    role: str  # "original", "document.pdf"


def verify_archive(store: ArchiveStore, *, catalog: Catalog | None = None, workers: int = 4) -> VerifyReport:
    """Re-read every stored object and check it against record.json; see the module docstring.

    With a catalog, each record's catalog entry gets a `verified` event (replacing the
    previous successful one, so the history does not grow by one per run) and records
    the catalog lacks are listed as uncatalogued. Raises TransientStorageError if the
    bucket cannot be listed or read (that is an outage, not a finding).
    """
    report = VerifyReport(store.bucket, store.integrity, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    by_key: dict[str, list[ObjectVersion]] = defaultdict(list)
    for v in store.list_versions("records/"):
        by_key[v.key].append(v)  # oldest first per key

    expected: dict[tuple[str, str], _Expected] = {}
    newest: dict[str, tuple[tuple, Record]] = {}  # record id -> (order, newest record)
    failed_records: set[str] = set()
    for key, versions in sorted(by_key.items()):
        record_id = record_id_of_key(key)
        if record_id is None:
            continue
        for v in versions:
            if v.delete_marker:
                continue
            try:
                record = Record.model_validate_json(store.get_verified(key, v.version_id))
            except TransientStorageError:
                raise
            except (StorageError, ValueError) as exc:
                report.findings.append(Finding("changed", key, v.version_id, record_id,
                                               f"record.json が保存時の SHA-256 と一致しないか読めません ({exc})"))
                failed_records.add(record_id)
                continue
            report.checked += 1
            # versions come oldest first per key; across the two layouts the later time wins
            order = (v.last_modified, key)
            if record_id not in newest or newest[record_id][0][1] == key or v.last_modified > newest[record_id][0][0]:
                newest[record_id] = (order, record)
            arc = record.archive
            if arc is None:
                report.findings.append(Finding("changed", key, v.version_id, record_id,
                                               "record.json に保管場所がありません (record.json has no archive)"))
                continue
            for obj_key, vid, sha, role in ((arc.original_key, arc.original_version_id, record.source.sha256, "original"),
                                            (arc.key, arc.version_id, arc.sha256, "document.pdf")):
                if vid:
                    expected.setdefault((obj_key, vid), _Expected(sha, record.id, role))
        if versions[-1].delete_marker:
            report.findings.append(Finding("missing", key, None, record_id,
                                           "record.json の最新が削除マーカーです(版は残っています) "
                                           "(latest entry is a delete marker)"))
    report.records = len(newest)

    to_hash: list[tuple[str, str, _Expected]] = []
    for (key, vid), exp in sorted(expected.items()):
        present = {v.version_id for v in by_key.get(key, []) if not v.delete_marker}
        if vid not in present:
            report.findings.append(Finding("missing", key, vid, exp.record_id,
                                           f"{exp.role} の記録された版がバケットにありません "
                                           f"(version referenced by record.json is gone)"))
            failed_records.add(exp.record_id)
        else:
            to_hash.append((key, vid, exp))

    def digest(item: tuple[str, str, _Expected]) -> tuple[str, str, _Expected, str]:
        key, vid, exp = item
        return key, vid, exp, store.hash_version(key, vid)[0]

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="verify") as pool:
        for key, vid, exp, actual in pool.map(digest, to_hash):
            if actual == exp.sha256:
                report.checked += 1
            else:
                report.findings.append(Finding("changed", key, vid, exp.record_id,
                                               f"{exp.role} の内容が変わっています: SHA-256 {actual}、"
                                               f"記録では {exp.sha256} (content changed)"))
                failed_records.add(exp.record_id)

    referenced_keys: dict[str, set[str]] = defaultdict(set)
    for key, vid in expected:
        referenced_keys[key].add(vid)
    for key, versions in sorted(by_key.items()):
        if record_id_of_key(key) is not None:
            continue
        refs = referenced_keys.get(key, set())
        last_ref = max((i for i, v in enumerate(versions) if v.version_id in refs), default=-1)
        owner = next((expected[(key, r)].record_id for r in refs), None)
        if refs and versions[-1].delete_marker:
            report.findings.append(Finding("missing", key, None, owner,
                                           "最新が削除マーカーです。版番号を指定しない取得では見つかりません"
                                           "(記録された版は残っています) (latest entry is a delete marker)"))
            failed_records.add(owner or "")
        for i, v in enumerate(versions):
            if v.delete_marker or v.version_id in refs:
                continue
            if refs and i > last_ref:
                actual = store.hash_version(key, v.version_id)[0]
                expected_sha = expected[(key, versions[last_ref].version_id)].sha256
                if actual != expected_sha:
                    report.findings.append(Finding("changed", key, v.version_id, owner,
                                                   f"記録された版より新しい、内容の異なる版があります: SHA-256 {actual} "
                                                   f"(a newer version with other bytes shadows the recorded one)"))
                    failed_records.add(owner or "")
                    continue
            report.findings.append(Finding("untracked", key, v.version_id, owner or _owner_of(key),
                                           "どの record.json からも参照されていない版です "
                                           "(version no record.json refers to)"))

    if catalog is not None:
        _record_verification(catalog, report, {rid: rec for rid, (_, rec) in newest.items()}, failed_records)
    report.finished_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    log.info("%s", report.summary())
    return report


def _owner_of(key: str) -> str | None:
    parts = key.split("/")
    return parts[-2] if len(parts) >= 3 else None


def _record_verification(catalog: Catalog, report: VerifyReport, records: dict[str, Record],
                         failed: set[str], batch: int = 200) -> None:
    """A `verified` event on each catalog entry; uncatalogued records are noted in the report."""
    agent = kiroku_agent("verify")
    updated: list[Record] = []
    for record_id, bucket_record in sorted(records.items()):
        entry = catalog.get(record_id)
        if entry is None:
            report.uncatalogued.append(record_id)
            continue
        ok = record_id not in failed
        events = [e for e in entry.events if not (e.type == "verified" and e.outcome == "success")]
        entry = entry.model_copy(update={"events": events})
        updated.append(with_event(entry, "verified", agent=agent, outcome="success" if ok else "failure",
                                  at=report.started_at,
                                  detail="SHA-256 一致 (fixity check passed)" if ok
                                  else "問題あり: kiroku verify の報告を確認してください (fixity check failed)"))
        if len(updated) >= batch:
            catalog.add_many(updated)
            updated = []
    if updated:
        catalog.add_many(updated)
