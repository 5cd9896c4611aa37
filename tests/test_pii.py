"""Personal data: 個人番号 check digits, phones, private vs official contacts, and the class it implies."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.records.classification import PolicyError, classify, load_policy, parse_policy
from processors.records.extract import extract_from_text
from processors.records.metadata import extract_metadata
from processors.records.pii import (
    find_my_numbers,
    find_personal_data,
    find_phones,
    is_valid_my_number,
    my_number_check_digit,
)
from schemas.record import Metadata, PersonalData

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "samples"


def _check_digit_reference(first11: str) -> int:
    """The statutory definition, digit by digit from the RIGHT (P_1 is the last of the 11)."""
    total = 0
    for n in range(1, 12):
        p = int(first11[11 - n])
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    r = total % 11
    return 0 if r <= 1 else 11 - r


# --- 個人番号 --------------------------------------------------------------------------

@pytest.mark.parametrize("number", ["784887966100", "123456789018", "401234567890"])
def test_known_valid_my_numbers(number: str) -> None:
    assert is_valid_my_number(number)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=11, max_size=11), st.integers(0, 9))
def test_check_digit_matches_statutory_definition(first11: str, wrong: int) -> None:
    good = _check_digit_reference(first11)
    assert my_number_check_digit(first11) == good
    assert is_valid_my_number(first11 + str(good))
    if wrong != good:
        assert not is_valid_my_number(first11 + str(wrong))


@pytest.mark.parametrize("printed", ["7848 8796 6100", "7848-8796-6100", "７８４８８７９６６１００", "7 8 4 8 8 7 9 6 6 1 0 0"])
def test_my_number_printed_forms(printed: str) -> None:
    assert is_valid_my_number(printed)
    assert find_my_numbers(f"個人番号 {printed}") == [printed]


def test_wrong_check_digit_is_not_a_my_number() -> None:
    assert not is_valid_my_number("784887966101")
    assert find_my_numbers("個人番号 784887966101") == []
    # a 13-digit 法人番号 or a longer run does not hide a 12-digit one inside it
    assert find_my_numbers("法人番号 1784887966100") == []
    assert find_my_numbers("電話 070-1229-4646 口座 2280277") == []


# --- phones -------------------------------------------------------------------------------

def test_phones() -> None:
    text = "電話　076-312-9453（内線833）\nTEL 03(3581)4111\n携帯 ０９０－４８２１－７７３３\nFAX 0258392238\n請求番号 2202-076\n"
    assert find_phones(text) == ["076-312-9453", "03(3581)4111", "０９０－４８２１－７７３３", "0258392238"]


def test_numbers_that_are_not_phones() -> None:
    assert find_phones("金額 1,234,567円 番号 2202-076 口座 2280277 日付 2025-12-09") == []


# --- private vs public -------------------------------------------------------------------------

APPLICATION = """令和7年9月12日
上越市長　様
印鑑登録証明書交付申請書
申請者
住　所　〒943-0834　新潟県上越市西城町3丁目8番22号
氏　名　長谷川　美和
生年月日　平成2年11月30日
電話番号　080-5521-0937
個人番号　1234 5678 9018
※ 本人確認書類を提示してください。
（問合せ先）上越市市民課　電話 025-526-5111
"""


def _pairs(items: list[PersonalData]) -> set[tuple[str, str]]:
    def norm(t: str, v: str) -> str:
        s = re.sub(r"\s", "", unicodedata.normalize("NFKC", v))
        return re.sub(r"\D", "", s) if t in ("phone", "my_number") else s
    return {(p.type, norm(p.type, p.value)) for p in items}


def test_applicant_data_is_private_and_office_phone_public() -> None:
    found = find_personal_data(APPLICATION)
    assert _pairs(found.private) == {
        ("person_name", "長谷川美和"), ("address", "新潟県上越市西城町3丁目8番22号"), ("birth_date", "1990-11-30"),
        ("phone", "08055210937"), ("my_number", "123456789018")}
    assert ("phone", "0255265111") in _pairs(found.public)
    assert all(p.page == 0 for p in found.private)
    # values are as printed: the address without its 〒 code, the number with its spaces
    by_type = {p.type: p.value for p in found.private}
    assert by_type["address"] == "新潟県上越市西城町3丁目8番22号"
    assert by_type["my_number"] == "1234 5678 9018"


def test_official_letter_has_no_private_data() -> None:
    text = """総第12号
令和7年4月1日
各課長　様
長岡市長　磯田　達伸
人事異動に伴う事務引継ぎについて（通知）
標記のことについて通知します。
（担当）総務部人事課　人事係　白石　洋平
電話　0258-39-2203（内線2203）
"""
    found = find_personal_data(text)
    assert found.private == []
    assert _pairs(found.public) >= {("person_name", "磯田達伸"), ("person_name", "白石洋平"), ("phone", "0258392203")}


def test_minutes_members_private_secretariat_public() -> None:
    text = """令和7年度第1回上越市環境審議会　議事録
（事務局　上越市自然環境部環境政策課）
1　日時　令和7年6月20日（金）　午後2時から午後4時まで
2　場所　上越市役所401会議室
3　出席者　委員　岩崎　直子（会長）、久保田　亮、
森本　千尋、大野　健太郎
事務局　環境政策課長　松井　隆、新井　由香
4　欠席者　委員　平田　光
5　議題
（1）環境基本計画の改定について
"""
    found = find_personal_data(text)
    assert _pairs(found.private) == {("person_name", n) for n in ("岩崎直子", "久保田亮", "森本千尋", "大野健太郎", "平田光")}
    assert _pairs(found.public) >= {("person_name", "松井隆"), ("person_name", "新井由香")}


def test_appointee_and_recipient_are_private_signatory_public() -> None:
    jirei = "辞　令\n石井　大輔\n総務部財政課主任に任命する\n令和七年四月一日\n上越市長　中川　幹太\n"
    found = find_personal_data(jirei)
    assert _pairs(found.private) == {("person_name", "石井大輔")}
    assert _pairs(found.public) == {("person_name", "中川幹太")}
    org_award = "表彰状\n上越市西城町自治会　殿\nあなたは多年にわたり地域の美化に尽くされました\n令和六年十一月三日\n上越市長　中川　幹太\n"
    assert find_personal_data(org_award).private == []  # an organisation is not a person


def test_company_contacts_are_public() -> None:
    text = """請　求　書
請求番号　2503-114
請求日　令和7年3月18日
上越市長　様
株式会社高田測量設計
代表取締役　小山　正樹
〒943-0892　新潟県上越市寺町2丁目15番1号
TEL　025-523-8810
御請求金額　¥348,700－（税込）
"""
    found = find_personal_data(text)
    assert found.private == []
    assert _pairs(found.public) == {("person_name", "小山正樹"), ("phone", "0255238810"),
                                    ("address", "新潟県上越市寺町2丁目15番1号")}


def test_extract_from_text_puts_only_private_data_in_pii() -> None:
    res = extract_from_text(APPLICATION)
    assert {p.type for p in res.pii} == {"person_name", "address", "birth_date", "phone", "my_number"}
    assert all(p.value not in ("025-526-5111",) for p in res.pii)
    assert res.classification == "機密性3A"


def test_samples_pii_exact() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples is not available")
    for p in sorted(SAMPLES.glob("*.truth.json")):
        t = json.loads(p.read_text(encoding="utf-8"))
        text = "\f".join(pg["text"] for pg in t["pages"])
        found = find_personal_data(text, metadata=extract_metadata(text))
        want = {(x["type"], x["value"]) for x in t["pii"]}
        truth = _pairs([PersonalData(type=a, value=(b if a != "address" else re.sub(r"^〒?\d{3}-?\d{4}", "", b)))
                        for a, b in want])
        assert _pairs(found.private) == truth, t["id"]


# --- classification ---------------------------------------------------------------------------

def _pd(t: str, v: str = "x") -> PersonalData:
    return PersonalData(type=t, value=v)


def test_default_policy_classes() -> None:
    pol = load_policy()
    assert pol.classes == ("機密性3A", "機密性3B", "機密性3C", "機密性2", "機密性1")
    md = Metadata(document_type="申請書")
    assert classify([_pd("my_number"), _pd("person_name")], md, pol) == "機密性3A"
    assert classify([_pd("person_name")], md, pol) == "機密性3B"
    assert classify([], Metadata(document_type="通知"), pol) == "機密性2"


def test_policy_rules_are_data_and_strictest_wins() -> None:
    pol = parse_policy({
        "classes": ["機密性3A", "機密性3B", "機密性3C", "機密性2", "機密性1"],
        "default": "機密性1",
        "rules": [
            {"name": "人事", "when": {"document_types": ["辞令"]}, "class": "機密性3C"},
            {"name": "入札", "when": {"title_keywords": ["入札"]}, "class": "機密性2"},
            {"name": "個人", "when": {"any_pii": True}, "class": "機密性3B"},
        ]})
    assert classify([], Metadata(document_type="通知", title="広報紙の発行について（通知）"), pol) == "機密性1"
    assert classify([], Metadata(document_type="通知", title="入 札結果について（通知）"), pol) == "機密性2"
    assert classify([_pd("person_name")], Metadata(document_type="辞令"), pol) == "機密性3B"
    assert classify([], Metadata(document_type="辞令"), pol) == "機密性3C"


@pytest.mark.parametrize("data,message", [
    ({"classes": ["A"], "default": "B"}, r"default 'B' is not one of"),
    ({"classes": ["A", "B"], "default": "B", "rules": [{"name": "r", "when": {"pii_types": ["ssn"]}, "class": "A"}]},
     r"rules\[0\] \(r\): unknown pii types \['ssn'\]"),
    ({"classes": ["A", "B"], "default": "B", "rules": [{"name": "r", "when": {"any_pii": True}, "class": "C"}]},
     r"rules\[0\] \(r\): class 'C' is not one of"),
    ({"classes": ["A", "B"], "default": "B", "rules": [{"name": "r", "when": {"colour": 1}, "class": "A"}]},
     r"rules\[0\] \(r\): unknown tests \['colour'\]"),
])
def test_policy_validation_names_the_entry(data: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(data, "classification.yaml")


def test_minutes_bracketed_roles_and_tesseract_debris() -> None:
    text = """令和7年度第3回上越市都市計画審議会　会議録
（事務局　上越市都市整備部都市整備課）
1　日時　令和7年11月4日（火）　午前10時から正午まで
2　出席者　委員　小池　真一（会長）、渡辺　紀子、
_ （事務局）都市整備課長　山口　剛、主任　高野　舞
3　欠席委員　村田　浩
"""
    found = find_personal_data(text)
    assert _pairs(found.private) == {("person_name", n) for n in ("小池真一", "渡辺紀子", "村田浩")}
    assert {"山口剛", "高野舞"} <= {v for t, v in _pairs(found.public) if t == "person_name"}


def test_boxed_my_number_in_ocr_text() -> None:
    assert find_my_numbers("個人番号 |1|2|3|4|5|6|7|8|9|0|1|8|") == ["1|2|3|4|5|6|7|8|9|0|1|8"]
    assert is_valid_my_number("1|2|3|4|5|6|7|8|9|0|1|8")


def test_minutes_line_break_that_lost_its_comma() -> None:
    text = ("第1回審議会　議事録\n（事務局　総務課）\n1　日時　令和7年6月2日（月）\n"
            "2　出席者　委員　菊池　紀子（会長）、増井　直樹、柴崎　健一\n前川　翔子\n"
            "事務局　総務課長　上野　勝、中野　愛\n3　議題\n")
    found = find_personal_data(text)
    assert _pairs(found.private) == {("person_name", n) for n in ("菊池紀子", "増井直樹", "柴崎健一", "前川翔子")}
