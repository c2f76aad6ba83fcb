"""The pages a capture runs on: user files (PNG, JPEG, TIFF, WebP, PDF) or the shipped set.

:func:`collect` expands the ``--pages`` arguments (files or directories) into one
:class:`InputPage` per page, each PDF page one input, and decodes every one of them once so an
empty, unreadable or unsupported file stops the run before the model loads, with one line naming
the file. :func:`load_image` gives the worker the RGB image of a page; PDF pages are rasterized
with pypdfium2 at a fixed DPI so the same file always gives the same pixels.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from PIL import Image, UnidentifiedImageError

from dsocr.contract.errors import BadInput, EnvironmentProblem, InputNotFound
from dsocr.contract.paths import check_input

#: PDF pages are rasterized at this resolution (A4 -> 1654 x 2339 pixels).
PDF_DPI: Final = 200
#: Extensions taken from a directory (anything else there, such as a manifest, is skipped).
IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"})
PDF_SUFFIX: Final = ".pdf"
#: Pillow format names accepted, whatever the extension says.
IMAGE_FORMATS: Final = frozenset({"PNG", "JPEG", "MPO", "TIFF", "WEBP"})
SUPPORTED: Final = "PNG, JPEG, TIFF, WebP or PDF"


@attrs.frozen
class InputPage:
    """One input page: an image file, or one page of a PDF."""

    path: Path
    name: str  #: shown in progress and reports: the file name, ``doc.pdf#0`` for a PDF's first page
    sha256: str  #: of the whole file
    width: int
    height: int
    pdf_page: int | None = None  #: 0-based page index inside a PDF
    dpi: int | None = None  #: rasterization DPI of a PDF page

    @property
    def ref(self) -> str:
        """How the worker's config names the page: the path, with ``#N`` (0-based) for a PDF page."""
        return str(self.path) if self.pdf_page is None else f"{self.path}#{self.pdf_page}"

    def to_json(self) -> dict[str, Any]:
        """JSON data (for the run manifest and the worker's config)."""
        return {
            "path": str(self.path),
            "name": self.name,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "pdf_page": self.pdf_page,
            "dpi": self.dpi,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputPage:
        """The inverse of :meth:`to_json`."""
        return cls(
            path=Path(data["path"]),
            name=str(data["name"]),
            sha256=str(data["sha256"]),
            width=int(data["width"]),
            height=int(data["height"]),
            pdf_page=None if data.get("pdf_page") is None else int(data["pdf_page"]),
            dpi=None if data.get("dpi") is None else int(data["dpi"]),
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expand(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        # never opened before this: a FIFO or device is refused, a missing path or locked directory named
        if check_input(path, "pass page images, PDFs or a directory of them"):
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES | {PDF_SUFFIX}
            )
            if not found:
                raise BadInput(f"{path}: the directory holds no {SUPPORTED} files; add pages or pass files")
            files.extend(found)
        else:
            files.append(path)
    if not files:
        raise BadInput(f"no input pages given; pass {SUPPORTED} files or a directory")
    return files


def _is_pdf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(5) == b"%PDF-"


def _open_pdf(path: Path) -> Any:
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:
        raise EnvironmentProblem(
            f"{path}: reading PDFs needs pypdfium2, which is not installed; pip install 'dsocr[capture]'"
        ) from exc
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise BadInput(f"{path}: not a readable PDF ({exc}); re-export it or convert its pages to PNG") from exc


def _pdf_pages(path: Path, sha: str) -> list[InputPage]:
    pdf = _open_pdf(path)
    try:
        count = len(pdf)
        if count == 0:
            raise BadInput(f"{path}: the PDF has no pages; pass a PDF with at least one page")
        scale = PDF_DPI / 72.0
        pages: list[InputPage] = []
        for i in range(count):
            width, height = pdf.get_page_size(i)
            pages.append(
                InputPage(
                    path=path,
                    name=f"{path.name}#{i}",
                    sha256=sha,
                    width=math.ceil(width * scale),  # as pypdfium2 sizes the bitmap
                    height=math.ceil(height * scale),
                    pdf_page=i,
                    dpi=PDF_DPI,
                )
            )
        return pages
    finally:
        pdf.close()


def _image_page(path: Path, sha: str) -> InputPage:
    try:
        with Image.open(path) as im:
            fmt = im.format or "?"
            if fmt not in IMAGE_FORMATS:
                raise BadInput(f"{path}: {fmt} images are not supported; convert it to {SUPPORTED}")
            im.load()
            return InputPage(path=path, name=path.name, sha256=sha, width=im.width, height=im.height)
    except UnidentifiedImageError as exc:
        raise BadInput(f"{path}: not a {SUPPORTED} file (unrecognized content); convert it or leave it out") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"{path}: the image cannot be decoded ({exc}); re-save it or leave it out") from exc


def inspect(path: Path) -> list[InputPage]:
    """The pages of one file (several for a PDF); raise a one-line error if it cannot be used."""
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except PermissionError as exc:
        raise InputNotFound(f"{path}: cannot be read (permission denied); fix its permissions") from exc
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot be read ({exc.strerror}); check the path") from exc
    if size == 0:
        raise BadInput(f"{path}: the file is empty; pass a {SUPPORTED} file")
    sha = _sha256(path)
    if _is_pdf(path):
        return _pdf_pages(path, sha)
    return [_image_page(path, sha)]


def collect(paths: Sequence[Path]) -> list[InputPage]:
    """Every input page of ``paths`` (files or directories), in order, each checked to decode."""
    pages: list[InputPage] = []
    for path in _expand(paths):
        pages.extend(inspect(path))
    return pages


def default_pages() -> list[InputPage]:
    """The standard 12-page set shipped with dsocr (``dsocr pages`` writes the same files)."""
    from dsocr.capture.pages import shipped_pages

    return collect(shipped_pages())


_PDF_REF: Final = re.compile(r"^(?P<path>.+\.pdf)#(?P<page>\d+)$", re.IGNORECASE)


def parse_ref(ref: str) -> tuple[Path, int | None]:
    """``doc.pdf#2`` -> (doc.pdf, 2); any other reference -> (path, None)."""
    match = _PDF_REF.match(ref)
    if match and not Path(ref).exists():
        return Path(match.group("path")), int(match.group("page"))
    return Path(ref), None


def load_ref(ref: str, dpi: int = PDF_DPI) -> Image.Image:
    """The RGB image a worker-config page reference names (:attr:`InputPage.ref`)."""
    path, pdf_page = parse_ref(ref)
    if not path.is_file():
        raise InputNotFound(f"{path}: no such page file; pass existing page images or PDFs")
    if pdf_page is None:
        return load_image(InputPage(path=path, name=path.name, sha256="", width=0, height=0))
    return load_image(InputPage(path=path, name=ref, sha256="", width=0, height=0, pdf_page=pdf_page, dpi=dpi))


def load_image(page: InputPage) -> Image.Image:
    """The page as an RGB image (PDF pages rasterized at ``page.dpi``)."""
    if page.pdf_page is None:
        with Image.open(page.path) as im:
            return im.convert("RGB")
    pdf = _open_pdf(page.path)
    try:
        bitmap = pdf[page.pdf_page].render(scale=(page.dpi or PDF_DPI) / 72.0)
        return bitmap.to_pil().convert("RGB")  # type: ignore[no-any-return]
    finally:
        pdf.close()
