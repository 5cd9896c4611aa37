"""Personal data (個人情報) in a municipal record, split into private and official.

The archive must know which records hold personal data about private individuals:
that decides the confidentiality class, who may see the record and what has to be
masked on disclosure. Names and numbers printed in an *official or business capacity*
(the mayor who signs a letter, the staff contact and office phone at the bottom, a
company's representative and address) are not that: counting them would mark every
letter as personal and drown the real cases, so they are reported separately as
``public``.

Types: ``my_number`` (個人番号, only with a correct check digit), ``phone``,
``birth_date`` (ISO), ``address`` (without the 〒 code) and ``person_name``.
Values are as printed. Private personal data is found where paperwork puts it:
the applicant block of a form, the committee members of minutes, the appointee of a
辞令 and the recipient of a 表彰状, plus any valid 個人番号 and labelled 生年月日.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from processors.records import dates
from processors.records.metadata import (
    _APPLICANT,
    _COMPANY,
    _OFFICE,
    _NAME_LABEL,
    _PERSON_STOP,
    _REP_WORDS,
    Doc,
    TLine,
    TypeCatalog,
    _as_doc,
    _catalog,
    _field_after,
    _key_and_map,
    _no_honorific,
    _party_blocks,
    _strip_numbering,
    classify_document,
    extract_metadata,
)
from schemas.record import Metadata, Page, PersonalData

__all__ = [
    "MY_NUMBER_WEIGHTS",
    "my_number_check_digit",
    "is_valid_my_number",
    "find_my_numbers",
    "find_phones",
    "PiiFindings",
    "find_personal_data",
]

# 個人番号 check digit (行政手続における特定の個人を識別するための番号の利用等に関する法律施行令
# 第8条): P_n is the n-th digit counted from the right of the first 11 (n = 1..11),
# Q_n = n + 1 for n <= 6 and n - 5 for n >= 7; r = sum(P_n * Q_n) mod 11; the check
# digit is 0 when r <= 1, else 11 - r. Read from the left, the weights are:
MY_NUMBER_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def my_number_check_digit(first11: str) -> int:
    """The check digit for the first 11 digits of a 個人番号."""
    digits = [int(c) for c in unicodedata.normalize("NFKC", first11) if c.isdigit()]
    if len(digits) != 11:
        raise ValueError(f"a 個人番号 has 11 digits before the check digit, got {len(digits)}")
    r = sum(d * w for d, w in zip(digits, MY_NUMBER_WEIGHTS)) % 11
    return 0 if r <= 1 else 11 - r


def is_valid_my_number(value: str) -> bool:
    """True for exactly 12 digits (spaces, hyphens and box rules ignored) with a correct check digit."""
    digits = "".join(c for c in unicodedata.normalize("NFKC", value) if c.isdigit())
    if len(digits) != 12 or re.search(r"[^\d\s\-|｜│ー‐−]", unicodedata.normalize("NFKC", value)):
        return False
    return my_number_check_digit(digits[:11]) == int(digits[11])


_HY = r"[-ー‐−–—―]"
_MYNUM_RE = re.compile(rf"(?<![\d-])(\d{{4}}){_HY}?(\d{{4}}){_HY}?(\d{{4}})(?![\d])")


def _my_numbers_in(ln: TLine) -> list[tuple[int, int, str]]:
    out = []
    for m in _MYNUM_RE.finditer(ln.key):
        digits = "".join(m.groups())
        if my_number_check_digit(digits[:11]) == int(digits[11]):
            out.append((m.start(), m.end(), ln.span(m.start(), m.end())))
    return out


def find_my_numbers(text: str) -> list[str]:
    """Every valid 個人番号 in ``text`` as printed (12 digits, spaced or boxed, right check digit)."""
    return [v for ln in _as_doc(text, None).lines for _, _, v in _my_numbers_in(ln)]


# Japanese numbers: 0 + area code + local + subscriber = 10 digits (landline) or 11 (mobile, 0120 is 10)
_PHONE_SEP = re.compile(rf"(?<![\d-])(0\d{{1,4}})(?:{_HY}|\()(\d{{1,4}})(?:{_HY}|\))(\d{{3,4}})(?![\d])")
_PHONE_PLAIN = re.compile(r"(?<![\d-])(0\d{9,10})(?!\d)")
_PHONE_LABEL = re.compile(r"(電話|TEL|Tel|tel|携帯|FAX|Fax|連絡先|℡)")


def _phones_in(ln: TLine) -> list[tuple[int, int, str]]:
    out = []
    for m in _PHONE_SEP.finditer(ln.key):
        n = sum(len(g) for g in m.groups())
        if n in (10, 11):
            out.append((m.start(), m.end(), ln.span(m.start(), m.end())))
    if not out and _PHONE_LABEL.search(ln.key):
        for m in _PHONE_PLAIN.finditer(ln.key):
            out.append((m.start(), m.end(), ln.span(m.start(), m.end())))
    return out


def find_phones(text: str) -> list[str]:
    """Every Japanese phone number in ``text`` as printed (076-312-9453, 070-1229-4646, 03(1234)5678)."""
    return [v for ln in _as_doc(text, None).lines for _, _, v in _phones_in(ln)]


@dataclass
class PiiFindings:
    private: list[PersonalData] = field(default_factory=list)  # → Record.pii
    public: list[PersonalData] = field(default_factory=list)  # officials, staff, companies

    def add(self, private: bool, type_: str, value: str | None, page: int | None) -> None:
        if not value:
            return
        value = value.strip()
        norm = _norm(type_, value)
        if not norm:
            return
        target = self.private if private else self.public
        for other in (self.private, self.public):
            for x in other:
                if x.type == type_ and _norm(x.type, x.value) == norm:
                    if private and other is self.public:  # private wins: move it
                        other.remove(x)
                        break
                    return
        target.append(PersonalData(type=type_, value=value, page=page))


def _norm(type_: str, value: str) -> str:
    s = re.sub(r"\s", "", unicodedata.normalize("NFKC", value))
    if type_ in ("my_number", "phone"):
        return re.sub(r"\D", "", s)
    if type_ == "address":
        return re.sub(r"^〒?\d{3}-?\d{4}", "", s)
    return s


# --- context ------------------------------------------------------------------

_STAFF = re.compile(r"^[(（【\[]?(?:担当|担当者|問合せ先?|問い合わせ先?|お問い合わせ|連絡先|照会先|事務担当)[)）】\]]?")
_SECTION_END = re.compile(r"^[(（【\[]?(?:申請内容|申請事項|届出内容|記$|以下|備考|注意|※|受付|確認|処理欄|事務処理)")
_ADDR_LABEL = r"住所|現住所|居所|住所又は所在地"
_POSTAL = re.compile(r"^[\s\u3000]*〒?[\s\u3000]*[0-9０-９]{3}[-－ー‐−]?[0-9０-９]{4}[\s\u3000]*")
_OFFICE_WORDS = re.compile(r"(市役所|区役所|役場|庁舎|[課係室]|センター|事務所|株式会社|会社|代表|内線)")
_NAME_OK = re.compile(r"^[^\d、。,:：()（）]{2,16}$")
_ORG_NAME = re.compile(r"(株式会社|会社|協会|団体|組合|法人|委員会|[会団部課局]$|学校|自治会|クラブ|センター|[都道府県市区町村]$)")


def _person_value(v: str | None) -> str | None:
    if not v:
        return None
    v = _no_honorific(v)
    v = re.sub(r"[\s\u3000]*(?:[（(]?(?:印|㊞|自署)[）)]?)$", "", v).strip()
    k = _key_and_map(v)[0]
    return v if _NAME_OK.match(k) and not _ORG_NAME.search(k) else None


def _address_value(v: str | None) -> str | None:
    if not v:
        return None
    v = _POSTAL.sub("", v).strip()
    return v or None


def _name_after_office(raw: str) -> str | None:
    """「金沢市長　石田 由美子」 -> 「石田 由美子」: the name printed after an office title."""
    k, pos = _key_and_map(raw)
    best = spaced = None
    for m in re.finditer(rf"{_OFFICE}|{_REP_WORDS}|(?:係|課|室|班|グループ|主査|主事|主任|主幹|補佐|参事|担当)(?=.)", k):
        best = m
        nxt = pos[m.end() - 1] + 1
        if nxt < len(raw) and raw[nxt].isspace():
            spaced = m  # the title is set off from the name by a space: 市長　長谷川 花子
    best = spaced or best
    if best is None or best.end() >= len(k):
        return None
    name = raw[pos[best.end()]:].strip()
    return _person_value(name)


def _applicant_lines(doc: Doc) -> list[TLine]:
    """Lines of the applicant block(s): from a 申請者/届出人/代理人 heading to the next section
    (申請内容, 記, 備考, ※ ...) or the staff contact; empty when the form has no such heading."""
    lines = doc.lines
    out: list[TLine] = []
    in_block = False
    for ln in lines:
        k, _ = _strip_numbering(ln.key)
        if re.match(rf"^[(（【\[]?{_APPLICANT}|^[(（【\[]?代理人", k):
            in_block = True
        elif in_block and (_SECTION_END.match(k) or _STAFF.match(k)):
            in_block = False
        if in_block:
            out.append(ln)
    return out


# --- minutes ------------------------------------------------------------------------

_ROLE = re.compile(r"(副委員長|委員長|副会長|会長|委員|事務局|説明員|説明者|関係課|関係者|オブザーバー|傍聴者?|市側|県側|幹事)")
_PRIVATE_ROLES = {"委員", "委員長", "副委員長", "会長", "副会長"}
_ATTEND = re.compile(r"^(?:出席者|出席委員|欠席者|欠席委員|出席|欠席|委員名簿|構成員)")
_ITEM_START = re.compile(r"^(?:\d{1,2}(?![\d,])|[(（]\d{1,2}[)）]|[①-⑳]|[一二三四五六七八九十]{1,2}[、.．])")


# a complete name printed with a space between family and given name (山田　太郎)
_SPACED_NAME = re.compile(r"^[^\s\u3000、,，()（）]{1,5}[ \u3000]+[^\s\u3000、,，()（）]{1,5}$")


def _tail(text: str) -> str:
    """The last list item of a line, without a trailing bracket note."""
    last = re.split(r"[、,，]", text)[-1]
    return re.sub(r"[（(][^）)]*[）)]\s*$", "", last).strip()


def _minutes_people(doc: Doc, found: PiiFindings) -> None:
    lines = doc.lines
    i = 0
    while i < len(lines):
        k, off = _strip_numbering(lines[i].key)
        m = _ATTEND.match(k)
        if not m:
            i += 1
            continue
        section = [lines[i]]
        j = i + 1
        while j < len(lines) and not _ITEM_START.match(lines[j].key) and len(section) < 8:
            section.append(lines[j])
            j += 1
        # join the section into one text; a line break before a role label or after 、 separates
        text, pages = "", []
        for n, ln in enumerate(section):
            seg = ln.raw.strip()
            if n == 0:
                seg = ln.span(off + m.end())
            if text and not re.search(r"[、,，]$", text):
                if _ROLE.match(_key_and_map(seg)[0].lstrip("_]」・-")):
                    text += "、"
                elif _SPACED_NAME.match(_tail(text)) and _SPACED_NAME.match(re.split(r"[、,，]", seg)[0].strip()):
                    text += "、"  # OCR lost the 、 at the line end: 「柴田　健一」 / 「前田　翔太」
            text += seg
            pages.append(ln.page)
        absent_default = k.startswith("欠席")
        role = "委員" if absent_default or k.startswith("出席委員") else None
        # a role in brackets starts a new group: （事務局）総務課長 ○○; other brackets go: （会長）
        text = re.sub(rf"[（(【\[][ \u3000]*({_ROLE.pattern})[ \u3000]*[）)】\]]", r"、\1 ", text)
        text = re.sub(r"[（(][^）)]*[）)]", "", text)
        for part in re.split(r"[、,，]", text):
            part = part.strip(" \u3000")
            pk = _key_and_map(part)[0]
            rm = _ROLE.match(pk)
            if rm:
                role = rm.group(1)
                part = part[_key_and_map(part)[1][rm.end() - 1] + 1:].strip(" \u3000:：") if rm.end() < len(pk) else ""
            if not part:
                continue
            private = role in _PRIVATE_ROLES
            if not private:
                name = _name_after_office(part) or _person_value(part)
            else:
                part = re.sub(r"[\s\u3000]*(?:委員長|副委員長|委員|会長|副会長)$", "", part)
                name = _person_value(part)
            found.add(private, "person_name", name, pages[0])
        i = j


# --- the whole document ---------------------------------------------------------------

def find_personal_data(text: str | Doc, *, pages: list[Page] | None = None, metadata: Metadata | None = None,
                       types: TypeCatalog | str | Path | None = None) -> PiiFindings:
    """Personal data in a document, split into private individuals and official/business contacts."""
    doc = _as_doc(text, pages)
    catalog = _catalog(types)
    md = metadata if metadata is not None else extract_metadata(doc, types=catalog)
    dtype = catalog.get(md.document_type) if md.document_type else classify_document(doc, catalog)[0]
    layout = dtype.layout
    found = PiiFindings()

    staff: set[int] = set()  # lines of the staff contact block (担当 ... to the page end)
    for page in doc.pages:
        in_staff = False
        for ln in page:
            if _STAFF.match(_strip_numbering(ln.key)[0]):
                in_staff = True
            if in_staff:
                staff.add(id(ln))
    applicant = {id(ln) for ln in _applicant_lines(doc)}
    form_like = layout == "form"

    for ln in doc.lines:
        # a form's applicant block when it has one, else (a form without the heading) every line
        # outside the staff contact; elsewhere only an explicit applicant block
        private_ctx = id(ln) not in staff and (id(ln) in applicant or (form_like and not applicant))
        for _, _, v in _my_numbers_in(ln):
            found.add(True, "my_number", v, ln.page)
        for _, _, v in _phones_in(ln):
            personal = bool(re.search(r"電話|携帯|TEL|連絡先", ln.key)) and not _OFFICE_WORDS.search(ln.key)
            found.add(private_ctx and personal, "phone", v, ln.page)
        if "生年月日" in ln.key:
            for dm in dates.find_dates(ln.raw):
                found.add(id(ln) not in staff, "birth_date", dm.date.isoformat(), ln.page)
        if private_ctx:
            addr = _field_after(ln, _ADDR_LABEL, r"(氏名|電話|TEL|生年月日|個人番号)")
            if addr is None and ln.key.startswith("〒") and not _COMPANY.search(ln.key):
                addr = ln.raw  # the 住所 label lost (a boxed form cell read without it)
            found.add(True, "address", _address_value(addr), ln.page)
            name = _field_after(ln, _NAME_LABEL, _PERSON_STOP)
            found.add(True, "person_name", _person_value(name), ln.page)

    if layout == "minutes":
        _minutes_people(doc, found)
    if layout == "certificate" and md.addressee:
        ev = md.evidence.get("addressee")
        found.add(True, "person_name", _person_value(md.addressee), ev.page if ev else None)

    # officials and business contacts (reported as public)
    if md.issuer and layout in ("letter", "certificate", "contract"):
        ev = md.evidence.get("issuer")
        found.add(False, "person_name", _name_after_office(md.issuer), ev.page if ev else None)
    for ln in doc.lines:
        if id(ln) in staff and _STAFF.match(_strip_numbering(ln.key)[0]):
            found.add(False, "person_name", _name_after_office(ln.raw), ln.page)
        k = ln.key
        if re.match(_REP_WORDS, k) and layout in ("invoice", "contract", "letter", "form"):
            found.add(False, "person_name", _name_after_office(ln.raw), ln.page)
        if layout in ("invoice", "letter") and k.startswith("〒") and id(ln) not in applicant:
            found.add(False, "address", _address_value(ln.raw), ln.page)
    if layout == "contract":
        for block in _party_blocks(doc).values():
            for s, ln in block:
                sk = _key_and_map(s)[0]
                if re.search(r"[都道府県市区町村郡].*(?:\d|丁目|番地)", sk) and not _COMPANY.search(sk):
                    found.add(False, "address", _address_value(re.sub(r"^(?:住所|所在地)[:：\s\u3000]*", "", s)), ln.page)
                elif re.search(_OFFICE, sk) or re.search(_REP_WORDS, sk):
                    found.add(False, "person_name", _name_after_office(s), ln.page)
    return found
