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
  (processors.textnorm), with a full-width space only where the page has a wide gap;
* boxes are returned in archive-image pixels (ocr pixels divided by ocr_scale).

No model is ever downloaded at run time: tesseract's traineddata come from the
Debian packages and rapidocr's models ship inside its wheel.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from PIL import Image

from processors.pages import PageText, PreparedPage
from processors.textnorm import (
    FULLWIDTH_SPACE,
    strip_rule_chars,
    fix_confusions,
    has_letters,
    is_cjk,
    needs_space_between,
)
from schemas.record import Line, Word

__all__ = [
    "OcrEngine",
    "Token",
    "TesseractEngine",
    "RapidOcrEngine",
    "AutoEngine",
    "get_engine",
    "available_engines",
    "group_horizontal",
    "group_vertical",
    "tokens_to_lines",
    "remove_rules",
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


def _join_tokens(tokens: list[Token], vertical: bool) -> str:
    """One line's text from its boxes in order, with Japanese spacing.

    Words are set solid unless both sides are Latin/digit; a gap wider than ~0.7 of the
    line's character size becomes a full-width space between Japanese characters (the
    page printed one, e.g. 石川県知事　殿) or a single space otherwise.
    """
    sizes = sorted((t.w if vertical else t.h) for t in tokens)
    size = sizes[len(sizes) // 2] if sizes else 1.0
    out = ""
    prev: Token | None = None
    for tok in tokens:
        text = tok.text
        if not text:
            continue
        if out and prev is not None:
            gap = (tok.y0 - prev.y1) if vertical else (tok.x0 - prev.x1)
            if gap > 0.7 * size:
                if is_cjk(out[-1]) and is_cjk(text[0]):
                    out += FULLWIDTH_SPACE
                elif not out.endswith((" ", FULLWIDTH_SPACE)):
                    out += " "
            elif needs_space_between(out, text):
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


def tokens_to_lines(tokens: list[Token], vertical: bool, scale: float = 1.0, size: tuple[int, int] | None = None) -> list[Line]:
    """Boxes in ocr pixels -> Lines in reading order with boxes in archive pixels.

    ``scale`` is PreparedPage.ocr_scale (ocr pixels per archive pixel) and ``size`` the
    archive image size the boxes are clamped to.
    """
    if size is None:
        size = (10**9, 10**9)
    kept = []
    for t in tokens:
        text = strip_rule_chars(t.text).replace(" ", "")
        if text:
            kept.append(Token(text, t.x0, t.y0, t.x1, t.y1, t.conf))
    groups = group_vertical(kept) if vertical else group_horizontal(kept)
    lines: list[Line] = []
    for group in groups:
        text = fix_confusions(_join_tokens(group, vertical)).strip()
        if not has_letters(text):
            continue
        words = [
            Word(text=t.text, bbox=_to_archive_box(t.x0, t.y0, t.x1, t.y1, scale, size), confidence=_clamp_conf(t.conf))
            for t in group
        ]
        chars = sum(len(t.text) for t in group)
        conf = sum(_clamp_conf(t.conf) * len(t.text) for t in group) / max(1, chars)
        box = _to_archive_box(
            min(t.x0 for t in group), min(t.y0 for t in group), max(t.x1 for t in group), max(t.y1 for t in group), scale, size
        )
        lines.append(Line(text=text, bbox=box, confidence=_clamp_conf(conf), vertical=vertical, words=words))
    return lines


def _clamp_conf(c: float) -> float:
    return float(min(100.0, max(0.0, c)))


# ---------------------------------------------------------------------------
# Image help for tesseract
# ---------------------------------------------------------------------------


def remove_rules(gray: np.ndarray) -> np.ndarray:
    """Erase table rules, box frames and underlines (long straight dark runs).

    Tesseract's layout analysis treats a ruled table as pictures and separators: whole
    rows vanish or come back as ``|`` and noise. With the rules gone the cells are
    ordinary words on ordinary lines. A run counts as a rule when it is longer than
    about 6.5% of the page's shorter side (160 px at 300 dpi), twice the size of the
    largest title characters, so strokes of characters (even 一) survive.
    """
    h, w = gray.shape[:2]
    length = max(25, int(round(0.065 * min(w, h))))
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


def has_rules(gray: np.ndarray) -> bool:
    """Whether the page has long straight rules (a table or form) worth removing."""
    return remove_rules(gray) is not gray


# ---------------------------------------------------------------------------
# Tesseract
# ---------------------------------------------------------------------------


class TesseractEngine:
    """Tesseract 5 through pytesseract.image_to_data, ``jpn`` or ``jpn_vert``.

    Page segmentation: psm 6 (one uniform block) on horizontal pages after the rules are
    erased, psm 5 (one vertical block) with jpn_vert on vertical pages; the words'
    boxes are then regrouped into visual lines (see the module docstring for why).
    """

    name = "tesseract"

    def __init__(self, psm_horizontal: int = 6, psm_vertical: int = 5, min_word_conf: float = 0.0):
        self.psm_horizontal = psm_horizontal
        self.psm_vertical = psm_vertical
        self.min_word_conf = min_word_conf

    def tokens(self, page: PreparedPage) -> list[Token]:
        """Tesseract's words on the page as Tokens in ocr_image pixels (no reading order)."""
        import pytesseract

        vertical = page.writing_mode == "vertical"
        gray = np.ascontiguousarray(page.ocr_image, dtype=np.uint8)
        image = remove_rules(gray)
        lang = "jpn_vert" if vertical else "jpn"
        psm = self.psm_vertical if vertical else self.psm_horizontal
        dpi = max(70, int(round(page.dpi * (page.ocr_scale or 1.0))))
        pil = Image.fromarray(image)
        pil.format = "BMP"  # pytesseract saves in image.format; BMP is written 10x faster than PNG
        data = pytesseract.image_to_data(
            pil, lang=lang, config=f"--psm {psm} --dpi {dpi}", output_type=pytesseract.Output.DICT
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

    def read(self, page: PreparedPage) -> PageText:
        if page.blank:
            return PageText(lines=[], engine=self.name)
        vertical = page.writing_mode == "vertical"
        lines = tokens_to_lines(self.tokens(page), vertical, page.ocr_scale, page.archive_image.size)
        return PageText(lines=lines, engine=self.name)


# ---------------------------------------------------------------------------
# RapidOCR (PP-OCR models in ONNX, shipped in the wheel)
# ---------------------------------------------------------------------------

_RAPID_LOCK = threading.Lock()
_RAPID = None


def _rapidocr():
    """One RapidOCR instance per process, single-threaded, with the wheel's own models.

    The default config (PP-OCRv6 small det/rec, multilingual incl. Japanese) resolves
    to the files shipped in the wheel; asking for another language or version would
    start a download, which kiroku never does.
    """
    global _RAPID
    with _RAPID_LOCK:
        if _RAPID is None:
            from rapidocr import RapidOCR

            _RAPID = RapidOCR(
                params={
                    "Global.log_level": "warning",
                    "Global.use_cls": False,  # pages arrive upright
                    "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                }
            )
        return _RAPID


def rapidocr_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import rapidocr  # noqa: F401
    except ImportError:
        return False
    return True


class RapidOcrEngine:
    """PP-OCRv6 (small, multilingual) through rapidocr + onnxruntime, one thread per page.

    The detector finds text lines (and columns on vertical pages, which the recogniser
    reads after turning them); boxes come back in no useful order and are sorted here.
    """

    name = "rapidocr"

    def tokens(self, page: PreparedPage, image: np.ndarray | None = None) -> list[Token]:
        engine = _rapidocr()
        gray = np.ascontiguousarray(page.ocr_image if image is None else image, dtype=np.uint8)
        bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        result = engine(bgr)
        if result.txts is None or result.boxes is None:
            return []
        out: list[Token] = []
        for box, text, score in zip(result.boxes, result.txts, result.scores):
            text = (text or "").strip()
            if not text:
                continue
            pts = np.asarray(box, dtype=float)
            out.append(
                Token(text, float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()), 100.0 * float(score))
            )
        return out

    def read(self, page: PreparedPage) -> PageText:
        if page.blank:
            return PageText(lines=[], engine=self.name)
        vertical = page.writing_mode == "vertical"
        lines = tokens_to_lines(self.tokens(page), vertical, page.ocr_scale, page.archive_image.size)
        return PageText(lines=lines, engine=self.name)


# ---------------------------------------------------------------------------
# Auto: tesseract first, rapidocr where tesseract is unsure
# ---------------------------------------------------------------------------


class AutoEngine:
    """Tesseract for the pages it reads well, RapidOCR for the rest.

    A page goes to RapidOCR when tesseract's character-weighted confidence is below
    ``page_conf``; when RapidOCR is not installed tesseract's reading is kept.
    """

    name = "auto"

    def __init__(self, page_conf: float = 85.0):
        self.page_conf = page_conf
        self.tesseract = TesseractEngine()
        self.rapid = RapidOcrEngine() if rapidocr_available() else None

    def read(self, page: PreparedPage) -> PageText:
        if page.blank:
            return PageText(lines=[], engine=self.name)
        first = self.tesseract.read(page)
        if self.rapid is None or (first.lines and first.confidence >= self.page_conf):
            first.engine = "tesseract"
            return first
        second = self.rapid.read(page)
        second.engine = "rapidocr"
        return second


_ENGINES: dict[str, type] = {"tesseract": TesseractEngine, "rapidocr": RapidOcrEngine, "auto": AutoEngine}
_CACHE: dict[str, OcrEngine] = {}


def available_engines() -> list[str]:
    names = ["tesseract", "auto"]
    if rapidocr_available():
        names.insert(1, "rapidocr")
    return names


def get_engine(name: str = "auto") -> OcrEngine:
    """The engine called ``name`` (tesseract, rapidocr, auto), one instance per process.

    Raises ValueError for an unknown name and RuntimeError for rapidocr when the
    package (an optional extra: ``pip install kiroku[rapidocr]``) is not installed.
    """
    key = name.strip().lower()
    if key not in _ENGINES:
        raise ValueError(f"unknown OCR engine {name!r}; choose one of {', '.join(_ENGINES)}")
    if key == "rapidocr" and not rapidocr_available():
        raise RuntimeError("OCR engine 'rapidocr' needs the rapidocr and onnxruntime packages (kiroku[rapidocr])")
    if key not in _CACHE:
        _CACHE[key] = _ENGINES[key]()
    return _CACHE[key]
