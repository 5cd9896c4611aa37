"""Stage "load": read a scan file into page images, refusing what cannot be archived.

Why this module is careful rather than clever:

* A records officer drops whatever the scanner or another office produced into the
  inbox, with whatever name it has. The format is therefore decided from the file's
  first bytes (magic numbers), never from its extension.
* The archive must show the scan as it was scanned. A PDF page that is exactly one
  full-page image (no mask, nothing else drawn, square pixels) is therefore not
  re-rasterised: its image XObject is extracted as it is stored, and a page stored as
  JPEG keeps its JPEG stream (``SourcePage.jpeg_bytes``) so that the archive PDF can
  embed the very same bytes when the page needs no turning. Every other page (masks,
  several images, non-square pixels, typed text, vector drawing, a colour space pikepdf
  cannot convert) is rendered by poppler at a resolution fitting its images
  (processors.reading.pdfrender): taking "the" image of such a page lost titles,
  figures and half the page height (issue 8). PDF pages carry their shown size
  (``page_size_pt``, ``user_unit``) so the archive page is the same size.
* PDFs as offices make them: a copier's "searchable PDF" is read again like any scan,
  its own text kept as ``source_text`` (a second witness); a born-digital page (no
  image) with trustworthy text keeps that text (``pdf_lines``, no OCR); text without a
  Unicode mapping is flagged ``pdf_text_unreadable`` and the page is OCR'd.
* Everything that cannot be archived honestly raises :class:`InputError` with a message
  written for the person who has to deal with the file, plain Japanese first and the
  English detail after (it goes into the quarantine reason file as it is): empty,
  truncated or corrupt files, encrypted or damaged PDFs, PDFs with no content at all,
  XFA forms, signed PDFs, decompression bombs, images too small to be a page,
  unsupported formats.

Resolution policy (``dpi_assumed``):
    A scan's resolution is needed to give the archive page its real paper size and to
    scale the page for OCR. PNG, JPEG and TIFF files often store none (no pHYs chunk,
    JFIF density 1x1 "aspect only", TIFF without ResolutionUnit) or a placeholder such
    as 72 or 96 dpi written by software that did not know. Any stored resolution of
    96 dpi or less is therefore treated as "not credible", like OCRmyPDF does, and the
    page gets ``default_dpi`` (300, the usual scanner setting for records) with
    ``dpi_assumed=True`` so that later stages and the record can say so. Stored values
    that are within 0.5 % of a whole number are snapped to it (PNG stores pixels per
    metre, so 300 dpi comes back as 299.9994). For PDF pages the resolution is a fact
    of the page, not a tag: pixels divided by the size the image is drawn at (for a
    full-page scan that is the MediaBox), times /UserUnit.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from processors.reading.pages import InputError, LoadedDocument, SourcePage

# An image whose sides are both under this many pixels cannot be a document page
# (yomitoku's 10x10 test JPEG); a narrow strip such as OCRmyPDF's 400x50 crom.png can.
MIN_PAGE_SIDE_PX = 100
# ...but a page thinner than this in either direction is a sliver, not a page.
MIN_PAGE_THIN_SIDE_PX = 16
# Stored resolutions at or below this are placeholders, not measurements.
MAX_NOT_CREDIBLE_DPI = 96.0

_TIFF_ENCODINGS = {
    "group4": "ccitt",
    "group3": "ccitt",
    "tiff_ccitt": "ccitt",
    "tiff_lzw": "lzw",
    "jpeg": "jpeg",
    "tiff_jpeg": "jpeg",
    "tiff_adobe_deflate": "flate",
    "tiff_deflate": "flate",
    "packbits": "packbits",
    "raw": "raw",
    "webp": "webp",
    "lzma": "lzma",
    "zstd": "zstd",
}

_PDF_ENCODINGS = {
    "/DCTDecode": "jpeg",
    "/CCITTFaxDecode": "ccitt",
    "/JBIG2Decode": "jbig2",
    "/JPXDecode": "jpx",
    "/FlateDecode": "flate",
    "/LZWDecode": "lzw",
    "/RunLengthDecode": "runlength",
}


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so that large scans do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detect_format(head: bytes) -> str | None:
    """Container format from the first bytes of a file: png, jpeg, tiff, pdf, or None.

    Extensions lie (scanner software writes .jpg for TIFFs, people rename files), the
    magic numbers do not. PDF is allowed some junk before %PDF, as readers do.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    return None


def _describe_unknown(head: bytes) -> str:
    """A human name for common formats kiroku does not take, for the refusal message."""
    known = [
        (b"GIF8", "GIF"),
        (b"BM", "BMP"),
        (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
        (b"PK\x03\x04", "ZIP/Office"),
        (b"\xd0\xcf\x11\xe0", "old Microsoft Office"),
        (b"AT&TFORM", "DjVu"),
    ]
    for magic, name in known:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "HEIC"
    return "unknown"


def _jp(where: str) -> str:
    """The English page note of a message (", page 3") as Japanese (" 3ページ目")."""
    m = re.fullmatch(r", page (\d+)", where or "")
    return f" {m.group(1)}ページ目" if m else where


def snap_dpi(value: float) -> float:
    """Round a stored resolution: whole numbers when within 0.5 %, else 2 decimals."""
    nearest = round(value)
    if nearest > 0 and abs(value - nearest) <= 0.005 * nearest:
        return float(nearest)
    return round(float(value), 2)


def credible_dpi(
    stored: tuple[float, float] | None, default_dpi: int
) -> tuple[tuple[float, float], bool]:
    """Apply the resolution policy of the module docstring: returns (dpi, assumed)."""
    if stored:
        try:
            x, y = float(stored[0]), float(stored[1])
        except (TypeError, ValueError, IndexError):
            x = y = 0.0
        if math.isfinite(x) and math.isfinite(y) and x > MAX_NOT_CREDIBLE_DPI and y > MAX_NOT_CREDIBLE_DPI:
            return (snap_dpi(x), snap_dpi(y)), False
    return (float(default_dpi), float(default_dpi)), True


def check_pixels(name: str, width: int, height: int, max_pixels: int, where: str = "") -> None:
    """Refuse an image from its *declared* size, before a single pixel is decoded.

    A 12 KB PDF can declare a 35000x35000 CCITT image (1.2 Gpx); decoding it first and
    checking afterwards would already have exhausted memory.
    """
    if width <= 0 or height <= 0:
        raise InputError(f"{name}{_jp(where)}: 画像の大きさが0と記録されています。ファイルが壊れています。",
                         f"the image declares an empty size ({width}x{height} px); the file is damaged")
    if width * height > max_pixels:
        raise InputError(
            f"{name}{_jp(where)}: 画像が大きすぎるため開きませんでした（{width}x{height}画素、"
            f"{width * height / 1e6:.0f}メガ画素。上限は{max_pixels / 1e6:.0f}メガ画素）。"
            "スキャンの設定を確認してください。",
            f"the image is {width}x{height} px ({width * height / 1e6:.0f} megapixels), more than the limit of "
            f"{max_pixels / 1e6:.0f} megapixels. It looks like a decompression bomb or a wrongly made scan; it was "
            "not opened. If the scan is genuine, raise max_image_pixels",
        )
    if (width < MIN_PAGE_SIDE_PX and height < MIN_PAGE_SIDE_PX) or min(width, height) < MIN_PAGE_THIN_SIDE_PX:
        raise InputError(
            f"{name}{_jp(where)}: 画像が小さすぎて文書のページではありません（{width}x{height}画素）。",
            f"the image is only {width}x{height} px, too small to be a scanned document page",
        )


def flatten_to_page_mode(img: Image.Image, icc_profile: bytes | None = None, name: str = "") -> Image.Image:
    """Bring any decoded image to one of the page modes "1", "L" or "RGB".

    Alpha is composited onto white (paper), because PDF/A-1 forbids soft masks and a
    transparent scan means "nothing there". Palette images become gray when every
    palette entry is gray, else RGB. 16-bit gray keeps its top 8 bits. CMYK is only
    converted when an ICC profile says what the numbers mean; without one the colours
    would be guessed, so it is refused.
    """
    mode = img.mode
    if mode in ("1", "L", "RGB"):
        return img
    if mode == "P":
        if "transparency" in img.info:
            return flatten_to_page_mode(img.convert("RGBA"), name=name)
        palette = img.getpalette() or []
        used = sorted(set(idx for _n, idx in (img.getcolors(256) or [])))
        rgb = [tuple(palette[3 * i : 3 * i + 3]) for i in used if 3 * i + 2 < len(palette)]
        if rgb and all(r == g == b for r, g, b in rgb):
            values = {r for r, _g, _b in rgb}
            if values <= {0, 255}:
                return img.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
            return img.convert("L")
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(white, rgba).convert("RGB")
        if mode in ("LA", "La"):
            return flat.convert("L")
        return flat
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32 if mode == "I" else np.uint16).astype(np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if mode == "CMYK":
        if not icc_profile:
            raise InputError(
                f"{name}: CMYKカラーの画像にICCプロファイルがなく、色を正しく再現できません。"
                "RGBかグレースケールでスキャンし直してください。",
                "the image is in CMYK colour without an ICC profile, so its colours cannot be reproduced "
                "faithfully. Re-scan or export it as RGB or grayscale",
            )
        from PIL import ImageCms

        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError) as exc:
            raise InputError(f"{name}: CMYK画像のICCプロファイルが使えません。RGBかグレースケールでスキャンし直してください。",
                             f"the CMYK image carries an ICC profile that cannot be used ({exc})") from exc
    # YCbCr, LAB, HSV and the like
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"{name}: この画像の色形式（{mode}）は保存できません。RGBかグレースケールでスキャンし直してください。",
                         f"the image uses the colour mode {mode}, which kiroku cannot archive") from exc


def _decode(img: Image.Image, name: str, where: str = "") -> None:
    """Decode pixels now, turning Pillow's errors into a records officer's message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name}{_jp(where)}: 画像が大きすぎるため安全に開けません。スキャンの設定を確認してください。",
                         f"the image is too large to open safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise InputError(f"{name}{_jp(where)}: 画像データが途中で切れているか壊れていて読めません。スキャンし直すか、ファイルを送り直してもらってください。",
                         f"the image data is truncated or corrupt and cannot be decoded ({exc})") from exc


def _open_raster(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{name}: 画像が大きすぎるため安全に開けません。スキャンの設定を確認してください。",
            f"the image is too large to open safely ({exc}). It looks like a decompression bomb",
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name}: 画像として読めません。ファイルが壊れているか途中で切れています。スキャンし直してください。",
                         f"the file cannot be read as an image; it is corrupt or truncated ({exc})") from exc


# --------------------------------------------------------------------------------------
# PNG / JPEG / TIFF
# --------------------------------------------------------------------------------------


def _load_png(data: bytes, name: str, max_pixels: int, default_dpi: int) -> list[SourcePage]:
    img = _open_raster(data, name)
    check_pixels(name, img.width, img.height, max_pixels)
    dpi, assumed = credible_dpi(img.info.get("dpi"), default_dpi)
    _decode(img, name)
    page_img = flatten_to_page_mode(img, img.info.get("icc_profile"), name)
    return [SourcePage(index=0, image=page_img, dpi=dpi, encoding="png", dpi_assumed=assumed)]


def _load_jpeg(data: bytes, name: str, max_pixels: int, default_dpi: int) -> list[SourcePage]:
    img = _open_raster(data, name)
    check_pixels(name, img.width, img.height, max_pixels)
    dpi, assumed = credible_dpi(img.info.get("dpi"), default_dpi)
    _decode(img, name)
    mode = img.mode
    orientation = 1
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not make a readable scan unreadable
        orientation = 1
    page_img = flatten_to_page_mode(img, img.info.get("icc_profile"), name)
    jpeg_bytes = data if mode in ("L", "RGB") else None
    if orientation != 1:
        # A camera's "turn me" flag is honoured like a PDF's /Rotate; the stored JPEG
        # then no longer matches what is shown, so it cannot be reused as it is.
        page_img = _exif_turn(page_img, orientation)
        jpeg_bytes = None
        if orientation in (5, 6, 7, 8):
            dpi = (dpi[1], dpi[0])
    return [SourcePage(index=0, image=page_img, dpi=dpi, encoding="jpeg", jpeg_bytes=jpeg_bytes, dpi_assumed=assumed)]


def _exif_turn(img: Image.Image, orientation: int) -> Image.Image:
    ops = {
        2: [Image.Transpose.FLIP_LEFT_RIGHT],
        3: [Image.Transpose.ROTATE_180],
        4: [Image.Transpose.FLIP_TOP_BOTTOM],
        5: [Image.Transpose.TRANSPOSE],
        6: [Image.Transpose.ROTATE_270],
        7: [Image.Transpose.TRANSVERSE],
        8: [Image.Transpose.ROTATE_90],
    }
    for op in ops.get(orientation, []):
        img = img.transpose(op)
    return img


def _load_tiff(data: bytes, name: str, max_pixels: int, default_dpi: int) -> list[SourcePage]:
    img = _open_raster(data, name)
    pages: list[SourcePage] = []
    try:
        for i, frame in enumerate(ImageSequence.Iterator(img)):
            where = f", page {i + 1}"
            check_pixels(name, frame.width, frame.height, max_pixels, where)
            dpi, assumed = credible_dpi(frame.info.get("dpi"), default_dpi)
            encoding = _TIFF_ENCODINGS.get(str(frame.info.get("compression", "raw")), str(frame.info.get("compression")))
            _decode(frame, name, where)
            page_img = flatten_to_page_mode(frame.copy(), frame.info.get("icc_profile"), f"{name}{where}")
            pages.append(SourcePage(index=i, image=page_img, dpi=dpi, encoding=encoding, dpi_assumed=assumed))
    except InputError:
        raise
    except (OSError, EOFError, ValueError, SyntaxError) as exc:
        raise InputError(
            f"{name}: TIFFファイルが{len(pages)}ページ目の後で壊れていて、全部を読めません。スキャンし直してください。",
            f"the TIFF file is damaged after page {len(pages)} and cannot be read completely ({exc})",
        ) from exc
    if not pages:
        raise InputError(f"{name}: TIFFファイルにページの画像がありません。", "the TIFF file contains no page image")
    return pages


# --------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------

_TEXT_OPS = {"Tj", "TJ", "'", '"'}
_PAINT_OPS = {"f", "F", "f*", "S", "s", "B", "B*", "b", "b*", "sh", "Do", "INLINE IMAGE"} | _TEXT_OPS


def _matmul(m1: tuple[float, ...], m2: tuple[float, ...]) -> tuple[float, ...]:
    """PDF matrix product m1 x m2 (row vectors: a point is transformed by m1 first)."""
    a1, b1, c1, d1, e1, f1 = m1
    a2, b2, c2, d2, e2, f2 = m2
    return (
        a1 * a2 + b1 * c2,
        a1 * b2 + b1 * d2,
        c1 * a2 + d1 * c2,
        c1 * b2 + d1 * d2,
        e1 * a2 + f1 * c2 + e2,
        e1 * b2 + f1 * d2 + f2,
    )


@dataclass
class _Drawn:
    """One image painted on a page, with the matrix that maps its unit square."""

    obj: object  # pikepdf.Stream or PdfInlineImage
    ctm: tuple[float, ...]
    inline: bool = False

    @property
    def area_pt2(self) -> float:
        a, b, c, d, _e, _f = self.ctm
        return abs(a * d - b * c)


@dataclass
class _PageScan:
    images: list[_Drawn]
    has_text: bool  # any text shown, visible or not (a scanner's OCR layer is invisible)
    paints: bool  # anything drawn at all
    visible_text: bool = False  # text drawn in a visible render mode (typed text, not an OCR layer)
    vector: bool = False  # paths filled or stroked, shadings: drawing that is not an image


_VECTOR_OPS = {"f", "F", "f*", "S", "s", "B", "B*", "b", "b*", "sh"}


def _scan_content(pikepdf_mod, container, ctm0: tuple[float, ...], depth: int, seen: set,
                  tr0: int = 0) -> _PageScan:
    """Walk a page's (or form's) content stream, tracking the CTM and the text render mode.

    Collects the images drawn with their matrices (also inside Form XObjects, where
    some PDF producers wrap the scan), whether text is shown (and whether visibly:
    render mode 3 is the invisible OCR layer scanners add), whether paths or shadings
    are painted, and whether anything is painted at all.
    """
    result = _PageScan(images=[], has_text=False, paints=False)
    ops = pikepdf_mod.parse_content_stream(container)
    resources = container.get("/Resources") if hasattr(container, "get") else None
    xobjects = resources.get("/XObject") if resources is not None else None
    stack: list[tuple[tuple[float, ...], int]] = []
    ctm, tr = ctm0, tr0
    for operands, operator in ops:
        op = str(operator)
        if op in _PAINT_OPS:
            result.paints = True
        if op == "q":
            stack.append((ctm, tr))
        elif op == "Q":
            if stack:
                ctm, tr = stack.pop()
        elif op == "cm" and len(operands) == 6:
            ctm = _matmul(tuple(float(v) for v in operands), ctm)
        elif op == "Tr" and operands:
            try:
                tr = int(operands[0])
            except (TypeError, ValueError):
                pass
        elif op in _TEXT_OPS:
            result.has_text = True
            if tr not in (3, 7):
                result.visible_text = True
        elif op in _VECTOR_OPS:
            result.vector = True
        elif op == "INLINE IMAGE":
            result.images.append(_Drawn(obj=operands[0], ctm=ctm, inline=True))
        elif op == "Do" and operands and xobjects is not None:
            xobj = xobjects.get(operands[0])
            if xobj is None:
                continue
            subtype = xobj.get("/Subtype")
            if subtype == "/Image":
                result.images.append(_Drawn(obj=xobj, ctm=ctm))
            elif subtype == "/Form" and depth < 8:
                key = xobj.objgen
                if key in seen and key != (0, 0):
                    continue
                seen.add(key)
                matrix = tuple(float(v) for v in xobj.get("/Matrix", [1, 0, 0, 1, 0, 0]))
                inner = _scan_content(pikepdf_mod, xobj, _matmul(matrix, ctm), depth + 1, seen, tr)
                seen.discard(key)
                result.images.extend(inner.images)
                result.has_text |= inner.has_text
                result.paints |= inner.paints
                result.visible_text |= inner.visible_text
                result.vector |= inner.vector
    return result


def _inherited(page_obj, key: str):
    node = page_obj
    for _ in range(64):
        if node is None:
            return None
        if key in node:
            return node[key]
        node = node.get("/Parent")
    return None


def quarter_turns_from_ctm(ctm: tuple[float, ...]) -> tuple[int, bool]:
    """How the page shows an image: (clockwise quarter turns, mirrored top-bottom).

    The image's first row is drawn at the top of its unit square. On screen (y down)
    the image's x axis runs along (a, -b) and its row direction along (-c, d); the
    angle of the x axis, rounded to 90 degrees, is the turn a viewer sees. A small
    residual angle (a skew drawn by the producer) is left to the deskew stage.
    """
    a, b, c, d, _e, _f = ctm
    angle = math.degrees(math.atan2(-b, a))  # clockwise on screen
    turns = int(round(angle / 90.0)) % 4
    mirrored = (a * d - b * c) < 0
    return turns, mirrored


def _turn(img: Image.Image, clockwise_quarters: int) -> Image.Image:
    clockwise_quarters %= 4
    if clockwise_quarters == 1:
        return img.transpose(Image.Transpose.ROTATE_270)
    if clockwise_quarters == 2:
        return img.transpose(Image.Transpose.ROTATE_180)
    if clockwise_quarters == 3:
        return img.transpose(Image.Transpose.ROTATE_90)
    return img


def _extract_with_pdfimages(path: Path, page_no: int, objgen: tuple[int, int], name: str, where: str) -> Image.Image:
    """Decode an image XObject with poppler's pdfimages (for JBIG2 without jbig2dec).

    pdfimages writes each image object as stored (it does not render the page), so
    this is extraction, not re-rasterising.
    """
    exe = shutil.which("pdfimages")
    if exe is None:
        raise InputError(f"{name}{_jp(where)}: ページ画像の形式（JBIG2）を読むためのpoppler-utilsがありません。管理者に連絡してください。",
                         "the page image uses an encoding kiroku cannot decode here (JBIG2 needs poppler-utils)")
    listing = subprocess.run(
        [exe, "-list", "-f", str(page_no), "-l", str(page_no), str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    index = None
    rows = [ln.split() for ln in listing.stdout.splitlines()[2:] if ln.strip()]
    for row_no, row in enumerate(rows):
        try:
            if int(row[10]) == objgen[0] and row[2] == "image":
                index = row_no
                break
        except (IndexError, ValueError):
            continue
    if index is None:
        raise InputError(f"{name}{_jp(where)}: ページ画像が見つからず読めません。PDFが壊れている可能性があります。",
                         "the page image could not be located for decoding")
    with tempfile.TemporaryDirectory(prefix="kiroku-pdfimages-") as tmp:
        proc = subprocess.run(
            [exe, "-png", "-f", str(page_no), "-l", str(page_no), str(path), str(Path(tmp) / "im")],
            capture_output=True, timeout=300, check=False,
        )
        files = sorted(Path(tmp).glob("im-*.png"))
        if proc.returncode != 0 or index >= len(files):
            raise InputError(f"{name}{_jp(where)}: ページ画像が壊れていて読めません。",
                             "the page image is damaged and cannot be decoded")
        with Image.open(files[index]) as im:
            im.load()
            return im.copy()


class _NeedsRendering(InputError):
    """The image object cannot be converted as stored; the page is rendered instead."""


def _pdf_image_to_pil(
    pikepdf_mod, drawn: _Drawn, path: Path, page_no: int, name: str, where: str, cache: dict | None = None
) -> tuple[Image.Image, str, bytes | None]:
    """Decode one image object as stored. Returns (image, encoding, jpeg_bytes).

    ``cache`` maps object ids to results, because producers reuse one image object on
    several pages (OCRmyPDF's cardinal.pdf draws the same scan four times, turned).
    """
    obj = drawn.obj
    if not drawn.inline and cache is not None:
        key = tuple(obj.objgen)
        if key != (0, 0):
            if key not in cache:
                cache[key] = _pdf_image_to_pil(pikepdf_mod, drawn, path, page_no, name, where, None)
            return cache[key]
    if drawn.inline:
        img = obj.as_pil_image()
        return img, "inline", None
    filters = obj.get("/Filter")
    if filters is None:
        filter_names: list[str] = []
    elif isinstance(filters, pikepdf_mod.Array):
        filter_names = [str(f) for f in filters]
    else:
        filter_names = [str(filters)]
    encoding = _PDF_ENCODINGS.get(filter_names[-1], "raw") if filter_names else "raw"
    pdfimage = pikepdf_mod.PdfImage(obj)
    jpeg_bytes = None
    try:
        img = pdfimage.as_pil_image()
    except pikepdf_mod.DependencyError:
        img = _extract_with_pdfimages(path, page_no, obj.objgen, name, where)
    except (pikepdf_mod.UnsupportedImageTypeError, pikepdf_mod.HifiPrintImageNotTranscodableError, NotImplementedError) as exc:
        raise _NeedsRendering(
            f"{name}{_jp(where)}: ページ画像の色空間か形式をそのまま変換できません。",
            f"the page image uses a colour space or encoding kiroku cannot convert faithfully ({type(exc).__name__})",
        ) from exc
    except (pikepdf_mod.PdfError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{name}{_jp(where)}: ページ画像が壊れていて読めません。",
                         f"the page image is damaged and cannot be decoded ({exc})") from exc
    if img.mode == "P":
        img = _fix_indexed(pdfimage, img, name, where)
    if filter_names == ["/DCTDecode"] and img.mode in ("L", "RGB") and "/Decode" not in obj and "/SMask" not in obj:
        jpeg_bytes = bytes(obj.read_raw_bytes())
    icc = None
    try:
        if pdfimage.icc is not None:
            icc = pdfimage.icc.tobytes()
    except Exception:
        icc = None
    if img.mode == "CMYK" and icc is None:
        raise InputError(
            f"{name}{_jp(where)}: CMYKカラーのページ画像にICCプロファイルがなく、色を正しく再現できません。"
            "RGBかグレースケールで作り直してください。",
            "the page image is CMYK without an ICC profile, so its colours cannot be reproduced faithfully. "
            "Export the scan as RGB or grayscale",
        )
    return img, encoding, jpeg_bytes


def _fix_indexed(pdfimage, img: Image.Image, name: str, where: str) -> Image.Image:
    """Rebuild a PDF /Indexed image from its own lookup table.

    pikepdf hands 1-, 2- and 4-bit indexed images over with pixel values spread over
    0..255 and a palette that does not match them (a 1-bit black/white page would come
    out all black), so the indices and the lookup are applied here.
    """
    try:
        base, lookup = pdfimage.palette
    except Exception:
        return img
    bpc = int(pdfimage.bits_per_component or 8)
    ncomp = {"RGB": 3, "L": 1, "CMYK": 4}.get(str(base))
    if ncomp is None:
        return img
    lut = np.frombuffer(bytes(lookup), dtype=np.uint8)
    entries = len(lut) // ncomp
    if entries == 0:
        return img
    lut = lut[: entries * ncomp].reshape(entries, ncomp)
    idx = np.asarray(img, dtype=np.uint8)
    if bpc < 8 and idx.max(initial=0) >= entries:
        levels = (1 << bpc) - 1
        idx = np.round(idx.astype(np.float32) / 255.0 * levels).astype(np.uint8)
    idx = np.minimum(idx, entries - 1)
    if ncomp == 4:
        raise InputError(
            f"{name}{_jp(where)}: CMYKカラーのページ画像にICCプロファイルがなく、色を正しく再現できません。"
            "RGBかグレースケールで作り直してください。",
            "the page image is indexed CMYK without an ICC profile, so its colours cannot be reproduced "
            "faithfully. Export the scan as RGB or grayscale",
        )
    out = lut[idx]
    if ncomp == 1:
        return flatten_to_page_mode(Image.fromarray(out[..., 0], "L"), None, name)
    if np.all(lut[:, 0] == lut[:, 1]) and np.all(lut[:, 1] == lut[:, 2]):
        gray = out[..., 0]
        if set(np.unique(lut[:, 0]).tolist()) <= {0, 255}:
            return Image.fromarray(gray, "L").convert("1", dither=Image.Dither.NONE)
        return Image.fromarray(gray, "L")
    return Image.fromarray(out, "RGB")


def _pdf_reason(exc: Exception) -> str:
    """qpdf's message without the leading stream or file name, which means nothing to a reader."""
    text = str(exc)
    if text.startswith("stream <") and ">: " in text:
        text = text.split(">: ", 1)[1]
    return text


def _load_pdf(path: Path, data: bytes, name: str, max_pixels: int, default_dpi: int) -> list[SourcePage]:
    import pikepdf

    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError as exc:
        raise InputError(
            f"{name}: PDFが暗号化されています（パスワード付き）。パスワードを外したものを送ってもらってください。",
            "the PDF is encrypted (password-protected). Remove the password or ask the sender for an "
            "unprotected copy; kiroku does not archive encrypted files",
        ) from exc
    except (pikepdf.PdfError, RuntimeError, ValueError) as exc:
        raise InputError(f"{name}: PDFが壊れているか、正しいPDFではないため読めません。元のファイルを送り直してもらってください。",
                         f"the PDF is damaged or not a valid PDF and cannot be read ({_pdf_reason(exc)})") from exc
    try:
        return _pdf_pages(pikepdf, pdf, path, name, max_pixels, default_dpi)
    except InputError:
        raise
    except (pikepdf.PdfError, RuntimeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InputError(f"{name}: PDFが壊れていて読めません。元のファイルを送り直してもらってください。",
                         f"the PDF is damaged and cannot be read ({_pdf_reason(exc)})") from exc
    finally:
        pdf.close()


# Rendering resolution for pages that are not one plain scan (see _pdf_pages).
RENDER_TEXT_DPI = 300.0  # typed text and vector drawing: the usual scanner setting for records
RENDER_MIN_DPI = 10.0
RENDER_MAX_DPI = 600.0
RENDER_MAX_PIXELS = 60_000_000  # a rendered page is decoded in memory (RGB: 180 MB at this size)


def _image_size(d: _Drawn) -> tuple[int, int]:
    o = d.obj
    if d.inline:
        return int(o.width), int(o.height)
    return int(o.get("/Width", 0)), int(o.get("/Height", 0))


def _drawn_bbox(ctm: tuple[float, ...]) -> tuple[float, float, float, float]:
    """The bounding box, in page space, of the unit square an image is drawn into."""
    a, b, c, d, e, f = ctm
    xs = [e, a + e, c + e, a + c + e]
    ys = [f, b + f, d + f, b + d + f]
    return min(xs), min(ys), max(xs), max(ys)


def _drawn_dpi(d: _Drawn, user_unit: float) -> tuple[float, float]:
    """Pixels per inch of an image along its own axes as drawn (0 when drawn without size)."""
    a, b, c, dd, _e, _f = d.ctm
    w_in = math.hypot(a, b) * user_unit / 72.0
    h_in = math.hypot(c, dd) * user_unit / 72.0
    w_px, h_px = _image_size(d)
    return (w_px / w_in if w_in > 1e-6 else 0.0), (h_px / h_in if h_in > 1e-6 else 0.0)


def _is_plain_scan(scan: _PageScan, box: tuple[float, float, float, float], user_unit: float) -> bool:
    """A page that is exactly one full-page image: no mask, nothing else drawn, square pixels.

    Only such a page is archived from its image object as stored (its JPEG bytes kept);
    anything else is rendered, so that the archive shows what the page shows.
    """
    if len(scan.images) != 1 or scan.visible_text or scan.vector:
        return False
    d = scan.images[0]
    if not d.inline and (bool(d.obj.get("/ImageMask", False)) or "/SMask" in d.obj or "/Mask" in d.obj):
        return False
    if d.inline and bool(getattr(d.obj, "image_mask", False)):
        return False
    x0, y0, x1, y1 = _drawn_bbox(d.ctm)
    bx0, by0, bx1, by1 = box
    tol = 0.01 * max(bx1 - bx0, by1 - by0) + 1.0
    if max(abs(x0 - bx0), abs(y0 - by0), abs(x1 - bx1), abs(y1 - by1)) > tol:
        return False
    dpi_x, dpi_y = _drawn_dpi(d, user_unit)
    return dpi_x > 0 and dpi_y > 0 and abs(dpi_x - dpi_y) <= 0.01 * max(dpi_x, dpi_y)


def _render_dpi(scan: _PageScan, shown_in: tuple[float, float], max_pixels: int, user_unit: float = 1.0) -> float:
    """A resolution that fits the page's images (their finest), 300 dpi for typed text and
    drawing, within RENDER_MIN_DPI..RENDER_MAX_DPI and the pixel budget."""
    page_area = max(shown_in[0] * shown_in[1], 1e-6)
    dpis = []
    for d in scan.images:
        x0, y0, x1, y1 = _drawn_bbox(d.ctm)
        if (x1 - x0) * (y1 - y0) * user_unit * user_unit / 72.0 / 72.0 < 0.01 * page_area:
            continue  # a stamp, a logo, a mask drawn 1 pt wide: not what sets the page's resolution
        dpis.append(max(_drawn_dpi(d, user_unit)))
    dpi = max(dpis) if dpis else RENDER_TEXT_DPI
    if scan.visible_text or scan.vector or not dpis:
        dpi = max(dpi, RENDER_TEXT_DPI)
    # pages of pictures only are rendered at their pictures' own resolution, however coarse
    # (poster.pdf: 10 dpi over 250x500 in): finer would add pixels the scan never had
    dpi = min(max(dpi, RENDER_MIN_DPI), RENDER_MAX_DPI)
    budget = min(max_pixels, RENDER_MAX_PIXELS)
    if page_area * dpi * dpi > budget:
        dpi = math.sqrt(budget / page_area) * 0.99
    return dpi


def _page_box(page_obj) -> tuple[float, float, float, float]:
    """The crop box (what viewers show), within the media box."""
    media = [float(v) for v in (_inherited(page_obj, "/MediaBox") or [0, 0, 612, 792])]
    mx0, mx1 = sorted((media[0], media[2]))
    my0, my1 = sorted((media[1], media[3]))
    crop = _inherited(page_obj, "/CropBox")
    if crop is None:
        return mx0, my0, mx1, my1
    c = [float(v) for v in crop]
    cx0, cx1 = sorted((c[0], c[2]))
    cy0, cy1 = sorted((c[1], c[3]))
    box = max(mx0, cx0), max(my0, cy0), min(mx1, cx1), min(my1, cy1)
    return box if box[2] > box[0] and box[3] > box[1] else (mx0, my0, mx1, my1)


def _pdf_pages(pikepdf, pdf, path: Path, name: str, max_pixels: int, default_dpi: int) -> list[SourcePage]:
    """Every page of a PDF as a SourcePage (see load_document for what kind of page becomes what)."""
    from processors.reading import pdfrender

    if pdf.is_encrypted:
        raise InputError(
            f"{name}: PDFが暗号化されています（利用制限付き）。暗号化を解除してから入れ直してください。",
            "the PDF is encrypted (it has usage restrictions); kiroku does not archive encrypted files",
        )
    root = pdf.Root
    acro = root.get("/AcroForm")
    if root.get("/NeedsRendering") or (acro is not None and "/XFA" in acro):
        raise InputError(
            f"{name}: このPDFはXFAフォーム（LiveCycle）で、専用ソフトで表示しないと内容がありません。"
            "PDFに印刷し直すか、紙をスキャンしてください。",
            "the PDF is an XFA (LiveCycle) form whose content only exists when rendered by Adobe software",
        )
    if acro is not None and int(acro.get("/SigFlags", 0)) & 1:
        raise InputError(
            f"{name}: このPDFには電子署名があり、作り直すと署名が無効になります。スキャン文書ではなく電子文書として保存してください。",
            "the PDF is digitally signed; re-making it would invalidate the signature",
        )
    if len(pdf.pages) == 0:
        raise InputError(f"{name}: PDFにページがありません。", "the PDF has no pages")
    texts: list | None = None
    pages: list[SourcePage] = []
    empty: list[bool] = []
    decoded: dict = {}
    for i, page in enumerate(pdf.pages):
        where = f", page {i + 1}"
        jwhere = _jp(where)
        try:
            scan = _scan_content(pikepdf, page.obj, (1.0, 0.0, 0.0, 1.0, 0.0, 0.0), 0, set())
        except pikepdf.PdfError as exc:
            raise InputError(f"{name}{jwhere}: ページの内容が壊れていて読めません。",
                             f"the page content is damaged and cannot be read ({exc})") from exc
        user_unit = float(page.obj.get("/UserUnit", 1) or 1)
        box = _page_box(page.obj)
        box_w, box_h = box[2] - box[0], box[3] - box[1]
        rotate = int(round(float(_inherited(page.obj, "/Rotate") or 0) / 90.0)) % 4
        shown = (box_h, box_w) if rotate % 2 else (box_w, box_h)  # user units
        source_text, trusted, warnings = None, False, []
        if scan.has_text:
            if texts is None:
                texts = pdfrender.document_text(path) or []
            own = texts[i] if i < len(texts) else None
            found = own.text.strip() if own is not None else ""
            if found:
                trusted = pdfrender.text_is_trustworthy(found)
                if trusted:
                    source_text = found
                else:
                    warnings.append("pdf_text_unreadable")
        if not scan.paints:
            # Nothing painted at all (no /Contents, or only marked-content brackets): the
            # page is white paper, kept as a white bilevel page of the same size.
            dpi = float(default_dpi)
            w_in, h_in = shown[0] * user_unit / 72, shown[1] * user_unit / 72
            if w_in * dpi * h_in * dpi > max_pixels:
                dpi = math.sqrt(max_pixels / max(w_in * h_in, 1e-6)) * 0.99
            w, h = max(1, int(round(w_in * dpi))), max(1, int(round(h_in * dpi)))
            pages.append(SourcePage(index=i, image=Image.new("1", (w, h), 1), dpi=(dpi, dpi), encoding="none",
                                    page_size_pt=shown, user_unit=user_unit))
            empty.append(True)
            continue
        sp = None
        if _is_plain_scan(scan, box, user_unit):
            try:
                sp = _plain_scan_page(pikepdf, scan.images[0], path, i, name, where, jwhere, max_pixels, rotate,
                                      user_unit, decoded)
            except _NeedsRendering:
                sp = None  # a colour space pikepdf cannot convert (DeviceN): poppler can show it
        if sp is None:
            sp = _rendered_page(pikepdf, scan, path, i, name, jwhere, shown, user_unit, max_pixels)
            if not scan.images and not trusted and not pdfrender.has_ink(sp.image):
                empty.append(True)  # paints, but only white (blank.pdf's Illustrator page)
                pages.append(sp)
                continue
            if not scan.images and trusted and own is not None:
                sp.pdf_lines = pdfrender.lines_in_pixels(own, sp.image.size)
        sp.page_size_pt, sp.user_unit = shown, user_unit
        sp.source_text, sp.warnings = source_text, warnings
        pages.append(sp)
        empty.append(False)
    if all(empty):
        raise InputError(
            f"{name}: PDFに内容がありません（どのページにも画像も文字もありません）。スキャンし直してください。",
            "the PDF has no content: no page shows an image, text or drawing",
        )
    return pages


def _plain_scan_page(pikepdf, main: _Drawn, path: Path, i: int, name: str, where: str, jwhere: str, max_pixels: int,
                     rotate: int, user_unit: float, decoded: dict) -> SourcePage:
    """A page that is one full-page scan: its image object as stored, turned as the page shows it."""
    width, height = _image_size(main)
    check_pixels(name, width, height, max_pixels, where)
    img, encoding, jpeg_bytes = _pdf_image_to_pil(pikepdf, main, path, i + 1, name, where, decoded)
    img = flatten_to_page_mode(img, None if img.mode != "CMYK" else _icc_of(pikepdf, main), f"{name}{jwhere}")
    if jpeg_bytes is not None and img.mode not in ("L", "RGB"):
        jpeg_bytes = None
    turns, mirrored = quarter_turns_from_ctm(main.ctm)
    dpi_x, dpi_y = (snap_dpi(v) for v in _drawn_dpi(main, user_unit))
    if mirrored:
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        jpeg_bytes = None
    total = (turns + rotate) % 4
    if total:
        img = _turn(img, total)
        jpeg_bytes = None
    if total % 2:
        dpi_x, dpi_y = dpi_y, dpi_x
    return SourcePage(index=i, image=img, dpi=(dpi_x, dpi_y), encoding=encoding, jpeg_bytes=jpeg_bytes)


def _rendered_page(pikepdf, scan: _PageScan, path: Path, i: int, name: str, jwhere: str,
                   shown: tuple[float, float], user_unit: float, max_pixels: int) -> SourcePage:
    """A page rendered as a viewer shows it (masks, several images, non-square pixels, text, drawing)."""
    from processors.reading import pdfrender

    for d in scan.images:  # refuse a bomb before poppler decodes it
        w, h = _image_size(d)
        if w * h > max_pixels:
            check_pixels(name, w, h, max_pixels, f", page {i + 1}")
    shown_in = (shown[0] * user_unit / 72.0, shown[1] * user_unit / 72.0)
    dpi = snap_dpi(_render_dpi(scan, shown_in, max_pixels, user_unit))
    try:
        img = pdfrender.render_page(path, i + 1, dpi * user_unit)
    except pdfrender.PopplerMissing as exc:
        raise InputError(f"{name}{jwhere}: このページを表示するためのpoppler-utilsがインストールされていません。管理者に連絡してください。",
                         str(exc)) from exc
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        raise InputError(f"{name}{jwhere}: ページを表示できません。PDFが壊れている可能性があります。",
                         f"the page cannot be rendered ({exc})") from exc
    encodings = set()
    for d in scan.images:
        if d.inline:
            continue
        f = d.obj.get("/Filter")
        names = [str(x) for x in f] if isinstance(f, pikepdf.Array) else ([str(f)] if f is not None else [])
        if names:
            encodings.add(_PDF_ENCODINGS.get(names[-1], "raw"))
    # a page whose pictures were JPEG stays lossy (Flate would inflate the JPEG noise); else lossless
    encoding = "jpeg" if encodings & {"jpeg", "jpx"} else "render"
    if scan.images and not scan.visible_text and not scan.vector and all(_is_bilevel(d) for d in scan.images):
        # a bilevel scan drawn turned or masked stays bilevel (CCITT in the archive, not gray)
        img = img.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    return SourcePage(index=i, image=img, dpi=(round(dpi, 3), round(dpi, 3)), encoding=encoding)


def _is_bilevel(d: _Drawn) -> bool:
    o = d.obj
    if d.inline:
        return int(getattr(o, "bits_per_component", 8) or 8) == 1
    return bool(o.get("/ImageMask", False)) or int(o.get("/BitsPerComponent", 8) or 8) == 1


def _icc_of(pikepdf, drawn: _Drawn) -> bytes | None:
    try:
        icc = pikepdf.PdfImage(drawn.obj).icc
        return icc.tobytes() if icc is not None else None
    except Exception:
        return None


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def load_document(path: Path, *, max_pixels: int = 200_000_000, default_dpi: int = 300) -> LoadedDocument:
    """Read a scan file (PNG, JPEG, TIFF or scanned PDF) into page images.

    Returns a LoadedDocument whose pages are in mode "1" (bilevel stays bilevel), "L"
    or "RGB", with their resolution (see the policy in the module docstring). A PDF
    page that is one plain full-page scan is its own image object, turned by the
    page's /Rotate and by the quarter turn the content stream draws it with; any
    other PDF page is rendered as a viewer shows it. Raises InputError, with a
    message meant for a records officer, for anything that cannot be archived.
    """
    path = Path(path)
    name = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{name}: ファイルがありません（待っている間に移動された可能性があります）。",
                         "the file does not exist (it may have been moved while waiting)") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name}: これはフォルダーで、スキャンファイルではありません。", "this is a folder, not a scan file") from exc
    except OSError as exc:
        raise InputError(f"{name}: ファイルを読めません。", f"the file cannot be read ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"{name}: ファイルが空です（0バイト）。スキャンし直してください。",
                         "the file is empty (0 bytes); the scan or the copy probably failed")
    fmt = detect_format(data[:1024])
    if fmt is None:
        kind = _describe_unknown(data[:16])
        what = f"a {kind} file" if kind != "unknown" else "not a format kiroku recognises"
        jwhat = f"{kind}ファイルです" if kind != "unknown" else "kirokuが読める形式ではありません"
        raise InputError(
            f"{name}: このファイルは{jwhat}。スキャンはPDF・TIFF・PNG・JPEGで入れてください。",
            f"this is {what}. kiroku takes scans as PDF, TIFF, PNG or JPEG",
        )
    if fmt == "png":
        pages = _load_png(data, name, max_pixels, default_dpi)
    elif fmt == "jpeg":
        pages = _load_jpeg(data, name, max_pixels, default_dpi)
    elif fmt == "tiff":
        pages = _load_tiff(data, name, max_pixels, default_dpi)
    else:
        pages = _load_pdf(path, data, name, max_pixels, default_dpi)
    for page in pages:
        if page.image.mode not in ("1", "L", "RGB"):  # defensive: every branch normalises
            page.image = flatten_to_page_mode(page.image, None, name)
    return LoadedDocument(
        path=path,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        pages=pages,
    )
