"""Page images as they move between the image stages (load -> prepare -> read -> archive PDF).

The Record (schemas/record.py) carries everything that is text or numbers; these
carry the pixels that go with one page, which never belong in record.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from processors.archive.failures import InputRejected
from schemas.record import Line


class InputError(InputRejected):
    """The input cannot be archived as it is (empty, corrupt, encrypted, too large...).

    An InputRejected (permanent: the scan goes to quarantine at once). The message is
    written for a records officer, plain Japanese first and the English detail after:
    it goes into the quarantine reason file and the Prefect UI as it is.
    """

    def __init__(self, japanese: str, detail: str = "") -> None:
        super().__init__(japanese, detail)


@dataclass
class SourcePage:
    """One page as decoded from the scan, before any geometry is changed."""

    index: int
    image: Image.Image  # mode "1", "L" or "RGB"
    dpi: tuple[float, float]
    encoding: str  # how the scan stored it: jpeg, ccitt, lzw, png, flate, jpx, raw ...
    jpeg_bytes: bytes | None = None  # the scan's own JPEG stream, reused in the PDF when the page needs no turning
    dpi_assumed: bool = False  # True when the file stored no credible resolution and a default was applied
    # PDF pages only:
    page_size_pt: tuple[float, float] | None = None  # the page as shown (crop box, /Rotate applied), user units
    user_unit: float = 1.0  # the page's /UserUnit (points per user unit)
    source_text: str | None = None  # the text the PDF itself carries (a scanner's OCR layer, typed text)
    pdf_lines: list[Line] | None = None  # that text with boxes in image pixels, when it is trusted as the page's text
    warnings: list[str] = field(default_factory=list)  # codes for Page.warnings, e.g. "pdf_text_unreadable"


@dataclass
class LoadedDocument:
    path: Path
    format: str  # png, jpeg, tiff, pdf
    sha256: str
    bytes: int
    pages: list[SourcePage]


@dataclass
class PreparedPage:
    """A page turned upright and straightened, with a cleaned copy for reading.

    archive_image is what the archive PDF shows (the scan as it is, only upright and
    straight, same colour mode); ocr_image is for the OCR engine only (gray, seals
    dropped, tone evened, maybe scaled by ocr_scale). Word boxes are always given in
    archive_image pixels.
    """

    index: int
    archive_image: Image.Image
    ocr_image: np.ndarray  # uint8, 2-D
    ocr_scale: float  # ocr_image pixels per archive_image pixel
    dpi: int
    rotation_deg: int  # clockwise rotation that had turned the upright page into the scan
    skew_deg: float  # positive: content was turned counter-clockwise
    writing_mode: str  # horizontal | vertical
    blank: bool
    archive_jpeg: bytes | None = None  # original JPEG stream when archive_image is unchanged from the scan
    source_encoding: str = ""  # how the scan stored the page (jpeg, ccitt, ...): lossy stays lossy in the PDF
    page_size_pt: tuple[float, float] | None = None  # exact archive page size (user units) when the input had one
    user_unit: float = 1.0
    source_text: str | None = None  # see SourcePage
    warnings: list[str] = field(default_factory=list)


@dataclass
class PageText:
    """What an OCR engine read on one page, in reading order, in archive_image pixels."""

    lines: list[Line] = field(default_factory=list)
    engine: str = ""

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def confidence(self) -> float:
        """Mean line confidence weighted by characters, 0 when nothing was read."""
        chars = sum(len(line.text) for line in self.lines)
        if not chars:
            return 0.0
        return sum(line.confidence * len(line.text) for line in self.lines) / chars
