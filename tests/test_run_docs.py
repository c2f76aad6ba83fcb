"""The typed run-directory documents (contract.run_manifest, contract.run_timing): read, validated, written back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsocr.contract.errors import BadInput
from dsocr.contract.jsondoc import JsonDoc
from dsocr.contract.run_calibration import RunCalibration
from dsocr.contract.run_manifest import RunManifest, read_manifest
from dsocr.contract.run_timing import Execution, RunTiming, read_timing

SAMPLE = Path(__file__).parents[1] / "src" / "dsocr" / "data" / "sample" / "h100-gundam-2p2r"
FIXTURES = Path(__file__).parents[2] / "shared" / "fixtures"


def _typed(path: Path) -> bool:
    return path.name in ("manifest.json", "calibration.json") or path.name.startswith("timing")


def _run_docs() -> list[Path]:
    found = sorted(SAMPLE.glob("*.json"))
    if FIXTURES.is_dir():
        found += sorted(FIXTURES.rglob("*.json"))
    return [p for p in found if _typed(p)]


@pytest.mark.parametrize("path", _run_docs(), ids=lambda p: str(p.relative_to(p.parents[1])))
def test_run_documents_read_back_unchanged(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    cls: type[JsonDoc] = {"manifest.json": RunManifest, "calibration.json": RunCalibration}.get(path.name, RunTiming)
    doc = cls.from_json(data, str(path))
    assert json.dumps(doc.to_json(), indent=1) == json.dumps(data, indent=1)
    if isinstance(doc, RunManifest | RunTiming | RunCalibration) and path.parent == SAMPLE:
        assert doc.text() == text  # byte for byte as written


def test_sample_timing_is_typed() -> None:
    timing, problem = read_timing(SAMPLE / "timing.json")
    assert problem is None and timing is not None
    assert timing.execution == Execution(moe="loop", attn="eager", autocast="bfloat16", prefill_logits="all")
    ex = timing.execution
    assert (ex.decode, ex.batch, ex.batching, ex.dtype, ex.cache) == ("eager", 1, None, None, "dynamic")
    assert timing.pages[0].grid is not None and len(timing.records) > 0 and timing.records[0].stage == "repeat"
    manifest, _ = read_manifest(SAMPLE / "manifest.json")
    assert manifest is not None and manifest.settings is not None and manifest.settings.mode == "gundam"
    assert manifest.timing is not None and manifest.timing.runs[0].position == "before"


def test_new_execution_fields_and_batch_records_read() -> None:
    data = {
        "model": {
            "execution": {
                "moe": "grouped",
                "attn": "sdpa",
                "autocast": "none",
                "prefill_logits": "last",
                "decode": "graph",
                "batch": 4,
                "batching": "pad-right",
                "dtype": "bfloat16",
                "cache": "static:1024",
            },
            "vendor_execution": None,
        },
        "records": [{"stage": "decode_step", "ms": 1, "batch": 4}],
    }
    doc = RunTiming.from_json(data)
    assert doc.execution is not None and doc.execution.decode == "graph" and doc.execution.cache == "static:1024"
    assert doc.records[0].batch == 4 and doc.records[0].ms == 1
    assert doc.to_json() == data  # an int stays an int, key order kept


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"model": {"execution": {"decode": "fast"}}}, "model.execution.decode"),
        ({"model": {"execution": {"cache": "static:x"}}}, "model.execution.cache"),
        ({"model": {"execution": {"batch": "4"}}}, "model.execution.batch"),
        ({"records": [{"ms": 1.0}, {"ms": "slow"}]}, "records[1].ms"),
        ({"pages": [{"grid": [2]}]}, "pages[0].grid"),
        ({"pages": {}}, "pages"),
        ({"profiled": "yes"}, "profiled"),
    ],
)
def test_bad_timing_field_is_named(data: dict[str, object], field: str) -> None:
    with pytest.raises(BadInput) as err:
        RunTiming.from_json(data, "RUN/timing-baseline.json")
    assert err.value.message.startswith(f"RUN/timing-baseline.json: field {field} is ")
    assert "\n" not in err.value.message


def test_bad_manifest_field_and_schema_are_named(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"settings": {"op_ranges": "on"}}))
    with pytest.raises(BadInput, match=r"manifest.json: field settings.op_ranges is 'on', expected true or false"):
        read_manifest(path)
    with pytest.raises(BadInput, match=r"version '2\.0'"):
        RunTiming.from_json({"schema": "dsocr.timing", "version": "2.0"})
    with pytest.raises(BadInput, match=r"is not dsocr\.timing"):
        RunTiming.from_json({"schema": "other"})


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "manifest.json") == (None, None)
    (tmp_path / "timing.json").write_text("{broken")
    doc, problem = read_timing(tmp_path / "timing.json")
    assert doc is None and problem is not None and "timing.json: corrupt (not valid JSON" in problem


def test_writer_changes_append_keys_in_order() -> None:
    doc = RunManifest.from_json({"status": "running", "failure": None})
    done = doc.with_(status="complete", files=("a",))
    assert list(done.to_json()) == ["status", "failure", "files"] and done.to_json()["status"] == "complete"
    built = RunManifest(status="running")  # built in memory: every field, in field order
    assert list(built.to_json())[:2] == ["schema_version", "kind"]
    assert list(built.with_(analysis="done").to_json()) == list(built.to_json())


def test_calibration_fields_are_checked() -> None:
    good = {"schema": "dsocr.calibration", "version": 1, "kernels": [{"key": "k", "median_ns": 5, "iterations": 2}]}
    assert RunCalibration.from_json(good).kernels[0].usable
    bad = {**good, "kernels": [{"key": "k", "median_ns": "5"}]}
    with pytest.raises(BadInput, match=r"^cal\.json: field kernels\[0\]\.median_ns is '5', expected a number"):
        RunCalibration.from_json(bad, "cal.json")


def test_analysis_document_reads_back_unchanged() -> None:
    """The golden analysis.json (what dsocr analyze writes for the sample) through AnalysisDocument and back."""
    from dsocr.analyze.analysis_doc import AnalysisDocument

    data = json.loads((Path(__file__).parent / "golden" / "sample" / "analysis.json").read_text(encoding="utf-8"))
    doc = AnalysisDocument.from_json(data)
    assert json.dumps(doc.to_json()) == json.dumps(data)
    assert doc.manifest is not None and doc.timing is not None and doc.timing.records_compacted is not None
    assert doc.baseline is not None and [o.file for o in doc.baseline.other_runs] == ["timing-baseline-1.json"]
    bad = {**data, "timing": {**data["timing"], "pages": [{"grid": "2x2"}]}}
    with pytest.raises(BadInput, match=r"^A/analysis\.json: field timing\.pages\[0\]\.grid is '2x2', expected a list"):
        AnalysisDocument.from_json(bad, "A/analysis.json")
