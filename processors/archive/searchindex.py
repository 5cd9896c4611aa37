"""The catalog's searchable columns held in memory, for faceted search at 100,000 records.

An archivist's two-character word (契約) matches nearly every record; the web app then
wants the total, six facet counts and one page in relevance, date or 文書番号 order, all
restricted to the user's clearance. Answered in SQL that is a join of ~100,000 postings
with ~100,000 catalog rows and seven aggregations over them: 0.4-0.8 s on SQLite and
1.0-1.6 s on PostgreSQL at 100,000 records (bench/web_bench.py). Held here as numpy
arrays indexed by the record's pk it is a few array operations over 100,000 elements.

What is held:
- every catalog_records column a filter, facet, clearance or sort reads (`_Columns`),
  as small integer codes (text) or integers (dates as ordinals, years, amounts);
- the posting lists of the bigrams, words and characters recent queries used, as
  sorted pk arrays (`_Postings`), read from catalog_grams once and verified like the
  SQL did (a long word must occur in the normalised text, a one-character word is the
  range of bigrams that start with it).

Freshness: every write to the catalog appends the record's pk to catalog_changes in the
same transaction (`catalog._upsert`). Each query first reads that log's newest sequence
number; rows changed since the last query are re-read and patched into the columns and
into every posting list held, so a correction is found by the very next search, in every
process. A large change (a rebuild) reloads everything instead.

Plain Python and numpy; the statements are SQLAlchemy Core and work on SQLite and
PostgreSQL alike (faster reading paths where the driver offers one).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from processors.archive.catalog import (
    _char_range,
    _grams,
    changes,
    grams,
    normalize,
    number_sort_key,
    records,
    texts,
)

__all__ = ["SearchIndex", "NULL_DAY"]

# A date column's value for NULL: below every real ordinal, so "newest first" puts it last.
NULL_DAY = -1
_NULL_YEAR = np.iinfo(np.int32).min
_NULL_AMOUNT = np.iinfo(np.int64).min
# More changed rows than this since the last query: reload instead of patching. Patching
# costs ~0.5 ms a row (its bigrams are counted again) and a reload ~1-2 s at 100,000 records.
_PATCH_LIMIT = 500
# Postings held at most (pk + tf, 8 bytes each): 64 MiB per process.
_CACHE_POSTINGS = 8_000_000


class _Codes:
    """Text values <-> small integers; code 0 is NULL. Codes are never reused."""

    def __init__(self) -> None:
        self.values: list[str | None] = [None]
        self._index: dict[str | None, int] = {None: 0}

    def code(self, value: str | None) -> int:
        found = self._index.get(value)
        if found is None:
            found = self._index[value] = len(self.values)
            self.values.append(value)
        return found

    def get(self, value: str | None) -> int | None:
        return self._index.get(value)

    def __len__(self) -> int:
        return len(self.values)


# catalog_records columns held as codes, in the order they are read after pk. 宛先 and 相手方
# are held in the same normal form as the full text (they have no normalised column).
_TEXT_COLUMNS: tuple[str, ...] = (
    "document_type", "department", "retention_period", "disposition", "classification", "norm_type",
    "norm_number", "norm_department", "norm_issuer", "norm_title", "norm_addressee", "norm_counterparty",
)
_NORMALISED_HERE = {"norm_addressee": "addressee", "norm_counterparty": "counterparty"}
_COLUMNS_READ = [
    records.c.pk,
    *(records.c[_NORMALISED_HERE.get(name, name)] for name in _TEXT_COLUMNS),
    records.c.document_date, records.c.fiscal_year, records.c.amount, records.c.expiry_date,
]


def _day(value: dt.date | None) -> int:
    return value.toordinal() if value is not None else NULL_DAY


class _Columns:
    """The catalog_records columns search reads, one numpy array each, indexed by pk."""

    def __init__(self) -> None:
        self.codes: dict[str, _Codes] = {name: _Codes() for name in _TEXT_COLUMNS}
        self.size = 0
        self.present = np.zeros(0, dtype=bool)
        self.text: dict[str, np.ndarray] = {name: np.zeros(0, dtype=np.int32) for name in _TEXT_COLUMNS}
        self.document_date = np.zeros(0, dtype=np.int32)
        self.expiry_date = np.zeros(0, dtype=np.int32)
        self.fiscal_year = np.zeros(0, dtype=np.int32)
        self.amount = np.zeros(0, dtype=np.int64)
        self._number_rank: np.ndarray | None = None
        self._rank_of_code: np.ndarray | None = None

    def _grow(self, size: int) -> None:
        if size <= self.size:
            return
        capacity = max(size, int(self.size * 1.25) + 1024)

        def grown(array: np.ndarray, fill: int) -> np.ndarray:
            new = np.full(capacity, fill, dtype=array.dtype)
            new[: len(array)] = array
            return new

        if capacity > len(self.present):
            self.present = grown(self.present, False)
            self.text = {name: grown(a, 0) for name, a in self.text.items()}
            self.document_date = grown(self.document_date, NULL_DAY)
            self.expiry_date = grown(self.expiry_date, NULL_DAY)
            self.fiscal_year = grown(self.fiscal_year, _NULL_YEAR)
            self.amount = grown(self.amount, _NULL_AMOUNT)
        self.size = size

    def put(self, rows: Sequence[Sequence[object]]) -> None:
        """Set the columns of these catalog_records rows (new or changed), read as `_COLUMNS_READ`."""
        if not rows:
            return
        columns = list(zip(*rows))
        pks = np.array(columns[0], dtype=np.int64)
        self._grow(int(pks.max()) + 1)
        self.present[pks] = True
        for i, name in enumerate(_TEXT_COLUMNS, start=1):
            values = columns[i]
            if name in _NORMALISED_HERE:
                folded: dict[object, str | None] = {}
                values = [folded[v] if v in folded else folded.setdefault(v, normalize(v) or None)  # type: ignore[arg-type]
                          for v in values]
            self.text[name][pks] = np.fromiter(map(self.codes[name].code, values), dtype=np.int32, count=len(rows))
        first = len(_TEXT_COLUMNS) + 1
        day, year, amount, expiry = columns[first:first + 4]
        self.document_date[pks] = np.fromiter(map(_day, day), dtype=np.int32, count=len(rows))
        self.expiry_date[pks] = np.fromiter(map(_day, expiry), dtype=np.int32, count=len(rows))
        self.fiscal_year[pks] = [_NULL_YEAR if v is None else v for v in year]
        self.amount[pks] = [_NULL_AMOUNT if v is None else v for v in amount]
        self._number_rank = None

    def number_rank(self) -> np.ndarray:
        """Per pk, the rank of its 文書番号 key in catalog.number_sort_key order, NULL last (sort by 文書番号).

        The distinct keys are sorted again only when a new one appeared since the last time.
        """
        if self._number_rank is None:
            values = self.codes["norm_number"].values
            if self._rank_of_code is None or len(self._rank_of_code) != len(values):
                order = sorted(range(1, len(values)), key=lambda code: number_sort_key(values[code]))  # type: ignore[arg-type]
                rank_of_code = np.empty(len(values), dtype=np.int64)
                rank_of_code[0] = len(values)  # NULL after every value
                rank_of_code[order] = np.arange(len(order))
                self._rank_of_code = rank_of_code
            self._number_rank = self._rank_of_code[self.text["norm_number"][: self.size]]
        return self._number_rank

    def codes_where(self, name: str, test: Callable[[str], bool]) -> np.ndarray:
        """The codes of column `name` whose (non-NULL) value passes `test`."""
        values = self.codes[name].values
        return np.fromiter((code for code in range(1, len(values)) if test(values[code])), dtype=np.int32)  # type: ignore[arg-type]


@dataclass
class _Posting:
    """Sorted pks of the records holding a bigram / word / character, with the bigram's tf."""

    pks: np.ndarray
    tf: np.ndarray | None


class SearchIndex:
    """A catalog's search columns and recent posting lists, kept in step with the database.

    One per Catalog (`Catalog.search_index`), shared by the threads of a process; every
    method takes the lock, so a query sees one consistent state.
    """

    def __init__(self, catalog: object) -> None:
        self.catalog = catalog
        self.lock = threading.RLock()
        self.columns: _Columns | None = None
        self.seq = 0
        self._postings: OrderedDict[tuple[str, object], _Posting] = OrderedDict()
        self._held = 0
        self._title_hits: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- freshness

    def refresh(self, conn: Connection) -> None:
        """Bring the columns and the postings held up to the newest committed write."""
        newest = conn.execute(select(func.max(changes.c.seq))).scalar() or 0
        if self.columns is not None and newest == self.seq:
            return
        if self.columns is not None and newest > self.seq:
            # The log is cut from its old end (catalog.CHANGES_KEPT): if entries after ours
            # may have been cut, what changed is unknown and everything is read again.
            oldest = conn.execute(select(func.min(changes.c.seq))).scalar() or 0
            changed = [pk for (pk,) in conn.execute(
                select(changes.c.pk).where(changes.c.seq > self.seq).distinct())]
            if oldest <= self.seq + 1 and len(changed) <= _PATCH_LIMIT:
                self._patch(conn, changed)
                self.seq = newest
                return
        # First use, a log that went backwards (a catalog replaced under us), or a rebuild.
        self.columns = _Columns()
        self._postings.clear()
        self._held = 0
        self._title_hits.clear()
        result = conn.execute(select(*_COLUMNS_READ).order_by(records.c.pk))
        while batch := result.fetchmany(20_000):
            self.columns.put(batch)
        self.seq = newest

    def _patch(self, conn: Connection, changed: list[int]) -> None:
        assert self.columns is not None
        rows = conn.execute(select(*_COLUMNS_READ).where(records.c.pk.in_(changed))).all()
        self.columns.put(rows)
        if not self._postings:
            return
        found = dict(conn.execute(select(texts.c.pk, texts.c.search_text).where(texts.c.pk.in_(changed))).all())
        changed_pks = np.array(sorted(changed), dtype=np.int64)
        counts = {pk: _grams(found.get(pk, "")) for pk in changed}
        for (kind, key), posting in self._postings.items():
            if kind == "g":
                new = [counts[pk].get(key, 0) for pk in changed_pks.tolist()]  # type: ignore[call-overload]
            else:  # a word or a character: is it in the text now?
                new = [int(key in found.get(pk, "")) for pk in changed_pks.tolist()]  # type: ignore[operator]
            _replace(posting, changed_pks, np.array(new, dtype=np.int32))

    # ---------------------------------------------------------------- postings

    def _hold(self, key: tuple[str, object], posting: _Posting) -> _Posting:
        self._postings[key] = posting
        self._held += len(posting.pks)
        while self._held > _CACHE_POSTINGS and len(self._postings) > 1:
            _, old = self._postings.popitem(last=False)
            self._held -= len(old.pks)
        return posting

    def _cached(self, key: tuple[str, object]) -> _Posting | None:
        posting = self._postings.get(key)
        if posting is not None:
            self._postings.move_to_end(key)
        return posting

    def gram(self, conn: Connection, key: int) -> _Posting:
        """The posting list of one bigram: pks and term frequencies, pk order."""
        if (posting := self._cached(("g", key))) is not None:
            return posting
        pks, tf = _read_posting(conn, key)
        return self._hold(("g", key), _Posting(pks, tf))

    def frequency(self, conn: Connection, key: int) -> int:
        """How many records hold the bigram (the choice of a word's rarest bigram uses it)."""
        return len(self.gram(conn, key).pks)

    def word(self, conn: Connection, word: str, keys: Sequence[int]) -> np.ndarray:
        """Sorted pks of the records whose normalised text contains `word` (exactly)."""
        if len(word) == 2:
            return self.gram(conn, keys[0]).pks
        cache_key = ("c", word) if len(word) == 1 else ("w", word)
        if (posting := self._cached(cache_key)) is not None:
            return posting.pks
        if len(word) == 1:
            low, high = _char_range(word)
            pks = np.array(conn.execute(
                select(grams.c.rec).where(grams.c.gram >= low, grams.c.gram < high).distinct().order_by(grams.c.rec)
            ).scalars().all(), dtype=np.int64)
        else:
            # Every bigram must be there; the text then decides (the bigrams may be apart).
            candidates = self.gram(conn, keys[0]).pks
            for key in keys[1:]:
                candidates = np.intersect1d(candidates, self.gram(conn, key).pks, assume_unique=True)
                if not len(candidates):
                    break
            pks = _verify(conn, candidates, word) if len(candidates) else candidates
        return self._hold(cache_key, _Posting(pks, None)).pks

    def title_hits(self, word: str) -> np.ndarray:
        """Per norm_title code: does that title contain `word`?"""
        assert self.columns is not None
        titles = self.columns.codes["norm_title"].values
        hits = self._title_hits.get(word)
        if hits is None or len(hits) < len(titles):
            start = 0 if hits is None else len(hits)
            more = np.fromiter((bool(t) and word in t for t in titles[start:]), dtype=bool,  # type: ignore[operator]
                               count=len(titles) - start)
            hits = more if start == 0 else np.concatenate([hits, more])  # type: ignore[list-item]
            if len(self._title_hits) > 256:
                self._title_hits.clear()
            self._title_hits[word] = hits
        return hits


def _replace(posting: _Posting, pks: np.ndarray, tfs: np.ndarray) -> None:
    """Set the entries of `pks` (sorted) in a posting list: tf 0 removes one, others are kept
    or inserted. A few pks into 100,000: memmove, not a sort (a correction must not make the
    next search slow)."""
    at = np.searchsorted(posting.pks, pks)
    held = at < len(posting.pks)
    held[held] = posting.pks[at[held]] == pks[held]
    before = np.zeros(len(pks), dtype=np.int64)
    before[held] = 1 if posting.tf is None else posting.tf[at[held]]
    if np.array_equal(before, np.where(tfs > 0, 1, 0) if posting.tf is None else tfs):
        return  # the write did not touch this list (the usual case): nothing to copy
    kept_pks = np.delete(posting.pks, at[held])
    kept_tf = None if posting.tf is None else np.delete(posting.tf, at[held])
    add = tfs > 0
    where = np.searchsorted(kept_pks, pks[add])
    posting.pks = np.insert(kept_pks, where, pks[add])
    if kept_tf is not None:
        posting.tf = np.insert(kept_tf, where, tfs[add])


def _read_posting(conn: Connection, key: int) -> tuple[np.ndarray, np.ndarray]:
    """(pks, tfs) of one bigram, read by the quickest path the driver has."""
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        data = bytearray()
        with raw.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy("COPY (SELECT rec, tf FROM catalog_grams WHERE gram = %s ORDER BY rec) TO STDOUT "
                          "(FORMAT binary)", (key,)) as copy:
                for chunk in copy:
                    data += chunk
        # Binary COPY: a 19-byte header, then per row int16 field count and (int32 length,
        # int32 value) per field, big-endian; a trailing int16 -1.
        rows = np.frombuffer(bytes(data[19:-2]), dtype=np.dtype([("n", ">i2"), ("l1", ">i4"), ("rec", ">i4"),
                                                                  ("l2", ">i4"), ("tf", ">i4")]))
        return rows["rec"].astype(np.int64), rows["tf"].astype(np.int32)
    # SQLite: the posting list is one range of the primary key; joined into two strings by
    # SQLite itself it arrives 4x faster than as 100,000 row tuples.
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        pks_text, tfs_text = cur.execute(
            "SELECT group_concat(rec), group_concat(tf) FROM catalog_grams WHERE gram = ?", (key,)).fetchone()
    finally:
        cur.close()
    if not pks_text:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    pks = np.fromstring(pks_text, dtype=np.int64, sep=",")
    tfs = np.fromstring(tfs_text, dtype=np.int32, sep=",")
    if len(pks) > 1 and not (pks[1:] > pks[:-1]).all():  # group_concat's order is the scan's, not promised
        order = np.argsort(pks, kind="stable")
        pks, tfs = pks[order], tfs[order]
    return pks, tfs


def _verify(conn: Connection, candidates: np.ndarray, word: str) -> np.ndarray:
    """The candidates whose normalised text contains `word`."""
    if conn.dialect.name == "postgresql":
        found = conn.exec_driver_sql(
            "SELECT pk FROM catalog_texts WHERE pk = ANY(%s) AND strpos(search_text, %s) > 0 ORDER BY pk",
            (candidates.tolist(), word)).scalars().all()
    else:
        found = conn.exec_driver_sql(
            "SELECT pk FROM catalog_texts WHERE pk IN (SELECT value FROM json_each(?)) AND instr(search_text, ?) > 0 "
            "ORDER BY pk", (json.dumps(candidates.tolist()), word)).scalars().all()
    return np.array(found, dtype=np.int64)
