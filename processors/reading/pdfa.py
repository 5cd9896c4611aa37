"""The searchable archive PDF/A-2b: the scan as it is, with an invisible text layer.

What an archive PDF must do, and how this module does it:

* Show every scanned sheet (blank backs included) exactly as prepared, at its real
  size: one page per PreparedPage, MediaBox = pixels / dpi * 72 pt.
* Never make the picture worse than the scan ("no needless recompression"):

  - bilevel ("1") pages stay bilevel, CCITT G4 (Pillow's libtiff group4 encoder, the
    single strip lifted out of the TIFF). G4 is lossless and on text pages 5-10x
    smaller than Flate on the same bits; Flate on the packed bits is the fallback
    when Pillow has no libtiff.
  - when the page still is the scan's own JPEG (PreparedPage.archive_jpeg) those very
    bytes are embedded (DCTDecode): no decode/re-encode generation loss.
  - gray/colour pages otherwise: the rule is *lossless stays lossless*. Flate
    (zlib on the raw rows, see _flate for the level) unless the scan itself was
    lossy (``PreparedPage.source_encoding`` in {"jpeg", "jpx"}, when that attribute
    exists), in which case the turned/straightened page is JPEG quality 85: the
    pixels already carry JPEG noise, Flate would inflate them 3-5x for nothing.
  - CMYK JPEGs are the one forced conversion: PDF/A with an sRGB OutputIntent may
    not use DeviceCMYK, so they become RGB JPEG quality 92.

* An invisible text layer (text render mode 3) over the words, in a tiny embedded
  "glyphless" TrueType CIDFont (PDF/A requires every font embedded; tesseract and
  OCRmyPDF do the same). Its one empty glyph has a 1 em advance, and every character
  of the document gets its own 2-byte code (1..N, in order of first use) through
  Identity-H, with a ToUnicode CMap mapping code -> character (UTF-16, so
  characters outside the BMP work too). No U+0020 is ever added between Japanese
  characters (tesseract's own renderer adds one after every word); the characters of
  a line (or of a word, when the OCR words line up with the line text) are spread
  over its box with Tz so they abut, and poppler sees one run without gaps.
* Vertical columns (Line.vertical) are drawn as text turned 90 deg clockwise: the
  run goes top to bottom inside the column and the glyph "up" points right, so a
  reader that groups text by direction (poppler, pdf.js, Acrobat) reads the columns
  right to left, each top to bottom. Identity-V (true vertical CIDFont writing) would
  be the textbook way, but pikepdf's PDF/A validator reports vertical writing as
  "unsupported" (verdict not_checked), so pikepdf.pdfa.save would refuse the file.
* XMP: dc:title (the Japanese title kept as is), dc:creator, dc:date, dc:identifier
  (record id), dc:language, dc:description/dc:subject; pdfaid part 2 conformance B
  and an sRGB OutputIntent are added by pikepdf.pdfa.save, which writes the file
  only if its validator passes it. A failure raises ArchivePdfError naming the
  findings: never a silent downgrade to a plain PDF.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import logging
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pikepdf
import pikepdf.pdfa
from pikepdf import Array, Dictionary, Name, Pdf
from PIL import Image, features

from processors.reading.pages import PreparedPage
from schemas.record import Line, Page, Region

log = logging.getLogger(__name__)

FLAVOUR = "2b"
JPEG_QUALITY = 85  # gray/colour pages whose scan was already lossy
CMYK_JPEG_QUALITY = 92  # the one forced re-encode (DeviceCMYK is not allowed with sRGB)
BUSY_RATIO = 0.10  # Flate probe ratio above which zlib level 1 is used (see _flate)
LOSSY_ENCODINGS = frozenset({"jpeg", "jpg", "jpx", "jpeg2000"})

# Glyphless font geometry, in 1/1000 em. Ascent - descent = 1 em, so with the font
# size set to the line height a character box is exactly the line box.
_ASCENT = 800
_DESCENT = -200
_FONT_NAME = "GlyphLessFont"
WORD_GAP_EM = 0.2  # what a run of spaces in a line is squeezed to (see _show)


class ArchivePdfError(RuntimeError):
    """The archive PDF could not be written as validated PDF/A (nothing was written)."""


@dataclass(frozen=True)
class PdfInfo:
    """Document-level metadata written to the XMP packet (and DocInfo).

    title: dc:title, kept exactly as given (Japanese, full-width spaces and all).
    creator: dc:creator - the issuing office or person (発信者), not the software.
    date: dc:date - the document's own date (文書日付), not the scan or PDF date.
    record_id: dc:identifier - the kiroku record id, so a stray PDF leads back to its record.
    subject: dc:description (DocInfo /Subject), e.g. the document type.
    keywords: dc:subject (and pdf:Keywords).
    language: dc:language and the catalog /Lang.
    """

    title: str | None = None
    creator: str | None = None
    date: dt.date | None = None
    record_id: str | None = None
    subject: str | None = None
    keywords: Sequence[str] = field(default_factory=tuple)
    language: str = "ja"


# --------------------------------------------------------------------------- entry


def write_archive_pdf(pages: list[tuple[PreparedPage, Page]], out: Path, info: PdfInfo) -> str:
    """Write the searchable PDF/A-2b of *pages* to *out*; return the flavour ('2b').

    The pages are written in the order given, one PDF page per PreparedPage. The file
    appears at *out* only after pikepdf's validator has passed the written bytes.

    Raises:
        ArchivePdfError: the document did not validate as PDF/A-2b (the findings are in
            the message); *out* is left untouched.
        ValueError: no pages.
    """
    if not pages:
        raise ValueError("an archive PDF needs at least one page")
    out = Path(out)
    pdf, used_icc = _build(pages, info, embed_icc=True)
    try:
        report = pikepdf.pdfa.save(pdf, out, FLAVOUR, output_intent="sRGB")
    except pikepdf.pdfa.PdfaError as e:
        if not used_icc:
            raise _failure(e, info, out) from e
        # A scan's own ICC profile the validator will not take: the pixels are still
        # the scan's, shown as plain DeviceRGB/DeviceGray like every other page.
        log.warning("the scan's embedded ICC profile is not acceptable for PDF/A (%s); "
                    "writing %s with device colour instead", e.report.summary(limit=3), out.name)
        pdf, _ = _build(pages, info, embed_icc=False)
        try:
            report = pikepdf.pdfa.save(pdf, out, FLAVOUR, output_intent="sRGB")
        except pikepdf.pdfa.PdfaError as e2:
            raise _failure(e2, info, out) from e2
    if report.prepared is not None:
        for level, sentence in report.prepared.messages():
            if level != "debug":
                log.info("PDF/A preparation of %s: %s", out.name, sentence)
    return FLAVOUR


def _failure(error: pikepdf.pdfa.PdfaError, info: PdfInfo, out: Path) -> ArchivePdfError:
    return ArchivePdfError(
        f"the archive PDF for {info.record_id or out.name} did not validate as PDF/A-{FLAVOUR}; "
        f"nothing was written:\n{error.report.summary()}"
    )


def _build(pages: list[tuple[PreparedPage, Page]], info: PdfInfo, embed_icc: bool) -> tuple[Pdf, bool]:
    """The document in memory; also whether any scan's own ICC profile was embedded."""
    pdf = pikepdf.new()
    codes = _CodeMap()
    for _, page in pages:
        for line in page.lines:
            codes.add_text(_drawable(line.text))
        if any(r.kind == "table" for r in page.regions):
            codes.add_text(_CELL_JOIN)  # table rows are drawn as one line, cells joined by it
    font = _make_font(pdf, codes) if codes else None
    icc: dict[bytes, pikepdf.Stream] | None = {} if embed_icc else None
    for prepared, page in pages:
        _add_page(pdf, prepared, page, font, codes, icc)
    pdf.Root.Lang = pikepdf.String(info.language or "ja")
    pdf.Root.ViewerPreferences = Dictionary(DisplayDocTitle=True)
    _write_metadata(pdf, info)
    return pdf, bool(icc)


# --------------------------------------------------------------------------- pages


def _add_page(pdf: Pdf, prepared: PreparedPage, page: Page, font: pikepdf.Object | None, codes: _CodeMap,
              icc: dict[bytes, pikepdf.Stream] | None) -> None:
    image = prepared.archive_image
    width_px, height_px = image.size
    dpi = float(prepared.dpi) if prepared.dpi and prepared.dpi > 0 else float(page.dpi)
    scale = 72.0 / dpi
    width_pt, height_pt = width_px * scale, height_px * scale
    user_unit = 1.0
    if prepared.page_size_pt is not None:
        # the input PDF's own page size, exactly (in its user units, /UserUnit kept): the
        # archive page is the size of the page it shows, not pixels / rounded dpi
        width_pt, height_pt = (float(v) for v in prepared.page_size_pt)
        user_unit = float(prepared.user_unit or 1.0)
        scale = width_pt / width_px

    xobject = _image_xobject(pdf, prepared, icc)
    content = [f"q {_n(width_pt)} 0 0 {_n(height_pt)} 0 0 cm /Im0 Do Q"]
    resources = Dictionary(XObject=Dictionary(Im0=xobject))
    # blank backs get no text even if OCR was run on them: it would only be bleed-through
    lines = _table_rows(_even_line_sizes(page.lines, page.regions), page.regions)
    text_ops = _text_layer(lines, codes, scale, image.size) if font is not None and not prepared.blank else []
    if text_ops:
        content += ["BT 3 Tr", *text_ops, "ET"]
        resources.Font = Dictionary(F1=font)
    page_dict = Dictionary(
        Type=Name.Page,
        MediaBox=Array([0, 0, _round(width_pt), _round(height_pt)]),
        Resources=resources,
        Contents=pdf.make_stream("\n".join(content).encode("ascii")),
    )
    if abs(user_unit - 1.0) > 1e-9:
        page_dict.UserUnit = user_unit
    pdf_page = pikepdf.Page(page_dict)
    pdf.pages.append(pdf_page)


def _n(value: float) -> str:
    """A PDF number: short, no exponent."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _round(value: float) -> float:
    return round(value, 3)


# --------------------------------------------------------------------------- images


def _image_xobject(pdf: Pdf, prepared: PreparedPage, icc: dict[bytes, pikepdf.Stream] | None) -> pikepdf.Stream:
    """The page picture as an image XObject, with as little re-encoding as possible.

    *icc* collects the scans' own ICC profiles (one stream per distinct profile), or
    is None when they must not be embedded.
    """
    image = prepared.archive_image
    width, height = image.size
    if prepared.archive_jpeg:
        stream = _jpeg_passthrough(pdf, prepared.archive_jpeg, image, icc)
        if stream is not None:
            return stream
    if image.mode == "1":
        return _bilevel_xobject(pdf, image)
    image = _normalise_mode(image)
    colour = Name.DeviceGray if image.mode == "L" else Name.DeviceRGB
    source_encoding = (prepared.source_encoding or "").lower()
    if source_encoding in LOSSY_ENCODINGS:
        return _jpeg_xobject(pdf, image, JPEG_QUALITY)
    components = 1 if image.mode == "L" else 3
    return pdf.make_stream(
        _flate(image.tobytes(), width * components),
        Type=Name.XObject, Subtype=Name.Image, Width=width, Height=height,
        ColorSpace=colour, BitsPerComponent=8, Filter=Name.FlateDecode,
    )


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Bring odd modes to L or RGB: palette/alpha/16-bit/CMYK images are rare in scans."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("LA", "RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # PDF/A-2 allows soft masks, but a scan has no meaningful transparency: flatten on white
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(background, rgba).convert("RGB")
        return flat.convert("L") if image.mode in ("LA",) else flat
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype("uint8"), "L")
    if image.mode == "P":
        rgb = image.convert("RGB")
        return rgb.convert("L") if _is_gray(rgb) else rgb
    return image.convert("RGB")


def _is_gray(image: Image.Image) -> bool:
    r, g, b = image.split()
    from PIL import ImageChops

    return ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None


def _bilevel_xobject(pdf: Pdf, image: Image.Image) -> pikepdf.Stream:
    width, height = image.size
    g4 = _ccitt_g4(image) if features.check("libtiff") else None
    if g4 is not None:
        return pdf.make_stream(
            g4,
            Type=Name.XObject, Subtype=Name.Image, Width=width, Height=height,
            ColorSpace=Name.DeviceGray, BitsPerComponent=1, Filter=Name.CCITTFaxDecode,
            DecodeParms=Dictionary(K=-1, Columns=width, Rows=height, BlackIs1=True),
        )
    # Pillow packs "1" rows MSB first with 1 = white, which is DeviceGray's meaning too
    return pdf.make_stream(
        _flate(image.tobytes(), (width + 7) // 8),
        Type=Name.XObject, Subtype=Name.Image, Width=width, Height=height,
        ColorSpace=Name.DeviceGray, BitsPerComponent=1, Filter=Name.FlateDecode,
    )


def _ccitt_g4(image: Image.Image) -> bytes | None:
    """The page as one CCITT G4 strip, lifted out of a TIFF written by libtiff.

    Pillow writes "1" images with PhotometricInterpretation MinIsBlack, so the coded
    "white" runs are the 0 (black) pixels; hence BlackIs1 true in the DecodeParms.
    One strip for the whole page (strip_size beyond the image) because separately
    coded strips cannot simply be concatenated into one G4 stream.
    """
    buf = io.BytesIO()
    try:
        image.save(buf, format="TIFF", compression="group4", strip_size=1 << 30)
        buf.seek(0)
        with Image.open(buf) as tif:
            photometric = tif.tag_v2.get(262)
            offsets = tif.tag_v2.get(273)
            counts = tif.tag_v2.get(279)
    except (OSError, ValueError) as e:  # no group4 in this Pillow/libtiff
        log.warning("CCITT G4 encoding failed (%s); using Flate for the bilevel page", e)
        return None
    if photometric != 1 or not offsets or not counts or len(offsets) != 1:
        log.warning("unexpected TIFF layout from libtiff (photometric %s, %s strips); using Flate",
                    photometric, len(offsets or ()))
        return None
    data = buf.getvalue()
    return data[offsets[0]: offsets[0] + counts[0]]


def _jpeg_passthrough(pdf: Pdf, jpeg: bytes, image: Image.Image,
                      icc: dict[bytes, pikepdf.Stream] | None) -> pikepdf.Stream | None:
    """The scan's own JPEG stream, embedded byte for byte (DCTDecode).

    Returns None (the caller encodes archive_image instead) when the stream does not
    match the page: another size or colour mode means archive_image was changed
    after all. An ICC profile carried by the JPEG goes with it (ICCBased), so a
    scanner's Adobe RGB is not shown as sRGB.
    """
    size = image.size
    try:
        with Image.open(io.BytesIO(jpeg)) as probe:
            mode, jpeg_size, fmt, info = probe.mode, probe.size, probe.format, dict(probe.info)
            bits = probe.bits if hasattr(probe, "bits") else 8
    except (OSError, ValueError) as e:
        log.warning("archive_jpeg cannot be read (%s); re-encoding the page image", e)
        return None
    if fmt != "JPEG" or jpeg_size != size:
        log.warning("archive_jpeg is %s %s but the page is %s; re-encoding the page image", fmt, jpeg_size, size)
        return None
    if bits != 8:
        return None
    width, height = size
    if mode in ("L", "RGB") and image.mode != mode:
        log.warning("archive_jpeg is %s but the page is %s; re-encoding the page image", mode, image.mode)
        return None
    if mode == "L":
        colour = _icc_colour(pdf, info.get("icc_profile"), b"GRAY", 1, icc) or Name.DeviceGray
    elif mode == "RGB":
        colour = _icc_colour(pdf, info.get("icc_profile"), b"RGB ", 3, icc) or Name.DeviceRGB
    elif mode == "CMYK":
        # DeviceCMYK needs a CMYK OutputIntent; the archive's is sRGB: convert once, at
        # high quality
        # (the loader's ICC-aware conversion when archive_image is already RGB)
        log.info("CMYK JPEG page converted to RGB for PDF/A (sRGB OutputIntent)")
        return _jpeg_xobject(pdf, _normalise_mode(image), CMYK_JPEG_QUALITY)
    else:
        return None
    stream = pdf.make_stream(
        b"",
        Type=Name.XObject, Subtype=Name.Image, Width=width, Height=height,
        ColorSpace=colour, BitsPerComponent=8,
    )
    stream.write(jpeg, filter=Name.DCTDecode)
    return stream


def _icc_colour(pdf: Pdf, profile: bytes | None, space: bytes, components: int,
               icc: dict[bytes, pikepdf.Stream] | None) -> Array | None:
    """[/ICCBased profile] for a plausible ICC profile of the right colour space, else None."""
    if icc is None or not profile or len(profile) < 128:
        return None
    if profile[36:40] != b"acsp" or profile[16:20] != space or profile[8] > 4:
        return None
    if profile not in icc:
        icc[profile] = pdf.make_stream(zlib.compress(profile, 9), Filter=Name.FlateDecode, N=components)
    return Array([Name.ICCBased, icc[profile]])


def _jpeg_xobject(pdf: Pdf, image: Image.Image, quality: int) -> pikepdf.Stream:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=False)
    stream = pdf.make_stream(
        b"",
        Type=Name.XObject, Subtype=Name.Image, Width=image.size[0], Height=image.size[1],
        ColorSpace=Name.DeviceGray if image.mode == "L" else Name.DeviceRGB, BitsPerComponent=8,
    )
    stream.write(buf.getvalue(), filter=Name.DCTDecode)
    return stream


def _flate(raw: bytes, row_bytes: int) -> bytes:
    """Lossless Flate of raw rows, the zlib level chosen by how busy the page is.

    Measured on the sample scans (A4, 200-400 dpi): on clean lossless scans (paper,
    ink, a little noise; 2-5% of raw size) level 6 takes 0.03-0.15 s and is 15-25%
    smaller than level 1, and within a few % of PNG predictors (which Pillow makes
    2-3x slower). On busy pixels - JPEG noise left in a straightened JPEG scan,
    sensor noise - level 6 takes 2-4 s per RGB A4 page for 5-25% less than level 1.
    So a probe of 8 bands x 32 rows spread over the page decides: pages whose probe
    compresses to more than 10% at level 1 get level 1.
    """
    band = row_bytes * 32
    rows = len(raw) // row_bytes if row_bytes else 0
    if rows > 8 * 32:
        step = rows // 8
        probe = b"".join(raw[i * step * row_bytes: i * step * row_bytes + band] for i in range(8))
    else:
        probe = raw
    level = 6
    if probe and len(zlib.compress(probe, 1)) > len(probe) * BUSY_RATIO:
        level = 1
    return zlib.compress(raw, level)


# --------------------------------------------------------------------------- text layer


def _drawable(text: str) -> str:
    """The characters that go into the text layer: controls dropped, tabs as spaces."""
    return "".join(
        " " if ch == "\t" else ch
        for ch in text
        if ch == "\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    )


class _CodeMap:
    """One 2-byte code per distinct character of the document, 1..N in order of use.

    Codes are CIDs (Identity-H) and index the CIDToGIDMap; dense codes keep that map
    and the ToUnicode CMap tiny, and work for characters beyond the BMP, which a
    CID = code point scheme could not represent.
    """

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._codes)

    def add_text(self, text: str) -> None:
        for ch in text:
            if ch not in self._codes:
                if len(self._codes) >= 0xFFFE:
                    raise ArchivePdfError("more than 65534 distinct characters in one document")
                self._codes[ch] = len(self._codes) + 1

    def encode(self, text: str) -> bytes:
        return b"".join(self._codes[ch].to_bytes(2, "big") for ch in text)

    def items(self) -> Iterable[tuple[str, int]]:
        return self._codes.items()


def _even_line_sizes(lines: Sequence[Line], regions: Sequence[Region]) -> list[Line]:
    """The lines with one text size per region (the median line thickness), centred on their own boxes.

    Text extractors (poppler's pdftotext, a viewer's copy) rebuild the reading order
    from the geometry: they join lines of one size into a block and order blocks as
    columns. Detected line boxes differ in height by a few pixels, which made every
    line its own block, and a spread's two pages or a page's two tiers came out
    interleaved. With one size per region the region is one block again.
    """
    out = list(lines)
    for region in regions:
        idx = [i for i in region.lines if 0 <= i < len(out)]
        if len(idx) < 2:
            continue

        def thick(line: Line) -> int:
            x0, y0, x1, y1 = line.bbox
            return (x1 - x0) if line.vertical else (y1 - y0)

        sizes = sorted(thick(out[i]) for i in idx)
        size = sizes[len(sizes) // 2]
        for i in idx:
            line = out[i]
            t = thick(line)
            if not (0.6 * size <= t <= 1.6 * size) or t == size:
                continue
            x0, y0, x1, y1 = line.bbox
            if line.vertical:
                c = (x0 + x1) // 2
                box = (c - size // 2, y0, c - size // 2 + size, y1)
            else:
                c = (y0 + y1) // 2
                box = (x0, c - size // 2, x1, c - size // 2 + size)
            out[i] = line.model_copy(update={"bbox": box})
    return out


_CELL_JOIN = "\u3000"


def _table_rows(lines: Sequence[Line], regions: Sequence[Region]) -> list[Line]:
    """The lines to draw, with each row of a ruled table drawn as one line in reading order.

    In the record a table row may be several lines: the cells' own lines, cell by cell
    (a cell holding T・S over H・R, a spanning label). Drawn where they are, a text
    extractor bands them again by their height on the page and mixes the cells
    (T・S / 世帯主 H・R). Drawn as one line over the row, cells joined by a space in
    the record's order, pdftotext and a viewer's copy give the row as the record
    reads it; the characters still lie on the row they belong to. A row is a run of
    the region's lines that overlap one another's height; the drawn line is one
    line high (the row's median) and centred on the row.
    """
    out = list(lines)
    drop: set[int] = set()
    for region in regions:
        if region.kind != "table":
            continue
        idx = [i for i in region.lines if 0 <= i < len(out)]
        if len(idx) < 2:
            continue
        heights = sorted(out[i].bbox[3] - out[i].bbox[1] for i in idx)
        tall = 2 * heights[len(heights) // 2]
        rows: list[list[int]] = []
        for i in idx:
            y0, y1 = out[i].bbox[1], out[i].bbox[3]
            if rows:
                # the row's band: its first line and its lines of ordinary height (a box
                # spanning several rows later in the row joins it, but does not pull the
                # next rows in)
                band = [out[rows[-1][0]]] + [out[j] for j in rows[-1][1:] if out[j].bbox[3] - out[j].bbox[1] <= tall]
                r0 = min(m.bbox[1] for m in band)
                r1 = max(m.bbox[3] for m in band)
                if y0 < r1 and y1 > r0:
                    rows[-1].append(i)
                    continue
            rows.append([i])
        for row in rows:
            if len(row) < 2:
                continue
            members = [out[i] for i in row]
            x0 = min(m.bbox[0] for m in members)
            x1 = max(m.bbox[2] for m in members)
            r0 = min(m.bbox[1] for m in members)
            r1 = max(m.bbox[3] for m in members)
            thick = sorted((m.bbox[2] - m.bbox[0]) if m.vertical else (m.bbox[3] - m.bbox[1]) for m in members)
            h = max(1, min(thick[len(thick) // 2], r1 - r0))
            c = (r0 + r1) // 2
            merged = members[0].model_copy(update={
                "text": _CELL_JOIN.join(m.text for m in members),
                "bbox": (x0, c - h // 2, x1, c - h // 2 + h),
                "vertical": False,
                "words": [],
            })
            out[row[0]] = merged
            drop.update(row[1:])
    return [line for i, line in enumerate(out) if i not in drop]


def _text_layer(lines: Sequence[Line], codes: _CodeMap, scale: float, size_px: tuple[int, int]) -> list[str]:
    """Content-stream operators drawing every line invisibly over its box.

    Boxes are clipped to the page first: text off the page is invisible to readers
    (poppler drops it) and a box half outside would stretch the characters wrongly.
    """
    width_px, height_px = size_px
    height_pt = height_px * scale
    ops: list[str] = []
    for line in lines:
        text = _drawable(line.text).strip()
        if not text:
            continue
        x0, y0, x1, y1 = line.bbox
        clipped = (max(0, x0), max(0, y0), min(width_px, x1), min(height_px, y1))
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            continue
        if clipped != (x0, y0, x1, y1):
            line = line.model_copy(update={"bbox": clipped, "words": []})
        for seg_text, start, end in _segments(line, text):
            ops.append(_show(seg_text, start, end, line, codes, scale, height_pt))
    return ops


def _segments(line: Line, text: str) -> list[tuple[str, int, int]]:
    """Split a line into runs placed along its reading direction, in pixels.

    When the OCR words spell out the line text in order, each word's characters
    cover the stretch from its own start to the next word's start (the last one to
    the line's end): the characters land on the words even where the line has wide
    gaps, yet abut, so no reader invents spaces between them. Characters between
    words (a real space, say) stay with the word before. Otherwise the whole line is
    one run spread evenly over the box: Japanese is close to monospaced, so that is
    within a character of the truth.
    """
    x0, y0, x1, y1 = line.bbox
    lo, hi = (y0, y1) if line.vertical else (x0, x1)
    whole = [(text, lo, hi)]
    words = [w for w in line.words if w.text.strip()]
    if len(words) < 2:
        return whole
    starts: list[int] = []
    pos = 0
    for word in words:
        wtext = _drawable(word.text).strip()
        found = text.find(wtext, pos)
        if found < 0 or text[pos:found].strip():
            return whole
        starts.append(found)
        pos = found + len(wtext)
    if text[pos:].strip():
        return whole
    starts[0] = 0
    edges = [max(lo, min(hi, (w.bbox[1] if line.vertical else w.bbox[0]))) for w in words]
    edges[0] = lo
    if any(b < a for a, b in zip(edges, edges[1:])):
        return whole
    segments = []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(text)
        seg_end = edges[i + 1] if i + 1 < len(edges) else hi
        if seg_end <= edges[i]:
            return whole
        segments.append((text[start:stop], edges[i], seg_end))
    return segments


def _show(text: str, start: int, end: int, line: Line, codes: _CodeMap, scale: float, height_pt: float) -> str:
    """Draw *text* so its advances span [start, end) px along the line, box-high.

    Non-space characters share the run evenly (Tz). A run of whitespace (U+0020,
    U+3000...) is squeezed to a gap of WORD_GAP_EM: poppler, like most extractors,
    drops whitespace glyphs and judges the gap instead, and a gap wider than ~0.3 em
    splits the line into separate blocks that may come out elsewhere in the text.
    With 0.2 em the words stay on one line and a single space separates them.
    """
    x0, y0, x1, y1 = line.bbox
    size = ((x1 - x0) if line.vertical else (y1 - y0)) * scale
    length = (end - start) * scale
    if line.vertical:
        # Turned 90 deg clockwise: advance runs down the page, glyph up points right,
        # so lines (columns) follow one another right to left.
        tx = x0 * scale - _DESCENT / 1000 * size
        ty = height_pt - start * scale
        matrix = f"0 -1 1 0 {_n(tx)} {_n(ty)}"
    else:
        tx = start * scale
        ty = height_pt - y1 * scale - _DESCENT / 1000 * size
        matrix = f"1 0 0 1 {_n(tx)} {_n(ty)}"

    runs: list[tuple[bool, str]] = []  # (is whitespace, characters)
    for ch in text:
        space = ch.isspace()
        if runs and runs[-1][0] == space:
            runs[-1] = (space, runs[-1][1] + ch)
        else:
            runs.append((space, ch))
    glyphs = sum(len(chars) for space, chars in runs if not space)
    gaps = sum(1 for space, _ in runs if space)
    gap = min(WORD_GAP_EM * size, 0.5 * length / gaps) if gaps else 0.0
    hscale = (length - gaps * gap) / (glyphs * size)  # glyphs > 0: text is stripped
    parts: list[str] = []
    for space, chars in runs:
        if not space:
            parts.append(f"<{codes.encode(chars).hex()}>")
            continue
        # each whitespace glyph advances 1 em * Tz; pull it back to gap / len(chars)
        adjust = 1000.0 * (1.0 - gap / (len(chars) * size * hscale))
        for ch in chars:
            parts.append(f"<{codes.encode(ch).hex()}> {_n(adjust)}")
    return f"/F1 {_n(size)} Tf {_n(100.0 * hscale)} Tz {matrix} Tm [{' '.join(parts)}] TJ"


# --------------------------------------------------------------------------- font


@functools.cache
def _glyphless_truetype() -> bytes:
    """A minimal TrueType font: .notdef and one empty glyph, both 1 em wide.

    Built with fontTools at first use (a few ms) instead of shipping a binary: what
    it contains is visible here. Invisible text needs no outlines, only a real,
    non-.notdef glyph for every code (PDF/A 6.2.11.8) and consistent widths.
    """
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    fb = FontBuilder(unitsPerEm=1000, isTTF=True)
    order = [".notdef", "glyph1"]
    fb.setupGlyphOrder(order)
    fb.setupCharacterMap({0x20: "glyph1"})
    empty = TTGlyphPen(None).glyph()
    fb.setupGlyf({".notdef": empty, "glyph1": TTGlyphPen(None).glyph()})
    fb.setupHorizontalMetrics({".notdef": (1000, 0), "glyph1": (1000, 0)})
    fb.setupHorizontalHeader(ascent=_ASCENT, descent=_DESCENT)
    fb.setupNameTable({"familyName": _FONT_NAME, "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=_ASCENT, sTypoDescender=_DESCENT, usWinAscent=_ASCENT,
                usWinDescent=-_DESCENT, fsType=0)
    fb.setupPost()
    buf = io.BytesIO()
    fb.save(buf)
    return buf.getvalue()


def _to_unicode_cmap(codes: _CodeMap) -> bytes:
    entries = [f"<{code:04X}> <{ch.encode('utf-16-be').hex().upper()}>" for ch, code in codes.items()]
    chunks = []
    for i in range(0, len(entries), 100):
        block = entries[i: i + 100]
        chunks.append(f"{len(block)} beginbfchar\n" + "\n".join(block) + "\nendbfchar")
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        + "\n".join(chunks)
        + "\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def _make_font(pdf: Pdf, codes: _CodeMap) -> pikepdf.Object:
    program = _glyphless_truetype()
    font_file = pdf.make_stream(zlib.compress(program, 9), Filter=Name.FlateDecode, Length1=len(program))
    descriptor = pdf.make_indirect(Dictionary(
        Type=Name.FontDescriptor, FontName=Name("/" + _FONT_NAME), Flags=4,
        FontBBox=Array([0, _DESCENT, 1000, _ASCENT]), ItalicAngle=0, Ascent=_ASCENT,
        Descent=_DESCENT, CapHeight=_ASCENT, StemV=80, FontFile2=font_file,
    ))
    # CID 0 -> GID 0 (.notdef, never used); CIDs 1..N -> the one empty glyph
    gid_map = b"\x00\x00" + b"\x00\x01" * len(codes)
    cidfont = pdf.make_indirect(Dictionary(
        Type=Name.Font, Subtype=Name.CIDFontType2, BaseFont=Name("/" + _FONT_NAME),
        CIDSystemInfo=Dictionary(Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"),
                                 Supplement=0),
        FontDescriptor=descriptor, DW=1000,
        CIDToGIDMap=pdf.make_stream(zlib.compress(gid_map, 9), Filter=Name.FlateDecode),
    ))
    to_unicode = pdf.make_stream(zlib.compress(_to_unicode_cmap(codes), 9), Filter=Name.FlateDecode)
    return pdf.make_indirect(Dictionary(
        Type=Name.Font, Subtype=Name.Type0, BaseFont=Name("/" + _FONT_NAME),
        Encoding=Name("/Identity-H"), DescendantFonts=Array([cidfont]), ToUnicode=to_unicode,
    ))


# --------------------------------------------------------------------------- metadata


def _write_metadata(pdf: Pdf, info: PdfInfo) -> None:
    """Dublin Core in XMP; pikepdf.pdfa.save adds the PDF/A identification."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
        if info.title:
            meta["dc:title"] = info.title
        if info.creator:
            meta["dc:creator"] = [info.creator]
        if info.date:
            meta["dc:date"] = [info.date.isoformat()]
        if info.record_id:
            meta["dc:identifier"] = info.record_id
        if info.language:
            meta["dc:language"] = {info.language}
        if info.subject:
            meta["dc:description"] = info.subject
        keywords = [k for k in info.keywords if k]
        if keywords:
            meta["dc:subject"] = set(keywords)
            meta["pdf:Keywords"] = ", ".join(keywords)
        meta["xmp:CreatorTool"] = "kiroku"
        meta["xmp:CreateDate"] = now
        meta["xmp:ModifyDate"] = now
