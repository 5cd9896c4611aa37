"""Faceted search (processors/archive/query.py) on SQLite and PostgreSQL.

The in-memory search (the default) must give exactly what the SQL statement gives
(`engine="sql"`, the reference): same total, same facet counts, same page in the same
order with the same scores, for every clearance. The matching itself is also checked
against a plain Python reading of the rules (`_expected_ids`). And the in-memory columns
must follow every write at once, from this process and from another Catalog.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest

from bench.web_bench import bench_record
from processors.archive import query as q
from processors.archive import searchindex
from processors.archive.catalog import Catalog, document_number_key, normalize
from schemas.record import Record
from tests.test_catalog import catalog, catalog_url, make_record, postgres_url  # noqa: F401 - fixtures

CLEARANCE_LEVELS = ("1", "2", "3C", "3B", "3A")
WORDS = ["契約", "予算", "監査", "河川", "議会", "給食", "剪定", "補助金交付", "業務委託", "個人情報", "情報公開",
         "公園施設", "契", "橋", "港", "ごみ", "ゴミ", "単位", "單位", "ｹｲﾔｸ", "存在しない語", "委託業務", "日本海建設"]
FILTERS = [
    {}, {"document_type": "契約書"}, {"fiscal_year": 2020}, {"department": "税務課"}, {"issuer": "金沢"},
    {"date_from": dt.date(2020, 4, 1), "date_to": dt.date(2022, 3, 31)}, {"date_to": dt.date(2016, 1, 1)},
    {"amount_min": 1_000_000, "amount_max": 50_000_000}, {"disposition": "移管", "retention_period": "30年"},
    {"classification": "機密性3A"}, {"counterparty": "ニホンカイ建設"}, {"counterparty": "みどり造園"},
    {"addressee": "カブシキガイシャ"}, {"expiry_from": dt.date(2030, 1, 1)}, {"number": "新総第１２３号"},
]


def _corpus(n: int = 240) -> list[Record]:
    """Generated records like the bench's, plus 宛先 in katakana / old kanji, some NULLs."""
    rng = random.Random(5)
    out = []
    for i in range(n):
        record = bench_record(i, rng)
        md = record.metadata
        update: dict[str, object] = {}
        if i % 7 == 0:
            update["addressee"] = rng.choice(["カブシキガイシャ單位商事", "株式会社単位商事", "ｶﾌﾞｼｷｶﾞｲｼｬ山田"])
        if i % 11 == 0:
            update["document_date"] = None
        if i % 13 == 0:
            update["document_number"] = None
        if i % 17 == 0:
            update["counterparty"] = "有限会社ミドリ造園"
        if update:
            record = record.model_copy(update={"metadata": md.model_copy(update=update)})
        if i % 19 == 0:
            record = record.model_copy(update={"classification": None})
        if i % 23 == 0:
            record = record.model_copy(update={"text": record.text + "\n家庭ごみの收集單位について"})
        out.append(record)
    return out


def _queries(rng: random.Random, count: int) -> list[q.SearchQuery]:
    out = []
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            text = rng.choice(WORDS)
        elif kind == 1:
            text = " ".join(rng.sample(WORDS, 2))
        elif kind == 2:
            text = f"{rng.choice(WORDS)} OR {rng.choice(WORDS)}"
        elif kind == 3:
            text = f"{rng.choice(WORDS)} -{rng.choice(WORDS)}"
        elif kind == 4:
            text = f'"{rng.choice(WORDS)}{rng.choice(WORDS)}"'
        else:
            text = None
        filters = rng.choice(FILTERS) if rng.random() < 0.5 else {}
        out.append(q.SearchQuery(text=text, sort=rng.choice(list(q.SORTS)), page=rng.choice([1, 1, 2, 3]),
                                 per_page=rng.choice([5, 20]), **filters))
    return out


def _expected_ids(records: list[Record], query: q.SearchQuery, clearance: str) -> set[str]:
    """Which records match, read straight from the rules (not from any index)."""
    parsed = q.parse_query(query.text)
    out = set()
    for r in records:
        md, ret = r.metadata, r.retention
        fields = [r.text, md.title, md.document_number, md.issuer, md.addressee, md.counterparty]
        haystack = "\x1f".join(normalize(f) for f in fields)

        def has(word: str) -> bool:
            return word in haystack

        checks = [
            q.visible(r.classification, clearance),
            all(any(has(w) for w in group) for group in parsed.groups),
            not any(has(w) for w in parsed.excluded),
            not query.document_type or normalize(md.document_type) == normalize(query.document_type),
            not query.number or document_number_key(md.document_number) == document_number_key(query.number),
            not query.issuer or normalize(query.issuer) in normalize(md.issuer),
            not query.department or normalize(r.source.department) == normalize(query.department),
            not query.addressee or (bool(md.addressee) and normalize(query.addressee) in normalize(md.addressee)),
            not query.counterparty or (bool(md.counterparty)
                                       and normalize(query.counterparty) in normalize(md.counterparty)),
            query.date_from is None or (md.document_date is not None and md.document_date >= query.date_from),
            query.date_to is None or (md.document_date is not None and md.document_date <= query.date_to),
            query.fiscal_year is None or md.fiscal_year == query.fiscal_year,
            query.amount_min is None or (md.amount is not None and md.amount >= query.amount_min),
            query.amount_max is None or (md.amount is not None and md.amount <= query.amount_max),
            not query.retention_period or (ret is not None and ret.period == query.retention_period),
            query.expiry_from is None or (ret is not None and ret.expiry_date is not None
                                          and ret.expiry_date >= query.expiry_from),
            query.expiry_to is None or (ret is not None and ret.expiry_date is not None
                                        and ret.expiry_date <= query.expiry_to),
            not query.disposition or (ret is not None and ret.disposition == query.disposition),
            not query.classification or r.classification == query.classification,
        ]
        if all(checks):
            out.add(r.id)
    return out


def _same(catalog: Catalog, query: q.SearchQuery, clearance: str) -> q.SearchResult:
    memory = q.search(catalog, query, clearance)
    sql = q.search(catalog, query, clearance, engine="sql")
    assert memory.total == sql.total, query
    assert memory.facets == sql.facets, query
    assert memory.hits == sql.hits, query
    return memory


@pytest.fixture
def filled(catalog: Catalog) -> tuple[Catalog, list[Record]]:  # noqa: F811
    corpus = _corpus()
    catalog.add_many(corpus)
    return catalog, corpus


def test_memory_search_is_the_sql_search_and_the_rules(filled: tuple[Catalog, list[Record]]) -> None:
    catalog, corpus = filled
    rng = random.Random(11)
    seen_totals = set()
    for query in _queries(rng, 70):
        clearance = rng.choice(CLEARANCE_LEVELS)
        result = _same(catalog, query, clearance)
        expected = _expected_ids(corpus, query, clearance)
        assert result.total == len(expected), query
        assert {h.record_id for h in result.hits} <= expected
        # Every page together is the whole set, once.
        if result.total <= 60:
            every = [h.record_id for p in range(1, result.pages + 1)
                     for h in q.search(catalog, dataclasses.replace(query, page=p), clearance).hits]
            assert sorted(every) == sorted(expected)
        seen_totals.add(result.total)
    assert len(seen_totals) > 10  # the queries were not all empty or all everything


def test_facets_and_counts_never_include_a_record_above_clearance(filled: tuple[Catalog, list[Record]]) -> None:
    catalog, corpus = filled
    for clearance in CLEARANCE_LEVELS:
        result = _same(catalog, q.SearchQuery(text="契約", per_page=500), clearance)
        visible = [r for r in corpus if q.visible(r.classification, clearance) and "契約" in normalize(r.text)]
        assert result.total == len(visible)
        counted = dict(result.facets["classification"])
        assert sum(dict(result.facets["fiscal_year"]).values()) == len(visible)
        for name in counted:
            assert q.visible(name, clearance), (name, clearance)
        assert all(q.visible(h.classification, clearance) for h in result.hits)


def test_addressee_and_counterparty_fold_like_the_full_text(catalog: Catalog) -> None:  # noqa: F811
    catalog.add_many([
        make_record("kana", "本文", addressee="株式会社ミドリ單位", counterparty="ﾔﾏﾀﾞ建設株式会社"),
        make_record("plain", "本文", addressee="みどり商店", counterparty="山田建設"),
    ])
    for engine in ("memory", "sql"):
        def found(**kw: str) -> list[str]:
            return sorted(h.record_id for h in q.search(catalog, q.SearchQuery(**kw), "3A", engine=engine).hits)

        assert found(addressee="みどり") == ["kana", "plain"]
        assert found(addressee="ミドリ単位") == ["kana"]  # katakana and 旧字体 單 folded
        assert found(counterparty="やまだ") == ["kana"]  # half-width katakana
        assert found(counterparty="ヤマダ建設株式会社") == ["kana"]
        assert found(counterparty="建設") == ["kana", "plain"]
        assert found(addressee="存在しない") == []


def test_search_follows_every_write_at_once(catalog_url: str) -> None:  # noqa: F811
    """A correction, a new record and a reclassification are seen by the next search, in
    the writing Catalog and in another one (another process, as the web app and the watcher)."""
    with Catalog(catalog_url) as writer, Catalog(catalog_url) as reader:
        writer.add_many(_corpus(60))
        assert _same(reader, q.SearchQuery(text="特記語句"), "3A").total == 0
        before = _same(reader, q.SearchQuery(text="契約"), "2").total
        reader_index = reader.search_index()
        assert reader_index.columns is not None

        writer.add(make_record("new-1", "特記語句を含む新しい契約書", title="新規の契約", document_type="契約書"))
        for cat in (writer, reader):
            found = _same(cat, q.SearchQuery(text="特記語句"), "3A")
            assert [h.record_id for h in found.hits] == ["new-1"]
            assert _same(cat, q.SearchQuery(text="契約"), "2").total == before + 1

        # A correction: the title changes, the text loses the word, the class goes up.
        old = writer.get("new-1")
        assert old is not None
        writer.add(old.model_copy(update={"text": "差し替え後の本文", "classification": "機密性3A",
                                          "metadata": old.metadata.model_copy(update={"title": "訂正後の表題"})}))
        for cat in (writer, reader):
            assert _same(cat, q.SearchQuery(text="特記語句"), "3A").total == 0
            assert [h.record_id for h in _same(cat, q.SearchQuery(text="訂正後"), "3A").hits] == ["new-1"]
            assert _same(cat, q.SearchQuery(text="訂正後"), "3B").total == 0  # now above 3B
            assert _same(cat, q.SearchQuery(text="契約"), "2").total == before
        assert reader.search_index() is reader_index  # patched, not rebuilt


def test_many_writes_reload_and_small_cache_evicts(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(searchindex, "_PATCH_LIMIT", 5)
    monkeypatch.setattr(searchindex, "_CACHE_POSTINGS", 50)
    corpus = _corpus(120)
    with Catalog(catalog_url) as cat:
        cat.add_many(corpus[:40])
        rng = random.Random(3)
        queries = _queries(rng, 25)
        for query in queries:
            _same(cat, query, "3B")
        cat.add_many(corpus[40:])  # more than _PATCH_LIMIT: reloaded
        for query in queries:
            result = _same(cat, query, "3B")
            assert result.total == len(_expected_ids(corpus, query, "3B"))
        for record in corpus[:3]:  # a few: patched into what is held
            cat.add(record.model_copy(update={"text": record.text + " 追記語句"}))
        assert _same(cat, q.SearchQuery(text="追記語句", per_page=10), "3A").total == 3


def test_posting_patch_matches_a_rebuilt_list() -> None:
    """`_replace` (the patch a write causes) gives the list a rebuild from scratch would."""
    import numpy as np

    rng = random.Random(8)
    for _ in range(200):
        held = dict(sorted((pk, rng.randrange(1, 9)) for pk in rng.sample(range(1, 400), rng.randrange(0, 60))))
        with_tf = rng.random() < 0.5  # bigram lists carry tf; word and character lists do not
        if not with_tf:
            held = dict.fromkeys(held, 1)
        posting = searchindex._Posting(np.array(list(held), dtype=np.int64),
                                       np.array(list(held.values()), dtype=np.int32) if with_tf else None)
        changed = sorted(rng.sample(sorted(held) + list(range(1, 400)), rng.randrange(1, 12)))
        changed = sorted(set(changed))
        new = [rng.choice([0, 0, 1, 3] if with_tf else [0, 1]) for _ in changed]
        if rng.random() < 0.3:  # a write that leaves this list as it was
            new = [held.get(pk, 0) for pk in changed]
        searchindex._replace(posting, np.array(changed, dtype=np.int64), np.array(new, dtype=np.int32))
        expected = {**held, **dict(zip(changed, new))}
        expected = {pk: tf for pk, tf in sorted(expected.items()) if tf}
        assert posting.pks.tolist() == list(expected)
        if with_tf:
            assert posting.tf is not None and posting.tf.tolist() == list(expected.values())
        else:
            assert posting.tf is None


def test_page_order_without_the_packed_key(filled: tuple[Catalog, list[Record]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys too wide to pack into one int64 are sorted by lexsort: the same pages."""
    catalog, _ = filled
    monkeypatch.setattr(q, "_packed", lambda keys: None)
    for query in _queries(random.Random(21), 20):
        _same(catalog, query, "3B")


def test_a_reader_behind_the_cut_log_reads_everything_again(catalog_url: str,  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The change log keeps only its newest entries; a reader that missed cut ones reloads."""
    from processors.archive import catalog as catalog_module

    monkeypatch.setattr(catalog_module, "CHANGES_KEPT", 3)
    with Catalog(catalog_url) as writer, Catalog(catalog_url) as reader:
        writer.add_many(_corpus(30))
        assert _same(reader, q.SearchQuery(text="刻印語"), "3A").total == 0
        for i in range(8):  # more than are kept, none seen by the reader in between
            writer.add(make_record(f"late-{i}", f"刻印語 その{i}", title=f"追加{i}"))
        with writer.connection() as conn:
            kept = conn.execute(catalog_module.select(catalog_module.func.count()).select_from(
                catalog_module.changes)).scalar()
        assert kept <= 4
        assert _same(reader, q.SearchQuery(text="刻印語"), "3A").total == 8
        for i in range(8):  # a reader that keeps up patches each one in
            writer.add(make_record(f"later-{i}", f"刻印語 続き{i}"))
            assert _same(reader, q.SearchQuery(text="刻印語"), "3A").total == 9 + i


def test_threads_search_while_another_writes(catalog_url: str) -> None:  # noqa: F811
    """The web app searches from several threads while the watcher writes: no error, and
    afterwards every thread's view is the database's."""
    import threading

    corpus = _corpus(80)
    with Catalog(catalog_url) as cat:
        cat.add_many(corpus[:40])
        q.prepare(cat)
        errors: list[BaseException] = []
        queries = _queries(random.Random(4), 12)

        def read() -> None:
            try:
                for query in queries:
                    q.search(cat, query, "3B")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def write() -> None:
            try:
                for start in range(40, 80, 5):
                    cat.add_many(corpus[start:start + 5])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        for query in queries:
            assert _same(cat, query, "3B").total == len(_expected_ids(corpus, query, "3B"))


def test_document_numbers_sort_as_numbers_on_both_paths() -> None:
    from processors.archive.catalog import number_sort_key

    numbers = ["環第105号", "環第98号", "環第1000号", "総第7号", "環第98号の2"]
    ordered = sorted(numbers, key=lambda n: number_sort_key(document_number_key(n)))
    assert ordered == ["環第98号", "環第98号の2", "環第105号", "環第1000号", "総第7号"]
