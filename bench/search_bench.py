"""How fast can an archivist find a document? Catalog add throughput and search latency.

Fills a fresh SQLite catalog (in a temp directory unless --db is given) with N synthetic
municipal records (~1500 characters of Japanese built from real 自治体 vocabulary with
random variation, OCR-like spacing and full-width digits here and there) and times:

- add():   records per second, with the bigram index maintained as it goes
- search(): median and p95 latency for 2-character words (契約), 4-character words
  (補助金交付), multi-word queries (予算 執行 委託), 1-character words, filter-only
  queries and text combined with filters.

Target: search p95 < 200 ms at 20,000 records.

    .venv/bin/python bench/search_bench.py -n 20000
    .venv/bin/python bench/search_bench.py -n 20000 --compare   # also time a plain LIKE scan and FTS5 trigram

Use --url postgresql+psycopg://... to run the same against PostgreSQL (tables are created
in that database; use a scratch one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text as sql  # noqa: E402

from processors.archive.catalog import Catalog, normalize  # noqa: E402
from schemas.record import Archive, Metadata, Record, Retention, Source  # noqa: E402

DEPARTMENTS = ["総務課", "財政課", "企画政策課", "税務課", "市民課", "福祉課", "子育て支援課", "健康推進課", "環境保全課",
               "道路河川課", "都市計画課", "建築指導課", "上下水道課", "農林水産課", "商工観光課", "教育総務課", "学校教育課",
               "生涯学習課", "危機管理課", "会計課", "議会事務局", "選挙管理委員会事務局"]
ABBR = ["総", "財", "企", "税", "市", "福", "子", "健", "環", "道", "都", "建", "水", "農", "商", "教総", "学", "生", "危", "会", "議", "選"]
PREFIX = ["新", "金", "岩", "盛", "松", "静", "仙", "札", "横", "北"]
TYPES = ["通知", "依頼", "照会", "回答", "報告", "契約書", "申請書", "請求書", "議事録", "辞令", "表彰状", "起案", "決定書"]
MUNIS = ["新潟市", "金沢市", "盛岡市", "松山市", "静岡市", "仙台市", "札幌市", "横浜市", "北九州市", "熊本市", "岐阜市", "高松市"]
COMPANIES = ["株式会社日本海建設", "北陸電設株式会社", "有限会社みどり造園", "株式会社アーバン設計", "東和リース株式会社",
             "株式会社サンライズ情報システム", "合同会社あおば測量", "株式会社中央印刷", "丸山土木株式会社", "株式会社ＫＩＲＯＫＵ"]
SUBJECTS = [
    "令和{y}年度当初予算の編成方針", "補助金交付決定", "業務委託契約の締結", "工事請負契約の変更", "指定管理者の選定",
    "個人情報の適正な管理の徹底", "固定資産税の賦課", "住民基本台帳の閲覧", "国民健康保険税の減免", "介護保険料の納付",
    "道路占用の許可", "河川改修工事の進捗", "公園施設の長寿命化計画", "下水道事業の経営戦略", "上水道料金の改定",
    "避難所運営訓練の実施", "防災行政無線の更新", "小中学校の適正配置", "学校給食費の公会計化", "図書館の開館時間の延長",
    "事務事業評価の結果", "公共施設等総合管理計画の改訂", "会計年度任用職員の任用", "職員の服務規律の確保",
    "情報セキュリティ監査の実施", "選挙人名簿の登録", "議会定例会の招集", "条例の一部改正", "要綱の制定", "入札参加資格の審査",
]
PHRASES = [
    "標記のことについて、下記のとおり{verb}します。", "{dept}から{subject}について照会がありました。",
    "{subject}に関し、別紙のとおり{verb}いたします。", "つきましては、{date}までに{verb}くださるようお願いします。",
    "本件については、{law}第{n}条の規定に基づき処理するものとします。", "契約金額は金{amount}円（うち消費税及び地方消費税の額{tax}円）とする。",
    "受注者は、{company}とし、履行期間は{date}から{date2}までとする。", "なお、{subject}の詳細は担当課までお問い合わせください。",
    "予算の執行に当たっては、経費の節減に努めるとともに、適正な事務処理を行うこと。",
    "委託業務の実施状況について、毎月末日までに報告書を提出すること。", "{place}地内における{work}を実施する。",
    "支出負担行為の決議に当たり、予算残額を確認した。", "監査委員の意見を踏まえ、事務の改善を図るものとする。",
    "市民からの要望を受け、{subject}を検討した結果、次のとおり決定した。", "第{n}回{council}を{date}に開催する。",
    "出席者：委員{n}名、事務局{m}名。議題は{subject}について。", "担当：{dept}　電話　0{a}-{b}-{c}（内線{m}）",
    "上記のとおり相違ありません。", "記", "以上", "（公印省略）", "別紙{n}のとおり", "添付書類：見積書、仕様書、図面",
]
VERBS = ["通知", "依頼", "報告", "回答", "提出", "送付", "照会", "申請", "協議", "決定"]
LAWS = ["地方自治法", "地方財政法", "個人情報の保護に関する法律", "公文書等の管理に関する法律", "道路法", "河川法", "建築基準法",
        "国民健康保険法", "介護保険法", "学校教育法", "災害対策基本法", "補助金等に係る予算の執行の適正化に関する法律"]
PLACES = ["中央町一丁目", "本町三丁目", "緑が丘二丁目", "港町", "旭町四丁目", "東山台", "西浜町", "南新町五丁目"]
WORKS = ["舗装補修工事", "側溝改良工事", "橋梁点検業務", "管路更新工事", "樹木剪定業務", "測量設計業務", "清掃業務委託"]
COUNCILS = ["総合計画審議会", "都市計画審議会", "教育委員会定例会", "防災会議", "行政改革推進委員会", "情報公開・個人情報保護審査会"]
WIDE = str.maketrans("0123456789", "０１２３４５６７８９")


def _date(rng: random.Random) -> dt.date:
    return dt.date(2014, 1, 1) + dt.timedelta(days=rng.randrange(365 * 11))


def _wareki(day: dt.date) -> str:
    return f"令和{day.year - 2018}年{day.month}月{day.day}日" if day >= dt.date(2019, 5, 1) else f"平成{day.year - 1988}年{day.month}月{day.day}日"


def make_text(rng: random.Random, subject: str, dept: str, length: int = 1500) -> str:
    lines: list[str] = []
    size = 0
    while size < length:
        d1 = _date(rng)
        amount = rng.randrange(100_000, 90_000_000)
        line = rng.choice(PHRASES).format(
            verb=rng.choice(VERBS), dept=rng.choice(DEPARTMENTS), subject=rng.choice(SUBJECTS).format(y=rng.randrange(1, 8))
            if rng.random() < 0.6 else subject, date=_wareki(d1), date2=_wareki(d1 + dt.timedelta(days=rng.randrange(30, 400))),
            law=rng.choice(LAWS), n=rng.randrange(1, 300), m=rng.randrange(1, 30), amount=f"{amount:,}", tax=f"{amount // 11:,}",
            company=rng.choice(COMPANIES), place=rng.choice(PLACES), work=rng.choice(WORKS), council=rng.choice(COUNCILS),
            a=rng.randrange(10, 99), b=rng.randrange(100, 999), c=rng.randrange(1000, 9999),
        )
        if rng.random() < 0.3:
            line = line.translate(WIDE)
        if rng.random() < 0.1:  # OCR spacing: a space between every character of the line
            line = " ".join(line)
        lines.append(line)
        size += len(line)
    return "\n".join(lines)


def make_record(i: int, rng: random.Random) -> Record:
    k = rng.randrange(len(DEPARTMENTS))
    dept, doc_type = DEPARTMENTS[k], rng.choice(TYPES)
    day = _date(rng)
    subject = rng.choice(SUBJECTS).format(y=rng.randrange(1, 8))
    title = f"{subject}について（{doc_type}）" if doc_type in ("通知", "依頼", "照会", "回答", "報告") else f"{subject}{doc_type}"
    number = f"{rng.choice(PREFIX)}{ABBR[k]}第{rng.randrange(1, 5000)}号"
    if rng.random() < 0.3:
        number = number.translate(WIDE)
    text = f"{number}\n{_wareki(day)}\n{rng.choice(MUNIS)}長　様\n{title}\n" + make_text(rng, subject, dept)
    fy = day.year if day.month >= 4 else day.year - 1
    years = rng.choice([1, 3, 5, 10, 30])
    start = dt.date(fy + 1, 4, 1)
    sha = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
    return Record(
        id=f"bench-{i:06d}",
        source=Source(filename=f"scan_{i:06d}.pdf", sha256=sha, bytes=1_000_000, format="pdf", department=dept,
                      received_at=dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)),
        text=text,
        metadata=Metadata(document_type=doc_type, title=title, document_number=number, document_date=day,
                          document_date_text=_wareki(day), issuer=f"{rng.choice(MUNIS)}長", fiscal_year=fy,
                          counterparty=rng.choice(COMPANIES) if doc_type in ("契約書", "請求書") else None),
        retention=Retention(rule=f"type:{doc_type}", period=f"{years}年", period_years=years, start_date=start,
                            expiry_date=dt.date(start.year + years, 3, 31), disposition=rng.choice(["移管", "廃棄"])),
        archive=Archive(bucket="kiroku-archive", key=f"{fy}/{dept}/{sha}.pdf", sha256=sha, pdfa="2b",
                        original_key=f"{fy}/{dept}/{sha}.orig", record_key=f"{fy}/{dept}/{sha}.json",
                        stored_at=dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i)),
    )


QUERIES: dict[str, list[dict]] = {
    "2-char": [{"text": w} for w in ["契約", "予算", "監査", "河川", "議会", "図書", "避難", "給食", "賦課", "剪定"]],
    "4-char": [{"text": w} for w in ["補助金交付", "業務委託", "工事請負", "個人情報", "事務事業", "指定管理", "選挙人名",
                                     "下水道事", "情報公開", "公園施設"]],
    "multi-word": [{"text": w} for w in ["予算 執行 委託", "契約 日本海建設", "道路 占用 許可", "学校 給食 公会計",
                                         "避難所 訓練", "条例 改正 議会", "補助金 交付 決定 通知", "監査 意見 改善"]],
    "1-char": [{"text": w} for w in ["契", "橋", "港", "緑"]],
    "filter-only": [{"document_type": "契約書"}, {"department": "税務課"}, {"fiscal_year": 2020},
                    {"date_from": dt.date(2024, 1, 1), "date_to": dt.date(2024, 3, 31)}, {"issuer": "金沢"},
                    {"number": "新総第１２３号"}],
    "text+filters": [{"text": "契約", "document_type": "契約書", "fiscal_year": 2021},
                     {"text": "補助金交付", "department": "福祉課"}, {"text": "予算 執行", "date_from": dt.date(2023, 4, 1)},
                     {"text": "河川", "issuer": "松山"}],
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def time_queries(catalog: Catalog, repeats: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for kind, queries in QUERIES.items():
        times = []
        for _ in range(repeats):
            for q in queries:
                t0 = time.perf_counter()
                catalog.search(**q)
                times.append((time.perf_counter() - t0) * 1000)
        results[kind] = times
    return results


def compare(catalog: Catalog, repeats: int) -> None:
    """Time the alternatives the bigram table was chosen over, on the same data."""
    print("\nalternatives (same data, same queries; verification/ranking not included):")
    words = {k: [normalize(q["text"]) for q in v] for k, v in QUERIES.items() if k in ("2-char", "4-char")}
    with catalog.engine.connect() as conn:
        for kind, ws in words.items():
            times = []
            for _ in range(repeats):
                for w in ws:
                    t0 = time.perf_counter()
                    conn.execute(sql("SELECT pk FROM catalog_texts WHERE search_text LIKE :p"), {"p": f"%{w}%"}).all()
                    times.append((time.perf_counter() - t0) * 1000)
            print(f"  LIKE full scan     {kind:8s} median {statistics.median(times):7.1f} ms  p95 {percentile(times, 95):7.1f} ms")
        if catalog.dialect != "sqlite":
            return
        t0 = time.perf_counter()
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_fts")
        conn.exec_driver_sql("CREATE VIRTUAL TABLE bench_fts USING fts5(search_text, tokenize='trigram', detail='none', "
                              "content='catalog_texts', content_rowid='pk')")
        conn.exec_driver_sql("INSERT INTO bench_fts(bench_fts) VALUES ('rebuild')")
        conn.commit()
        print(f"  FTS5 trigram build {time.perf_counter() - t0:7.1f} s")
        times = []
        for _ in range(repeats):
            for w in words["4-char"]:
                t0 = time.perf_counter()
                conn.execute(sql("SELECT rowid FROM bench_fts WHERE search_text LIKE :p"), {"p": f"%{w}%"}).all()
                times.append((time.perf_counter() - t0) * 1000)
        print(f"  FTS5 trigram       4-char   median {statistics.median(times):7.1f} ms  p95 {percentile(times, 95):7.1f} ms"
              "  (exact; 2-char words cannot use it)")
        conn.exec_driver_sql("DROP TABLE bench_fts")
        conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500, help="records per add_many transaction while filling")
    parser.add_argument("--singles", type=int, default=200, help="records then re-added one by one with add()")
    parser.add_argument("--db", type=Path, help="SQLite file to (re)use; default: a temp file")
    parser.add_argument("--url", help="catalog URL instead of a SQLite file (e.g. a scratch PostgreSQL database)")
    parser.add_argument("--compare", action="store_true", help="also time a LIKE scan and FTS5 trigram")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="kiroku-bench-")
    url = args.url or f"sqlite:///{(args.db or Path(tmp.name) / 'catalog.db').resolve()}"
    catalog = Catalog(url)
    rng = random.Random(args.seed)
    existing = catalog.count()
    print(f"catalog {catalog.dialect}, {existing} records present")
    if existing < args.records:
        chars = 0
        elapsed = 0.0
        for start in range(existing, args.records, args.batch):
            batch = [make_record(i, rng) for i in range(start, min(args.records, start + args.batch))]
            chars += sum(len(r.text) for r in batch)
            t0 = time.perf_counter()
            catalog.add_many(batch)
            elapsed += time.perf_counter() - t0
            if (start + len(batch)) % 5000 < args.batch:
                print(f"  {start + len(batch)} records ...", flush=True)
        added = args.records - existing
        print(f"add_many (batches of {args.batch}): {added} records ({chars / added:.0f} chars each) in {elapsed:.1f} s "
              f"= {added / elapsed:.0f} records/s")
    # One document at a time, as the pipeline does it: replace the last records in place.
    singles = [make_record(i, random.Random(i)) for i in range(max(0, args.records - args.singles), args.records)]
    t0 = time.perf_counter()
    for record in singles:
        catalog.add(record)
    elapsed = time.perf_counter() - t0
    if singles:
        print(f"add (one per transaction, upserting into {args.records}): {len(singles)} records in {elapsed:.1f} s "
              f"= {len(singles) / elapsed:.0f} records/s ({1000 * elapsed / len(singles):.1f} ms each)")
    if catalog.dialect == "postgresql":
        # What autovacuum does in a catalog filled over months: planner statistics, and the
        # visibility map that lets posting lists be read by index-only scans.
        t0 = time.perf_counter()
        with catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("catalog_records", "catalog_texts", "catalog_grams"):
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
            size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
        print(f"VACUUM ANALYZE {time.perf_counter() - t0:.1f} s; database {size / 2**20:.0f} MiB")
    if catalog.dialect == "sqlite":
        with catalog.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar() * conn.exec_driver_sql("PRAGMA page_size").scalar()
            postings = conn.exec_driver_sql("SELECT count(*) FROM catalog_grams").scalar()
        print(f"database {pages / 2**20:.0f} MiB, {postings:,} postings")

    for q in QUERIES["2-char"][:1] + QUERIES["multi-word"][:1]:  # warm the cache, show what comes back
        hits = catalog.search(**q, limit=3)
        print(f"{q['text']!r}: {[h.record_id for h in hits]} {hits[0].snippet[:40] if hits else ''}")
    results = time_queries(catalog, args.repeats)
    print(f"\nsearch latency over {args.records} records ({args.repeats} runs of each query, limit 50):")
    worst = 0.0
    for kind, times in results.items():
        p95 = percentile(times, 95)
        worst = max(worst, p95)
        print(f"  {kind:12s} n={len(times):3d}  median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms  max {max(times):7.1f} ms")
    print(f"worst p95 {worst:.1f} ms (target < 200 ms): {'OK' if worst < 200 else 'TOO SLOW'}")
    if args.compare:
        compare(catalog, args.repeats)
    catalog.close()


if __name__ == "__main__":
    main()
