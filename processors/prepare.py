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
  (rotation, mode) pairs the line direction allows, from: tesseract OSD (character
  shapes; right but weakly confident on vertical pages), which side the lines start
  on (starts align, ends are ragged), mild priors (0 degrees, horizontal writing,
  portrait paper are the common cases), and, only when those leave the top two close,
  a trial read of a small crop in each of the two readings.
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from processors.pages import PreparedPage, SourcePage

# Resolution of the analysis copy; characters of 10.5 pt are ~15 px tall there.
ANALYSIS_DPI = 100.0
# Resolution of the copy used for the last skew refinement and for OSD.
FINE_DPI = 150.0
# Below this |skew| the page is left as scanned (the error of measurement is larger).
NEGLIGIBLE_SKEW_DEG = 0.05
SKEW_RANGE_DEG = 15.0
# Resolution the OCR copy is brought to when the scan is far from it.
OCR_DPI = 300.0
# A page with fewer character-sized marks than this is blank (a duplex back, maybe
# with bleed-through or dust).
BLANK_MAX_COMPONENTS = 4
# The orientation decision asks for a trial read when its top two are this close.
TRIAL_READ_MARGIN = 2.5

_TESS_ENV = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # pages already run one per core


# --------------------------------------------------------------------------------------
# pixels: gray, red dropout, background, ink
# --------------------------------------------------------------------------------------


def red_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of red/vermilion ink (印影, 受付 stamps): a red hue with real saturation.

    Black toner and paper are both unsaturated, so a hue window around red plus a
    saturation floor separates the seal from both. Where the seal overlaps black text
    the pixel stays dark and unsaturated and is therefore kept as text.
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    red_hue = (h <= 12) | (h >= 160)  # OpenCV hue is 0..179; red wraps around 0
    return red_hue & (s >= 60) & (v >= 70)


def page_gray(img: Image.Image, drop_red: bool = True) -> np.ndarray:
    """The page as gray uint8, with red seal ink turned into paper when asked.

    Red ink is replaced by the maximum of the pixel's channels (what the paper looks
    like under a red filter) rather than by pure white, so the background stays
    smooth for the tone normalisation that follows.
    """
    if img.mode == "1":
        return np.asarray(img.convert("L"))
    if img.mode == "L":
        return np.asarray(img)
    rgb = np.asarray(img.convert("RGB"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if drop_red:
        mask = red_mask(rgb)
        if mask.any():
            mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            gray[mask] = rgb.max(axis=2)[mask]
    return gray


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


def ink_mask(gray_small: np.ndarray, dpi: float) -> np.ndarray:
    """Binarise an analysis-size page: ink where clearly darker than the paper around it.

    The threshold is a ratio to the local background (0.62), not a gray level, so that
    tinted or shadowed paper and faded toner binarise alike; faint bleed-through from
    the back of the sheet (a few percent darker) stays paper. Areas whose background
    is dark (scanner background around the sheet) are not paper and carry no ink.
    """
    bg = estimate_background(gray_small, dpi)
    ratio = gray_small.astype(np.float32) / np.maximum(bg.astype(np.float32), 1.0)
    paper = cv2.erode((bg > 110).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return (ratio < 0.62) & paper


@dataclass
class Analysis:
    """The small binarised page every geometric decision is made on."""

    ink: np.ndarray  # bool: all marks kept for skew (text, rules, frames)
    text: np.ndarray  # bool: character-sized marks only
    dpi: float  # resolution of the masks
    char_px: float  # median character size in mask pixels (0 when there is no text)
    components: int  # number of character-sized marks


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
        return Analysis(ink=empty, text=empty.copy(), dpi=dpi, char_px=0.0, components=0)
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
    return Analysis(ink=kept, text=text, dpi=dpi, char_px=char_px, components=int(text_like.sum()))


def analyse(gray: np.ndarray, dpi: float | tuple[float, float], target_dpi: float = ANALYSIS_DPI) -> Analysis:
    """Binarise and clean a gray page at ``target_dpi`` (see ink_mask, clean_components)."""
    small, f = resize_to_dpi(gray, dpi, target_dpi)
    dx = dpi if isinstance(dpi, (int, float)) else dpi[0]
    return clean_components(ink_mask(small, dx * f), dx * f)


def is_blank(analysis: Analysis) -> bool:
    """A page is blank when it carries (almost) no character-sized marks.

    Duplex backs are often not quite white: bleed-through of the front (too faint to
    pass the ink threshold), dust and specks (too small to count), punch holes and
    the scanner's edge (removed as such). A real page has dozens of characters.
    """
    return analysis.components <= BLANK_MAX_COMPONENTS


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
        p = ys * c + xs * s if axis == "rows" else xs * c - ys * s
        hist = np.bincount((p + span / 2).astype(np.int64), minlength=span).astype(np.float64)
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


def line_start_side(text: np.ndarray, axis: str, char_px: float) -> float:
    """Evidence for which side the lines start on, in [-1, 1] (deskewed mask).

    +1: lines start at the low-coordinate side (left for rows, top for columns) and
    end ragged at the other; -1: the reverse. Japanese body text fills the measure,
    so only paragraph ends are short and only paragraph starts are indented by one
    character: starts cluster tightly, ends spread out. Right-aligned header lines
    (number, date, issuer) pull the other way, which is why this is one vote only.
    """
    m = text if axis == "rows" else text.T
    if char_px <= 0 or not m.any():
        return 0.0
    prof = m.sum(axis=1)
    on = prof > 0
    # line bands: runs of rows with ink, bridged over gaps < 1/4 character
    gap = max(1, int(char_px * 0.25))
    on = cv2.dilate(on.astype(np.uint8).reshape(-1, 1), np.ones((gap * 2 + 1, 1), np.uint8)).ravel() > 0
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    starts, ends = [], []
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a < 0.5 * char_px:
            continue
        cols = np.flatnonzero(m[a:b].any(axis=0))
        if len(cols) == 0 or cols[-1] - cols[0] < 4 * char_px:
            continue
        starts.append(cols[0])
        ends.append(cols[-1])
    if len(starts) < 4:
        return 0.0
    starts, ends = np.array(starts, float), np.array(ends, float)
    tol = 1.6 * char_px
    left_aligned = np.mean(np.abs(starts - np.min(starts)) <= tol)
    right_aligned = np.mean(np.abs(ends - np.max(ends)) <= tol)
    return float(np.clip(left_aligned - right_aligned, -1.0, 1.0))


# --------------------------------------------------------------------------------------
# orientation and writing mode, decided together
# --------------------------------------------------------------------------------------


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
    """Whether lines start at the low-coordinate side of the *stored* image.

    Upright horizontal lines start at the left; upright columns start at the top.
    Turning clockwise by 90 moves the top to the right and the left to the top.
    """
    # direction of line start in the upright page: left (horizontal) or top (vertical)
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
    trial: dict = field(default_factory=dict)  # (rotation, mode) -> mean confidence 0..100


def score_orientations(ev: OrientationEvidence) -> dict[tuple[int, str], float]:
    """Combine the evidence into a score per (rotation_deg, writing_mode) candidate.

    Weights are in "OSD confidence units": tesseract's orientation confidence is a
    log-likelihood margin, typically 5-20 on clean horizontal pages and 2-10 on
    vertical ones, so a confident OSD decides on its own and a weak one is weighed
    against layout and priors. Priors are small: 0 degrees (+1.0), horizontal
    writing (+0.5), upright portrait paper (+0.5). A trial read outweighs the rest.
    """
    w, h = ev.stored_size
    scores: dict[tuple[int, str], float] = {}
    for rot, mode in candidates_for_axis(ev.axis):
        s = 0.0
        s += {0: 1.0, 180: 0.0, 90: 0.3, 270: 0.3}[rot]
        s += 0.5 if mode == "horizontal" else 0.0
        up_w, up_h = (h, w) if rot in (90, 270) else (w, h)
        if abs(up_w - up_h) > 0.1 * max(up_w, up_h):
            s += 0.5 if up_h > up_w else 0.0
        s += 1.5 * ev.start_side * (1 if starts_low_side(rot, mode) else -1)
        if ev.osd_rotation == rot:
            s += min(max(ev.osd_confidence, 0.0), 15.0)
        if (rot, mode) in ev.trial:
            s += 0.3 * ev.trial[(rot, mode)]
        scores[(rot, mode)] = s
    return scores


def _png_bytes(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def tesseract_osd(binary: np.ndarray, timeout: float = 20.0) -> tuple[int, float] | None:
    """Tesseract's orientation guess for a page, in the corpus convention.

    Returns (rotation_deg, confidence) or None when tesseract finds too few
    characters. Tesseract reports "Rotate: r", the clockwise turn that fixes the page,
    so the turn that *made* the stored image is (360 - r) % 360.
    """
    try:
        proc = subprocess.run(
            ["tesseract", "stdin", "stdout", "--psm", "0", "-l", "osd"],
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


def trial_read_confidence(gray_upright: np.ndarray, writing_mode: str, timeout: float = 30.0) -> float:
    """Mean word confidence (0-100, weighted by length) of a quick read of an upright crop.

    Upright characters read with confidences around 80-95; characters lying on their
    side or upside down read as garbage with low confidence.
    """
    lang, psm = ("jpn", "6") if writing_mode == "horizontal" else ("jpn_vert", "5")
    try:
        proc = subprocess.run(
            ["tesseract", "stdin", "stdout", "--psm", psm, "-l", lang, "tsv"],
            input=_png_bytes(gray_upright), capture_output=True, timeout=timeout, env=_TESS_ENV, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0.0
    total = weight = 0.0
    for line in proc.stdout.decode("utf-8", "replace").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 12 or not parts[11].strip():
            continue
        try:
            conf = float(parts[10])
        except ValueError:
            continue
        if conf < 0:
            continue
        n = len(parts[11].strip())
        total += conf * n
        weight += n
    return total / weight if weight else 0.0


def turn_upright(arr_or_img, rotation_deg: int):
    """Undo a clockwise ``rotation_deg`` (turn counter-clockwise), losslessly."""
    k = (rotation_deg // 90) % 4
    if isinstance(arr_or_img, Image.Image):
        op = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}.get(k)
        return arr_or_img.transpose(op) if op is not None else arr_or_img
    return np.ascontiguousarray(np.rot90(arr_or_img, k)) if k else arr_or_img


def _text_crop(gray: np.ndarray, text: np.ndarray, scale: float, max_side: int) -> np.ndarray:
    """The densest square of text of a page, for a quick trial read."""
    ys, xs = np.nonzero(text)
    if len(xs) == 0:
        return gray
    side_mask = int(max_side / scale)
    # densest window on a coarse grid
    integral = cv2.integral(text.astype(np.uint8))
    H, W = text.shape
    best, best_xy = -1, (0, 0)
    step = max(4, side_mask // 4)
    for y0 in range(0, max(1, H - side_mask) + 1, step):
        for x0 in range(0, max(1, W - side_mask) + 1, step):
            y1, x1 = min(H, y0 + side_mask), min(W, x0 + side_mask)
            v = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
            if v > best:
                best, best_xy = v, (x0, y0)
    x0, y0 = int(best_xy[0] * scale), int(best_xy[1] * scale)
    return gray[y0 : y0 + max_side, x0 : x0 + max_side]


@dataclass
class Orientation:
    rotation_deg: int
    writing_mode: str
    evidence: OrientationEvidence
    scores: dict


def decide_orientation(
    fine_gray_deskewed: np.ndarray,
    fine_dpi: float,
    lines: LineStructure,
    analysis: Analysis,
    stored_size: tuple[int, int],
    use_osd: bool = True,
    allow_trial: bool = True,
) -> Orientation:
    """Rotation and writing mode of a page (see the module docstring)."""
    text = rotate_array(analysis.text, lines.skew_deg) if abs(lines.skew_deg) > 0.2 else analysis.text
    ev = OrientationEvidence(axis=lines.axis, stored_size=stored_size)
    ev.start_side = line_start_side(text, lines.axis, analysis.char_px)
    if use_osd:
        binary = np.where(fine_gray_deskewed < 140, 0, 255).astype(np.uint8)
        osd = tesseract_osd(binary)
        if osd is not None:
            ev.osd_rotation, ev.osd_confidence = osd
    scores = score_orientations(ev)
    ranked = sorted(scores, key=scores.get, reverse=True)
    if allow_trial and scores[ranked[0]] - scores[ranked[1]] < TRIAL_READ_MARGIN:
        # A small crop at ~200 dpi, read in each of the two leading readings.
        text_fine = rotate_array(analysis.text, lines.skew_deg) if abs(lines.skew_deg) > 0.2 else analysis.text
        crop = _text_crop(fine_gray_deskewed, text_fine, fine_dpi / analysis.dpi, max_side=int(fine_dpi * 2.2))
        crop, _ = resize_to_dpi(crop, fine_dpi, 200.0)
        for cand in ranked[:2]:
            ev.trial[cand] = trial_read_confidence(turn_upright(crop, cand[0]), cand[1])
        scores = score_orientations(ev)
        ranked = sorted(scores, key=scores.get, reverse=True)
    rot, mode = ranked[0]
    return Orientation(rotation_deg=rot, writing_mode=mode, evidence=ev, scores=scores)


# --------------------------------------------------------------------------------------
# the two output images
# --------------------------------------------------------------------------------------


def deskew_image(img: Image.Image, skew_deg: float) -> Image.Image:
    """Rotate a page clockwise by ``skew_deg`` keeping its colour mode, white corners, nothing cut.

    Bilevel pages are rotated as gray (bilinear) and thresholded again at mid-gray,
    which keeps stroke edges smooth instead of the staircase a nearest-neighbour
    rotation of 1-bit pixels leaves.
    """
    if img.mode == "1":
        arr = np.asarray(img.convert("L"))
        out = rotate_array(arr, skew_deg, fill=255, expand=True, interpolation=cv2.INTER_LINEAR)
        return Image.fromarray(np.where(out >= 128, 255, 0).astype(np.uint8), "L").convert("1", dither=Image.Dither.NONE)
    if img.mode == "L":
        return Image.fromarray(rotate_array(np.asarray(img), skew_deg, fill=255, expand=True, interpolation=cv2.INTER_CUBIC), "L")
    arr = np.asarray(img.convert("RGB"))
    return Image.fromarray(
        rotate_array(arr, skew_deg, fill=(255, 255, 255), expand=True, interpolation=cv2.INTER_CUBIC), "RGB"
    )


def noise_level(gray: np.ndarray) -> float:
    """Robust estimate of pixel noise (gray levels) from a central crop."""
    h, w = gray.shape
    crop = gray[h // 3 : h // 3 + 512, w // 3 : w // 3 + 512].astype(np.float32)
    if crop.size == 0:
        return 0.0
    resid = crop - cv2.GaussianBlur(crop, (0, 0), 1.5)
    return float(1.4826 * np.median(np.abs(resid - np.median(resid))))


def make_ocr_image(archive_img: Image.Image, dpi: float) -> tuple[np.ndarray, float]:
    """The copy the OCR engine reads: gray, seals dropped, tone evened, denoised, ~300 dpi.

    Returns (image, ocr_scale) where ocr_scale is OCR pixels per archive pixel, so
    word boxes can be mapped back onto the archive page.
    """
    gray = page_gray(archive_img, drop_red=True)
    if archive_img.mode != "1":
        gray = normalise_tone(gray, dpi)
        if noise_level(gray) > 3.0:
            gray = cv2.medianBlur(gray, 3)
    scale = 1.0
    if dpi < 0.83 * OCR_DPI or dpi > 1.4 * OCR_DPI:
        scale = min(OCR_DPI / dpi, 4.0)
        h, w = gray.shape
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
    orientation: Orientation | None = None
    lines: LineStructure | None = None


def analyse_geometry(page: SourcePage, *, use_osd: bool = True, allow_trial: bool = True) -> Geometry:
    """Blankness, skew, rotation and writing mode of a stored page (no images made)."""
    gray = page_gray(page.image, drop_red=True)
    dpi = page.dpi
    coarse = analyse(gray, dpi, ANALYSIS_DPI)
    if is_blank(coarse):
        return Geometry(rotation_deg=0, skew_deg=0.0, writing_mode="horizontal", blank=True)
    fine_gray, f = resize_to_dpi(gray, dpi, FINE_DPI)
    fine_dpi = dpi[0] * f
    fine = clean_components(ink_mask(fine_gray, fine_dpi), fine_dpi)
    lines = find_lines(coarse, fine)
    fine_norm = normalise_tone(fine_gray, fine_dpi)
    if abs(lines.skew_deg) > 0.2:
        fine_norm = rotate_array(fine_norm, lines.skew_deg, fill=255)
    orient = decide_orientation(
        fine_norm, fine_dpi, lines, coarse, page.image.size, use_osd=use_osd, allow_trial=allow_trial
    )
    return Geometry(
        rotation_deg=orient.rotation_deg,
        skew_deg=round(lines.skew_deg, 2),
        writing_mode=orient.writing_mode,
        blank=False,
        orientation=orient,
        lines=lines,
    )


def prepare_page(page: SourcePage) -> PreparedPage:
    """Turn one stored page upright and straight, and make its OCR copy.

    The archive image keeps the scan's colour mode; when the page needs no quarter
    turn and its skew is below 0.05 degrees it is the scan itself (and keeps the
    scan's JPEG stream). Blank pages are kept as scanned and are not turned.
    """
    geo = analyse_geometry(page)
    dpi_x, dpi_y = page.dpi
    if geo.rotation_deg in (90, 270):
        dpi_x, dpi_y = dpi_y, dpi_x
    dpi = float(dpi_x)
    archive = page.image
    archive_jpeg = page.jpeg_bytes
    if geo.rotation_deg:
        archive = turn_upright(archive, geo.rotation_deg)
        archive_jpeg = None
    if abs(geo.skew_deg) >= NEGLIGIBLE_SKEW_DEG:
        archive = deskew_image(archive, geo.skew_deg)
        archive_jpeg = None
    ocr_image, ocr_scale = make_ocr_image(archive, dpi)
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
    )
