"""What a 文書管理者 does to an archived record: correct it, hold it, extend it, approve its disposition.

Each action writes a new record.json version to the archive bucket (the earlier versions
stay locked there as the history), adds a PREMIS-style event naming who, when and why
(`events.with_event`), and re-catalogs the record so that search reflects it at once.
Nothing here deletes anything: approving a 廃棄 records the decision; the objects stay
until their lock has expired and someone carries it out.

The web app and the CLI both call these functions.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping

from processors.archive.archiving import _ascii_metadata, extend_stored_retention, lock_for
from processors.archive.catalog import Catalog
from processors.archive.audit import JST
from processors.archive.events import with_event
from processors.archive.storage import ArchiveStore
from processors.records.dates import fiscal_year as fiscal_year_of
from processors.records.retention import PERMANENT, add_years, assign_retention, extend_retention, load_schedule, \
    start_date_for
from schemas.record import Metadata, Record, Retention

__all__ = ["CORRECTABLE", "today_in_japan", "StewardshipError", "approve_disposition", "correct_record", "disposition_decision",
           "extend", "recomputed_retention", "rematched_retention", "retention_changes", "set_legal_hold"]

# Fields whose correction changes which rule of the retention schedule applies (keyword
# rules read the 件名, type rules the 文書種別), so the retention is matched again.
RULE_FIELDS = ("title", "document_type")

# Fields a person may correct, with their Japanese labels (the form shows them in this order).
CORRECTABLE: dict[str, str] = {
    "title": "件名", "document_type": "文書種別", "document_number": "文書番号", "document_date": "文書日付",
    "issuer": "発信者", "addressee": "宛先", "counterparty": "相手方", "amount": "金額", "fiscal_year": "年度",
}


def today_in_japan() -> dt.date:
    """Today's date in Japan: a 満了日 is a Japanese calendar day, and a server whose clock is UTC
    would otherwise still be on yesterday until 09:00 JST."""
    return dt.datetime.now(JST).date()


class StewardshipError(ValueError):
    """The action cannot be done; the message is Japanese, for the person who asked."""


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise StewardshipError("理由を入力してください（記録の履歴に残ります）。")
    return reason


def _write(store: ArchiveStore, catalog: Catalog, record: Record) -> Record:
    """A new record.json version, locked like the record's other objects, then catalogued."""
    arc = record.archive
    if arc is None:
        raise StewardshipError(f"記録 {record.id} はまだ保存庫に保管されていません。")
    until, hold = lock_for(record, today_in_japan())
    if arc.retain_until and until and arc.retain_until > until:
        until = arc.retain_until
    store.put_verified(arc.record_key, record.model_dump_json(indent=1).encode("utf-8"),
                       content_type="application/json; charset=utf-8", metadata=_ascii_metadata(record),
                       retain_until=until, legal_hold=hold)
    catalog.add(record)
    return record


def _shown(value: object) -> str:
    return "（空）" if value in (None, "") else str(value)


def correct_record(store: ArchiveStore, catalog: Catalog, record: Record, changes: Mapping[str, object], *,
                   agent: str, reason: str | None, start_rule: str = "fiscal",
                   schedule: str | None = None) -> Record:
    """Correct metadata fields; returns the new record (unchanged fields are ignored).

    Values arrive already typed (dates as date, numbers as int, '' or None to clear).
    A corrected 文書日付 moves the 年度 with it unless the 年度 is corrected too.

    The retention follows what was corrected, because it was derived from it:
    - a corrected 件名 or 文書種別 matches the retention schedule again
      (`rematched_retention`: the pipeline's own assign_retention over the same
      schedule file and 起算日 rule), so 保存期間, 移管/廃棄, 起算日 and 満了日 may all change;
    - a corrected 文書日付 alone moves the 起算日 and 満了日 (`recomputed_retention`).
    The stored objects' locks follow a later 満了日; an earlier one cannot shorten them
    (COMPLIANCE mode), so they stay locked to the old date and the record page shows both.
    The history entry lists every field that changed, retention included.
    """
    reason = _reason(reason)
    unknown = set(changes) - set(CORRECTABLE)
    if unknown:
        raise StewardshipError(f"修正できない項目です: {', '.join(sorted(unknown))}")
    md = record.metadata
    update: dict[str, object] = {}
    for name, value in changes.items():
        if isinstance(value, str):
            value = unicodedata.normalize("NFC", value).strip() or None
        if value != getattr(md, name):
            update[name] = value
    if "document_date" in update and "fiscal_year" not in update and update["document_date"] is not None:
        year = fiscal_year_of(update["document_date"])  # type: ignore[arg-type]
        if year != md.fiscal_year:
            update["fiscal_year"] = year
    if "document_date" in update:
        update["document_date_text"] = None  # the printed text no longer is the source of the date
    if not update:
        raise StewardshipError("変更された項目がありません。")
    detail = "; ".join(f"{CORRECTABLE.get(k, k)}: {_shown(getattr(md, k))} → {_shown(v)}"
                       for k, v in update.items() if k in CORRECTABLE)
    new_md = md.model_copy(update=update)
    corrected = record.model_copy(update={"metadata": new_md})
    retention = record.retention
    if any(name in update for name in RULE_FIELDS):
        retention = rematched_retention(retention, new_md, schedule=schedule, start_rule=start_rule)
    elif "document_date" in update and retention is not None:
        retention = recomputed_retention(retention, update["document_date"], start_rule)  # type: ignore[arg-type]
    if retention != record.retention:
        detail += retention_changes(record.retention, retention)
        corrected = corrected.model_copy(update={"retention": retention})
    corrected = Record.model_validate(corrected.model_dump())  # the same checks as any record
    corrected = with_event(corrected, "corrected", agent=agent, detail=f"{detail}（理由: {reason}）")
    if retention != record.retention:
        corrected = _relock(store, record, corrected)
    return _write(store, catalog, corrected)


def retention_changes(old: Retention | None, new: Retention | None) -> str:
    """'; 保存期間: 5年 → 10年; 満了日: ...' for the history: each retention field that changed."""
    if new is None or old == new:
        return ""
    fields = (("保存期間", "period"), ("移管/廃棄", "disposition"), ("起算日", "start_date"),
              ("満了日", "expiry_date"), ("適用規則", "rule"))
    parts = [f"{label}: {_shown(getattr(old, name, None) if old else None)} → {_shown(getattr(new, name))}"
             for label, name in fields if old is None or getattr(old, name) != getattr(new, name)]
    if old is not None and old.legal_hold and new.legal_hold and old.period == PERMANENT != new.period:
        parts.append("リーガルホールドは維持（訂正では解除しません。必要なら理由を付けて解除してください）")
    return "".join(f"; {p}" for p in parts)


def rematched_retention(current: Retention | None, metadata: Metadata, *, schedule: str | None = None,
                        start_rule: str = "fiscal") -> Retention | None:
    """The retention of corrected metadata, matched again against the retention schedule.

    The pipeline's own `assign_retention` over the same schedule (schemas/retention.yaml
    or kiroku.toml's [retention] schedule) and 起算日 rule, so a corrected record is
    retained exactly as if it had been read right the first time, except for what a
    person decided about this record, which a correction does not undo:
    - a legal hold stays on (lifting one is its own action, with its own reason);
    - a 延長 (rule ending in +extended) is kept where it is longer than the new rule:
      永年 stays 永年, a later 満了日 stays.
    With nothing to match on (件名 and 文書種別 both cleared) the retention is left as it was.
    """
    new = assign_retention(metadata, load_schedule(schedule), start_rule)
    if new is None or current is None:
        return current if new is None else new
    update: dict[str, object] = {"legal_hold": new.legal_hold or current.legal_hold}
    if current.rule.endswith("+extended"):
        if current.period == PERMANENT and new.period != PERMANENT:
            update.update(period=PERMANENT, period_years=None, expiry_date=None, legal_hold=True)
        elif (current.expiry_date and new.expiry_date and current.expiry_date > new.expiry_date):
            update["expiry_date"] = current.expiry_date
        if len(update) > 1:
            update["rule"] = new.rule + "+extended"
    return new.model_copy(update=update)


def recomputed_retention(current: Retention, document_date: dt.date | None, start_rule: str = "fiscal") -> Retention:
    """The retention of a record whose 文書日付 was corrected: same 保存期間 and 移管/廃棄,
    起算日 and 満了日 from the new date.

    A 満了日 set by hand in a 延長 beyond the period's own end is a decision about this
    record and is kept when it is later than the recomputed one. Without a date (cleared)
    there is no 起算日 or 満了日: the record is then held (lock_for) until a date is given.
    """
    if document_date is None:
        return current.model_copy(update={"start_date": None, "expiry_date": None})
    if current.period_years is None:  # 永年 and 1年未満: no 満了日 to move
        start = None if current.start_date is None else start_date_for(document_date, start_rule)
        return current.model_copy(update={"start_date": start})
    start = start_date_for(document_date, start_rule)
    expiry = add_years(start, current.period_years)
    own_end = add_years(current.start_date, current.period_years) if current.start_date else None
    if current.expiry_date and own_end and current.expiry_date > own_end and current.expiry_date > expiry:
        expiry = current.expiry_date  # an explicit 延長 to a date outlives the correction
    return current.model_copy(update={"start_date": start, "expiry_date": expiry})


def _relock(store: ArchiveStore, before: Record, after: Record) -> Record:
    """Make the stored PDF/A and original follow the corrected retention, never loosening them.

    A later 満了日 extends their locks; an earlier one leaves them as they are (a
    COMPLIANCE lock cannot be shortened, and should not be: the objects stay until the
    later date). A record that was held only because it had no 満了日 gets its lock date
    set first and then the automatic hold lifted, so it is never unprotected.
    """
    arc = after.archive
    if arc is None:
        return after
    until, hold = lock_for(after, today_in_japan())
    _, held_before = lock_for(before, today_in_japan())
    if store.locking:
        for key, version in ((arc.key, arc.version_id), (arc.original_key, arc.original_version_id)):
            if version is None:
                continue
            if hold:
                store.set_legal_hold(key, version, True)
                continue
            current = store.retention_of(key, version).retained_through
            if until is not None and (current is None or current < until):
                store.extend_retention(key, version, until)
            if held_before and not before.retention.legal_hold:  # type: ignore[union-attr]
                store.set_legal_hold(key, version, False)  # the automatic hold of an undated record
    if until is not None and (arc.retain_until is None or until > arc.retain_until):
        after = after.model_copy(update={"archive": arc.model_copy(update={"retain_until": until})})
    return after


def set_legal_hold(store: ArchiveStore, catalog: Catalog, record: Record, on: bool, *, agent: str,
                   reason: str | None) -> Record:
    """Put a legal hold on the record's stored objects, or lift it.

    Lifting leaves the objects locked until their 満了日 (the retention is set on them
    first, so they are never unprotected); a record with no 満了日 (永年, 1年未満 or an
    unread date) keeps its hold, because the hold is then its only lock.
    """
    reason = _reason(reason)
    ret, arc = record.retention, record.archive
    if ret is None or arc is None:
        raise StewardshipError(f"記録 {record.id} には保存期間か保管場所がありません。")
    if ret.legal_hold == on:
        raise StewardshipError("リーガルホールドはすでに" + ("設定" if on else "解除") + "されています。")
    changed = record.model_copy(update={"retention": ret.model_copy(update={"legal_hold": on})})
    objects = [(arc.key, arc.version_id), (arc.original_key, arc.original_version_id)]
    if on:
        for key, version in objects:
            store.set_legal_hold(key, version, True)
    else:
        until, hold = lock_for(changed, today_in_japan())
        if hold or until is None:
            raise StewardshipError("満了日のない記録（永年・1年未満など）は、リーガルホールドが唯一の保護なので解除できません。")
        for key, version in objects:
            current = store.retention_of(key, version).retained_through
            if current is None or current < until:
                store.extend_retention(key, version, until)
            store.set_legal_hold(key, version, False)
        changed = changed.model_copy(update={"archive": arc.model_copy(update={"retain_until": max(
            until, arc.retain_until or until)})})
    changed = with_event(changed, "legal_hold", agent=agent, detail=("設定" if on else "解除") + f"（理由: {reason}）")
    return _write(store, catalog, changed)


def extend(store: ArchiveStore, catalog: Catalog, record: Record, *, period: str | None = None,
           until: dt.date | None = None, agent: str, reason: str | None) -> Record:
    """延長 through archiving.extend_stored_retention, with who/why in the history."""
    reason = _reason(reason)
    if record.retention is None:
        raise StewardshipError(f"記録 {record.id} には保存期間がありません。")
    if (period is None) == (until is None):
        raise StewardshipError("新しい保存期間か満了日のどちらか一方を指定してください。")
    try:
        new = extend_retention(record.retention, period, until)
    except ValueError as exc:
        raise StewardshipError(f"延長できません（短縮はできません）: {exc}") from exc
    old = record.retention
    detail = (f"{old.period} 満了日 {_shown(old.expiry_date)} → {new.period} 満了日 {_shown(new.expiry_date)}"
              f"（理由: {reason}）")
    extended = extend_stored_retention(store, with_event(record, "retention_extended", agent=agent, detail=detail),
                                       period, until)
    catalog.add(extended)
    return extended


def disposition_decision(record: Record) -> str | None:
    """The detail of the record's disposition approval, if it has one."""
    for event in reversed(record.events):
        if event.type == "disposition_approved":
            return event.detail
    return None


def approve_disposition(store: ArchiveStore, catalog: Catalog, record: Record, *, agent: str, reason: str | None,
                        on: dt.date | None = None) -> Record:
    """Record the approval of a due record's 移管 or 廃棄. Nothing is moved or deleted here."""
    reason = _reason(reason)
    ret = record.retention
    on = on or today_in_japan()
    if ret is None or ret.expiry_date is None or ret.expiry_date > on:
        raise StewardshipError("この記録はまだ満了日を迎えていません。")
    if ret.legal_hold:
        raise StewardshipError("リーガルホールド中の記録は廃棄・移管できません。")
    if disposition_decision(record):
        raise StewardshipError("この記録の廃棄・移管はすでに承認されています。")
    approved = with_event(record, "disposition_approved", agent=agent,
                          detail=f"{ret.disposition}を承認（満了日 {ret.expiry_date}; 理由: {reason}）")
    return _write(store, catalog, approved)
