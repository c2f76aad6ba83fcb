"""``analysis.json``: the analysis document (docs/analysis-schema.md) as JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from dsocr.analyze.analysis import Analysis
from dsocr.analyze.analysis_doc import AnalysisDocument
from dsocr.analyze.analysis_json import TABLE_KEYS


def _clean(v: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def document(analysis: Analysis, *, full_projection: bool = False) -> AnalysisDocument:
    """The typed ``analysis.json`` document with NaN/inf as null, built once: every output renders it.

    The table rows come clean from :meth:`Analysis.to_dict`; only the small rest is walked.
    ``full_projection`` keeps every ``nvtx_projection`` row (see ``to_dict``).
    """
    doc = analysis.to_dict(full_projection=full_projection)
    return AnalysisDocument.from_json({k: v if k in TABLE_KEYS else _clean(v) for k, v in doc.items()})


def dumps(doc: AnalysisDocument | dict[str, Any], indent: int | None = None) -> str:
    """A (cleaned) analysis document as JSON text."""
    data = doc.to_json() if isinstance(doc, AnalysisDocument) else doc
    return json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n"


def json_text(analysis: Analysis, indent: int | None = None, *, full_projection: bool = False) -> str:
    """The ``analysis.json`` text."""
    return dumps(document(analysis, full_projection=full_projection), indent)
