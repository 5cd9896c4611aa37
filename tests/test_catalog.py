"""The catalog against a real database: SQLite in tmp_path always, PostgreSQL when one can be had.

PostgreSQL: set KIROKU_TEST_POSTGRES_URL to a scratch database, or have the Debian
postgresql packages installed; a throwaway cluster is then initialised in /tmp and
started for the session (as the postgres user when run as root). Without either, the
PostgreSQL runs are skipped and the SQLite ones still run.
"""

from __future__ import annotations

import csv
import datetime as dt
import glob
import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from processors.archive.catalog import (
    REGISTER_COLUMNS,
    Catalog,
    DuplicateScanError,
    document_number_key,
    metadata,
    normalize,
    query_terms,
    write_register_csv,
)
from schemas.record import Archive, Evidence, Line, Metadata, Page, PersonalData, Record, Retention, Source, Word

UTC = dt.timezone.utc
_serial = itertools.count()


def make_record(
    record_id: str | None = None,
    text: str = "",
    *,
    title: str | None = None,
    document_type: str | None = None,
    number: str | None = None,
    issuer: str | None = None,
    day: dt.date | None = None,
    fiscal_year: int | None = None,
    department: str | None = "総務課",
    retention: Retention | None = None,
    sha256: str | None = None,
    stored_at: dt.datetime | None = None,
    **meta: object,
) -> Record:
    n = next(_serial)
    record_id = record_id or f"rec-{n:05d}"
    sha = sha256 or hashlib.sha256(f"{record_id}-{n}".encode()).hexdigest()
    archive = Archive(
        bucket="kiroku-archive", key=f"2024/{department}/{record_id}.pdf", sha256=sha, pdfa="2b",
        original_key=f"2024/{department}/{record_id}.tif", record_key=f"2024/{department}/{record_id}.json",
        stored_at=stored_at or dt.datetime(2025, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=n),
    )
    return Record(
        id=record_id,
        source=Source(filename=f"{record_id}.tif", sha256=sha, bytes=1234, format="tiff", department=department,
                      received_at=dt.datetime(2025, 1, 1, 9, 0, tzinfo=UTC)),
        text=text,
        metadata=Metadata(title=title, document_type=document_type, document_number=number, issuer=issuer,
                          document_date=day, fiscal_year=fiscal_year, **meta),
        retention=retention,
        archive=archive,
    )


def ids(hits) -> list[str]:  # noqa: ANN001
    return [h.record_id for h in hits]


# --------------------------------------------------------------------------- databases


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL: $KIROKU_TEST_POSTGRES_URL, or a throwaway cluster started here."""
    if url := os.environ.get("KIROKU_TEST_POSTGRES_URL"):
        yield url
        return
    pg_ctls = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not pg_ctls:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql) and no KIROKU_TEST_POSTGRES_URL")
    bindir = Path(pg_ctls[-1]).parent
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="kiroku-test-pg-"))
    data = base / "data"
    port = _free_port()
    try:
        if as_root:
            shutil.chown(base, "postgres", "postgres")
        subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                                 "--locale=C.UTF-8", "--auth=trust"], check=True, capture_output=True, timeout=120)
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
                                 "-o", f"-p {port} -k {base} -c listen_addresses='' -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError, LookupError) as exc:
        shutil.rmtree(base, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"could not start a PostgreSQL cluster: {exc} {detail.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={base}&port={port}"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    metadata.drop_all(engine)  # every test starts from an empty catalog
    engine.dispose()
    yield url
    engine = create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog(catalog_url) as cat:
        yield cat


# --------------------------------------------------------------------------- normal form


def test_normal_form_folds_width_case_and_ocr_spacing() -> None:
    assert normalize("ＡＢＣ　ｶﾅ 契 約\n書") == "abcかな契約書"  # katakana folds to hiragana
    assert normalize("ﾊﾟﾝﾌﾚｯﾄ") == normalize("パンフレット") == "ぱんふれっと"  # half-width voiced marks compose
    assert normalize("ゴミ") == normalize("ごみ") and normalize("單位") == normalize("単位") == "単位"  # 旧字体 → 新字体
    assert query_terms("補助金　交付 「契 約」 補助金") == ["補助金", "交付", "契約"]
    assert query_terms('"業務 委託" ＡＢＣ') == ["業務委託", "abc"]
    assert query_terms("   ") == []
    assert document_number_key("新総第１２３４号") == document_number_key("新総第 1234 号") == "新総第1234号"
    assert document_number_key("新総第千二百三十四号") == "新総第1234号"
    assert document_number_key("新総第一二三四号") == "新総第1234号"
    assert document_number_key("新総第二十号") == "新総第20号"


# --------------------------------------------------------------------------- full text


def test_two_character_word_finds_title_and_text_not_others(catalog: Catalog) -> None:
    in_title = make_record(text="本件について下記のとおり締結する。", title="業務委託契約書")
    in_text = make_record(text="令和6年度の清掃業務の契約を更新した。", title="清掃業務について")
    without = make_record(text="補助金の交付決定について通知します。", title="補助金交付決定通知書")
    for r in (in_title, in_text, without):
        catalog.add(r)

    hits = catalog.search("契約")
    assert ids(hits) == [in_title.id, in_text.id]  # the title hit ranks first
    assert "契約" in hits[1].snippet
    assert hits[0].archive_key == in_title.archive.key
    assert hits[0].title == "業務委託契約書"
    assert ids(catalog.search("交付")) == [without.id]
    assert catalog.search("議会") == []


def test_width_variants_and_ocr_spacing_still_match(catalog: Catalog) -> None:
    wide = make_record(text="受注者　ＡＢＣ株式会社\nｶﾅ入力システムの保守\n金額　１２３，０００円")
    spaced = make_record(text="本 件 は 契 約 の 更 新 に つ い て で あ る 。")
    split_line = make_record(text="指定管理者の選定に係る業務委\n託契約について")
    for r in (wide, spaced, split_line):
        catalog.add(r)

    for query in ("ABC", "abc", "ＡＢＣ株式会社", "カナ入力", "ｶﾅ入力", "123,000", "１２３，０００円"):
        assert ids(catalog.search(query)) == [wide.id], query
    hits = catalog.search("契約の更新")
    assert ids(hits) == [spaced.id]
    assert "契 約 の 更 新" in hits[0].snippet  # the snippet shows the text as printed
    assert ids(catalog.search("業務委託契約")) == [split_line.id]
    assert ids(catalog.search("契約")) == [split_line.id, spaced.id]  # same count, undated: last stored first


def test_one_character_query_and_multi_word_and(catalog: Catalog) -> None:
    bridge = make_record(text="市道１号線の橋梁点検を実施した。", title="橋梁点検業務報告")
    grant = make_record(text="補助金の交付決定について通知する。道路改良事業。", title="補助金交付決定")
    other = make_record(text="補助金の申請を受け付けた。", title="申請受付")
    for r in (bridge, grant, other):
        catalog.add(r)

    assert ids(catalog.search("橋")) == [bridge.id]
    assert set(ids(catalog.search("道"))) == {bridge.id, grant.id}
    assert ids(catalog.search("補助金 交付")) == [grant.id]
    assert set(ids(catalog.search("補助金"))) == {grant.id, other.id}
    assert ids(catalog.search("補助金 橋")) == []
    assert ids(catalog.search("道 交付 補助金")) == [grant.id]
    assert ids(catalog.search("橋 点検業務")) == [bridge.id]
    # a character that only ends a field (the title here), and counting single characters
    edge = make_record(text="本文に該当なし", title="辞令")
    many = make_record(text="道道道の道")
    catalog.add(edge)
    catalog.add(many)
    assert ids(catalog.search("令")) == [edge.id]
    assert ids(catalog.search("道")) == [many.id, grant.id, bridge.id]  # 4 times, then once each: last stored first


def test_results_are_exact_despite_shared_bigrams(catalog: Catalog) -> None:
    # Every bigram of 補助金交付 is in this text, but not the word itself.
    decoy = make_record(text="補助金と金交付と交付金の違い。", title="用語集")
    real = make_record(text="補助金交付規則に基づき交付する。", title="交付決定")
    catalog.add(decoy)
    catalog.add(real)
    assert ids(catalog.search("補助金交付")) == [real.id]
    assert set(ids(catalog.search("補助金"))) == {decoy.id, real.id}
    # LIKE wildcards in a query are literal characters.
    percent = make_record(text="達成率100%を目標とする。")
    catalog.add(percent)
    assert ids(catalog.search("100%")) == [percent.id]
    assert catalog.search("0%を目_") == []
    assert catalog.search("_%") == []
    # a word whose bigrams are all the same one
    repeated = make_record(text="ああああと叫んだ。")
    catalog.add(repeated)
    assert ids(catalog.search("ああああ")) == [repeated.id]
    assert ids(catalog.search("あああ")) == [repeated.id]
    assert catalog.search("あああああ") == []


def test_ranking_title_then_occurrences_then_newest(catalog: Catalog) -> None:
    titled = make_record(text="予算の執行", title="予算執行計画", day=dt.date(2019, 4, 1))
    thrice = make_record(text="予算執行。予算執行の状況。予算執行率。", title="状況報告", day=dt.date(2020, 4, 1))
    once_new = make_record(text="予算執行について", title="連絡", day=dt.date(2024, 4, 1))
    once_old = make_record(text="予算執行について", title="連絡", day=dt.date(2021, 4, 1))
    undated = make_record(text="予算執行について", title="連絡", day=None)
    for r in (once_old, undated, thrice, once_new, titled):
        catalog.add(r)
    expected = [titled.id, thrice.id, once_new.id, once_old.id, undated.id]
    assert ids(catalog.search("予算執行")) == expected
    hits = catalog.search("予算執行")
    assert hits[0].score > hits[1].score > hits[2].score
    assert ids(catalog.search("予算執行", limit=2)) == expected[:2]
    assert ids(catalog.search("執行", limit=3)) == expected[:3]  # the two-character path ranks the same way


def test_ranking_counts_whole_words_not_their_bigrams(catalog: Catalog) -> None:
    # The index alone would rank `loose` first: its bigrams 予算 and 執行 occur five times each.
    loose = make_record(text="予算、予算、予算、予算。執行、執行、執行、執行。予算執行は一度。", day=dt.date(2024, 1, 1))
    tight = make_record(text="予算執行、予算執行、予算執行。", day=dt.date(2020, 1, 1))
    catalog.add(loose)
    catalog.add(tight)
    assert ids(catalog.search("予算執行", limit=1)) == [tight.id]
    assert ids(catalog.search("予算執行")) == [tight.id, loose.id]
    assert ids(catalog.search("予算", limit=1)) == [loose.id]


def test_snippet_is_around_the_first_hit(catalog: Catalog) -> None:
    body = "\n".join(f"第{i}項　定型的な記載事項が続く行である。" for i in range(40))
    body += "\n特記事項：指定管理者の選定は公募による。\n" + body
    record = make_record(text=body, title="指定管理者の選定")
    catalog.add(record)
    snippet = catalog.search("公募")[0].snippet
    assert "公募" in snippet
    assert len(snippet) < 150
    assert snippet.startswith("…") and snippet.endswith("…")
    assert catalog.search(department="総務課")[0].snippet.startswith("第0項")


# --------------------------------------------------------------------------- filters


@pytest.fixture
def filing(catalog: Catalog) -> dict[str, Record]:
    records = {
        "contract": make_record(text="工事請負契約を締結する。", title="工事請負契約書", document_type="契約書",
                                number="新総第１２３４号", issuer="新潟市長　中原 八一", day=dt.date(2024, 3, 29),
                                department="総務課"),
        "notice": make_record(text="補助金の交付を決定したので通知する。", title="補助金交付決定通知", document_type="通知",
                              number="新福第56号", issuer="新潟市長", day=dt.date(2024, 4, 1), department="福祉課"),
        "reply": make_record(text="照会のあった契約の件について回答する。", title="契約事務について（回答）",
                             document_type="回答", number="金企第62号", issuer="金沢市長　石田 由美子",
                             day=dt.date(2023, 7, 1), department="総務課"),
        "kanji": make_record(text="辞令　契約事務を命ずる", title="辞令", document_type="辞令", number="新総第千二百三十五号",
                             issuer="新潟市長", day=None, fiscal_year=2022, department="総務課"),
    }
    for r in records.values():
        catalog.add(r)
    return records


def test_filters_each_and_combined(catalog: Catalog, filing: dict[str, Record]) -> None:
    f = {name: r.id for name, r in filing.items()}
    assert ids(catalog.search(document_type="契約書")) == [f["contract"]]
    assert ids(catalog.search(document_type="契約")) == []  # type is compared whole
    assert ids(catalog.search(number="新総第1234号")) == [f["contract"]]  # full-width digits in the record
    assert ids(catalog.search(number="新総第１２３５号")) == [f["kanji"]]  # kanji numerals in the record
    assert ids(catalog.search(number="新総第123号")) == []
    assert set(ids(catalog.search(issuer="新潟"))) == {f["contract"], f["notice"], f["kanji"]}
    assert ids(catalog.search(issuer="石田由美子")) == [f["reply"]]  # substring, spacing ignored
    assert ids(catalog.search(date_from=dt.date(2024, 1, 1))) == [f["notice"], f["contract"]]  # newest first
    assert ids(catalog.search(date_from=dt.date(2024, 3, 29), date_to=dt.date(2024, 3, 29))) == [f["contract"]]
    assert ids(catalog.search(date_to=dt.date(2023, 12, 31))) == [f["reply"]]  # undated records have no date to match
    # fiscal year: given, or the 年度 (April-March) of the document date
    assert ids(catalog.search(fiscal_year=2023)) == [f["contract"], f["reply"]]
    assert ids(catalog.search(fiscal_year=2024)) == [f["notice"]]
    assert ids(catalog.search(fiscal_year=2022)) == [f["kanji"]]
    assert set(ids(catalog.search(department="総務課"))) == {f["contract"], f["reply"], f["kanji"]}
    assert ids(catalog.search(department="福祉課")) == [f["notice"]]
    # combined with each other and with text
    assert set(ids(catalog.search("契約"))) == {f["contract"], f["reply"], f["kanji"]}
    assert ids(catalog.search("契約", department="総務課", issuer="金沢")) == [f["reply"]]
    assert ids(catalog.search("契約", fiscal_year=2023, document_type="契約書")) == [f["contract"]]
    assert ids(catalog.search("契約", document_type="通知")) == []
    assert ids(catalog.search("契", date_from=dt.date(2024, 1, 1))) == [f["contract"]]
    assert ids(catalog.search(issuer="新潟市長", department="総務課", fiscal_year=2023, number="新総第1234号",
                              document_type="契約書", date_from=dt.date(2024, 3, 1), date_to=dt.date(2024, 3, 31))) == [
        f["contract"]]
    hit = catalog.search(number="金企第62号")[0]
    assert (hit.document_type, hit.document_number, hit.document_date, hit.department, hit.fiscal_year) == (
        "回答", "金企第62号", dt.date(2023, 7, 1), "総務課", 2023)


def test_limit_must_be_positive(catalog: Catalog) -> None:
    with pytest.raises(ValueError):
        catalog.search("契約", limit=0)


# --------------------------------------------------------------------------- records


def test_round_trip_keeps_the_whole_japanese_record(catalog: Catalog) -> None:
    word = Word(text="令和６年", bbox=(10, 20, 110, 60), confidence=91.5)
    line = Line(text="令和６年４月１日　新総第１２３４号", bbox=(10, 20, 900, 60), confidence=90.0, words=[word])
    page = Page(index=0, text=line.text, dpi=300, width_px=2480, height_px=3508, writing_mode="vertical",
                rotation_deg=90, skew_deg=-1.5, confidence=88.0, engine="tesseract", lines=[line])
    record = make_record(
        text=line.text + "\f辞令　〇〇〇〇　主事に任命する", title="辞　令", document_type="辞令", number="新総第１２３４号",
        issuer="新潟市長　中原 八一", day=dt.date(2024, 4, 1), addressee="山田 花子", amount=12_345_678,
        counterparty="株式会社日本海建設", document_date_text="令和６年４月１日",
        evidence={"document_number": Evidence(page=0, line=0, text="新総第１２３４号", confidence=0.9)},
        retention=Retention(rule="type:辞令", period="30年", period_years=30, start_date=dt.date(2025, 4, 1),
                            expiry_date=dt.date(2055, 3, 31), disposition="移管"),
    )
    record = record.model_copy(update={
        "pages": [page], "classification": "取扱注意",
        "pii": [PersonalData(type="person_name", value="山田 花子", page=0)],
        "archive": record.archive.model_copy(update={"stored_at": dt.datetime(2025, 4, 1, 18, 30, tzinfo=dt.timezone(
            dt.timedelta(hours=9)))}),
    })
    catalog.add(record)
    back = catalog.get(record.id)
    assert back == record
    assert back.model_dump_json() == record.model_dump_json()
    assert catalog.get("no-such-id") is None


def test_find_by_sha256(catalog: Catalog) -> None:
    record = make_record(text="原本")
    catalog.add(record)
    assert catalog.find_by_sha256(record.source.sha256) == record
    assert catalog.find_by_sha256(record.source.sha256.upper()) == record
    assert catalog.find_by_sha256("0" * 64) is None


def test_add_again_replaces_the_record(catalog: Catalog) -> None:
    first = make_record("doc-1", "旧い本文に予算とある", title="旧題")
    catalog.add(first)
    second = make_record("doc-1", "新しい本文に契約とある", title="新題", sha256=first.source.sha256,
                         document_type="契約書")
    catalog.add(second)
    assert catalog.count() == 1
    assert catalog.get("doc-1") == second
    assert catalog.search("予算") == [] and catalog.search("旧題") == []
    assert ids(catalog.search("契約")) == ["doc-1"]
    assert ids(catalog.search("新題", document_type="契約書")) == ["doc-1"]
    catalog.add(second)  # idempotent
    assert ids(catalog.search("本文")) == ["doc-1"]


def test_same_scan_under_another_id_is_refused(catalog: Catalog) -> None:
    first = make_record("doc-a", "本文")
    catalog.add(first)
    with pytest.raises(DuplicateScanError, match="doc-a"):
        catalog.add(make_record("doc-b", "本文", sha256=first.source.sha256))
    assert catalog.get("doc-b") is None
    assert ids(catalog.search("本文")) == ["doc-a"]


def test_add_many_is_all_or_nothing(catalog: Catalog) -> None:
    a, b = make_record(text="一括登録の文書甲"), make_record(text="一括登録の文書乙")
    assert catalog.add_many([a, b]) == 2
    assert set(ids(catalog.search("一括登録"))) == {a.id, b.id}
    clash = make_record(text="一括登録の文書丙", sha256=a.source.sha256)
    with pytest.raises(DuplicateScanError):
        catalog.add_many([make_record(text="一括登録の文書丁"), clash])
    assert catalog.count() == 2


# --------------------------------------------------------------------------- retention and register


def _retention(expiry: dt.date | None, disposition: str = "廃棄", hold: bool = False, period: str = "5年") -> Retention:
    years = None if period in ("永年", "1年未満") else int(period.rstrip("年"))
    return Retention(rule="type:通知", period=period, period_years=years, start_date=dt.date(2019, 4, 1),
                     expiry_date=expiry, disposition=disposition, legal_hold=hold)


def test_due_for_disposition(catalog: Catalog) -> None:
    expired = make_record(text="a", retention=_retention(dt.date(2024, 3, 31), "廃棄"))
    due_today = make_record(text="b", retention=_retention(dt.date(2025, 3, 31), "移管"))
    held = make_record(text="c", retention=_retention(dt.date(2020, 3, 31), hold=True))
    later = make_record(text="d", retention=_retention(dt.date(2025, 4, 1)))
    forever = make_record(text="e", retention=_retention(None, "移管", period="永年"))
    untagged = make_record(text="f")
    for r in (due_today, held, later, forever, untagged, expired):
        catalog.add(r)
    due = catalog.due_for_disposition(dt.date(2025, 3, 31))
    assert [r.id for r in due] == [expired.id, due_today.id]
    assert [r.retention.disposition for r in due] == ["廃棄", "移管"]
    assert due[0] == expired
    assert catalog.due_for_disposition(dt.date(2000, 1, 1)) == []


def test_register_rows_and_csv_for_excel(catalog: Catalog, tmp_path: Path) -> None:
    a = make_record(text="x", title="工事請負契約書", document_type="契約書", issuer="新潟市長", day=dt.date(2024, 5, 1),
                    department="総務課", number="新総第1号", retention=_retention(dt.date(2030, 3, 31), "移管"))
    b = make_record(text="y", title="=HYPERLINK(\"http://example.com\")", document_type="通知", issuer="新潟市長",
                    day=dt.date(2023, 5, 1), department="福祉課", retention=_retention(dt.date(2029, 3, 31), hold=True))
    c = make_record(text="z", title=None, document_type=None, department="財政課")
    for r in (a, b, c):
        catalog.add(r)

    rows = catalog.register_rows(2024)
    assert len(rows) == 1
    row = rows[0]
    assert list(row) == list(REGISTER_COLUMNS)
    assert row == {
        "年度": 2024, "分類": "契約書", "名称": "工事請負契約書", "作成者": "新潟市長", "起算日": "2019-04-01",
        "保存期間": "5年", "満了日": "2030-03-31", "媒体": "電子", "保存場所": f"s3://kiroku-archive/{a.archive.key}",
        "管理者": "総務課", "満了時の措置": "移管", "備考": row["備考"],
    }
    assert "新総第1号" in row["備考"] and a.id in row["備考"]
    everything = catalog.register_rows(None)
    assert [r["名称"] for r in everything] == [b.metadata.title, "工事請負契約書", c.source.filename]
    assert "リーガルホールド" in everything[0]["備考"]

    path = tmp_path / "行政文書ファイル管理簿.csv"
    write_register_csv(everything, path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    assert raw.count(b"\xef\xbb\xbf") == 1
    assert b"\r\n" in raw
    with path.open(encoding="utf-8-sig", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == list(REGISTER_COLUMNS)
    assert table[0] == ["年度", "分類", "名称", "作成者", "起算日", "保存期間", "満了日", "媒体", "保存場所", "管理者",
                        "満了時の措置", "備考"]
    assert len(table) == 4
    assert table[1][2].startswith("'=")  # a formula from OCR text is not run by Excel
    assert table[2][:4] == ["2024", "契約書", "工事請負契約書", "新潟市長"]
    assert table[3][0] == "" and table[3][2] == c.source.filename and table[3][9] == "財政課"


# --------------------------------------------------------------------------- concurrency


def test_sqlite_is_shared_safely_by_writers_and_readers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    Catalog(url).close()
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with Catalog(url) as cat:  # its own engine, as another process would have
                for i in range(15):
                    cat.add(make_record(f"{name}-{i}", f"同時書込みの試験 {name} 番号{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            with Catalog(url) as cat:
                for _ in range(20):
                    cat.search("同時書込み")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("甲", "乙", "丙")] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with Catalog(url) as cat:
        assert cat.count() == 45
        assert len(cat.search("同時書込み", limit=100)) == 45
        assert len(cat.search("同時書込み 乙")) == 15
        with cat.connection() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


# --------------------------------------------------------------------------- property

_ALPHABET = st.sampled_from(
    list("契約予算補助金交付道路河川議会の一二三はをにがでと市町村長課係号第年月日")
    + list("ＡＢＣａｂｃ１２３ABCabc0123ｶﾅｱｲｳ") + list("（）「」、。・%_/-") + [" ", "　", "\n"]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.text(_ALPHABET, min_size=2, max_size=80), data=st.data())
def test_any_substring_of_a_stored_text_is_found(catalog: Catalog, body: str, data: st.DataObject) -> None:
    record = make_record(text=body)
    catalog.add(record)
    start = data.draw(st.integers(0, len(body) - 2), label="start")
    end = data.draw(st.integers(start + 2, len(body)), label="end")
    query = body[start:end]
    if not query_terms(query):
        return  # only spaces: that is the filter-only search, not a text search
    assert record.id in ids(catalog.search(query, limit=1000)), query
