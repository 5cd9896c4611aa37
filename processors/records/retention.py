"""Retention (保存期間) of a record under the municipality's schedule.

Every archived record needs a period, a start date (起算日), an expiry date (満了日) and
a disposition (移管 to the archives, or 廃棄): the S3 object lock is set from the expiry,
and the yearly disposal review lists what expires. The schedule is data
(schemas/retention.yaml): keyword rules on the title win over rules by document type,
because a 通知 about a 条例 is kept as long as the 条例.

起算日 follows the national rule by default (公文書管理法施行令: April 1 of the fiscal year
after the document's date), with the calendar-year rule (January 1 of the next year)
and the 完結日 rule (the day after the file was closed) as options. The expiry is the
day before the period's anniversary of the start: 2025-12-09, 3年 -> 2026-04-01 to
2029-03-31.

Like an S3 bucket in COMPLIANCE mode, a retention can be extended but never shortened:
:func:`extend_retention` raises :class:`RetentionShorteningError` instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processors.records.yamldata import read_yaml
from schemas.record import Metadata, Retention

__all__ = [
    "ScheduleError",
    "RetentionError",
    "RetentionShorteningError",
    "ScheduleRule",
    "Schedule",
    "SCHEDULE_PATH",
    "START_RULES",
    "parse_schedule",
    "load_schedule",
    "start_date_for",
    "add_years",
    "match_rule",
    "assign_retention",
    "extend_retention",
]

SCHEDULE_PATH = Path(__file__).resolve().parents[2] / "schemas" / "retention.yaml"
START_RULES = ("fiscal", "calendar", "completion")
DISPOSITIONS = ("移管", "廃棄")
UNDER_ONE_YEAR = "1年未満"
PERMANENT = "永年"


class ScheduleError(ValueError):
    """The retention schedule is not usable; the message names the bad entry."""


class RetentionError(ValueError):
    """A retention change that cannot be made."""


class RetentionShorteningError(RetentionError):
    """Refused: a retention may be extended, never shortened (as S3 COMPLIANCE mode)."""


@dataclass(frozen=True)
class ScheduleRule:
    rule: str  # type:通知 / keyword:条例 / default
    period: str  # as the schedule says it: 3年, 永年 ...
    disposition: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schedule:
    periods: dict[str, int | None]
    keyword_rules: tuple[ScheduleRule, ...]
    type_rules: dict[str, ScheduleRule]
    default: ScheduleRule
    source: str = ""

    def years(self, period: str) -> int | None:
        return self.periods[period]


def _rule(where: str, data: Any, periods: dict[str, int | None], name: str) -> ScheduleRule:
    if not isinstance(data, dict):
        raise ScheduleError(f"{where}: expected a mapping with period and disposition, got {data!r}")
    extra = set(data) - {"period", "disposition", "keywords"}
    if extra:
        raise ScheduleError(f"{where}: unknown keys {sorted(extra)}")
    period = data.get("period")
    if period not in periods:
        raise ScheduleError(f"{where}: period {period!r} is not one of {list(periods)}")
    disp = data.get("disposition")
    if disp not in DISPOSITIONS:
        raise ScheduleError(f"{where}: disposition {disp!r} must be 移管 or 廃棄")
    return ScheduleRule(name, period, disp)


def parse_schedule(data: Any, source: str = "<data>") -> Schedule:
    """Validate a schedule mapping (as loaded from YAML); errors name the entry."""
    if not isinstance(data, dict):
        raise ScheduleError(f"{source}: expected a mapping with periods, keyword_rules, type_rules and default")
    unknown = set(data) - {"version", "periods", "keyword_rules", "type_rules", "default"}
    if unknown:
        raise ScheduleError(f"{source}: unknown top-level keys {sorted(unknown)}")
    raw_periods = data.get("periods")
    if not isinstance(raw_periods, dict) or not raw_periods:
        raise ScheduleError(f"{source}: 'periods' must map period names to years (or null)")
    periods: dict[str, int | None] = {}
    for name, years in raw_periods.items():
        if not isinstance(name, str) or not name:
            raise ScheduleError(f"{source}: periods: bad period name {name!r}")
        if years is not None and (not isinstance(years, int) or isinstance(years, bool) or years < 1):
            raise ScheduleError(f"{source}: periods.{name}: years must be a positive integer or null, got {years!r}")
        if years is None and name not in (UNDER_ONE_YEAR, PERMANENT):
            raise ScheduleError(f"{source}: periods.{name}: only {UNDER_ONE_YEAR} and {PERMANENT} may have no years")
        m = re.fullmatch(r"(\d+)年", name)
        if m and years is not None and int(m.group(1)) != years:
            raise ScheduleError(f"{source}: periods.{name}: says {years} years")
        periods[name] = years
    kw_rules: list[ScheduleRule] = []
    for i, r in enumerate(data.get("keyword_rules") or []):
        where = f"{source}: keyword_rules[{i}]"
        kws = r.get("keywords") if isinstance(r, dict) else None
        if not isinstance(kws, list) or not kws or not all(isinstance(k, str) and k.strip() for k in kws):
            raise ScheduleError(f"{where}: keywords must be a non-empty list of words, got {kws!r}")
        where = f"{where} ({'/'.join(kws)})"
        base = _rule(where, r, periods, "")
        norm = tuple("".join(unicodedata.normalize("NFKC", k).split()) for k in kws)
        kw_rules.append(ScheduleRule("keyword:" + "/".join(kws), base.period, base.disposition, norm))
    raw_types = data.get("type_rules") or {}
    if not isinstance(raw_types, dict):
        raise ScheduleError(f"{source}: type_rules must map document types to rules")
    type_rules = {str(t): _rule(f"{source}: type_rules.{t}", r, periods, f"type:{t}") for t, r in raw_types.items()}
    if "default" not in data:
        raise ScheduleError(f"{source}: 'default' rule is missing")
    default = _rule(f"{source}: default", data["default"], periods, "default")
    return Schedule(periods, tuple(kw_rules), type_rules, default, source)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> Schedule:
    return parse_schedule(read_yaml(Path(path), ScheduleError, "retention schedule"), path)


def load_schedule(path: str | Path | None = None) -> Schedule:
    """The retention schedule (default schemas/retention.yaml), validated."""
    return _load_cached(str(Path(path) if path else SCHEDULE_PATH))


# --- dates ---------------------------------------------------------------------------

def start_date_for(document_date: dt.date, start_rule: str = "fiscal", completed_on: dt.date | None = None) -> dt.date:
    """起算日 under a start rule.

    fiscal:     April 1 of the fiscal year after the document's (national rule)
    calendar:   January 1 of the year after the document's
    completion: the day after the 完結日 (``completed_on``, else the document date)
    """
    if start_rule == "fiscal":
        fy = document_date.year if document_date.month >= 4 else document_date.year - 1
        return dt.date(fy + 1, 4, 1)
    if start_rule == "calendar":
        return dt.date(document_date.year + 1, 1, 1)
    if start_rule == "completion":
        return (completed_on or document_date) + dt.timedelta(days=1)
    raise ValueError(f"start_rule must be one of {', '.join(START_RULES)}, not {start_rule!r}")


def add_years(start: dt.date, years: int) -> dt.date:
    """Expiry of a period of ``years`` starting on ``start``: the day before the anniversary."""
    try:
        anniversary = start.replace(year=start.year + years)
    except ValueError:  # Feb 29 start, non-leap anniversary: the period ends on Feb 28
        anniversary = dt.date(start.year + years, 3, 1)
    return anniversary - dt.timedelta(days=1)


# --- assigning -------------------------------------------------------------------------

def match_rule(metadata: Metadata, schedule: Schedule) -> ScheduleRule:
    """Keyword rules (on the title) first, then the type rule, then the default."""
    title = "".join(unicodedata.normalize("NFKC", metadata.title or "").split())
    for r in schedule.keyword_rules:
        for k in r.keywords:
            if k in title:
                return ScheduleRule(f"keyword:{k}", r.period, r.disposition, r.keywords)
    if metadata.document_type and metadata.document_type in schedule.type_rules:
        return schedule.type_rules[metadata.document_type]
    return schedule.default


def assign_retention(metadata: Metadata, schedule: Schedule | None = None, start_rule: str = "fiscal",
                     completed_on: dt.date | None = None) -> Retention | None:
    """Retention for a record, or None when there is nothing to go on (no type, no title).

    Without a document date the period and disposition are still given, but no start or
    expiry: an officer must supply the date before the record can be locked.
    """
    if start_rule not in START_RULES:
        raise ValueError(f"start_rule must be one of {', '.join(START_RULES)}, not {start_rule!r}")
    if metadata is None or (not metadata.document_type and not metadata.title):
        return None
    sched = schedule or load_schedule()
    rule = match_rule(metadata, sched)
    years = sched.years(rule.period)
    start = expiry = None
    if rule.period != UNDER_ONE_YEAR and metadata.document_date is not None:
        start = start_date_for(metadata.document_date, start_rule, completed_on)
        if years is not None:
            expiry = add_years(start, years)
    return Retention(rule=rule.rule, period=rule.period, period_years=years, start_date=start,
                     expiry_date=expiry, disposition=rule.disposition, legal_hold=rule.period == PERMANENT)


def _period_years(period: str | int, schedule: Schedule | None) -> tuple[str, int | None]:
    if isinstance(period, int) and not isinstance(period, bool):
        if period < 1:
            raise RetentionError(f"a period must be at least one year, got {period}")
        return f"{period}年", period
    p = unicodedata.normalize("NFKC", str(period)).strip()
    if schedule and p in schedule.periods:
        return p, schedule.periods[p]
    if p in (UNDER_ONE_YEAR, PERMANENT):
        return p, None
    m = re.fullmatch(r"(\d+)年", p)
    if not m or int(m.group(1)) < 1:
        raise RetentionError(f"unknown retention period {period!r}")
    return p, int(m.group(1))


def extend_retention(current: Retention, new_period: str | int | None = None, new_expiry: dt.date | None = None,
                     *, schedule: Schedule | None = None, start_date: dt.date | None = None) -> Retention:
    """A longer retention (new period, or a later expiry); shortening raises RetentionShorteningError.

    Moving to 永年 sets legal_hold. An existing legal hold is never lifted here. An
    unchanged expiry is allowed (returns an equal retention).
    """
    if (new_period is None) == (new_expiry is None):
        raise RetentionError("give exactly one of new_period or new_expiry")
    cur_permanent = current.period == PERMANENT or (current.legal_hold and current.expiry_date is None
                                                    and current.period != UNDER_ONE_YEAR)
    start = current.start_date or start_date
    if new_period is not None:
        period, years = _period_years(new_period, schedule)
        if period == PERMANENT:
            return current.model_copy(update={"period": PERMANENT, "period_years": None, "expiry_date": None,
                                              "legal_hold": True, "start_date": start,
                                              "rule": _extended(current.rule, cur_permanent)})
        if cur_permanent:
            raise RetentionShorteningError(f"refused: {current.period} cannot be shortened to {period}")
        if period == UNDER_ONE_YEAR:
            if current.period == UNDER_ONE_YEAR:
                return current.model_copy()
            raise RetentionShorteningError(f"refused: {current.period} cannot be shortened to {UNDER_ONE_YEAR}")
        if start is None:
            raise RetentionError("the retention has no start date (起算日); give start_date or new_expiry")
        expiry = add_years(start, years)  # type: ignore[arg-type]
        _check_not_shorter(current, expiry)
        if current.expiry_date == expiry and current.period_years == years:
            return current.model_copy()
        return current.model_copy(update={"period": period, "period_years": years, "expiry_date": expiry,
                                          "start_date": start, "rule": _extended(current.rule, False)})
    assert new_expiry is not None
    if cur_permanent:
        raise RetentionShorteningError(f"refused: {current.period} cannot be shortened to expire on {new_expiry}")
    _check_not_shorter(current, new_expiry)
    if current.expiry_date == new_expiry:
        return current.model_copy()
    if start is not None and new_expiry < start:
        raise RetentionError(f"expiry {new_expiry} is before the start date {start}")
    return current.model_copy(update={"expiry_date": new_expiry, "rule": _extended(current.rule, False),
                                      "start_date": start})


def _check_not_shorter(current: Retention, expiry: dt.date) -> None:
    if current.expiry_date is not None and expiry < current.expiry_date:
        raise RetentionShorteningError(
            f"refused: expiry {expiry.isoformat()} is before the current {current.expiry_date.isoformat()}; "
            "a retention can only be extended")


def _extended(rule: str, unchanged: bool) -> str:
    return rule if unchanged or rule.endswith("+extended") else rule + "+extended"
