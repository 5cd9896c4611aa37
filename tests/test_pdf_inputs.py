"""The archive shows what the scan shows: PDF inputs through the reading stages into PDF/A.

Every test here makes the archive PDF with the real stages (load, prepare, OCR, PDF/A
with pikepdf's validator) and compares it with its input the way a person would: both
are rendered by poppler (pdftoppm) at the same size and their pixels compared, and the
page sizes are compared in points (x /UserUnit). The inputs are PDFs built here with
masks, non-square pixels, a form XObject, typed text and a scanner's text layer, and,
when ../shared is present, the peer inputs that issue 8 found archived wrongly.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image, ImageDraw, ImageFilter

from processors.document import finish_document, page_warnings, prepare_and_read, start_record
from processors.reading.images import load_document
from processors.reading.pages import InputError, PageText, PreparedPage
from processors.reading.pdfrender import text_is_trustworthy
from tests.pagegen import _font

pytestmark = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")

ENGINE = "tesseract"  # the cheaper engine: these tests are about the picture and the text layer
COMPARE_PX = 700  # both renderings fit in this many pixels
MAX_MAD = 8.0  # mean absolute gray difference (0-255) allowed between input and archive
# a deskewed page is compared with the input turned the same way: two resamplings of dense
# small print never agree pixel for pixel (multipage.pdf's 72 dpi book page: 16 at a third of
# the size, with 99.7% of the ink matched both ways), so there the ink shares carry the test
MAX_MAD_DESKEWED = 25.0
MIN_INK_MATCH = 0.9  # share of dark pixels of one rendering found (within a pixel) in the other


# --------------------------------------------------------------------------- helpers


def archive(src: Path, out_dir: Path):
    """The record and the PDF/A kiroku makes of ``src`` (what `kiroku process` does, in this process)."""
    loaded = load_document(src)
    record = start_record(loaded)
    pages = [prepare_and_read(page, ENGINE) for page in loaded.pages]
    pdf = out_dir / f"{src.stem}.archive.pdf"
    return finish_document(record, pages, pdf), pdf


def page_sizes(path: Path) -> list[tuple[float, float]]:
    """Every page's shown size in points: crop box (else media box) x /UserUnit, /Rotate applied."""
    sizes = []
    with pikepdf.open(path) as pdf:
        for page in pdf.pages:
            box = [float(v) for v in page.obj.get("/CropBox", page.mediabox)]
            unit = float(page.obj.get("/UserUnit", 1))
            w, h = abs(box[2] - box[0]) * unit, abs(box[3] - box[1]) * unit
            sizes.append((h, w) if int(page.obj.get("/Rotate", 0)) % 180 else (w, h))
    return sizes


def render(path: Path, page_no: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["pdftoppm", "-q", "-cropbox", "-gray", "-f", str(page_no), "-l", str(page_no),
                        "-scale-to-x", str(COMPARE_PX), "-scale-to-y", str(COMPARE_PX), "-singlefile",
                        str(path), f"{tmp}/p"], check=True, timeout=300)
        with Image.open(f"{tmp}/p.pgm") as im:
            return np.asarray(im, dtype=np.float32)


def ink_match(a: np.ndarray, b: np.ndarray) -> float:
    """Share of a's dark pixels that are darkish in b within one pixel (renderings antialias)."""
    dark_a = a < 128
    if not dark_a.any():
        return 1.0
    b_near = np.asarray(Image.fromarray(b.astype(np.uint8)).filter(ImageFilter.MinFilter(3)), dtype=np.float32)
    return float((b_near[dark_a] < 170).mean())


def straightened(a: np.ndarray, skew_deg: float, shape: tuple[int, ...]) -> np.ndarray:
    """The input's rendering turned as kiroku deskewed the page (clockwise by skew_deg, canvas grown)."""
    img = Image.fromarray(a.astype(np.uint8)).rotate(-skew_deg, resample=Image.Resampling.BILINEAR, expand=True,
                                                     fillcolor=255)
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def coarse(a: np.ndarray, k: int = 3) -> np.ndarray:
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    return a[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def assert_shows_the_same(src: Path, out: Path, record=None) -> list[dict]:
    """Page count, page sizes and every page's pixels: the archive shows what the input shows.

    A page kiroku deskewed (record.pages[i].skew_deg) is compared with the input page turned
    the same way, and its size may have grown by the white corners the turn adds.
    """
    sizes_in, sizes_out = page_sizes(src), page_sizes(out)
    assert len(sizes_in) == len(sizes_out)
    figures = []
    for n, (si, so) in enumerate(zip(sizes_in, sizes_out), start=1):
        skew = record.pages[n - 1].skew_deg if record is not None else 0.0
        a, b = render(src, n), render(out, n)
        if abs(skew) >= 0.05:
            grow = abs(np.sin(np.radians(skew))) * max(si) + 1.0
            assert si[0] - 0.01 <= so[0] <= si[0] + grow and si[1] - 0.01 <= so[1] <= si[1] + grow, (n, so, si)
            # compared at a third of the size: two resamplings of dense small print do not
            # agree pixel for pixel, but a lost title or figure still shows
            a = coarse(straightened(a, skew, b.shape))
            b = coarse(b)
        else:
            assert so == pytest.approx(si, abs=0.01), f"page {n}: {so} pt, input {si} pt"
        assert a.shape == b.shape
        mad = float(np.abs(a - b).mean())
        fig = {"page": n, "mad": round(mad, 2), "ink_kept": round(ink_match(a, b), 3),
               "ink_added_ok": round(ink_match(b, a), 3)}
        figures.append(fig)
        assert mad <= (MAX_MAD_DESKEWED if abs(skew) >= 0.05 else MAX_MAD), fig
        assert fig["ink_kept"] >= MIN_INK_MATCH, fig
        assert fig["ink_added_ok"] >= MIN_INK_MATCH, fig
    return figures


def _text_image(text: str, size: tuple[int, int], px: int, bg: int | tuple = 255, mode: str = "L") -> Image.Image:
    img = Image.new(mode, size, bg)
    ImageDraw.Draw(img).text((size[0] // 12, size[1] // 3), text, font=_font("gothic", px), fill=0)
    return img


def _flate_image(pdf: pikepdf.Pdf, img: Image.Image, **extra) -> pikepdf.Stream:
    if img.mode == "1":
        data, bpc, cs = img.tobytes(), 1, pikepdf.Name.DeviceGray
    else:
        data, bpc = img.tobytes(), 8
        cs = pikepdf.Name.DeviceGray if img.mode == "L" else pikepdf.Name.DeviceRGB
    return pikepdf.Stream(pdf, zlib.compress(data), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                          Width=img.width, Height=img.height, ColorSpace=cs, BitsPerComponent=bpc,
                          Filter=pikepdf.Name.FlateDecode, **extra)


def _save(pdf: pikepdf.Pdf, box: list[float], content: bytes, resources: pikepdf.Dictionary, path: Path,
          **page_extra) -> Path:
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=box, Resources=resources,
                              Contents=pdf.make_stream(content), **page_extra)
    pdf.pages.append(pikepdf.Page(page))
    pdf.save(path)
    return path


HELVETICA = dict(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica,
                 Encoding=pikepdf.Name.WinAnsiEncoding)


def masks_pdf(path: Path) -> Path:
    """A scanned photo page with a title painted through a stencil mask and a figure with a soft mask
    (like OCRmyPDF's masks.pdf): taking the largest image alone loses the title and the figure."""
    pdf = pikepdf.new()
    photo = Image.new("RGB", (600, 400), (235, 235, 225))
    ImageDraw.Draw(photo).rectangle((40, 300, 560, 380), fill=(90, 90, 90))
    title = Image.new("1", (500, 60), 0)  # stencil: 1 = paint
    ImageDraw.Draw(title).text((10, 5), "Annual Report 2025", font=_font("gothic", 44), fill=1)
    # the stencil's samples: 0 paints with /Decode [1 0]... keep the default (0 paints) by inverting
    title = title.point(lambda v: 0 if v else 255).convert("1")
    figure = Image.new("RGB", (200, 200), (200, 30, 30))
    alpha = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(alpha).ellipse((10, 10, 190, 190), fill=255)
    smask = _flate_image(pdf, alpha)
    stencil = pikepdf.Stream(pdf, zlib.compress(title.tobytes()), Type=pikepdf.Name.XObject,
                             Subtype=pikepdf.Name.Image, Width=title.width, Height=title.height, ImageMask=True,
                             BitsPerComponent=1, Filter=pikepdf.Name.FlateDecode)
    res = pikepdf.Dictionary(XObject=pikepdf.Dictionary(
        Im0=_flate_image(pdf, photo), Im1=stencil, Im2=_flate_image(pdf, figure, SMask=smask)))
    content = (b"q 300 0 0 200 0 0 cm /Im0 Do Q\n"
               b"q 0 0 0 rg 250 0 0 30 20 160 cm /Im1 Do Q\n"
               b"q 80 0 0 80 200 60 cm /Im2 Do Q\n")
    return _save(pdf, [0, 0, 300, 200], content, res, path)


def aspect_pdf(path: Path) -> Path:
    """An image stored at 200x100 dpi (non-square pixels), like OCRmyPDF's aspect.pdf."""
    pdf = pikepdf.new()
    img = Image.new("L", (400, 200), 255)
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 10, 380, 190), outline=0, width=6)  # a circle once stretched to 2x2 in
    draw.text((120, 80), "round", font=_font("gothic", 36), fill=0)
    res = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=_flate_image(pdf, img)))
    return _save(pdf, [0, 0, 144, 144], b"q 144 0 0 144 0 0 cm /Im0 Do Q\n", res, path)


def form_pdf(path: Path) -> Path:
    """A scan wrapped in a form XObject with a typed caption beside it (like Apache FOP's formxobject.pdf)."""
    pdf = pikepdf.new()
    img = _text_image("Form XObject scan", (500, 300), 40)
    fx = pikepdf.Stream(pdf, b"q 1 0 0 1 0 0 cm /Im0 Do Q", Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Form,
                        BBox=[0, 0, 1, 1], Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(
                            Im0=_flate_image(pdf, img))))
    res = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Fx0=fx), Font=pikepdf.Dictionary(F1=pikepdf.Dictionary(**HELVETICA)))
    content = (b"BT /F1 14 Tf 30 380 Td (What follows is an image in a form:) Tj ET\n"
               b"q 250 0 0 150 30 200 cm /Fx0 Do Q\n")
    return _save(pdf, [0, 0, 320, 420], content, res, path)


def born_digital_pdf(path: Path) -> Path:
    """Typed text only, no image: an office's PDF export."""
    pdf = pikepdf.new()
    res = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=pikepdf.Dictionary(**HELVETICA)))
    content = (b"BT /F1 18 Tf 40 300 Td (Notice of budget hearing) Tj ET\n"
               b"BT /F1 12 Tf 40 260 Td (The hearing is held on 12 May 2025 at the city hall.) Tj ET\n"
               b"0 0 0 RG 1 w 40 250 m 380 250 l S\n")
    return _save(pdf, [0, 0, 420, 360], content, res, path)


# --------------------------------------------------------------------------- generated inputs


@pytest.mark.parametrize("make", [masks_pdf, aspect_pdf, form_pdf, born_digital_pdf])
def test_archive_page_looks_like_the_input_page(make, tmp_path: Path) -> None:
    src = make(tmp_path / f"{make.__name__}.pdf")
    record, out = archive(src, tmp_path)
    figures = assert_shows_the_same(src, out, record)
    print(make.__name__, figures)
    assert len(record.pages) == 1


def test_the_comparison_catches_what_issue_8_saw(tmp_path: Path) -> None:
    """The check must fail on the old behaviour: only the largest image, at its stored pixel aspect."""
    src = masks_pdf(tmp_path / "masks.pdf")
    with pikepdf.open(src) as pdf:
        page = pdf.pages[0]
        page.Contents = pdf.make_stream(b"q 300 0 0 200 0 0 cm /Im0 Do Q\n")  # title and figure lost
        pdf.save(tmp_path / "lost.pdf")
    with pytest.raises(AssertionError):
        assert_shows_the_same(src, tmp_path / "lost.pdf")


def test_born_digital_text_is_the_pdfs_own_and_searchable(tmp_path: Path) -> None:
    src = born_digital_pdf(tmp_path / "typed.pdf")
    record, out = archive(src, tmp_path)
    page = record.pages[0]
    assert page.engine == "pdf-text" and page.warnings == []
    assert page.text.splitlines() == ["Notice of budget hearing", "The hearing is held on 12 May 2025 at the city hall."]
    assert page.source_text == page.text
    # the archive's invisible text layer says the same, where it stands on the page
    layer = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True, check=True).stdout
    assert "Notice of budget hearing" in " ".join(layer.split())
    heading = page.lines[0]
    assert heading.bbox[1] < page.lines[1].bbox[1]  # top to bottom


def test_scanner_text_layer_kept_as_second_witness_and_page_read_again(tmp_path: Path) -> None:
    pdf = pikepdf.new()
    img = _text_image("Searchable scan 2025", (900, 300), 60)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    image = pikepdf.Stream(pdf, jpeg, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=img.width,
                           Height=img.height, ColorSpace=pikepdf.Name.DeviceGray, BitsPerComponent=8,
                           Filter=pikepdf.Name.DCTDecode)
    res = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image), Font=pikepdf.Dictionary(F1=pikepdf.Dictionary(**HELVETICA)))
    content = b"q 216 0 0 72 0 0 cm /Im0 Do Q\nBT 3 Tr /F1 10 Tf 20 30 Td (Searchable scan 2025) Tj ET\n"
    src = _save(pdf, [0, 0, 216, 72], content, res, tmp_path / "searchable.pdf")
    original = src.read_bytes()
    record, out = archive(src, tmp_path)
    page = record.pages[0]
    assert src.read_bytes() == original  # the original is never touched (stored bit for bit as original.pdf)
    assert page.source_text == "Searchable scan 2025"
    assert page.engine == ENGINE  # kiroku read the image itself
    assert "Searchable" in page.text and "scan" in page.text
    assert "source_text_differs" not in page.warnings
    assert_shows_the_same(src, out)
    # the scan's own JPEG went into the archive as it was (no re-encoding)
    with pikepdf.open(out) as archived:
        (im,) = list(archived.pages[0].get_images().values())
        assert im.read_raw_bytes() == jpeg


def test_ink_but_no_text_is_flagged(tmp_path: Path) -> None:
    """A page that is not blank but where reading found nothing must say so, never be silently empty."""
    inked = PreparedPage(index=0, archive_image=Image.new("L", (10, 10)), ocr_image=np.zeros((1, 1), np.uint8),
                         ocr_scale=1.0, dpi=300, rotation_deg=0, skew_deg=0.0, writing_mode="horizontal", blank=False)
    assert page_warnings(inked, PageText(engine=ENGINE)) == ["ink_but_no_text"]
    inked.blank = True
    assert page_warnings(inked, PageText(engine=ENGINE)) == []
    # through the real stages: a drawing with no letters in it
    img = Image.new("L", (1200, 900), 255)
    draw = ImageDraw.Draw(img)
    for k in range(12):
        draw.ellipse((100 + 40 * k, 100 + 20 * k, 700 + 30 * k, 600 + 20 * k), outline=0, width=5)
    src = tmp_path / "drawing.png"
    img.save(src, dpi=(300, 300))
    record, _out = archive(src, tmp_path)
    assert record.pages[0].text == "" and not record.pages[0].blank
    assert record.pages[0].warnings == ["ink_but_no_text"]


def test_text_trust_check() -> None:
    assert text_is_trustworthy("Table of Contents\nHeading.............1")
    assert text_is_trustworthy("令和七年度　事業報告書")
    assert not text_is_trustworthy('"7+%-')  # a TrueType font without a Unicode map
    assert not text_is_trustworthy("\ufffd\ufffd\ufffd abc")
    assert not text_is_trustworthy("   ")


def test_input_error_is_an_input_rejected_in_japanese_first(tmp_path: Path) -> None:
    from processors.archive.failures import InputRejected, failure_kind

    empty = tmp_path / "scan.pdf"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as caught:
        load_document(empty)
    assert isinstance(caught.value, InputRejected) and failure_kind(caught.value) == "rejected"
    assert str(caught.value).startswith("scan.pdf: ファイルが空です（0バイト）。スキャンし直してください。 (the file is empty")


# --------------------------------------------------------------------------- peer inputs


PEER_GEOMETRY = ["ocrmypdf__aspect.pdf", "ocrmypdf__masks.pdf", "ocrmypdf__formxobject.pdf", "ocrmypdf__3small.pdf",
                 "ocrmypdf__poster.pdf", "ocrmypdf__multipage.pdf", "ocrmypdf__cmyk.pdf", "ocrmypdf__tagged.pdf",
                 "ocrmypdf__vector.pdf", "ocrmypdf__overlay.pdf", "ocrmypdf__graph_ocred.pdf"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PEER_GEOMETRY)
def test_peer_pdfs_keep_page_size_and_content(name: str, shared: Path, tmp_path: Path) -> None:
    src = shared / "peer-inputs" / name
    if not src.exists():
        pytest.skip(f"{src} is not present")
    record, out = archive(src, tmp_path)
    figures = assert_shows_the_same(src, out, record)
    print(name, figures)


@pytest.mark.slow
def test_peer_text_layers(shared: Path, tmp_path: Path) -> None:
    peer = shared / "peer-inputs"
    if not (peer / "ocrmypdf__tagged.pdf").exists():
        pytest.skip("peer inputs not present")
    tagged, _ = archive(peer / "ocrmypdf__tagged.pdf", tmp_path)
    assert [p.engine for p in tagged.pages] == ["pdf-text", "pdf-text"]
    assert "Page 2 Heading" in tagged.pages[1].text
    nomap = load_document(peer / "ocrmypdf__truetype_font_nomapping.pdf").pages[0]
    assert nomap.warnings == ["pdf_text_unreadable"] and nomap.source_text is None and nomap.pdf_lines is None
    multipage = load_document(peer / "ocrmypdf__multipage.pdf").pages
    assert [bool(p.source_text) for p in multipage] == [False, False, False, True, False, False]
    assert load_document(peer / "ocrmypdf__graph_ocred.pdf").pages[0].source_text
