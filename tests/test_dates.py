"""Japanese date parsing: every printed form parses back to its day; impossible dates are refused.

The property tests write dates with their own era table and numeral writer (not the
module's), so a shared mistake cannot make them pass.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.records.dates import (
    DateError,
    find_dates,
    find_fiscal_years,
    fiscal_year,
    parse_date,
    parse_date_strict,
    parse_fiscal_year,
    parse_kanji_number,
    to_wareki,
)

# (name, first day, letter) - independent of processors.records.dates.ERAS
ERAS = [("令和", dt.date(2019, 5, 1), "R"), ("平成", dt.date(1989, 1, 8), "H"), ("昭和", dt.date(1926, 12, 25), "S"),
        ("大正", dt.date(1912, 7, 30), "T"), ("明治", dt.date(1868, 1, 25), "M")]
FW = str.maketrans("0123456789", "０１２３４５６７８９")
KD = "〇一二三四五六七八九"
DAIJI = str.maketrans("一二三", "壱弐参")


def era_of(d: dt.date) -> tuple[str, int, str]:
    for name, first, letter in ERAS:
        if d >= first:
            return name, d.year - first.year + 1, letter
    raise AssertionError(d)


def kanji(n: int) -> str:
    assert 0 < n < 100
    tens, ones = divmod(n, 10)
    return ("" if tens == 0 else ("" if tens == 1 else KD[tens]) + "十") + (KD[ones] if ones else "")


dates_all = st.dates(min_value=dt.date(1873, 1, 1), max_value=dt.date(2035, 12, 31))
FAST = settings(max_examples=300, deadline=None)


@FAST
@given(dates_all, st.booleans())
def test_era_ascii_and_gannen(d: dt.date, use_gannen: bool) -> None:
    era, y, _ = era_of(d)
    ys = "元" if (y == 1 and use_gannen) else str(y)
    assert parse_date(f"{era}{ys}年{d.month}月{d.day}日") == d


@FAST
@given(dates_all)
def test_era_fullwidth(d: dt.date) -> None:
    era, y, _ = era_of(d)
    ys = "元" if y == 1 else str(y).translate(FW)
    assert parse_date(f"{era}{ys}年{str(d.month).translate(FW)}月{str(d.day).translate(FW)}日") == d


@FAST
@given(dates_all, st.booleans())
def test_era_kanji(d: dt.date, daiji: bool) -> None:
    era, y, _ = era_of(d)
    text = f"{era}{'元' if y == 1 else kanji(y)}年{kanji(d.month)}月{kanji(d.day)}日"
    if daiji:  # 壱/弐/参 forms used on formal papers
        text = text.translate(DAIJI)
    assert parse_date(text) == d


@FAST
@given(dates_all, st.sampled_from([".", "/", "-"]), st.booleans())
def test_abbreviated(d: dt.date, sep: str, kanji_letter: bool) -> None:
    era, y, letter = era_of(d)
    head = era[0] if kanji_letter else letter
    assert parse_date(f"{head}{y}{sep}{d.month}{sep}{d.day}") == d


@FAST
@given(dates_all)
def test_western_forms(d: dt.date) -> None:
    assert parse_date(f"{d.year}年{d.month}月{d.day}日") == d
    assert parse_date(f"{d.year}/{d.month}/{d.day}") == d
    assert parse_date(f"{d.year}.{d.month}.{d.day}") == d
    assert parse_date(d.isoformat()) == d
    assert parse_date(f"{d.year}年{d.month}月{d.day}日".translate(FW)) == d


@FAST
@given(dates_all, st.sampled_from(["ascii", "fullwidth", "kanji"]))
def test_to_wareki_round_trip(d: dt.date, digits: str) -> None:
    text = to_wareki(d, digits=digits)
    assert parse_date(text) == d
    era, y, _ = era_of(d)
    assert text.startswith(era + ("元" if y == 1 else ""))


@FAST
@given(dates_all, st.data())
def test_found_in_running_text_with_ocr_spaces(d: dt.date, data: st.DataObject) -> None:
    era, y, _ = era_of(d)
    core = f"{era}{y}年{d.month}月{d.day}日"
    # OCR scatters spaces between characters (but not inside the two-character era name
    # for this test's purposes the split is anywhere)
    spaced = "".join(c + (" " if data.draw(st.booleans()) else "") for c in core).strip()
    text = f"標記のことについて、{spaced}（月）付けで通知します。電話 076-312-9453"
    found = find_dates(text)
    assert [m.date for m in found] == [d]
    assert text[found[0].start:found[0].end] == found[0].text


@FAST
@given(dates_all)
def test_other_era_for_the_same_day_is_refused(d: dt.date) -> None:
    era, _, _ = era_of(d)
    for name, first, _ in ERAS:
        if name == era:
            continue
        y = d.year - first.year + 1
        if y < 1:
            continue
        text = f"{name}{y}年{d.month}月{d.day}日"
        assert parse_date(text) is None, text


@FAST
@given(dates_all)
def test_fiscal_year(d: dt.date) -> None:
    assert fiscal_year(d) == (d.year if d.month >= 4 else d.year - 1)


@pytest.mark.parametrize("text,expected", [
    ("明治6年1月1日", dt.date(1873, 1, 1)),
    ("明治45年7月29日", dt.date(1912, 7, 29)),
    ("大正元年7月30日", dt.date(1912, 7, 30)),
    ("大正15年12月24日", dt.date(1926, 12, 24)),
    ("昭和元年12月25日", dt.date(1926, 12, 25)),
    ("昭和64年1月7日", dt.date(1989, 1, 7)),
    ("平成元年1月8日", dt.date(1989, 1, 8)),
    ("平成31年4月30日", dt.date(2019, 4, 30)),
    ("令和元年5月1日", dt.date(2019, 5, 1)),
    ("令和元年五月一日", dt.date(2019, 5, 1)),
    ("平成三十一年一月一日", dt.date(2019, 1, 1)),
    ("平成２１年１０月１９日", dt.date(2009, 10, 19)),
    ("R7.12.9", dt.date(2025, 12, 9)),
    ("令7.12.9", dt.date(2025, 12, 9)),
    ("H31.4.30", dt.date(2019, 4, 30)),
    ("S64.1.7", dt.date(1989, 1, 7)),
    ("㍻31年4月30日", dt.date(2019, 4, 30)),
    ("二〇二五年十二月九日", dt.date(2025, 12, 9)),
    ("令和 7 年 12 月 9 日", dt.date(2025, 12, 9)),
])
def test_boundaries_and_forms(text: str, expected: dt.date) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", [
    "平成32年1月1日", "令和元年4月1日", "令和元年4月30日", "平成31年5月1日", "昭和64年1月8日", "2月30日",
    "令和7年2月30日", "2025年2月29日", "大正15年12月25日", "明治45年7月30日", "大正元年7月29日", "平成元年1月7日",
    "令和0年1月1日", "明治5年12月31日", "令和7年13月1日", "H32.1.1", "令和7年12月",
])
def test_impossible_dates_rejected(text: str) -> None:
    assert parse_date(text) is None
    with pytest.raises(DateError):
        parse_date_strict(text)


def test_finder_skips_impossible_dates_and_keeps_the_rest() -> None:
    text = "平成32年1月1日から令和元年4月1日まで、実施日は令和2年1月13日（月）とする。"
    found = find_dates(text)
    assert [m.date for m in found] == [dt.date(2020, 1, 13)]
    assert found[0].text == "令和2年1月13日"


def test_finder_does_not_read_phone_or_invoice_numbers_as_dates() -> None:
    assert find_dates("電話 076-312-9453 請求番号 2202-076 口座 2280277") == []


def test_ocr_misreadings_in_dates() -> None:
    (m,) = find_dates("平成三十ー年ー月一曰")  # ー for 一, 曰 for 日
    assert m.date == dt.date(2019, 1, 1)
    assert m.clean_text == "平成三十一年一月一日"


@pytest.mark.parametrize("text,fy", [
    ("令和7年度", 2025), ("令和元年度", 2019), ("平成31年度", 2019), ("平成元年度", 1989), ("R7年度", 2025),
    ("2025年度", 2025), ("令和７年度", 2025), ("平成二十一年度", 2009),
])
def test_parse_fiscal_year(text: str, fy: int) -> None:
    assert parse_fiscal_year(text) == fy


@pytest.mark.parametrize("text", ["平成32年度", "昭和64年度", "大正16年度", "令和7年", "年度"])
def test_parse_fiscal_year_rejects(text: str) -> None:
    assert parse_fiscal_year(text) is None


def test_find_fiscal_years() -> None:
    assert [fy for _, _, fy in find_fiscal_years("令和5年度事務事業評価（平成30年度末）")] == [2023, 2018]


@pytest.mark.parametrize("text,n", [("二十三", 23), ("三十一", 31), ("十", 10), ("一〇", 10), ("壱百万", 1_000_000),
                                    ("千九百八十九", 1989), ("参拾", 30), ("１２", 12), ("二〇二五", 2025)])
def test_kanji_numbers(text: str, n: int) -> None:
    assert parse_kanji_number(text) == n


def test_to_wareki_forms() -> None:
    assert to_wareki(dt.date(2019, 5, 1)) == "令和元年5月1日"
    assert to_wareki(dt.date(2025, 12, 9), digits="fullwidth") == "令和７年１２月９日"
    assert to_wareki(dt.date(2025, 12, 9), digits="kanji") == "令和七年十二月九日"
    assert to_wareki(dt.date(1989, 1, 7)) == "昭和64年1月7日"
    with pytest.raises(DateError):
        to_wareki(dt.date(1872, 12, 31))
