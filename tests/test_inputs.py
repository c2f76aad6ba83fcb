"""Capture inputs: image files, PDFs (one input per page), directories, and bad files."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from dsocr.capture import inputs
from dsocr.contract.errors import BadInput, ExitCode, InputNotFound


def _page(color: tuple[int, int, int], size: tuple[int, int] = (120, 170)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture
def page_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pages"
    d.mkdir()
    _page((250, 0, 0)).save(d / "a.png")
    _page((0, 250, 0)).save(d / "b.jpg", quality=95)
    _page((0, 0, 250)).save(d / "c.tiff")
    _page((9, 9, 9), (200, 100)).save(d / "d.webp", lossless=True)
    first, second = _page((255, 255, 255), (612, 792)), _page((10, 10, 10), (612, 396))
    first.save(d / "e.pdf", save_all=True, append_images=[second], resolution=72.0)
    (d / "manifest.json").write_text("{}")  # ignored in a directory
    (d / ".hidden.png").write_bytes(b"")  # ignored too
    return d


def test_directory_expands_to_every_page_in_name_order(page_dir: Path) -> None:
    pages = inputs.collect([page_dir])
    assert [p.name for p in pages] == ["a.png", "b.jpg", "c.tiff", "d.webp", "e.pdf#0", "e.pdf#1"]
    assert [p.pdf_page for p in pages] == [None, None, None, None, 0, 1]
    assert (pages[3].width, pages[3].height) == (200, 100)
    scale = inputs.PDF_DPI / 72
    assert (pages[4].width, pages[4].height) == (math.ceil(612 * scale), math.ceil(792 * scale))
    assert (pages[5].width, pages[5].height) == (math.ceil(612 * scale), math.ceil(396 * scale))
    assert pages[0].sha256 == hashlib.sha256((page_dir / "a.png").read_bytes()).hexdigest()
    assert pages[4].sha256 == pages[5].sha256


def test_load_image_gives_rgb_pixels_and_rasterizes_pdf_pages(page_dir: Path) -> None:
    pages = {p.name: p for p in inputs.collect([page_dir])}
    png = inputs.load_image(pages["a.png"])
    assert png.mode == "RGB" and png.getpixel((5, 5)) == (250, 0, 0)
    pdf2 = inputs.load_image(pages["e.pdf#1"])
    assert pdf2.size == (pages["e.pdf#1"].width, pages["e.pdf#1"].height)
    r, g, b = pdf2.getpixel((pdf2.width // 2, pdf2.height // 2))  # type: ignore[misc]
    assert max(r, g, b) < 40  # the dark second page
    assert inputs.load_image(pages["e.pdf#1"]).tobytes() == pdf2.tobytes()  # deterministic


def test_files_and_json_round_trip(page_dir: Path) -> None:
    pages = inputs.collect([page_dir / "e.pdf", page_dir / "a.png"])
    assert [p.name for p in pages] == ["e.pdf#0", "e.pdf#1", "a.png"]
    assert [inputs.InputPage.from_json(p.to_json()) for p in pages] == pages


def test_default_pages_are_the_shipped_set() -> None:
    pages = inputs.default_pages()
    assert len(pages) == 12
    assert pages[0].name == "text-01-article.png" and (pages[0].width, pages[0].height) == (1240, 1754)


def _error(tmp_path: Path, make: str) -> tuple[type[Exception], str]:
    path = tmp_path / make
    with pytest.raises((BadInput, InputNotFound)) as exc:
        inputs.collect([path])
    return type(exc.value), exc.value.args[0]


def test_missing_path(tmp_path: Path) -> None:
    kind, message = _error(tmp_path, "nope.png")
    assert kind is InputNotFound and InputNotFound("x").exit_code == ExitCode.NOT_FOUND
    assert (
        message == f"{tmp_path / 'nope.png'}: no such file or directory; pass page images, PDFs or a directory of them"
    )


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    kind, message = _error(tmp_path, "empty.png")
    assert kind is BadInput
    assert message == f"{tmp_path / 'empty.png'}: the file is empty; pass a PNG, JPEG, TIFF, WebP or PDF file"


def test_unsupported_content(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    kind, message = _error(tmp_path, "notes.txt")
    assert kind is BadInput
    assert message.startswith(f"{tmp_path / 'notes.txt'}: not a PNG, JPEG, TIFF, WebP or PDF file")


def test_unsupported_image_format(tmp_path: Path) -> None:
    _page((1, 2, 3)).save(tmp_path / "anim.gif")
    kind, message = _error(tmp_path, "anim.gif")
    assert kind is BadInput
    assert (
        message == f"{tmp_path / 'anim.gif'}: GIF images are not supported; convert it to PNG, JPEG, TIFF, WebP or PDF"
    )


def test_truncated_image(tmp_path: Path) -> None:
    _page((1, 2, 3), (400, 400)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])
    kind, message = _error(tmp_path, "cut.png")
    assert kind is BadInput
    assert message.startswith(f"{tmp_path / 'cut.png'}: the image cannot be decoded (")


def test_corrupt_pdf(tmp_path: Path) -> None:
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf\n")
    kind, message = _error(tmp_path, "bad.pdf")
    assert kind is BadInput
    assert message.startswith(f"{tmp_path / 'bad.pdf'}: not a readable PDF (")


def test_directory_without_pages(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(BadInput) as exc:
        inputs.collect([tmp_path])
    assert (
        exc.value.args[0]
        == f"{tmp_path}: the directory holds no PNG, JPEG, TIFF, WebP or PDF files; add pages or pass files"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    _page((1, 2, 3)).save(path)
    path.chmod(0)
    kind, message = _error(tmp_path, "locked.png")
    assert kind is InputNotFound
    assert message == f"{path}: cannot be read (permission denied); fix its permissions"


def test_worker_refs_load_the_same_pixels(page_dir: Path) -> None:
    pages = inputs.collect([page_dir / "e.pdf", page_dir / "a.png"])
    assert [p.ref for p in pages] == [f"{page_dir / 'e.pdf'}#0", f"{page_dir / 'e.pdf'}#1", str(page_dir / "a.png")]
    assert inputs.parse_ref(pages[1].ref) == (page_dir / "e.pdf", 1)
    for page in pages:
        assert inputs.load_ref(page.ref).tobytes() == inputs.load_image(page).tobytes()
    with pytest.raises(InputNotFound) as exc:
        inputs.load_ref(str(page_dir / "gone.pdf") + "#0")
    assert exc.value.args[0] == f"{page_dir / 'gone.pdf'}: no such page file; pass existing page images or PDFs"


def test_pdf_page_size_matches_the_rendered_bitmap(tmp_path: Path) -> None:
    Image.new("RGB", (1240, 1754), "white").save(tmp_path / "a4.pdf", resolution=150.0)  # 595.2 pt wide
    page = inputs.collect([tmp_path / "a4.pdf"])[0]
    assert (page.width, page.height) == inputs.load_image(page).size == (1654, 2339)
