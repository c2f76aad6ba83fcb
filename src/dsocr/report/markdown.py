"""``report.md``: the report document rendered with jinja2 (templates/report.md.j2)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import jinja2

from dsocr.analyze.analysis import Analysis
from dsocr.report import jinja
from dsocr.report.model import Document, build_document

TEMPLATE = "report.md.j2"
#: How summary.md starts a warning line (templates/summary.md.j2).
WARNING_LINE = "> warning: "


def _env() -> jinja2.Environment:
    return jinja.environment(
        "markdown",
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_markdown(doc: Document) -> str:
    """Render a report document as Markdown."""
    return _env().get_template(TEMPLATE).render(doc=doc)


def markdown_text(analysis: Analysis, preamble: str = "") -> str:
    """The ``report.md`` text of an analysis (``preamble``: Markdown placed after the facts)."""
    return render_markdown(attrs.evolve(build_document(analysis), preamble=preamble.strip()))


def summary_preamble(summary_md: str, plots: Sequence[tuple[str, str]] = ()) -> str:
    """The stakeholder summary (summary.md, its headings one level down) and links to the plots' SVG files.

    ``plots`` are (relative path, heading) pairs.
    """
    lines = summary_md.strip().splitlines()
    if any(ln.startswith(WARNING_LINE) for ln in lines):  # report.md shows the warnings above the summary already
        kept = [ln for ln in lines if not ln.startswith(WARNING_LINE)]
        lines = [ln for i, ln in enumerate(kept) if ln or not i or kept[i - 1]]  # no double blank lines
    if lines and lines[0].startswith("# "):
        lines[0] = "## Summary"
    body = "\n".join(("#" + ln) if ln.startswith("## ") and i else ln for i, ln in enumerate(lines))
    figs = "\n\n".join(f"![{heading}]({path})" for path, heading in plots)
    return body + ("\n\n## Plots\n\n" + figs if figs else "")
