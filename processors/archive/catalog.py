"""The archive catalog: every archived Record, searchable the way an archivist asks.

An archivist looks for 「あの契約の件」 with two or three characters, types numbers in
whatever width the keyboard gives, and searches OCR text in which tesseract put
spaces between characters. So everything searchable is compared in one normal form
(`normalize`: NFKC, case-folded, whitespace and invisible characters removed), and
the full text is indexed as character bigrams in an ordinary table
(`catalog_grams(gram, rec, tf)`, primary key (gram, rec)). A plain B-tree table works
the same on SQLite and PostgreSQL, finds two-character words (which trigram indexes
such as FTS5-trigram or pg_trgm cannot), and needs no extension.

Search is exact: bigrams only narrow the candidates, which are then checked by a
substring match on the normalised text, so a record is returned if and only if every
query word occurs in it. A two-character word *is* one bigram, so it is answered from
the index alone, term frequency included. A one-character word is the range of
bigrams that start with it (the last character of a field is indexed as a bigram with
an end marker, so every occurrence starts exactly one bigram): also exact, no text scan.
Results are ranked: words found in the title first, then how often the words occur,
then the newest document. Ranking reads the text of only about as many candidates as
are returned (see `Catalog._rank`).

Measured with bench/search_bench.py (20,000 records of ~1,600 characters, SQLite): a
LIKE scan of all texts takes 300-500 ms per query, FTS5 with the trigram tokenizer
cannot answer two-character words at all, the bigram table answers every kind of
query well under the 200 ms target.

The full Record JSON is kept beside the columns, so `get` returns exactly what was
added; the columns only exist to be searched, filtered and listed.

Every write also appends the record's pk to `catalog_changes`: the web app's faceted
search (processors/archive/query.py) answers from columns and posting lists held in
memory (processors/archive/searchindex.py) and reads that log before each query to
patch in what any process wrote since. At 100,000 records the SQL form of that search
took 0.4-1.6 s (six facet GROUP BYs and a sort over ~90,000 matches, or a text check of
~55,000 candidates for a common long word); in memory it takes 10-40 ms.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import heapq
import operator
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

from processors.reading.textnorm import new_forms
from processors.records.dates import fiscal_year, parse_kanji_number
from schemas.record import Record

if TYPE_CHECKING:
    from processors.archive.searchindex import SearchIndex

__all__ = [
    "Catalog",
    "DuplicateScanError",
    "REGISTER_COLUMNS",
    "SearchHit",
    "document_number_key",
    "normalize",
    "query_terms",
    "write_register_csv",
]

# --------------------------------------------------------------------------- normal form

# Whitespace (including U+3000 and the form feed between pages), C0/C1 controls and the
# invisible format characters OCR engines and word processors leave behind. Removing them
# is what makes 「契 約」 (OCR spacing) and 「契約」 the same word.
_INVISIBLE = re.compile(
    r"[\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]+"
)
# Joins the searchable fields into one string. It is a control character, so `normalize`
# removes it from every query and no query word can match across two fields.
_FIELD_SEP = "\x1f"
# Indexed filter columns keep at most this many characters (PostgreSQL B-tree entries are
# limited in size; no real document number or department name comes near it).
_KEY_LEN = 255


def _fold_table() -> dict[int, int]:
    """Katakana -> hiragana and 旧字体 -> 新字体, one character for one character.

    ゴミ and ごみ, 單位 and 単位 are the same word to an archivist. Both folds keep the
    length, so a position in folded text is the same position in the displayed text
    (highlighting relies on it). The old/new kanji pairs come from kyujipy's table.
    """
    from kyujipy.basic_converter import BasicConverter

    table = {code: code - 0x60 for code in range(ord("ァ"), ord("ヶ") + 1)}
    for old, new in BasicConverter().kyujitai_to_shinjitai_database.items():
        if len(old) == 1 and len(new) == 1:
            table[ord(old)] = ord(new)
    return table


FOLD = _fold_table()


def normalize(text: str | None) -> str:
    """The form every searchable string is compared in.

    NFKC folds full-width ＡＢＣ１２３ and half-width ｶﾅ into ABC123 / カナ, and ㈱ or ①
    into (株) / 1; casefold makes Latin letters case-blind; katakana becomes hiragana and
    旧字体 新字体 (`FOLD`); whitespace is removed so OCR spacing and line breaks inside a
    word do not hide it; textnorm.new_forms folds old forms too. Changing this form needs `kiroku catalog rebuild`.
    """
    if not text:
        return ""
    return _INVISIBLE.sub("", new_forms(unicodedata.normalize("NFKC", text)).casefold().translate(FOLD))


_QUOTED = re.compile(r'"([^"]*)"|「([^」]*)」|(\S+)')


def query_terms(query: str | None) -> list[str]:
    """Split what the archivist typed into normalised words, all of which must match.

    Words are separated by spaces (full-width spaces too: NFKC turns them into ASCII
    ones); text in "double quotes" or 「かぎ括弧」 is one word even with spaces in it
    (which are then removed, like everywhere else). Duplicates are dropped.
    """
    if not query:
        return []
    terms: list[str] = []
    for match in _QUOTED.finditer(unicodedata.normalize("NFKC", query)):
        word = normalize(next(g for g in match.groups() if g is not None))
        if word and word not in terms:
            terms.append(word)
    return terms


_KANJI_NUMBER_IN_NUMBER = re.compile(r"(?<=第)([〇零一二三四五六七八九十百千万]+)(?=号)")


def document_number_key(number: str | None) -> str:
    """The form document numbers are compared in: 新総第１２３４号, 新総第 1234 号 and
    新総第千二百三十四号 all become 新総第1234号."""
    key = normalize(number)

    def arabic(match: re.Match[str]) -> str:
        value = parse_kanji_number(match.group(1))
        return match.group(1) if value is None else str(value)

    return _KANJI_NUMBER_IN_NUMBER.sub(arabic, key)[:_KEY_LEN]


def number_sort_key(key: str) -> tuple[str, str]:
    """How 文書番号 are ordered: digit runs as numbers (環第98号 before 環第105号), then as written.

    Applied to document_number_key's form; a run is padded to 12 digits, so comparing the
    padded text in code point order is comparing the numbers."""
    return re.sub(r"\d+", lambda m: m.group().zfill(12), key), key


# Marks the end of a field: the last character of each field is indexed as the bigram
# (character, _END), so every occurrence of every character is the first half of exactly
# one bigram. That is what lets a one-character word be found and counted from the index.
_END = "\x00"


def _gram_key(a: str, b: str) -> int:
    # Two code points (< 2**21 each) packed into one integer: compact in both databases and
    # compared without any collation. All bigrams starting with one character are a range.
    return (ord(a) << 21) | ord(b)


def _char_range(char: str) -> tuple[int, int]:
    """[low, high) of the keys of every bigram that starts with `char`."""
    return ord(char) << 21, (ord(char) + 1) << 21


def _grams(search_text: str) -> Counter[int]:
    """Bigram -> number of occurrences, never across the boundary of two fields."""
    counts: Counter[int] = Counter()
    for part in search_text.split(_FIELD_SEP):
        if part:
            counts.update(map(_gram_key, part, part[1:] + _END))
    return counts


def _term_keys(term: str) -> list[int]:
    """The distinct bigrams of a word."""
    return list(dict.fromkeys(map(_gram_key, term, term[1:])))


# How many bigrams of a long word are probed. The rarest ones narrow the candidates the
# most, and in a Japanese compound the bigram across the join of its parts (務委 in
# 業務委託) is usually far rarer than the parts, which occur everywhere on their own.
_PROBES_PER_WORD = 4


# --------------------------------------------------------------------------- tables

metadata = MetaData()

records = Table(
    "catalog_records",
    metadata,
    # A small integer key keeps the bigram table compact; `id` is the record's own id.
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("source_filename", Text),
    Column("department", Text),
    Column("document_type", Text),
    Column("document_number", Text),
    Column("title", Text),
    Column("document_date", Date),
    Column("fiscal_year", Integer),
    Column("issuer", Text),
    Column("addressee", Text),
    Column("counterparty", Text),
    Column("amount", BigInteger),
    Column("classification", Text),
    Column("retention_period", Text),
    Column("retention_start", Date),
    Column("expiry_date", Date),
    Column("disposition", Text),
    Column("legal_hold", Boolean, nullable=False, default=False),
    Column("archive_bucket", Text),
    Column("archive_key", Text),
    Column("archive_version", Text),
    Column("stored_at", DateTime),  # UTC, naive (SQLite keeps no time zone)
    # --- search columns, all in `normalize`d form
    Column("norm_type", String(_KEY_LEN)),
    Column("norm_number", String(_KEY_LEN)),
    Column("norm_department", String(_KEY_LEN)),
    Column("norm_issuer", Text),
    Column("norm_title", Text, nullable=False, default=""),
    Index("ix_catalog_records_type_date", "norm_type", "document_date"),
    Index("ix_catalog_records_number", "norm_number"),
    Index("ix_catalog_records_department_date", "norm_department", "document_date"),
    Index("ix_catalog_records_date", "document_date"),
    Index("ix_catalog_records_fiscal_year", "fiscal_year"),
    Index("ix_catalog_records_expiry", "expiry_date"),
)

# The long values live apart from the columns searched and sorted on: with them inline a
# SQLite row fills a page of its own, and ranking 20,000 candidates would read 20,000 pages.
texts = Table(
    "catalog_texts",
    metadata,
    Column("pk", Integer, ForeignKey("catalog_records.pk", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("text", Text, nullable=False, default=""),  # as recognised, for snippets
    Column("search_text", Text, nullable=False, default=""),  # the searched fields, normalised
    Column("record_json", Text, nullable=False),
)


def _posting_key() -> list[object]:
    """The primary key (gram, rec) of the posting table, covering tf.

    In SQLite the table is WITHOUT ROWID, so its primary key *is* the table and a posting
    list is one contiguous range. In PostgreSQL the rows sit in a heap in insertion order;
    with tf included in the key's index a posting list is read by an index-only scan
    instead of one heap page per posting (measured: 4-character words p95 340 -> 80 ms
    at 20,000 records).
    """
    try:
        return [PrimaryKeyConstraint("gram", "rec", postgresql_include=["tf"])]
    except ArgumentError:  # SQLAlchemy before 2.0.41: a separate covering index instead
        return [PrimaryKeyConstraint("gram", "rec"),
                Index("ix_catalog_grams_covering", "gram", "rec", "tf").ddl_if(dialect="postgresql")]


grams = Table(
    "catalog_grams",
    metadata,
    Column("gram", BigInteger, nullable=False, autoincrement=False),
    Column("rec", Integer, nullable=False, autoincrement=False),
    Column("tf", Integer, nullable=False),
    *_posting_key(),
    sqlite_with_rowid=False,
)

# Every write appends the pks it touched, in the writing transaction, so that a search
# index held in memory by any process can tell what changed since it last looked
# (processors/archive/searchindex.py). Writers are serialised (SQLite: BEGIN IMMEDIATE;
# PostgreSQL: a table lock in `add_many`), so sequence numbers become visible in order.
# How many of the newest entries of catalog_changes are kept (the nightly fixity check
# re-adds every record: the log would otherwise grow by the catalog's size every night).
CHANGES_KEPT = 10_000

changes = Table(
    "catalog_changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("pk", Integer, nullable=False),
)

# Searched fields, in the order a snippet is looked for (the body text first).
_SEARCH_FIELDS = ("text", "title", "document_number", "issuer", "addressee", "counterparty")


class DuplicateScanError(ValueError):
    """Another record already holds this scan (same source sha256)."""


@dataclass(frozen=True)
class SearchHit:
    """One line of a result list: enough to show the hit and fetch the archived PDF."""

    record_id: str
    title: str | None
    document_type: str | None
    document_number: str | None
    document_date: dt.date | None
    issuer: str | None
    department: str | None
    archive_key: str | None
    snippet: str
    score: float
    archive_bucket: str | None = None
    fiscal_year: int | None = None


REGISTER_COLUMNS: tuple[str, ...] = (
    "年度", "分類", "名称", "作成者", "起算日", "保存期間", "満了日", "媒体", "保存場所", "管理者", "満了時の措置", "備考",
)


# --------------------------------------------------------------------------- rows


def _clean(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; OCR output occasionally does.
    return value.replace("\x00", "") if value else value


def _utc_naive(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _rows(record: Record) -> tuple[dict[str, object], dict[str, object]]:
    """The catalog_records row and the catalog_texts row of a record."""
    meta, retention, archive = record.metadata, record.retention, record.archive
    department = record.source.department
    fields = {
        "text": record.text,
        "title": meta.title,
        "document_number": meta.document_number,
        "issuer": meta.issuer,
        "addressee": meta.addressee,
        "counterparty": meta.counterparty,
    }
    return {  # catalog_records
        "id": record.id,
        "sha256": record.source.sha256,
        "source_filename": _clean(record.source.filename),
        "department": _clean(department),
        "document_type": _clean(meta.document_type),
        "document_number": _clean(meta.document_number),
        "title": _clean(meta.title),
        "document_date": meta.document_date,
        "fiscal_year": meta.fiscal_year if meta.fiscal_year is not None else (fiscal_year(meta.document_date) if meta.document_date else None),
        "issuer": _clean(meta.issuer),
        "addressee": _clean(meta.addressee),
        "counterparty": _clean(meta.counterparty),
        "amount": meta.amount,
        "classification": _clean(record.classification),
        "retention_period": retention.period if retention else None,
        "retention_start": retention.start_date if retention else None,
        "expiry_date": retention.expiry_date if retention else None,
        "disposition": retention.disposition if retention else None,
        "legal_hold": bool(retention and retention.legal_hold),
        "archive_bucket": archive.bucket if archive else None,
        "archive_key": archive.key if archive else None,
        "archive_version": archive.version_id if archive else None,
        "stored_at": _utc_naive(archive.stored_at) if archive else None,
        "norm_type": normalize(meta.document_type)[:_KEY_LEN] or None,
        "norm_number": document_number_key(meta.document_number) or None,
        "norm_department": normalize(department)[:_KEY_LEN] or None,
        "norm_issuer": normalize(meta.issuer) or None,
        "norm_title": normalize(meta.title),
    }, {
        "text": _clean(record.text) or "",
        "search_text": _FIELD_SEP.join(normalize(fields[name]) for name in _SEARCH_FIELDS),
        "record_json": record.model_dump_json(),
    }


# --------------------------------------------------------------------------- snippets

_SPACES = re.compile(r"\s+")


def _display(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def _cut(text: str, start: int, end: int) -> str:
    return ("…" if start > 0 else "") + text[max(0, start):end] + ("…" if end < len(text) else "")


def _snippet(sources: Sequence[str | None], terms: Sequence[str], before: int = 30, after: int = 70) -> str:
    """A short piece of the document around the first hit, as it reads (NFKC, spaces folded).

    The hit is looked for with optional whitespace between its characters, so a word the
    OCR spaced out is still centred on. Lines are normalised one at a time until the hit
    is found (NFKC of a whole document for fifty hits would cost more than the search).
    """
    sources = [s for s in sources if s and s.strip()]
    if not sources:
        return ""
    if terms:
        patterns = [re.compile(r"\s*".join(map(re.escape, term)), re.IGNORECASE) for term in terms]

        def first_hit(text: str, pos: int = 0) -> re.Match[str] | None:
            found = [m for m in (p.search(text, pos) for p in patterns) if m]
            return min(found, key=lambda m: m.start()) if found else None

        for source in sources:
            lines = source.splitlines()
            for i, line in enumerate(lines):
                if first_hit(_display(line)):
                    # Up to three lines of context each side, then cut around the hit.
                    prefix = _display(" ".join(lines[max(0, i - 3):i]))
                    window = prefix + " " + _display(" ".join(lines[i:i + 4]))
                    match = first_hit(window, len(prefix))
                    if match is None:  # normalisation differed at the line join; should not happen
                        break
                    start, end = match.start() - before, match.end() + after
                    more_before = start > 0 or i > 3
                    more_after = end < len(window) or i + 4 < len(lines)
                    return ("…" if more_before else "") + window[max(0, start):end].strip() + ("…" if more_after else "")
            # The hit spans a line break (OCR split the word): look in the whole text.
            whole = _display(source)
            if match := first_hit(whole):
                return _cut(whole, match.start() - before, match.end() + after)
    text = _display(sources[0][: 4 * (before + after)])
    return text[: before + after] + ("…" if len(text) > before + after or len(sources[0]) > 4 * (before + after) else "")


# --------------------------------------------------------------------------- register


def _csv_cell(value: object) -> str:
    """Text for one CSV cell; a leading = + - @ would make Excel run the cell as a formula."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_register_csv(rows: Iterable[Mapping[str, object]], path: Path | str) -> None:
    """Write the 行政文書ファイル管理簿 as CSV that Excel opens correctly.

    UTF-8 with a byte order mark (without it Excel assumes Shift_JIS and shows mojibake)
    and CRLF line ends; columns always in REGISTER_COLUMNS order.
    """
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(REGISTER_COLUMNS)
        for row in rows:
            writer.writerow([_csv_cell(row.get(column)) for column in REGISTER_COLUMNS])


# --------------------------------------------------------------------------- catalog


class Catalog:
    """The catalog database (SQLite file by default, PostgreSQL when configured).

    Safe to use from several threads and processes at once: the watcher adds records
    while the CLI and web UI search. On SQLite that needs WAL (readers never block the
    writer), a busy timeout (writers wait for each other instead of failing) and write
    transactions that take the write lock up front (BEGIN IMMEDIATE), so two writers can
    never deadlock upgrading a read lock.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite"):
            database = make_url(url).database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)  # var/ on a first run
            self.engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(url, echo=echo, pool_pre_ping=True)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._index: SearchIndex | None = None
        self._index_lock = threading.Lock()
        try:
            metadata.create_all(self.engine)
        except (OperationalError, ProgrammingError, IntegrityError):
            # Another process created the tables between our check and our CREATE.
            metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def search_index(self) -> "SearchIndex":
        """This catalog's in-memory search columns (built on first use, then kept fresh)."""
        from processors.archive.searchindex import SearchIndex

        with self._index_lock:
            if self._index is None:
                self._index = SearchIndex(self)
            return self._index

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # ---------------------------------------------------------------- writing

    def add(self, record: Record) -> None:
        """Catalog a record, replacing the one with the same id (re-processing a scan).

        Raises DuplicateScanError if a *different* record already holds the same scan
        (source sha256): the pipeline should have asked `find_by_sha256` first.
        """
        self.add_many([record])

    def add_many(self, batch: Iterable[Record]) -> int:
        """Catalog several records in one transaction (rebuilding a catalog from the archive's
        record.json files, bulk imports): the index pages they share are written once.

        All or nothing; returns how many were added or replaced.
        """
        batch = list(batch)
        rows = [(record, *_rows(record)) for record in batch]
        try:
            with self._writer.begin() as conn:
                if self.dialect == "postgresql":
                    # One writer at a time, so a reader never sees change n+1 before change n.
                    conn.exec_driver_sql("LOCK TABLE catalog_changes IN EXCLUSIVE MODE")
                for record, row, text_row in rows:
                    _upsert(conn, record, row, text_row)
                # The log only needs its recent end: a reader further behind reloads anyway.
                conn.execute(changes.delete().where(
                    changes.c.seq < select(func.max(changes.c.seq)).scalar_subquery() - CHANGES_KEPT))
        except IntegrityError as exc:
            for record in batch:
                other = self.find_by_sha256(record.source.sha256)
                if other is not None and other.id != record.id:
                    raise DuplicateScanError(
                        f"scan {record.source.sha256} is already cataloged as {other.id}; not adding {record.id}"
                    ) from exc
            seen: dict[str, str] = {}
            for record in batch:
                if seen.setdefault(record.source.sha256, record.id) != record.id:
                    raise DuplicateScanError(
                        f"scan {record.source.sha256} appears twice in the batch ({seen[record.source.sha256]}, {record.id})"
                    ) from exc
            raise
        return len(batch)

    # ---------------------------------------------------------------- reading

    def get(self, record_id: str) -> Record | None:
        return self._one(records.c.id == record_id)

    def find_by_sha256(self, sha256: str) -> Record | None:
        """The record of an earlier copy of this scan, if any ("already archived?")."""
        return self._one(records.c.sha256 == sha256.strip().lower())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(records)).scalar_one()

    def _one(self, condition: object) -> Record | None:
        with self.engine.connect() as conn:
            data = conn.execute(
                select(texts.c.record_json).join(records, records.c.pk == texts.c.pk).where(condition)
            ).scalar()
        return Record.model_validate_json(data) if data is not None else None

    def search(
        self,
        text: str | None = None,
        *,
        document_type: str | None = None,
        number: str | None = None,
        issuer: str | None = None,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
        fiscal_year: int | None = None,
        department: str | None = None,
        limit: int = 50,
    ) -> list[SearchHit]:
        """Records containing every word of `text` and matching every filter given, best first.

        `text` is searched in the body text, title, document number, issuer, addressee and
        counterparty; words are separated by spaces and must all occur (see query_terms).

        Ranking: the number of query words found in the title, then how often the words
        occur in the record, then the newest document (document date, then storing
        time). With no text, simply the newest matching documents. Filters compare in
        normal form: document_type, number (document_number_key) and department must be
        equal, issuer must contain the given text; dates are inclusive.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        terms = query_terms(text)
        long_terms = [t for t in terms if len(t) > 2]
        pair_terms = [t for t in terms if len(t) == 2]
        char_terms = [t for t in terms if len(t) == 1]
        r = records
        conditions = self._filters(document_type, number, issuer, date_from, date_to, fiscal_year, department)

        # Every word restricts the rows through the bigram index. The rarest posting list
        # drives the join and the other bigrams are probed by primary key, so the work grows
        # with the rarest word, not with the size of the catalog. A one-character word is the
        # range of bigrams starting with it (each occurrence starts exactly one bigram).
        probes: dict[str, list[int]] = {t: _term_keys(t) for t in pair_terms + long_terms}
        alias: dict[int, object] = {}
        source = None
        rec = None
        if probes:
            frequency = self._gram_frequencies(list({k for ks in probes.values() for k in ks}))
            if any(frequency[k] == 0 for ks in probes.values() for k in ks):
                return []
            for term, ks in probes.items():
                probes[term] = sorted(ks, key=lambda k: frequency[k])[:_PROBES_PER_WORD]
            keys = sorted({k for ks in probes.values() for k in ks}, key=lambda k: (frequency[k], k))
            source = first = grams.alias("g0")
            rec = first.c.rec
            alias[keys[0]] = first
            conditions.append(first.c.gram == keys[0])
            for n, key in enumerate(keys[1:], start=1):
                alias[key] = other = grams.alias(f"g{n}")
                source = source.join(other, and_(other.c.rec == rec, other.c.gram == key))
        char_counts = []
        for n, char in enumerate(char_terms):
            low, high = _char_range(char)
            occurrences = (
                select(grams.c.rec, func.sum(grams.c.tf).label("tf"))
                .where(grams.c.gram >= low, grams.c.gram < high)
                .group_by(grams.c.rec)
                .subquery(f"c{n}")
            )
            if source is None:
                source, rec = occurrences, occurrences.c.rec
            else:
                source = source.join(occurrences, occurrences.c.rec == rec)
            char_counts.append(occurrences.c.tf)
        source = r if source is None else source.join(r, r.c.pk == rec)

        # `exact` is what the index counts exactly: a two-character word is one bigram and
        # its term frequency is its count; a one-character word is the sum over its range.
        # For longer words the index gives only an upper bound (the smallest frequency of
        # their bigrams); they are verified and counted on the text in `_rank`.
        exact_parts: list[object] = [alias[_gram_key(*t)].c.tf for t in pair_terms] + char_counts  # type: ignore[attr-defined]
        least = func.min if self.dialect == "sqlite" else func.least
        bound_parts = [
            least(*cols) if len(cols) > 1 else cols[0]  # one-argument min() would be SQLite's aggregate
            for cols in ([alias[k].c.tf for k in probes[t]] for t in long_terms)  # type: ignore[attr-defined]
        ]
        zero = literal(0)
        title_hits = _sum([case((r.c.norm_title.contains(t, autoescape=True), 1), else_=0) for t in terms], zero)
        exact = _sum(exact_parts, zero)
        bound = _sum(bound_parts, zero)
        # The last tie-break is the record id (byte order), not the row's insertion order, so
        # a catalog rebuilt from the bucket lists equal hits exactly as the original did.
        id_order = r.c.id if self.dialect == "sqlite" else r.c.id.collate("C")
        stmt = (
            select(r.c.pk, r.c.id, title_hits.label("title_hits"), exact.label("exact"), bound.label("bound"),
                   r.c.document_date, r.c.stored_at)
            .select_from(source)
            .where(*conditions)
            .order_by(title_hits.desc(), (exact + bound).desc(), r.c.document_date.desc().nulls_last(),
                      r.c.stored_at.desc().nulls_last(), id_order.desc())
        )
        if not long_terms:
            stmt = stmt.limit(limit)

        with self.engine.connect() as conn:
            best = self._rank(conn, stmt, long_terms, limit)
            if not best:
                return []
            details = {
                row.pk: row
                for row in conn.execute(
                    select(
                        r.c.pk, r.c.id, r.c.title, r.c.document_type, r.c.document_number, r.c.document_date,
                        r.c.issuer, r.c.department, r.c.archive_bucket, r.c.archive_key, r.c.fiscal_year,
                        *(texts.c.text if name == "text" else r.c[name] for name in _SEARCH_FIELDS if name != "title"),
                    )
                    .join(texts, texts.c.pk == r.c.pk)
                    .where(r.c.pk.in_([pk for pk, _ in best]))
                )
            }
        hits = []
        for pk, score in best:
            d = details[pk]
            hits.append(
                SearchHit(
                    record_id=d.id,
                    title=d.title,
                    document_type=d.document_type,
                    document_number=d.document_number,
                    document_date=d.document_date,
                    issuer=d.issuer,
                    department=d.department,
                    archive_key=d.archive_key,
                    snippet=_snippet([getattr(d, name) for name in _SEARCH_FIELDS], terms),
                    score=score,
                    archive_bucket=d.archive_bucket,
                    fiscal_year=d.fiscal_year,
                )
            )
        return hits

    @staticmethod
    def _rank(conn: Connection, stmt: object, long_terms: Sequence[str], limit: int) -> list[tuple[int, float]]:
        """The `limit` best verified rows of `stmt` as (pk, score), best first.

        `stmt` yields candidates ordered by an upper bound of their final sort key (the
        bound for a long word can only be too high, never too low). Candidates are
        verified and counted exactly, in that order, until the limit-th best verified key
        beats the next candidate's bound: nothing after it can then make the list. When
        the bounds are tight, which is the usual case, about `limit` rows are read.
        """
        heap: list[tuple[tuple, int, float]] = []  # the best `limit` so far; heap[0] is the worst of them
        result = conn.execute(stmt)
        size = max(2 * limit, 64)
        while batch := result.fetchmany(size):
            size = min(4 * size, 4096)
            haystack: dict[int, str] = {}
            if long_terms:
                haystack = dict(
                    conn.execute(
                        select(texts.c.pk, texts.c.search_text).where(texts.c.pk.in_([row.pk for row in batch]))
                    ).all()
                )
            for row in batch:
                bound_key = _sort_key(row.title_hits, row.exact + row.bound, row)
                if len(heap) >= limit and heap[0][0] > bound_key:
                    result.close()
                    return [(pk, score) for _, pk, score in sorted(heap, reverse=True)]
                occurrences = row.exact
                if long_terms:
                    counts = [haystack[row.pk].count(t) for t in long_terms]
                    if not all(counts):
                        continue  # the bigrams were all there, the word was not
                    occurrences += sum(counts)
                entry = (_sort_key(row.title_hits, occurrences, row), row.pk, float(row.title_hits * 1000 + occurrences))
                if len(heap) < limit:
                    heapq.heappush(heap, entry)
                elif entry[0] > heap[0][0]:
                    heapq.heapreplace(heap, entry)
        return [(pk, score) for _, pk, score in sorted(heap, reverse=True)]

    def _gram_frequencies(self, keys: Sequence[int]) -> Counter[int]:
        """How many records hold each bigram (reading the index only)."""
        stmt = (
            select(grams.c.gram, func.count())
            .where(grams.c.gram.in_(bindparam("keys", expanding=True)))
            .group_by(grams.c.gram)
        )
        with self.engine.connect() as conn:
            return Counter(dict(conn.execute(stmt, {"keys": list(keys)}).all()))

    @staticmethod
    def _filters(
        document_type: str | None,
        number: str | None,
        issuer: str | None,
        date_from: dt.date | None,
        date_to: dt.date | None,
        fiscal_year: int | None,
        department: str | None,
    ) -> list[object]:
        r = records
        conditions: list[object] = []
        if key := normalize(document_type)[:_KEY_LEN]:
            conditions.append(r.c.norm_type == key)
        if key := document_number_key(number):
            conditions.append(r.c.norm_number == key)
        if key := normalize(issuer):
            conditions.append(r.c.norm_issuer.contains(key, autoescape=True))
        if key := normalize(department)[:_KEY_LEN]:
            conditions.append(r.c.norm_department == key)
        if date_from is not None:
            conditions.append(r.c.document_date >= date_from)
        if date_to is not None:
            conditions.append(r.c.document_date <= date_to)
        if fiscal_year is not None:
            conditions.append(r.c.fiscal_year == fiscal_year)
        return conditions

    # ---------------------------------------------------------------- retention

    def due_for_disposition(self, on: dt.date, *, where: Sequence[object] = ()) -> list[Record]:
        """Records whose retention expired on or before `on` and that are not on legal hold.

        Oldest expiry first. 永年 and 1年未満 records without an expiry date never appear;
        the caller splits 移管 (transfer to the archives) from 廃棄 (destruction). `where`:
        further conditions on catalog_records (the web app's clearance).
        """
        stmt = (
            select(texts.c.record_json)
            .join(records, records.c.pk == texts.c.pk)
            .where(records.c.expiry_date.is_not(None), records.c.expiry_date <= on, records.c.legal_hold.is_(False),
                   *where)
            .order_by(records.c.expiry_date, records.c.id)
        )
        with self.engine.connect() as conn:
            return [Record.model_validate_json(data) for data in conn.execute(stmt).scalars()]

    def register_rows(self, fiscal_year: int | None = None, *, where: Sequence[object] = ()) -> list[dict[str, object]]:
        """Rows of the 行政文書ファイル管理簿 (file management register), one per record.

        Keys are REGISTER_COLUMNS. 年度 is the fiscal year as a number (e.g. 2024), dates
        are ISO (YYYY-MM-DD), 保存場所 is the s3:// URL of the archived PDF/A, 管理者 the
        department that filed it. Records without a fiscal year are listed only when no
        year is asked for. `where`: further conditions on catalog_records (clearance).
        """
        r = records
        stmt = select(
            r.c.id, r.c.fiscal_year, r.c.document_type, r.c.title, r.c.source_filename, r.c.issuer,
            r.c.retention_start, r.c.retention_period, r.c.expiry_date, r.c.archive_bucket, r.c.archive_key,
            r.c.department, r.c.disposition, r.c.document_number, r.c.classification, r.c.legal_hold,
        ).order_by(
            r.c.fiscal_year.nulls_last(), r.c.document_type.nulls_last(), r.c.document_date.nulls_last(),
            r.c.title.nulls_last(), r.c.id,
        )
        if fiscal_year is not None:
            stmt = stmt.where(r.c.fiscal_year == fiscal_year)
        if where:
            stmt = stmt.where(*where)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_register_row(row) for row in rows]

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A read connection, for callers that need a query this class does not offer."""
        with self.engine.connect() as conn:
            yield conn


def _register_row(row: object) -> dict[str, object]:
    notes = []
    if row.document_number:
        notes.append(f"文書番号 {row.document_number}")
    if row.classification:
        notes.append(f"区分 {row.classification}")
    if row.legal_hold:
        notes.append("訴訟等により保存延長(リーガルホールド)")
    notes.append(f"ID {row.id}")
    location = f"s3://{row.archive_bucket}/{row.archive_key}" if row.archive_bucket and row.archive_key else ""
    return {
        "年度": row.fiscal_year if row.fiscal_year is not None else "",
        "分類": row.document_type or "",
        "名称": row.title or row.source_filename or "",
        "作成者": row.issuer or "",
        "起算日": row.retention_start.isoformat() if row.retention_start else "",
        "保存期間": row.retention_period or "",
        "満了日": row.expiry_date.isoformat() if row.expiry_date else "",
        "媒体": "電子",
        "保存場所": location,
        "管理者": row.department or "",
        "満了時の措置": row.disposition or "",
        "備考": "; ".join(notes),
    }


def _sum(parts: Sequence[object], empty: object) -> object:
    return functools.reduce(operator.add, parts) if parts else empty


def _sort_key(title_hits: int, occurrences: int, row: object) -> tuple:
    """Python's version of the ORDER BY in `search` (all descending, NULL dates last)."""
    day, stored = row.document_date, row.stored_at  # type: ignore[attr-defined]
    return (title_hits, occurrences, (1, day) if day else (0,), (1, stored) if stored else (0,), row.id)  # type: ignore[attr-defined]


def _upsert(conn: Connection, record: Record, row: dict[str, object], text_row: dict[str, object]) -> None:
    old = conn.execute(
        select(records.c.pk, texts.c.search_text).join(texts, texts.c.pk == records.c.pk).where(records.c.id == record.id)
    ).first()
    if old is None:
        pk = conn.execute(insert(records).values(**row)).inserted_primary_key[0]
        conn.execute(insert(texts).values(pk=pk, **text_row))
        old_grams: Counter[int] = Counter()
    else:
        pk = old.pk
        conn.execute(update(records).where(records.c.pk == pk).values(**row))
        conn.execute(update(texts).where(texts.c.pk == pk).values(**text_row))
        old_grams = _grams(old.search_text)
    _update_grams(conn, pk, old_grams, _grams(text_row["search_text"]))  # type: ignore[arg-type]
    conn.execute(insert(changes).values(pk=pk))


def _update_grams(conn: Connection, pk: int, old: Counter[int], new: Counter[int]) -> None:
    """Bring the posting lists of one record from `old` to `new`, touching only what changed.

    Deleting by (gram, rec) uses the primary key, so the table needs no second index on rec.
    """
    removed = [{"g": key, "r": pk} for key in old.keys() - new.keys()]
    added = [{"gram": key, "rec": pk, "tf": n} for key, n in sorted(new.items()) if key not in old]
    changed = [{"g": key, "r": pk, "n": n} for key, n in new.items() if key in old and old[key] != n]
    if removed:
        conn.execute(
            grams.delete().where(grams.c.gram == bindparam("g"), grams.c.rec == bindparam("r")), removed
        )
    if changed:
        conn.execute(
            grams.update().where(grams.c.gram == bindparam("g"), grams.c.rec == bindparam("r")).values(tf=bindparam("n")),
            changed,
        )
    if added:
        conn.execute(insert(grams), added)


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout and explicit transactions for a SQLite catalog shared by processes."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API objects
        # Let SQLAlchemy's "begin" event below issue BEGIN, instead of pysqlite guessing.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",  # durable at checkpoints; WAL keeps the file consistent
            "PRAGMA busy_timeout=30000",
            "PRAGMA foreign_keys=ON",
            "PRAGMA temp_store=MEMORY",
            "PRAGMA cache_size=-65536",  # 64 MiB per connection: the bigram index stays hot
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
