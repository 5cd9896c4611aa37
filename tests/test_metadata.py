"""Metadata extraction on small realistic documents of every type, on the samples, and on noisy text."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from processors.records.metadata import (
    DOCUMENT_TYPES_PATH,
    DocumentTypesError,
    build_doc,
    extract_metadata,
    load_document_types,
    ocr_fix,
    parse_amount,
    parse_document_types,
)
from processors.records.extract import extract_from_text
from schemas.record import Line, Page

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "samples"

LETTER_TSUCHI = """教委第１号の２
令和７年１２月９日
各小中学校長　様
長岡市教育委員会教育長　佐藤　一郎
（公印省略）
令和８年度学校給食費の改定及び徴収方法の変更に
ついて（通知）
このことについて、下記のとおり決定したので通知します。
記
１　改定時期　令和８年４月１日
２　改定額　　月額４，８００円
（担当）学校教育課　給食係　村上　恵
電話　0258-39-2238
"""

LETTER_SHOKAI = """7新総第12号
令和元年五月一日
新潟県総務部長　様
新発田市総務部長
公共施設の耐震化状況に関する調査について（照会）
標記のことについて、下記のとおり照会します。
回答期限　令和元年5月31日（金）
（問合せ先）総務課　施設係　井上 翔
TEL 0254-22-3030
"""

LETTER_KAITO = """総務第56号
平成31年3月31日
長岡市長　殿
長岡市総務部長　高橋　修
職員研修の実施状況について（回答）
平成31年3月1日付け新人第400号で照会のあったこのことについて、下記のとおり回答します。
"""

LETTER_HOKOKU = """長岡市総務第56号
令和6年10月1日
新潟県知事　様
長岡市長　磯田 達伸
令和6年度上半期の防災訓練実施結果について（報告）
このことについて、別紙のとおり報告します。
－ 1 －\f別紙
防災訓練実施結果報告書
番号 地区名 参加者数
1 川口地区 120
－ 2 －
"""

LETTER_IRAI = """第123号
2025年6月2日
長岡市自治会連合会長　御中
長岡市市民協働部長
地域防災訓練への参加について（依頼）
時下ますます御清栄のこととお喜び申し上げます。
つきましては、下記のとおり御協力くださるようお願いします。
"""

CONTRACT = """工事請負契約書
契約番号　R7-土木-0042
1　工事名　　　市道本町線舗装補修工事
2　工事場所　　新潟県長岡市本町3丁目地内
3　工期　　　　令和7年6月2日から令和7年9月30日まで
4　請負代金額　金12,345,000円
（うち取引に係る消費税及び地方消費税の額　金1,122,272円）
発注者長岡市（以下「甲」という。）と受注者有限会社北越舗道（以下「乙」という。）は、
次の条項によって契約を締結する。
第1条　甲は、乙に前払金を支払う。
甲は、乙が適法な請求書を提出したときは、30日以内に支払う。
－ 1 －\fこの契約の締結を証するため、本書2通を作成し、甲乙記名押印の上、各自1通を保有する。
令和7年5月28日
甲　住所　新潟県長岡市大手通1丁目4番地10
長岡市長　磯田　達伸
乙　住所　新潟県長岡市宮内5丁目12番3号
有限会社北越舗道
代表取締役　小林　誠
－ 2 －
"""

INVOICE = """請　求　書
No. 2511-203
発行日　2025年11月20日
長岡市長　様
合同会社みどり造園
代表社員　斎藤 美咲
〒940-0081　新潟県長岡市坂之上町2丁目3番5号
TEL 0258-33-1144
下記のとおりご請求申し上げます。
一金壱百弐拾万円也
品名 数量 単価 金額
樹木剪定作業 1 式 1,090,910 1,090,910
消費税（10%） 109,090
合計 1,200,000
お支払期限　2025年12月31日
"""

APPLICATION = """令和７年４月１５日
長岡市長　様
道路占用許可申請書
下記のとおり申請します。
申請者
住所　〒940-2108　新潟県長岡市千秋2丁目278番地
氏名　渡部　恵美子
生年月日　昭和58年6月7日
電話番号　090-4821-7733
個人番号 4012 3456 7890
占用の目的　看板設置
占用の期間　令和7年5月1日から令和8年3月31日まで
"""

MINUTES = """令和6年度第2回長岡市男女共同参画審議会 会議録
事務局：長岡市市民協働部人権・男女共同参画課
1　開催日時　令和6年11月5日（火）午前10時から正午まで
2　開催場所　長岡市役所アオーレ長岡大会議室
3　出席者　委員　星野　由紀（会長）、丸山　一樹、西村　彩、
野口　拓也
事務局　人権・男女共同参画課長　桑原　徹、遠藤　里美
4　議題
（1）第5次男女共同参画計画の進捗状況について
5　次回開催　令和7年2月10日
"""

JIREI = """辞　令
佐々木　陽介
教育委員会事務局学校教育課主事に補する
令和七年四月一日
長岡市長　磯田　達伸
"""

HYOSHO = """表彰状
小川　美穂　様
あなたは永年にわたり民生委員として地域福祉の向上に尽力されました
よってここに表彰します
令和六年十一月三日
新潟県知事　花角　英世
"""

EXPECTED = {
    "tsuchi": (LETTER_TSUCHI, dict(
        document_type="通知", title="令和８年度学校給食費の改定及び徴収方法の変更について（通知）",
        document_number="教委第１号の２", document_date=dt.date(2025, 12, 9), document_date_text="令和７年１２月９日",
        issuer="長岡市教育委員会教育長　佐藤　一郎", addressee="各小中学校長", fiscal_year=2025, amount=None,
        counterparty=None)),
    "shokai": (LETTER_SHOKAI, dict(
        document_type="照会", title="公共施設の耐震化状況に関する調査について（照会）", document_number="7新総第12号",
        document_date=dt.date(2019, 5, 1), document_date_text="令和元年五月一日", issuer="新発田市総務部長",
        addressee="新潟県総務部長", fiscal_year=2019)),
    "kaito": (LETTER_KAITO, dict(
        document_type="回答", title="職員研修の実施状況について（回答）", document_number="総務第56号",
        document_date=dt.date(2019, 3, 31), document_date_text="平成31年3月31日", issuer="長岡市総務部長　高橋　修",
        addressee="長岡市長", fiscal_year=2018)),
    "hokoku": (LETTER_HOKOKU, dict(
        document_type="報告", title="令和6年度上半期の防災訓練実施結果について（報告）", document_number="長岡市総務第56号",
        document_date=dt.date(2024, 10, 1), issuer="長岡市長　磯田 達伸", addressee="新潟県知事", fiscal_year=2024)),
    "irai": (LETTER_IRAI, dict(
        document_type="依頼", title="地域防災訓練への参加について（依頼）", document_number="第123号",
        document_date=dt.date(2025, 6, 2), document_date_text="2025年6月2日", issuer="長岡市市民協働部長",
        addressee="長岡市自治会連合会長")),
    "contract": (CONTRACT, dict(
        document_type="契約書", title="工事請負契約書", document_number="R7-土木-0042",
        document_date=dt.date(2025, 5, 28), document_date_text="令和7年5月28日", issuer="長岡市長　磯田　達伸",
        addressee=None, fiscal_year=2025, amount=12_345_000, counterparty="有限会社北越舗道")),
    "invoice": (INVOICE, dict(
        document_type="請求書", title="請　求　書", document_number="2511-203", document_date=dt.date(2025, 11, 20),
        document_date_text="2025年11月20日", issuer="合同会社みどり造園", addressee="長岡市長", fiscal_year=2025,
        amount=1_200_000, counterparty="合同会社みどり造園")),
    "application": (APPLICATION, dict(
        document_type="申請書", title="道路占用許可申請書", document_number=None, document_date=dt.date(2025, 4, 15),
        document_date_text="令和７年４月１５日", issuer="渡部　恵美子", addressee="長岡市長", fiscal_year=2025,
        amount=None, counterparty=None)),
    "minutes": (MINUTES, dict(
        document_type="議事録", title="令和6年度第2回長岡市男女共同参画審議会 会議録", document_number=None,
        document_date=dt.date(2024, 11, 5), document_date_text="令和6年11月5日",
        issuer="長岡市市民協働部人権・男女共同参画課", addressee=None, fiscal_year=2024)),
    "jirei": (JIREI, dict(
        document_type="辞令", title="辞　令", document_date=dt.date(2025, 4, 1), document_date_text="令和七年四月一日",
        issuer="長岡市長　磯田　達伸", addressee="佐々木　陽介", fiscal_year=2025, document_number=None)),
    "hyosho": (HYOSHO, dict(
        document_type="表彰状", title="表彰状", document_date=dt.date(2024, 11, 3), document_date_text="令和六年十一月三日",
        issuer="新潟県知事　花角　英世", addressee="小川　美穂", fiscal_year=2024)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fields_of_each_document_type(name: str) -> None:
    text, want = EXPECTED[name]
    md = extract_metadata(text)
    got = {k: getattr(md, k) for k in want}
    assert got == want
    # every field found carries evidence pointing at a real line holding it
    for fname in want:
        if want[fname] is None or fname in ("document_type", "fiscal_year"):
            continue
        ev = md.evidence.get(fname)
        assert ev is not None, fname
        page_lines = text.split("\f")[ev.page].split("\n") if ev.line is not None else None
        if page_lines is not None:
            assert page_lines[ev.line].strip() == ev.text
        assert 0 < ev.confidence <= 1


def test_amount_and_counterparty_only_on_contracts_and_invoices() -> None:
    text = LETTER_TSUCHI.replace("２　改定額　　月額４，８００円", "２　契約金額　金4,800,000円")
    md = extract_metadata(text)
    assert md.amount is None and md.counterparty is None


@pytest.mark.parametrize("text,yen", [
    ("¥710,443－（税込）", 710443), ("金31,195,800円", 31195800), ("一金壱百万円也", 1_000_000),
    ("金　１２，３４５円", 12345), ("￥ 1,200,000-", 1_200_000), ("一金壱百弐拾参万四千五百六拾七円也", 1_234_567),
])
def test_parse_amount(text: str, yen: int) -> None:
    assert parse_amount(text) == yen


def test_title_with_subject_label() -> None:
    text = "総第8号\n令和7年1月6日\n各課長　様\n総務課長\n件名：文書管理システムの停止について\n標記のことについて、お知らせします。\n"
    md = extract_metadata(text)
    assert md.title == "文書管理システムの停止について"
    assert md.issuer == "総務課長"
    assert md.addressee == "各課長"


def test_unrecognisable_document_is_other() -> None:
    md = extract_metadata("メモ\n会議室の鍵は守衛室にあります。\n")
    assert md.document_type == "その他"
    assert md.document_date is None


def test_empty_text_gives_empty_metadata() -> None:
    assert extract_metadata("").document_type is None
    assert extract_metadata("\f\f").model_dump(exclude={"evidence"}) == {k: None for k in (
        "document_type", "title", "document_number", "document_date", "document_date_text", "issuer", "addressee",
        "fiscal_year", "amount", "counterparty")}


# --- OCR noise ---------------------------------------------------------------------

def _noisy(text: str, seed: int) -> str:
    """Spaces between characters, full/half-width swaps and typical misreadings."""
    rng = random.Random(seed)
    subs = {"第": "築", "号": "兮", "日": "曰", "一": "ー", "工": "エ"}
    out = []
    for ch in text:
        if ch in "\n\f":
            out.append(ch)
            continue
        if ch in subs and rng.random() < 0.3:
            ch = subs[ch]
        elif ch.isascii() and ch.isalnum() and rng.random() < 0.3:
            ch = chr(ord(ch) + 0xFEE0)
        out.append(ch)
        if rng.random() < 0.1:
            out.append(rng.choice([" ", "\u3000"]))
    return "".join(out)


def _n(v: object) -> object:
    return re.sub(r"\s", "", unicodedata.normalize("NFKC", v)) if isinstance(v, str) else v


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fields_survive_ocr_noise(name: str, seed: int) -> None:
    text, want = EXPECTED[name]
    noisy = _noisy(text, seed * 101 + len(name))
    md = extract_metadata(noisy)
    for k, v in want.items():
        assert _n(getattr(md, k)) == _n(v), (k, noisy)


def test_ocr_fix_is_length_preserving_and_targeted() -> None:
    assert ocr_fix("柴田健ー") == "柴田健一"
    assert ocr_fix("株式会社アサヒ設備エ 業") == "株式会社アサヒ設備工 業"
    assert ocr_fix("築4回") == "第4回" and ocr_fix("築40年の庁舎") == "築40年の庁舎"
    assert ocr_fix("コピー用紙") == "コピー用紙" and ocr_fix("エネルギー") == "エネルギー"
    s = "平成三十ー年ー月一曰 新総築12兮"
    assert len(ocr_fix(s)) == len(s)


# --- OCR pages with line boxes --------------------------------------------------------

def _page(lines: list[tuple[str, tuple[int, int, int, int]]], conf: float = 90.0) -> Page:
    return Page(index=0, dpi=300, width_px=2480, height_px=3508, text="\n".join(t for t, _ in lines),
                lines=[Line(text=t, bbox=b, confidence=conf) for t, b in lines])


def test_layout_boxes_decide_issuer_and_wrapped_title() -> None:
    # issuer over two right-aligned lines; the title wrapped over two centred lines; the
    # first title line alone looks like an office name, so only the layout tells them apart
    page = _page([
        ("総第77号", (1900, 300, 2200, 360)),
        ("令和7年7月7日", (1800, 380, 2200, 440)),
        ("各部局長　様", (250, 520, 700, 580)),
        ("長岡市総務部", (1700, 640, 2200, 700)),
        ("総務課長　山崎　亮", (1650, 720, 2200, 780)),
        ("長岡市文書取扱規程等の一部改正に伴う事務処理要領改定委員会", (330, 900, 2150, 960)),
        ("の設置について（通知）", (900, 980, 1580, 1040)),
        ("標記のことについて、下記のとおり通知します。", (250, 1100, 2200, 1160)),
    ], conf=80.0)
    md = extract_metadata(page.text, pages=[page])
    assert md.title == "長岡市文書取扱規程等の一部改正に伴う事務処理要領改定委員会の設置について（通知）"
    assert md.issuer == "総務課長　山崎　亮"
    assert md.addressee == "各部局長"
    assert md.document_date == dt.date(2025, 7, 7)
    ev = md.evidence["issuer"]
    assert (ev.page, ev.line, ev.text) == (0, 4, "総務課長　山崎　亮")
    assert ev.confidence <= 0.8  # scaled by the OCR line confidence


def test_pages_keep_their_index_for_evidence() -> None:
    blank = Page(index=0, dpi=300, width_px=2480, height_px=3508, blank=True)
    page = Page(index=1, dpi=300, width_px=2480, height_px=3508, text=LETTER_KAITO)
    md = extract_metadata("", pages=[blank, page])
    assert md.document_number == "総務第56号"
    assert md.evidence["document_number"].page == 1


# --- document types are data ------------------------------------------------------------

def test_default_document_types_load() -> None:
    cat = load_document_types()
    assert cat.names == ["通知", "依頼", "照会", "回答", "報告", "契約書", "申請書", "請求書", "議事録", "辞令", "表彰状", "その他"]


def test_municipality_can_add_a_type(tmp_path: Path) -> None:
    data = yaml.safe_load(DOCUMENT_TYPES_PATH.read_text("utf-8"))
    data["types"].insert(0, {"name": "復命書", "layout": "letter", "titles": ["復命書$"], "cues": ["復命します"]})
    p = tmp_path / "types.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    text = "令和7年8月1日\n長岡市長　様\n総務課主査　原田　誠\n出張復命書\n下記のとおり復命します。\n"
    res = extract_from_text(text, types=p)
    assert res.metadata.document_type == "復命書"
    assert res.metadata.title == "出張復命書"
    assert res.retention is not None and res.retention.rule == "default"  # no schedule rule for it yet


@pytest.mark.parametrize("entry,message", [
    ({"name": "復命書", "layout": "memo", "titles": ["復命書$"]}, r"types\[0\] \(復命書\): layout 'memo'"),
    ({"name": "復命書", "layout": "letter", "titles": ["復命書($"]}, r"types\[0\] \(復命書\): titles\[0\] .* not a valid"),
    ({"name": "復命書", "layout": "letter"}, r"types\[0\] \(復命書\): needs at least one"),
    ({"layout": "letter", "titles": ["x"]}, r"types\[0\]: 'name' is missing"),
    ({"name": "通知", "layout": "letter", "suffixes": ["通知"], "colour": "red"}, r"unknown keys \['colour'\]"),
])
def test_document_types_validation_names_the_entry(entry: dict, message: str) -> None:
    with pytest.raises(DocumentTypesError, match=message):
        parse_document_types({"version": 1, "types": [entry]}, "types.yaml")


def test_duplicate_type_is_refused() -> None:
    t = {"name": "通知", "layout": "letter", "suffixes": ["通知"]}
    with pytest.raises(DocumentTypesError, match=r"types\[1\] \(通知\): duplicate"):
        parse_document_types({"types": [t, t]})


# --- the samples ---------------------------------------------------------------------

def _samples() -> list[dict]:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples is not available")
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SAMPLES.glob("*.truth.json"))]


def _norm_field(name: str, v: object) -> object:
    if v is None:
        return None
    if isinstance(v, dt.date):
        return v.isoformat()
    if name in ("fiscal_year", "amount"):
        return int(v)  # type: ignore[arg-type]
    s = _n(str(v))
    if name in ("issuer", "addressee", "counterparty"):
        s = re.sub(r"(御中|様|殿)$", "", s)
    return s or None


def test_samples_all_fields_exact() -> None:
    failures = []
    for t in _samples():
        text = "\f".join(p["text"] for p in t["pages"])
        md = extract_metadata(text)
        for k, v in t["metadata"].items():
            if _norm_field(k, v) != _norm_field(k, getattr(md, k)):
                failures.append((t["id"], k, v, getattr(md, k)))
    assert failures == []


def test_build_doc_splits_pages_and_keeps_line_numbers() -> None:
    doc = build_doc("a\n\nb\fc")
    assert [[(ln.page, ln.index, ln.raw) for ln in p] for p in doc.pages] == [[(0, 0, "a"), (0, 2, "b")], [(1, 0, "c")]]


# --- real OCR on a rendered letter ----------------------------------------------------------

IPA_MINCHO = Path("/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf")


def _render_letter(lines: list[tuple[str, str]], width: int = 1654, height: int = 1400):
    """A4-wide page at 200 dpi: (alignment, text) lines drawn with IPA Mincho."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(IPA_MINCHO), 40)
    y, margin = 120, 160
    for align, text in lines:
        w = draw.textlength(text, font=font)
        x = {"left": margin, "right": width - margin - w, "center": (width - w) / 2}[align]
        draw.text((x, y), text, font=font, fill=0)
        y += 75
    return img


def _tesseract_page(img) -> Page:
    """Lines with boxes from tesseract's TSV, as the OCR stage hands them over."""
    import pytesseract

    d = pytesseract.image_to_data(img, lang="jpn", config="--psm 6", output_type=pytesseract.Output.DICT)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for k, word in enumerate(d["text"]):
        if word.strip():
            groups.setdefault((d["block_num"][k], d["par_num"][k], d["line_num"][k]), []).append(k)
    lines = []
    for ks in sorted(groups.values(), key=lambda ks: min(d["top"][k] for k in ks)):
        box = (min(d["left"][k] for k in ks), min(d["top"][k] for k in ks),
               max(d["left"][k] + d["width"][k] for k in ks), max(d["top"][k] + d["height"][k] for k in ks))
        conf = sum(max(0.0, float(d["conf"][k])) for k in ks) / len(ks)
        lines.append(Line(text=" ".join(d["text"][k] for k in ks), bbox=box, confidence=conf))
    return Page(index=0, dpi=200, width_px=img.width, height_px=img.height,
                text="\n".join(ln.text for ln in lines), lines=lines)


@pytest.mark.slow
def test_real_tesseract_lines_of_a_rendered_letter() -> None:
    import shutil

    if not IPA_MINCHO.exists() or shutil.which("tesseract") is None:
        pytest.skip("IPA fonts or tesseract not installed")
    img = _render_letter([
        ("right", "新総第1234号"),
        ("right", "令和7年12月9日"),
        ("left", "新潟県知事　様"),
        ("right", "新潟市長　山田　太郎"),
        ("center", "地域防災計画の修正について（報告）"),
        ("left", "標記のことについて、下記のとおり報告します。"),
        ("center", "記"),
        ("left", "１　修正内容　避難所の追加"),
    ])
    page = _tesseract_page(img)
    assert any(ln.bbox[0] > img.width * 0.5 for ln in page.lines)  # right-aligned lines were found as such
    md = extract_metadata(page.text, pages=[page])
    assert md.document_type == "報告"
    assert _n(md.document_number) == "新総第1234号"
    assert md.document_date == dt.date(2025, 12, 9)
    assert _n(md.addressee) == "新潟県知事"
    assert _n(md.issuer) == "新潟市長山田太郎"
    assert _n(md.title) == "地域防災計画の修正について(報告)"
    assert md.evidence["issuer"].confidence < 0.85  # OCR confidence is part of it


# --- quirks of real tesseract output (seen on the sample scans) -------------------------------

def test_letter_as_tesseract_reads_it() -> None:
    # number without its 号, a date line with a stray digit, 様 read as 欄 with a box edge,
    # debris after wide gaps, the seal note with a speck, a junk line from the seal
    text = ("新総第1234\n令和7年12月9日      8\n新潟県知事 欄                            |\n"
            "/ ーをっ 。\\\n新潟市長 山田 太郎      |\n(公印省略)       1\n"
            "地域防災計画の修正について (報告)            |\n標記のことについて報告します。      |\n")
    md = extract_metadata(text)
    assert (md.document_type, md.document_number, md.document_date) == ("報告", "新総第1234号", dt.date(2025, 12, 9))
    assert _n(md.addressee) == "新潟県知事"
    assert _n(md.issuer) == "新潟市長山田太郎"
    assert _n(md.title) == "地域防災計画の修正について(報告)"


def test_invoice_as_tesseract_reads_it() -> None:
    text = ("ロ目  求  書\n請求番号 2507-311\n請求日 令利7年7月14晶\n上越市長 様                      '\n"
            "株式会社頸城建設 葉\n代表取締役 丸山 修\nTEL. 025-523-0000\n仙請求金額   \\1,430,000一 (税込)\n")
    md = extract_metadata(text)
    assert (md.document_type, md.title, md.document_number) == ("請求書", "請求書", "2507-311")
    assert (md.document_date, md.document_date_text) == (dt.date(2025, 7, 14), "令和7年7月14日")
    assert (md.issuer, md.counterparty, md.amount) == ("株式会社頸城建設", "株式会社頸城建設", 1_430_000)


def test_contract_with_orderer_and_contractor_blocks() -> None:
    text = ("物品売買契約書\n契約番号　第88号\n1　契約金額　金2,200,000円\n"
            "上記について、発注者と受注者は次のとおり契約を締結する。\n"
            "令和7年10月1日\n発注者　新潟県上越市木田1丁目1番3号\n上越市長　中川　幹太\n"
            "受注者　新潟県上越市本町3丁目4番5号\n株式会社高田事務機　代表取締役　北村　聡\n")
    md = extract_metadata(text)
    assert (md.document_type, md.document_number, md.document_date) == ("契約書", "第88号", dt.date(2025, 10, 1))
    assert (md.issuer, md.counterparty, md.amount) == ("上越市長　中川　幹太", "株式会社高田事務機", 2_200_000)


def test_no_date_rather_than_a_wrong_one() -> None:
    # the letter's own date is unreadable: a cited letter's date or a deadline must not stand in
    text = ("総第5号\n令和7年1 2月\n各課長　様\n総務課長\n文書の点検について（依頼）\n"
            "令和7年11月1日付け総第3号で通知したこのことについて、下記のとおり依頼します。\n"
            "提出期限　令和8年1月9日（金）\n")
    md = extract_metadata(text)
    assert md.document_date is None and md.fiscal_year is None


def test_contract_block_split_by_indentation_when_otsu_is_lost() -> None:
    # OCR lost the 乙 of the second signature block; the boxes still show where it starts
    rows = [
        ("令和7年5月28日", (340, 530, 640, 570)),
        ("甲　新潟県長岡市大手通1丁目4番地10", (520, 600, 960, 660)),
        ("長岡市長　磯田　達伸", (580, 700, 960, 760)),
        ("新潟県長岡市宮内5丁目12番3号", (520, 790, 960, 840)),
        ("有限会社北越舗道", (580, 840, 930, 900)),
        ("代表取締役　小林　誠", (580, 900, 950, 960)),
    ]
    text = "業務委託契約書\n契約金額　金1,000,000円\n" + "\n".join(t for t, _ in rows)
    page = Page(index=0, dpi=300, width_px=2480, height_px=3508, text=text,
                lines=[Line(text="業務委託契約書", bbox=(900, 200, 1500, 260), confidence=90),
                       Line(text="契約金額　金1,000,000円", bbox=(330, 300, 900, 350), confidence=90)]
                + [Line(text=t, bbox=b, confidence=90) for t, b in rows])
    md = extract_metadata(text, pages=[page])
    assert md.issuer == "長岡市長　磯田　達伸"
    assert md.counterparty == "有限会社北越舗道"
    # without boxes the issuer is still the office holder, never the place name 長野/長岡 in an address
    assert extract_metadata(text).issuer == "長岡市長　磯田　達伸"


def test_certificate_with_ocr_debris_around_columns() -> None:
    text = "っwi iliiliiiin上\n表彰状\n- 田中\u3000健\u3000服\nあなたは永年にわたり尽力されました\n" \
           "- 平成二十七年四月十五日 [\n、\u3000金沢市長木村\u3000由美子\n"
    md = extract_metadata(text)
    assert (md.document_type, md.document_date) == ("表彰状", dt.date(2015, 4, 15))
    assert _n(md.addressee) == "田中健" and _n(md.issuer) == "金沢市長木村由美子"


# --- real city form names and labels (issue #10) ------------------------------------------

REAL_FORMS = [
    # (text, type, title, addressee, applicant)
    ("児童手当認定請求書\n浦安市長　様\n令和６年４月１日\n請求者　住所　浦安市猫実一丁目１番１号\n氏名　山田　花子\n"
     "児童手当の認定を請求します。", "申請書", "児童手当認定請求書", "浦安市長", "山田　花子"),
    ("住民票の写し等交付申出書\n（宛先）浦安市長\n令和６年５月１０日\n申出者　住所　東京都千代田区一丁目１番\n"
     "申出者　氏名　佐藤　一郎\n下記のとおり申し出ます。", "申請書", "住民票の写し等交付申出書", "浦安市長", "佐藤　一郎"),
    ("転出届\n船橋市長　あて\n令和６年３月１日\n届出人　氏名　田中　三郎\n上記のとおり届け出ます。",
     "申請書", "転出届", "船橋市長", "田中　三郎"),
    ("行政文書開示請求書\n浦安市長　様\n令和６年６月１日\n請求者氏名　高橋　四郎\n開示を請求します。",
     "申請書", "行政文書開示請求書", "浦安市長", "高橋　四郎"),
    ("令和６年度\n就学援助費受給申請書\n浦安市教育委員会　様\n保護者　氏名　鈴木　五月\n申請します。",
     "申請書", "就学援助費受給申請書", "浦安市教育委員会", "鈴木　五月"),
]


@pytest.mark.parametrize("text,dtype,title,addressee,applicant", REAL_FORMS)
def test_real_form_names_are_applications(text: str, dtype: str, title: str, addressee: str, applicant: str) -> None:
    result = extract_from_text(text)
    md = result.metadata
    assert (md.document_type, md.title, md.addressee, md.issuer) == (dtype, title, addressee, applicant)
    names = [p.value for p in result.pii if p.type == "person_name"]
    assert applicant in names


def test_contractor_claims_stay_invoices() -> None:
    for title in ("工事代金請求書", "請求書", "御請求書"):
        md = extract_from_text(f"{title}\n浦安市長　様\n請求金額　１２０，０００円\n株式会社浦安建設\n上記のとおり請求します。").metadata
        assert md.document_type == "請求書", title


def test_form_title_with_a_qualifier_and_blank_fields() -> None:
    """A real form prints its name with a qualifier on the same line, and an empty form has no applicant."""
    text = ("別記第1号様式（第5条第1項）　市教委提出用\n就学援助申請書　<準・要>令和6年度分\n（宛先）浦安市教育委員会\n"
            "下記の理由により就学援助の支給を受けたいので、必要書類を添付のうえ申請します。\n令和　年　月　日　住　所浦安市\n"
            "申請者電話番号\n保護者氏名*\n児童氏名個人番号：　続柄")
    result = extract_from_text(text)
    md = result.metadata
    assert (md.document_type, md.title, md.addressee, md.issuer) == ("申請書", "就学援助申請書", "浦安市教育委員会", None)
    assert not [p for p in result.pii if p.type == "person_name"]


def test_layout_regions_guide_the_readers() -> None:
    """A title region further down still names the form; a footer region is never the issuer."""
    from schemas.record import Region

    header = [f"注意事項{i}：記入前に裏面の説明を必ずお読みください" for i in range(16)]
    texts = header + ["児童手当認定請求書", "浦安市長　様", "請求者　氏名　山田　花子"]
    lines = [Line(text=t, bbox=(100, 100 + 60 * i, 1500, 140 + 60 * i), confidence=95.0) for i, t in enumerate(texts)]
    regions = [Region(kind="text", bbox=(100, 100, 1500, 1060), lines=list(range(16))),
               Region(kind="title", bbox=(100, 1060, 1500, 1100), lines=[16]),
               Region(kind="text", bbox=(100, 1120, 1500, 1220), lines=[17, 18])]
    page = Page(index=0, text="\n".join(texts), lines=lines, regions=regions, width_px=1654, height_px=2339, dpi=200)
    md = extract_from_text(page.text, pages=[page]).metadata
    assert (md.document_type, md.title) == ("申請書", "児童手当認定請求書")

    letter = ["総第１２号", "令和６年４月１日", "各課長　様", "総務部長", "文書の保存について（通知）", "本文です。", "浦安市役所総務課"]
    lines = [Line(text=t, bbox=(100, 100 + 60 * i, 1500, 140 + 60 * i), confidence=95.0) for i, t in enumerate(letter)]
    page = Page(index=0, text="\n".join(letter), lines=lines, width_px=1654, height_px=2339, dpi=200,
                regions=[Region(kind="footer", bbox=(100, 2200, 1500, 2240), lines=[3])])
    md = extract_from_text(page.text, pages=[page]).metadata
    assert md.issuer is None  # 総務部長 was (by the layout) a running footer, not the signature block
