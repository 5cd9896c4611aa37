"""Searching the catalog the way the web app and the CLI both need it: boolean queries,
filters, facets with counts, sorting, pages and clearance.

`Catalog.search` answers "the best 50 records with all these words"; an archivist at
the web app also wants to know how many there are, how they split by 文書種別 / 年度 /
部署, to exclude words (-廃止), to allow alternatives (契約 OR 委託) and to page through
them. A two-character word matches nearly every record, so the total and the facets are
counts over ~100,000 rows at 100,000 records: in SQL (one statement, the matches in a
MATERIALIZED common table expression, `_select_sql`) that took 0.4-0.8 s on SQLite and
1.0-1.6 s on PostgreSQL. `search` therefore computes them on the catalog's search
columns held in memory (`_select_memory`, processors/archive/searchindex.py: numpy
arrays of the filtered, faceted and sorted columns plus the posting lists recent
queries used, patched from the catalog's change log before every query). The SQL
statement stays, as `engine="sql"`, the reference the tests hold the in-memory one to.

Clearance is a condition of the match itself (`clearance_condition`, `_clearance_mask`):
a record above the user's clearance is never a match, so it cannot appear in a hit, a
count, a facet or a snippet. The record page, PDF, original and thumbnails ask `visible`
before anything.

Words are matched through the catalog's bigram index and its normal form
(`catalog.normalize`: width, case, katakana/hiragana and 旧字体/新字体 folded); so are
the 宛先 and 相手方 filters.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sqlalchemy import String, and_, case, cast, func, literal, not_, or_, select, union_all
from sqlalchemy.engine import Connection

from processors.archive.catalog import (
    FOLD,
    Catalog,
    _char_range,
    _display,
    _term_keys,
    document_number_key,
    number_sort_key,
    grams,
    normalize,
    records,
    texts,
)
from processors.archive.searchindex import _NULL_AMOUNT, _NULL_YEAR, NULL_DAY, _Columns
from processors.records.dates import DateError, parse_date_strict
from schemas.record import Record

__all__ = [
    "CLEARANCES", "FACETS", "SORTS", "Hit", "ParsedQuery", "QueryError", "SearchQuery", "SearchResult",
    "clearance_condition", "clearance_of", "highlight", "mask_my_numbers", "parse_date_input", "parse_query",
    "prepare", "search", "visible", "visible_record",
]

# Clearance levels, lowest first (総務省ガイドライン 令和6年版: 機密性1, 2, 3C, 3B, 3A).
CLEARANCES: tuple[str, ...] = ("1", "2", "3C", "3B", "3A")
# What a record without a classification counts as: the policy's default class.
_UNCLASSIFIED = "2"
# Facets shown beside the results: column -> label.
FACETS: dict[str, str] = {
    "document_type": "文書種別", "fiscal_year": "年度", "department": "部署", "retention_period": "保存期間",
    "disposition": "移管/廃棄", "classification": "機密性",
}
SORTS: dict[str, str] = {"relevance": "関連度", "date_desc": "日付の新しい順", "date_asc": "日付の古い順",
                         "number": "文書番号順"}


class QueryError(ValueError):
    """What the archivist typed cannot be searched; the message is Japanese, for the screen."""


# --------------------------------------------------------------------------- clearance


def clearance_of(classification: str | None) -> str:
    """The clearance a record needs: 機密性3B -> 3B; none -> the default class (2).

    An unknown class name needs the highest clearance: a record is never shown to
    someone by mistake because its policy used a name kiroku does not know.
    """
    if not classification:
        return _UNCLASSIFIED
    level = unicodedata.normalize("NFKC", classification).removeprefix("機密性").strip().upper()
    return level if level in CLEARANCES else CLEARANCES[-1]


def _rank(clearance: str) -> int:
    if clearance not in CLEARANCES:
        raise ValueError(f"unknown clearance {clearance!r}; one of {', '.join(CLEARANCES)}")
    return CLEARANCES.index(clearance)


def visible(classification: str | None, clearance: str) -> bool:
    """May a user with `clearance` see a record of this class at all?"""
    return _rank(clearance_of(classification)) <= _rank(clearance)


def clearance_condition(clearance: str) -> object:
    """The SQL condition "visible to this clearance" on catalog_records (the same rule as `visible`)."""
    allowed = CLEARANCES[: _rank(clearance) + 1]
    names = [f"機密性{level}" for level in allowed]
    condition = records.c.classification.in_(names)
    if _UNCLASSIFIED in allowed:
        condition = or_(condition, records.c.classification.is_(None))
    return condition


def visible_record(catalog: Catalog, record_id: str, clearance: str) -> Record | None:
    """The record if it exists and the clearance allows it; None in both other cases alike,
    so a refused id and a missing id look the same from outside."""
    record = catalog.get(record_id)
    if record is None or not visible(record.classification, clearance):
        return None
    return record


# Twelve digits in a row, allowing the separators a 個人番号 may be printed with: texts
# without such a run (nearly all) skip the full personal-data scan.
_TWELVE_DIGITS = re.compile(r"(?:\d[\s\-‐−ー|｜│]*){11}\d")


def mask_my_numbers(text: str) -> str:
    """The text with every 個人番号 in it replaced by ＊ (digits only; spacing kept)."""
    from processors.records.pii import find_my_numbers

    if not _TWELVE_DIGITS.search(text):
        return text
    for value in set(find_my_numbers(text)):
        text = text.replace(value, re.sub(r"[0-9０-９]", "＊", value))
    return text


# --------------------------------------------------------------------------- query language


@dataclass(frozen=True)
class ParsedQuery:
    """AND of `groups` (each an OR of words), none of `excluded`; all words normalised."""

    groups: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def words(self) -> list[str]:
        """Every positive word, for highlighting."""
        return [w for g in self.groups for w in g]


_TOKEN = re.compile(r'(-?)(?:"([^"]*)"?|「([^」]*)」?|(\S+))')


def parse_query(text: str | None) -> ParsedQuery:
    """Split what was typed: spaces mean AND, `OR` between two words means either, a
    leading - excludes a word, "double quotes" or 「かぎ括弧」 keep a phrase together
    (its spaces are ignored, like everywhere else). AND is allowed and ignored."""
    if not text:
        return ParsedQuery()
    groups: list[list[str]] = []
    excluded: list[str] = []
    join_next = False
    for m in _TOKEN.finditer(unicodedata.normalize("NFKC", text)):
        minus, quoted, kagi, bare = m.groups()
        raw = next((g for g in (quoted, kagi, bare) if g is not None), "")
        if bare is not None and not minus and raw.upper() in ("OR", "|"):
            join_next = bool(groups)
            continue
        if bare is not None and not minus and raw.upper() == "AND":
            continue
        word = normalize(raw)
        if not word:
            continue
        if minus:
            excluded.append(word)
        elif join_next:
            groups[-1].append(word)
        else:
            groups.append([word])
        join_next = False
    return ParsedQuery(tuple(tuple(dict.fromkeys(g)) for g in groups), tuple(dict.fromkeys(excluded)))


def parse_date_input(value: str | None, field_name: str = "日付") -> dt.date | None:
    """A date typed in 和暦 or 西暦 (令和7年4月1日, R7.4.1, 2025-04-01, 2025/4/1)."""
    if value is None or not value.strip():
        return None
    try:
        return parse_date_strict(value)
    except DateError:
        raise QueryError(f"{field_name}「{value}」を日付として読めません。令和7年4月1日、R7.4.1、2025-04-01 の"
                         f"いずれかの形で入力してください。") from None


# --------------------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchQuery:
    """Everything the search form can ask. Text filters compare in normal form."""

    text: str | None = None
    document_type: str | None = None
    fiscal_year: int | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    department: str | None = None
    issuer: str | None = None
    addressee: str | None = None
    number: str | None = None
    amount_min: int | None = None
    amount_max: int | None = None
    counterparty: str | None = None
    retention_period: str | None = None
    expiry_from: dt.date | None = None
    expiry_to: dt.date | None = None
    disposition: str | None = None
    classification: str | None = None
    sort: str = "relevance"
    page: int = 1
    per_page: int = 20


@dataclass(frozen=True)
class Hit:
    record_id: str
    title: str | None
    document_type: str | None
    document_number: str | None
    document_date: dt.date | None
    fiscal_year: int | None
    department: str | None
    issuer: str | None
    classification: str | None
    retention_period: str | None
    expiry_date: dt.date | None
    disposition: str | None
    score: float
    snippet: list[tuple[str, bool]] = field(default_factory=list)  # (text, highlighted)

    @property
    def snippet_text(self) -> str:
        return "".join(part for part, _ in self.snippet)


@dataclass(frozen=True)
class SearchResult:
    total: int
    hits: list[Hit]
    facets: dict[str, list[tuple[str, int]]]
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _word_set(word: str, keys: Sequence[int], dialect: str) -> object:
    """SELECT rec of every record containing `word` (exact: long words are verified on the text).

    `keys` are the word's bigrams, rarest first; the first four narrow the candidates.
    """
    g = grams
    if len(word) == 1:
        low, high = _char_range(word)
        return select(g.c.rec).where(g.c.gram >= low, g.c.gram < high)
    first = g.alias()
    source = first
    for key in keys[1:4]:
        other = g.alias()
        source = source.join(other, and_(other.c.rec == first.c.rec, other.c.gram == key))
    stmt = select(first.c.rec).select_from(source).where(first.c.gram == keys[0])
    if len(word) > 2:
        position = func.instr(texts.c.search_text, word) if dialect == "sqlite" else func.strpos(texts.c.search_text, word)
        stmt = stmt.where(select(texts.c.pk).where(texts.c.pk == first.c.rec, position > 0).exists())
    return stmt


def _filters(q: SearchQuery, catalog: Catalog) -> list[object]:
    r = records
    conditions: list[object] = []
    if key := normalize(q.document_type):
        conditions.append(r.c.norm_type == key[:255])
    if key := document_number_key(q.number):
        conditions.append(r.c.norm_number == key)
    if key := normalize(q.issuer):
        conditions.append(r.c.norm_issuer.contains(key, autoescape=True))
    if key := normalize(q.department):
        conditions.append(r.c.norm_department == key[:255])
    for column, value in ((r.c.addressee, q.addressee), (r.c.counterparty, q.counterparty)):
        if value and (key := normalize(value)):
            # Folded like the full text (kana, width, 旧字体): the values that contain the
            # word in normal form, found among the distinct values of the column.
            with catalog.connection() as conn:
                names = [v for v in conn.execute(select(column).where(column.is_not(None)).distinct()).scalars()
                         if key in normalize(v)]
            conditions.append(column.in_(names))
    if q.date_from is not None:
        conditions.append(r.c.document_date >= q.date_from)
    if q.date_to is not None:
        conditions.append(r.c.document_date <= q.date_to)
    if q.fiscal_year is not None:
        conditions.append(r.c.fiscal_year == q.fiscal_year)
    if q.amount_min is not None:
        conditions.append(r.c.amount >= q.amount_min)
    if q.amount_max is not None:
        conditions.append(r.c.amount <= q.amount_max)
    if q.retention_period:
        conditions.append(r.c.retention_period == q.retention_period)
    if q.expiry_from is not None:
        conditions.append(r.c.expiry_date >= q.expiry_from)
    if q.expiry_to is not None:
        conditions.append(r.c.expiry_date <= q.expiry_to)
    if q.disposition:
        conditions.append(r.c.disposition == q.disposition)
    if q.classification:
        conditions.append(r.c.classification == q.classification)
    return conditions


def _matches(catalog: Catalog, q: SearchQuery, parsed: ParsedQuery, clearance: str,
             ) -> tuple[object, object, list[object]] | None:
    """(FROM clause, relevance score, WHERE conditions) of the records matching `q`, or
    None when a required word's bigram occurs nowhere (nothing can match).

    Single words drive the statement through their rarest bigram's posting list (as in
    Catalog.search), which also yields their term frequency for the score; OR groups and
    excluded words are membership conditions on that set.
    """
    r = records
    words = {w for g in parsed.groups for w in g} | set(parsed.excluded)
    all_keys = {w: _term_keys(w) for w in words if len(w) >= 2}
    frequency = catalog._gram_frequencies(sorted({k for ks in all_keys.values() for k in ks})) if all_keys else {}
    keys = {w: sorted(ks, key=lambda k: (frequency[k], k)) for w, ks in all_keys.items()}

    def missing(word: str) -> bool:
        return len(word) >= 2 and frequency[keys[word][0]] == 0

    conditions = [clearance_condition(clearance), *_filters(q, catalog)]
    source: object = r
    tf_parts: list[object] = []
    for group in parsed.groups:
        alive = [w for w in group if not missing(w)]
        if not alive:
            return None
        if len(alive) == 1 and len(alive[0]) >= 2:
            word = alive[0]
            posting = grams.alias()
            source = source.join(posting, and_(posting.c.rec == r.c.pk, posting.c.gram == keys[word][0]))  # type: ignore[attr-defined]
            tf_parts.append(posting.c.tf)
            if len(keys[word]) > 1 or len(word) > 2:
                conditions.append(r.c.pk.in_(_word_set(word, keys[word], catalog.dialect)))
        elif len(alive) == 1:
            conditions.append(r.c.pk.in_(_word_set(alive[0], (), catalog.dialect)))
        else:
            conditions.append(or_(*(r.c.pk.in_(_word_set(w, keys.get(w, ()), catalog.dialect)) for w in alive)))
    for word in parsed.excluded:
        if not missing(word):
            conditions.append(not_(r.c.pk.in_(_word_set(word, keys.get(word, ()), catalog.dialect))))
    title_hits = [case((r.c.norm_title.contains(w, autoescape=True), 1000), else_=0) for w in parsed.words]
    parts = title_hits + tf_parts
    score = parts[0] if len(parts) == 1 else (sum(parts[1:], parts[0]) if parts else literal(0))
    return source, score, conditions


def _order(sort: str, m: object) -> list[object]:
    c = m.c  # type: ignore[attr-defined]
    by_date = [c.document_date.desc().nulls_last(), c.pk.desc()]
    if sort == "date_desc":
        return by_date
    if sort == "date_asc":
        return [c.document_date.asc().nulls_last(), c.pk.asc()]
    if sort == "number":
        return [c.norm_number.asc().nulls_last(), c.document_date.asc().nulls_last(), c.pk.asc()]
    return [c.score.desc(), *by_date]


def prepare(catalog: Catalog) -> None:
    """Build the catalog's in-memory search columns now, e.g. when the web app starts, so
    that the first archivist's search does not wait for it (1-2.5 s at 100,000 records)."""
    index = catalog.search_index()
    with catalog.connection() as conn, index.lock:  # the order `search` takes them in
        index.refresh(conn)


def search(catalog: Catalog, q: SearchQuery, clearance: str, *, facets: bool = True,
           mask: bool | None = None, engine: str = "memory") -> SearchResult:
    """One page of records matching `q` that `clearance` may see, with the total and facet counts.

    `engine`: "memory" (the default) answers from the catalog's in-memory search columns
    (processors/archive/searchindex.py); "sql" from one SQL statement, as before them.
    Both give the same result; the SQL one stays as the reference the tests compare with.
    Raises QueryError (Japanese) for an unknown sort or a page out of range.
    """
    if q.sort not in SORTS:
        raise QueryError(f"並び順「{q.sort}」は使えません。")
    if q.page < 1 or not 1 <= q.per_page <= 500:
        raise QueryError("ページの指定が正しくありません。")
    parsed = parse_query(q.text)
    r = records
    rows = {}
    with catalog.connection() as conn:  # one connection: on PostgreSQL each checkout is a ping and a rollback
        select_ = _select_memory if engine == "memory" else _select_sql
        selected = select_(catalog, conn, q, parsed, clearance, facets)
        if selected is None:
            return SearchResult(total=0, hits=[], facets={name: [] for name in FACETS} if facets else {},
                                page=q.page, per_page=q.per_page)
        total, order, facet_counts = selected
        if order:
            rows = {row.pk: row for row in conn.execute(
                select(r.c.pk, r.c.id, r.c.title, r.c.document_type, r.c.document_number, r.c.document_date,
                       r.c.fiscal_year, r.c.department, r.c.issuer, r.c.classification, r.c.retention_period,
                       r.c.expiry_date, r.c.disposition, texts.c.text)
                .join(texts, texts.c.pk == r.c.pk).where(r.c.pk.in_([pk for pk, _ in order])))}
    for name, counts in facet_counts.items():
        counts.sort(key=lambda vc: (-int(vc[0]), 0) if name == "fiscal_year" else (-vc[1], vc[0]))
    mask_numbers = mask if mask is not None else clearance != CLEARANCES[-1]
    hits = []
    for pk, value in order:
        row = rows[pk]
        body = row.text or ""
        if mask_numbers:
            body = mask_my_numbers(body)
        hits.append(Hit(
            record_id=row.id, title=row.title, document_type=row.document_type, document_number=row.document_number,
            document_date=row.document_date, fiscal_year=row.fiscal_year, department=row.department,
            issuer=row.issuer, classification=row.classification, retention_period=row.retention_period,
            expiry_date=row.expiry_date, disposition=row.disposition, score=value,
            snippet=highlight([body, row.title or ""], parsed.words)))
    return SearchResult(total=total, hits=hits, facets=facet_counts, page=q.page, per_page=q.per_page)


_Selected = tuple[int, list[tuple[int, float]], dict[str, list[tuple[str, int]]]]


def _select_sql(catalog: Catalog, conn: Connection, q: SearchQuery, parsed: ParsedQuery, clearance: str,
                facets: bool) -> _Selected | None:
    """(total, page as (pk, score), unsorted facet counts) from one SQL statement: the matching
    rows in a MATERIALIZED common table expression, the total, facets and page read from it."""
    matched = _matches(catalog, q, parsed, clearance)
    if matched is None:
        return None
    source, score, conditions = matched
    r = records
    m = (
        select(r.c.pk, score.label("score"), r.c.document_date, r.c.norm_number,  # type: ignore[attr-defined]
               *(r.c[name] for name in FACETS))
        .select_from(source)  # type: ignore[arg-type]
        .where(*conditions)
        .cte("m")
        .prefix_with("MATERIALIZED")
    )
    page = (
        select(m.c.pk, m.c.score).order_by(*_order(q.sort, m)).limit(q.per_page).offset((q.page - 1) * q.per_page)
        .subquery("page")
    )
    parts = [
        select(literal("#hit").label("kind"), cast(page.c.pk, String).label("value"),
               cast(page.c.score, String).label("n")),
        select(literal("#total"), cast(literal(None), String), cast(func.count(), String)).select_from(m),
    ]
    if facets:
        for name in FACETS:
            parts.append(select(literal(name), cast(m.c[name], String), cast(func.count(), String))
                         .group_by(m.c[name]))
    total = 0
    order: list[tuple[int, float]] = []
    facet_counts: dict[str, list[tuple[str, int]]] = {name: [] for name in FACETS} if facets else {}
    for kind, value, n in conn.execute(union_all(*parts)):
        if kind == "#hit":
            order.append((int(value), float(n)))
        elif kind == "#total":
            total = int(n)
        elif value is not None:
            facet_counts[kind].append((value, int(n)))
    if q.sort == "number":  # numbers in 文書番号 compare as numbers, which SQL collations do not do
        rows = conn.execute(select(m.c.pk, m.c.score, m.c.norm_number, m.c.document_date)).all()
        rows.sort(key=lambda row: (row.norm_number is None, number_sort_key(row.norm_number or ""),
                                   row.document_date is None, row.document_date or dt.date.min, row.pk))
        start = (q.page - 1) * q.per_page
        order = [(int(row.pk), float(row.score)) for row in rows[start:start + q.per_page]]
    return total, order, facet_counts


def _select_memory(catalog: Catalog, conn: Connection, q: SearchQuery, parsed: ParsedQuery, clearance: str,
                   facets: bool) -> _Selected | None:
    """What `_select_sql` returns, computed on the in-memory columns and posting lists.

    The same rules step by step: clearance and filters are masks over all records, each
    AND group intersects its words' records, excluded words are removed, the score is
    1000 per word in the title plus the term frequency of a lone word's rarest bigram.
    """
    index = catalog.search_index()
    with index.lock:
        index.refresh(conn)
        cols = index.columns
        assert cols is not None
        n = cols.size
        words = {w for g in parsed.groups for w in g} | set(parsed.excluded)
        all_keys = {w: _term_keys(w) for w in words if len(w) >= 2}
        frequency = {k: index.frequency(conn, k) for ks in all_keys.values() for k in ks}
        keys = {w: sorted(ks, key=lambda k: (frequency[k], k)) for w, ks in all_keys.items()}

        def missing(word: str) -> bool:
            return len(word) >= 2 and frequency[keys[word][0]] == 0

        def member(word: str) -> np.ndarray:
            dense = np.zeros(n, dtype=bool)
            pks = index.word(conn, word, keys.get(word, ()))
            dense[pks[pks < n]] = True
            return dense

        selected = cols.present[:n] & _clearance_mask(cols, clearance)
        _filter_masks(cols, q, selected)
        score = np.zeros(n, dtype=np.int64)
        for group in parsed.groups:
            alive = [w for w in group if not missing(w)]
            if not alive:
                return None
            if len(alive) == 1:
                selected &= member(alive[0])
                if len(alive[0]) >= 2:
                    posting = index.gram(conn, keys[alive[0]][0])
                    inside = posting.pks < n
                    score[posting.pks[inside]] += posting.tf[inside]  # type: ignore[index]
            else:
                either = np.zeros(n, dtype=bool)
                for word in alive:
                    either |= member(word)
                selected &= either
        for word in parsed.excluded:
            if not missing(word):
                selected &= ~member(word)
        idx = np.flatnonzero(selected)
        scores = score[idx]
        if parsed.words:
            titles = cols.text["norm_title"][idx]
            for word in parsed.words:
                scores += 1000 * index.title_hits(word)[titles]
        order = _page(cols, idx, scores, q)
        facet_counts = _facets(cols, idx) if facets else {}
    return len(idx), order, facet_counts


def _clearance_mask(cols: _Columns, clearance: str) -> np.ndarray:
    """The same rule as `clearance_condition`, on the classification codes."""
    allowed = CLEARANCES[: _rank(clearance) + 1]
    names = {f"機密性{level}" for level in allowed}
    ok = cols.codes_where("classification", names.__contains__)
    if _UNCLASSIFIED in allowed:
        ok = np.append(ok, 0)
    return _lookup(cols, "classification", ok)


def _lookup(cols: _Columns, name: str, codes: np.ndarray) -> np.ndarray:
    """Per record: is its code in column `name` one of `codes`? (A table lookup, ~5x np.isin.)"""
    table = np.zeros(len(cols.codes[name]), dtype=bool)
    table[codes] = True
    return table[cols.text[name][: cols.size]]


def _filter_masks(cols: _Columns, q: SearchQuery, selected: np.ndarray) -> None:
    """AND the filters of `q` into `selected` (the same rules as `_filters`)."""
    n = cols.size

    def keep(condition: np.ndarray) -> None:
        np.logical_and(selected, condition, out=selected)

    def equal(name: str, value: str) -> None:
        code = cols.codes[name].get(value)
        if code is None:
            selected[:] = False
        else:
            keep(cols.text[name][:n] == code)

    def contains(name: str, key: str) -> None:
        keep(_lookup(cols, name, cols.codes_where(name, lambda v: key in v)))

    def day_range(column: np.ndarray, low: dt.date | None, high: dt.date | None) -> None:
        if low is None and high is None:
            return
        days = column[:n]
        keep(days != NULL_DAY)
        if low is not None:
            keep(days >= low.toordinal())
        if high is not None:
            keep(days <= high.toordinal())

    if key := normalize(q.document_type):
        equal("norm_type", key[:255])
    if key := document_number_key(q.number):
        equal("norm_number", key)
    if key := normalize(q.issuer):
        contains("norm_issuer", key)
    if key := normalize(q.department):
        equal("norm_department", key[:255])
    for name, value in (("norm_addressee", q.addressee), ("norm_counterparty", q.counterparty)):
        if value and (key := normalize(value)):
            contains(name, key)
    day_range(cols.document_date, q.date_from, q.date_to)
    if q.fiscal_year is not None:
        keep(cols.fiscal_year[:n] == q.fiscal_year)
    if q.amount_min is not None or q.amount_max is not None:
        amount = cols.amount[:n]
        keep(amount != _NULL_AMOUNT)
        if q.amount_min is not None:
            keep(amount >= q.amount_min)
        if q.amount_max is not None:
            keep(amount <= q.amount_max)
    if q.retention_period:
        equal("retention_period", q.retention_period)
    day_range(cols.expiry_date, q.expiry_from, q.expiry_to)
    if q.disposition:
        equal("disposition", q.disposition)
    if q.classification:
        equal("classification", q.classification)


def _page(cols: _Columns, idx: np.ndarray, scores: np.ndarray, q: SearchQuery) -> list[tuple[int, float]]:
    """The requested page of `idx` (pks) in the order of `_order`, as (pk, score).

    Sorted on ascending keys (descending ones negated). Only rows whose first key is
    within the first `offset + per_page` can be on the page, so the rest is cut first.
    """
    offset = (q.page - 1) * q.per_page
    wanted = offset + q.per_page
    if offset >= len(idx):
        return []
    days = cols.document_date[idx].astype(np.int64)
    pk = idx.astype(np.int64)
    if q.sort == "date_desc":
        sort_keys = [-days, -pk]
    elif q.sort == "date_asc":
        sort_keys = [np.where(days == NULL_DAY, np.iinfo(np.int64).max, days), pk]
    elif q.sort == "number":
        sort_keys = [cols.number_rank()[idx], np.where(days == NULL_DAY, np.iinfo(np.int64).max, days), pk]
    else:
        sort_keys = [-scores, -days, -pk]
    packed = _packed(sort_keys)
    if packed is not None:  # one int64 key: a partition and a sort of the page only
        top = np.argpartition(packed, wanted - 1)[:wanted] if wanted < len(packed) else np.arange(len(packed))
        order = top[np.argsort(packed[top], kind="stable")][offset:wanted]
        return [(int(pk[i]), float(scores[i])) for i in order]
    if wanted < len(idx):
        first = sort_keys[0]
        cut = np.partition(first, wanted - 1)[wanted - 1]
        keep = first <= cut
        sort_keys = [k[keep] for k in sort_keys]
        pk, scores = pk[keep], scores[keep]
    order = np.lexsort(sort_keys[::-1])[offset:wanted]
    return [(int(pk[i]), float(scores[i])) for i in order]


def _packed(sort_keys: Sequence[np.ndarray]) -> np.ndarray | None:
    """The sort keys (ascending, most significant first) packed into one int64 whose order is
    theirs, when they fit in 63 bits together (pk and dates always do; scores nearly always);
    otherwise None."""
    lows = [int(k.min()) for k in sort_keys]
    spans = [int(k.max()) - low + 1 for k, low in zip(sort_keys, lows)]
    if sum(max(1, span - 1).bit_length() for span in spans) > 62:
        return None
    packed = np.zeros(len(sort_keys[0]), dtype=np.int64)
    for key, low, span in zip(sort_keys, lows, spans):
        packed *= span
        packed += key - low
    return packed


def _facets(cols: _Columns, idx: np.ndarray) -> dict[str, list[tuple[str, int]]]:
    """Counts per value of each facet column over the matching rows (NULL not counted)."""
    result: dict[str, list[tuple[str, int]]] = {}
    for name in FACETS:
        if name == "fiscal_year":
            years = cols.fiscal_year[idx]
            years = years[years != _NULL_YEAR].astype(np.int64)
            if not len(years):
                result[name] = []
                continue
            low = int(years.min())
            counts = np.bincount(years - low)
            result[name] = [(str(low + int(v)), int(counts[v])) for v in np.flatnonzero(counts)]
        else:
            codes = cols.codes[name]
            counts = np.bincount(cols.text[name][idx], minlength=len(codes))
            result[name] = [(codes.values[c], int(counts[c])) for c in np.flatnonzero(counts[1:]) + 1]  # type: ignore[misc]
    return result


# --------------------------------------------------------------------------- snippets


def _fold_display(text: str) -> str:
    """`text` folded like `normalize` but keeping every position (for finding words in it)."""
    folded = text.translate(FOLD).lower()
    return folded if len(folded) == len(text) else text.translate(FOLD)


def highlight(sources: Sequence[str], words: Sequence[str], before: int = 30, after: int = 70,
              ) -> list[tuple[str, bool]]:
    """A short piece around the first place a word occurs, as (text, is_hit) parts.

    Found in folded form (ゴミ highlights ごみ), shown as written. Lines are normalised
    one at a time until a hit is found (a whole document for twenty hits would cost
    more than the search). Without words, or when no word occurs, the beginning.
    """
    sources = [s for s in sources if s and s.strip()]
    if not sources:
        return []
    patterns = [re.compile(r"\s*".join(map(re.escape, w))) for w in words if w]
    for source in sources if patterns else []:
        lines = source.splitlines()
        for i, line in enumerate(lines):
            if any(p.search(_fold_display(_display(line))) for p in patterns):
                shown = _display(" ".join(lines[max(0, i - 2):i + 3]))
                if parts := _parts(shown, patterns, before, after, i > 2, i + 3 < len(lines)):
                    return parts
        shown = _display(source)  # a word the OCR split across lines
        if parts := _parts(shown, patterns, before, after, False, False):
            return parts
    shown = _display(sources[0][: 4 * (before + after)])
    return [(shown[: before + after] + ("…" if len(shown) > before + after else ""), False)]


def _parts(shown: str, patterns: Sequence[re.Pattern[str]], before: int, after: int, more_before: bool,
           more_after: bool) -> list[tuple[str, bool]]:
    folded = _fold_display(shown)
    found = [m for m in (p.search(folded) for p in patterns) if m]
    if not found:
        return []
    first = min(found, key=lambda m: m.start())
    start, end = max(0, first.start() - before), min(len(shown), first.end() + after)
    spans = sorted({(m.start(), m.end()) for p in patterns for m in p.finditer(folded, start, end)})
    parts: list[tuple[str, bool]] = [("…", False)] if start > 0 or more_before else []
    pos = start
    for s, e in spans:
        if s < pos:
            continue
        if s > pos:
            parts.append((shown[pos:s], False))
        parts.append((shown[s:e], True))
        pos = e
    if pos < end:
        parts.append((shown[pos:end], False))
    if end < len(shown) or more_after:
        parts.append(("…", False))
    return parts
