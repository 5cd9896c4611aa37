"""Stage "prepare": orientation, writing mode, skew, blank pages, and the two output images."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from processors.reading import prepare as P
from processors.reading.pages import SourcePage
from tests.pagegen import DEFAULT_LINES, distort, render_notice

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def _source(img: Image.Image, dpi: float = 200, jpeg: bytes | None = None) -> SourcePage:
    return SourcePage(index=0, image=img, dpi=(dpi, dpi), encoding="jpeg" if jpeg else "raw", jpeg_bytes=jpeg)


@pytest.fixture(scope="module")
def pages() -> dict:
    """Upright notices, drawn once: (vertical, font) -> image at 200 dpi."""
    return {(v, f): render_notice(vertical=v, dpi=200, font=f) for v in (False, True) for f in ("mincho", "gothic")}


# --------------------------------------------------------------------------------------
# conventions
# --------------------------------------------------------------------------------------


def test_pagegen_and_prepare_share_the_rotation_convention() -> None:
    """distort turns clockwise by rotation_deg; turn_upright undoes exactly that."""
    img = Image.new("L", (300, 400), 255)
    ImageDraw.Draw(img).rectangle((0, 0, 40, 40), fill=0)  # top-left mark
    turned = distort(img, rotation_deg=90)
    assert turned.size == (400, 300)
    arr = np.asarray(turned)
    assert arr[:40, -40:].mean() < 10  # at 90 the top points right: the top-left went top-right
    for rot in (0, 90, 180, 270):
        back = P.turn_upright(np.asarray(distort(img, rotation_deg=rot)), rot)
        assert np.array_equal(back, np.asarray(img))
        assert P.turn_upright(distort(img, rotation_deg=rot), rot).tobytes() == img.tobytes()


def test_candidates_and_line_starts() -> None:
    assert set(P.candidates_for_axis("rows")) == {(0, "horizontal"), (180, "horizontal"), (90, "vertical"), (270, "vertical")}
    assert set(P.candidates_for_axis("cols")) == {(0, "vertical"), (180, "vertical"), (90, "horizontal"), (270, "horizontal")}
    assert P.starts_low_side(0, "horizontal") and not P.starts_low_side(180, "horizontal")
    assert P.starts_low_side(0, "vertical") and not P.starts_low_side(180, "vertical")
    # a horizontal page turned 90 clockwise: its line starts are now at the top
    assert P.starts_low_side(90, "horizontal") and not P.starts_low_side(270, "horizontal")
    # a vertical page turned 270 clockwise: its column tops are now at the left
    assert P.starts_low_side(270, "vertical") and not P.starts_low_side(90, "vertical")


def test_weak_evidence_does_not_turn_a_page() -> None:
    """Without a clear trial read, OSD alone must be confident to turn a page."""
    ev = P.OrientationEvidence(axis="rows", stored_size=(1000, 1400), osd_rotation=180, osd_confidence=2.0)
    o = P.decide_orientation(ev, crop=None, osd_image=None, use_trial=False)
    assert (o.rotation_deg, o.writing_mode) == (0, "horizontal")
    ev = P.OrientationEvidence(axis="rows", stored_size=(1000, 1400), osd_rotation=180, osd_confidence=9.0)
    o = P.decide_orientation(ev, crop=None, osd_image=None, use_trial=False)
    assert (o.rotation_deg, o.writing_mode) == (180, "horizontal")


# --------------------------------------------------------------------------------------
# skew
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vertical", [False, True])
@pytest.mark.parametrize("skew,bilevel,noise", [(-12.5, False, 0), (-3.7, True, 0), (-0.35, False, 12), (0.8, True, 0),
                                                 (2.25, False, 6), (6.1, True, 0), (14.2, False, 0)])
def test_skew_found_within_a_fifth_of_a_degree(pages, vertical: bool, skew: float, bilevel: bool, noise: float) -> None:
    img = distort(pages[(vertical, "mincho")], skew_deg=skew, bilevel=bilevel, noise=noise)
    geo = P.analyse_geometry(_source(img), use_trial=False, use_osd=False)
    assert not geo.blank
    assert abs(geo.skew_deg - skew) <= 0.2, (geo.skew_deg, skew)
    assert geo.lines.axis == ("cols" if vertical else "rows")


def test_skew_ignores_dark_scanner_border_and_punch_holes(pages) -> None:
    page = distort(pages[(False, "gothic")], skew_deg=3.1)
    canvas = Image.new("L", (page.width + 160, page.height + 160), 25)  # dark scanner lid around the sheet
    canvas.paste(page, (80, 80))
    d = ImageDraw.Draw(canvas)
    r = int(3 / 25.4 * 200)  # 6 mm holes near the left edge
    for cy in (canvas.height // 2 - 300, canvas.height // 2 + 300):
        d.ellipse((130 - r, cy - r, 130 + r, cy + r), fill=20)
    geo = P.analyse_geometry(_source(canvas), use_trial=False, use_osd=False)
    assert abs(geo.skew_deg - 3.1) <= 0.2


def test_projection_profile_peaks_at_the_skew() -> None:
    ink = np.zeros((400, 400), bool)
    for y in range(40, 380, 30):
        ink[y : y + 8, 30:370] = True
    img = Image.fromarray(~ink)  # white page, black bars
    skewed = np.asarray(img.convert("L").rotate(4.0, fillcolor=255, resample=Image.Resampling.BILINEAR)) < 128
    angles = np.arange(-10, 10.01, 0.5)
    best = angles[int(np.argmax(P.projection_scores(skewed, angles, "rows")))]
    assert best == pytest.approx(4.0, abs=0.5)


# --------------------------------------------------------------------------------------
# orientation and writing mode (these ask tesseract)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("vertical,font", [(False, "mincho"), (True, "gothic")])
def test_orientation_and_writing_mode(pages, rotation: int, vertical: bool, font: str) -> None:
    img = distort(pages[(vertical, font)], rotation_deg=rotation, skew_deg=1.3, noise=4)
    geo = P.analyse_geometry(_source(img))
    assert geo.rotation_deg == rotation
    assert geo.writing_mode == ("vertical" if vertical else "horizontal")
    assert abs(geo.skew_deg - 1.3) <= 0.2


def test_landscape_vertical_page_turned_is_not_taken_for_horizontal() -> None:
    """A 表彰状 (landscape, vertical writing) scanned turned by 90 shows rows, like a letter."""
    lines = ["表彰状", "新潟　花子　様", "あなたは多年にわたり市政の発展に尽力され", "その功績は誠に顕著であります",
             "よってここに表彰します", "令和７年１１月３日", "新潟市長　中原　八一"]
    upright = render_notice(lines, vertical=True, dpi=150, size=(round(11.69 * 150), round(8.27 * 150)))
    img = distort(upright, rotation_deg=270, skew_deg=-0.8)
    assert img.height > img.width  # stored portrait, text in rows
    geo = P.analyse_geometry(_source(img, dpi=150))
    assert (geo.rotation_deg, geo.writing_mode) == (270, "vertical")


# --------------------------------------------------------------------------------------
# blank pages
# --------------------------------------------------------------------------------------


def test_blank_pages(pages) -> None:
    white = distort(Image.new("L", (1654, 2339), 246), noise=5)
    assert P.analyse_geometry(_source(white)).blank
    # duplex back: the front shows through, mirrored and faint (8 %), plus scanner noise
    front = np.asarray(pages[(False, "mincho")], dtype=np.float32)
    bleed = 246 - (255 - front[:, ::-1]) * 0.08
    back = distort(Image.fromarray(bleed.astype(np.uint8)), noise=3)
    assert P.analyse_geometry(_source(back)).blank
    # bilevel back with dust and two punch holes
    dusty = Image.new("L", (1654, 2339), 255)
    d = ImageDraw.Draw(dusty)
    rng = np.random.default_rng(5)
    for x, y in rng.integers(100, 1500, size=(60, 2)):
        d.point((int(x), int(y) + 300), fill=0)
    for cy in (900, 1400):
        d.ellipse((60, cy - 24, 108, cy + 24), fill=0)
    assert P.analyse_geometry(_source(dusty.convert("1"))).blank
    # a real page, and a page with only two short lines, are not blank
    assert not P.analyse_geometry(_source(pages[(False, "mincho")]), use_trial=False, use_osd=False).blank
    short = render_notice(["以上", "（裏面に続く）"], dpi=200)
    assert not P.analyse_geometry(_source(short), use_trial=False, use_osd=False).blank
    # a picture without any text is not blank either
    picture = Image.new("L", (1654, 2339), 250)
    ImageDraw.Draw(picture).ellipse((300, 500, 1300, 1500), fill=60)
    assert not P.analyse_geometry(_source(picture), use_trial=False, use_osd=False).blank


# --------------------------------------------------------------------------------------
# the archive image and the OCR image
# --------------------------------------------------------------------------------------


def test_colour_modes_are_kept_and_nothing_is_cut(pages) -> None:
    base = pages[(False, "mincho")]
    for bilevel, rgb, mode in ((True, False, "1"), (False, False, "L"), (False, True, "RGB")):
        img = distort(base, skew_deg=4.0, bilevel=bilevel)
        if rgb:
            img = img.convert("RGB")
        prepared = P.prepare_page(_source(img))
        assert prepared.archive_image.mode == mode
        w, h = img.size
        assert prepared.archive_image.width >= w and prepared.archive_image.height >= h  # canvas grown
        corners = np.asarray(prepared.archive_image.convert("L"))
        assert corners[0, 0] == corners[0, -1] == corners[-1, 0] == corners[-1, -1] == 255  # white fill
        assert prepared.archive_jpeg is None
        assert abs(prepared.skew_deg - 4.0) <= 0.2


def test_straight_upright_page_is_kept_as_scanned_with_its_jpeg(pages) -> None:
    buf = io.BytesIO()
    pages[(False, "gothic")].save(buf, format="JPEG", quality=85)
    jpeg = buf.getvalue()
    img = Image.open(io.BytesIO(jpeg))
    prepared = P.prepare_page(_source(img, jpeg=jpeg))
    assert prepared.rotation_deg == 0 and abs(prepared.skew_deg) < P.NEGLIGIBLE_SKEW_DEG
    assert prepared.archive_image is img
    assert prepared.archive_jpeg == jpeg
    assert prepared.source_encoding == "jpeg"


def test_rotated_page_is_turned_upright(pages) -> None:
    upright = pages[(False, "mincho")]
    prepared = P.prepare_page(_source(distort(upright, rotation_deg=90)))
    assert prepared.rotation_deg == 90
    assert prepared.archive_image.size == upright.size
    assert np.array_equal(np.asarray(prepared.archive_image), np.asarray(upright))


def test_ocr_image_scaled_to_300_dpi(pages) -> None:
    img = pages[(False, "mincho")]
    prepared = P.prepare_page(_source(img, dpi=200))
    assert prepared.dpi == 200
    assert prepared.ocr_scale == pytest.approx(1.5, abs=0.01)
    assert prepared.ocr_image.dtype == np.uint8 and prepared.ocr_image.ndim == 2
    assert prepared.ocr_image.shape == (round(img.height * 1.5), round(img.width * 1.5))


def test_red_seal_dropped_for_ocr_but_kept_in_archive() -> None:
    base = render_notice(dpi=300)
    text = np.asarray(base) < 128
    rows = np.flatnonzero(text.any(axis=1))
    starts = rows[np.r_[True, np.diff(rows) > 5]]
    issuer_y = int(starts[3]) + 20  # the 4th line, 新潟市総務部長, right-aligned
    issuer_x = int(np.flatnonzero(text[issuer_y - 20 : issuer_y + 20].any(axis=0)).max())
    img = distort(base, red_seal_at=(issuer_x - 60, issuer_y))  # over the end of the issuer's name, as seals are
    assert img.mode == "RGB"
    prepared = P.prepare_page(_source(img, dpi=300))
    assert prepared.ocr_scale == 1.0 and prepared.archive_image.mode == "RGB"
    rgb = np.asarray(img).astype(int)
    seal = (rgb[..., 0] - rgb[..., 1:].max(axis=2) > 60)  # clearly red pixels
    only_seal = seal & ~text
    assert only_seal.sum() > 2000
    archive = np.asarray(prepared.archive_image).astype(int)
    assert (archive[only_seal][:, 0] - archive[only_seal][:, 1:].max(axis=1)).mean() > 60  # still red
    ocr = prepared.ocr_image
    assert np.percentile(ocr[only_seal], 5) > 200  # gone for the OCR engine
    assert ocr[text].mean() < 100  # the black text under it stays
    # the characters the seal is stamped over stay dark in the OCR copy
    yy, xx = np.mgrid[: text.shape[0], : text.shape[1]]
    under = text & ((xx - (issuer_x - 60)) ** 2 + (yy - issuer_y) ** 2 < 110**2)
    assert under.sum() > 500 and ocr[under].mean() < 100


def test_seal_removal_leaves_red_print_and_photos_alone() -> None:
    """Only seal-shaped red marks are dropped: a red printed callout and a sepia photo keep their ink."""
    from tests.pagegen import _font

    page = Image.new("RGB", (1654, 2339), "white")  # A4 at 200 dpi
    draw = ImageDraw.Draw(page)
    font = _font("gothic", 48)
    draw.text((150, 300), "提出期限は必ず守ってください（厳守）", font=font, fill=(220, 30, 30))  # red print
    draw.rectangle((150, 900, 650, 1500), fill=(200, 140, 120))  # a sepia photo: a solid warm field
    draw.text((200, 1100), "写真の中の文字", font=font, fill=(90, 60, 40))
    draw.ellipse((1100, 900, 1300, 1100), outline=(220, 40, 40), width=10)  # a round seal
    draw.text((1150, 960), "印", font=_font("mincho", 80), fill=(220, 40, 40))
    rgb = np.asarray(page)
    gray = P.page_gray(page)
    plain = np.asarray(page.convert("L"))
    callout = (slice(300, 360), slice(150, 1100))
    assert gray[callout].min() < 130  # the red callout is still ink
    assert P.red_mask(rgb)[900:1500, 150:650].mean() > 0.9  # the photo is red enough to be taken for a seal...
    assert np.abs(gray[900:1500, 150:650].astype(int) - plain[900:1500, 150:650]).max() <= 1  # ...yet untouched
    seal_px = P.red_mask(rgb)[900:1100, 1100:1300]
    assert seal_px.sum() > 2000 and gray[900:1100, 1100:1300][seal_px].min() > 200  # the seal is gone


def test_uneven_tone_is_evened_for_ocr_only() -> None:
    base = np.asarray(render_notice(dpi=150), dtype=np.float32)
    ramp = np.linspace(1.0, 0.6, base.shape[1], dtype=np.float32)[None, :]  # shadow towards the right
    shaded = Image.fromarray((base * ramp).astype(np.uint8))
    prepared = P.prepare_page(_source(shaded, dpi=150))
    archive = np.asarray(prepared.archive_image)
    assert archive[50, -50] < 170  # the archive keeps the scan's shadow
    ocr = prepared.ocr_image
    h, w = ocr.shape
    assert ocr[int(50 * prepared.ocr_scale), w - int(50 * prepared.ocr_scale)] > 235  # evened out for reading


# --------------------------------------------------------------------------------------
# the sample corpus
# --------------------------------------------------------------------------------------


def test_samples_meet_the_targets() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is not present")
    from processors.reading.images import load_document

    errors, wrong = [], []
    for tpath in sorted(SAMPLES.glob("*.truth.json")):
        truth = json.loads(tpath.read_text(encoding="utf-8"))
        for page, tp in zip(load_document(SAMPLES / truth["file"]).pages, truth["pages"]):
            geo = P.analyse_geometry(page)
            where = f"{truth['id']}/{page.index}"
            if geo.blank != tp["blank"]:
                wrong.append((where, "blank", geo.blank))
            if tp["blank"]:
                continue
            if geo.rotation_deg != tp["rotation_deg"]:
                wrong.append((where, "rotation", geo.rotation_deg, tp["rotation_deg"]))
            if geo.writing_mode != tp["writing_mode"]:
                wrong.append((where, "mode", geo.writing_mode))
            errors.append(abs(geo.skew_deg - tp["skew_deg"]))
    assert not wrong
    assert len(errors) == 15
    assert statistics.median(errors) <= 0.1
    assert max(errors) <= 0.3


def test_peer_inputs_orientation() -> None:
    """Other projects' real files: OCRmyPDF's cardinal.pdf (one page burned in at four
    turns), NDL's vertical magazine page that tesseract OSD alone reads with confidence 2.5
    and must not be turned, yomitoku's mostly vertical gallery page and its blank TIFF page."""
    peer = SAMPLES.parent / "peer-inputs"
    if not peer.is_dir():
        pytest.skip(f"{peer} is not present")
    from processors.reading.images import load_document

    cardinal = load_document(peer / "ocrmypdf__cardinal.pdf").pages
    assert [P.analyse_geometry(p).rotation_deg for p in cardinal] == [0, 90, 180, 270]
    for name in ("ndlocr-lite__digidepo_11048278_po_geppo1803_00021.jpg", "yomitoku__gallery3.jpg"):
        geo = P.analyse_geometry(load_document(peer / name).pages[0])
        assert (geo.rotation_deg, geo.writing_mode) == (0, "vertical"), name
    test_tiff = load_document(peer / "yomitoku__test.tiff").pages
    assert [P.analyse_geometry(p).blank for p in test_tiff] == [False, True]


def test_pagegen_pages() -> None:
    page = render_notice(dpi=100)
    assert page.mode == "L" and page.size == (827, 1169)
    assert DEFAULT_LINES[4] == "庁舎における節電の取組について（通知）"
    ink = np.asarray(page) < 128
    assert ink.any() and not ink[:, :80].any()  # text inside the margins
    vertical = np.asarray(render_notice(vertical=True, dpi=100)) < 128
    cols = np.flatnonzero(vertical.any(axis=0))
    assert cols.max() > 600  # columns start at the right
    assert distort(page, bilevel=True).mode == "1"
    assert distort(page, red_seal_at=(600, 200)).mode == "RGB"
    assert distort(page, rotation_deg=270).size == (1169, 827)
