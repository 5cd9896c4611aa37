"""Records metadata read from the text of a Japanese municipal document.

What a records officer would type by hand when registering a paper record (文書番号,
日付, 発信者, 宛先, 件名, 種別, 金額 ...), read from OCR text. The same functions serve the
pipeline (OCR lines with boxes and noise) and ``kiroku extract`` (plain text files).

How it reads a document:

* The text is split into pages (form feed) and lines. Every line is matched in a
  *key* form - NFKC, with all whitespace and table-box characters removed - because OCR
  scatters spaces through Japanese text and mixes full- and half-width forms. Values are
  cut from the line *as printed* through an offset map, so 「令和７年１２月９日」 and
  「請　求　書」 come back unchanged.
* The document type comes from the title line (「…について（通知）」, 「業務委託契約書」,
  「請　求　書」 ...) using the patterns in schemas/document_types.yaml, which is data so that
  a municipality can add its own types.
* Each type has a *layout* (letter, form, invoice, contract, minutes, certificate) and a
  reader per layout knows where that kind of paper puts its date, issuer and addressee:
  the date under the number on a letter, 請求日 on an invoice, the signing date and the 甲
  block of a contract, the date column at the end of a 辞令.
* When OCR line boxes are available (``pages`` with ``Page.lines``) alignment helps: the
  issuer block of a letter is right-aligned, a wrapped title is centred.

No OCR, no Prefect: pure functions on strings, so the rules can be tested on small texts.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from processors.records import dates
from processors.records.yamldata import read_yaml
from schemas.record import Evidence, Metadata, Page, PersonalData, Retention

__all__ = [
    "DocumentTypesError",
    "DocType",
    "TypeCatalog",
    "LAYOUTS",
    "DOCUMENT_TYPES_PATH",
    "load_document_types",
    "TLine",
    "Doc",
    "build_doc",
    "classify_document",
    "extract_metadata",
    "parse_amount",
    "ocr_fix",
    "ExtractResult",
    "extract_from_text",
]

DOCUMENT_TYPES_PATH = Path(__file__).resolve().parents[2] / "schemas" / "document_types.yaml"
LAYOUTS = ("letter", "form", "invoice", "contract", "minutes", "certificate")


# ---------------------------------------------------------------------------
# Document type catalogue (schemas/document_types.yaml)
# ---------------------------------------------------------------------------

class DocumentTypesError(ValueError):
    """schemas/document_types.yaml (or a municipality's copy) is not usable; says which entry."""


@dataclass(frozen=True)
class DocType:
    name: str
    layout: str
    suffixes: tuple[str, ...] = ()
    titles: tuple[re.Pattern[str], ...] = ()
    cues: tuple[re.Pattern[str], ...] = ()
    amount: bool = False
    canonical_title: str | None = None  # the fixed name of a form (請求書), to recognise a garbled title


@dataclass(frozen=True)
class TypeCatalog:
    types: tuple[DocType, ...]
    fallback: DocType
    source: str = ""

    def get(self, name: str | None) -> DocType:
        for t in self.types:
            if t.name == name:
                return t
        return self.fallback

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.types] + [self.fallback.name]


def _compile_list(where: str, key: str, values: Any) -> tuple[re.Pattern[str], ...]:
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise DocumentTypesError(f"{where}: {key} must be a list of non-empty strings, got {values!r}")
    out = []
    for i, v in enumerate(values):
        try:
            out.append(re.compile(unicodedata.normalize("NFKC", v)))
        except re.error as exc:
            raise DocumentTypesError(f"{where}: {key}[{i}] {v!r} is not a valid regular expression: {exc}") from None
    return tuple(out)


def parse_document_types(data: Any, source: str = "<data>") -> TypeCatalog:
    """Validate the YAML structure; every error names the file and the offending entry."""
    if not isinstance(data, dict):
        raise DocumentTypesError(f"{source}: expected a mapping with 'types', got {type(data).__name__}")
    unknown = set(data) - {"version", "fallback", "fallback_layout", "types"}
    if unknown:
        raise DocumentTypesError(f"{source}: unknown top-level keys {sorted(unknown)}")
    entries = data.get("types")
    if not isinstance(entries, list) or not entries:
        raise DocumentTypesError(f"{source}: 'types' must be a non-empty list")
    fallback_name = data.get("fallback", "その他")
    fallback_layout = data.get("fallback_layout", "letter")
    if not isinstance(fallback_name, str) or not fallback_name:
        raise DocumentTypesError(f"{source}: 'fallback' must be a type name")
    if fallback_layout not in LAYOUTS:
        raise DocumentTypesError(f"{source}: fallback_layout {fallback_layout!r} is not one of {', '.join(LAYOUTS)}")
    types: list[DocType] = []
    seen: set[str] = set()
    allowed = {"name", "layout", "suffixes", "titles", "cues", "amount", "canonical_title"}
    for i, e in enumerate(entries):
        where = f"{source}: types[{i}]"
        if not isinstance(e, dict):
            raise DocumentTypesError(f"{where}: expected a mapping, got {e!r}")
        name = e.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DocumentTypesError(f"{where}: 'name' is missing or empty")
        where = f"{source}: types[{i}] ({name})"
        if name in seen or name == fallback_name:
            raise DocumentTypesError(f"{where}: duplicate type name")
        seen.add(name)
        extra = set(e) - allowed
        if extra:
            raise DocumentTypesError(f"{where}: unknown keys {sorted(extra)} (allowed: {sorted(allowed)})")
        layout = e.get("layout")
        if layout not in LAYOUTS:
            raise DocumentTypesError(f"{where}: layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        suffixes = e.get("suffixes") or []
        if not isinstance(suffixes, list) or not all(isinstance(s, str) and s for s in suffixes):
            raise DocumentTypesError(f"{where}: suffixes must be a list of words, got {suffixes!r}")
        titles = _compile_list(where, "titles", e.get("titles"))
        cues = _compile_list(where, "cues", e.get("cues"))
        if not suffixes and not titles and not cues:
            raise DocumentTypesError(f"{where}: needs at least one of suffixes, titles or cues to be recognisable")
        amount = e.get("amount", False)
        if not isinstance(amount, bool):
            raise DocumentTypesError(f"{where}: amount must be true or false")
        canonical = e.get("canonical_title")
        if canonical is not None and (not isinstance(canonical, str) or not canonical.strip()):
            raise DocumentTypesError(f"{where}: canonical_title must be a non-empty string")
        if canonical is not None:
            canonical = "".join(unicodedata.normalize("NFKC", canonical).split())
        types.append(DocType(name, layout, tuple(unicodedata.normalize("NFKC", s) for s in suffixes),
                             titles, cues, amount, canonical))
    return TypeCatalog(tuple(types), DocType(fallback_name, fallback_layout), source)


@functools.lru_cache(maxsize=8)
def _load_types_cached(path: str) -> TypeCatalog:
    return parse_document_types(read_yaml(Path(path), DocumentTypesError, "document types file"), path)


def load_document_types(path: str | Path | None = None) -> TypeCatalog:
    """The type catalogue from YAML (default schemas/document_types.yaml), validated."""
    return _load_types_cached(str(Path(path) if path else DOCUMENT_TYPES_PATH))


def _catalog(types: TypeCatalog | str | Path | None) -> TypeCatalog:
    return types if isinstance(types, TypeCatalog) else load_document_types(types)


# ---------------------------------------------------------------------------
# Text model: lines with a normalised key and an offset map back to the print
# ---------------------------------------------------------------------------

_BOX = set("|｜│┃┆┇┊┋")

# Katakana that OCR returns for a kanji of the same shape. Between two kanji a lone
# katakana of this set is (in administrative Japanese) always the kanji: 設備エ業 -> 設備工業.
_KANA_FOR_KANJI = {"エ": "工", "カ": "力", "ロ": "口", "ニ": "二", "ハ": "八", "タ": "夕", "ー": "一"}


def _is_kanji(c: str) -> bool:
    return "\u3400" <= c <= "\u4dbf" or "\u4e00" <= c <= "\u9fff" or c in "々〆"


def _is_katakana(c: str) -> bool:
    return "ァ" <= c <= "ヺ" or c == "ー"


# 築 before a count and its counter word (築4回, 築12号) is 第; 築40年 (a building's age) is left alone
_DAI_MISREAD = re.compile(r"[築茅苐](?=[\s\u3000]*[0-9０-９〇一二三四五六七八九十百]+[\s\u3000]*[号回条項款章節次期])")


# specks, seal and punch-hole remnants that OCR appends to a line after a wide gap ("殿      RE",
# "@      記", "石田 由美子|"): ASCII letters/symbols only, never digits
_JUNK_TAIL = re.compile(r"(?:[ \t\u3000]{2,}[A-Za-z!-/:-@\[-`{-~]{1,4}|[|｜│┃]+"
                        r"|[ \t\u3000]{4,}[^\s\d\u3400-\u9fff]{1,6}|[ \t\u3000]{3,}[\d!-/:-@]{1,2})[ \t\u3000]*$")
_JUNK_HEAD = re.compile(r"^[ \t\u3000]*(?:[!-/:-@\[-`{-~「」『』]{1,3}[ \t\u3000]{2,}|[-_\]\[|｜│┃」「『』~^`'\"\\/@<>、。]{1,3}[ \t\u3000]+|[|｜│┃]+)")


def _blank_junk(s: str) -> str:
    """Replace OCR junk at either end of a line by spaces (same length, so offsets hold)."""
    for rx in (_JUNK_TAIL, _JUNK_HEAD):
        m = rx.search(s)
        if m and m.group(0).strip() and len(m.group(0).strip()) < len(s.strip()):
            s = s[: m.start()] + " " * (m.end() - m.start()) + s[m.end():]
    return s


# 様 / 殿 closing an address line, misread (盛岡市長 欄): only as the last character after a space
_HONORIFIC_MISREAD = re.compile(r"((?:[\u3400-\u9fff])[ \t\u3000]+)([欄椋榛樣檬殴毀殷務服])([ \t\u3000]*)$")


def ocr_fix(s: str) -> str:
    """Undo OCR misreadings that are unambiguous in Japanese text, one character for one.

    曰 and 兮 (classical characters) are read for 日 and 号, 築 for 第 before a count
    (築4回); a prolonged-sound mark ー after a kanji
    (impossible in Japanese spelling) is the numeral 一 (柴田健一); a lone katakana
    エ/カ/ロ/ニ/ハ/タ between kanji is the kanji of the same shape. The length never
    changes, so offsets into the printed line stay valid.
    """
    s = s.replace("曰", "日").replace("兮", "号")
    s = _DAI_MISREAD.sub("第", s)
    s = _HONORIFIC_MISREAD.sub(lambda m: m.group(1) + ("殿" if m.group(2) in "殴毀殷務服" else "様") + m.group(3), s)
    chars = list(s)
    solid = [i for i, c in enumerate(chars) if not c.isspace()]  # neighbours skip OCR's stray spaces
    for n, i in enumerate(solid):
        c = chars[i]
        if c not in _KANA_FOR_KANJI:
            continue
        prev = chars[solid[n - 1]] if n > 0 else ""
        nxt = chars[solid[n + 1]] if n + 1 < len(solid) else ""
        if not _is_kanji(prev):
            continue
        if (c == "ー" and not _is_katakana(nxt)) or (c != "ー" and _is_kanji(nxt)):
            chars[i] = _KANA_FOR_KANJI[c]
    return "".join(chars)


def _key_and_map(raw: str) -> tuple[str, list[int]]:
    """NFKC form without whitespace or box rules, and for each key character its raw offset."""
    key: list[str] = []
    pos: list[int] = []
    for i, ch in enumerate(raw):
        for c in unicodedata.normalize("NFKC", ch):
            if c.isspace() or c in _BOX:
                continue
            key.append(c)
            pos.append(i)
    return "".join(key), pos


@dataclass
class TLine:
    """One visual line (a column on vertical pages) and where it sits."""

    page: int
    index: int
    raw: str
    key: str = ""
    pos: list[int] = field(default_factory=list)
    bbox: tuple[int, int, int, int] | None = None
    confidence: float | None = None  # 0..1 from OCR, None for plain text
    page_width: int | None = None
    vertical: bool = False
    region: str | None = None  # kind of the layout region the line was read in (Page.regions), None for plain text

    printed: str = ""  # the line exactly as given (OCR output), for evidence

    def __post_init__(self) -> None:
        self.printed = self.raw.rstrip("\r\n")
        self.raw = ocr_fix(_blank_junk(self.printed))
        self.key, self.pos = _key_and_map(self.raw)

    def span(self, a: int, b: int | None = None) -> str:
        """The printed text behind key[a:b], spaces inside kept, outer spaces trimmed."""
        b = len(self.key) if b is None else b
        if a >= b or a >= len(self.pos):
            return ""
        return self.raw[self.pos[a]: self.pos[b - 1] + 1].strip()

    @property
    def align(self) -> str | None:
        """left / center / right from the box, None when unknown (plain text, vertical)."""
        if not self.bbox or not self.page_width or self.vertical:
            return None
        x0, _, x1, _ = self.bbox
        w = float(self.page_width)
        lg, rg = x0 / w, (w - x1) / w
        if lg > 0.4 and rg < 0.22:
            return "right"
        if abs(lg - rg) < 0.08 and lg > 0.15 and (x1 - x0) < 0.75 * w:
            return "center"
        if lg < 0.22:
            return "left"
        return None


@dataclass
class Doc:
    pages: list[list[TLine]]

    @property
    def lines(self) -> list[TLine]:
        return [ln for p in self.pages for ln in p]

    @property
    def first_page(self) -> list[TLine]:
        for p in self.pages:
            if p:
                return p
        return []

    @functools.cached_property
    def key(self) -> str:
        return "\n".join(ln.key for ln in self.lines)


def build_doc(text: str = "", pages: list[Page] | None = None) -> Doc:
    """Lines of the document, from OCR pages (with boxes) when given, else from text.

    Empty lines are dropped but every TLine keeps its index within its page, so evidence
    points at the right line of what the officer sees.
    """
    out: list[list[TLine]] = []
    if pages:
        for n, p in enumerate(pages):
            pidx = p.index if p.index is not None else n
            lines: list[TLine] = []
            vertical = p.writing_mode == "vertical"
            kinds = {i: r.kind for r in p.regions for i in r.lines}
            if p.lines:
                for i, ln in enumerate(p.lines):
                    t = TLine(pidx, i, ln.text, bbox=tuple(ln.bbox), confidence=ln.confidence / 100.0,
                              page_width=p.width_px, vertical=ln.vertical or vertical, region=kinds.get(i))
                    if t.key:
                        lines.append(t)
            else:
                for i, s in enumerate(p.text.split("\n")):
                    t = TLine(pidx, i, s, vertical=vertical)
                    if t.key:
                        lines.append(t)
            out.append(lines)
        return Doc(out)
    for pidx, ptext in enumerate(text.split("\f")):
        lines = []
        for i, s in enumerate(ptext.split("\n")):
            t = TLine(pidx, i, s)
            if t.key:
                lines.append(t)
        out.append(lines)
    return Doc(out)


def _as_doc(text_or_doc: str | Doc, pages: list[Page] | None) -> Doc:
    return text_or_doc if isinstance(text_or_doc, Doc) else build_doc(text_or_doc, pages)


# ---------------------------------------------------------------------------
# Shared cues (all on the key form: NFKC, no whitespace)
# ---------------------------------------------------------------------------

# list numbering in front of a label: 1 / １ / (1) / ① / 一 / 第1
_NUMBERING = re.compile(r"^(?:\d{1,2}(?![\d,])[.．、)]?|\(\d{1,2}\)|[①-⑳]|[一二三四五六七八九十]{1,2}[、.．]|[ア-ン][.．、)])")
# 様/殿/御中 closing the line, possibly followed (after a wide gap) by seal debris without kanji
_HONORIFIC = re.compile(r"^(?P<v>.*?\S)[\s\u3000]*(?:御中|様|殿|さま|宛て|あて|宛)"
                        r"(?:[\s\u3000]*$|[\s\u3000]{2,}[^\u3400-\u9fff\s]{1,10}$)")
_SEAL_ONLY = re.compile(r"^.{0,2}[(\[]?(?:公印省略|公印略|印|㊞|押印省略)[)\]]?.{0,3}$")
_SEAL_TAIL = re.compile(r"[\s\u3000]*(?:[（(\[]?(?:公印省略|印|㊞)[）)\]]?)$")
_PAGE_NO = re.compile(r"^[-－ー―−‐]?\(?\d{1,3}\)?[-－ー―−‐]?$|^\d+/\d+$|^[-‐−]\d+[-‐−]$")
# office titles; never a bare 長, which starts 長野・長崎・長岡
_OFFICE = (r"(?:知事|[都道府県市区町村]長|教育長|議長|委員長|理事長|会長|社長|院長|校長|館長|所長|局長|部長|課長|室長|署長|"
           r"園長|係長|班長|場長|庁長|本部長|支店長|店長|組合長|団長|センター長|事務局長|管理者)")
_ORG = r"(?:委員会|事務局|センター|協議会|組合|[都道府県市区町村]|課|部|局|室|所|署|館)"
_ISSUER_LIKE = re.compile(rf"(?:{_OFFICE}|{_ORG})(?:.{{0,9}})$")
_TITLE_LIKE = re.compile(r"(について|につい$|に係る|に関する|に伴う|における|に対する|のための|の実施|の開催|の結果|の提出|"
                         r"の送付|の変更|の徹底|の推進|の取扱い|及び|並びに|[のにをへとがでて]$)")
_COMPANY = re.compile(r"(株式会社|有限会社|合同会社|合資会社|合名会社|\((?:株|有|同|資|名)\)|[㈱㈲]|一般社団法人|一般財団法人|"
                      r"公益社団法人|公益財団法人|特定非営利活動法人|NPO法人|社会福祉法人|医療法人|学校法人|宗教法人|"
                      r"協同組合|事業組合)")
_BUSINESS = re.compile(r"(商店|商会|工業|工務店|建設|設計|事務所|製作所|商事|産業|興業|サービス|組|社)$")
_REP_WORDS = r"(?:代表取締役社長|代表取締役会長|代表取締役|代表執行役|代表社員|代表理事|理事長|取締役社長|代表者|社長|店主|代表)"
_ADDRESS_HINT = re.compile(r"〒|^(?:住所|所在地)|[都道府県市区町村郡].*(?:\d|[一二三四五六七八九十]+(?:丁目|番地?))")
_CONTACT = re.compile(r"^(?:TEL|Tel|tel|電話|FAX|Fax|E-?mail|e-?mail|メール|URL|〒)")


def _strip_numbering(key: str) -> tuple[str, int]:
    m = _NUMBERING.match(key)
    return (key[m.end():], m.end()) if m else (key, 0)


def _no_honorific(raw: str) -> str:
    m = _HONORIFIC.match(raw.strip())
    return m["v"].strip() if m else raw.strip()


def _has_honorific(ln: TLine) -> bool:
    m = _HONORIFIC.match(ln.raw.strip())
    return bool(m) and len(_key_and_map(m["v"])[0]) >= 2 and not m["v"].rstrip().endswith(("宛", "様", "殿"))


_ADDRESSEE_LABEL = re.compile(r"^[(（【\[]?(?:宛先|あて先|宛て先|提出先)[)）】\]:：]?")


def _labelled_addressee(ln: TLine) -> str | None:
    """「（宛先）浦安市長」: the addressee a form prints behind a label instead of before 様."""
    m = _ADDRESSEE_LABEL.match(ln.key)
    if not m or m.end() >= len(ln.key):
        return None
    v = _no_honorific(ln.span(m.end()))
    return v if len(_key_and_map(v)[0]) >= 2 else None


def _clean_issuer(raw: str) -> str:
    s = raw.strip()
    while True:
        t = _SEAL_TAIL.sub("", s).strip()
        if t == s:
            return s
        s = t


def _is_noise(ln: TLine) -> bool:
    """A seal note, a page number, a running footer, or OCR debris (no kanji, no digit: "/ ーをっ 。")."""
    if _SEAL_ONLY.match(ln.key) or _PAGE_NO.match(ln.key):
        return True
    if ln.region == "footer":
        return True  # the layout found it alone at the page's foot: a page number or a running footer
    return len(ln.key) <= 10 and not re.search(r"\d", ln.key) and not any(_is_kanji(c) for c in ln.key)


# ---------------------------------------------------------------------------
# Document type and title
# ---------------------------------------------------------------------------

_BRACKET_OPEN = "(（〔[［{｛〈《<【"
_BRACKET_CLOSE = ")）〕]］}｝〉》>】"
TITLE_REGION = 14  # title lines sit near the top of the first page


@dataclass
class TitleHit:
    doctype: DocType
    line: TLine
    kind: str  # suffix | title | subject | fuzzy
    value_from: int = 0  # key offset where the title starts (after 件名:)
    value_to: int | None = None  # key offset where it ends, when a qualifier follows on the line


def _suffix_hit(key: str, t: DocType) -> bool:
    for s in t.suffixes:
        rx = rf"[{re.escape(_BRACKET_OPEN)}]{re.escape(s)}[{re.escape(_BRACKET_CLOSE)}]?$"
        if re.search(rx, key):
            return True
    return False


def _title_hits(doc: Doc, catalog: TypeCatalog) -> list[TitleHit]:
    hits: list[TitleHit] = []
    # title lines sit near the top; a line the layout found printed large (a title region)
    # counts as near the top further down too (a form's name under a long header block)
    first = doc.first_page
    region = first[:TITLE_REGION] + [ln for ln in first[TITLE_REGION:2 * TITLE_REGION] if ln.region == "title"]
    for ln in region:
        key, start = ln.key, 0
        m = re.match(r"^(?:件名|表題|題名|標題)[:：]?", key)
        if m and len(key) > m.end():
            start = m.end()
            key = key[start:]
        # a form name followed on its line by a qualifier (就学援助申請書　<準・要>令和6年度分):
        # the part before the first bracket or wide space is tried as the title too
        head = _title_head(ln, start)
        for t in catalog.types:
            if _suffix_hit(key, t):
                hits.append(TitleHit(t, ln, "subject" if start else "suffix", start))
            elif any(rx.search(key) for rx in t.titles):
                hits.append(TitleHit(t, ln, "subject" if start else "title", start))
            elif head is not None and any(rx.search(head[0]) for rx in t.titles):
                hits.append(TitleHit(t, ln, "subject" if start else "title", start, head[1]))
        if start and not any(h.line is ln for h in hits):
            hits.append(TitleHit(catalog.fallback, ln, "subject", start))
    return hits


def _title_head(ln: TLine, start: int) -> tuple[str, int] | None:
    """(key, key end) of a line's part before a bracket or a wide space, when something follows it."""
    raw = ln.raw[ln.pos[start]:] if start < len(ln.pos) else ""
    m = re.match(r"^(.{2,30}?)(?:[\s\u3000]{1,}|(?=[<＜〈《【]))\S", raw.strip())
    if not m:
        return None
    head_key = _key_and_map(m.group(1))[0]
    if len(head_key) < 3:
        return None
    return head_key, start + len(head_key)


def _cue_score(doc: Doc, t: DocType) -> int:
    return min(4, sum(1 for rx in t.cues if rx.search(doc.key)))


def classify_document(doc: Doc, catalog: TypeCatalog) -> tuple[DocType, TitleHit | None, float]:
    """(type, title line hit, confidence). A title decides; cues break ties and rescue."""
    hits = _title_hits(doc, catalog)
    best: tuple[float, int, TitleHit] | None = None
    for order, h in enumerate(hits):
        base = {"suffix": 12.0, "subject": 11.0, "title": 10.0}[h.kind]
        if h.doctype is catalog.fallback:
            base = 5.0
        score = base + _cue_score(doc, h.doctype) - 0.05 * order
        if best is None or score > best[0]:
            best = (score, order, h)
    if best is not None:
        h = best[2]
        return h.doctype, h, 0.95 if h.doctype is not catalog.fallback else 0.5
    fuzzy = _fuzzy_title(doc, catalog)
    if fuzzy is not None:
        return fuzzy.doctype, fuzzy, 0.6
    scored = sorted(((_cue_score(doc, t), -i, t) for i, t in enumerate(catalog.types)), reverse=True)
    if scored and (scored[0][0] >= 2 or (scored[0][0] == 1 and (len(scored) == 1 or scored[1][0] == 0))):
        return scored[0][2], None, 0.4 if scored[0][0] == 1 else 0.5
    return catalog.fallback, None, 0.3


def _subsequence(needle: str, hay: str) -> bool:
    it = iter(hay)
    return all(c in it for c in needle)


def _fuzzy_title(doc: Doc, catalog: TypeCatalog) -> TitleHit | None:
    """A form name garbled by OCR (ロ目 求 書 for 請 求 書, 辞今 for 辞令): near a canonical title."""
    from rapidfuzz.distance import Levenshtein

    for ln in doc.first_page[:3]:
        k = ln.key
        if re.search(r"\d", k):
            continue
        for t in catalog.types:
            c = t.canonical_title
            if not c or len(k) < 2 or not (len(c) - 1 <= len(k) <= len(c) + 2):
                continue
            d = Levenshtein.distance(k, c)
            near = d <= 1 or (d <= 2 and len(c) >= 3 and (k[-2:] == c[-2:] or k[:2] == c[:2]))
            if near or (len(c) >= 3 and _subsequence(c, k)):  # 季請 求ゃ 書: debris around the name
                return TitleHit(t, ln, "fuzzy")
    return None


# ---------------------------------------------------------------------------
# Field readers
# ---------------------------------------------------------------------------

@dataclass
class Found:
    value: Any
    line: TLine | None
    confidence: float


class _Fields:
    """Collects values with their evidence."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.evidence: dict[str, Evidence] = {}

    def set(self, name: str, found: Found | None) -> None:
        if found is None or found.value in (None, ""):
            return
        self.values[name] = found.value
        ln = found.line
        conf = found.confidence
        if ln is not None and ln.confidence is not None:
            conf *= max(0.0, min(1.0, ln.confidence))
        self.evidence[name] = Evidence(page=ln.page if ln else None, line=ln.index if ln else None,
                                       text=ln.printed.strip() if ln else None, confidence=round(conf, 3))


# --- document number ----------------------------------------------------------

_DAI = "[第築弟茅苐]"  # 第 and its usual OCR misreadings
_GO = "[号兮弓亏]"  # 号 likewise
_NUMERAL = "[0-9〇一二三四五六七八九十百千]"
_NUMBER_CORE = rf"(?:[0-9A-Za-z]{{0,3}}[^\W\d_]{{0,12}}?{_DAI}{_NUMERAL}{{1,7}}{_GO}(?:の[0-9]{{1,3}})?)"
_NUMBER_FULL = re.compile(rf"^(?P<v>{_NUMBER_CORE})$")
_NUMBER_NO_GO = re.compile(rf"^[0-9A-Za-z]{{0,3}}[^\W\d_]{{1,12}}?{_DAI}[0-9]{{1,7}}$")
_NUMBER_LABEL = re.compile(
    rf"^(?P<label>請求書?番{_GO}|請求No\.?|請求書No\.?|契約番{_GO}|契約No\.?|文書番{_GO}|発行番{_GO}|発番{_GO}|管理番{_GO}|伝票番{_GO}|No\.?|NO\.?)"
    rf"[:：.]?(?P<v>{_NUMBER_CORE}|[0-9A-Za-z\u3400-\u9fff][0-9A-Za-z\u3400-\u9fff\-ー‐−–—―/_.]*[0-9A-Za-z])$")


def _fix_number(s: str) -> str:
    """Undo the OCR misreadings the pattern tolerated (築 -> 第, 兮 -> 号) in the printed value."""
    s = re.sub(rf"{_DAI}(?=\s*{_NUMERAL})", "第", s)
    return re.sub(rf"({_NUMERAL}\s*){_GO}", r"\1号", s)


def _find_number(doc: Doc, layout: str, header: list[TLine]) -> Found | None:
    for ln in doc.lines:  # an explicit label wins: 請求番号 / 契約番号 / 文書番号
        key, _ = _strip_numbering(ln.key)
        off = len(ln.key) - len(key)
        m = _NUMBER_LABEL.match(key)
        if m and re.search(r"\d", m["v"]) and not (m["label"].upper().startswith("NO") and layout in ("letter",)):
            return Found(_fix_number(ln.span(off + m.start("v"))), ln, 0.95)
    for ln in header:
        m = _NUMBER_FULL.match(ln.key)
        if m:
            return Found(_fix_number(ln.span(0)), ln, 0.95)
    for ln in header[:3]:  # 岩総第2197: OCR lost the closing 号 of the number at the top
        m = _NUMBER_NO_GO.match(ln.key)
        if m:
            return Found(_fix_number(ln.span(0)) + "号", ln, 0.6)
    return None


# --- dates ----------------------------------------------------------------------

@dataclass
class DateHit:
    line: TLine
    match: dates.DateMatch
    only: bool  # the line holds nothing but the date
    label: str  # key text before the date (numbering stripped)


def _date_hits(lines: Iterable[TLine]) -> list[DateHit]:
    out = []
    for ln in lines:
        for m in dates.find_dates(ln.raw):
            before = _key_and_map(ln.raw[: m.start])[0]
            after = _key_and_map(ln.raw[m.end:])[0]
            rest = re.sub(r"[-_\[\]|'\"、。,.<>:;~^`「」]", "", before + after)  # OCR debris around the date
            only = rest in ("", "付", "付け") or bool(re.fullmatch(r"(?:付け?)?\([月火水木金土日]\)", rest))
            label, _ = _strip_numbering(before)
            out.append(DateHit(ln, m, only, label))
    return out


_NOT_DOC_DATE = re.compile(r"(生年月日|期限|期間|期日|から|まで|以降|付け|付で|施行|締切|予定)")
_DATE_LABELS = {
    "invoice": r"(?:御?請求日|請求年月日|発行日|発行年月日|請求書発行日|日付)",
    "contract": r"(?:契約締結日|締結日|契約日|契約年月日|締結年月日)",
    "form": r"(?:申請日|申請年月日|届出日|届出年月日|提出日|申込日|申込年月日|記入日)",
    "minutes": r"(?:開催日時|開催日|開催年月日|日時|日程|日付)",
    "letter": r"(?:日付|発信日|発行日)",
    "certificate": r"(?:日付)",
}


def _labelled_date(hits: list[DateHit], layout: str) -> DateHit | None:
    rx = re.compile(rf"^{_DATE_LABELS[layout]}[:：]?$")
    for h in hits:
        if rx.match(h.label):
            return h
    return None


def _pick_date(doc: Doc, layout: str, header: list[TLine]) -> tuple[DateHit | None, float]:
    """The document's own date, or None: a wrong date (a deadline, a cited letter's date) is
    worse than none, because it moves the retention expiry."""
    hits = _date_hits(doc.lines)
    if not hits:
        return None, 0.0
    usable = [h for h in hits if h.only or not _NOT_DOC_DATE.search(h.line.key)]
    lab = _labelled_date(hits, layout)
    if lab:
        return lab, 0.95
    only = [h for h in usable if h.only]
    if layout in ("certificate", "contract"):
        return (only[-1], 0.9) if only else (None, 0.0)
    if layout in ("letter", "form", "invoice"):
        hdr = {id(ln) for ln in header}
        in_header = [h for h in usable if id(h.line) in hdr]
        if in_header:
            return in_header[0], 0.9
        return (only[0], 0.7) if only else (None, 0.0)
    hdr = {id(ln) for ln in header}  # minutes: the first date near the top is the meeting's
    top = [h for h in hits if id(h.line) in hdr]
    if top:
        return top[0], 0.7
    return (usable[0], 0.6) if usable else (None, 0.0)


# --- amounts ----------------------------------------------------------------------

_KANJI_AMOUNT = re.compile(r"(?:一?金)?(?P<n>[〇一二三四五六七八九十百千万億壱弐参拾伍阡萬零]+)円")
_DIGIT_AMOUNT = re.compile(r"(?:一?金|[¥￥\\])?[:：]?(?P<n>\d{1,3}(?:[,，.]{1,2}\d{3})+|\d+)(?!\d)")


def parse_amount(s: str) -> int | None:
    """Yen as int from ¥1,234,567- / 金1,234,567円 / 一金壱百万円也 (first amount in ``s``)."""
    k = _key_and_map(s)[0]
    m = _KANJI_AMOUNT.search(k)
    dm = _DIGIT_AMOUNT.search(k)
    if m and (not dm or m.start() < dm.start()):
        return dates.parse_kanji_number(m["n"])
    if dm:
        return int(re.sub(r"[,，.]", "", dm["n"]))
    return None


_AMOUNT_LABELS = {
    "invoice": [r"御?請求金額", r"ご請求金額", r"御?請求額", r"ご請求額", r"請求合計額?", r"合計金額", r"税込合計額?", r"合計"],
    "contract": [r"契約金額", r"請負代金額", r"契約代金額?", r"委託料の?額?", r"委託金額", r"契約額", r"売買代金"],
}


def _find_amount(doc: Doc, layout: str) -> Found | None:
    labels = _AMOUNT_LABELS.get(layout, _AMOUNT_LABELS["invoice"] + _AMOUNT_LABELS["contract"])
    for conf, label in zip((0.95, 0.95, 0.9, 0.9, 0.85, 0.8, 0.8, 0.7), labels):
        core = label[2:] if label.startswith("御?") else label[1:]
        # 仙請求金額: the first character misread; only for long labels (合計 must not match 小計)
        alt = rf"|[^\d\s]{{1,2}}{core}" if len(re.sub(r"\W|\?", "", core)) >= 3 else ""
        rx = re.compile(rf"^(?:{label}{alt})[:：]?(?P<rest>.*)$")
        for ln in doc.lines:
            key, _ = _strip_numbering(ln.key)
            m = rx.match(key)
            if not m or not re.search(r"\d|[一二三四五六七八九十百千万壱弐参拾]円", m["rest"]):
                continue
            rest = m["rest"]
            if label == "合計":  # a table row: the last figure is the total
                nums = re.findall(r"\d{1,3}(?:,\d{3})+|\d+", rest)
                if nums:
                    return Found(int(nums[-1].replace(",", "")), ln, conf)
                continue
            amt = parse_amount(rest)
            if amt is not None:
                return Found(amt, ln, conf)
    for ln in doc.lines:  # 一金壱百万円也 standing alone
        if ln.key.startswith("一金"):
            amt = parse_amount(ln.key)
            if amt is not None:
                return Found(amt, ln, 0.8)
    return None


# --- layout readers -----------------------------------------------------------------

@dataclass
class _Layout:
    """What a layout reader found: field -> Found."""

    title: Found | None = None
    number: Found | None = None
    date: DateHit | None = None
    date_conf: float = 0.0
    issuer: Found | None = None
    addressee: Found | None = None
    counterparty: Found | None = None
    amount: Found | None = None


def _title_text(h: TitleHit) -> str:
    if h.kind == "fuzzy" and h.doctype.canonical_title:
        return h.doctype.canonical_title  # the printed title was unreadable; the form's name is known
    return h.line.span(h.value_from, h.value_to)


def _page_of(doc: Doc, ln: TLine) -> list[TLine]:
    for p in doc.pages:
        if p and p[0].page == ln.page:
            return p
    return doc.first_page


def _read_letter(doc: Doc, hit: TitleHit | None) -> _Layout:
    r = _Layout()
    page = _page_of(doc, hit.line) if hit else doc.first_page
    if hit:
        t_idx = page.index(hit.line)
    else:  # no recognisable title: a …について line near the top, else the header is the top
        t_idx = next((i for i, ln in enumerate(page[:TITLE_REGION]) if re.search(r"について$|の件$", ln.key)), -1)
    header = page[:t_idx] if t_idx >= 0 else page[:6]
    r.number = _find_number(doc, "letter", header)
    r.date, r.date_conf = _pick_date(doc, "letter", header)

    # roles in the header: number, date, addressee (様/殿/御中), then the issuer block
    addr_i = None
    for i, ln in enumerate(header):
        labelled = _labelled_addressee(ln)
        if labelled:
            addr_i = i
            r.addressee = Found(labelled, ln, 0.9)
            break
        if (_has_honorific(ln) or ln.key.endswith("各位")) and ln.align != "right":
            addr_i = i
            r.addressee = Found(_no_honorific(ln.raw), ln, 0.9)
            break
    marks = [i for i, ln in enumerate(header)
             if _NUMBER_FULL.match(ln.key) or (r.date and ln is r.date.line)]
    start = max([*marks, addr_i if addr_i is not None else -1]) + 1
    cands = [ln for ln in header[start:] if not _is_noise(ln)]
    cont: list[TLine] = []
    if hit and cands:
        # lines just above the title that belong to it (a title wrapped over two lines)
        known = all(c.align is not None for c in cands)
        while len(cands) > 1:
            c = cands[-1]
            if known:
                is_cont = c.align != "right"
            else:
                is_cont = bool(_TITLE_LIKE.search(c.key)) or not _ISSUER_LIKE.search(c.key)
            if not is_cont:
                break
            cont.insert(0, cands.pop())
    if cands:
        issuer_lines = [c for c in cands if c.align in (None, "right")] or cands
        # two issuer lines (組織 / 職名 氏名): the one with the office title and name
        pick = issuer_lines[-1]
        if len(issuer_lines) > 1 and not _ISSUER_LIKE.search(pick.key):
            pick = issuer_lines[0]
        r.issuer = Found(_clean_issuer(pick.raw), pick, 0.85)
    if hit:
        title = "".join(c.raw.strip() for c in cont) + _title_text(hit)
        r.title = Found(title, hit.line, 0.95 if not cont else 0.8)
    elif t_idx >= 0:
        r.title = Found(page[t_idx].raw.strip(), page[t_idx], 0.5)
    return r


def _field_after(ln: TLine, label_rx: str, stop_labels: str | None = None) -> str | None:
    """The printed value after a label in a form row (氏名 山本　真由美), up to the next label."""
    m = re.search(rf"(?:^|[\])）])(?:{label_rx})[:：]?", ln.key)
    if not m:
        key, off = _strip_numbering(ln.key)
        m2 = re.match(rf"(?:{label_rx})[:：]?", key)
        if not m2:
            return None
        a = off + m2.end()
    else:
        a = m.end()
    b = len(ln.key)
    if stop_labels:
        s = re.search(stop_labels, ln.key[a:])
        if s and s.start() == 0:
            return None  # the next label follows at once: the field is left blank (氏名 個人番号：)
        if s:
            b = a + s.start()
    v = ln.span(a, b)
    if not v or not re.search(r"[\u3040-\u30ff\u3400-\u9fffA-Za-z0-9]", v):
        return None  # a blank field with only a mark in it (保護者氏名＊)
    return v


_PERSON_STOP = r"(生年月日|性別|年齢|電話|TEL|携帯|住所|個人番号|マイナンバー|フリガナ|ふりがな|続柄|職業|E-?mail|印$|㊞)"
_APPLICANT = r"(?:申請者|届出人|届出者|申込者|申請人|請求者|申出者|申出人|申立人|依頼者|報告者|提出者|受給者|保護者|世帯主)"
# the label of a person's name in a form row: 氏名, or 氏名 behind whose name it is
# (申請者氏名, 保護者　氏名, 請求者 氏名: real city forms print the role in front)
_NAME_LABEL = (rf"(?:{_APPLICANT}|代表者|本人|児童|生徒|対象者)?[:：]?(?:氏名又は名称|氏名|名前|お名前)"
               r"|氏名又は名称|氏名|名前|お名前")


def _read_form(doc: Doc, hit: TitleHit | None) -> _Layout:
    r = _Layout()
    page = doc.first_page
    t_idx = page.index(hit.line) if hit and hit.line in page else -1
    header = page[:t_idx] if t_idx > 0 else page[:4]
    if hit:
        r.title = Found(_title_text(hit), hit.line, 0.9)
    r.number = _find_number(doc, "form", header)
    r.date, r.date_conf = _pick_date(doc, "form", header)
    for ln in page[: max(t_idx + 4, 8)]:
        labelled = _labelled_addressee(ln)
        if labelled:
            r.addressee = Found(labelled, ln, 0.9)
            break
        if _has_honorific(ln) and not re.match(r"^(?:氏名|住所)", ln.key):
            r.addressee = Found(_no_honorific(ln.raw), ln, 0.9)
            break
    lines = doc.lines
    anchor = next((i for i, ln in enumerate(lines) if re.match(rf"^[(（【]?{_APPLICANT}", _strip_numbering(ln.key)[0])), None)
    order = (lines[anchor:anchor + 10] + lines) if anchor is not None else lines
    for ln in order:
        v = _field_after(ln, _NAME_LABEL, _PERSON_STOP)
        if v:
            r.issuer = Found(_no_honorific(_clean_issuer(v)), ln, 0.85)
            break
    return r


def _company_line(lines: list[TLine]) -> TLine | None:
    for ln in lines:
        if _COMPANY.search(ln.key) and not _CONTACT.match(ln.key):
            return ln
    for ln in lines:
        if _BUSINESS.search(ln.key) and not _CONTACT.match(ln.key) and not _ADDRESS_HINT.search(ln.key):
            return ln
    return None


def _company_name(ln: TLine) -> str:
    """The company as printed, without a representative or seal printed on the same line."""
    m = re.search(_REP_WORDS, ln.key)
    if m and m.start() > 0 and _COMPANY.search(ln.key[: m.start()]):
        return _clean_issuer(ln.span(0, m.start()))
    # labels such as 商号 / 名称 / 事業者名
    s = re.sub(r"^(?:商号又は名称|商号|名称|事業者名|会社名|請求者|発行者)[:：\s\u3000]*", "", ln.raw.strip())
    s = _clean_issuer(s)
    # a lone character after a space behind the company name is the seal read as text (…建設 葉)
    m2 = re.match(r"^(?P<c>.*\S)[\s\u3000]+\S$", s)
    if m2 and (_COMPANY.search(_key_and_map(m2["c"])[0][-6:]) or _BUSINESS.search(_key_and_map(m2["c"])[0])):
        s = m2["c"]
    return s


def _read_invoice(doc: Doc, hit: TitleHit | None) -> _Layout:
    r = _Layout()
    page = doc.first_page
    if hit:
        r.title = Found(_title_text(hit), hit.line, 0.95)
    amt_i = next((i for i, ln in enumerate(page) if re.search(r"請求金額|請求額|合計", ln.key)), len(page))
    header = page[:amt_i]
    r.number = _find_number(doc, "invoice", header)
    r.date, r.date_conf = _pick_date(doc, "invoice", header)
    addr_i = next((i for i, ln in enumerate(header) if _has_honorific(ln)), None)
    if addr_i is not None:
        r.addressee = Found(_no_honorific(header[addr_i].raw), header[addr_i], 0.9)
    after = header[addr_i + 1:] if addr_i is not None else header
    comp = _company_line(after) or _company_line(header)
    if comp is None:  # the first line after the addressee that is not a number/date/contact
        comp = next((ln for ln in after if not (_CONTACT.match(ln.key) or _ADDRESS_HINT.search(ln.key)
                     or dates.find_dates(ln.raw) or re.match(_REP_WORDS, ln.key) or _NUMBER_LABEL.match(ln.key))), None)
    if comp is not None:
        name = _company_name(comp)
        r.issuer = Found(name, comp, 0.85)
        r.counterparty = Found(name, comp, 0.85)
    r.amount = _find_amount(doc, "invoice")
    return r


# 甲/乙 (or 発注者/受注者) opening a signature block; 申/Z are OCR's readings of 甲/乙
_PARTY_WORDS = r"甲|乙|丙|申|Z|発注者|委託者|受注者|受託者"
_PARTY_OF = {"申": "甲", "Z": "乙", "発注者": "甲", "委託者": "甲", "受注者": "乙", "受託者": "乙"}
_PARTY_RAW = re.compile(rf"^[(（\[【]?(?P<p>{_PARTY_WORDS})[)）\]】]?(?:[\s\u3000:：]+|$)")
_PARTY_KEY = re.compile(r"^[(（\[【]?(?P<p>甲|乙|丙|発注者|受注者|委託者|受託者)[)）\]】]?"
                        r"(?=$|[:：]|住所|所在地|名称|氏名|商号|\S{0,3}?[都道府県])")
Block = list[tuple[str, TLine]]


def _party_blocks(doc: Doc) -> dict[str, Block]:
    """The signature blocks 甲 / 乙 of a contract: (printed text, line) for each line.

    A party marker is 甲/乙 followed by a space, a colon, a label or an address - never
    「甲は、」 in the clauses. A later marker replaces an earlier one, so the blocks are the
    ones under the signing date at the end. A line that starts at the marker's left edge
    (with boxes: the block's own lines are indented), or an address after the block's name
    lines, opens the next party's block even when OCR lost its 乙.
    """
    lines = doc.lines
    starts: list[tuple[int, str]] = []
    for i, ln in enumerate(lines):
        m = _PARTY_RAW.match(ln.raw.strip()) or _PARTY_KEY.match(ln.key)
        if m:
            starts.append((i, _PARTY_OF.get(m["p"], m["p"])))
    blocks: dict[str, Block] = {}
    n = 0
    while n < len(starts):
        i, party = starts[n]
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        first = lines[i]
        block: Block = []
        mm = re.match(rf"^[(（\[【]?(?:{_PARTY_WORDS})[)）\]】]?[:：]?", first.key)
        rest = first.span(mm.end()) if mm else ""
        if rest:
            block.append((rest, first))
        for j in range(i + 1, end):
            ln = lines[j]
            if _PAGE_NO.match(ln.key) or len(block) >= 5:
                break
            at_marker_edge = bool(first.bbox and ln.bbox and ln.page == first.page and first.page_width
                                  and abs(ln.bbox[0] - first.bbox[0]) < 0.012 * first.page_width)
            # without boxes: an address after the block's name lines is the next party's first line
            next_address = bool(_ADDRESS_HINT.search(ln.key)) and any(
                not _ADDRESS_HINT.search(_key_and_map(b)[0]) for b, _ in block)
            if block and (at_marker_edge or next_address):
                nxt = {"甲": "乙", "乙": "丙"}.get(party)
                if nxt and nxt not in {p for _, p in starts[n + 1:]}:
                    starts.insert(n + 1, (j, nxt))  # the next party's block, its marker unread
                break
            if not _is_noise(ln):
                block.append((ln.raw.strip(), ln))
        blocks[party] = block
        n += 1
    return blocks


_PARTY_LABEL = re.compile(r"^(?:住所|所在地|名称|商号|商号又は名称|氏名|代表者|氏名又は名称)[:：\s\u3000]*")


def _read_contract(doc: Doc, hit: TitleHit | None) -> _Layout:
    r = _Layout()
    page = doc.first_page
    if hit:
        r.title = Found(_title_text(hit), hit.line, 0.95)
        header = page[: page.index(hit.line)] if hit.line in page else page[:3]
    else:
        header = page[:3]
    r.number = _find_number(doc, "contract", header)
    r.date, r.date_conf = _pick_date(doc, "contract", header)
    r.amount = _find_amount(doc, "contract")
    blocks = _party_blocks(doc)

    def signatory(block: Block) -> tuple[str, TLine] | None:
        cand = [(re.sub(_PARTY_LABEL, "", s).strip(), ln) for s, ln in block]
        cand = [(s, ln) for s, ln in cand if s and not _ADDRESS_HINT.search(_key_and_map(s)[0])]
        for s, ln in reversed(cand):
            k = _key_and_map(s)[0]
            if re.search(_OFFICE, k) or re.search(_REP_WORDS, k):
                return s, ln
        return cand[-1] if cand else None

    if "甲" in blocks:
        sig = signatory(blocks["甲"])
        if sig:
            r.issuer = Found(_clean_issuer(sig[0]), sig[1], 0.85)
    if "乙" in blocks:
        block = blocks["乙"]
        comp = next(((s, ln) for s, ln in block if _COMPANY.search(_key_and_map(s)[0])), None)
        if comp is None:
            rest = [(re.sub(_PARTY_LABEL, "", s).strip(), ln) for s, ln in block]
            rest = [(s, ln) for s, ln in rest if s and not _ADDRESS_HINT.search(_key_and_map(s)[0])
                    and not re.match(_REP_WORDS, _key_and_map(s)[0])]
            comp = rest[0] if rest else None
        if comp:
            s = re.sub(_PARTY_LABEL, "", comp[0]).strip()
            k = _key_and_map(s)[0]
            m = re.search(_REP_WORDS, k)
            if m and m.start() > 0:
                s = s[: _key_and_map(s)[1][m.start()]].strip()
            r.counterparty = Found(_clean_issuer(s), comp[1], 0.85)
    if r.counterparty is None:  # 受注者株式会社○○（以下「乙」という。）in the preamble
        joined = "".join(ln.key for ln in doc.lines)
        m = re.search(r"(?:受注者|受託者|請負者|乙方|売主|買主|借主|貸主)[:：]?(?P<c>[^、。「」()（）]{2,40}?)\(以下「乙」", joined)
        if m:
            r.counterparty = Found(m["c"], None, 0.6)
    return r


def _read_minutes(doc: Doc, hit: TitleHit | None) -> _Layout:
    r = _Layout()
    page = doc.first_page
    if hit:
        r.title = Found(_title_text(hit), hit.line, 0.95)
    r.number = _find_number(doc, "minutes", [])
    r.date, r.date_conf = _pick_date(doc, "minutes", page[:8])
    attend = next((i for i, ln in enumerate(page) if re.match(r"^(?:出席|欠席)", _strip_numbering(ln.key)[0])), len(page))
    for ln in page[:attend]:
        m = re.match(r"^[(（【\[]?(?:事務局|庶務|作成者?|記録者?)[)）】\]]?[:：]?(?P<v>.+?)[)）】\]]?$", ln.key)
        if m and len(m["v"]) >= 2:
            r.issuer = Found(ln.span(m.start("v"), m.end("v")), ln, 0.85)
            break
    return r


def _read_certificate(doc: Doc, hit: TitleHit | None) -> _Layout:
    r = _Layout()
    lines = doc.lines
    if hit:
        r.title = Found(_title_text(hit), hit.line, 0.95)
    r.number = _find_number(doc, "certificate", [])
    r.date, r.date_conf = _pick_date(doc, "certificate", [])
    t_i = lines.index(hit.line) if hit and hit.line in lines else -1
    if t_i + 1 < len(lines):
        ln = lines[t_i + 1]
        if not re.search(r"[。、]|(?:する|します|ます|した)$", ln.key) and len(ln.key) <= 24 and not dates.find_dates(ln.raw):
            r.addressee = Found(_no_honorific(ln.raw), ln, 0.85)
    if r.date is not None:
        d_i = lines.index(r.date.line)
        after = [ln for ln in lines[d_i + 1: d_i + 4] if not _is_noise(ln)]
        if after:
            pick = next((ln for ln in after if re.search(_OFFICE, ln.key)), after[0])
            r.issuer = Found(_clean_issuer(pick.raw), pick, 0.85)
    return r


_READERS = {"letter": _read_letter, "form": _read_form, "invoice": _read_invoice,
            "contract": _read_contract, "minutes": _read_minutes, "certificate": _read_certificate}


def extract_metadata(text: str | Doc, *, pages: list[Page] | None = None,
                     types: TypeCatalog | str | Path | None = None) -> Metadata:
    """Metadata (with per-field evidence) of one document from its text or OCR pages."""
    doc = _as_doc(text, pages)
    catalog = _catalog(types)
    f = _Fields()
    if not doc.lines:
        return Metadata()
    dtype, hit, conf = classify_document(doc, catalog)
    f.set("document_type", Found(dtype.name, hit.line if hit else None, conf))
    r = _READERS[dtype.layout](doc, hit)
    f.set("title", r.title)
    f.set("document_number", r.number)
    if r.date is not None:
        d = r.date
        f.set("document_date", Found(d.match.date, d.line, r.date_conf))
        f.set("document_date_text", Found(d.match.clean_text, d.line, r.date_conf))
        f.set("fiscal_year", Found(dates.fiscal_year(d.match.date), d.line, r.date_conf))
    f.set("issuer", r.issuer)
    f.set("addressee", r.addressee)
    if dtype.amount:
        f.set("amount", r.amount)
    if dtype.layout in ("contract", "invoice"):
        f.set("counterparty", r.counterparty)
    return Metadata(**f.values, evidence=f.evidence)
