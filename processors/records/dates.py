"""Japanese dates as they are printed on municipal records: era (和暦) and Western (西暦).

Records are dated in the era calendar (令和7年12月9日, 平成三十一年一月一日, R7.12.9,
令和元年５月１日) far more often than in the Western one, and retention periods, fiscal
years and the archive's search all need an exact ``datetime.date``. A wrong date is
worse than none (it moves a 満了日), so impossible dates - 平成32年, 令和元年4月1日,
2月30日, 昭和64年1月8日 - are rejected, never silently "corrected".

Era boundaries follow the generally accepted convention:

=====  ============  ============
era    first day     last day
=====  ============  ============
明治   1868-01-25*   1912-07-29
大正   1912-07-30    1926-12-24
昭和   1926-12-25    1989-01-07
平成   1989-01-08    2019-04-30
令和   2019-05-01    -
=====  ============  ============

*明治元年 is 1868, but Japan used the lunisolar calendar until 明治5年12月2日; 明治6年1月1日
is 1873-01-01 Gregorian. Earlier 明治 month/day pairs are not Gregorian dates, so they are
refused (DateError) rather than converted wrongly. Years alone (年度, 明治元年) still work.

Digits may be ASCII, full-width or kanji numerals (一, 十, 二十三, 三十一, 〇, 壱/弐/参);
whitespace that OCR inserts between characters is tolerated by :func:`find_dates`.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "DateError",
    "DateMatch",
    "Era",
    "ERAS",
    "parse_kanji_number",
    "resolve_era_date",
    "parse_date",
    "find_dates",
    "fiscal_year",
    "parse_fiscal_year",
    "find_fiscal_years",
    "era_of",
    "to_wareki",
]


class DateError(ValueError):
    """A date expression that names no real day (平成32年, 2月30日, 昭和64年1月8日 ...)."""


@dataclass(frozen=True)
class Era:
    name: str  # 令和
    letter: str  # R
    first: dt.date  # first Gregorian day of the era
    last: dt.date | None  # last day, None for the current era
    gregorian_from: dt.date | None = None  # month/day only convertible from this day on (明治)

    @property
    def offset(self) -> int:
        """Western year of era year 0, so that Western year = offset + era year."""
        return self.first.year - 1


ERAS: tuple[Era, ...] = (
    Era("令和", "R", dt.date(2019, 5, 1), None),
    Era("平成", "H", dt.date(1989, 1, 8), dt.date(2019, 4, 30)),
    Era("昭和", "S", dt.date(1926, 12, 25), dt.date(1989, 1, 7)),
    Era("大正", "T", dt.date(1912, 7, 30), dt.date(1926, 12, 24)),
    Era("明治", "M", dt.date(1868, 1, 25), dt.date(1912, 7, 29), gregorian_from=dt.date(1873, 1, 1)),
)
_BY_NAME = {e.name: e for e in ERAS}
_BY_LETTER = {e.letter: e for e in ERAS}
# one-character abbreviations (令7.12.9) and the Unicode square era ligatures (㍻ = 平成)
_ABBREV = {"令": "令和", "平": "平成", "昭": "昭和", "大": "大正", "明": "明治",
           "㋿": "令和", "㍻": "平成", "㍼": "昭和", "㍽": "大正", "㍾": "明治"}

# --- numerals ---------------------------------------------------------------

_KANJI_DIGIT = {"〇": 0, "零": 0, "○": 0, "一": 1, "壱": 1, "壹": 1, "弌": 1, "二": 2, "弐": 2, "貳": 2, "弍": 2,
                "三": 3, "参": 3, "參": 3, "弎": 3, "四": 4, "肆": 4, "五": 5, "伍": 5, "六": 6, "陸": 6,
                "七": 7, "漆": 7, "八": 8, "捌": 8, "九": 9, "玖": 9}
_KANJI_UNIT = {"十": 10, "拾": 10, "什": 10, "廿": 20, "卅": 30, "百": 100, "佰": 100, "陌": 100,
               "千": 1000, "仟": 1000, "阡": 1000}
_KANJI_BIG = {"万": 10**4, "萬": 10**4, "億": 10**8, "兆": 10**12}


def parse_kanji_number(s: str) -> int | None:
    """Integer from ASCII/full-width digits or kanji numerals, None if it is not a number.

    Handles both the positional style used for years (二〇二五) and the unit style
    (二十三, 三十一, 壱百万, 千九百八十九); mixed forms like 1万2千 also work.
    """
    s = unicodedata.normalize("NFKC", s).replace(",", "").strip()
    if not s:
        return None
    if s.isascii():
        return int(s) if s.isdigit() else None
    total = 0  # sum of completed 万/億 groups
    section = 0  # value below the current 万 group
    current: int | None = None  # digits read since the last unit
    for ch in s:
        if ch.isascii() and ch.isdigit():
            current = (current or 0) * 10 + int(ch)
        elif ch in _KANJI_DIGIT:
            current = (current or 0) * 10 + _KANJI_DIGIT[ch]
        elif ch in _KANJI_UNIT:
            unit = _KANJI_UNIT[ch]
            if unit in (20, 30):  # 廿, 卅 stand for 二十, 三十
                section += unit
                current = None
                continue
            section += (current if current is not None else 1) * unit
            current = None
        elif ch in _KANJI_BIG:
            group = section + (current or 0)
            total += (group if group else 1) * _KANJI_BIG[ch]
            section, current = 0, None
        else:
            return None
    return total + section + (current or 0)


# --- resolving ----------------------------------------------------------------

def resolve_era_date(era_name: str, year: int, month: int, day: int) -> dt.date:
    """The Gregorian date of an era date; DateError when that day does not exist in the era."""
    era = _BY_NAME.get(era_name) or _BY_NAME.get(_ABBREV.get(era_name, "")) or _BY_LETTER.get(era_name.upper())
    if era is None:
        raise DateError(f"unknown era {era_name!r}")
    if year < 1:
        raise DateError(f"{era.name}{year}年: era years start at 元年 (1)")
    try:
        d = dt.date(era.offset + year, month, day)
    except ValueError as exc:
        raise DateError(f"{era.name}{year}年{month}月{day}日 is not a calendar date: {exc}") from None
    if d < era.first or (era.last is not None and d > era.last):
        span = f"{era.first.isoformat()} - {era.last.isoformat() if era.last else ''}"
        raise DateError(f"{era.name}{year}年{month}月{day}日 is outside {era.name} ({span})")
    if era.gregorian_from and d < era.gregorian_from:
        raise DateError(f"{era.name}{year}年{month}月{day}日 predates the Gregorian calendar in Japan (明治6年1月1日)")
    return d


def _western(year: int, month: int, day: int) -> dt.date:
    try:
        return dt.date(year, month, day)
    except ValueError as exc:
        raise DateError(f"{year}-{month}-{day} is not a calendar date: {exc}") from None


# --- patterns -----------------------------------------------------------------

_SP = r"[ \t\u3000]*"  # OCR and typesetting put spaces anywhere; never across lines
_NUMCH = "0-9０-９〇○零一二三四五六七八九十壱弐参拾廿卅ー"  # ー: OCR's reading of 一
_NUM = f"[{_NUMCH}](?:{_SP}[{_NUMCH}]){{0,4}}"
_ERA_NAMES = "|".join(f"{n[0]}{_SP}{n[1]}" for n in ("令和", "平成", "昭和", "大正", "明治")) + "|㋿|㍻|㍼|㍽|㍾"
# era names as OCR misreads them (令利, 今和, 平戌); only used where a full 年月日 follows
_ERA_OCR = {"令": "令今合", "和": "和利私", "平": "平", "成": "成戌威", "昭": "昭", "明": "明", "治": "治冶"}
_ERA_NAMES_OCR = "|".join(f"[{_ERA_OCR.get(n[0], n[0])}]{_SP}[{_ERA_OCR.get(n[1], n[1])}]"
                          for n in ("令和", "平成", "昭和", "明治")) + "|" + _ERA_NAMES
_ERA_FIX = {"今": "令", "合": "令", "利": "和", "私": "和", "戌": "成", "威": "成", "冶": "治"}
# 日 and its OCR misreadings (曰 目 晶 口); a day number at the end of the line or before the
# weekday （月） is a date even when OCR lost the 日
_DAY = r"(?:[日曰目晶]|口(?![0-9０-９])|(?=[ \t\u3000]*(?:$|[(（][ \t\u3000]*[月火水木金土日])))"
_SEP = r"[./\-．／－・]"
_D12 = r"[0-9０-９]{1,2}"
_D4 = r"[0-9０-９]{4}"
_D4S = rf"[0-9０-９](?:{_SP}[0-9０-９]){{3}}"  # a year with OCR's stray spaces: ２ 025

_ERA_RE = re.compile(
    rf"(?P<era>{_ERA_NAMES_OCR}){_SP}(?P<y>元|{_NUM}){_SP}年{_SP}(?P<m>{_NUM}){_SP}月{_SP}(?P<d>{_NUM}){_SP}{_DAY}")
_ABBR_RE = re.compile(
    rf"(?<![A-Za-zＡ-Ｚａ-ｚ0-9０-９])(?P<era>{_ERA_NAMES}|[MTSHRmtshrＭＴＳＨＲｍｔｓｈｒ令平昭大明]){_SP}\.?{_SP}(?P<y>{_D12}|元)"
    rf"{_SP}{_SEP}{_SP}(?P<m>{_D12}){_SP}{_SEP}{_SP}(?P<d>{_D12})(?![0-9０-９])")
_WKANJI_YEAR = "[〇○零一二三四五六七八九]{4}"
_WEST_RE = re.compile(
    rf"(?<![0-9０-９])(?P<y>{_D4S}|{_WKANJI_YEAR}){_SP}年{_SP}(?P<m>{_NUM}){_SP}月{_SP}(?P<d>{_NUM}){_SP}{_DAY}")
_WEST_SEP_RE = re.compile(
    rf"(?<![0-9０-９.\-/])(?P<y>{_D4}){_SP}(?P<s>[./\-．／－]){_SP}(?P<m>{_D12}){_SP}(?P=s){_SP}(?P<d>{_D12})(?![0-9０-９])")
_FY_RE = re.compile(
    rf"(?:(?P<era>{_ERA_NAMES})|(?<![A-Za-z])(?P<letter>[RHSTMＲＨＳＴＭ]))?{_SP}(?P<y>元|{_NUM}|{_D4}){_SP}年{_SP}度")


def _num(s: str) -> int:
    n = parse_kanji_number(re.sub(r"\s", "", s).replace("ー", "一"))
    if n is None:
        raise DateError(f"not a number: {s!r}")
    return n


def _era_of(token: str) -> str:
    token = re.sub(r"\s", "", token)
    if len(token) == 2:
        token = "".join(_ERA_FIX.get(c, c) for c in token)
        if token == "令成" or token not in _BY_NAME:  # mixed-up pairs are not eras
            raise DateError(f"unknown era {token!r}")
    token = unicodedata.normalize("NFKC", token) if token not in _ABBREV else token
    if token in _BY_NAME:
        return token
    if token in _ABBREV:
        return _ABBREV[token]
    letter = token.upper()
    if letter in _BY_LETTER:
        return _BY_LETTER[letter].name
    # NFKC turns ㍻ into 平成 before we get here, so the ligatures are covered above too
    raise DateError(f"unknown era {token!r}")


def _from_match(kind: str, m: re.Match[str]) -> dt.date:
    if kind in ("era", "abbr"):
        y = 1 if m["y"] == "元" else _num(m["y"])
        return resolve_era_date(_era_of(m["era"]), y, _num(m["m"]), _num(m["d"]))
    return _western(_num(m["y"]), _num(m["m"]), _num(m["d"]))


_PATTERNS = (("era", _ERA_RE), ("abbr", _ABBR_RE), ("west", _WEST_RE), ("west_sep", _WEST_SEP_RE))


@dataclass(frozen=True)
class DateMatch:
    start: int  # offsets into the text given to find_dates
    end: int
    text: str  # as printed, e.g. 令和７年１２月９日
    date: dt.date
    kind: str = "era"  # era (令和7年12月9日), abbr (R7.12.9), west (2025年12月9日), west_sep (2025/12/9)

    @property
    def clean_text(self) -> str:
        """The expression as printed, with the OCR misreadings the finder tolerated undone
        (曰/目/晶 -> 日, a lost 日 restored, ー used as the numeral 一), no outer spaces."""
        t = self.text.strip()
        if self.kind == "era":
            m = re.match(r"([令今合平昭大明])([ \t\u3000]*)([和利私成戌威正治冶])", t)
            if m:
                t = _ERA_FIX.get(m[1], m[1]) + m[2] + _ERA_FIX.get(m[3], m[3]) + t[m.end():]
        if self.kind in ("era", "west"):
            t = re.sub(r"[曰目晶口]$", "日", t)
            if not t.endswith("日"):
                t += "日"
        return re.sub(r"ー(?=[\s\u3000]*[年月日〇一二三四五六七八九十])|(?<=[年月十〇一二三四五六七八九])ー", "一", t)


def find_dates(text: str) -> list[DateMatch]:
    """Every valid date expression in ``text``, in order, with offsets into ``text``.

    Expressions that look like dates but name no real day (令和元年4月1日, 2月30日) are
    skipped: a finder that returned them would date a record wrongly.
    """
    found: list[DateMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, rx in _PATTERNS:
        for m in rx.finditer(text):
            s, e = m.span()
            if any(s < te and ts < e for ts, te in taken):
                continue
            taken.append((s, e))  # an invalid era date also blocks weaker readings of itself
            try:
                d = _from_match(kind, m)
            except DateError:
                continue
            if kind.startswith("west") and not (1868 <= d.year <= 2200):
                continue
            found.append(DateMatch(s, e, text[s:e], d, kind))
    found.sort(key=lambda x: x.start)
    return found


def parse_date(text: str) -> dt.date | None:
    """The date when ``text`` is exactly one date expression (surrounding spaces allowed).

    Returns None for anything else, including impossible dates; use
    :func:`parse_date_strict` to learn why a date was refused.
    """
    try:
        return parse_date_strict(text)
    except DateError:
        return None


def parse_date_strict(text: str) -> dt.date:
    """Like :func:`parse_date` but raises DateError naming the reason."""
    t = text.strip(" \t\u3000\r\n")
    for kind, rx in _PATTERNS:
        m = rx.fullmatch(t)
        if m:
            return _from_match(kind, m)
    raise DateError(f"not a date expression: {text!r}")


# --- fiscal years -------------------------------------------------------------

def fiscal_year(d: dt.date) -> int:
    """Japanese fiscal year (年度, April-March): 2026-03-31 belongs to FY2025."""
    return d.year if d.month >= 4 else d.year - 1


def _fy_from_match(m: re.Match[str]) -> int:
    y = 1 if m["y"] == "元" else _num(m["y"])
    era_tok = m["era"] or m["letter"]
    if not era_tok:
        if y < 1868:
            raise DateError(f"{y}年度 is not a plausible fiscal year")
        return y
    era = _BY_NAME[_era_of(era_tok)]
    if y < 1:
        raise DateError("era years start at 元年")
    fy = era.offset + y
    # the fiscal year (April fy - March fy+1) must overlap the era: 平成31年度 and
    # 令和元年度 both exist (FY2019), 平成32年度 and 昭和64年度 do not
    if dt.date(fy + 1, 3, 31) < era.first or (era.last is not None and dt.date(fy, 4, 1) > era.last):
        raise DateError(f"{era.name}{y}年度 does not exist")
    return fy


def parse_fiscal_year(text: str) -> int | None:
    """FY as a Western int from a 年度 expression: 令和7年度 -> 2025, 平成31年度 -> 2019, 2025年度 -> 2025."""
    m = _FY_RE.fullmatch(text.strip(" \t\u3000\r\n"))
    if not m:
        return None
    try:
        return _fy_from_match(m)
    except DateError:
        return None


def find_fiscal_years(text: str) -> list[tuple[int, int, int]]:
    """(start, end, fiscal year) for every valid 年度 expression in ``text``."""
    out = []
    for m in _FY_RE.finditer(text):
        if not (m["era"] or m["letter"]) and not re.fullmatch(_D4, m["y"]):
            continue  # "3年度" alone is not a fiscal year
        try:
            out.append((m.start(), m.end(), _fy_from_match(m)))
        except DateError:
            continue
    return out


# --- rendering ----------------------------------------------------------------

_FW = str.maketrans("0123456789", "０１２３４５６７８９")
_KD = "〇一二三四五六七八九"


def _kanji(n: int) -> str:
    """Unit-style kanji numeral (1-99 is all dates need, but any n < 10000 works)."""
    if n == 0:
        return "〇"
    out = ""
    for unit, ch in ((1000, "千"), (100, "百"), (10, "十")):
        q, n = divmod(n, unit)
        if q:
            out += ("" if q == 1 else _KD[q]) + ch
    return out + (_KD[n] if n else "")


def era_of(d: dt.date) -> Era:
    """The era a Gregorian date falls in (DateError before 明治)."""
    for era in ERAS:
        if d >= era.first and (era.last is None or d <= era.last):
            return era
    raise DateError(f"{d.isoformat()} predates the 明治 era")


def to_wareki(d: dt.date, *, digits: str = "ascii", gannen: bool = True) -> str:
    """Era rendering for display and search: 2019-05-01 -> 令和元年5月1日.

    digits: "ascii" (令和7年12月9日), "fullwidth" (令和７年１２月９日) or "kanji"
    (令和七年十二月九日). Dates before 1873 are refused: they were not Gregorian in Japan.
    """
    era = era_of(d)
    if era.gregorian_from and d < era.gregorian_from:
        raise DateError(f"{d.isoformat()} predates the Gregorian calendar in Japan")
    y = d.year - era.offset
    if digits == "kanji":
        conv = _kanji
    elif digits == "fullwidth":
        def conv(n: int) -> str:
            return str(n).translate(_FW)
    elif digits == "ascii":
        conv = str
    else:
        raise ValueError(f"digits must be ascii, fullwidth or kanji, not {digits!r}")
    ys = "元" if (y == 1 and gannen) else conv(y)
    return f"{era.name}{ys}年{conv(d.month)}月{conv(d.day)}日"
