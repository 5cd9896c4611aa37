"""Stage "prepare": turn a scanned page upright, straighten it, and make a clean copy for reading.

The page that is archived and the page that is read are deliberately two images:

* ``archive_image`` is the scan itself, only turned upright and straightened, in the
  same colour mode as scanned (bilevel stays bilevel, gray stays gray). When it needs
  neither, it is the very same image and ``archive_jpeg`` carries the scan's own JPEG
  stream, so the archive PDF holds the scanner's bytes without generation loss.
* ``ocr_image`` is for the OCR engine only: gray, red seals (印影) and 受付 stamps
  dropped out, uneven paper tone evened, noise reduced, pages scaled to about 300 dpi.
  None of that may ever reach the archive: it would be an alteration of the record.

Conventions (those of the sample corpus, see /work/shared/samples/README.md):

* ``rotation_deg`` (0/90/180/270) is the clockwise rotation that turned the upright
  page into the stored image; at 90 the top of the text points to the right. The page
  is fixed by turning it counter-clockwise by that amount.
* ``skew_deg`` is the small turn of the paper measured on the page after the quarter
  turn is undone. Positive means the content is turned counter-clockwise (the right
  end of a text line is higher than its left end); deskewing rotates clockwise by it.
  A quarter turn does not change a small angle's sign, so it can be measured on the
  stored image directly.

How the decisions are made, and why:

* Everything geometric runs on a small binarised copy (100 dpi; 150 dpi for the last
  skew refinement): line structure is plain at that scale and each step takes
  milliseconds. Binarisation divides by the estimated paper tone, so tinted paper,
  shadows and faded toner binarise alike, while faint bleed-through stays paper.
  Blobs touching the image edge (scanner background, shadows), punch holes and dust
  are removed before anything is measured.
* Skew is the angle that makes the projection profile of the ink sharpest (sum of
  squared bin counts), searched coarse then fine with a parabolic peak fit. Unlike a
  minimum-area rectangle this works the same on vertical columns: the profile is
  taken across rows *and* across columns.
* Writing direction in the stored image (rows or columns) is whichever profile
  stands out more, judged on character-sized blobs only (frames and rules would
  favour both). This alone cannot tell a horizontal page from a vertical page turned
  by 90 degrees, so orientation and writing mode are decided together among the four
  (rotation, mode) pairs the line direction allows. The deciding evidence is a trial
  read: a block of two or three body lines, cut from the full-resolution scan, is
  read by tesseract in both rotations of the more likely writing mode, in one call
  (jpn for horizontal, jpn_vert for vertical); upright text reads at 75-95 mean
  confidence, text on its side or upside down at 0-45. Only when that is not clear
  are the other mode, the other line direction (tables) and tesseract OSD asked
  (OSD sees character shapes and is right, but weakly confident on vertical pages
  and slow: 0.3-1 s of CPU a page). Which side the lines start on (starts align,
  ends are ragged) and mild priors (0 degrees, horizontal writing, portrait paper)
  add small votes. Without a clear answer the page is not turned: a wrong turn does
  more harm to a record than none.
* The analysis scale follows the resolution the content really has: when a file
  stores no resolution (or an impossible one) the size of the characters decides
  (effective_dpi), so a 96 dpi photo or a 2400 dpi strip is analysed and read like
  any page.

Cost on the samples: about 0.3 s of CPU per A4 page here plus about 0.3 s in one
tesseract trial read (most of it loading the model).
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from processors.reading.pages import PreparedPage, SourcePage

# Resolution of the analysis copy; characters of 10.5 pt are ~15 px tall there.
ANALYSIS_DPI = 100.0
# Resolution of the copy used for the last skew refinement and for OSD.
FINE_DPI = 150.0
# Below this |skew| the page is left as scanned (the error of measurement is larger).
NEGLIGIBLE_SKEW_DEG = 0.05
SKEW_RANGE_DEG = 15.0
# Below this profile strength (best angle vs the average angle) a page has no lines
# to measure a skew on; text pages score 1.5-6, photos and maps 1.0-1.4.
MIN_LINE_STRENGTH = 1.4
# Resolution the OCR copy is brought to (when the scan is more than 10 % off it).
OCR_DPI = 300.0
# The OCR copy never exceeds this many pixels (a 30x30 inch page at 300 dpi would).
OCR_MAX_PIXELS = 60_000_000
# The fine analysis copy never exceeds this many pixels.
ANALYSIS_MAX_PIXELS = 8_000_000
# A page with fewer character-sized marks than this is blank (a duplex back, maybe
# with bleed-through or dust).
BLANK_MAX_COMPONENTS = 4
BLANK_MAX_COVERAGE = 0.005
# Trial reads want characters about this tall (pixels).
TRIAL_CHAR_PX = 40.0

_TESS_ENV = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # pages already run one per core


# --------------------------------------------------------------------------------------
# pixels: gray, red dropout, background, ink
# --------------------------------------------------------------------------------------


def red_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of red or vermilion ink (印影, 受付 stamps): red clearly above green and blue.

    Black toner is dark in all three channels and paper (even yellowed paper) has
    red barely above the others, so "R exceeds max(G, B) by 28 levels, and R is not
    dark" catches the seal, including its pale pink edges, and leaves both alone;
    gold frames and orange highlighter, where green stands far above blue, are
    not seal ink either.
    Where a seal overprints black text the pixel stays dark and is kept as text.
    """
    r, g, b = cv2.split(np.ascontiguousarray(rgb))
    redness = cv2.subtract(r, cv2.max(g, b))  # saturates at 0
    # gold and orange (a 表彰状 frame, a yellow marker) have green far above blue;
    # vermilion seal paste has it only a little above
    yellowness = cv2.subtract(g, b)
    return (redness >= 28) & (r >= 90) & (yellowness <= cv2.max(cv2.subtract(r, g) // 2, 25))


def seal_shaped(mask: np.ndarray, page_side: float | None = None) -> np.ndarray:
    """Only the red marks that are shaped like a seal: round or square stamps, not red print.

    A seal (印影, 受付印, 角印) is one compact mark: strokes of a ring or a square with
    characters inside, about 5 to 50 mm across (2% to 25% of an A4 sheet's shorter
    side), about as tall as wide, and strokes on paper rather than a solid field. Red
    printed callouts are lines of text (much longer than tall), red rules are thin, and
    a sepia or red photograph fills its whole box: those stay as they are, so the OCR
    engine still reads red print and a photo is not punched with paper-coloured holes.
    ``page_side`` is the page's shorter side in ``mask`` pixels (default: the mask's own,
    which is right when the mask is the whole page).
    """
    h, w = mask.shape
    side = float(page_side or min(h, w))
    # work on a copy at most ~800 px on its longer side: seals are large, marks merge anyway
    f = min(1.0, 800.0 / max(h, w))
    small = mask.astype(np.uint8)
    if f < 1.0:
        small = cv2.resize(small, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        small = (small > 0).astype(np.uint8)
    s_side = side * f
    # join a seal's ring and characters into one mark (gaps of up to ~1.5 mm)
    k = max(3, int(round(0.007 * s_side)) | 1)
    joined = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    seal = np.zeros_like(small)
    for i in range(1, n):
        x, y, bw, bh, _area = (int(v) for v in stats[i])
        lo, hi = min(bw, bh), max(bw, bh)
        if lo < 0.02 * s_side or hi > 0.25 * s_side or hi > 1.6 * lo:
            continue
        fill = float(small[y:y + bh, x:x + bw].mean())  # red share of the mark's box
        if fill > 0.8:
            continue  # a solid red field (a photo, a filled box), not stamped strokes
        seal[y:y + bh, x:x + bw] = 1  # the whole stamp, characters inside the ring too
    if not seal.any():
        return np.zeros_like(mask, dtype=bool)
    if f < 1.0:
        seal = cv2.resize(seal, (w, h), interpolation=cv2.INTER_NEAREST)
        seal = cv2.dilate(seal, np.ones((3, 3), np.uint8))
    return mask & seal.astype(bool)


def drop_red(rgb: np.ndarray, gray: np.ndarray, page_side: float | None = None) -> np.ndarray:
    """Gray page with the red seals replaced by (about) the paper they were stamped on.

    A seal pixel becomes its brightest channel plus its colourfulness, capped at
    the page's paper tone: pale pink and saturated red both turn into paper, and the
    seal leaves neither a gray ghost nor a white hole for the binariser or the OCR
    engine to read. Only seal-shaped red marks are dropped (seal_shaped): red print
    and photographs keep their pixels. ``page_side``: the page's shorter side in
    ``rgb`` pixels when ``rgb`` is only a patch of it.
    """
    h, w = gray.shape
    if h * w > 4_000_000:
        # find the seal on a half-size copy (it is many millimetres wide) and widen
        # the mask back: a third of the cost of the full-size test, same pixels dropped
        half = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        small_mask = red_mask(half)
        if not small_mask.any():
            return gray
        small_mask = seal_shaped(small_mask, None if page_side is None else page_side / 2)
        if not small_mask.any():
            return gray
        small_mask = cv2.dilate(small_mask.astype(np.uint8), np.ones((3, 3), np.uint8))
        mask = cv2.resize(small_mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        mask = red_mask(rgb)
        if not mask.any():
            return gray
        mask = seal_shaped(mask, page_side)
        if not mask.any():
            return gray
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    sample = gray[:: max(1, gray.shape[0] // 300), :: max(1, gray.shape[1] // 300)]
    paper = int(np.percentile(sample, 90))
    px = rgb[mask].astype(np.int16)
    mx, mn = px.max(axis=1), px.min(axis=1)
    lifted = np.clip(mx + (mx - mn), 0, paper).astype(np.uint8)
    out = gray.copy()
    out[mask] = np.maximum(gray[mask], lifted)
    return out


def page_gray(img: Image.Image, drop_red_ink: bool = True) -> np.ndarray:
    """The page as gray uint8, with red seal ink turned into paper when asked."""
    if img.mode == "1":
        return np.asarray(img.convert("L"))
    if img.mode == "L":
        return np.asarray(img)
    rgb = np.asarray(img.convert("RGB"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return drop_red(rgb, gray) if drop_red_ink else gray


def resize_to_dpi(gray: np.ndarray, dpi: float | tuple[float, float], target_dpi: float) -> tuple[np.ndarray, float]:
    """Scale a page to about ``target_dpi`` (square pixels); returns (image, x factor).

    A non-square scan (200x100 dpi) is made square here so that angles measured on
    the copy are real angles.
    """
    dx, dy = (dpi, dpi) if isinstance(dpi, (int, float)) else dpi
    fx, fy = target_dpi / max(dx, 1.0), target_dpi / max(dy, 1.0)
    if abs(fx - 1.0) < 0.02 and abs(fy - 1.0) < 0.02:
        return gray, 1.0
    h, w = gray.shape[:2]
    nw, nh = max(1, int(round(w * fx))), max(1, int(round(h * fy)))
    interp = cv2.INTER_AREA if fx < 1 else cv2.INTER_CUBIC
    return cv2.resize(gray, (nw, nh), interpolation=interp), nw / w


def estimate_background(gray: np.ndarray, dpi: float) -> np.ndarray:
    """The paper's own tone at every pixel (text removed), for evening out the tone.

    A gray closing (max filter) about 2 mm wide removes the strokes, a median and a
    blur smooth the result. It runs on a ~50 dpi copy, so it is cheap at 300 dpi.
    """
    small, f = resize_to_dpi(gray, dpi, min(dpi, 50.0))
    k = max(5, int(round(2.0 / 25.4 * dpi * f)) | 1)
    closed = cv2.dilate(small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    closed = cv2.medianBlur(closed, 5)
    closed = cv2.GaussianBlur(closed, (0, 0), 3)
    if closed.shape != gray.shape:
        closed = cv2.resize(closed, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    return closed


def normalise_tone(gray: np.ndarray, dpi: float) -> np.ndarray:
    """Divide by the background: paper becomes white everywhere and faded ink regains contrast.

    Where the "background" is itself dark (scanner lid, dark corners) the quotient is
    ~1, so those areas turn white as well, which is what OCR wants.
    """
    bg = estimate_background(gray, dpi)
    norm = cv2.divide(gray, np.maximum(bg, 1), scale=255.0)  # uint8, saturates at 255
    sample = norm[:: max(1, norm.shape[0] // 400), :: max(1, norm.shape[1] // 400)]
    dark = sample[sample < 200]
    if dark.size > 50:
        lo = float(np.percentile(dark, 5))
        if 0 < lo < 120:
            lut = np.clip((np.arange(256) - lo) * 255.0 / (255.0 - lo), 0, 255).astype(np.uint8)
            norm = cv2.LUT(norm, lut)
    return norm


def ink_threshold(ratio: np.ndarray) -> float:
    """The ink/paper cut on the gray-to-background ratio, between 0.5 and 0.75.

    Otsu's split of the pixels that are at all darker than their paper: black toner
    comes out near 0.6 and is cut there, while faint typewriter or faded print (ratio
    0.6-0.7) pulls the cut up to 0.75. Bleed-through and paper texture (ratio above
    0.85) stay paper either way.
    """
    flat = ratio.ravel()
    sample = flat[:: max(1, flat.size // 250_000)]
    dark = sample[sample < 0.97]
    if dark.size < 200:
        return 0.62
    hist, edges = np.histogram(dark, bins=64, range=(0.0, 0.97))
    w = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(w)
    w1 = w0[-1] - w0
    m0 = np.cumsum(w * centres)
    mu0 = m0 / np.maximum(w0, 1e-9)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1e-9)
    between = w0 * w1 * (mu0 - mu1) ** 2
    t = float(edges[int(np.argmax(between)) + 1])
    return float(np.clip(t, 0.5, 0.75))


def ink_mask(gray_small: np.ndarray, dpi: float) -> np.ndarray:
    """Binarise an analysis-size page: ink where clearly darker than the paper around it.

    The cut is on the ratio to the local background (see ink_threshold), not on a gray
    level, so tinted or shadowed paper and faded toner binarise alike, and faint
    bleed-through from the back of the sheet stays paper. Areas whose background is
    dark (scanner background around the sheet) are not paper and carry no ink.
    """
    bg = estimate_background(gray_small, dpi)
    ratio = gray_small.astype(np.float32) / np.maximum(bg.astype(np.float32), 1.0)
    paper = cv2.erode((bg > 110).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    # Large dark areas (the scanner lid around the sheet, holes) are no ink even where
    # the blurred background still looks like paper next to them: no stroke of text
    # is 3 mm wide, so an opening of that size keeps only them.
    k = max(3, int(round(3.0 / 25.4 * dpi)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    lid = cv2.morphologyEx((gray_small < 110).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    if lid.any():
        edge = max(3, k // 2) | 1  # plus the blurred band where the background estimate is still bright
        paper &= ~cv2.dilate(lid, np.ones((edge, edge), np.uint8)).astype(bool)
    return (ratio < ink_threshold(ratio[paper] if paper.any() else ratio)) & paper


@dataclass
class Analysis:
    """The small binarised page every geometric decision is made on."""

    ink: np.ndarray  # bool: all marks kept for skew (text, rules, frames)
    text: np.ndarray  # bool: character-sized marks only
    dpi: float  # resolution of the masks
    char_px: float  # median character size in mask pixels (0 when there is no text)
    components: int  # number of character-sized marks
    coverage: float = 0.0  # share of the page covered by marks other than dust, holes and edges


def clean_components(ink: np.ndarray, dpi: float) -> Analysis:
    """Sort the marks: drop what is not on the paper or not text, keep text and rules.

    Dropped: blobs touching the image edge (scanner edges, shadows, dark corners;
    text never touches the edge), dust under 0.5 mm, punch holes (solid round blobs of
    4-10 mm near an edge) and large solid areas (photos, black bars). Character-sized
    marks (1-15 mm) are also returned on their own, for the writing-direction and
    blank-page decisions where long rules and frames would only mislead.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    empty = np.zeros(ink.shape, bool)
    if n <= 1:
        return Analysis(ink=empty, text=empty.copy(), dpi=dpi, char_px=0.0, components=0, coverage=0.0)
    h_img, w_img = ink.shape
    x, y, w, h, area = (stats[1:, i].astype(np.int64) for i in range(5))
    mm = dpi / 25.4
    touches = (x <= 1) | (y <= 1) | (x + w >= w_img - 1) | (y + h >= h_img - 1)
    dust = (area < max(2, int(0.25 * mm * mm))) | (np.maximum(w, h) < 0.5 * mm)
    fill = area / np.maximum(w * h, 1)
    near_edge = (x < 0.15 * w_img) | (x + w > 0.85 * w_img) | (y < 0.15 * h_img) | (y + h > 0.85 * h_img)
    round_ = np.abs(w - h) < 0.3 * np.maximum(w, h)
    holes = (fill > 0.6) & (w > 3.5 * mm) & (h > 3.5 * mm) & (w < 10 * mm) & (h < 10 * mm) & round_ & near_edge
    blocks = (fill > 0.5) & (w > 25 * mm) & (h > 25 * mm)
    keep = ~(touches | dust | holes | blocks)
    text_like = keep & (h < 15 * mm) & (w < 15 * mm) & (np.maximum(w, h) >= 1.0 * mm)
    lut = np.zeros(n, bool)
    lut[1:] = keep
    kept = lut[labels]
    lut[1:] = text_like
    text = lut[labels]
    char_px = float(np.median(np.maximum(w, h)[text_like])) if text_like.any() else 0.0
    coverage = float(area[~(touches | dust | holes)].sum()) / float(h_img * w_img)
    return Analysis(ink=kept, text=text, dpi=dpi, char_px=char_px, components=int(text_like.sum()),
                    coverage=coverage)


def dark_area_fraction(gray_small: np.ndarray, dpi: float) -> float:
    """Share of the page covered by large dark areas that do not touch its edge.

    ink_mask leaves large dark areas out (they are scanner background as far as
    lines go); inside the sheet they are a photograph, a drawing or a black box, and
    such a page is not blank even without any text.
    """
    k = max(3, int(round(3.0 / 25.4 * dpi)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    dark = cv2.morphologyEx((gray_small < 140).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n <= 1:
        return 0.0
    h, w = dark.shape
    x, y, ww, hh, area = (stats[1:, i] for i in range(5))
    inside = (x > 1) & (y > 1) & (x + ww < w - 1) & (y + hh < h - 1)
    return float(area[inside].sum()) / float(h * w)


def is_blank(analysis: Analysis) -> bool:
    """A page is blank when it carries (almost) no character-sized marks and no picture.

    Duplex backs are often not quite white: bleed-through of the front (too faint to
    pass the ink threshold), dust and specks (too small to count), punch holes and
    the scanner's edge (removed as such). A real page has dozens of characters; a
    photograph or drawing without text covers far more than 0.5 % of the sheet.
    """
    return analysis.components <= BLANK_MAX_COMPONENTS and analysis.coverage < BLANK_MAX_COVERAGE


# --------------------------------------------------------------------------------------
# skew and line direction
# --------------------------------------------------------------------------------------


def projection_scores(ink: np.ndarray, angles: np.ndarray, axis: str, max_points: int = 150_000) -> np.ndarray:
    """Sharpness of the ink's projection profile for each candidate skew angle.

    ``axis`` "rows" projects across text lines that run left-right, "cols" across
    columns that run top-bottom. For an angle theta (degrees, positive = content
    turned counter-clockwise) every ink pixel is projected on the line normal and the
    sum of squared bin counts is taken; it peaks when the lines fall into few bins.
    Projecting pixel coordinates, instead of rotating the image, costs one bincount
    per angle.
    """
    ys, xs = np.nonzero(ink)
    if len(xs) == 0:
        return np.zeros(len(angles))
    if len(xs) > max_points:
        step = len(xs) // max_points + 1
        xs, ys = xs[::step], ys[::step]
    xs = xs.astype(np.float64) - ink.shape[1] / 2
    ys = ys.astype(np.float64) - ink.shape[0] / 2
    span = int(math.hypot(*ink.shape)) + 4
    out = np.empty(len(angles))
    for i, a in enumerate(np.radians(angles)):
        c, s = math.cos(a), math.sin(a)
        p = (ys * c + xs * s if axis == "rows" else xs * c - ys * s) + span / 2
        # linear splatting into the two nearest bins keeps the score smooth in the
        # angle, so that the parabolic peak fit can resolve hundredths of a degree
        lo = np.floor(p)
        frac = p - lo
        lo = lo.astype(np.int64)
        hist = np.bincount(lo, weights=1.0 - frac, minlength=span + 1)
        hist += np.bincount(lo + 1, weights=frac, minlength=span + 1)
        out[i] = float(np.dot(hist, hist))
    return out


def _refine_peak(angles: np.ndarray, scores: np.ndarray) -> float:
    """Angle of the best score, refined by a parabola through it and its neighbours."""
    i = int(np.argmax(scores))
    if 0 < i < len(scores) - 1:
        y0, y1, y2 = scores[i - 1], scores[i], scores[i + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            off = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
            return float(angles[i] + off * (angles[1] - angles[0]))
    return float(angles[i])


@dataclass
class LineStructure:
    axis: str  # "rows": lines run left-right in the stored image; "cols": top-bottom
    skew_deg: float
    strength: dict = field(default_factory=dict)  # axis -> best/median profile sharpness


def line_axis(text: np.ndarray) -> tuple[str, dict, dict]:
    """Rows or columns, from character-sized marks only, over the full skew range.

    Returns (axis, strength per axis, coarse best angle per axis). Strength is the
    best profile sharpness over its median across angles: high when some angle lines
    the characters up, ~1 when no angle does.
    """
    coarse = np.arange(-SKEW_RANGE_DEG, SKEW_RANGE_DEG + 1e-9, 0.5)
    strength, best = {}, {}
    for axis in ("rows", "cols"):
        sc = projection_scores(text, coarse, axis)
        base = float(np.median(sc)) or 1.0
        strength[axis] = float(sc.max() / base) if sc.max() > 0 else 0.0
        best[axis] = _refine_peak(coarse, sc)
    axis = "rows" if strength["rows"] >= strength["cols"] else "cols"
    return axis, strength, best


def fine_skew(ink: np.ndarray, axis: str, around: float, half_width: float = 0.75, step: float = 0.05) -> float:
    """Refine the skew in small steps around a coarse estimate (parabolic peak fit)."""
    angles = np.arange(around - half_width, around + half_width + 1e-9, step)
    return _refine_peak(angles, projection_scores(ink, angles, axis, max_points=400_000))


def find_lines(coarse: Analysis, fine: Analysis | None = None) -> LineStructure:
    """Line direction and skew of a page: coarse search on ``coarse``, refined on ``fine``."""
    axis, strength, best = line_axis(coarse.text if coarse.components >= 8 else coarse.ink)
    # re-centre with all marks (rules help), then refine on the finer copy
    mid = fine_skew(coarse.ink, axis, best[axis], half_width=1.0, step=0.25)
    target = fine.ink if fine is not None else coarse.ink
    skew = fine_skew(target, axis, mid)
    if max(strength.values()) < MIN_LINE_STRENGTH:
        skew = 0.0  # no angle lines anything up (a photo, a drawing): leave it as scanned
    return LineStructure(axis=axis, skew_deg=skew, strength=strength)


def rotate_array(arr: np.ndarray, angle_deg: float, fill: int | tuple = 255, expand: bool = False,
                 interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Rotate clockwise by ``angle_deg`` (the deskew direction) about the centre.

    With ``expand`` the canvas grows so that no corner of the page is cut.
    """
    h, w = arr.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), -angle_deg, 1.0)
    nw, nh = w, h
    if expand:
        c, s = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(math.ceil(w * c + h * s - 1e-6)), int(math.ceil(w * s + h * c - 1e-6))
        m[0, 2] += nw / 2.0 - w / 2.0
        m[1, 2] += nh / 2.0 - h / 2.0
    if arr.dtype == bool:
        out = cv2.warpAffine(arr.astype(np.uint8), m, (nw, nh), flags=cv2.INTER_NEAREST, borderValue=0)
        return out.astype(bool)
    return cv2.warpAffine(arr, m, (nw, nh), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


@dataclass
class Band:
    """One text line (or column) of a deskewed mask: across-axis span and along-axis extent."""

    a: int
    b: int
    start: int
    end: int


def line_bands(text: np.ndarray, axis: str, char_px: float) -> list[Band]:
    """Text lines of a deskewed character mask, as bands across the line direction.

    For "cols" the mask is transposed, so a band's (a, b) are x positions and its
    (start, end) y positions. Bands thinner than half a character or shorter than
    two characters are dropped (stray marks, page numbers' dashes).
    """
    m = text if axis == "rows" else text.T
    if char_px <= 0 or not m.any():
        return []
    on = m.any(axis=1)
    gap = max(1, int(char_px * 0.2))
    on = cv2.dilate(on.astype(np.uint8).reshape(-1, 1), np.ones((gap * 2 + 1, 1), np.uint8)).ravel() > 0
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    bands = []
    for a, b in zip(edges[::2], edges[1::2]):
        a, b = a + gap, b - gap  # undo the bridging margin
        if b - a < 0.5 * char_px:
            continue
        cols = np.flatnonzero(m[a:b].any(axis=0))
        if len(cols) == 0 or cols[-1] - cols[0] < 2 * char_px:
            continue
        bands.append(Band(int(a), int(b), int(cols[0]), int(cols[-1])))
    return bands


def line_start_side(bands: list[Band], char_px: float) -> float:
    """Evidence for which side the lines start on, in [-1, 1].

    +1: lines start at the low-coordinate side (left for rows, top for columns) and
    end ragged at the other; -1: the reverse. Japanese body text fills the measure,
    so only paragraph ends are short and paragraph starts are indented by one
    character: starts cluster, ends spread. Right-aligned header lines (number, date,
    issuer) pull the other way, which is why this is only one small vote.
    """
    long_bands = [bd for bd in bands if bd.end - bd.start >= 4 * char_px]
    if len(long_bands) < 4:
        return 0.0
    starts = np.array([bd.start for bd in long_bands], float)
    ends = np.array([bd.end for bd in long_bands], float)
    tol = 1.6 * char_px
    low_aligned = np.mean(starts - starts.min() <= tol)
    high_aligned = np.mean(ends.max() - ends <= tol)
    return float(np.clip(low_aligned - high_aligned, -1.0, 1.0))


def line_height(bands: list[Band]) -> float:
    """Typical height of a text line (its character size), from the bands."""
    return float(np.median([bd.b - bd.a for bd in bands])) if bands else 0.0


def pick_trial_region(bands: list[Band], text: np.ndarray, axis: str,
                      max_chars: float = 12.0) -> tuple[int, int, int, int] | None:
    """A small block of body text for a trial read: (a, b, start, end) in mask pixels.

    Windows of two or three neighbouring lines of similar, ordinary height, about
    ``max_chars`` characters long, are slid along the lines; the one holding the most
    character ink wins, which favours running text over table cells, headings and
    address blocks. Character size is the line height, which (unlike blob sizes) does
    not shrink for kanji made of several separate strokes.
    """
    if not bands:
        return None
    m = text if axis == "rows" else text.T
    integral = cv2.integral(m.astype(np.uint8))
    typical = line_height(bands)
    length = int(max_chars * typical)
    body = [i for i, bd in enumerate(bands) if 0.6 * typical <= bd.b - bd.a <= 1.6 * typical]
    if not body:
        body = list(range(len(bands)))
    best, best_score = None, -1
    for k, i in enumerate(body):
        group = [bands[i]]
        h0 = bands[i].b - bands[i].a
        for j in body[k + 1 : k + 3]:
            bj = bands[j]
            if bj.a - group[-1].b > 2.0 * typical or not (0.75 * h0 <= bj.b - bj.a <= 1.33 * h0):
                break
            group.append(bj)
        a, b = group[0].a, group[-1].b
        lo, hi = min(g.start for g in group), max(g.end for g in group)
        for x in range(lo, max(lo, hi - length) + 1, max(1, int(typical))):
            x1 = min(m.shape[1], x + length)
            score = integral[b, x1] - integral[a, x1] - integral[b, x] + integral[a, x]
            if score > best_score:
                best, best_score = (a, b, x, x1), score
    if best is None:
        return None
    a, b, x0, x1 = best
    pad = int(0.4 * typical)
    return a - pad, b + pad, x0 - pad, x1 + pad


def candidates_for_axis(axis: str) -> list[tuple[int, str]]:
    """The (rotation_deg, writing_mode) pairs a stored line direction allows.

    Horizontal writing shows rows at 0/180 and columns at 90/270; vertical writing
    the other way round. So rows in the stored image may be a horizontal page
    upright or upside down, or a vertical page turned by a quarter.
    """
    if axis == "rows":
        return [(0, "horizontal"), (180, "horizontal"), (90, "vertical"), (270, "vertical")]
    return [(0, "vertical"), (180, "vertical"), (90, "horizontal"), (270, "horizontal")]


def starts_low_side(rotation_deg: int, writing_mode: str) -> bool:
    """Whether lines start at the low-coordinate side (left or top) of the *stored* image.

    Upright horizontal lines start at the left; upright columns start at the top.
    Turning clockwise by 90 moves the top to the right and the left to the top.
    """
    side = {"horizontal": "left", "vertical": "top"}[writing_mode]
    order = ["top", "right", "bottom", "left"]
    stored = order[(order.index(side) + rotation_deg // 90) % 4]
    return stored in ("left", "top")


@dataclass
class OrientationEvidence:
    axis: str
    stored_size: tuple[int, int]  # (width, height) of the stored image
    start_side: float = 0.0  # line_start_side()
    osd_rotation: int | None = None
    osd_confidence: float = 0.0
    trial: dict = field(default_factory=dict)  # (rotation, mode) -> mean word confidence 0..100
    axis_ratio: float = 0.0  # weaker/stronger line-direction strength: near 1 = ambiguous (tables)
    alt_trial: dict = field(default_factory=dict)  # trial reads along the other line direction
    settled: bool = False  # a trial read gave a clear answer


def prior_score(rotation_deg: int, writing_mode: str, stored_size: tuple[int, int]) -> float:
    """What is common before looking at the characters: upright, horizontal, portrait paper.

    Landscape upright paper is not penalised for vertical writing (表彰状 are
    landscape), only for horizontal writing.
    """
    w, h = stored_size
    s = {0: 1.0, 180: 0.0, 90: 0.3, 270: 0.3}[rotation_deg]
    s += 0.5 if writing_mode == "horizontal" else 0.0
    up_w, up_h = (h, w) if rotation_deg in (90, 270) else (w, h)
    if abs(up_w - up_h) > 0.1 * max(up_w, up_h):
        if up_h > up_w:
            s += 1.0
        elif writing_mode == "vertical":
            s += 0.6
    return s


def other_axis(axis: str) -> str:
    return "cols" if axis == "rows" else "rows"


def trial_vote(conf: float) -> float:
    """Score for a trial read: nothing for garbage (mean confidence under 45), then 0.3 a point.

    Upright text reads at 75-95; characters on their side or upside down, pictures
    and handwriting read at 0-45, and those differences say nothing.
    """
    return 0.3 * max(0.0, conf - 45.0)


def score_orientations(ev: OrientationEvidence) -> dict[tuple[int, str], float]:
    """Combine the evidence into one score per (rotation_deg, writing_mode) candidate.

    Units are roughly tesseract OSD confidence (a log-likelihood margin: 5-20 on
    clean horizontal pages, 1-10 on vertical ones). Priors add up to ~2.5, the line
    start side +-1.5, OSD its confidence (at most 15), and a good trial read up to
    15, so a clean read outweighs everything else. Candidates of the other line
    direction (only when it was trial-read, on ambiguous pages such as tables) pay 3
    for contradicting the profile.
    """
    scores: dict[tuple[int, str], float] = {}
    pool = [(c, 0.0) for c in candidates_for_axis(ev.axis)]
    pool += [(c, -3.0) for c in ev.alt_trial]
    for (rot, mode), penalty in pool:
        s = penalty + prior_score(rot, mode, ev.stored_size)
        on_axis = penalty == 0.0
        if on_axis:
            s += 1.5 * ev.start_side * (1 if starts_low_side(rot, mode) else -1)
        if ev.osd_rotation == rot:
            s += min(max(ev.osd_confidence, 0.0), 15.0)
        trials = ev.trial if on_axis else ev.alt_trial
        if (rot, mode) in trials:
            s += trial_vote(trials[(rot, mode)])
        scores[(rot, mode)] = max(s, scores.get((rot, mode), -1e9))
    return scores


def _png_bytes(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def tesseract_osd(binary: np.ndarray, timeout: float = 30.0, min_characters: int = 50) -> tuple[int, float] | None:
    """Tesseract's orientation guess for a page, in the corpus convention.

    Returns (rotation_deg, confidence) or None when tesseract finds too few
    characters. Tesseract reports "Rotate: r", the clockwise turn that fixes the
    page, so the turn that *made* the stored image is (360 - r) % 360. Costs about
    0.3-1 s of CPU on a 150 dpi A4 page, hence only a fallback here.
    """
    try:
        proc = subprocess.run(
            ["tesseract", "stdin", "stdout", "--psm", "0", "-l", "osd", "-c", f"min_characters_to_try={min_characters}"],
            input=_png_bytes(binary), capture_output=True, timeout=timeout, env=_TESS_ENV, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = proc.stdout.decode("utf-8", "replace")
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    try:
        rotate = int(fields["Rotate"].strip())
        conf = float(fields["Orientation confidence"].strip())
    except (KeyError, ValueError):
        return None
    return (360 - rotate) % 360, conf


def turn_upright(arr_or_img, rotation_deg: int):
    """Undo a clockwise ``rotation_deg`` (turn counter-clockwise), losslessly."""
    k = (rotation_deg // 90) % 4
    if isinstance(arr_or_img, Image.Image):
        op = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}.get(k)
        return arr_or_img.transpose(op) if op is not None else arr_or_img
    return np.ascontiguousarray(np.rot90(arr_or_img, k)) if k else arr_or_img


TESSDATA = "/usr/share/tesseract-ocr/5/tessdata/"
# tesserocr APIs are lent, one caller at a time: a PyTessBaseAPI is not thread-safe,
# and the Prefect flow reads pages in threads (ThreadPoolTaskRunner). Two threads'
# trial reads on one shared API were the SIGSEGV of issue 8 (30-page TIFF,
# cardinal.pdf). Idle APIs are kept for the next caller (loading jpn costs ~0.16 s),
# so there are never more of them than pages read at once.
_TESS_LOCK = threading.Lock()
_TESS_IDLE: dict[tuple[str, str], list] = {}


@contextmanager
def _lent_tesseract(lang: str, psm: str):
    """A tesserocr API for (lang, psm) that no other thread uses until the block ends."""
    import tesserocr

    key = (lang, psm)
    with _TESS_LOCK:
        idle = _TESS_IDLE.setdefault(key, [])
        api = idle.pop() if idle else None
    if api is None:
        api = tesserocr.PyTessBaseAPI(path=TESSDATA, lang=lang, psm=int(psm))
    try:
        yield api
    finally:
        with _TESS_LOCK:
            _TESS_IDLE[key].append(api)


def _tesseract_words(image: np.ndarray, lang: str, psm: str) -> list[tuple[tuple[int, int, int, int], float, str]]:
    """(box, confidence, text) of every word tesseract reads in `image`.

    Through tesserocr, whose API keeps the language model loaded in this process: a
    trial read is on every page, and loading jpn for each one as a fresh tesseract
    process cost about 0.16 s of the 0.25 s the read takes.
    """
    import tesserocr

    with _lent_tesseract(lang, psm) as api:
        return _words_of(api, image, tesserocr)


def _words_of(api, image: np.ndarray, tesserocr) -> list[tuple[tuple[int, int, int, int], float, str]]:
    """Recognise `image` with an API the caller holds alone, and list its words."""
    api.SetImage(Image.fromarray(image))
    api.Recognize()
    words = []
    level = tesserocr.RIL.WORD
    iterator = api.GetIterator()
    if iterator is None:
        return words
    for word in tesserocr.iterate_level(iterator, level):
        try:
            text = (word.GetUTF8Text(level) or "").strip()
        except RuntimeError:  # tesserocr raises for a word with no text
            continue
        box = word.BoundingBox(level)
        if not text or box is None:
            continue
        x0, y0, x1, y1 = box
        words.append(((x0, y0, x1 - x0, y1 - y0), float(word.Confidence(level)), text))
    return words


def trial_read(crop: np.ndarray, pair: list[tuple[int, str]]) -> dict[tuple[int, str], float]:
    """Read one crop in two readings of the same writing mode with one tesseract read.

    The crop (stored orientation, deskewed) is turned upright for each candidate and
    the two views are put side by side (stacked for horizontal, abreast for vertical
    writing) in one image; each word's confidence is credited to the view it lies
    in. Returns the mean word confidence (0-100, weighted by characters) per
    candidate. One call instead of two halves the cost of loading the model.
    """
    mode = pair[0][1]
    views = [turn_upright(crop, rot) for rot, _m in pair]
    gap = max(20, int(0.06 * max(v.shape[0] for v in views)))
    if mode == "horizontal":
        width = max(v.shape[1] for v in views)
        parts, offsets, pos = [], [], 0
        for v in views:
            pad = np.full((v.shape[0], width - v.shape[1]), 255, np.uint8)
            parts += [np.hstack([v, pad]), np.full((gap, width), 255, np.uint8)]
            offsets.append((pos, pos + v.shape[0]))
            pos += v.shape[0] + gap
        sheet = np.vstack(parts)
        lang, psm, coord = "jpn", "6", "y"
    else:
        height = max(v.shape[0] for v in views)
        parts, offsets, pos = [], [], 0
        for v in views:
            pad = np.full((height - v.shape[0], v.shape[1]), 255, np.uint8)
            parts += [np.vstack([v, pad]), np.full((height, gap), 255, np.uint8)]
            offsets.append((pos, pos + v.shape[1]))
            pos += v.shape[1] + gap
        sheet = np.hstack(parts)
        lang, psm, coord = "jpn_vert", "5", "x"
    sheet = cv2.copyMakeBorder(sheet, gap, gap, gap, gap, cv2.BORDER_CONSTANT, value=255)
    sums = [[0.0, 0.0] for _ in pair]
    for (left, top, w, h), conf, text in _tesseract_words(sheet, lang, psm):
        centre = (left + w / 2 if coord == "x" else top + h / 2) - gap
        n = len(text)
        for k, (lo, hi) in enumerate(offsets):
            if lo - gap / 2 <= centre < hi + gap / 2:
                sums[k][0] += conf * n
                sums[k][1] += n
                break
    return {cand: (s / n if n else 0.0) for cand, (s, n) in zip(pair, sums)}


@dataclass
class Orientation:
    rotation_deg: int
    writing_mode: str
    evidence: OrientationEvidence
    scores: dict


# A trial read settles the question when its best reading is at least this good and
# this far ahead of the other reading; or, a little less good, but overwhelmingly
# ahead. Wrong readings came out at 0-36 on every sample page in all four turns
# (bench/prepare_eval.py --turns 90,180,270), right ones at 63-95: an upside-down
# vertical 辞令 read 63 against 4 and must count as settled.
TRIAL_GOOD = 70.0
TRIAL_MARGIN = 15.0
TRIAL_FAIR = 55.0
TRIAL_OVERWHELMING_MARGIN = 40.0


# OSD alone (no clear trial read) may turn a page only with at least this confidence.
OSD_TRUST = 5.0


def _clear(confs: dict, pair: list[tuple[int, str]]) -> bool:
    ranked = sorted((confs[c] for c in pair), reverse=True)
    best, margin = ranked[0], ranked[0] - ranked[1]
    return (best >= TRIAL_GOOD and margin >= TRIAL_MARGIN) or (best >= TRIAL_FAIR and margin >= TRIAL_OVERWHELMING_MARGIN)


def decide_orientation(
    ev: OrientationEvidence,
    crop: np.ndarray | None,
    osd_image: np.ndarray | Callable[[], np.ndarray] | None,
    use_trial: bool = True,
    alt_crop: Callable[[], np.ndarray | None] | None = None,
) -> Orientation:
    """Rotation and writing mode, decided together (see the module docstring).

    1. The two writing modes the line direction allows are tried in order of their
       priors; for each, one trial read of ``crop`` compares its two rotations. A
       clear winner ends the search, usually after the first call.
    2. When columns won only narrowly (tables: rows and columns both line up) and
       the reads were unclear, a crop along the rows is read upright as horizontal
       text too. Only in that direction: vertical writing needs positive evidence,
       while tables and mixed layouts are horizontal in practice (a trial read
       cannot tell writing direction itself, only whether characters stand upright).
    3. Still unclear (handwriting, pictures, few characters): OSD on ``osd_image``.
    4. Do no harm: without a clear trial read, the page is only turned when OSD is
       confident (OSD_TRUST) and agrees with the combined score; otherwise it stays
       as scanned, with the writing mode its line direction gives at 0 degrees.
    """
    cands = candidates_for_axis(ev.axis)
    by_mode: dict[str, list[tuple[int, str]]] = {}
    for c in cands:
        by_mode.setdefault(c[1], []).append(c)
    mode_order = sorted(
        by_mode, key=lambda m: -max(prior_score(r, m, ev.stored_size) for r, _ in by_mode[m])
    )
    if use_trial and crop is not None and crop.size:
        for mode in mode_order:
            ev.trial.update(trial_read(crop, by_mode[mode]))
            if _clear(ev.trial, by_mode[mode]):
                ev.settled = True
                break
        if not ev.settled and alt_crop is not None and ev.axis == "cols" and ev.axis_ratio > 0.5:
            alt = alt_crop()
            if alt is not None and alt.size:
                alt_axis = other_axis(ev.axis)
                mode0 = "horizontal" if alt_axis == "rows" else "vertical"
                pair = [(0, mode0), (180, mode0)]
                ev.alt_trial = trial_read(alt, pair)
                ev.settled = _clear(ev.alt_trial, pair)
    if not ev.settled and osd_image is not None:
        osd = tesseract_osd(osd_image() if callable(osd_image) else osd_image)
        if osd is not None:
            ev.osd_rotation, ev.osd_confidence = osd
    scores = score_orientations(ev)
    rot, mode = max(scores, key=scores.get)
    if not ev.settled and not (ev.osd_confidence >= OSD_TRUST and ev.osd_rotation == rot):
        rot, mode = max((c for c in scores if c[0] == 0), key=scores.get)
    return Orientation(rotation_deg=rot, writing_mode=mode, evidence=ev, scores=scores)


# --------------------------------------------------------------------------------------
# resolution the content really has
# --------------------------------------------------------------------------------------

# Body text is about 3.5 mm tall on Japanese administrative paper (10.5-12 pt).
BODY_CHAR_MM = 3.5


def content_dpi(arr: np.ndarray) -> float | None:
    """Resolution implied by the size of the characters, or None without enough of them.

    The upper quartile of mark sizes (kanji are often several marks, so the median
    is a part of a character) is taken as the body character height and assumed to
    be BODY_CHAR_MM. Right within about 30 % on the samples, which is all the
    analysis scale and the OCR copy need.
    """
    h, w = arr.shape[:2]
    f = min(1.0, 2000.0 / max(h, w))
    small = cv2.resize(arr, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA) if f < 1 else arr
    if small.ndim == 3:
        small = drop_red(small, cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    nominal = max(small.shape[:2]) / 11.69  # as if the sheet were A4, for the background kernel
    ink = ink_mask(small, nominal)
    _n, _lab, st, _c = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    x, y, ww, hh, area = (st[1:, i] for i in range(5))
    H, W = ink.shape
    ok = ((x > 1) & (y > 1) & (x + ww < W - 1) & (y + hh < H - 1) & (np.maximum(ww, hh) >= 3)
          & (np.maximum(ww, hh) <= 0.08 * max(H, W)) & (area >= 6))
    if ok.sum() < 20:
        return None
    char_px = float(np.percentile(np.maximum(ww, hh)[ok], 75)) / f
    return char_px / (BODY_CHAR_MM / 25.4)


def effective_dpi(page: SourcePage, arr: np.ndarray) -> float:
    """The resolution to analyse and OCR a page at: the stored one unless it cannot be right.

    A stored resolution is used when it is measured (not the loader's default) and
    gives a plausible sheet (100-1200 dpi, long side 2.5-30 inches). Otherwise (no
    resolution in the file, a 2400 dpi strip, a 10 dpi poster) the characters' size
    decides. This only steers the analysis scale and the OCR copy; the archive page
    keeps the loader's resolution.
    """
    dpi = float(page.dpi[0])
    long_in = max(arr.shape[:2]) / max(dpi, 1e-6)
    if not page.dpi_assumed and 100 <= dpi <= 1200 and 2.5 <= long_in <= 30:
        return dpi
    est = content_dpi(arr)
    if est is None:
        return float(np.clip(dpi, 72, 600))
    return float(np.clip(est, 60, 600))


# --------------------------------------------------------------------------------------
# the two output images
# --------------------------------------------------------------------------------------


def page_array(img: Image.Image) -> np.ndarray:
    """The page's pixels as uint8: 2-D for "1" (0/255) and "L", 3-D for "RGB".

    Converting a PIL image to numpy copies every pixel, so a page is converted once
    and the array is passed along.
    """
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * np.uint8(255)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img)


def straighten(arr: np.ndarray, rotation_deg: int, skew_deg: float, bilevel: bool = False) -> np.ndarray:
    """Undo the quarter turn (lossless) and the skew (rotate clockwise, canvas grown, white corners).

    Bilinear interpolation, as Leptonica (and so OCRmyPDF) rotates scans: at 200-400
    dpi it is indistinguishable from bicubic and half the cost. Bilevel pages are
    rotated as gray and thresholded again at mid-gray, which keeps stroke edges
    smooth instead of the staircase a nearest-neighbour rotation of 1-bit pixels leaves.
    """
    out = turn_upright(arr, rotation_deg)
    if abs(skew_deg) >= NEGLIGIBLE_SKEW_DEG:
        fill = (255, 255, 255) if out.ndim == 3 else 255
        out = rotate_array(out, skew_deg, fill=fill, expand=True, interpolation=cv2.INTER_LINEAR)
        if bilevel:
            out = np.where(out >= 128, 255, 0).astype(np.uint8)
    return out


def to_image(arr: np.ndarray, mode: str) -> Image.Image:
    """Back to a PIL image in the scan's own mode ("1", "L" or "RGB")."""
    if mode == "1":
        return Image.fromarray(arr >= 128)  # bool array -> mode "1"
    return Image.fromarray(arr, "RGB" if arr.ndim == 3 else "L")


def deskew_image(img: Image.Image, skew_deg: float) -> Image.Image:
    """Rotate a page clockwise by ``skew_deg``, keeping its colour mode, with white corners and nothing cut."""
    return to_image(straighten(page_array(img), 0, skew_deg, bilevel=img.mode == "1"), img.mode)


def noise_level(gray: np.ndarray) -> float:
    """Robust estimate of pixel noise (gray levels) from a central crop."""
    h, w = gray.shape
    crop = gray[h // 3 : h // 3 + 512, w // 3 : w // 3 + 512].astype(np.float32)
    if crop.size == 0:
        return 0.0
    resid = crop - cv2.GaussianBlur(crop, (0, 0), 1.5)
    return float(1.4826 * np.median(np.abs(resid - np.median(resid))))


def make_ocr_image(archive: Image.Image | np.ndarray, dpi: float, bilevel: bool | None = None) -> tuple[np.ndarray, float]:
    """The copy the OCR engine reads: gray, seals dropped, tone evened, denoised, at OCR_DPI.

    ``archive`` is the archive page (PIL image, or its page_array) and ``dpi`` the
    resolution its content really has (effective_dpi). The copy is always brought to
    about OCR_DPI (300), so the engine can be told 300 dpi whatever the scan was.
    Returns (image, ocr_scale) with ocr_scale = OCR pixels per archive pixel, so that
    word boxes can be mapped back onto the archive page. Bilevel scans are only
    scaled: evening the tone of black-and-white pixels would only cost time.
    """
    if isinstance(archive, Image.Image):
        bilevel = archive.mode == "1"
        archive = page_array(archive)
    if archive.ndim == 3:
        gray = drop_red(archive, cv2.cvtColor(archive, cv2.COLOR_RGB2GRAY))
    else:
        gray = archive
    if not bilevel:
        gray = normalise_tone(gray, dpi)
        if noise_level(gray) > 3.0:
            gray = cv2.medianBlur(gray, 3)
    scale = 1.0
    if abs(dpi - OCR_DPI) > 0.1 * OCR_DPI:
        h, w = gray.shape
        scale = float(np.clip(OCR_DPI / dpi, 0.1, 4.0))
        scale = min(scale, math.sqrt(OCR_MAX_PIXELS / max(h * w, 1)))
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        gray = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        scale = nw / w
    return np.ascontiguousarray(gray), scale


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------


@dataclass
class Geometry:
    rotation_deg: int
    skew_deg: float
    writing_mode: str
    blank: bool
    effective_dpi: float = 0.0  # resolution the content was analysed at (see effective_dpi)
    orientation: Orientation | None = None
    lines: LineStructure | None = None


def analysis_gray(arr: np.ndarray, dpi: tuple[float, float], target_dpi: float) -> tuple[np.ndarray, float]:
    """Gray copy of a page array at ``target_dpi`` with red ink dropped; returns (gray, dpi).

    The page is shrunk *before* the colour work, so a 300 dpi colour scan costs one
    resize and a few small conversions, not a full-size colour conversion.
    """
    small, f = resize_to_dpi(arr, dpi, target_dpi)
    if small.ndim == 3:
        small = drop_red(small, cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    return small, dpi[0] * f


def trial_crop(
    arr: np.ndarray,
    rect: tuple[int, int, int, int],
    skew_deg: float,
    analysis_shape: tuple[int, int],
    char_px: float,
) -> np.ndarray:
    """Cut a block of text from the full-resolution scan, deskewed, toned and sized for tesseract.

    ``rect`` is (x0, y0, x1, y1) in the deskewed analysis mask of shape
    ``analysis_shape``; its centre is mapped back into the stored scan, a patch
    large enough for any rotation is cut there and straightened on its own, so the
    full page is never rotated for this.
    """
    H, W = analysis_shape
    img_h, img_w = arr.shape[:2]
    sx, sy = img_w / W, img_h / H
    x0, y0, x1, y1 = rect
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    back = cv2.getRotationMatrix2D((W / 2.0, H / 2.0), skew_deg, 1.0)  # undo the deskew
    xs, ys = back @ np.array([cx, cy, 1.0])
    X, Y = xs * sx, ys * sy
    rw, rh = (x1 - x0) * sx, (y1 - y0) * sy
    r = int(math.ceil(math.hypot(rw, rh) / 2.0)) + 4
    bx0, by0 = int(max(0, X - r)), int(max(0, Y - r))
    bx1, by1 = int(min(img_w, X + r)), int(min(img_h, Y + r))
    if bx1 - bx0 < 8 or by1 - by0 < 8:
        return np.zeros((0, 0), np.uint8)
    patch = arr[by0:by1, bx0:bx1]
    if patch.ndim == 3:
        patch = drop_red(patch, cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2GRAY), page_side=min(img_h, img_w))
    px, py = X - bx0, Y - by0
    m = cv2.getRotationMatrix2D((px, py), -skew_deg, 1.0)
    patch = cv2.warpAffine(np.ascontiguousarray(patch), m, (patch.shape[1], patch.shape[0]),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cut = patch[int(max(0, py - rh / 2)) : int(py + rh / 2), int(max(0, px - rw / 2)) : int(px + rw / 2)]
    if cut.size == 0:
        return cut
    full_char = max(char_px * sx, 1.0)
    cut = normalise_tone(cut, ANALYSIS_DPI * sx)
    factor = TRIAL_CHAR_PX / full_char
    if abs(factor - 1) > 0.1:
        cut = cv2.resize(cut, (max(1, int(cut.shape[1] * factor)), max(1, int(cut.shape[0] * factor))),
                         interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    return cut


def analyse_geometry(
    page: SourcePage, *, use_trial: bool = True, use_osd: bool = True, arr: np.ndarray | None = None
) -> Geometry:
    """Blankness, skew, rotation and writing mode of a stored page (no output images made)."""
    if arr is None:
        arr = page_array(page.image)
    eff = effective_dpi(page, arr)
    dpi_xy = (eff, eff * page.dpi[1] / page.dpi[0])  # keeps a non-square scan's aspect
    target = min(FINE_DPI, eff * math.sqrt(ANALYSIS_MAX_PIXELS / max(arr.shape[0] * arr.shape[1], 1)))
    fine_gray, fine_dpi = analysis_gray(arr, dpi_xy, target)
    coarse_gray, f = resize_to_dpi(fine_gray, fine_dpi, min(ANALYSIS_DPI, fine_dpi))
    coarse = clean_components(ink_mask(coarse_gray, fine_dpi * f), fine_dpi * f)
    if is_blank(coarse) and dark_area_fraction(coarse_gray, fine_dpi * f) < BLANK_MAX_COVERAGE:
        return Geometry(rotation_deg=0, skew_deg=0.0, writing_mode="horizontal", blank=True, effective_dpi=eff)
    fine = clean_components(ink_mask(fine_gray, fine_dpi), fine_dpi)
    lines = find_lines(coarse, fine)
    text = rotate_array(coarse.text, lines.skew_deg)
    bands = line_bands(text, lines.axis, coarse.char_px)
    strengths = sorted(lines.strength.values())
    ev = OrientationEvidence(axis=lines.axis, stored_size=(arr.shape[1], arr.shape[0]),
                             start_side=line_start_side(bands, coarse.char_px),
                             axis_ratio=strengths[0] / strengths[1] if strengths[1] > 0 else 1.0)
    crop = None
    region = pick_trial_region(bands, text, lines.axis)
    if region is not None:
        a, b, s0, s1 = region
        rect = (s0, a, s1, b) if lines.axis == "rows" else (a, s0, b, s1)
        crop = trial_crop(arr, rect, lines.skew_deg, text.shape, line_height(bands))

    def alt_crop() -> np.ndarray | None:  # only made for ambiguous pages
        alt_axis = other_axis(lines.axis)
        alt_bands = line_bands(text, alt_axis, coarse.char_px)
        alt_region = pick_trial_region(alt_bands, text, alt_axis)
        if alt_region is None:
            return None
        a, b, s0, s1 = alt_region
        rect = (s0, a, s1, b) if alt_axis == "rows" else (a, s0, b, s1)
        return trial_crop(arr, rect, lines.skew_deg, text.shape, line_height(alt_bands))

    def osd_image() -> np.ndarray:  # only made if OSD is asked
        norm = rotate_array(normalise_tone(fine_gray, fine_dpi), lines.skew_deg, fill=255)
        return np.where(norm < 140, 0, 255).astype(np.uint8)

    orient = decide_orientation(ev, crop, osd_image if use_osd else None, use_trial=use_trial, alt_crop=alt_crop)
    return Geometry(
        rotation_deg=orient.rotation_deg,
        skew_deg=round(lines.skew_deg, 2),
        writing_mode=orient.writing_mode,
        blank=False,
        effective_dpi=eff,
        orientation=orient,
        lines=lines,
    )


def prepare_page(page: SourcePage) -> PreparedPage:
    """Turn one stored page upright and straight, and make its OCR copy.

    The archive image keeps the scan's colour mode; when the page needs no quarter
    turn and its skew is below 0.05 degrees it is the scan itself (and keeps the
    scan's JPEG stream for the archive PDF). Blank pages are kept as scanned and get
    only a plain gray OCR copy, since they are not read.
    """
    arr = page_array(page.image)
    geo = analyse_geometry(page, arr=arr)
    dpi_x, dpi_y = page.dpi
    if geo.rotation_deg in (90, 270):
        dpi_x, dpi_y = dpi_y, dpi_x
    dpi = float(dpi_x)
    eff = geo.effective_dpi * (dpi_x / page.dpi[0])
    bilevel = page.image.mode == "1"
    if geo.rotation_deg == 0 and abs(geo.skew_deg) < NEGLIGIBLE_SKEW_DEG:
        archive, archive_arr, archive_jpeg = page.image, arr, page.jpeg_bytes
    else:
        archive_arr = straighten(arr, geo.rotation_deg, geo.skew_deg, bilevel=bilevel)
        archive, archive_jpeg = to_image(archive_arr, page.image.mode), None
    if geo.blank:
        # never read (OCR would only invent text from bleed-through): a plain gray copy
        ocr_image = cv2.cvtColor(archive_arr, cv2.COLOR_RGB2GRAY) if archive_arr.ndim == 3 else archive_arr
        ocr_image, ocr_scale = np.ascontiguousarray(ocr_image), 1.0
    else:
        ocr_image, ocr_scale = make_ocr_image(archive_arr, eff, bilevel=bilevel)
    return PreparedPage(
        index=page.index,
        archive_image=archive,
        ocr_image=ocr_image,
        ocr_scale=ocr_scale,
        dpi=int(round(dpi)),
        rotation_deg=geo.rotation_deg,
        skew_deg=geo.skew_deg,
        writing_mode=geo.writing_mode,
        blank=geo.blank,
        archive_jpeg=archive_jpeg,
        source_encoding=page.encoding,
    )
