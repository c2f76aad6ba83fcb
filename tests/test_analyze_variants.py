"""dsocr analyze on runs of the replica's variants: a static-cache run is modelled with a fixed decode context
(the page's whole cache), a batch run with one workload of ``batch`` pages per forward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dsocr.analytic.workload import ContextMode, Workload, estimate
from dsocr.analyze.pipeline import run_analysis
from dsocr.analyze.workload_from_run import WorkloadFlags, from_timing
from dsocr.contract.run_timing import RunTiming
from test_analyze_analytic import PAGE, make_run_dir

EXECUTION = {"moe": "grouped", "attn": "sdpa", "autocast": "bfloat16", "prefill_logits": "all"}


def timing(execution: dict[str, Any], pages: list[dict[str, Any]]) -> RunTiming:
    return RunTiming.from_json(timing_doc(execution, pages), "timing.json")


def timing_doc(execution: dict[str, Any], pages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "config": {"mode": "gundam", "max_new_tokens": 32, "prompt_tokens": 12, "dtype": "auto"},
        "environment": {"dtype": "bfloat16"},
        "prompt": {"tokens": 12},
        "model": {"execution": execution},
        "pages": pages,
    }


def page(i: int, grid: list[int], prefill: int, **extra: Any) -> dict[str, Any]:
    return {"index": i, "name": f"p{i}.png", "grid": grid, "prefill_length": prefill, **extra}


def test_a_static_cache_run_has_the_pages_cache_length_as_fixed_context() -> None:
    static = {**EXECUTION, "decode": "graph", "batch": 1, "cache": "static:953"}
    pages = [page(0, [2, 3], 921, cache_length=953), page(1, [1, 1], 285, cache_length=317)]
    work = from_timing(timing(static, pages))
    assert [w.context for w in work.pages] == [ContextMode("fixed", 953), ContextMode("fixed", 317)]
    # without per-page lengths: prefill length + new tokens
    older = from_timing(timing(static, [page(0, [2, 3], 921)]))
    assert older.pages[0].context == ContextMode("fixed", 953)
    # --context given explicitly wins
    flagged = from_timing(timing(static, pages), WorkloadFlags(context=ContextMode("max")))
    assert flagged.pages[0].context == ContextMode("max")
    # the dynamic cache keeps the auto context
    dynamic = {**EXECUTION, "decode": "eager", "batch": 1, "cache": "dynamic"}
    assert from_timing(timing(dynamic, pages)).pages[0].context == ContextMode("auto")
    # a fixed context costs more decode than the growing one (every step reads the whole cache)
    fixed, auto = (
        estimate(w).stage("decode").cost.bytes for w in (work.pages[0], from_timing(timing(dynamic, pages)).pages[0])
    )
    assert fixed > auto


def test_a_batch_run_has_one_workload_per_forward_with_its_pages() -> None:
    batched = {**EXECUTION, "decode": "eager", "batch": 2, "cache": "dynamic"}
    pages = [
        page(0, [2, 3], 921, forward=0),
        page(1, [1, 1], 285, forward=1),
        page(2, [2, 3], 921, forward=0),
        page(3, [2, 3], 921, forward=2),
    ]
    work = from_timing(timing(batched, pages))
    assert [(w.batch, w.crop_grid) for w in work.pages] == [(2, (2, 3)), (1, (1, 1)), (1, (2, 3))]
    assert work.names == ("p0.png + p2.png", "p1.png", "p3.png")
    # without forward indices: the worker's rule (bucketed by grid in order of first appearance)
    plain = [{k: v for k, v in p.items() if k != "forward"} for p in pages]
    again = from_timing(timing(batched, plain))
    assert [(w.batch, w.crop_grid) for w in again.pages] == [(2, (2, 3)), (1, (2, 3)), (1, (1, 1))]
    # a batch of 2 costs the work of 2 pages in one forward
    one = Workload(mode="gundam", crop_grid=(2, 3), prompt_tokens=12, new_tokens=32, dtype="bfloat16")
    two = estimate(work.pages[0]).stage("prefill").cost.flops
    assert two > 1.9 * estimate(one).stage("prefill").cost.flops


def test_analyze_on_a_run_dir_uses_the_variant(tmp_path: Path) -> None:
    """dsocr analyze of a run directory whose timing.json records a graph-decode batch-2 run."""
    run, _ = make_run_dir(tmp_path)
    doc = json.loads((run / "timing.json").read_text())
    doc["model"] = {"execution": {**EXECUTION, "decode": "graph", "batch": 2, "cache": "static:957"}}
    doc["pages"] = [{**PAGE, "prefill_length": 925, "cache_length": 957, "forward": 0}]
    (run / "timing.json").write_text(json.dumps(doc))
    an = run_analysis([run]).to_dict()["analytic"]
    assert an["available"] and an["workload_source"] == "run"
    assert an["workload"]["batch"] == 1  # one page in the forward (the last bucket held fewer than 2)
    assert an["workload"]["context_mode"] == "fixed:957"
    assert an["workload"]["decode_context"] == {"first": 957, "last": 957, "mean": 957.0}
