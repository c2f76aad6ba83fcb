"""``dsocr whatif run``: variants parsed and refused, the runner's order, index and failures (a fake capture),
and one real shrunk capture of two variants on the CPU (settings recorded and shown)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from dsocr.capture import nsys as nsys_mod
from dsocr.capture.driver import CaptureResult, CaptureSettings, unprofiled_plan
from dsocr.capture.pages import shipped_dir
from dsocr.capture.whatif import WhatIfPlan, check_plan, run_whatif, settings_for
from dsocr.cli import main
from dsocr.contract.errors import BadUsage, EnvironmentProblem, ExitCode, RunFailed
from dsocr.contract.whatif_index import (
    COMPLETE,
    FAILED,
    OUT_OF_MEMORY,
    SKIPPED,
    VARIANT_VALUES,
    Variant,
    WhatIfIndex,
    parse_variant,
    read_index,
)

PAGE = shipped_dir() / "text-04-letter.png"


def test_parse_variant() -> None:
    v = parse_variant("graph=moe=grouped, decode=graph,batch=08,dtype=bf16")
    assert v.name == "graph"
    assert v.settings == (("moe", "grouped"), ("decode", "graph"), ("batch", "8"), ("dtype", "bfloat16"))
    assert v.describe() == "moe=grouped, decode=graph, batch=8, dtype=bfloat16"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x=speed=fast", "unknown variant key 'speed'; use one of moe, attn, decode, dtype, batch"),
        ("x=moe=fused", "moe='fused' is unknown; use one of loop, grouped"),
        ("x=decode=cudagraph", "decode='cudagraph' is unknown; use one of eager, graph, compile"),
        ("x=batch=0", "batch='0' is not a positive whole number of pages"),
        ("x=moe=grouped,moe=loop", "moe is given twice"),
        ("x", "give NAME=key=value"),
        ("x=moe", "'moe' is not key=value"),
        ("Graph!=moe=grouped", "is not usable as a directory name"),
        ("baseline=moe=grouped", "the name 'baseline' is the baseline's own"),
    ],
)
def test_variant_refusals(text: str, message: str) -> None:
    with pytest.raises(BadUsage, match="--variant") as exc:
        parse_variant(text)
    assert message in exc.value.message and exc.value.exit_code == ExitCode.USAGE


def test_index_round_trip(tmp_path: Path) -> None:
    plan = WhatIfPlan(CaptureSettings(pages=(PAGE,), device="cpu"), tmp_path, (parse_variant("g=moe=grouped"),))
    variants = plan.all_variants()
    assert [v.name for v in variants] == ["baseline", "g"]
    from dsocr.contract.whatif_index import Entry

    index = WhatIfIndex("now", ("dsocr",), tuple(Entry(v, v.name) for v in variants))
    index.write(tmp_path)
    assert read_index(tmp_path) == index


def _plan(tmp_path: Path, *variants: str, **kwargs: object) -> WhatIfPlan:
    base = CaptureSettings(pages=(PAGE,), device="cpu", mode="tiny", repeats=2, max_new_tokens=3)
    return WhatIfPlan(base, tmp_path / "wi", tuple(parse_variant(v) for v in variants), **kwargs)  # type: ignore[arg-type]


def test_settings_for_a_variant(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "g=moe=grouped,attn=sdpa", profile=frozenset({"g"}))
    (base, s0), (g, s1) = check_plan(plan)
    assert (s0.moe, s0.attn, s0.profile, s0.out) == ("loop", None, False, tmp_path / "wi" / "baseline")
    assert (s1.moe, s1.attn, s1.profile, s1.out) == ("grouped", "sdpa", True, tmp_path / "wi" / "g")
    assert not s0.calibrates and g.profiled and not base.profiled
    assert [b.position for b in unprofiled_plan(2)] == ["unprofiled-only"] * 2


@pytest.mark.parametrize(
    ("kwargs", "variants", "message"),
    [
        ({}, ("a=moe=grouped", "a=attn=sdpa"), "the name 'a' is given twice"),
        ({"profile": frozenset({"nope"})}, ("a=moe=grouped",), "--profile nope: no such variant"),
        ({"sweep": (1, 2, 2)}, (), "--sweep-batch: a batch is given twice"),
        ({"sweep": (1, 2)}, ("batch2=moe=grouped",), "the name 'batch2' is given twice"),
    ],
)
def test_plan_refusals(tmp_path: Path, kwargs: dict[str, object], variants: tuple[str, ...], message: str) -> None:
    with pytest.raises(BadUsage) as exc:
        check_plan(_plan(tmp_path, *variants, **kwargs))
    assert message in exc.value.message


def test_every_variant_key_is_a_capture_setting(tmp_path: Path) -> None:
    """A variant's keys become CaptureSettings fields of the same name (decode and batch included)."""
    fields = attrs.fields_dict(CaptureSettings)
    assert set(VARIANT_VALUES) <= set(fields)
    settings = settings_for(CaptureSettings(), parse_variant("x=moe=grouped,decode=graph,batch=2"), tmp_path)
    assert (settings.moe, settings.decode, settings.batch, settings.out) == ("grouped", "graph", 2, tmp_path)


def test_an_existing_whatif_is_never_overwritten(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "a=moe=grouped")
    plan.out.mkdir()
    (plan.out / "whatif.json").write_text("{}")
    with pytest.raises(BadUsage, match="already holds a what-if"):
        check_plan(plan)


class FakeCapture:
    """Records the settings it is given; fails the ones named in ``fail`` with their message."""

    def __init__(self, fail: dict[str, str]) -> None:
        self.fail = fail
        self.ran: list[str] = []

    def __call__(self, settings: CaptureSettings) -> CaptureResult:
        assert settings.out is not None
        name = settings.out.name
        self.ran.append(name)
        if name in self.fail:
            raise RunFailed(self.fail[name])
        settings.out.mkdir(parents=True)
        return CaptureResult(settings.out, {})


def test_runner_order_index_and_failures(tmp_path: Path) -> None:
    fake = FakeCapture({"bad": "the worker failed (exit 1); see baseline.log"})
    plan = _plan(tmp_path, "bad=moe=grouped", "good=attn=sdpa")
    index = run_whatif(plan, fake, ("dsocr", "whatif", "run"))
    assert fake.ran == ["baseline", "bad", "good"]
    assert [(e.variant.name, e.status) for e in index.entries] == [
        ("baseline", COMPLETE),
        ("bad", FAILED),
        ("good", COMPLETE),
    ]
    assert index.entries[1].message == "the worker failed (exit 1); see baseline.log"
    assert read_index(plan.out) == index and index.command == ("dsocr", "whatif", "run")


def test_sweep_stops_at_the_first_out_of_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's mechanics; the settings are not applied (this capture may lack --batch), only recorded."""
    import dsocr.capture.whatif as cw

    def settings(base: CaptureSettings, v: Variant, run_dir: Path) -> CaptureSettings:
        return attrs.evolve(base, out=run_dir, profile=v.profiled)

    monkeypatch.setattr(cw, "settings_for", settings)
    oom = "the unprofiled baseline worker: CUDA out of memory while running 4 pages; use a smaller --mode"
    fake = FakeCapture({"batch4": oom})
    plan = _plan(tmp_path, sweep=(1, 2, 4, 8), sweep_settings=(("moe", "grouped"), ("decode", "graph")))
    index = run_whatif(plan, fake)
    assert fake.ran == ["baseline", "batch1", "batch2", "batch4"]
    statuses = [(e.variant.name, e.status) for e in index.entries]
    assert statuses[-2:] == [("batch4", OUT_OF_MEMORY), ("batch8", SKIPPED)]
    assert index.sweep is not None and (index.sweep.stopped_at, index.sweep.reason) == (4, oom)
    assert index.entries[1].variant.settings == (("moe", "grouped"), ("decode", "graph"), ("batch", "1"))
    assert read_index(plan.out) == index


def test_baseline_failure_stops_and_is_recorded(tmp_path: Path) -> None:
    fake = FakeCapture({"baseline": "no nsys"})
    plan = _plan(tmp_path, "a=moe=grouped")
    with pytest.raises(RunFailed):
        run_whatif(plan, fake)
    index = read_index(plan.out)
    assert index is not None and index.baseline.status == FAILED and index.entries[1].status == "pending"


def _nsys() -> Path | None:
    try:
        return nsys_mod.find(cwd=Path(__file__).resolve().parents[1]).path
    except EnvironmentProblem:
        return None


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.nsys
def test_real_shrunk_capture_of_two_variants(tmp_path: Path) -> None:
    """The baseline (MoE loop, eager; under nsys too) and one variant (grouped MoE, SDPA; unprofiled only)
    through the real worker on the CPU: settings recorded in each run and shown in the report."""
    pytest.importorskip("torch")
    nsys = _nsys()
    if nsys is None:
        pytest.skip("no nsys (run `bash scripts/install-nsys.sh` or set DSOCR_NSYS_HOME)")
    out = tmp_path / "wi"
    argv = ["whatif", "run", "--variant", "fast=moe=grouped,attn=sdpa", "--device", "cpu", "--mode", "tiny"]
    argv += ["--repeats", "2", "--max-new-tokens", "3", "--warmup", "1", "--shrink", "1,1,2,512,8"]
    argv += ["--pages", str(PAGE), "--out", str(out), "--profile", "baseline", "--nsys", str(nsys), "--quiet"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    index = read_index(out)
    assert index is not None and [e.status for e in index.entries] == [COMPLETE, COMPLETE]
    assert [e.variant.profiled for e in index.entries] == [True, False]
    for name, moe, attn in (("baseline", "loop", "eager"), ("fast", "grouped", "sdpa")):
        timing = json.loads((out / name / "timing-baseline.json").read_text())
        assert timing["model"]["execution"]["moe"] == moe and timing["model"]["execution"]["attn"] == attn
    fast = json.loads((out / "fast" / "manifest.json").read_text())
    assert fast["timing"]["profiled"] is None and fast["nsys"] is None and fast["status"] == "complete"
    assert not (out / "fast" / "trace.nsys-rep").exists()
    assert (out / "baseline" / "trace.sqlite").is_file() and (out / "baseline" / "summary.md").is_file()
    md = (out / "whatif.md").read_text()
    assert "| fast | moe=grouped, attn=sdpa | complete | 2 | unprofiled (host clock) | no |" in md
    assert "| baseline | attn=eager, autocast=" in md and "| yes |" in md
    assert "| baseline | no GPU traced |" in md and "| fast | not measured |" in md
