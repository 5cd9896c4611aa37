"""Reports an operator reads in the Prefect UI (Artifacts): the day's intake and the records due for disposition.

Both are flows so that deploy/prefect.yaml can schedule them on the shared server
(daily-summary every evening, retention-report monthly) and they run on any worker.
The daily summary counts from Prefect's own record of the ingest-document runs, so it
covers every worker machine, not only the one it runs on.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

JST = ZoneInfo("Asia/Tokyo")
NO_DEPARTMENT = "（課なし）"
INGEST_FLOW = "ingest-document"


@dataclass
class DaySummary:
    """Per department: scans received, archived, quarantined, crashed (tried again) and still in progress."""

    day: dt.date
    rows: dict[str, Counter] = field(default_factory=dict)

    def add(self, department: str | None, state_type: str) -> None:
        row = self.rows.setdefault(department or NO_DEPARTMENT, Counter())
        row["received"] += 1
        outcome = {"COMPLETED": "archived", "FAILED": "quarantined", "CRASHED": "crashed"}.get(state_type, "in_progress")
        row[outcome] += 1

    def totals(self) -> Counter:
        total: Counter = Counter()
        for row in self.rows.values():
            total.update(row)
        return total

    def as_dict(self) -> dict:
        keys = ("received", "archived", "quarantined", "crashed", "in_progress")
        return {"day": self.day.isoformat(),
                "total": {k: self.totals()[k] for k in keys},
                "by_department": {d: {k: row[k] for k in keys} for d, row in sorted(self.rows.items())}}


def summarize(day: dt.date, runs: Iterable[tuple[str | None, str]]) -> DaySummary:
    """(department, Prefect state type) of each ingest-document run of the day -> the summary."""
    summary = DaySummary(day)
    for department, state_type in runs:
        summary.add(department, state_type)
    return summary


def summary_markdown(summary: DaySummary) -> str:
    head = f"## 本日の取込状況 {summary.day.isoformat()} (daily intake summary)\n\n"
    table = "| 課 | 受付 | 保管 | 隔離 | 異常終了(再試行) | 処理中 |\n|---|---:|---:|---:|---:|---:|\n"
    lines = []
    for dept, row in sorted(summary.rows.items()):
        lines.append(f"| {dept} | {row['received']} | {row['archived']} | {row['quarantined']} | "
                     f"{row['crashed']} | {row['in_progress']} |")
    t = summary.totals()
    lines.append(f"| **計** | **{t['received']}** | **{t['archived']}** | **{t['quarantined']}** | "
                 f"**{t['crashed']}** | **{t['in_progress']}** |")
    note = ("\n\n隔離されたスキャンは quarantine フォルダに理由ファイル (.error.txt) とともにあります。"
            "\nReceived = ingest-document runs of the day (JST); archived = completed; quarantined = failed.")
    return head + table + "\n".join(lines) + note


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(0), tzinfo=JST)
    return start, start + dt.timedelta(days=1)


def _ingest_runs(day: dt.date) -> list[tuple[str | None, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    start, end = day_bounds(day)
    out: list[tuple[str | None, str]] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[INGEST_FLOW])),
                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(
                    after_=start, before_=end - dt.timedelta(microseconds=1))),
                limit=200, offset=offset)
            for r in runs:
                out.append(((r.parameters or {}).get("department"), r.state.type.value if r.state else "PENDING"))
            if len(runs) < 200:
                return out
            offset += 200


@flow(name="daily-summary", log_prints=False)
def daily_summary(day: str | None = None) -> dict:
    """The day's (JST, default today) received / archived / quarantined scans by department, as an artifact."""
    the_day = dt.date.fromisoformat(day) if day else dt.datetime.now(JST).date()
    summary = summarize(the_day, _ingest_runs(the_day))
    create_markdown_artifact(key="daily-summary", markdown=summary_markdown(summary),
                             description=f"取込状況 {the_day.isoformat()}")
    t = summary.totals()
    get_run_logger().info("%s: received %d, archived %d, quarantined %d", the_day, t["received"], t["archived"],
                          t["quarantined"])
    return summary.as_dict()


@flow(name="retention-report", log_prints=False)
def retention_report(on: str | None = None) -> dict:
    """Records whose retention has run out by `on` (default today), split into 移管 and 廃棄, as an artifact."""
    from kiroku import wiring
    from kiroku.config import load_settings

    day = dt.date.fromisoformat(on) if on else dt.datetime.now(JST).date()
    records = wiring.catalog(load_settings()).due_for_disposition(day)
    groups: dict[str, list] = {"移管": [], "廃棄": []}
    for r in records:
        groups.setdefault(r.retention.disposition, []).append(r)
    parts = [f"## 保存期間満了の記録 {day.isoformat()} (records due for disposition)\n"]
    for disposition, rows in groups.items():
        parts.append(f"\n### {disposition} ({len(rows)}件)\n\n| 記録ID | 満了日 | 保存期間 | 種別 | 件名 |\n|---|---|---|---|---|")
        parts += [f"| {r.id} | {r.retention.expiry_date or '-'} | {r.retention.period} | "
                  f"{r.metadata.document_type or '-'} | {r.metadata.title or '-'} |" for r in rows]
    create_markdown_artifact(key="retention-report", markdown="\n".join(parts),
                             description=f"保存期間満了 {day.isoformat()}")
    return {"on": day.isoformat(), **{k: [r.id for r in v] for k, v in groups.items()}}
