"""The docs stay in sync with the code: every exit code and every analysis.json field is documented."""

from __future__ import annotations

import json
from pathlib import Path

from dsocr.analyze.pipeline import run_analysis
from dsocr.contract.errors import ExitCode
from dsocr.report.jsonout import json_text

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_exit_code_is_documented() -> None:
    text = (DOCS / "exit-codes.md").read_text()
    for code in ExitCode:
        assert f"| {code.value} | `{code.name}` |" in text, code


def test_every_json_field_is_documented(cpu_sqlite: Path) -> None:
    text = (DOCS / "analysis-schema.md").read_text()
    doc = json.loads(json_text(run_analysis([cpu_sqlite])))
    fields = set(doc) | set(doc["trace"]) | set(doc["repeats"])
    for table in ("stages", "stage_instances"):
        fields |= set(doc[table][0])
    for key in ("per_pass", "stats"):
        fields |= set(doc["repeats"][key][0])
    missing = sorted(f for f in fields if f"`{f}`" not in text)
    assert missing == []
