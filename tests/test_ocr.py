"""OCR engines and Japanese text hygiene, on pages drawn in code with the IPA fonts.

Every engine test runs the real program (tesseract through pytesseract, PP-OCR
through rapidocr/onnxruntime) on a rendered notice or 辞令 and checks what came back:
the text, its reading order, its spacing and where its boxes lie. Pages are small
(the top half of an A4 page at 200 dpi) and each page is read once per engine.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw
from rapidfuzz.distance import Levenshtein

from processors.reading import ocr
from processors.reading.ocr import (
    AutoEngine,
    OcrEngine,
    RapidOcrEngine,
    TesseractEngine,
    Token,
    get_engine,
    group_horizontal,
    group_vertical,
    remove_rules,
    suppress_light_ink,
    tokens_to_lines,
)
from processors.reading.pages import PageText, PreparedPage
from processors.reading.textnorm import (
    drop_rule_artifacts,
    fix_confusions,
    is_cjk,
    join_japanese_words,
    normalize_for_compare,
    printed_spaces,
    remove_spurious_spaces,
)
from tests.pagegen import DEFAULT_LINES, render_notice

HAS_RAPID = ocr.rapidocr_available()
needs_rapid = pytest.mark.skipif(not HAS_RAPID, reason="rapidocr/onnxruntime not installed (kiroku[rapidocr])")

DPI = 200
JIREI = ["辞　令", "山下　正人", "建設部道路課副参事に任命する", "令和七年四月一日", "新潟市長　中原　八一"]
CJK_ASCII_SPACE = re.compile(r"(?:(?<=[\u3040-\u30ff\u4e00-\u9fff]) )|(?: (?=[\u3040-\u30ff\u4e00-\u9fff]))")


def cer(truth: str, pred: str) -> float:
    t, p = normalize_for_compare(truth), normalize_for_compare(pred)
    return Levenshtein.distance(t, p) / max(1, len(t))


# ---------------------------------------------------------------------------
# pages drawn in code
# ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def notice_image() -> Image.Image:
    """The default notice (番号, date, addressee, issuer, title, body, 記 items), top half."""
    img = render_notice(dpi=DPI)
    return img.crop((0, 0, img.width, img.height // 2))


@lru_cache(maxsize=None)
def jirei_image() -> Image.Image:
    """A vertical 辞令: five columns from the right, right half of the page."""
    img = render_notice(JIREI, vertical=True, dpi=DPI)
    return img.crop((img.width // 2, 0, img.width, int(img.height * 0.7)))


def prepared(img: Image.Image, mode: str = "horizontal", scale: float = 1.0) -> PreparedPage:
    """A PreparedPage whose ocr_image is the archive image scaled by ``scale`` (as prepare does for 200 dpi scans)."""
    gray = np.asarray(img.convert("L"))
    if scale != 1.0:
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
    return PreparedPage(
        index=0, archive_image=img, ocr_image=np.ascontiguousarray(gray), ocr_scale=scale, dpi=DPI,
        rotation_deg=0, skew_deg=0.0, writing_mode=mode, blank=False,
    )


_READINGS: dict[tuple[str, str, float], PageText] = {}


def reading(engine: str, page: str, scale: float = 1.0) -> PageText:
    """Each (engine, page, scale) is read once for the whole module."""
    key = (engine, page, scale)
    if key not in _READINGS:
        img, mode = {"notice": (notice_image(), "horizontal"), "jirei": (jirei_image(), "vertical")}[page]
        _READINGS[key] = get_engine(engine).read(prepared(img, mode, scale))
    return _READINGS[key]


def ink_bands(img: Image.Image, axis: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of the ink bands of a rendered page: rows (axis=1) or columns (axis=0).

    The renderer leaves almost a line of paper between lines, so each band is one line.
    """
    ink = np.asarray(img.convert("L")) < 128
    profile = ink.any(axis=axis)
    bands, start = [], None
    for i, on in enumerate(list(profile) + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            bands.append((start, i))
            start = None
    boxes = []
    for a, b in bands:
        if axis == 1:
            cols = np.nonzero(ink[a:b].any(axis=0))[0]
            boxes.append((int(cols[0]), a, int(cols[-1]) + 1, b))
        else:
            rows = np.nonzero(ink[:, a:b].any(axis=1))[0]
            boxes.append((a, int(rows[0]), b, int(rows[-1]) + 1))
    return boxes


def find_line(text: PageText, truth: str) -> int:
    """Index of the line that reads most like ``truth``."""
    scores = [cer(truth, line.text) for line in text.lines]
    return int(np.argmin(scores))


def assert_box_near(box: tuple[int, int, int, int], ink: tuple[int, int, int, int], tol: float) -> None:
    for got, want in zip(box, ink):
        assert abs(got - want) <= tol, f"box {box} is not where the ink is {ink} (tolerance {tol:.0f} px)"


# ---------------------------------------------------------------------------
# textnorm: pure functions
# ---------------------------------------------------------------------------


def test_join_japanese_words_sets_japanese_solid_and_keeps_latin_spaces() -> None:
    assert join_japanese_words(["令和", "7", "年", "12", "月", "9", "日"]) == "令和7年12月9日"
    assert join_japanese_words(["TEL", "089-361-9361"]) == "TEL 089-361-9361"
    assert join_japanese_words(["E-mail", "kikaku@city.kanazawa.lg.jp"]) == "E-mail kikaku@city.kanazawa.lg.jp"
    assert join_japanese_words(["電話", "076-312-9453"]) == "電話076-312-9453"
    assert join_japanese_words(["各課長", "\u3000", "様"]) == "各課長\u3000様"
    assert join_japanese_words(["", "記", ""]) == "記"


def test_remove_spurious_spaces_only_next_to_japanese() -> None:
    assert remove_spurious_spaces("令 和 7 年 1 2 月 9 日") == "令和7年1 2月9日"
    assert remove_spurious_spaces("庁 舎 に お け る 節 電") == "庁舎における節電"
    assert remove_spurious_spaces("TEL  089-361-9361") == "TEL 089-361-9361"
    assert remove_spurious_spaces("石川県知事\u3000殿") == "石川県知事\u3000殿"
    assert remove_spurious_spaces("一行目 です\n二 行目") == "一行目です\n二行目"


def test_rule_artifacts_are_dropped_but_text_dashes_stay() -> None:
    assert drop_rule_artifacts("| 品名 | 数量 |") == "品名 数量"
    assert drop_rule_artifacts("番号 ｜ 施設名\n|||\n______\n― ― ―") == "番号 施設名"
    assert drop_rule_artifacts("－ 1 －\n2202-076") == "－ 1 －\n2202-076"
    assert drop_rule_artifacts("御請求金額 ¥710,443－ ________") == "御請求金額 ¥710,443－"
    assert drop_rule_artifacts("。、\n記") == "記"


def test_confusions_are_fixed_only_where_the_context_is_certain() -> None:
    assert fix_confusions("コンピュ一タ") == "コンピュータ"
    assert fix_confusions("センタ一") == "センター"
    assert fix_confusions("ク口ス") == "クロス"
    assert fix_confusions("ファイル一覧") == "ファイル一覧"  # 一覧 is a word
    assert fix_confusions("一般廃棄物") == "一般廃棄物"
    assert fix_confusions("人口") == "人口"
    assert fix_confusions("2O24年") == "2024年"
    assert fix_confusions("について (通知)") == "について （通知）"
    assert fix_confusions("(1)") == "(1)"
    assert fix_confusions("单価　报告书") == "単価　報告書"  # simplified forms a Chinese-trained model gives


def test_japanese_forms_never_touch_a_character_japanese_documents_use() -> None:
    from processors.reading.textnorm import _JAPANESE, _SIMPLIFIED, japanese_forms

    assert len(_SIMPLIFIED) == len(_JAPANESE) == len(set(_SIMPLIFIED))
    for simplified, japanese in zip(_SIMPLIFIED, _JAPANESE):
        with pytest.raises(UnicodeEncodeError):
            simplified.encode("cp932")  # not a JIS X 0208 character
        japanese.encode("cp932")
    every_jis_kanji = "".join(
        bytes([lead, trail]).decode("cp932", errors="ignore")
        for lead in [*range(0x88, 0xA0), *range(0xE0, 0xEB)]
        for trail in range(0x40, 0xFD)
        if trail != 0x7F
    )
    assert len(every_jis_kanji) > 6000
    assert japanese_forms(every_jis_kanji) == every_jis_kanji


def test_printed_spaces_and_is_cjk() -> None:
    assert printed_spaces("石川県知事 殿") == "石川県知事\u3000殿"
    assert printed_spaces(" TEL  089-361 ") == "TEL 089-361"
    assert all(is_cjk(c) for c in "漢かカ、。「」１（")
    assert not any(is_cjk(c) for c in "aZ1 -\u3000")


# ---------------------------------------------------------------------------
# reading order from boxes (pure)
# ---------------------------------------------------------------------------


def test_group_horizontal_makes_rows_and_table_rows() -> None:
    # a letter head: number right, date right, addressee left; a table row with three cells
    toks = [
        Token("令和7年12月9日", 1200, 110, 1470, 150, 90),
        Token("新総第1234号", 1240, 50, 1470, 90, 90),
        Token("各課長", 180, 200, 330, 240, 90),
        Token("759", 900, 300, 960, 338, 90),
        Token("ファイルボックス", 100, 302, 400, 340, 90),
        Token("、", 330, 228, 342, 242, 90),  # small punctuation at the baseline stays on its line
        Token("12", 600, 301, 640, 339, 90),
    ]
    rows = [[t.text for t in row] for row in group_horizontal(toks)]
    assert rows == [["新総第1234号"], ["令和7年12月9日"], ["各課長", "、"], ["ファイルボックス", "12", "759"]]


def test_group_vertical_reads_columns_right_to_left() -> None:
    toks = [
        Token("山下", 500, 100, 540, 200, 90),
        Token("辞令", 600, 100, 640, 200, 90),
        Token("正人", 502, 230, 541, 330, 90),
        Token("任命する", 400, 100, 440, 300, 90),
    ]
    cols = [[t.text for t in col] for col in group_vertical(toks)]
    assert cols == [["辞令"], ["山下", "正人"], ["任命する"]]


def test_tokens_to_lines_scales_boxes_to_archive_pixels_and_cleans_text() -> None:
    toks = [Token("令", 30, 60, 60, 90, 80), Token("和", 63, 60, 90, 90, 90), Token("|", 95, 40, 98, 120, 20)]
    (line,) = tokens_to_lines(toks, vertical=False, scale=1.5, size=(1000, 1000))
    assert line.text == "令和"
    assert line.bbox == (20, 40, 60, 60)
    assert [w.bbox for w in line.words] == [(20, 40, 40, 60), (42, 40, 60, 60)]
    assert line.confidence == pytest.approx(85.0)
    assert not line.vertical


def test_remove_rules_erases_table_lines_but_not_characters() -> None:
    img = Image.new("L", (800, 400), 255)
    d = ImageDraw.Draw(img)
    d.rectangle((50, 50, 750, 350), outline=0, width=3)
    d.line((50, 200, 750, 200), fill=0, width=3)
    d.line((400, 50, 400, 350), fill=0, width=3)
    from tests.pagegen import _font

    d.text((100, 100), "一二三", font=_font("mincho", 40), fill=0)
    gray = np.asarray(img)
    out = remove_rules(gray, dpi=200)
    assert (out[200, 60:740] > 200).all(), "horizontal rule is still there"
    assert (out[60:340, 400] > 200).all(), "vertical rule is still there"
    assert (out[95:150, 95:230] < 128).sum() > 0.8 * (gray[95:150, 95:230] < 128).sum(), "characters were eaten"


def test_suppress_light_ink_keeps_text_and_drops_a_pale_seal() -> None:
    gray = np.full((200, 400), 255, np.uint8)
    gray[50:60, 20:200] = 20  # text stroke
    gray[120:130, 20:200] = 170  # pale seal ring
    out = suppress_light_ink(gray)
    assert (out[50:60, 20:200] == 20).all()
    assert (out[120:130, 20:200] == 255).all()
    faded = np.full((200, 400), 255, np.uint8)
    faded[50:60, 20:200] = 120  # faded toner is the darkest ink on its page: it stays
    assert (suppress_light_ink(faded)[50:60, 20:200] == 120).all()


# ---------------------------------------------------------------------------
# engines: plumbing
# ---------------------------------------------------------------------------


def test_get_engine_names_and_protocol() -> None:
    for name in ocr.available_engines():
        eng = get_engine(name)
        assert isinstance(eng, OcrEngine)
        assert eng.name == name
        assert get_engine(name.upper()) is eng
    with pytest.raises(ValueError, match="unknown OCR engine"):
        get_engine("abbyy")
    assert os.environ.get("OMP_THREAD_LIMIT") == "1"


def test_blank_and_empty_pages_read_as_nothing() -> None:
    img = Image.new("L", (400, 300), 255)
    page = prepared(img)
    page.blank = True
    for name in ocr.available_engines():
        assert get_engine(name).read(page).lines == []
    # white paper not flagged blank, tiny and extreme shapes: no text, no crash
    for size in ((400, 300), (12, 9), (2000, 40)):
        for mode in ("horizontal", "vertical"):
            empty = prepared(Image.new("L", size, 255), mode)
            for name in ocr.available_engines():
                text = get_engine(name).read(empty)
                assert text.lines == [] and text.text == "" and text.confidence == 0.0


# ---------------------------------------------------------------------------
# engines on rendered pages
# ---------------------------------------------------------------------------

ENGINES = ["tesseract", pytest.param("rapidocr", marks=needs_rapid)]
# allowed CER on the title and on the whole notice, per engine (measured: tesseract
# 5% / 3%, rapidocr 0-5% / 1%; the margin absorbs font-rendering differences)
LIMITS = {"tesseract": (0.15, 0.08), "rapidocr": (0.10, 0.04)}


@pytest.mark.parametrize("engine", ENGINES)
def test_notice_text_order_and_spacing(engine: str) -> None:
    text = reading(engine, "notice")
    assert text.engine == engine
    title_limit, page_limit = LIMITS[engine]
    title = DEFAULT_LINES[4]
    i_title = find_line(text, title)
    assert cer(title, text.lines[i_title].text) <= title_limit, text.lines[i_title].text
    assert cer("\n".join(DEFAULT_LINES), text.text) <= page_limit, text.text
    # reading order of a letter: number, date, addressee, issuer, title, body, 記 items
    order = [find_line(text, DEFAULT_LINES[k]) for k in (0, 1, 2, 3, 4, 5, 8, 9, 10, 11)]
    assert order == sorted(order), [text.lines[i].text for i in order]
    assert len(set(order)) == len(order)
    for line in text.lines:
        assert not CJK_ASCII_SPACE.search(line.text), f"ASCII space next to Japanese in {line.text!r}"
        assert "|" not in line.text
        assert 0 <= line.confidence <= 100
        assert not line.vertical
        assert line.words and all(w.text for w in line.words)
    assert normalize_for_compare(text.lines[order[0]].text) == "新総第1234号"
    assert 50 < text.confidence <= 100


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_notice_boxes_lie_on_the_ink_in_archive_pixels(engine: str, scale: float) -> None:
    """Line boxes match the rendered lines on the archive image, also when the OCR copy was scaled."""
    text = reading(engine, "notice", scale)
    bands = ink_bands(notice_image(), axis=1)
    assert len(bands) == len(DEFAULT_LINES)
    w, h = notice_image().size
    em = DPI * 10.5 / 72
    for k in (0, 1, 2, 3, 4, 9):
        line = text.lines[find_line(text, DEFAULT_LINES[k])]
        assert_box_near(line.bbox, bands[k], tol=0.6 * em)
        for word in line.words:
            x0, y0, x1, y1 = word.bbox
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert bands[k][0] - em <= x0 and x1 <= bands[k][2] + em
            assert bands[k][1] - em <= y0 and y1 <= bands[k][3] + em


@pytest.mark.parametrize("engine", ENGINES)
def test_vertical_jirei_reads_columns_right_to_left(engine: str) -> None:
    text = reading(engine, "jirei")
    assert [normalize_for_compare(x.text) for x in text.lines] != []
    assert all(line.vertical for line in text.lines)
    # one line per printed column, in the printed order
    assert len(text.lines) == len(JIREI), [x.text for x in text.lines]
    limit = 0.25 if engine == "tesseract" else 0.1
    for want, line in zip(JIREI, text.lines):
        assert cer(want, line.text) <= limit, (want, line.text)
    centres = [(line.bbox[0] + line.bbox[2]) / 2 for line in text.lines]
    assert centres == sorted(centres, reverse=True)
    columns = ink_bands(jirei_image(), axis=0)[::-1]  # right to left
    em = DPI * 10.5 / 72
    for line, ink in zip(text.lines, columns):
        assert_box_near(line.bbox, ink, tol=0.6 * em)


@needs_rapid
def test_rapidocr_runs_single_threaded_with_the_wheels_models() -> None:
    import rapidocr

    with ocr.lent_rapidocr() as engine:
        for model in (ocr._rapid_det(engine), ocr._rapid_rec(engine)):
            if ocr.inference_runtime() == "openvino":
                compiled = model.session.session.get_compiled_model()
                assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
                # pinned threads of two worker processes land on the same core (measured 1.9x slower)
                assert compiled.get_property("ENABLE_CPU_PINNING") is False
                assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
            else:
                sess = model.session.session
                assert sess.get_session_options().intra_op_num_threads == 1
                assert sess.get_providers() == ["CPUExecutionProvider"]
                assert os.path.dirname(rapidocr.__file__) in sess._model_path


needs_bf16 = pytest.mark.skipif(ocr.inference_runtime() != "openvino",
                                reason="openvino missing or the CPU has no native bfloat16")


@needs_rapid
@needs_bf16
def test_bf16_models_read_the_notice_like_the_float32_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The faster runtime runs the same models: the same text, within a character or two."""
    page = prepared(notice_image())
    texts = {}
    for runtime, session in (("", "OpenVINOInferSession"), ("onnxruntime", "OrtInferSession")):
        monkeypatch.setenv("KIROKU_OCR_RUNTIME", runtime)
        monkeypatch.setattr(ocr, "_RAPID_IDLE", [])
        with ocr.lent_rapidocr() as engine:
            assert type(ocr._rapid_rec(engine).session).__name__ == session
            assert type(ocr._rapid_det(engine).session).__name__ == session
        texts[runtime] = ocr.RapidOcrEngine().read(page).text
    assert cer("".join(DEFAULT_LINES), texts[""]) <= 0.02
    assert Levenshtein.distance(normalize_for_compare(texts[""]), normalize_for_compare(texts["onnxruntime"])) <= 2


@needs_rapid
def test_threads_reading_at_once_each_get_their_own_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows read pages in threads; an OpenVINO request must never run in two at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(ocr, "_RAPID_IDLE", [])
    both_inside = threading.Barrier(2, timeout=60)

    def hold() -> int:
        with ocr.lent_rapidocr() as engine:
            both_inside.wait()
            return id(engine)

    with ThreadPoolExecutor(2) as pool:
        lent = list(pool.map(lambda _: hold(), range(2)))
    assert lent[0] != lent[1]
    assert len(ocr._RAPID_IDLE) == 2  # both given back, to be reused
    page = prepared(notice_image())
    alone = ocr.RapidOcrEngine().read(page).text
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda _: ocr.RapidOcrEngine().read(page).text, range(2)))
    assert together == [alone, alone]
    assert len(ocr._RAPID_IDLE) == 2  # no new instance for later pages


@needs_rapid
def test_rapidocr_reads_a_name_under_a_pale_seal() -> None:
    """A seal printed gray (a gray scan: its red cannot be dropped) over the issuer's name."""
    from tests.pagegen import _font

    img = render_notice(["令和７年１２月９日", "新潟市長　中原　八一"], dpi=DPI).crop((0, 0, 1654, 500))
    bands = ink_bands(img, axis=1)
    x1, y0, y1 = bands[1][2], bands[1][1], bands[1][3]
    cx, cy, r = x1 - 20, (y0 + y1) // 2, 70
    seal = Image.new("L", img.size, 255)
    d = ImageDraw.Draw(seal)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=170, width=7)
    d.text((cx, cy - 25), "市長", font=_font("mincho", 45), fill=170, anchor="mm")
    d.text((cx, cy + 28), "之印", font=_font("mincho", 45), fill=170, anchor="mm")
    arr = np.minimum(np.asarray(img), np.asarray(seal))  # ink over ink: the darker wins
    page = prepared(Image.fromarray(arr))
    text = RapidOcrEngine().read(page)
    i = find_line(text, "新潟市長　中原　八一")
    assert cer("新潟市長　中原　八一", text.lines[i].text) <= 0.1, text.text


def test_tesseract_drops_noise_lines_and_reads_through_a_table() -> None:
    """A ruled table: rules are erased before reading, each row comes back as one line."""
    from tests.pagegen import _font

    img = Image.new("L", (1400, 420), 255)
    d = ImageDraw.Draw(img)
    f = _font("mincho", 36)
    rows = [("番号", "施設名", "件数"), ("1", "花園児童館", "4,888"), ("2", "中島図書館", "3,462")]
    xs = [60, 260, 1000, 1340]
    for r, cells in enumerate(rows):
        y = 60 + r * 100
        for c, cell in enumerate(cells):
            d.text((xs[c] + 30, y + 28), cell, font=f, fill=0)
    for r in range(len(rows) + 1):
        d.line((xs[0], 60 + r * 100, xs[-1], 60 + r * 100), fill=0, width=3)
    for x in xs:
        d.line((x, 60, x, 60 + len(rows) * 100), fill=0, width=3)
    text = TesseractEngine().read(prepared(img))
    got = [normalize_for_compare(line.text) for line in text.lines]
    want = [normalize_for_compare("".join(r)) for r in rows]
    assert len(got) == len(want), got
    for g, w in zip(got, want):
        assert Levenshtein.distance(g, w) <= 2, (g, w)


def test_auto_engine_reads_the_notice() -> None:
    text = AutoEngine().read(prepared(notice_image()))
    assert text.engine in ("tesseract", "tesseract+rapidocr", "rapidocr")
    assert cer("\n".join(DEFAULT_LINES), text.text) <= LIMITS["tesseract"][1]
    order = [find_line(text, DEFAULT_LINES[k]) for k in (0, 1, 2, 3, 4)]
    assert order == sorted(order)


@pytest.mark.slow
@needs_rapid
def test_default_engine_on_a_sample_scan(shared) -> None:  # noqa: ANN001
    """The vertical 辞令 of the sample corpus, made upright with its true geometry."""
    from bench.ocr_eval import decode_pages, prepared_from_truth

    samples = shared / "samples"
    truth = json.loads((samples / "d2_003.truth.json").read_text(encoding="utf-8"))
    page = prepared_from_truth(decode_pages(samples / truth["file"])[0], truth["pages"][0], 0)
    text = get_engine("rapidocr").read(page)
    assert cer(truth["pages"][0]["text"], text.text) <= 0.05, text.text
    assert normalize_for_compare(text.lines[0].text) == normalize_for_compare(truth["pages"][0]["text"].split("\n")[0])


@needs_rapid
def test_band_reread_keeps_boxed_digits_and_drops_the_line_its_edge_cuts() -> None:
    """Re-reading a boxed-digit row at full size must not add half of the next line.

    An invoice's table row once came back twice, the second time read from the top half
    of its glyphs (巴细A4, 2.2.40), because the re-read band's lower edge cut through it.
    """
    from tests.pagegen import _font

    img = Image.new("L", (1600, 400), 255)
    draw = ImageDraw.Draw(img)
    font = _font("gothic", 44)
    for i, digit in enumerate("4021"):
        x = 200 + i * 70
        draw.rectangle([x, 90, x + 60, 160], outline=0, width=2)
        draw.text((x + 16, 100), digit, font=font, fill=0)
    draw.text((200, 200), "コピー用紙Ａ４（500枚×5冊）　3,240　6,480", font=font, fill=0)
    gray = np.asarray(img).copy()
    band = (60, 222)  # ends in the middle of the second line
    with ocr.lent_rapidocr() as engine:
        tokens = ocr.RapidOcrEngine()._reread_band(engine, gray, gray, [], *band)
    assert "".join(t.text for t in sorted(tokens, key=lambda t: t.x0)) == "4021"
    assert all(band[0] < t.y0 and t.y1 < band[1] for t in tokens)
