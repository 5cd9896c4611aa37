"""What a PDF page shows, for pages that are not one plain scanned image: poppler renders
and poppler's text.

Why poppler (pdftoppm, pdftotext from poppler-utils, installed by deploy/bootstrap.sh):
a page with masks, several images, a non-square resolution, vector drawing or typed text
is only shown faithfully by a full PDF renderer, and extracting "the" image of such a
page loses the rest (issue 8: aspect.pdf at half its height, masks.pdf without its title
and figure). Rendering the page at a resolution that fits its images gives the archive
the page as a reader sees it. pdftotext gives the page's own text with word boxes, the
scanner's OCR layer (kept as a second witness) or a born-digital page's real text.

Both read the file from disk, never over a network, and are given time limits.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from schemas.record import Line, Word

RENDER_TIMEOUT_S = 300
TEXT_TIMEOUT_S = 120
# Text in a PDF is trusted when at least this share of its visible characters are
# letters or digits (any script): a font without a Unicode mapping comes out as
# punctuation, controls and private-use codes ("7+%- for "Dear").
MIN_LETTER_SHARE = 0.6
MAX_BAD_SHARE = 0.05
_NS = "{http://www.w3.org/1999/xhtml}"


class PopplerMissing(RuntimeError):
    """poppler-utils is not installed (deploy/bootstrap.sh installs it)."""


@dataclass
class PdfPageText:
    """The text poppler finds on one page, with boxes in points from the top-left corner."""

    width_pt: float
    height_pt: float
    lines: list[tuple[str, tuple[float, float, float, float], list[tuple[str, tuple[float, float, float, float]]]]] = field(
        default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(text for text, _box, _words in self.lines)


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise PopplerMissing(f"{name} (poppler-utils) is not installed")
    return exe


def render_page(path: Path, page_no: int, dpi: float, gray: bool = False) -> Image.Image:
    """Render page ``page_no`` (1-based) of ``path`` at ``dpi`` pixels per inch of the
    page's user space (the caller multiplies by /UserUnit: poppler ignores it).

    The crop box is rendered, as viewers show it. Returns an "L" or "RGB" image.
    """
    exe = _tool("pdftoppm")
    with tempfile.TemporaryDirectory(prefix="kiroku-render-") as tmp:
        out = Path(tmp) / "page"
        args = [exe, "-q", "-cropbox", "-r", f"{dpi:.4f}", "-f", str(page_no), "-l", str(page_no), "-singlefile"]
        if gray:
            args.append("-gray")
        proc = subprocess.run([*args, str(path), str(out)], capture_output=True, timeout=RENDER_TIMEOUT_S, check=False)
        files = list(Path(tmp).glob("page.*"))
        if proc.returncode != 0 or not files:
            raise RuntimeError(proc.stderr.decode("utf-8", "replace").strip() or f"pdftoppm exit {proc.returncode}")
        with Image.open(files[0]) as im:
            im.load()
            img = im.copy()
    if img.mode == "RGB" and _is_gray(img):
        img = img.convert("L")
    return img


def _is_gray(img: Image.Image) -> bool:
    arr = np.asarray(img)
    return bool(np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]))


def has_ink(img: Image.Image) -> bool:
    """Whether a rendered page shows anything but paper (a few dark pixels are not a page)."""
    gray = np.asarray(img.convert("L"))
    return int(np.count_nonzero(gray < 200)) > max(20, gray.size // 100_000)


def document_text(path: Path) -> list[PdfPageText] | None:
    """Every page's text with word boxes (pdftotext -bbox-layout), None when poppler cannot read it."""
    exe = _tool("pdftotext")
    try:
        proc = subprocess.run([exe, "-q", "-cropbox", "-bbox-layout", "-enc", "UTF-8", str(path), "-"],
                              capture_output=True, timeout=TEXT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    return parse_bbox_layout(proc.stdout)


def parse_bbox_layout(xhtml: bytes) -> list[PdfPageText] | None:
    """pdftotext's -bbox-layout XHTML as pages of lines of words."""
    # the XHTML carries a DOCTYPE and may carry control characters from odd fonts
    text = xhtml.decode("utf-8", "replace")
    text = "".join(ch for ch in text if ch in "\n\t\r" or unicodedata.category(ch) != "Cc")
    start = text.find("<html")
    try:
        root = ET.fromstring(text[start:] if start >= 0 else text)
    except ET.ParseError:
        return None
    pages: list[PdfPageText] = []
    for page in root.iter(f"{_NS}page"):
        out = PdfPageText(width_pt=float(page.get("width", 0)), height_pt=float(page.get("height", 0)))
        for line in page.iter(f"{_NS}line"):
            words = [((w.text or "").strip(), _box(w)) for w in line.iter(f"{_NS}word")]
            words = [(t, b) for t, b in words if t]
            if not words:
                continue
            out.lines.append((_join(words, line), _box(line), words))
        pages.append(out)
    return pages


def _box(el: ET.Element) -> tuple[float, float, float, float]:
    return tuple(float(el.get(k, 0)) for k in ("xMin", "yMin", "xMax", "yMax"))  # type: ignore[return-value]


def _join(words: list[tuple[str, tuple]], line: ET.Element) -> str:
    """A line's words joined the Japanese way: solid between Japanese, a space between Latin words."""
    from processors.reading.textnorm import needs_space_between

    out = ""
    for text, _box in words:
        if out and needs_space_between(out, text):
            out += " "
        out += text
    return out


def text_is_trustworthy(text: str) -> bool:
    """Whether a PDF's own text reads as text, not as the garbage of a font without a Unicode map."""
    # a run of one character counts once: dot leaders in a table of contents are not garbage
    chars = [ch for k, ch in enumerate(text) if not ch.isspace() and (k == 0 or text[k - 1] != ch)]
    if not chars:
        return False
    letters = sum(1 for ch in chars if unicodedata.category(ch)[0] in ("L", "N"))
    bad = sum(1 for ch in chars if ch == "\ufffd" or unicodedata.category(ch) in ("Co", "Cc", "Cn", "Cs"))
    return letters / len(chars) >= MIN_LETTER_SHARE and bad / len(chars) <= MAX_BAD_SHARE


def lines_in_pixels(page: PdfPageText, size_px: tuple[int, int]) -> list[Line]:
    """The page's text lines with boxes in pixels of its rendering (size_px)."""
    if page.width_pt <= 0 or page.height_pt <= 0:
        return []
    sx, sy = size_px[0] / page.width_pt, size_px[1] / page.height_pt

    def px(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        bx0 = min(max(0, math.floor(x0 * sx)), size_px[0])
        by0 = min(max(0, math.floor(y0 * sy)), size_px[1])
        return bx0, by0, min(max(bx0, math.ceil(x1 * sx)), size_px[0]), min(max(by0, math.ceil(y1 * sy)), size_px[1])

    lines = []
    for text, box, words in page.lines:
        b = px(box)
        if b[2] <= b[0] or b[3] <= b[1]:
            continue
        vertical = (b[3] - b[1]) > 2 * (b[2] - b[0]) and len(text) > 1
        lines.append(Line(text=text, bbox=b, confidence=100.0, vertical=vertical,
                          words=[Word(text=t, bbox=px(wb), confidence=100.0) for t, wb in words]))
    return lines
