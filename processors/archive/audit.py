"""The audit log (アクセス記録): who searched, viewed, downloaded or changed what, and when.

Every search, record view and download in the web app is written here before the
answer is sent, and so are logins (successful or not), corrections and records-
management decisions. The log is append-only from kiroku's side (there is no function
that changes or deletes an entry), lives in the catalog database, and an auditor reads
and exports it (`entries`, `write_csv`). Failed logins are also what the login rate
limit counts (`recent_failures`), so the limit holds across processes and restarts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, func, insert, or_, select
from sqlalchemy.engine import Engine

__all__ = ["ACTIONS", "JST", "AuditEntry", "AuditLog", "in_jst"]

JST = dt.timezone(dt.timedelta(hours=9), "JST")  # Asia/Tokyo: Japan has no daylight saving time


def in_jst(moment: dt.datetime) -> dt.datetime:
    """An instant in Japan time; a naive datetime is UTC (how this log and the catalog store them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(JST)


def _utc_start_of(day: dt.date) -> dt.datetime:
    """The naive UTC instant a Japanese calendar day begins (00:00 JST = 15:00 UTC the day before)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=JST).astimezone(dt.timezone.utc).replace(tzinfo=None)

ACTIONS: dict[str, str] = {
    "login": "ログイン", "login_failed": "ログイン失敗", "logout": "ログアウト", "search": "検索",
    "api_search": "API検索", "export_csv": "検索結果CSV", "view": "閲覧", "download_pdf": "PDF取得",
    "download_original": "原本取得", "thumbnail": "サムネイル", "denied": "拒否", "correct": "修正",
    "legal_hold": "リーガルホールド", "extend": "保存期間延長", "approve_disposition": "廃棄・移管承認",
    "register": "管理簿", "audit_view": "記録閲覧", "audit_export": "記録出力",
}

metadata = MetaData()
audit_table = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),  # UTC, naive
    Column("user", String(100)),
    Column("action", String(40), nullable=False),
    Column("record_id", String(200)),
    Column("detail", Text),
    Column("ip", String(64)),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_user_action_at", "user", "action", "at"),
)

CSV_COLUMNS = ("日時(日本時間)", "日付(和暦)", "利用者", "操作", "記録ID", "内容", "接続元")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    user: str | None
    action: str
    record_id: str | None
    detail: str | None
    ip: str | None

    @property
    def action_label(self) -> str:
        return ACTIONS.get(self.action, self.action)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def write(self, action: str, *, user: str | None, record_id: str | None = None, detail: str | None = None,
              ip: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(audit_table).values(at=_now(), user=user, action=action, record_id=record_id,
                                                    detail=(detail or None) and detail[:2000], ip=ip))

    def recent_failures(self, *, user: str, ip: str | None, minutes: int) -> int:
        """Failed logins for this name or from this address in the last `minutes`."""
        since = _now() - dt.timedelta(minutes=minutes)
        who = audit_table.c.user == user if ip is None else or_(audit_table.c.user == user, audit_table.c.ip == ip)
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(audit_table).where(
                audit_table.c.action == "login_failed", audit_table.c.at >= since, who)).scalar_one()

    def entries(self, *, user: str | None = None, action: str | None = None, record_id: str | None = None,
                since: dt.date | None = None, until: dt.date | None = None, limit: int = 500) -> list[AuditEntry]:
        """Newest first. `since` and `until` are Japanese calendar days (JST), as an auditor means them."""
        t = audit_table
        stmt = select(t).order_by(t.c.id.desc()).limit(limit)
        if user:
            stmt = stmt.where(t.c.user == user)
        if action:
            stmt = stmt.where(t.c.action == action)
        if record_id:
            stmt = stmt.where(t.c.record_id == record_id)
        if since:
            stmt = stmt.where(t.c.at >= _utc_start_of(since))
        if until:
            stmt = stmt.where(t.c.at < _utc_start_of(until + dt.timedelta(days=1)))
        with self.engine.connect() as conn:
            return [AuditEntry(r.id, r.at, r.user, r.action, r.record_id, r.detail, r.ip) for r in conn.execute(stmt)]

    @staticmethod
    def csv_text(entries: Iterable[AuditEntry]) -> str:
        """CSV (with a BOM, CRLF) that Excel opens as UTF-8.

        Times in Japan time (stored UTC), as `2026-12-03 18:17:18` so that Excel reads
        them as times, with the era date beside them."""
        from processors.records.dates import to_wareki

        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for e in entries:
            local = in_jst(e.at)
            cells = [local.strftime("%Y-%m-%d %H:%M:%S"), to_wareki(local.date()), e.user or "", e.action_label,
                     e.record_id or "", e.detail or "", e.ip or ""]
            writer.writerow(["'" + c if c[:1] in ("=", "+", "-", "@") else c for c in cells])
        return out.getvalue()
