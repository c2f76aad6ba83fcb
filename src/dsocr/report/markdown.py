"""``report.md``: the report document rendered with jinja2 (templates/report.md.j2)."""

from __future__ import annotations

from pathlib import Path

import jinja2

from dsocr.analyze.analysis import Analysis
from dsocr.contract import atomic
from dsocr.report.model import Document, build_document

TEMPLATE = "report.md.j2"


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("dsocr.report", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_markdown(doc: Document) -> str:
    """Render a report document as Markdown."""
    return _env().get_template(TEMPLATE).render(doc=doc)


def markdown_text(analysis: Analysis) -> str:
    """The ``report.md`` text of an analysis."""
    return render_markdown(build_document(analysis))


def write_markdown(text: str, path: Path) -> None:
    """Write rendered Markdown atomically."""
    atomic.write_text(path, text)
