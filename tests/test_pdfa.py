"""The archive PDF/A: real pages drawn with the IPA fonts, checked with pikepdf and poppler.

One five-page document (gray letter, bilevel table, colour page passed as its own
JPEG, vertical 辞令, blank back) is written once per module; every test reads that
file with real tools: pikepdf's PDF/A validator, pdftotext, pdftotext -bbox.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pikepdf
import pikepdf.pdfa
import pytest
from PIL import Image, ImageDraw, ImageFont

from processors.reading.pages import PreparedPage
from processors.reading.pdfa import ArchivePdfError, PdfInfo, write_archive_pdf
from schemas.record import Line, Page, Word

MINCHO = Path("/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf")
TITLE = "庁舎における節電の取組について（通知）"

pytestmark = [
    pytest.mark.skipif(not MINCHO.exists(), reason="fonts-ipafont-mincho is not installed"),
    pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed"),
]


# --------------------------------------------------------------------------- page builders


@dataclass
class Built:
    prepared: PreparedPage
    page: Page


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(MINCHO), size)


def _prepared(image: Image.Image, dpi: int, mode: str = "horizontal", blank: bool = False,
              jpeg: bytes | None = None, index: int = 0) -> PreparedPage:
    return PreparedPage(index=index, archive_image=image, ocr_image=np.asarray(image.convert("L")),
                        ocr_scale=1.0, dpi=dpi, rotation_deg=0, skew_deg=0.0, writing_mode=mode,
                        blank=blank, archive_jpeg=jpeg)


def _page(index: int, image: Image.Image, dpi: int, lines: list[Line], mode: str = "horizontal",
          blank: bool = False) -> Page:
    return Page(index=index, text="\n".join(line.text for line in lines), blank=blank, dpi=dpi,
                width_px=image.size[0], height_px=image.size[1], writing_mode=mode, lines=lines)


def _draw_horizontal(draw: ImageDraw.ImageDraw, spec: list[tuple[str, str, int]], width: int, top: int,
                     pitch: float, margin: int) -> list[Line]:
    """Draw lines (text, align L/C/R, size) and return them with their real boxes."""
    lines, y = [], top
    for text, align, size in spec:
        font = _font(size)
        length = draw.textlength(text, font=font)
        x = {"L": margin, "C": (width - length) / 2, "R": width - margin - length}[align]
        draw.text((x, y), text, font=font, fill=0)
        box = tuple(int(round(v)) for v in draw.textbbox((x, y), text, font=font))
        lines.append(Line(text=text, bbox=box, confidence=90.0))
        y += int(size * pitch)
    return lines


def gray_letter(index: int) -> Built:
    """A 通知 at 300 dpi A4: right-aligned number/date/issuer, centred title, body, items."""
    dpi, size = 300, (2480, 3508)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    spec = [
        ("総務第１２３号", "R", 46), ("令和６年４月１日", "R", 46), ("各課長　様", "L", 46),
        ("総務部長　山田　太郎", "R", 46), (TITLE, "C", 60),
        ("標記について、地球温暖化対策実行計画に基づき、下記のとおり取り組む", "L", 46),
        ("こととしたので通知します。", "L", 46), ("記", "C", 46),
        ("１　実施期間　　令和６年４月１日から令和７年３月３１日まで", "L", 46),
        ("２　取組内容　　昼休みの消灯、空調の温度設定（２８℃）の徹底", "L", 46),
        ("（担当）総務課管財係　内線２１３", "R", 46),
    ]
    lines = _draw_horizontal(draw, spec, size[0], 300, 2.2, 250)
    # a light, lossless gray scan: paper tone and a few gray levels, as a PNG source would be
    arr = np.asarray(image).astype(np.int16)
    rng = np.random.default_rng(1)
    arr = np.clip(arr - 12 + rng.integers(0, 3, arr.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(arr, "L")
    return Built(_prepared(image, dpi, index=index), _page(index, image, dpi, lines))


def bilevel_table(index: int) -> Built:
    """A bilevel 200 dpi A4 page: table rows are single lines with cells joined by a space."""
    dpi, size = 200, (1654, 2339)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    lines = _draw_horizontal(draw, [("議事録", "C", 48), ("日時　令和６年５月１０日　午後２時", "L", 32)],
                             size[0], 180, 2.0, 160)
    y = 420
    for cells in (("品名", "数量", "金額"), ("コピー用紙", "１０箱", "３２，０００円"), ("トナー", "２本", "１８，５００円")):
        xs = (160, 700, 1100)
        font = _font(32)
        boxes = []
        for x, cell in zip(xs, cells):
            draw.text((x, y), cell, font=font, fill=0)
            boxes.append(draw.textbbox((x, y), cell, font=font))
        words = [Word(text=c, bbox=tuple(int(v) for v in b), confidence=90.0) for c, b in zip(cells, boxes)]
        box = (boxes[0][0], min(b[1] for b in boxes), boxes[-1][2], max(b[3] for b in boxes))
        lines.append(Line(text=" ".join(cells), bbox=tuple(int(v) for v in box), confidence=90.0, words=words))
        y += 70
    bilevel = image.point(lambda v: 255 if v > 128 else 0).convert("1")
    return Built(_prepared(bilevel, dpi, index=index), _page(index, bilevel, dpi, lines))


def colour_jpeg(index: int) -> tuple[Built, bytes]:
    """A colour 150 dpi A5 page handed over as the scan's own JPEG stream."""
    dpi, size = 150, (874, 1240)
    image = Image.new("RGB", size, (250, 246, 236))
    draw = ImageDraw.Draw(image)
    lines = _draw_horizontal(draw, [("申請書", "C", 40), ("申請者　𠮷田　花子", "L", 26),
                                    ("住所　金沢市広坂１丁目１番１号", "L", 26)], size[0], 120, 2.2, 90)
    draw.ellipse((700, 100, 800, 200), outline=(200, 30, 30), width=6)  # a red seal
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85, dpi=(dpi, dpi))
    jpeg = buf.getvalue()
    decoded = Image.open(io.BytesIO(jpeg))
    decoded.load()
    return Built(_prepared(decoded, dpi, jpeg=jpeg, index=index), _page(index, decoded, dpi, lines)), jpeg


def vertical_jirei(index: int) -> Built:
    """A 辞令 at 200 dpi: columns right to left, of different lengths and heights."""
    dpi, size = 200, (1654, 2339)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    columns = [("辞　令", 1350, 360, 60), ("山下　正人", 1150, 740, 44), ("建設部道路課副参事に任命する", 980, 280, 44),
               ("平成三十一年一月一日", 750, 330, 40), ("愛知県知事　渡辺　直樹", 600, 1400, 44)]
    lines = []
    for text, x, y, size_px in columns:
        font, top = _font(size_px), y
        for ch in text:
            draw.text((x, y), ch, font=font, fill=0)
            y += int(size_px * 1.15)
        lines.append(Line(text=text, bbox=(x, top, x + size_px, y), confidence=90.0, vertical=True))
    return Built(_prepared(image, dpi, mode="vertical", index=index), _page(index, image, dpi, lines, "vertical"))


def blank_back(index: int) -> Built:
    dpi, size = 200, (1654, 2339)
    image = Image.new("L", size, 247)
    return Built(_prepared(image, dpi, blank=True, index=index), _page(index, image, dpi, [], blank=True))


INFO = PdfInfo(title=TITLE, creator="金沢市総務局総務課", date=dt.date(2024, 4, 1), record_id="0123456789abcdef",
               subject="通知", keywords=("節電", "庁舎管理"))


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    colour, jpeg = colour_jpeg(2)
    built = [gray_letter(0), bilevel_table(1), colour, vertical_jirei(3), blank_back(4)]
    out = tmp_path_factory.mktemp("pdfa") / "archive.pdf"
    started = time.perf_counter()
    flavour = write_archive_pdf([(b.prepared, b.page) for b in built], out, INFO)
    elapsed = time.perf_counter() - started
    return {"path": out, "built": built, "jpeg": jpeg, "flavour": flavour, "seconds": elapsed}


# --------------------------------------------------------------------------- helpers


def pdftotext(path: Path, page: int | None = None, *args: str) -> str:
    cmd = ["pdftotext", "-enc", "UTF-8", *args]
    if page is not None:
        cmd += ["-f", str(page + 1), "-l", str(page + 1)]
    return subprocess.run([*cmd, str(path), "-"], check=True, capture_output=True).stdout.decode("utf-8")


def text_lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("\f", "\n").splitlines() if line.strip()]


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def bbox_words(path: Path, page: int) -> list[tuple[float, float, float, float, str]]:
    xml = pdftotext(path, page, "-bbox")
    pattern = r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>'
    return [(float(a), float(b), float(c), float(d), w) for a, b, c, d, w in re.findall(pattern, xml)]


def image_of(pdf: pikepdf.Pdf, page: int) -> pikepdf.Stream:
    xobjects = pdf.pages[page].Resources.XObject
    (name,) = list(xobjects.keys())
    return xobjects[name]


# --------------------------------------------------------------------------- tests


def test_validates_as_pdfa_2b(document):
    assert document["flavour"] == "2b"
    report = pikepdf.pdfa.validate_written(document["path"], "2b")
    assert report.passed, report.summary()
    assert report.output_intent == "RGB"


def test_one_page_per_scan_at_its_real_size(document):
    with pikepdf.open(document["path"]) as pdf:
        assert len(pdf.pages) == len(document["built"])
        for page, built in zip(pdf.pages, document["built"]):
            width_px, height_px = built.prepared.archive_image.size
            dpi = built.prepared.dpi
            x0, y0, x1, y1 = (float(v) for v in page.MediaBox)
            assert (x0, y0) == (0, 0)
            assert x1 == pytest.approx(width_px / dpi * 72, abs=0.01)
            assert y1 == pytest.approx(height_px / dpi * 72, abs=0.01)


def test_gray_page_is_lossless_flate(document):
    built = document["built"][0]
    with pikepdf.open(document["path"]) as pdf:
        xobject = image_of(pdf, 0)
        assert xobject.Filter == pikepdf.Name.FlateDecode
        assert xobject.ColorSpace == pikepdf.Name.DeviceGray and xobject.BitsPerComponent == 8
        decoded = pikepdf.PdfImage(xobject).as_pil_image()
    assert np.array_equal(np.asarray(decoded), np.asarray(built.prepared.archive_image))


def test_bilevel_page_stays_bilevel_g4(document):
    built = document["built"][1]
    with pikepdf.open(document["path"]) as pdf:
        xobject = image_of(pdf, 1)
        assert xobject.BitsPerComponent == 1
        assert xobject.Filter in (pikepdf.Name.CCITTFaxDecode, pikepdf.Name.FlateDecode)
        assert xobject.Filter == pikepdf.Name.CCITTFaxDecode  # libtiff is part of Pillow's wheels
        assert int(xobject.DecodeParms.K) == -1
        raw_size = len(xobject.read_raw_bytes())
        decoded = pikepdf.PdfImage(xobject).as_pil_image()
    original = built.prepared.archive_image
    assert decoded.mode == "1"
    assert np.array_equal(np.asarray(decoded), np.asarray(original))
    assert raw_size < len(original.tobytes()) / 10  # a text page: G4 is far below the raw bits
    # and a viewer shows black ink where the scan has it (BlackIs1 set the right way)
    rendered = subprocess.run(["pdftoppm", "-f", "2", "-l", "2", "-r", "200", "-gray", "-aa", "no",
                               str(document["path"])], check=True, capture_output=True).stdout
    shown = np.asarray(Image.open(io.BytesIO(rendered)))[: original.size[1], : original.size[0]] < 128
    ink = ~np.asarray(original)
    assert shown.shape == ink.shape
    assert (shown == ink).mean() > 0.98


def test_colour_page_embeds_the_scan_jpeg_as_is(document):
    with pikepdf.open(document["path"]) as pdf:
        xobject = image_of(pdf, 2)
        assert xobject.Filter == pikepdf.Name.DCTDecode
        assert xobject.ColorSpace == pikepdf.Name.DeviceRGB
        assert xobject.read_raw_bytes() == document["jpeg"]
        assert (int(xobject.Width), int(xobject.Height)) == document["built"][2].prepared.archive_image.size


def test_horizontal_text_in_reading_order_without_spurious_spaces(document):
    built = document["built"][0]
    out = text_lines(pdftotext(document["path"], 0))
    assert TITLE in out  # exactly, with no space between the characters
    assert [squeeze(line) for line in out] == [squeeze(line.text) for line in built.page.lines]
    assert "総務第１２３号" in out and "こととしたので通知します。" in out


def test_table_rows_stay_one_line_each(document):
    built = document["built"][1]
    out = text_lines(pdftotext(document["path"], 1))
    assert [squeeze(line) for line in out] == [squeeze(line.text) for line in built.page.lines]
    assert "コピー用紙 １０箱 ３２，０００円" in out


def test_vertical_page_reads_columns_right_to_left(document):
    built = document["built"][3]
    out = text_lines(pdftotext(document["path"], 3))
    assert [squeeze(line) for line in out] == [squeeze(line.text) for line in built.page.lines]
    assert out[2] == "建設部道路課副参事に任命する"


def test_characters_beyond_the_bmp_survive(document):
    out = pdftotext(document["path"], 2)
    assert "𠮷田" in out
    assert [squeeze(line) for line in text_lines(out)] == [squeeze(l.text) for l in document["built"][2].page.lines]


def test_blank_page_has_image_and_no_text(document):
    assert pdftotext(document["path"], 4).strip() == ""
    with pikepdf.open(document["path"]) as pdf:
        assert image_of(pdf, 4).Subtype == pikepdf.Name.Image


def test_whole_document_text_matches_lines(document):
    """What the evaluator does: NFKC, whitespace dropped, all pages in order."""
    import unicodedata

    expected = "".join(squeeze(line.text) for b in document["built"] for line in b.page.lines)
    got = squeeze(unicodedata.normalize("NFKC", pdftotext(document["path"])))
    assert got == squeeze(unicodedata.normalize("NFKC", expected))


@pytest.mark.parametrize("page", [0, 1, 2, 3])
def test_word_boxes_fall_inside_the_line_boxes(document, page):
    built = document["built"][page]
    scale = 72 / built.prepared.dpi
    # pdftotext -bbox: y grows downwards from the top, like image pixels
    boxes = [tuple(v * scale for v in line.bbox) for line in built.page.lines]
    words = bbox_words(document["path"], page)
    assert words
    tol = 0.05
    for x0, y0, x1, y1, text in words:
        assert any(bx0 - tol <= x0 and x1 <= bx1 + tol and by0 - tol <= y0 and y1 <= by1 + tol
                   for bx0, by0, bx1, by1 in boxes), (text, (x0, y0, x1, y1))


def test_table_cells_start_where_the_ocr_words_are(document):
    """With word boxes, characters are placed per word: 数量 starts where it is printed."""
    built = document["built"][1]
    scale = 72 / built.prepared.dpi
    words = {text: (x0, y0) for x0, y0, _, _, text in bbox_words(document["path"], 1)}
    row = built.page.lines[3]  # コピー用紙 １０箱 ３２，０００円
    for word in row.words[1:]:
        assert words[word.text][0] == pytest.approx(word.bbox[0] * scale, abs=0.5)


def test_xmp_metadata(document):
    with pikepdf.open(document["path"]) as pdf:
        meta = pdf.open_metadata()
        assert meta["dc:title"] == TITLE
        assert meta["dc:creator"] == ["金沢市総務局総務課"]
        assert meta["dc:identifier"] == "0123456789abcdef"
        assert meta["dc:language"] == {"ja"}
        assert meta["dc:date"] == ["2024-04-01"]
        assert meta["dc:subject"] == {"節電", "庁舎管理"}
        assert meta["pdfaid:part"] == "2" and meta["pdfaid:conformance"] == "B"
        assert str(pdf.docinfo["/Title"]) == TITLE
        assert str(pdf.Root.Lang) == "ja"


def test_fonts_embedded_with_tounicode(document):
    with pikepdf.open(document["path"]) as pdf:
        fonts = {}
        for page in pdf.pages:
            for font in (page.Resources.get("/Font") or {}).values():
                fonts[font.objgen] = font
        assert fonts
        for font in fonts.values():
            assert font.Subtype == pikepdf.Name.Type0 and "/ToUnicode" in font
            descendant = font.DescendantFonts[0]
            assert "/FontFile2" in descendant.FontDescriptor
            assert len(descendant.FontDescriptor.FontFile2.read_bytes()) < 4096  # glyphless: tiny


def test_output_intent_carries_an_icc_profile(document):
    with pikepdf.open(document["path"]) as pdf:
        (intent,) = list(pdf.Root.OutputIntents)
        assert intent.S == pikepdf.Name.GTS_PDFA1
        profile = intent.DestOutputProfile.read_bytes()
        assert profile[36:40] == b"acsp"


def test_a4_300dpi_page_is_fast(tmp_path):
    """A 300 dpi A4 page: write + validate in well under half a second (generous bound: shared CI)."""
    built = gray_letter(0)
    bilevel = built.prepared.archive_image.point(lambda v: 255 if v > 128 else 0).convert("1")
    for image in (built.prepared.archive_image, bilevel):
        prepared = _prepared(image, 300)
        started = time.perf_counter()
        write_archive_pdf([(prepared, built.page)], tmp_path / f"{image.mode}.pdf", INFO)
        assert time.perf_counter() - started < 2.0


def test_lossy_source_is_reencoded_as_jpeg_and_lossless_is_not(tmp_path):
    built = colour_jpeg(0)[0]
    rgb = built.prepared.archive_image.rotate(1.0, fillcolor=(255, 255, 255))  # straightened: jpeg no longer valid
    lossless = _prepared(rgb, 150)
    lossy = _prepared(rgb, 150)
    lossy.source_encoding = "jpeg"  # type: ignore[attr-defined]  # set by prepare when the scan was JPEG
    for name, prepared, expected in (("flate", lossless, pikepdf.Name.FlateDecode),
                                     ("dct", lossy, pikepdf.Name.DCTDecode)):
        out = tmp_path / f"{name}.pdf"
        write_archive_pdf([(prepared, built.page)], out, INFO)
        with pikepdf.open(out) as pdf:
            assert image_of(pdf, 0).Filter == expected


def test_stale_archive_jpeg_is_not_trusted(tmp_path):
    """archive_jpeg of another size than archive_image: the image is encoded instead."""
    built, jpeg = colour_jpeg(0)
    smaller = built.prepared.archive_image.resize((437, 620))
    prepared = _prepared(smaller, 75, jpeg=jpeg)
    out = tmp_path / "stale.pdf"
    write_archive_pdf([(prepared, built.page)], out, PdfInfo(title="x"))
    with pikepdf.open(out) as pdf:
        xobject = image_of(pdf, 0)
        assert (int(xobject.Width), int(xobject.Height)) == (437, 620)
        assert xobject.read_raw_bytes() != jpeg


def test_invalid_pdfa_raises_and_writes_nothing(tmp_path):
    """A page over PDF/A's 200 inch limit cannot be archived as PDF/A: a clear error, no file."""
    image = Image.new("1", (40, 15000), 1)  # 15000 pt tall at 72 dpi
    prepared = _prepared(image, 72)
    page = Page(index=0, dpi=72, width_px=40, height_px=15000)
    out = tmp_path / "too_tall.pdf"
    with pytest.raises(ArchivePdfError, match="PDF/A-2b"):
        write_archive_pdf([(prepared, page)], out, PdfInfo(title="x", record_id="r1"))
    assert not out.exists()


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "I;16", "CMYK", "CMYK-jpeg"])
def test_odd_image_modes_become_gray_or_rgb(tmp_path, mode):
    """Palette, alpha, 16-bit and CMYK pages end up DeviceGray/DeviceRGB (the sRGB intent allows no CMYK)."""
    base = Image.new("RGB", (160, 240), (240, 235, 220))
    ImageDraw.Draw(base).text((20, 40), "記録", font=_font(40), fill=(20, 20, 120))
    jpeg = None
    if mode == "CMYK-jpeg":
        buf = io.BytesIO()
        base.convert("CMYK").save(buf, format="JPEG", quality=90)
        jpeg = buf.getvalue()
        image = Image.open(io.BytesIO(jpeg))
        image.load()
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)  # mode I;16
    else:
        image = base.convert(mode)
    line = Line(text="記録", bbox=(20, 48, 100, 90), confidence=90.0)
    page = Page(index=0, dpi=72, width_px=160, height_px=240, lines=[line])
    out = tmp_path / "odd.pdf"
    assert write_archive_pdf([(_prepared(image, 72, jpeg=jpeg), page)], out, PdfInfo(title="記録")) == "2b"
    assert pikepdf.pdfa.validate_written(out, "2b").passed
    with pikepdf.open(out) as pdf:
        xobject = image_of(pdf, 0)
        assert xobject.ColorSpace in (pikepdf.Name.DeviceGray, pikepdf.Name.DeviceRGB)
        decoded = np.asarray(pikepdf.PdfImage(xobject).as_pil_image().convert("L")).astype(int)
    # the picture is still the picture: ink where the text is, paper elsewhere
    assert decoded[60:85, 25:95].min() < 100 and decoded[200:, :].mean() > 200
    assert "記録" in pdftotext(out)


def test_line_box_past_the_page_edge_is_clipped(tmp_path):
    """An OCR box running off the page still gives its text, placed on the page."""
    image = Image.new("L", (400, 300), 255)
    draw = ImageDraw.Draw(image)
    draw.text((250, 100), "公文書館", font=_font(40), fill=0)
    line = Line(text="公文書館", bbox=(250, 100, 460, 145), confidence=80.0)  # 60 px past the right edge
    page = Page(index=0, dpi=100, width_px=400, height_px=300, lines=[line])
    out = tmp_path / "clip.pdf"
    write_archive_pdf([(_prepared(image, 100), page)], out, PdfInfo(title="x"))
    assert text_lines(pdftotext(out)) == ["公文書館"]
    ((x0, _, x1, _, _),) = bbox_words(out, 0)
    assert x0 == pytest.approx(250 * 0.72, abs=0.1) and x1 <= 400 * 0.72 + 0.05


def _jpeg_with_profile(profile: bytes) -> tuple[Image.Image, bytes]:
    image = Image.new("RGB", (120, 160), (236, 232, 220))
    ImageDraw.Draw(image).rectangle((20, 20, 60, 60), fill=(190, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90, icc_profile=profile)
    decoded = Image.open(io.BytesIO(buf.getvalue()))
    decoded.load()
    return decoded, buf.getvalue()


@pytest.mark.parametrize("device_class, expected", [(b"mntr", "/ICCBased"), (b"abst", "/DeviceRGB")])
def test_scan_icc_profile_travels_with_its_jpeg(tmp_path, device_class, expected):
    """The JPEG's own profile goes along as ICCBased; one PDF/A refuses (an abstract
    profile) is dropped, with the very same JPEG bytes shown as DeviceRGB."""
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image, jpeg = _jpeg_with_profile(srgb[:12] + device_class + srgb[16:])
    page = Page(index=0, dpi=72, width_px=120, height_px=160)
    out = tmp_path / "icc.pdf"
    assert write_archive_pdf([(_prepared(image, 72, jpeg=jpeg), page)], out, PdfInfo(title="色")) == "2b"
    assert pikepdf.pdfa.validate_written(out, "2b").passed
    with pikepdf.open(out) as pdf:
        xobject = image_of(pdf, 0)
        space = xobject.ColorSpace
        assert str(space if isinstance(space, pikepdf.Name) else space[0]) == expected
        assert xobject.read_raw_bytes() == jpeg


def test_sample_scans_keep_their_encoding(shared, tmp_path):
    """Real scans from ../shared: the G4 TIFF stays G4 bit for bit, the JPEG is embedded as is."""
    samples = shared / "samples"
    with Image.open(samples / "d2_007.tif") as tif:
        tif.seek(0)
        bilevel = tif.copy()
    assert bilevel.mode == "1"
    jpeg = (samples / "d2_005.jpg").read_bytes()
    colour = Image.open(io.BytesIO(jpeg))
    colour.load()
    pages = []
    for index, (image, blob) in enumerate(((bilevel, None), (colour, jpeg))):
        pages.append((_prepared(image, 300, jpeg=blob, index=index),
                      Page(index=index, dpi=300, width_px=image.size[0], height_px=image.size[1])))
    out = tmp_path / "samples.pdf"
    write_archive_pdf(pages, out, INFO)
    with pikepdf.open(out) as pdf:
        g4 = image_of(pdf, 0)
        assert g4.Filter == pikepdf.Name.CCITTFaxDecode
        assert np.array_equal(np.asarray(pikepdf.PdfImage(g4).as_pil_image()), np.asarray(bilevel))
        assert image_of(pdf, 1).read_raw_bytes() == jpeg
        assert [float(v) for v in pdf.pages[1].MediaBox] == pytest.approx([0, 0, 595.2, 841.92], abs=0.01)
    # the archive costs little more than the scans themselves
    assert out.stat().st_size < 1.3 * ((samples / "d2_007.tif").stat().st_size + len(jpeg)) + 20_000
