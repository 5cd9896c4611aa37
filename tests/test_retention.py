"""Retention under the schedule: periods, 起算日 rules, keyword-over-type, validation, extension only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from processors.records.extract import extract_from_text
from processors.records.retention import (
    SCHEDULE_PATH,
    RetentionError,
    RetentionShorteningError,
    ScheduleError,
    add_years,
    assign_retention,
    extend_retention,
    load_schedule,
    parse_schedule,
    start_date_for,
)
from schemas.record import Metadata, Retention

D = dt.date


def md(doc_type: str | None, title: str | None = None, date: dt.date | None = D(2025, 12, 9)) -> Metadata:
    return Metadata(document_type=doc_type, title=title, document_date=date)


@pytest.mark.parametrize("doc_type,period,years,disposition", [
    ("辞令", "30年", 30, "移管"), ("表彰状", "30年", 30, "移管"), ("議事録", "10年", 10, "移管"),
    ("契約書", "10年", 10, "廃棄"), ("報告", "5年", 5, "廃棄"), ("申請書", "5年", 5, "廃棄"), ("請求書", "5年", 5, "廃棄"),
    ("通知", "3年", 3, "廃棄"), ("依頼", "3年", 3, "廃棄"), ("照会", "3年", 3, "廃棄"), ("回答", "3年", 3, "廃棄"),
    ("その他", "1年", 1, "廃棄"),
])
def test_default_schedule_by_type(doc_type: str, period: str, years: int, disposition: str) -> None:
    r = assign_retention(md(doc_type, "件名"), load_schedule())
    assert r is not None
    assert (r.period, r.period_years, r.disposition) == (period, years, disposition)
    assert r.start_date == D(2026, 4, 1)
    assert r.expiry_date == D(2026 + years, 3, 31)
    assert r.rule == ("default" if doc_type == "その他" else f"type:{doc_type}")
    assert r.legal_hold is False


def test_national_rule_example() -> None:
    r = assign_retention(md("通知", "年末年始のごみ収集日程の変更について（通知）"))
    assert (r.start_date, r.expiry_date) == (D(2026, 4, 1), D(2029, 3, 31))


def test_start_rules() -> None:
    # a March document belongs to the previous fiscal year: its 起算日 is the coming April 1
    assert start_date_for(D(2026, 3, 31), "fiscal") == D(2026, 4, 1)
    assert start_date_for(D(2026, 4, 1), "fiscal") == D(2027, 4, 1)
    assert start_date_for(D(2025, 12, 9), "calendar") == D(2026, 1, 1)
    assert start_date_for(D(2025, 12, 9), "completion") == D(2025, 12, 10)
    assert start_date_for(D(2025, 12, 9), "completion", completed_on=D(2026, 2, 27)) == D(2026, 2, 28)
    with pytest.raises(ValueError, match="start_rule"):
        start_date_for(D(2025, 12, 9), "lunar")
    r = assign_retention(md("通知"), start_rule="calendar")
    assert (r.start_date, r.expiry_date) == (D(2026, 1, 1), D(2028, 12, 31))
    r = assign_retention(md("通知"), start_rule="completion", completed_on=D(2026, 1, 15))
    assert (r.start_date, r.expiry_date) == (D(2026, 1, 16), D(2029, 1, 15))


def test_add_years_over_leap_day() -> None:
    assert add_years(D(2024, 2, 29), 1) == D(2025, 2, 28)
    assert add_years(D(2026, 4, 1), 5) == D(2031, 3, 31)


@pytest.mark.parametrize("title,rule,period,disposition", [
    ("長岡市文書管理規則の一部改正について（通知）", "keyword:規則", "30年", "移管"),
    ("長岡市手数料条例の施行について（通知）", "keyword:条例", "30年", "移管"),
    ("補助金交付要綱の制定について（依頼）", "keyword:要綱", "30年", "移管"),
    ("令和8年度予算編成方針について（通知）", "keyword:予算", "10年", "移管"),
    ("令和6年度決算の概要について（報告）", "keyword:決算", "10年", "移管"),
    ("令和6年度決 算の概要について（報告）", "keyword:決算", "10年", "移管"),  # OCR space inside the word
])
def test_keyword_rules_win_over_type(title: str, rule: str, period: str, disposition: str) -> None:
    r = assign_retention(md("通知", title))
    assert (r.rule, r.period, r.disposition) == (rule, period, disposition)


def test_keyword_order_in_schedule_decides() -> None:
    r = assign_retention(md("報告", "予算執行規則の運用状況について（報告）"))
    assert r.rule == "keyword:規則"  # 条例/規則/要綱 comes first in the schedule


def test_under_one_year_and_permanent(tmp_path: Path) -> None:
    data = yaml.safe_load(SCHEDULE_PATH.read_text(encoding="utf-8"))
    data["type_rules"]["通知"] = {"period": "1年未満", "disposition": "廃棄"}
    data["type_rules"]["議事録"] = {"period": "永年", "disposition": "移管"}
    sched = parse_schedule(data)
    short = assign_retention(md("通知", "件名"), sched)
    assert (short.period, short.period_years, short.start_date, short.expiry_date) == ("1年未満", None, None, None)
    perm = assign_retention(md("議事録", "議事録"), sched)
    assert (perm.period, perm.period_years, perm.expiry_date, perm.legal_hold) == ("永年", None, None, True)
    assert perm.start_date == D(2026, 4, 1)


def test_without_date_no_start_or_expiry_and_without_anything_none() -> None:
    r = assign_retention(md("契約書", "業務委託契約書", date=None))
    assert (r.period, r.start_date, r.expiry_date) == ("10年", None, None)
    assert assign_retention(Metadata()) is None


def test_extract_from_text_assigns_retention() -> None:
    text = "長岡市総務第9号\n令和8年3月31日\n各課長　様\n長岡市長\n長岡市情報公開条例の一部改正について（通知）\n"
    res = extract_from_text(text)
    assert res.retention == Retention(rule="keyword:条例", period="30年", period_years=30, start_date=D(2026, 4, 1),
                                      expiry_date=D(2056, 3, 31), disposition="移管", legal_hold=False)


# --- schedule validation --------------------------------------------------------------------

def _base() -> dict:
    return yaml.safe_load(SCHEDULE_PATH.read_text(encoding="utf-8"))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["type_rules"].update({"通知": {"period": "4年", "disposition": "廃棄"}}),
     r"type_rules\.通知: period '4年' is not one of"),
    (lambda d: d["type_rules"].update({"辞令": {"period": "30年", "disposition": "保存"}}),
     r"type_rules\.辞令: disposition '保存' must be 移管 or 廃棄"),
    (lambda d: d["keyword_rules"][1].update({"period": "9年"}),
     r"keyword_rules\[1\] \(予算/決算\): period '9年'"),
    (lambda d: d["keyword_rules"].append({"keywords": [], "period": "3年", "disposition": "廃棄"}),
     r"keyword_rules\[2\]: keywords must be a non-empty list"),
    (lambda d: d["periods"].update({"3年": 4}), r"periods\.3年: says 4 years"),
    (lambda d: d.pop("default"), r"'default' rule is missing"),
    (lambda d: d["type_rules"].update({"通知": {"period": "3年", "disposition": "廃棄", "note": 1}}),
     r"type_rules\.通知: unknown keys \['note'\]"),
])
def test_schedule_validation_names_the_bad_entry(mutate, message: str) -> None:
    data = _base()
    mutate(data)
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(data, "retention.yaml")


def test_load_schedule_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("periods: {3年: 3}\ntype_rules:\n  通知: {period: 5年, disposition: 廃棄}\ndefault: {period: 3年, disposition: 廃棄}\n",
                 encoding="utf-8")
    with pytest.raises(ScheduleError, match=rf"{p}: type_rules\.通知: period '5年'"):
        load_schedule(p)
    p.write_text("periods: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScheduleError, match="not valid YAML"):
        load_schedule(p)


# --- extension only ------------------------------------------------------------------------------

def _r(period: str = "3年", years: int | None = 3, expiry: dt.date | None = D(2029, 3, 31), hold: bool = False) -> Retention:
    return Retention(rule="type:通知", period=period, period_years=years, start_date=D(2026, 4, 1),
                     expiry_date=expiry, disposition="廃棄", legal_hold=hold)


def test_extend_by_period() -> None:
    r = extend_retention(_r(), "10年")
    assert (r.period, r.period_years, r.expiry_date) == ("10年", 10, D(2036, 3, 31))
    assert r.rule == "type:通知+extended" and r.start_date == D(2026, 4, 1)
    assert extend_retention(_r(), 5).expiry_date == D(2031, 3, 31)


def test_extend_by_expiry_and_to_permanent() -> None:
    r = extend_retention(_r(), new_expiry=D(2030, 3, 31))
    assert (r.period, r.expiry_date) == ("3年", D(2030, 3, 31))
    p = extend_retention(_r(), "永年")
    assert (p.period, p.period_years, p.expiry_date, p.legal_hold) == ("永年", None, None, True)


def test_same_expiry_is_allowed_unchanged() -> None:
    assert extend_retention(_r(), "3年") == _r()
    assert extend_retention(_r(), new_expiry=D(2029, 3, 31)) == _r()


@pytest.mark.parametrize("kwargs", [{"new_period": "1年"}, {"new_period": 2}, {"new_period": "1年未満"},
                                    {"new_expiry": D(2029, 3, 30)}])
def test_shortening_is_refused(kwargs: dict) -> None:
    with pytest.raises(RetentionShorteningError, match="refused"):
        extend_retention(_r(), **kwargs)


def test_permanent_cannot_be_shortened_and_hold_stays() -> None:
    perm = _r("永年", None, None, hold=True)
    with pytest.raises(RetentionShorteningError):
        extend_retention(perm, "30年")
    with pytest.raises(RetentionShorteningError):
        extend_retention(perm, new_expiry=D(2100, 1, 1))
    held = _r(hold=True)
    assert extend_retention(held, "5年").legal_hold is True


def test_extension_needs_exactly_one_target_and_a_start() -> None:
    with pytest.raises(RetentionError, match="exactly one"):
        extend_retention(_r())
    with pytest.raises(RetentionError, match="exactly one"):
        extend_retention(_r(), "5年", D(2040, 1, 1))
    undated = Retention(rule="type:通知", period="3年", period_years=3, disposition="廃棄")
    with pytest.raises(RetentionError, match="no start date"):
        extend_retention(undated, "5年")
    assert extend_retention(undated, "5年", start_date=D(2026, 4, 1)).expiry_date == D(2031, 3, 31)
    with pytest.raises(RetentionError, match="unknown retention period"):
        extend_retention(_r(), "forever")
