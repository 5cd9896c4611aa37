"""Stage "load": every scan format in, page images out; everything unarchivable refused clearly."""

from __future__ import annotations

import hashlib
import io
import math
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image, ImageDraw

from processors.reading.images import detect_format, load_document, quarter_turns_from_ctm, sha256_file
from processors.reading.pages import InputError
from tests.pagegen import render_notice

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
PEER = SHARED / "peer-inputs"
SAMPLES = SHARED / "samples"


def _page(size=(600, 800), mode="L") -> Image.Image:
    """A small page with a black square marking its top-left corner (to follow turns)."""
    img = render_notice(dpi=72, size=size).convert(mode if mode != "1" else "L")
    d = ImageDraw.Draw(img)
    d.rectangle((10, 10, 60, 60), fill=0 if img.mode == "L" else (0, 0, 0))
    return img.convert("1") if mode == "1" else img


def _corner_dark(img: Image.Image, corner: str) -> bool:
    g = np.asarray(img.convert("L"))
    h, w = g.shape
    box = {"tl": g[10:60, 10:60], "tr": g[10:60, w - 60 : w - 10], "bl": g[h - 60 : h - 10, 10:60],
           "br": g[h - 60 : h - 10, w - 60 : w - 10]}[corner]
    return box.mean() < 60


# --------------------------------------------------------------------------------------
# raster formats
# --------------------------------------------------------------------------------------


def test_png_gray_with_resolution(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    _page().save(p, dpi=(300, 300))
    doc = load_document(p)
    assert doc.format == "png" and len(doc.pages) == 1
    page = doc.pages[0]
    assert page.image.mode == "L" and page.image.size == (600, 800)
    assert page.dpi == (300.0, 300.0) and page.dpi_assumed is False  # pHYs 11811 px/m snapped to 300
    assert page.encoding == "png" and page.jpeg_bytes is None
    assert doc.sha256 == hashlib.sha256(p.read_bytes()).hexdigest() == sha256_file(p)
    assert doc.bytes == p.stat().st_size


def test_png_without_resolution_gets_the_default_and_says_so(tmp_path: Path) -> None:
    p = tmp_path / "nodpi.png"
    _page(mode="RGB").save(p)
    page = load_document(p, default_dpi=250).pages[0]
    assert page.image.mode == "RGB"
    assert page.dpi == (250.0, 250.0) and page.dpi_assumed is True


@pytest.mark.parametrize("stored", [(72, 72), (96, 96), (1, 1)])
def test_placeholder_resolutions_are_not_credible(tmp_path: Path, stored) -> None:
    p = tmp_path / "x.jpg"
    _page().save(p, dpi=stored, quality=85)
    page = load_document(p).pages[0]
    assert page.dpi_assumed is True and page.dpi == (300.0, 300.0)


def test_png_bilevel_stays_bilevel(tmp_path: Path) -> None:
    p = tmp_path / "bw.png"
    _page(mode="1").save(p, dpi=(300, 300))
    page = load_document(p).pages[0]
    assert page.image.mode == "1"
    assert _corner_dark(page.image, "tl") and not _corner_dark(page.image, "br")


def test_png_palette_gray_colour_and_two_tone(tmp_path: Path) -> None:
    colour = _page(mode="RGB")
    ImageDraw.Draw(colour).ellipse((300, 300, 400, 400), fill=(200, 30, 30))
    colour.quantize(16).save(tmp_path / "c.png")
    _page().convert("P").save(tmp_path / "g.png")  # palette of grays
    two = Image.new("P", (300, 300), 1)
    two.putpalette([0, 0, 0, 255, 255, 255])
    ImageDraw.Draw(two).rectangle((10, 10, 60, 60), fill=0)
    two.save(tmp_path / "two.png")
    assert load_document(tmp_path / "c.png").pages[0].image.mode == "RGB"
    assert load_document(tmp_path / "g.png").pages[0].image.mode == "L"
    two_page = load_document(tmp_path / "two.png").pages[0].image
    assert two_page.mode == "1" and _corner_dark(two_page, "tl") and not _corner_dark(two_page, "br")


def test_png_alpha_is_flattened_onto_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (400, 400), (0, 0, 0, 0))  # fully transparent black
    ImageDraw.Draw(rgba).rectangle((10, 10, 60, 60), fill=(0, 0, 255, 255))
    rgba.save(tmp_path / "a.png")
    img = load_document(tmp_path / "a.png").pages[0].image
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert tuple(arr[200, 200]) == (255, 255, 255)  # transparent became paper, not black
    assert tuple(arr[30, 30]) == (0, 0, 255)
    la = Image.new("LA", (300, 300), (0, 0))
    la.save(tmp_path / "la.png")
    img = load_document(tmp_path / "la.png").pages[0].image
    assert img.mode == "L" and np.asarray(img).min() == 255


def test_png_16_bit_gray(tmp_path: Path) -> None:
    arr = np.full((300, 300), 65535, np.uint16)
    arr[10:60, 10:60] = 0
    Image.fromarray(arr).save(tmp_path / "g16.png")
    img = load_document(tmp_path / "g16.png").pages[0].image
    assert img.mode == "L" and _corner_dark(img, "tl") and np.asarray(img)[200, 200] == 255


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_keeps_its_own_bytes(tmp_path: Path, mode: str) -> None:
    p = tmp_path / "scan.jpg"
    _page(mode=mode).save(p, dpi=(200, 200), quality=80)
    doc = load_document(p)
    page = doc.pages[0]
    assert doc.format == "jpeg" and page.encoding == "jpeg"
    assert page.image.mode == mode and page.dpi == (200.0, 200.0) and not page.dpi_assumed
    assert page.jpeg_bytes == p.read_bytes()


def test_cmyk_jpeg_without_icc_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    _page(mode="RGB").convert("CMYK").save(p, dpi=(300, 300))
    with pytest.raises(InputError, match="CMYK.*without an ICC profile"):
        load_document(p)


def test_jpeg_exif_orientation_is_honoured(tmp_path: Path) -> None:
    p = tmp_path / "cam.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    _page().save(p, exif=exif, dpi=(300, 300))
    page = load_document(p).pages[0]
    assert page.image.size == (800, 600)
    assert _corner_dark(page.image, "tr")  # the top-left mark is now top-right
    assert page.jpeg_bytes is None  # the stored JPEG no longer matches what is shown


def test_tiff_multipage_g4_lzw_jpeg(tmp_path: Path) -> None:
    from PIL import TiffImagePlugin

    p = tmp_path / "multi.tif"
    pages = ((_page(mode="1"), "group4"), (_page(mode="L"), "tiff_lzw"), (_page(mode="RGB"), "jpeg"))
    # one compression per page, as scanner software writes them
    with open(p, "w+b") as fh, TiffImagePlugin.AppendingTiffWriter(fh, True) as tf:
        for img, comp in pages:
            img.save(tf, format="TIFF", compression=comp, dpi=(400, 400))
            tf.newFrame()
    doc = load_document(p)
    assert doc.format == "tiff"
    assert [pg.image.mode for pg in doc.pages] == ["1", "L", "RGB"]
    assert [pg.encoding for pg in doc.pages] == ["ccitt", "lzw", "jpeg"]
    assert all(pg.dpi == (400.0, 400.0) and not pg.dpi_assumed for pg in doc.pages)
    assert [pg.index for pg in doc.pages] == [0, 1, 2]


def test_format_is_decided_by_content_not_name(tmp_path: Path) -> None:
    png_named_pdf = tmp_path / "scan.pdf"
    _page().save(png_named_pdf, format="PNG", dpi=(300, 300))
    jpeg_named_oddly = tmp_path / "受付 2025-01 (1).tif.txt"
    _page().save(jpeg_named_oddly, format="JPEG", dpi=(300, 300))
    assert load_document(png_named_pdf).format == "png"
    assert load_document(jpeg_named_oddly).format == "jpeg"
    assert detect_format(b"junk\n%PDF-1.7\n") == "pdf"
    assert detect_format(b"II*\x00") == "tiff" and detect_format(b"MM\x00*") == "tiff"


# --------------------------------------------------------------------------------------
# refusals (raster)
# --------------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_document(p)


def test_truncated_images(tmp_path: Path) -> None:
    for name, fmt in (("t.png", "PNG"), ("t.jpg", "JPEG"), ("t.tif", "TIFF")):
        buf = io.BytesIO()
        _page().save(buf, format=fmt)
        data = buf.getvalue()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match="truncated or corrupt|damaged"):
            load_document(tmp_path / name)


@pytest.mark.parametrize("fmt,word", [("GIF", "GIF"), ("BMP", "BMP")])
def test_unsupported_formats(tmp_path: Path, fmt: str, word: str) -> None:
    p = tmp_path / "x.png"  # the name does not make it a PNG
    _page().save(p, format=fmt)
    with pytest.raises(InputError, match=f"{word}.*PDF, TIFF, PNG or JPEG"):
        load_document(p)
    (tmp_path / "notes.txt").write_text("会議メモ", encoding="utf-8")
    with pytest.raises(InputError, match="not a format kiroku recognises"):
        load_document(tmp_path / "notes.txt")


def test_too_small_to_be_a_page(tmp_path: Path) -> None:
    Image.new("L", (10, 10), 255).save(tmp_path / "s.png")
    with pytest.raises(InputError, match="too small to be a scanned document page"):
        load_document(tmp_path / "s.png")
    Image.new("L", (400, 50), 255).save(tmp_path / "strip.png")  # a narrow strip is a page
    assert load_document(tmp_path / "strip.png").pages[0].image.size == (400, 50)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size but holds a few bytes: what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(20000, 20000))  # 400 Mpx declared
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="megapixels.*limit|too large to open safely"):
        load_document(p)
    assert time.perf_counter() - t0 < 2.0
    # Pillow's own bomb error (declared size beyond its limit) also becomes an InputError
    p.write_bytes(_png_header_only(60000, 60000))
    with pytest.raises(InputError, match="too large to open safely|megapixels"):
        load_document(p, max_pixels=10**12)
    # and the limit is the caller's
    ok = tmp_path / "ok.png"
    _page().save(ok)
    with pytest.raises(InputError, match="more than the limit of 0 megapixels"):
        load_document(ok, max_pixels=400_000)


# --------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _pdf_with_image(path: Path, img: Image.Image, *, dpi: float = 300, rotate: int = 0, ctm: str | None = None,
                    extra_content: bytes = b"", fonts: bool = False, form: bool = False, **root_extra) -> bytes:
    pdf = pikepdf.new()
    jpeg = _jpeg_bytes(img)
    cs = pikepdf.Name.DeviceGray if img.mode == "L" else pikepdf.Name.DeviceRGB
    image = pikepdf.Stream(pdf, jpeg, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=img.width,
                           Height=img.height, ColorSpace=cs, BitsPerComponent=8, Filter=pikepdf.Name.DCTDecode)
    w_pt, h_pt = img.width / dpi * 72, img.height / dpi * 72
    if ctm is None:
        ctm = f"{w_pt} 0 0 {h_pt} 0 0"
        box = [0, 0, w_pt, h_pt]
    else:
        box = [0, 0, h_pt, w_pt]
    resources = pikepdf.Dictionary()
    if form:
        fx = pikepdf.Stream(pdf, b"q /Im0 Do Q", Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Form,
                            BBox=[0, 0, 1, 1], Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image)))
        resources.XObject = pikepdf.Dictionary(Fx0=fx)
        content = f"q {ctm} cm /Fx0 Do Q\n".encode()
    else:
        resources.XObject = pikepdf.Dictionary(Im0=image)
        content = f"q {ctm} cm /Im0 Do Q\n".encode()
    if fonts:
        resources.Font = pikepdf.Dictionary(F1=pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                                                                    BaseFont=pikepdf.Name.Helvetica))
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=box, Resources=resources,
                              Contents=pdf.make_stream(content + extra_content))
    if rotate:
        page.Rotate = rotate
    pdf.pages.append(pikepdf.Page(page))
    for k, v in root_extra.items():
        pdf.Root["/" + k] = v
    pdf.save(path)
    return jpeg


def test_pdf_jpeg_page_is_extracted_as_is(tmp_path: Path) -> None:
    p = tmp_path / "scan.pdf"
    jpeg = _pdf_with_image(p, _page(mode="RGB"), dpi=200)
    doc = load_document(p)
    page = doc.pages[0]
    assert doc.format == "pdf" and page.encoding == "jpeg"
    assert page.image.mode == "RGB" and page.image.size == (600, 800)
    assert page.dpi == (200.0, 200.0) and not page.dpi_assumed
    assert page.jpeg_bytes == jpeg  # the very stream, no re-encoding


def test_pdf_rotate_is_honoured(tmp_path: Path) -> None:
    p = tmp_path / "rot.pdf"
    _pdf_with_image(p, _page(), rotate=90)
    page = load_document(p).pages[0]
    assert page.image.size == (800, 600)
    assert _corner_dark(page.image, "tr")  # shown turned clockwise: top-left went top-right
    assert page.jpeg_bytes is None


def test_pdf_image_drawn_turned_by_the_content_stream(tmp_path: Path) -> None:
    img = _page()
    w_pt, h_pt = img.width / 300 * 72, img.height / 300 * 72
    p = tmp_path / "cm.pdf"
    # like OCRmyPDF's cardinal.pdf page 2: x axis pointing down the page
    _pdf_with_image(p, img, ctm=f"0 {-w_pt} {h_pt} 0 0 {w_pt}")
    page = load_document(p).pages[0]
    assert page.image.size == (800, 600) and page.dpi == (300.0, 300.0)
    assert _corner_dark(page.image, "tr")
    assert quarter_turns_from_ctm((0, -1, 1, 0, 0, 1)) == (1, False)
    assert quarter_turns_from_ctm((1, 0, 0, 1, 0, 0)) == (0, False)
    assert quarter_turns_from_ctm((-1, 0, 0, -1, 1, 1)) == (2, False)


def test_pdf_image_inside_a_form_xobject(tmp_path: Path) -> None:
    p = tmp_path / "form.pdf"
    _pdf_with_image(p, _page(), form=True)
    assert load_document(p).pages[0].image.size == (600, 800)


def test_pdf_with_a_text_layer_is_read_again_and_its_text_kept(tmp_path: Path) -> None:
    """A copier's "searchable PDF": the scan is taken as stored (its JPEG bytes kept) and read
    again by kiroku; the scanner's invisible text goes along as a second witness."""
    p = tmp_path / "ocred.pdf"
    jpeg = _pdf_with_image(p, _page(), fonts=True, extra_content=b"BT /F1 12 Tf 3 Tr 10 10 Td (hello world) Tj ET\n")
    page = load_document(p).pages[0]
    assert page.jpeg_bytes == jpeg and page.image.size == (600, 800)
    assert page.source_text == "hello world"
    assert page.pdf_lines is None  # a scan is OCR'd, its text layer is only a witness
    assert page.warnings == []


def test_born_digital_pdf_is_rendered_not_refused(tmp_path: Path) -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.pages[0].Contents = pdf.make_stream(b"0 0 0 RG 2 w 50 50 m 500 700 l S 100 100 200 200 re f\n")
    p = tmp_path / "vector.pdf"
    pdf.save(p)
    page = load_document(p).pages[0]
    assert page.encoding == "render" and page.dpi == (300.0, 300.0)
    assert page.image.size == (math.ceil(595 / 72 * 300), math.ceil(842 / 72 * 300))  # poppler rounds up
    assert page.page_size_pt == (595.0, 842.0)
    assert page.source_text is None and page.pdf_lines is None  # no text of its own: it will be OCR'd
    assert np.asarray(page.image.convert("L")).min() < 50  # the drawing is on it


def test_pdf_page_with_nothing_on_it_is_a_white_page(tmp_path: Path) -> None:
    p = tmp_path / "plain.pdf"
    _pdf_with_image(p, _page())
    with pikepdf.open(p) as pdf:
        pdf.add_blank_page(page_size=(612, 792))
        pdf.save(tmp_path / "with_empty_page.pdf")
    page = load_document(tmp_path / "with_empty_page.pdf", default_dpi=200).pages[1]
    assert page.image.mode == "1" and page.image.size == (1700, 2200)
    assert np.asarray(page.image).all()


def test_pdf_with_no_content_at_all_is_refused_in_japanese(tmp_path: Path) -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(612, 792))
    p = tmp_path / "empty.pdf"
    pdf.save(p)
    with pytest.raises(InputError, match=r"^empty.pdf: PDFに内容がありません.*\(the PDF has no content"):
        load_document(p)


def test_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "plain.pdf"
    _pdf_with_image(p, _page())
    with pikepdf.open(p) as pdf:
        pdf.save(tmp_path / "locked.pdf", encryption=pikepdf.Encryption(user="secret", owner="owner", R=6))
        pdf.save(tmp_path / "restricted.pdf", encryption=pikepdf.Encryption(user="", owner="owner", R=4))
    for name in ("locked.pdf", "restricted.pdf"):
        with pytest.raises(InputError, match="encrypted"):
            load_document(tmp_path / name)


def test_damaged_pdf_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "broken.pdf"
    p.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\n%%EOF\n")
    with pytest.raises(InputError, match="damaged"):
        load_document(p)


def test_xfa_and_signed_forms_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "xfa.pdf"
    _pdf_with_image(p, _page(), AcroForm=pikepdf.Dictionary(Fields=[], XFA=pikepdf.Array([])))
    with pytest.raises(InputError, match="XFA"):
        load_document(p)
    p = tmp_path / "signed.pdf"
    _pdf_with_image(p, _page(), AcroForm=pikepdf.Dictionary(Fields=[], SigFlags=3))
    with pytest.raises(InputError, match="digitally signed"):
        load_document(p)


def test_pdf_bomb_is_refused_from_the_declared_size(tmp_path: Path) -> None:
    pdf = pikepdf.new()
    image = pikepdf.Stream(pdf, zlib.compress(b"\x00" * 1000), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                           Width=40000, Height=40000, ColorSpace=pikepdf.Name.DeviceGray, BitsPerComponent=1,
                           Filter=pikepdf.Name.FlateDecode)
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=[0, 0, 9600, 9600],
                              Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image)),
                              Contents=pdf.make_stream(b"q 9600 0 0 9600 0 0 cm /Im0 Do Q"))
    pdf.pages.append(pikepdf.Page(page))
    p = tmp_path / "bomb.pdf"
    pdf.save(p)
    with pytest.raises(InputError, match="40000x40000 px .*limit of 200 megapixels"):
        load_document(p)


# --------------------------------------------------------------------------------------
# other projects' files
# --------------------------------------------------------------------------------------


def _peer(name: str) -> Path:
    path = PEER / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path


@pytest.mark.parametrize(
    "name,message",
    [
        ("ocrmypdf__invalid.pdf", "damaged or not a valid PDF"),
        ("pikepdf__graph-encrypted.pdf", "encrypted"),
        ("pikepdf__fuzz_378014596.pdf", "damaged"),
        ("yomitoku__invalid.jpg", "empty"),
        ("yomitoku__invalid.pdf", "empty"),
        ("yomitoku__small.jpg", "too small"),
        ("ocrmypdf__hugemono.pdf", "35000x35000 px"),
        ("ocrmypdf__baiona_cmyk.jpg", "CMYK"),
        ("ocrmypdf__livecycle.pdf", "XFA"),
        ("ocrmypdf__blank.pdf", "PDFに内容がありません"),
        ("ocrmypdf__no_contents.pdf", "PDFに内容がありません"),
    ],
)
def test_peer_inputs_refused(name: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_document(_peer(name))


def test_hugemono_never_allocates_the_bomb() -> None:
    """Run in a fresh interpreter and read its peak memory: 35000x35000 px would be >150 MB even at 1 bit.

    VmHWM belongs to the new program's memory map; getrusage's ru_maxrss would also
    carry the high-water mark of the (large) pytest process the child was forked from.
    """
    path = _peer("ocrmypdf__hugemono.pdf")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from processors.reading.images import load_document\n"
        "from processors.reading.pages import InputError\n"
        "try:\n    load_document(Path(sys.argv[2]))\nexcept InputError:\n    pass\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(path)], capture_output=True, text=True,
                         timeout=120, check=True)
    peak_kb = int(out.stdout.strip().splitlines()[-1])
    assert peak_kb < 400_000, f"peak RSS {peak_kb} KB"


@pytest.mark.parametrize(
    "name,pages,modes,size",
    [
        ("ocrmypdf__ccitt.pdf", 1, {"1"}, (2550, 3300)),
        ("yomitoku__sampldoc.tif", 2, {"1"}, (2484, 3516)),
        ("yomitoku__test.tiff", 2, {"RGB"}, (596, 842)),
        ("ocrmypdf__baiona_alpha.png", 1, {"RGB"}, (640, 682)),
        ("ocrmypdf__cardinal.pdf", 4, {"1"}, None),
        ("ocrmypdf__rotated_skew.pdf", 1, {"1"}, (2550, 3300)),
        ("ocrmypdf__linn.png", 1, {"1"}, (2550, 3300)),
        ("ocrmypdf__3small.pdf", 3, {"L", "1"}, None),
    ],
)
def test_peer_inputs_load(name: str, pages: int, modes: set, size) -> None:
    doc = load_document(_peer(name))
    assert len(doc.pages) == pages
    assert {p.image.mode for p in doc.pages} <= modes
    if size:
        assert all(p.image.size == size for p in doc.pages)


def test_peer_dpi_policy() -> None:
    test_tiff = load_document(_peer("yomitoku__test.tiff"))
    assert all(p.dpi_assumed and p.dpi == (300.0, 300.0) for p in test_tiff.pages)  # stored 1x1
    alpha = load_document(_peer("ocrmypdf__baiona_alpha.png")).pages[0]
    assert alpha.dpi_assumed and np.asarray(alpha.image).min() < 128  # flattened, content kept
    aspect = load_document(_peer("ocrmypdf__aspect.pdf")).pages[0]
    # 200x100 dpi with a soft mask: rendered with square pixels at the finer resolution, so the
    # archive page keeps its 5x4 in (it was stored at half its height when the image was taken as is)
    assert aspect.dpi == (200.0, 200.0) and aspect.image.size == (1000, 800) and not aspect.dpi_assumed
    assert aspect.page_size_pt == (360.0, 288.0)


def test_peer_cardinal_and_rotate() -> None:
    """cardinal.pdf draws one scan at 0/90/180/270 through the CTM; rotated_skew.pdf has /Rotate 90."""
    pages = load_document(_peer("ocrmypdf__cardinal.pdf")).pages
    assert [p.image.size for p in pages] == [(2550, 3300), (3300, 2550), (2550, 3300), (3300, 2550)]
    assert all(p.dpi == (300.0, 300.0) for p in pages)
    first = np.asarray(pages[0].image, dtype=np.uint8)
    for k, page in enumerate(pages):
        # undoing a clockwise quarter turn k times gives the first page back
        back = np.rot90(np.asarray(page.image, dtype=np.uint8), k)
        assert np.array_equal(back, first)
    rs = load_document(_peer("ocrmypdf__rotated_skew.pdf")).pages[0]
    assert rs.image.size == (2550, 3300)  # portrait after /Rotate 90 and the CTM's quarter turn


# --------------------------------------------------------------------------------------
# the sample corpus
# --------------------------------------------------------------------------------------


def _truths() -> list[dict]:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is not present")
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SAMPLES.glob("*.truth.json"))]


def test_all_samples_load_with_the_right_pages_size_and_dpi() -> None:
    truths = _truths()
    assert len(truths) == 12
    for truth in truths:
        doc = load_document(SAMPLES / truth["file"])
        assert doc.format == truth["format"]["container"], truth["id"]
        assert len(doc.pages) == truth["format"]["page_count"] == len(truth["pages"]), truth["id"]
        for page, tp in zip(doc.pages, truth["pages"]):
            assert page.image.size == (tp["width_px"], tp["height_px"]), truth["id"]
            assert page.dpi == (tp["dpi"], tp["dpi"]) and not page.dpi_assumed, truth["id"]
            expected_mode = {"bilevel": "1", "gray": "L", "color": "RGB"}[truth["format"]["color"]]
            assert page.image.mode == expected_mode, truth["id"]
            if truth["format"]["container"] in ("pdf", "jpeg"):
                assert page.jpeg_bytes is not None and page.jpeg_bytes[:2] == b"\xff\xd8", truth["id"]
