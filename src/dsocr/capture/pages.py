"""The standard input set: 12 synthetic document pages drawn deterministically with Pillow.

Four text-heavy pages, four mixed layouts (columns, tables, headings) and four image-rich pages
(figures, photo-like gradients, charts). Every page comes from a fixed seed and uses only
Pillow's built-in bitmap font (scaled up by whole factors with nearest-neighbour resampling),
never a system or FreeType font, so the pixels are the same on every machine and run. The set is
generated once and shipped in ``dsocr/data/pages`` with a ``manifest.json`` (name, kind, size,
SHA-256 of the file and of the decoded pixels); ``dsocr pages --out DIR`` writes it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import attrs
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dsocr.contract import atomic, rundocs
from dsocr.contract.errors import BadInput

PAGES_MANIFEST: Final = "manifest.json"
#: Bumped whenever the drawings change (the shipped set must then be regenerated).
GENERATOR_VERSION: Final = 1
#: The ``generator`` of a page set's manifest.json.
GENERATOR: Final = "dsocr.capture.pages"
A4: Final = (1240, 1754)  #: A4 at 150 dpi, portrait

KINDS: Final[tuple[str, ...]] = ("text", "mixed", "image")

_CORPUS: Final = (
    "the model reads each page as a grid of visual tokens and writes the text back in reading order "
    "optical compression keeps long documents short enough for the decoder while tables figures and "
    "formulas stay recognisable a mixture of experts routes every token to six of sixty four experts "
    "so the decoder is large but each step touches only a small part of it latency depends on the "
    "number of crops the prompt length and how many tokens are generated throughput on a modern "
    "accelerator is bounded by memory bandwidth during decoding and by matrix units during prefill "
    "vision encoding runs a windowed attention backbone followed by a global transformer and a "
    "linear projector invoices reports contracts and scientific papers all have different layouts"
)
_WORDS: Final = tuple(_CORPUS.split())

_INK: Final = (20, 20, 28)
_GREY: Final = (110, 110, 120)
_PAPER: Final = (255, 255, 255)


@attrs.frozen
class PageSpec:
    """One page of the standard set."""

    name: str
    kind: str
    seed: int
    size: tuple[int, int]
    draw: Callable[[Image.Image, random.Random], None]


@attrs.frozen
class PageEntry:
    """A page's manifest entry."""

    name: str
    kind: str
    width: int
    height: int
    sha256: str  #: of the PNG file
    pixel_sha256: str  #: of the decoded RGB pixels (stable across zlib versions)
    bytes: int

    def to_json(self) -> dict[str, object]:
        """The entry as JSON data."""
        return attrs.asdict(self)


# --- drawing helpers --------------------------------------------------------------------------


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default_imagefont()


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _wrap(text: str, width_px: int, font: ImageFont.ImageFont) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if line and font.getlength(candidate) > width_px:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def _text(
    page: Image.Image,
    xy: tuple[int, int],
    lines: Iterable[str],
    scale: int = 2,
    fill: tuple[int, int, int] = _INK,
    leading: int = 13,
) -> int:
    """Draw lines of bitmap-font text scaled by ``scale`` at ``xy``; return the bottom y."""
    font = _font()
    rows = list(lines)
    if not rows:
        return xy[1]
    width = max(int(font.getlength(r)) for r in rows) + 2
    mask = Image.new("L", (width, leading * len(rows) + 2), 0)
    draw = ImageDraw.Draw(mask)
    for i, row in enumerate(rows):
        draw.text((0, i * leading), row, fill=255, font=font)
    big = mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.NEAREST)
    page.paste(Image.new("RGB", big.size, fill), xy, big)
    return xy[1] + big.height


def _paragraph(
    page: Image.Image, rng: random.Random, x: int, y: int, width: int, sentences: int, scale: int = 2
) -> int:
    text = " ".join(_sentence(rng, rng.randint(6, 16)) for _ in range(sentences))
    lines = _wrap(text, width // scale, _font())
    return _text(page, (x, y), lines, scale=scale) + 6 * scale


def _heading(page: Image.Image, x: int, y: int, text: str, scale: int = 3) -> int:
    return _text(page, (x, y), [text], scale=scale) + 4 * scale


def _footer(page: Image.Image, number: int) -> None:
    _text(page, (page.width // 2 - 20, page.height - 60), [f"- {number} -"], scale=2, fill=_GREY)


def _photo(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A smooth photo-like image: blended gradients with soft blobs (compresses well)."""
    w, h = size
    base = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270))).resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize(size),
        ],
    )
    blobs = Image.new("RGB", size, (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)))
    draw = ImageDraw.Draw(blobs)
    for _ in range(7):
        cx, cy, r = rng.randint(0, w), rng.randint(0, h), rng.randint(min(w, h) // 8, min(w, h) // 3)
        color = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    blobs = blobs.filter(ImageFilter.GaussianBlur(radius=min(w, h) // 12))
    return Image.blend(base, blobs, 0.55)


def _table(page: Image.Image, rng: random.Random, x: int, y: int, cols: int, rows: int, cell_w: int) -> int:
    draw = ImageDraw.Draw(page)
    cell_h = 34
    header = [rng.choice(("Item", "Qty", "Price", "Total", "Region", "Year", "Score", "Share")) for _ in range(cols)]
    draw.rectangle((x, y, x + cols * cell_w, y + cell_h), fill=(225, 230, 240))
    for r in range(rows + 1):
        for c in range(cols):
            text = header[c] if r == 0 else f"{rng.randint(1, 9999):,}" if c else rng.choice(_WORDS).title()
            _text(page, (x + c * cell_w + 8, y + r * cell_h + 6), [text], scale=2)
    for r in range(rows + 2):
        draw.line((x, y + r * cell_h, x + cols * cell_w, y + r * cell_h), fill=_INK, width=2 if r < 2 else 1)
    for c in range(cols + 1):
        draw.line((x + c * cell_w, y, x + c * cell_w, y + (rows + 1) * cell_h), fill=_INK, width=1)
    return y + (rows + 1) * cell_h + 20


def _bar_chart(page: Image.Image, rng: random.Random, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw = ImageDraw.Draw(page)
    draw.line((x0 + 40, y0, x0 + 40, y1 - 30), fill=_INK, width=2)
    draw.line((x0 + 40, y1 - 30, x1, y1 - 30), fill=_INK, width=2)
    bars = rng.randint(5, 9)
    step = (x1 - x0 - 60) // bars
    for i in range(bars):
        height = rng.randint((y1 - y0) // 6, y1 - y0 - 50)
        color = (40 + 20 * i % 200, 90 + 37 * i % 150, 200 - 15 * i % 150)
        bx = x0 + 50 + i * step
        draw.rectangle((bx, y1 - 30 - height, bx + step - 12, y1 - 31), fill=color)
        _text(page, (bx, y1 - 24), [f"Q{i + 1}"], scale=2, fill=_GREY)
    for k in range(5):
        ty = y1 - 30 - k * (y1 - y0 - 50) // 4
        _text(page, (x0, ty - 8), [str(25 * k)], scale=1, fill=_GREY)


def _line_chart(page: Image.Image, rng: random.Random, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw = ImageDraw.Draw(page)
    for k in range(6):
        gy = y0 + k * (y1 - y0) // 5
        draw.line((x0, gy, x1, gy), fill=(220, 220, 225), width=1)
    draw.rectangle(box, outline=_INK, width=2)
    for series, color in enumerate(((200, 60, 50), (40, 110, 200), (60, 160, 80))):
        points: list[tuple[float, float]] = []
        value = rng.uniform(0.3, 0.7)
        for i in range(24):
            value = min(0.95, max(0.05, value + rng.uniform(-0.12, 0.12)))
            points.append((x0 + i * (x1 - x0) / 23, y1 - value * (y1 - y0)))
        draw.line(points, fill=color, width=3 + series)


def _pie(page: Image.Image, rng: random.Random, box: tuple[int, int, int, int]) -> None:
    draw = ImageDraw.Draw(page)
    shares = [rng.randint(5, 30) for _ in range(rng.randint(4, 7))]
    total = sum(shares)
    start = 0.0
    for i, share in enumerate(shares):
        end = start + 360.0 * share / total
        draw.pieslice(box, start, end, fill=(60 + 30 * i, 200 - 25 * i, 120 + 17 * i), outline=_PAPER, width=3)
        start = end


# --- the pages --------------------------------------------------------------------------------


def _text_article(page: Image.Image, rng: random.Random) -> None:
    y = _heading(page, 100, 90, "On the compression of documents", scale=4)
    y = _text(page, (100, y), ["A. Author, B. Author - Technical report"], scale=2, fill=_GREY) + 30
    while y < page.height - 260:
        if rng.random() < 0.2:
            y = _heading(page, 100, y + 10, f"{rng.randint(1, 9)}. {rng.choice(_WORDS).title()} results") + 4
        y = _paragraph(page, rng, 100, y, page.width - 200, rng.randint(3, 6))
    _footer(page, 1)


def _text_dense(page: Image.Image, rng: random.Random) -> None:
    y = _heading(page, 80, 70, "TERMS AND CONDITIONS", scale=3)
    while y < page.height - 300:
        y = _paragraph(page, rng, 80, y, page.width - 160, rng.randint(4, 8), scale=2)
    draw = ImageDraw.Draw(page)
    draw.line((80, y, 500, y), fill=_GREY, width=1)
    y += 10
    while y < page.height - 90:  # footnotes in small print
        y = _paragraph(page, rng, 80, y, page.width - 160, 2, scale=1)
    _footer(page, 7)


def _text_list(page: Image.Image, rng: random.Random) -> None:
    y = _heading(page, 110, 100, "Meeting notes", scale=4) + 10
    for i in range(1, 40):
        if y > page.height - 160:
            break
        lines = _wrap(_sentence(rng, rng.randint(8, 22)), (page.width - 300) // 2, _font())
        _text(page, (110, y), [f"{i}."], scale=2)
        y = _text(page, (170, y), lines, scale=2) + 12
    _footer(page, 3)


def _text_letter(page: Image.Image, rng: random.Random) -> None:
    _text(page, (page.width - 460, 100), ["Example Corp.", "12 Sample Street", "Springfield 4242"], scale=2)
    y = _text(page, (110, 300), ["Dear reader,"], scale=2) + 30
    for _ in range(7):
        y = _paragraph(page, rng, 110, y, page.width - 220, rng.randint(3, 5)) + 8
    _text(page, (110, y + 30), ["Yours sincerely,", "", "", "The editors"], scale=2)


def _mixed_columns(page: Image.Image, rng: random.Random) -> None:
    y = _heading(page, 90, 80, "QUARTERLY BULLETIN", scale=5) + 10
    ImageDraw.Draw(page).line((90, y, page.width - 90, y), fill=_INK, width=3)
    top = y + 30
    col_w = (page.width - 180 - 60) // 3
    for c in range(3):
        x = 90 + c * (col_w + 30)
        y = _heading(page, x, top, rng.choice(_WORDS).title() + " news", scale=3)
        while y < page.height - 200:
            y = _paragraph(page, rng, x, y, col_w, rng.randint(2, 4))
    _footer(page, 2)


def _mixed_table(page: Image.Image, rng: random.Random) -> None:
    y = _heading(page, 100, 90, "Invoice 2024-0117", scale=4) + 20
    y = _paragraph(page, rng, 100, y, page.width - 200, 3) + 10
    y = _table(page, rng, 100, y, cols=5, rows=14, cell_w=(page.width - 200) // 5)
    y = _heading(page, 100, y + 10, "Notes")
    y = _paragraph(page, rng, 100, y, page.width - 200, 4)
    _table(page, rng, 100, y + 10, cols=3, rows=5, cell_w=(page.width - 200) // 3)


def _mixed_report(page: Image.Image, rng: random.Random) -> None:
    y = _heading(page, 100, 80, "1 Introduction", scale=3)
    y = _paragraph(page, rng, 100, y, page.width - 200, 5)
    half = (page.width - 240) // 2
    _bar_chart(page, rng, (100, y + 10, 100 + half, y + 360))
    _paragraph(page, rng, 140 + half, y + 10, half, 4)
    y += 390
    _text(page, (100, y), ["Figure 1: " + _sentence(rng, 9)], scale=2, fill=_GREY)
    y = _heading(page, 100, y + 50, "2 Method", scale=3)
    y = _paragraph(page, rng, 100, y, page.width - 200, 4)
    _table(page, rng, 100, y + 10, cols=4, rows=6, cell_w=(page.width - 200) // 4)
    _footer(page, 11)


def _mixed_form(page: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(page)
    y = _heading(page, 100, 90, "APPLICATION FORM", scale=4) + 20
    for _ in range(9):
        label = rng.choice(_WORDS).title() + " " + rng.choice(_WORDS)
        _text(page, (100, y + 8), [label + ":"], scale=2)
        draw.rectangle((520, y, page.width - 100, y + 44), outline=_INK, width=2)
        y += 64
    y = _heading(page, 100, y + 20, "Declaration", scale=3)
    y = _paragraph(page, rng, 100, y, page.width - 200, 5)
    for i in range(4):
        draw.rectangle((100, y + 10 + 40 * i, 124, y + 34 + 40 * i), outline=_INK, width=2)
        _text(page, (140, y + 12 + 40 * i), [_sentence(rng, 6)], scale=2)
    _table(page, rng, 100, y + 190, cols=4, rows=4, cell_w=(page.width - 200) // 4)


def _image_figures(page: Image.Image, rng: random.Random) -> None:
    y = _heading(page, 100, 80, "Field survey: photographs", scale=3) + 10
    w = (page.width - 240) // 2
    for row in range(3):
        for col in range(2):
            x = 100 + col * (w + 40)
            page.paste(_photo((w, 380), rng), (x, y))
            _text(page, (x, y + 390), [f"Plate {row * 2 + col + 1}. " + rng.choice(_WORDS)], scale=2, fill=_GREY)
        y += 460
    _footer(page, 5)


def _image_photo_page(page: Image.Image, rng: random.Random) -> None:
    page.paste(_photo((page.width - 160, 900), rng), (80, 80))
    y = _heading(page, 80, 1010, "Cover story", scale=5) + 10
    while y < page.height - 120:
        y = _paragraph(page, rng, 80, y, page.width - 160, 3)


def _image_charts(page: Image.Image, rng: random.Random) -> None:
    _heading(page, 90, 60, "Annual results at a glance", scale=4)
    _line_chart(page, rng, (90, 160, page.width - 700, 800))
    _pie(page, rng, (page.width - 600, 160, page.width - 120, 640))
    _bar_chart(page, rng, (page.width - 640, 700, page.width - 90, page.height - 80))
    _paragraph(page, rng, 90, 860, page.width - 800, 6)


def _image_slide(page: Image.Image, rng: random.Random) -> None:
    page.paste(_photo(page.size, rng).filter(ImageFilter.GaussianBlur(4)), (0, 0))
    draw = ImageDraw.Draw(page)
    draw.rectangle((60, 60, page.width // 2, page.height - 60), fill=(250, 250, 250))
    y = _heading(page, 90, 90, "Roadmap", scale=5) + 10
    for _ in range(5):
        lines = _wrap(_sentence(rng, rng.randint(5, 9)), (page.width // 2 - 200) // 2, _font())
        _text(page, (100, y), ["*"], scale=2)
        y = _text(page, (130, y), lines, scale=2) + 14
    _pie(page, rng, (page.width // 2 + 120, 150, page.width - 120, page.height - 150))


SPECS: Final[tuple[PageSpec, ...]] = (
    PageSpec("text-01-article", "text", 101, A4, _text_article),
    PageSpec("text-02-dense", "text", 102, A4, _text_dense),
    PageSpec("text-03-list", "text", 103, A4, _text_list),
    PageSpec("text-04-letter", "text", 104, A4, _text_letter),
    PageSpec("mixed-01-columns", "mixed", 201, A4, _mixed_columns),
    PageSpec("mixed-02-table", "mixed", 202, A4, _mixed_table),
    PageSpec("mixed-03-report", "mixed", 203, A4, _mixed_report),
    PageSpec("mixed-04-form", "mixed", 204, A4, _mixed_form),
    PageSpec("image-01-figures", "image", 301, A4, _image_figures),
    PageSpec("image-02-photo", "image", 302, A4, _image_photo_page),
    PageSpec("image-03-charts", "image", 303, (A4[1], A4[0]), _image_charts),  # landscape
    PageSpec("image-04-slide", "image", 304, (1600, 900), _image_slide),  # 16:9
)


def render(spec: PageSpec) -> Image.Image:
    """Draw one page (RGB)."""
    page = Image.new("RGB", spec.size, _PAPER)
    spec.draw(page, random.Random(spec.seed))
    return page


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with fixed settings and no metadata (byte-identical for identical pixels)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def pixel_sha256(image: Image.Image) -> str:
    """SHA-256 of the RGB pixels with the size: equal for equal images, whatever the encoder."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def entry_for(spec: PageSpec, image: Image.Image, data: bytes) -> PageEntry:
    """The manifest entry of a rendered page."""
    return PageEntry(
        name=f"{spec.name}.png",
        kind=spec.kind,
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(data).hexdigest(),
        pixel_sha256=pixel_sha256(image),
        bytes=len(data),
    )


def check_out(out_dir: Path) -> None:
    """BadInput (one line) unless ``out_dir`` can take the pages: a directory (made if missing), not a file nor
    a path under one, and without a ``manifest.json`` other than a page set's (a run directory's, say)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BadInput(f"--out {out_dir}: exists and is not a directory; choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise atomic.write_failure(out_dir, exc) from None
    manifest = out_dir / PAGES_MANIFEST
    if os.path.lexists(manifest):
        doc, _problem = rundocs.read_doc(manifest)
        if doc is None or doc.get("generator") != GENERATOR:
            raise BadInput(
                f"--out {out_dir}: its {PAGES_MANIFEST} is not a page set's (it would be overwritten); "
                "choose another --out"
            )


def generate(out_dir: Path, on_page: Callable[[PageEntry], None] | None = None) -> list[PageEntry]:
    """Write the 12 standard pages and their ``manifest.json`` into ``out_dir`` (see :func:`check_out`)."""
    check_out(out_dir)
    entries: list[PageEntry] = []
    for spec in SPECS:
        image = render(spec)
        data = encode_png(image)
        atomic.write_bytes(out_dir / f"{spec.name}.png", data)
        entry = entry_for(spec, image, data)
        entries.append(entry)
        if on_page is not None:
            on_page(entry)
    manifest = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "pages": [e.to_json() for e in entries],
    }
    atomic.write_text(out_dir / PAGES_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return entries


def shipped_dir() -> Path:
    """The directory of the standard set shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "data" / "pages"


def shipped_pages() -> list[Path]:
    """The shipped standard pages, in manifest order."""
    directory = shipped_dir()
    manifest = json.loads((directory / PAGES_MANIFEST).read_text(encoding="utf-8"))
    return [directory / str(p["name"]) for p in manifest["pages"]]
