"""Test pages drawn in code: a Japanese municipal notice, and the scanner's faults applied to it.

Shared by several test files, so the API is kept to two functions:

``render_notice(lines=None, *, vertical=False, dpi=300, font="mincho", size=None) -> PIL.Image``
    An upright A4 page (mode "L", white paper, black text drawn with the IPA fonts).
    ``lines`` are the lines of the page in reading order; the default is a realistic
    notice (文書番号, date, addressee, issuer, title, body, 記, 以上) from
    :data:`DEFAULT_LINES`. Horizontally, the document number, the date and the issuer
    are right-aligned, the title is centred and the body starts at the left margin.
    With ``vertical=True`` each line becomes a column, columns run right to left and
    characters top to bottom (punctuation and brackets in their vertical forms).
    ``size`` is the page size in pixels (width, height); default A4 portrait at ``dpi``.
    The text of line ``i`` is exactly ``lines[i]``, so OCR tests can compare with it.

``distort(img, *, rotation_deg=0, skew_deg=0.0, noise=0.0, bilevel=False, red_seal_at=None) -> PIL.Image``
    Apply the sample corpus conventions exactly (see /work/shared/samples/README.md):
    a red seal is stamped on the upright page at ``red_seal_at`` (x, y pixels of the
    upright page; the result is then RGB), the paper is turned counter-clockwise by
    ``skew_deg`` (positive = right end of a line higher) on the same canvas with white
    corners, then the page is rotated clockwise by ``rotation_deg`` (0/90/180/270, the
    top of the text points right at 90), Gaussian noise of standard deviation ``noise``
    (gray levels) is added, and ``bilevel=True`` thresholds to mode "1".
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONTS = {
    "mincho": "/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf",
    "gothic": "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
}

DEFAULT_LINES: list[str] = [
    "新総第１２３４号",
    "令和７年１２月９日",
    "各課長　様",
    "新潟市総務部長",
    "庁舎における節電の取組について（通知）",
    "　このことについて、冬季の電力需給の状況を踏まえ、庁舎における節電",
    "の取組を下記のとおり実施しますので、所属職員へ周知願います。",
    "　なお、取組の状況については、別途照会しますので御協力ください。",
    "記",
    "１　実施期間　令和７年１２月１５日から令和８年３月３１日まで",
    "２　取組内容　執務室の照明の間引き、昼休みの消灯、暖房温度の適正化",
    "３　問合せ先　総務部総務課庁舎管理係（内線２３４５）",
    "以上",
]

# Lines of the default notice that are right-aligned / centred in horizontal layout.
_RIGHT = {0, 1, 3, 12}
_CENTRE = {4, 8}
_TITLE = {4}

@lru_cache(maxsize=32)
def _font(name: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONTS.get(name, name), px)


def render_notice(
    lines: list[str] | None = None,
    *,
    vertical: bool = False,
    dpi: int = 300,
    font: str = "mincho",
    size: tuple[int, int] | None = None,
) -> Image.Image:
    """Draw an upright Japanese notice page (see the module docstring)."""
    default = lines is None
    lines = list(DEFAULT_LINES if lines is None else lines)
    width, height = size or (round(8.27 * dpi), round(11.69 * dpi))
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    body_px = max(8, round(10.5 / 72 * dpi))
    title_px = max(8, round(14 / 72 * dpi))
    margin_x = round(0.9 * dpi)  # ~23 mm
    margin_y = round(0.8 * dpi)
    if not vertical:
        y = margin_y
        for i, text in enumerate(lines):
            px = title_px if default and i in _TITLE else body_px
            f = _font(font, px)
            w = draw.textlength(text, font=f)
            if default and i in _RIGHT:
                x = width - margin_x - w
            elif default and i in _CENTRE:
                x = (width - w) / 2
            else:
                x = margin_x
            if default and i in (2, 4, 8):
                y += body_px  # a blank line before the addressee, the title and 記
            draw.text((x, y), text, font=f, fill=0)
            y += round(px * 1.9)
            if y > height - margin_y:
                break
        return img
    # vertical: columns from the right, characters from the top
    x = width - margin_x
    for i, text in enumerate(lines):
        px = title_px if default and i in _TITLE else body_px
        f = _font(font, px)
        pitch = round(px * 1.05)
        top = margin_y + (3 * px if default and i in _RIGHT else 0)
        if default and i in (2, 4, 8):
            x -= body_px
        cx = x - px
        y = top
        for ch in text:
            # the OpenType 'vert' feature gives the vertical forms of 、。ー（）「」
            draw.text((cx + px / 2, y + px / 2), ch, font=f, fill=0, anchor="mm", features=["vert"])
            y += pitch
            if y > height - margin_y:
                break
        x -= round(px * 1.9)
        if x - px < margin_x:
            break
    return img


def _stamp_seal(img: Image.Image, centre: tuple[int, int], dpi_hint: int) -> Image.Image:
    """A red round 印影 (ring and two characters), inked over whatever is there."""
    rgb = img.convert("RGB")
    r = max(10, round(10 / 25.4 * dpi_hint))  # a 20 mm seal
    cx, cy = centre
    box = (max(0, cx - r - 2), max(0, cy - r - 2), min(rgb.width, cx + r + 3), min(rgb.height, cy + r + 3))
    if box[0] >= box[2] or box[1] >= box[3]:
        return rgb
    seal = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
    d = ImageDraw.Draw(seal)
    ox, oy = cx - box[0], cy - box[1]
    d.ellipse((ox - r, oy - r, ox + r, oy + r), outline=255, width=max(2, r // 10))
    f = _font("mincho", max(8, round(r * 0.8)))
    d.text((ox, oy - r * 0.38), "市長", font=f, fill=255, anchor="mm")
    d.text((ox, oy + r * 0.42), "之印", font=f, fill=255, anchor="mm")
    # multiply blend, as ink on paper: over paper the seal is red, over black text it stays black
    alpha = np.asarray(seal, dtype=np.float32)[..., None] / 255.0 * 0.9
    red = np.array([205, 40, 45], dtype=np.float32) / 255.0
    base = np.asarray(rgb.crop(box), dtype=np.float32)
    out = base * (1.0 - alpha + alpha * red)
    rgb.paste(Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB"), box[:2])
    return rgb


def distort(
    img: Image.Image,
    *,
    rotation_deg: int = 0,
    skew_deg: float = 0.0,
    noise: float = 0.0,
    bilevel: bool = False,
    red_seal_at: tuple[int, int] | None = None,
) -> Image.Image:
    """Apply scanner faults with the corpus conventions (see the module docstring)."""
    if rotation_deg % 90:
        raise ValueError("rotation_deg must be a multiple of 90")
    out = img
    if red_seal_at is not None:
        out = _stamp_seal(out, red_seal_at, dpi_hint=round(out.width / 8.27))
    if skew_deg:
        fill = 255 if out.mode == "L" else (255, 255, 255)
        # PIL turns counter-clockwise for positive angles: the corpus's sign.
        out = out.rotate(skew_deg, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=fill)
    turns = (rotation_deg // 90) % 4
    if turns == 1:
        out = out.transpose(Image.Transpose.ROTATE_270)  # 90 clockwise
    elif turns == 2:
        out = out.transpose(Image.Transpose.ROTATE_180)
    elif turns == 3:
        out = out.transpose(Image.Transpose.ROTATE_90)
    if noise:
        arr = np.asarray(out, dtype=np.float32)
        rng = np.random.default_rng(1234)
        arr = arr + rng.normal(0.0, noise, arr.shape).astype(np.float32)
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), out.mode)
    if bilevel:
        out = out.convert("L").point(lambda v: 255 if v >= 140 else 0).convert("1", dither=Image.Dither.NONE)
    return out
