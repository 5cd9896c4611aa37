"""Reading prepared pages: OCR engine plugins that return lines in reading order.

Each engine is a thin wrapper around one external program (tesseract through
pytesseract, PP-OCR through the ``rapidocr`` wheel) behind one small interface, like
OCRmyPDF's OcrEngine: ``read(PreparedPage) -> PageText``. Everything the engines do
not do for Japanese administrative paper is done here, the same way for all of them:

* reading order is rebuilt from the boxes, not taken from the engine's layout
  analysis: horizontal pages read line by line top to bottom (a letter: number,
  date, addressee, issuer, title, body, 記 items; a table row is one line); vertical
  pages read column by column from right to left, one column is one line;
* the text of a line is put together from its words with Japanese spacing rules
  (processors.reading.textnorm), with a full-width space only where the page has a wide gap;
* boxes are returned in archive-image pixels (ocr pixels divided by ocr_scale).

No model is ever downloaded at run time: tesseract's traineddata come from the
Debian packages and rapidocr's models ship inside its wheel.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from PIL import Image

from processors.reading.pages import PageText, PreparedPage
from processors.reading.textnorm import (
    FULLWIDTH_SPACE,
    strip_rule_chars,
    fix_confusions,
    has_letters,
    is_cjk,
    is_kanji,
    needs_space_between,
    printed_spaces,
)
from schemas.record import Cell, Line, Region, Table, Word

__all__ = [
    "OcrEngine",
    "Token",
    "TesseractEngine",
    "RapidOcrEngine",
    "AutoEngine",
    "get_engine",
    "available_engines",
    "default_engine",
    "group_horizontal",
    "group_vertical",
    "tokens_to_lines",
    "order_tokens",
    "group_to_line",
    "group_confidence",
    "remove_rules",
    "suppress_light_ink",
    "rapidocr_available",
]

# One page per core beats OpenMP's threads inside one page on small machines, and
# kiroku runs one page per worker process: keep tesseract (and onnxruntime) at one
# thread each. Set before any subprocess is started; an explicit setting wins.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")


@runtime_checkable
class OcrEngine(Protocol):
    """What kiroku needs from an OCR engine: one prepared page in, its text out."""

    name: str

    def read(self, page: PreparedPage) -> PageText: ...


@dataclass
class Token:
    """A piece of text an engine found, with its box in ocr_image pixels."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    conf: float  # 0-100

    @property
    def w(self) -> float:
        return max(1.0, self.x1 - self.x0)

    @property
    def h(self) -> float:
        return max(1.0, self.y1 - self.y0)

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


# ---------------------------------------------------------------------------
# Reading order: boxes -> visual lines
# ---------------------------------------------------------------------------


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def group_horizontal(tokens: list[Token], min_overlap: float = 0.5) -> list[list[Token]]:
    """Group boxes into visual lines, top to bottom, each line left to right.

    A box joins the line it overlaps most vertically, if that overlap is at least
    ``min_overlap`` of the smaller of the two heights; the line's band is the median of
    its members, so a tall seal fragment or a punctuation mark cannot widen it into
    the next line. Cells of a table row share a band and so become one line, which is
    how the archive text (and a reader) takes a row.
    """
    if not tokens:
        return []
    heights = sorted(t.h for t in tokens)
    typical = heights[len(heights) // 2]
    lines: list[list[Token]] = []
    bands: list[tuple[float, float]] = []
    # Place well-shaped boxes first so that bands are set by text, not by oddities.
    order = sorted(tokens, key=lambda t: (t.h > 2.5 * typical, t.cy))
    for tok in order:
        best, best_ov = -1, 0.0
        for i, (b0, b1) in enumerate(bands):
            ov = _overlap(tok.y0, tok.y1, b0, b1) / max(1.0, min(tok.h, b1 - b0))
            if ov > best_ov:
                best, best_ov = i, ov
        if best >= 0 and best_ov >= min_overlap:
            lines[best].append(tok)
            members = lines[best]
            y0s = sorted(t.y0 for t in members if t.h <= 2.5 * typical) or [t.y0 for t in members]
            y1s = sorted(t.y1 for t in members if t.h <= 2.5 * typical) or [t.y1 for t in members]
            bands[best] = (y0s[len(y0s) // 2], y1s[len(y1s) // 2])
        else:
            lines.append([tok])
            bands.append((tok.y0, tok.y1))
    out = [sorted(line, key=lambda t: t.x0) for line in lines]
    out.sort(key=lambda line: sorted(t.cy for t in line)[len(line) // 2])
    return out


def group_vertical(tokens: list[Token], min_overlap: float = 0.5) -> list[list[Token]]:
    """Group boxes into columns, right to left, each column top to bottom.

    The vertical counterpart of group_horizontal: a box joins the column it overlaps
    most horizontally. On a 辞令 or 表彰状 each printed column is one line of the text.
    """
    if not tokens:
        return []
    swapped = [Token(t.text, t.y0, -t.x1, t.y1, -t.x0, t.conf) for t in tokens]
    cols = group_horizontal(swapped, min_overlap)
    index = {id(s): t for s, t in zip(swapped, tokens)}
    return [[index[id(s)] for s in col] for col in cols]


def _em(tokens: list[Token], vertical: bool) -> float:
    """The line's character size (em): median extent across the line of its Japanese words.

    Digits, kana like っ and punctuation are smaller than a kanji; taking only words with
    kanji (or else any Japanese, or else anything) keeps the em honest.
    """
    def across(t: Token) -> float:
        return t.w if vertical else t.h

    for pick in (lambda t: any(is_kanji(c) for c in t.text), lambda t: any(is_cjk(c) for c in t.text), lambda t: True):
        sizes = sorted(across(t) for t in tokens if pick(t))
        if sizes:
            return sizes[len(sizes) // 2]
    return 1.0


def _is_digit(ch: str) -> bool:
    return ch.isdigit()


def _join_tokens(tokens: list[Token], vertical: bool) -> str:
    """One line's text from its boxes in order, with Japanese spacing.

    * A gap of about a character or more (0.9 em; 2.5 em next to a digit, whose boxes
      tesseract draws too narrow) is a space the page printed: a full-width space next
      to Japanese (石川県知事　殿), an ASCII space between anything else.
    * Narrower gaps are set solid, with one exception: two Latin words (``E-mail``
      ``kikaku@...``) get an ASCII space when the gap is a word space (0.15 em).
      Digits are never split by a narrow gap: tesseract boxes full-width digits one
      by one (１２３４ -> ``1`` ``2`` ``3`` ``4``), and the page prints 1234.
    """
    em = _em(tokens, vertical)
    out = ""
    prev: Token | None = None
    for tok in tokens:
        text = tok.text
        if not text:
            continue
        if out and prev is not None:
            gap = (tok.y0 - prev.y1) if vertical else (tok.x0 - prev.x1)
            a, b = out[-1], text[0]
            # tesseract's boxes of (full-width) digits are narrow and often wrong, so a
            # gap next to a digit only counts when it is wide, as between table cells
            wide = 2.5 * em if (_is_digit(a) or _is_digit(b)) else 0.9 * em
            if gap >= wide:
                if not out.endswith((" ", FULLWIDTH_SPACE)):
                    out += FULLWIDTH_SPACE if (is_cjk(a) or is_cjk(b)) else " "
            elif _is_digit(a) and _is_digit(b):
                pass
            elif needs_space_between(out, text) and gap >= 0.15 * em:
                out += " "
        out += text
        prev = tok
    return out


def _to_archive_box(x0: float, y0: float, x1: float, y1: float, scale: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = size
    s = scale if scale > 0 else 1.0
    bx0 = min(max(0, math.floor(x0 / s)), w)
    by0 = min(max(0, math.floor(y0 / s)), h)
    bx1 = min(max(bx0, math.ceil(x1 / s)), w)
    by1 = min(max(by0, math.ceil(y1 / s)), h)
    return bx0, by0, bx1, by1


def clean_tokens(tokens: list[Token]) -> list[Token]:
    """The words with rule artefacts and inner spaces out; words left empty are dropped."""
    kept = []
    for t in tokens:
        text = printed_spaces(strip_rule_chars(t.text)).strip()
        if text:
            kept.append(Token(text, t.x0, t.y0, t.x1, t.y1, t.conf))
    return kept


def order_tokens(tokens: list[Token], vertical: bool) -> list[list[Token]]:
    """Clean the words (rule artefacts out, inner spaces out) and group them in reading order."""
    kept = clean_tokens(tokens)
    return group_vertical(kept) if vertical else group_horizontal(kept)


def group_confidence(group: list[Token]) -> float:
    """Character-weighted mean confidence of a line's words, 0-100."""
    chars = sum(len(t.text) for t in group)
    return sum(_clamp_conf(t.conf) * len(t.text) for t in group) / max(1, chars)


def group_box(group: list[Token]) -> tuple[float, float, float, float]:
    return min(t.x0 for t in group), min(t.y0 for t in group), max(t.x1 for t in group), max(t.y1 for t in group)


def group_to_line(group: list[Token], vertical: bool, scale: float = 1.0, size: tuple[int, int] | None = None) -> Line | None:
    """One visual line from its words (in order), boxes in archive pixels; None if nothing readable."""
    if not group:
        return None
    size = size or (10**9, 10**9)
    text = fix_confusions(_join_tokens(group, vertical)).strip()
    if not has_letters(text):
        return None
    words = [
        Word(text=t.text, bbox=_to_archive_box(t.x0, t.y0, t.x1, t.y1, scale, size), confidence=_clamp_conf(t.conf))
        for t in group
    ]
    box = _to_archive_box(*group_box(group), scale, size)
    return Line(text=text, bbox=box, confidence=_clamp_conf(group_confidence(group)), vertical=vertical, words=words)


def tokens_to_lines(tokens: list[Token], vertical: bool, scale: float = 1.0, size: tuple[int, int] | None = None) -> list[Line]:
    """Boxes in ocr pixels -> Lines in reading order with boxes in archive pixels.

    ``scale`` is PreparedPage.ocr_scale (ocr pixels per archive pixel) and ``size`` the
    archive image size the boxes are clamped to.
    """
    lines = (group_to_line(g, vertical, scale, size) for g in order_tokens(tokens, vertical))
    return [line for line in lines if line is not None]


def layout_read(
    tokens: list[Token], vertical: bool, ocr_image: np.ndarray | None, ocr_size: tuple[int, int], scale: float = 1.0,
    size: tuple[int, int] | None = None,
) -> tuple[list[Line], list[Region], list[Table]]:
    """Boxes in ocr pixels -> Lines in reading order, region by region (processors.reading.layout),
    with the regions and the ruled tables for the record (boxes in archive pixels).

    ``ocr_size`` is the (width, height) of the ocr image the boxes are in; ``vertical``
    the page's writing mode, which a region of boxes in the other direction overrides
    (a vertical page's horizontal title and captions are horizontal lines).
    ``ocr_image``, when given, is searched for ruled tables (their cells' stacked
    vertical labels are read as words, and the cell grid is kept).
    """
    from processors.reading.layout import (
        Block, GridSlot, _em as em_of, block_kind, find_tables, grid_slots, layout_blocks, merge_stacked_labels,
    )

    size = size or (10**9, 10**9)
    kept = clean_tokens(tokens)
    grids = find_tables(ocr_image) if ocr_image is not None and kept else []
    kept = merge_stacked_labels(kept, grids, Token)
    lines: list[Line] = []
    regions: list[Region] = []
    page_em = em_of(kept) if kept else 1.0
    flow, slots = grid_slots(kept, grids)
    blocks = layout_blocks(flow + slots, ocr_size[0], ocr_size[1], vertical)
    # a region of the record is a run of leaves of one column or tier, in one writing mode
    # and of one kind (a title is its own region); a ruled grid is a region of its own
    runs: list[tuple[tuple, list]] = []

    def add(key: tuple, toks: list, made: list[Line]) -> None:
        if not made:
            return
        if runs and runs[-1][0] == key:
            runs[-1][1].append((toks, made))
        else:
            runs.append((key, [(toks, made)]))

    for block in blocks:
        plain = [t for t in block.tokens if not isinstance(t, GridSlot)]
        pieces: list[tuple[float, object]] = []
        if plain:
            groups = group_vertical(plain) if block.vertical else group_horizontal(plain)
            pieces += [((-max(t.x1 for t in g)) if block.vertical else min(t.y0 for t in g), g) for g in groups]
        grid_pieces = [((-t.x1) if block.vertical else t.y0, t) for t in block.tokens if isinstance(t, GridSlot)]
        if grid_pieces:  # a grid among the block's lines goes where it stands; lines keep their order
            pieces = sorted(pieces + grid_pieces, key=lambda p: p[0])
        kind = block_kind(Block(tokens=plain, vertical=block.vertical), page_em, ocr_size[1], grids) if plain else "table"
        for _, piece in pieces:
            if isinstance(piece, GridSlot):
                toks = [t for _, inside in piece.cells for t in inside]
                add((block.page, block.group, False, "table", id(piece)), toks, grid_lines(piece, vertical, scale, size))
            else:
                line = group_to_line(piece, block.vertical, scale, size)
                add((block.page, block.group, block.vertical, kind), piece, [line] if line is not None else [])
    for (part, _, is_vertical, kind, *_), members in runs:
        first = len(lines)
        for _, made in members:
            lines.extend(made)
        toks = [t for tk, _ in members for t in tk]
        box = (min(t.x0 for t in toks), min(t.y0 for t in toks), max(t.x1 for t in toks), max(t.y1 for t in toks))
        regions.append(Region(kind=kind, bbox=_to_archive_box(*box, scale, size), vertical=is_vertical, part=part,
                              lines=list(range(first, len(lines)))))
    tables = []
    for grid in grids:
        cells = []
        for c in grid.cells:
            inside = [t for t in kept if c.box[0] <= t.cx <= c.box[2] and c.box[1] <= t.cy <= c.box[3]]
            cell_vertical = region_vertical_of(inside, vertical)
            groups = group_vertical(inside) if cell_vertical else group_horizontal(inside)
            text = "\n".join(fix_confusions(_join_tokens(g, cell_vertical)).strip() for g in groups)
            cells.append(Cell(row=c.row, col=c.col, row_span=c.row_span, col_span=c.col_span,
                              bbox=_to_archive_box(*c.box, scale, size), text=text.strip()))
        tables.append(Table(bbox=_to_archive_box(*grid.box, scale, size), rows=grid.rows, cols=grid.cols, cells=cells))
    return lines, regions, tables


def grid_lines(slot, vertical: bool, scale: float = 1.0, size: tuple[int, int] | None = None) -> list[Line]:
    """A ruled grid's Lines: row by row, the cells of a row left to right, a spanning cell once.

    Neighbouring cells of a row that each hold one horizontal line of text, on one
    band, are one Line (氏名　山田　太郎: a label and its value stay on one line for the
    metadata readers, and the PDF text layer gets one line where the page has one). A
    cell of several lines (T・S over H・R, an address over two lines), a vertical cell
    or a cell spanning several rows is read on its own, its lines in its own order
    (processors.reading.layout.xy_cut within the cell), so the lines of neighbouring
    cells are never banded into each other. A spanning cell is read with the row it
    starts in.
    """
    from processors.reading.layout import region_vertical, xy_cut

    size = size or (10**9, 10**9)
    rows: dict[int, list] = {}
    for cell, inside in slot.cells:
        if inside:
            rows.setdefault(cell.row, []).append((cell, inside))
    out: list[Line] = []
    for r in sorted(rows):
        run: list[Token] = []  # tokens of the simple cells joined so far

        def flush() -> None:
            if run:
                line = group_to_line(list(run), False, scale, size)
                if line is not None:
                    out.append(line)
                run.clear()

        for cell, inside in sorted(rows[r], key=lambda ci: ci[0].col):
            cell_vertical = region_vertical(inside, vertical)
            groups = []
            for b in xy_cut(inside, cell_vertical):
                gs = group_vertical(b.tokens) if b.vertical else group_horizontal(b.tokens)
                groups += [(b.vertical, g) for g in gs]
            simple = len(groups) == 1 and not groups[0][0] and cell.row_span == 1
            if simple and run:
                band = [t for t in run]
                cy = sorted((t.y0 + t.y1) / 2 for t in band)[len(band) // 2]
                h = sorted(t.h for t in band)[len(band) // 2]
                simple = all(abs((t.y0 + t.y1) / 2 - cy) <= 0.5 * h for t in groups[0][1])
                if not simple and len(groups) == 1 and not groups[0][0] and cell.row_span == 1:
                    flush()  # a simple cell on another band starts a run of its own
                    simple = True
            if simple:
                run.extend(groups[0][1])
                continue
            flush()
            out += [line for line in (group_to_line(g, v, scale, size) for v, g in groups) if line is not None]
        flush()
    return out


def region_vertical_of(tokens: list[Token], default: bool) -> bool:
    from processors.reading.layout import region_vertical

    return region_vertical(tokens, default)


def layout_lines(
    tokens: list[Token], vertical: bool, ocr_size: tuple[int, int], scale: float = 1.0, size: tuple[int, int] | None = None
) -> list[Line]:
    """layout_read without tables: the Lines in reading order only."""
    return layout_read(tokens, vertical, None, ocr_size, scale, size)[0]


def _clamp_conf(c: float) -> float:
    return float(min(100.0, max(0.0, c)))


# ---------------------------------------------------------------------------
# Image help for tesseract
# ---------------------------------------------------------------------------


def remove_rules(gray: np.ndarray, dpi: float | None = None) -> np.ndarray:
    """Erase table rules, box frames and underlines (long straight dark runs).

    Tesseract's layout analysis treats a ruled table as pictures and separators: whole
    rows vanish or come back as ``|`` and noise. With the rules gone the cells are
    ordinary words on ordinary lines. A run counts as a rule when it is longer than
    14 mm (0.55 inch: 165 px at 300 dpi), longer than the strokes of any title
    character (一 in 36 pt is 12 mm); without a dpi, 6.5% of the page's shorter side
    (the same on A4).
    """
    h, w = gray.shape[:2]
    length = int(round(0.55 * dpi)) if dpi else int(round(0.065 * min(w, h)))
    length = max(25, length)
    binary = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 31, 15)
    horiz = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    vert = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length)))
    rules = cv2.bitwise_or(horiz, vert)
    if not rules.any():
        return gray
    rules = cv2.dilate(rules, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)))
    out = gray.copy()
    out[rules > 0] = 255
    return out


def _digit_count(tokens: list[Token]) -> int:
    return sum(ch.isdigit() for t in tokens for ch in t.text)


def comb_field_bands(tokens: list[Token], min_pieces: int = 2) -> list[tuple[int, int]]:
    """Rows where digits came out as several separate pieces: boxed one-digit-per-cell fields.

    Returned as (y0, y1) bands in ocr pixels, padded by half a line so the boxes'
    frames are inside.
    """
    digit_only = [t for t in tokens if t.text.replace(" ", "").isdigit()]
    bands: list[tuple[int, int]] = []
    used: set[int] = set()
    for i, t in enumerate(digit_only):
        if i in used:
            continue
        row = [j for j, u in enumerate(digit_only) if abs(u.cy - t.cy) < 0.5 * max(t.h, u.h)]
        used.update(row)
        if len(row) < min_pieces:
            continue
        y0 = min(digit_only[j].y0 for j in row)
        y1 = max(digit_only[j].y1 for j in row)
        pad = 0.5 * (y1 - y0)
        bands.append((max(0, int(y0 - pad)), int(y1 + pad)))
    return bands


SECOND_LOOK_MIN_SCORE = 0.8  # recogniser score a line found only by the second look must reach


def _covers(u: Token, t: Token) -> bool:
    """Does box ``u`` already hold most of box ``t``?"""
    ix = max(0.0, min(u.x1, t.x1) - max(u.x0, t.x0))
    iy = max(0.0, min(u.y1, t.y1) - max(u.y0, t.y0))
    return ix * iy >= 0.4 * max(1.0, t.w * t.h)


def uncovered_line_patches(gray: np.ndarray, tokens: list[Token], f: float, max_patches: int = 8,
                           small: np.ndarray | None = None) -> list[tuple[int, int, int, int]]:
    """Patches of ``gray`` (x0, y0, x1, y1, its pixels) holding a line of ink that no token box covers.

    Measured on the detector's own scale ``f``: ink (Otsu) minus the token boxes minus
    long rules; what is left is closed along lines and kept where it is line-shaped:
    at least three times longer than thick and 3 to 40 pixels thick at that scale
    (a line of small print; photos, logos and stray marks are not). Patches are padded
    by their thickness so the detector sees the whole line.
    """
    h, w = gray.shape[:2]
    if small is None:  # ``small``: the detector's own copy at scale f, when the caller has it
        sw, sh = max(32, round(w * f)), max(32, round(h * f))
        small = gray if f >= 1.0 else cv2.resize(gray, (sw, sh), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    _t, ink = cv2.threshold(np.ascontiguousarray(small, dtype=np.uint8), 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    if not ink.any():
        return []
    fx, fy = sw / w, sh / h
    for t in tokens:
        ink[max(0, int(t.y0 * fy) - 2):int(t.y1 * fy) + 3, max(0, int(t.x0 * fx) - 2):int(t.x1 * fx) + 3] = 0
    if int(np.count_nonzero(ink)) < 30:
        return []  # every line got its box (most pages)
    length = max(15, int(0.03 * min(sh, sw)))
    rules = cv2.bitwise_or(cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1))),
                           cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length))))
    ink = cv2.bitwise_and(ink, cv2.bitwise_not(cv2.dilate(rules, np.ones((3, 3), np.uint8))) & 1)
    if int(ink.sum()) < 30:
        return []
    out: list[tuple[int, int, int, int, int]] = []
    for kernel in ((7, 1), (1, 7)):  # horizontal lines, then vertical columns
        joined = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, kernel))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            long_side, thick = (bw, bh) if kernel[0] > 1 else (bh, bw)
            if not (3 <= thick <= 40) or long_side < 3 * thick or area < 0.15 * bw * bh:
                continue
            pad = thick
            out.append((max(0, x - pad), max(0, y - pad), min(sw, x + bw + pad), min(sh, y + bh + pad), long_side * thick))
    if not out:
        return []
    # overlapping patches become one (a line cut in two would be detected as two halves)
    boxes = [list(b[:4]) for b in out]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    patches = [tuple(b) for b in boxes[:max_patches]]
    return [(int(x0 / fx), int(y0 / fy), min(w, int(x1 / fx) + 1), min(h, int(y1 / fy) + 1)) for x0, y0, x1, y1 in patches]


def suppress_light_ink(gray: np.ndarray, margin: int = 110) -> np.ndarray:
    """Whiten ink much lighter than the page's text: seal impressions left in gray scans.

    On a gray (or bilevel-free) scan a red 印影 cannot be told by its colour; it shows as
    mid-gray ink over the issuer's name, and a text detector then takes name and seal
    as one blob, or loses the name. Text ink is the darkest ink on the page: pixels
    more than ``margin`` levels lighter than its 10th percentile become paper. The cut
    follows the page, so faded toner (text at 90-140) keeps its text.
    """
    # Ink is strokes. A large dark area (the dark cloth or table a page was photographed
    # on, a book's black gutter, a photo) is not text ink, and taking it for the darkest
    # text made every typewritten character "light ink" (a photographed spread read as
    # nothing at all): areas wider than any stroke are left out of the percentile.
    # Measured on every 3rd pixel (the percentile is the same, the cost a ninth).
    sample = np.ascontiguousarray(gray[::3, ::3])
    dark = sample < 200
    k = max(5, int(round(0.002 * max(gray.shape[:2]))))
    areas = cv2.morphologyEx(dark.view(np.uint8), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    ink = sample[dark & (areas == 0)]
    if ink.size < 100:
        return gray
    cut = min(200, int(np.percentile(ink, 10)) + margin)
    out = gray.copy()
    out[out > cut] = 255
    return out


# ---------------------------------------------------------------------------
# Tesseract
# ---------------------------------------------------------------------------


class TesseractEngine:
    """Tesseract 5 through pytesseract.image_to_data, ``jpn`` or ``jpn_vert``.

    Page segmentation was chosen by measurement on the sample corpus (bench/ocr_eval.py,
    horizontal pages, rules erased, words regrouped into lines here): psm 6 (one
    uniform block) 3.5% CER, psm 4 4.5%, psm 3 6.3% (it splits label/value lists into
    columns and scatters the letter head), psm 11 7.3%; choosing per page by
    tesseract's own confidence gave 4.0%, worse than psm 6 alone, so psm 6 it is.
    Before reading, table rules are erased (remove_rules): psm 6 otherwise drops the
    rows of ruled tables and forms. Vertical pages use jpn_vert with psm 5 (one
    vertical block). The words' boxes are regrouped into visual lines (module
    docstring), and lines below ``min_line_conf`` are dropped (see groups()).

    ``light_ink`` (whitening pale ink first, see suppress_light_ink) is off: tesseract's
    own binarisation loses the thin strokes it leaves (5.3% against 3.5%).
    """

    name = "tesseract"

    def __init__(
        self,
        psm_horizontal: int = 6,
        psm_vertical: int = 5,
        min_word_conf: float = 0.0,
        min_line_conf: float = 40.0,
        light_ink: int = 0,
        timeout: float = 300.0,
    ):
        self.timeout = timeout
        self.light_ink = light_ink
        self.psm_horizontal = psm_horizontal
        self.psm_vertical = psm_vertical
        self.min_word_conf = min_word_conf
        self.min_line_conf = min_line_conf

    def tokens(self, page: PreparedPage) -> list[Token]:
        """Tesseract's words on the page as Tokens in ocr_image pixels (no reading order)."""
        import pytesseract

        vertical = page.writing_mode == "vertical"
        gray = np.ascontiguousarray(page.ocr_image, dtype=np.uint8)
        dpi = max(70, int(round(page.dpi * (page.ocr_scale or 1.0))))
        image = remove_rules(suppress_light_ink(gray) if self.light_ink else gray, dpi)
        lang = "jpn_vert" if vertical else "jpn"
        psm = self.psm_vertical if vertical else self.psm_horizontal
        pil = Image.fromarray(image)
        pil.format = "BMP"  # pytesseract saves in image.format: BMP takes ~5 ms for an A4 page, PNG ~150 ms
        data = pytesseract.image_to_data(
            pil, lang=lang, config=f"--psm {psm} --dpi {dpi}", output_type=pytesseract.Output.DICT, timeout=self.timeout
        )
        out: list[Token] = []
        for i, text in enumerate(data["text"]):
            text = (text or "").strip()
            conf = float(data["conf"][i])
            if not text or conf < 0 or conf < self.min_word_conf:
                continue
            x, y, w, h = (float(data[k][i]) for k in ("left", "top", "width", "height"))
            out.append(Token(text, x, y, x + w, y + h, conf))
        return out

    def groups(self, page: PreparedPage, min_line_conf: float | None = None) -> list[list[Token]]:
        """Tesseract's words in reading order, lines it is hopeless about left out.

        A line below ``min_line_conf`` (40) is what tesseract makes of a seal, a stamp,
        a punch hole or dirt: ``RE``, ``商ーー。``. Real text, even badly read, scores
        higher; dropping those lines removed more errors than it made on the samples.
        """
        vertical = page.writing_mode == "vertical"
        groups = order_tokens(self.tokens(page), vertical)
        floor = self.min_line_conf if min_line_conf is None else min_line_conf
        return [g for g in groups if group_confidence(g) >= floor]

    def read(self, page: PreparedPage) -> PageText:
        if page.blank:
            return PageText(lines=[], engine=self.name)
        vertical = page.writing_mode == "vertical"
        lines = [group_to_line(g, vertical, page.ocr_scale, page.archive_image.size) for g in self.groups(page)]
        return PageText(lines=[x for x in lines if x is not None], engine=self.name)


# ---------------------------------------------------------------------------
# RapidOCR (PP-OCR models in ONNX, shipped in the wheel)
# ---------------------------------------------------------------------------

_RAPID_LOCK = threading.Lock()
_RAPID_IDLE: list = []  # RapidOCR instances no thread is using right now
# Instances are made one at a time: two threads building OpenVINO models (and the
# openvino.Core behind inference_runtime) at once is where a flow run hung at 0% CPU
# (issue 8, cardinal.pdf). Making one takes ~1 s and happens once per concurrent reader.
_RAPID_MAKE_LOCK = threading.Lock()


@contextmanager
def lent_rapidocr():
    """A RapidOCR instance for this caller alone, given back when the block ends.

    An OpenVINO infer request must not run in two threads at once, and the Prefect
    flows read pages in threads; so each concurrent caller gets its own instance, made
    on first need (about 1 s) and then reused. There are never more instances than
    pages read at once (one per core), and a process that reads one page at a time
    (a `kiroku process` worker) keeps exactly one.
    """
    with _RAPID_LOCK:
        instance = _RAPID_IDLE.pop() if _RAPID_IDLE else None
    if instance is None:
        with _RAPID_MAKE_LOCK:
            instance = _new_rapidocr()
            # load the models now, under the lock, not lazily at first use in parallel
            _rapid_det(instance)
            _rapid_rec(instance)
    try:
        yield instance
    finally:
        with _RAPID_LOCK:
            _RAPID_IDLE.append(instance)


def inference_runtime() -> str:
    """What runs the PP-OCR models: OpenVINO in bfloat16 where the CPU computes bfloat16
    natively, else ONNX Runtime in float32.

    The same ONNX files from the rapidocr wheel either way. On the samples
    (bench/ocr_eval.py --runtime, one thread, AVX512-BF16 CPU) OpenVINO's bf16 models
    read a page in 1.2 s against ONNX Runtime's 1.8 s, at 0.30-0.35% CER against
    0.27%. In float32 OpenVINO was slower than ONNX Runtime (2.1 s), so without native
    bf16 it is not used. KIROKU_OCR_RUNTIME=onnxruntime turns OpenVINO off.
    """
    if os.environ.get("KIROKU_OCR_RUNTIME", "").strip().lower() in ("onnxruntime", "ort"):
        return "onnxruntime"
    return "openvino" if _cpu_has_native_bf16() else "onnxruntime"


@lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    try:
        import openvino
    except ImportError:
        return False
    try:
        return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no usable CPU plugin: ONNX Runtime it is
        return False


def _new_rapidocr():
    """A RapidOCR instance, single-threaded, with the wheel's own models.

    The default config (PP-OCRv6 small det/rec, multilingual incl. Japanese) resolves
    to the files shipped in the wheel; asking for another language or version would
    start a download, which kiroku never does. The detector's own resizing is turned
    off (limit_side_len 32): RapidOcrEngine decides the detection scale itself.
    One thread per instance: the pipeline reads one page per core.
    """
    from rapidocr import EngineType, RapidOCR

    params = {
        "Global.log_level": "warning",
        "Global.use_cls": False,  # pages arrive upright
        "Det.limit_side_len": 32,
        "Det.limit_type": "min",
        "EngineConfig.onnxruntime.intra_op_num_threads": 1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
    }
    if inference_runtime() == "openvino":
        params.update({
            "Det.engine_type": EngineType.OPENVINO,
            "Rec.engine_type": EngineType.OPENVINO,
            "EngineConfig.openvino.inference_num_threads": 1,
            "EngineConfig.openvino.num_streams": 1,
            "EngineConfig.openvino.performance_hint": "LATENCY",
            # OpenVINO pins its thread to a core by default, and every worker
            # process picks the same one: two workers then share one core and
            # each page took 1.9x as long (measured). The OS places them better.
            "EngineConfig.openvino.enable_cpu_pinning": False,
        })
    else:
        # ONNX Runtime reads crops one at a time faster than in batches of 6 (padded to the
        # widest): 1.59 against 1.86 s a page, CER 0.35% against 0.30% (bench/ocr_eval.py
        # --runtime onnxruntime --clean prepare; batches of 2 and 3 fell in between on
        # both counts, so the difference is padding noise). OpenVINO gained nothing from it.
        params["Rec.rec_batch_num"] = 1
    return RapidOCR(params=params)


def _rapid_det(engine):
    """The text detector of a RapidOCR instance (loaded lazily by recent 3.x releases, at construction by older ones)."""
    loader = getattr(engine, "_load_det_model", None)
    return loader() if loader is not None else engine.text_det


def _rapid_rec(engine):
    """The text recogniser of a RapidOCR instance."""
    loader = getattr(engine, "_load_rec_model", None)
    return loader() if loader is not None else engine.text_rec


def rapidocr_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import rapidocr  # noqa: F401
    except ImportError:
        return False
    return True


class RapidOcrEngine:
    """PP-OCRv6 (small, multilingual) through rapidocr (OpenVINO bf16 or ONNX Runtime: inference_runtime), one thread per page.

    kiroku's default engine: 0.3% CER on the sample corpus against tesseract's 3.5%,
    for about 1.2 s of CPU a page (1.8 s without OpenVINO bf16) against tesseract's
    0.7 s (bench/ocr_eval.py).

    Detection runs on a copy of the page scaled so that its longer side is
    ``det_max_side`` pixels: detection cost grows with the area (2000 px, rapidocr's
    default, took 1.5 s a page; 1280 px 0.5 s) and text lines are still ~20 px high at
    1280 on A4, where accuracy was the same (1024 px too, but with less margin for
    small print). Recognition reads crops cut from the full ocr_image: the recogniser
    sees every line at 48 px height whatever the scale, so full-resolution crops cost
    nothing extra and keep small print sharp. Tall crops (columns on vertical pages)
    are turned by rapidocr's own crop helper and read as vertical text.

    ``light_ink=1`` whitens pale ink (suppress_light_ink) in the copy used for
    detection only: a gray seal over the issuer's name otherwise made the detector
    lose the whole line (samples: 0.69% -> 0.27% CER, the name back). The recogniser
    still reads the untouched pixels, so faded strokes are never lost to it.

    The boxes come back in no useful order and are sorted here (module docstring).
    """

    name = "rapidocr"

    def __init__(self, det_max_side: int = 1280, min_score: float = 0.5, light_ink: int = 1, layout: int = 1,
                 second_look: int = 1):
        self.second_look = second_look  # 1: detect again where lines of ink got no box (_second_look)
        self.layout = layout  # 1: regions first (processors.reading.layout), 0: the page as one block
        self.det_max_side = det_max_side
        self.min_score = min_score
        self.light_ink = light_ink  # 0: off, 1: detection only, 2: detection and recognition

    def tokens(self, page: PreparedPage, image: np.ndarray | None = None) -> list[Token]:
        """Detected lines with their text as Tokens in ocr_image pixels (no reading order)."""
        with lent_rapidocr() as engine:
            return self._tokens(engine, page.ocr_image if image is None else image)

    def _tokens(self, engine, image: np.ndarray) -> list[Token]:
        gray = np.ascontiguousarray(image, dtype=np.uint8)
        det_gray = suppress_light_ink(gray) if self.light_ink else gray
        if self.light_ink >= 2:
            gray = det_gray
        h, w = gray.shape[:2]
        f = min(1.0, self.det_max_side / max(h, w))
        # shrink the one gray channel, then make it BGR: a third of the resizing work
        small_gray = det_gray if f >= 1.0 else cv2.resize(det_gray, (max(32, round(w * f)), max(32, round(h * f))),
                                                          interpolation=cv2.INTER_AREA)
        small = cv2.cvtColor(small_gray, cv2.COLOR_GRAY2BGR)
        det = _rapid_det(engine)(small)
        if det.boxes is None or len(det.boxes) == 0:
            return []
        fx, fy = w / small.shape[1], h / small.shape[0]
        boxes = [np.asarray(b, dtype=np.float32) * np.array([fx, fy], dtype=np.float32) for b in det.boxes]
        out = self._read_boxes(engine, gray, boxes)
        for y0, y1 in comb_field_bands(out):
            out = self._reread_band(engine, gray, det_gray, out, y0, y1)
        if self.second_look:
            out = self._second_look(engine, gray, det_gray, out, f, small_gray)
        return out

    def _second_look(self, engine, gray: np.ndarray, det_gray: np.ndarray, tokens: list[Token], f: float,
                     small_gray: np.ndarray | None = None) -> list[Token]:
        """Detect again, at twice the scale, where lines of ink were left without any box.

        The first pass detects on a copy shrunk to ``det_max_side``; print much smaller
        than the body (a photo's caption under a magazine's vertical body, a footnote)
        is then only a few pixels high and the detector misses whole lines of it.
        Ink that no box covers, in line-shaped patches (long, thin, not a rule), is cut
        out and detected again at up to twice the first scale; boxes found there that no
        first-pass box covers are read, and added when the recogniser is sure of them
        (SECOND_LOOK_MIN_SCORE). Pages where every line was found
        (most pages) cost one threshold and one connected-components pass.
        """
        patches = uncovered_line_patches(det_gray, tokens, f, small=small_gray)
        if not patches:
            return tokens
        f2 = min(1.0, 2.0 * f)
        added: list[Token] = []
        for x0, y0, x1, y1 in patches:
            crop = np.ascontiguousarray(det_gray[y0:y1, x0:x1])
            ch, cw = crop.shape[:2]
            small = crop if f2 >= 1.0 else cv2.resize(crop, (max(32, round(cw * f2)), max(32, round(ch * f2))),
                                                        interpolation=cv2.INTER_AREA)
            det = _rapid_det(engine)(cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))
            if det.boxes is None or len(det.boxes) == 0:
                continue
            fx, fy = cw / small.shape[1], ch / small.shape[0]
            boxes = [np.asarray(b, dtype=np.float32) * np.array([fx, fy], dtype=np.float32) + np.array([x0, y0], dtype=np.float32)
                     for b in det.boxes]
            for t in self._read_boxes(engine, gray, boxes):
                # text where the first pass saw none needs a sure reading: a gray seal's
                # ring read as "SANGEN" at 0.53 is not a line of small print
                if t.conf < 100.0 * SECOND_LOOK_MIN_SCORE or any(_covers(u, t) for u in tokens + added):
                    continue
                added.append(t)
        return tokens + added

    def _read_boxes(self, engine, gray: np.ndarray, boxes: list[np.ndarray], dy: float = 0.0) -> list[Token]:
        out: list[Token] = []
        for pts, (text, score) in zip(boxes, self.recognize(gray, boxes, engine)):
            if not text or score < self.min_score:
                continue
            out.append(Token(text, float(pts[:, 0].min()), float(pts[:, 1].min()) + dy, float(pts[:, 0].max()),
                             float(pts[:, 1].max()) + dy, 100.0 * float(score)))
        return out

    def _reread_band(self, engine, gray: np.ndarray, det_gray: np.ndarray, tokens: list[Token], y0: int, y1: int) -> list[Token]:
        """Detect one band again at full resolution and let its tokens replace the first pass's.

        Digits written one per box (個人番号, 郵便番号 comb fields) are small and boxed; the
        downscaled detection pass merges or loses some of them, and a lost digit of a
        個人番号 is a missed piece of personal data. The band is a sliver of the page,
        so detecting it at full size costs little.
        """
        band = cv2.cvtColor(np.ascontiguousarray(det_gray[y0:y1]), cv2.COLOR_GRAY2BGR)
        det = _rapid_det(engine)(band)
        if det.boxes is None or len(det.boxes) == 0:
            return tokens
        boxes = [np.asarray(b, dtype=np.float32) for b in det.boxes]
        fresh = self._read_boxes(engine, np.ascontiguousarray(gray[y0:y1]), boxes, dy=float(y0))
        # a line the band's edge cuts through is read from half its height (an invoice's
        # next table row came back as 巴细A4 and 2.2.40 beside the real one): only lines
        # lying inside the band count
        fresh = [t for t in fresh if t.y0 > y0 + 2 and t.y1 < y1 - 2]
        if _digit_count(fresh) <= _digit_count([t for t in tokens if y0 <= t.cy <= y1]):
            return tokens
        return [t for t in tokens if not (y0 <= t.cy <= y1)] + fresh

    def recognize(self, gray: np.ndarray, boxes: list[np.ndarray], engine=None) -> list[tuple[str, float]]:
        """Read the text in each box (4 corner points, ocr pixels): (text, score 0-1) per box.

        Crops taller than 1.5x their width are turned a quarter by rapidocr's helper and
        read as vertical text; everything is recognised in batches sorted by width.
        ``engine``: the RapidOCR instance the caller already holds, else one is lent.
        """
        if engine is None:
            with lent_rapidocr() as lent:
                return self.recognize(gray, boxes, lent)
        from rapidocr.ch_ppocr_rec import TextRecInput
        from rapidocr.utils.process_img import get_rotate_crop_image

        if not boxes:
            return []
        bgr = gray if gray.ndim == 3 else cv2.cvtColor(np.ascontiguousarray(gray, dtype=np.uint8), cv2.COLOR_GRAY2BGR)
        crops = [get_rotate_crop_image(bgr, np.asarray(b, dtype=np.float32).copy()) for b in boxes]
        rec = _rapid_rec(engine)(TextRecInput(img=crops, return_word_box=False))
        return [((t or "").strip(), float(sc)) for t, sc in zip(rec.txts or (), rec.scores or ())]

    def read(self, page: PreparedPage) -> PageText:
        if page.blank:
            return PageText(lines=[], engine=self.name)
        vertical = page.writing_mode == "vertical"
        if self.layout:
            h, w = page.ocr_image.shape[:2]
            lines, regions, tables = layout_read(self.tokens(page), vertical, page.ocr_image, (w, h), page.ocr_scale,
                                                 page.archive_image.size)
            return PageText(lines=lines, engine=self.name, regions=regions, tables=tables)
        lines = tokens_to_lines(self.tokens(page), vertical, page.ocr_scale, page.archive_image.size)
        return PageText(lines=lines, engine=self.name)


# ---------------------------------------------------------------------------
# Auto: tesseract first, rapidocr where tesseract is unsure
# ---------------------------------------------------------------------------


class AutoEngine:
    """Tesseract first; RapidOCR for the lines, or whole pages, tesseract is unsure of.

    * every tesseract line below ``line_conf`` is cut out of the page and read again by
      RapidOCR's recogniser alone (no detection, a few tens of milliseconds a line); the
      better-scored reading is kept;
    * a page whose tesseract confidence is below ``page_conf``, or where more than
      ``max_unsure`` of the lines are unsure, is read by RapidOCR whole: tesseract's
      layout itself is then not to be trusted (ruled forms, boxed digits, stamps).

    * vertical pages go to RapidOCR whole (``vertical_rapid``): jpn_vert is weak on them.

    Without rapidocr installed this is plain tesseract. Measured on the samples
    (bench/ocr_eval.py): 1.0% CER for 1.5 s of CPU a page, between tesseract (3.5%,
    0.8 s) and RapidOCR (0.3%, 1.8 s); with ``line_conf=85`` 1.8% for 1.1 s, but one
    form then stays at 13%. RapidOCR alone is the better default; "auto" is for
    machines where every tenth of a second counts.
    """

    name = "auto"

    def __init__(
        self, line_conf: float = 90.0, page_conf: float = 80.0, max_unsure: float = 0.5, vertical_rapid: int = 1, rescue_score: float = 0.9
    ):
        self.rescue_score = rescue_score
        self.line_conf = line_conf
        self.page_conf = page_conf
        self.max_unsure = max_unsure
        self.vertical_rapid = bool(vertical_rapid)
        self.tesseract = TesseractEngine()
        self.rapid = RapidOcrEngine() if rapidocr_available() else None

    def read(self, page: PreparedPage) -> PageText:
        if page.blank:
            return PageText(lines=[], engine=self.name)
        vertical = page.writing_mode == "vertical"
        size = page.archive_image.size
        if vertical and self.vertical_rapid and self.rapid is not None:
            result = self.rapid.read(page)
            result.engine = "rapidocr"
            return result
        if self.rapid is None:
            lines = [group_to_line(g, vertical, page.ocr_scale, size) for g in self.tesseract.groups(page)]
            return PageText(lines=[x for x in lines if x is not None], engine="tesseract")
        groups = self.tesseract.groups(page, min_line_conf=0.0)
        floor = self.tesseract.min_line_conf
        confs = [group_confidence(g) for g in groups]
        chars = [sum(len(t.text) for t in g) for g in groups]
        kept = [i for i, c in enumerate(confs) if c >= floor]
        page_conf = sum(confs[i] * chars[i] for i in kept) / max(1, sum(chars[i] for i in kept))
        unsure = [i for i, c in enumerate(confs) if c < self.line_conf]
        if not kept or page_conf < self.page_conf or len(unsure) > self.max_unsure * len(groups):
            result = self.rapid.read(page)
            result.engine = "rapidocr"
            return result
        drop: set[int] = set()
        if unsure:
            gray = np.ascontiguousarray(page.ocr_image, dtype=np.uint8)
            boxes = [_padded_quad(group_box(groups[i]), gray.shape, vertical) for i in unsure]
            for i, (text, score) in zip(unsure, self.rapid.recognize(gray, boxes)):
                if confs[i] < floor and score < self.rescue_score:
                    drop.add(i)  # noise to tesseract and not convincingly text to PP-OCR either: a stamp, a hole
                elif text and 100.0 * score > confs[i]:
                    x0, y0, x1, y1 = group_box(groups[i])
                    groups[i] = [Token(text, x0, y0, x1, y1, 100.0 * score)]
        lines = [group_to_line(g, vertical, page.ocr_scale, size) for i, g in enumerate(groups) if i not in drop]
        return PageText(lines=[x for x in lines if x is not None], engine="tesseract+rapidocr" if unsure else "tesseract")


def _padded_quad(box: tuple[float, float, float, float], shape: tuple[int, ...], vertical: bool) -> np.ndarray:
    """A line box grown by a little margin (recognisers want some paper around the ink)."""
    x0, y0, x1, y1 = box
    size = (x1 - x0) if vertical else (y1 - y0)
    pad = 0.2 * size
    h, w = shape[:2]
    x0, y0 = max(0.0, x0 - pad), max(0.0, y0 - pad)
    x1, y1 = min(float(w - 1), x1 + pad), min(float(h - 1), y1 + pad)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


_ENGINES: dict[str, type] = {"tesseract": TesseractEngine, "rapidocr": RapidOcrEngine, "auto": AutoEngine}
_CACHE: dict[str, OcrEngine] = {}
_CACHE_LOCK = threading.Lock()  # threads asking for an engine at once get the same one


def default_engine() -> str:
    """The engine kiroku should use when none is configured: rapidocr when installed.

    Measured on the samples (bench/ocr_eval.py): rapidocr 0.3% CER at ~1.8 s CPU a page,
    auto 1.0% at 1.5 s, tesseract 3.5% at 0.8 s. kiroku's whole budget is 3.6 s of CPU a
    page (3x OCRmyPDF's throughput on 2 cores) with prepare and the PDF included.
    """
    return "rapidocr" if rapidocr_available() else "tesseract"


def available_engines() -> list[str]:
    names = ["tesseract", "auto"]
    if rapidocr_available():
        names.insert(1, "rapidocr")
    return names


def get_engine(name: str = "default") -> OcrEngine:
    """The engine called ``name`` (tesseract, rapidocr, auto; "default" = default_engine()),
    one instance per process.

    Raises ValueError for an unknown name and RuntimeError for rapidocr when the
    package is not installed.
    """
    key = name.strip().lower()
    if key == "default":
        key = default_engine()
    if key not in _ENGINES:
        raise ValueError(f"unknown OCR engine {name!r}; choose one of {', '.join(_ENGINES)}")
    if key == "rapidocr" and not rapidocr_available():
        raise RuntimeError("OCR engine 'rapidocr' needs the rapidocr and onnxruntime packages (a kiroku dependency: run `make install`)")
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _ENGINES[key]()
        return _CACHE[key]


def warm_up(name: str = "default") -> None:
    """Load an engine's models now (about 1 s for RapidOCR), so a worker process pays for it
    while the first scan is still being decoded rather than on its first page."""
    engine = get_engine(name)
    if isinstance(engine, (RapidOcrEngine, AutoEngine)):
        with lent_rapidocr() as instance:
            _rapid_det(instance)
            _rapid_rec(instance)
