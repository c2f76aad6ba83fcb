"""Advice with numbers: each recommendation of the summary (:data:`dsocr.report.summary.RULES`) with the gain
the measurements bound it to, and, where a what-if measured that change, the measured gain (docs/whatif.md).

Expected gains come from the run itself: decode's GPU busy time against its wall time per step bounds what
removing host overhead can give (launches, syncs, copies); a kernel category's share of a stage's GPU time
bounds what making it free can give (``1 / (1 - share)``); the measured-over-roofline ratio bounds what
better kernels can give. Measured gains come from a what-if directory (:mod:`dsocr.report.whatif`): the
variant that makes the change the rule recommends, its time per page before and after, the speedup and the
``dsocr diff`` significance call. ``dsocr analyze RUN --whatif DIR`` names the what-if; without it a run
that is the baseline of a ``whatif.json`` in its parent directory finds it on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs

from dsocr.contract.whatif_index import COMPLETE, INDEX, read_index
from dsocr.report import summary as summ
from dsocr.report.view import ReportView
from dsocr.report.whatif import Member, WhatIf, collect
from dsocr.report.whatif_runs import END_TO_END

#: Rule id -> (the metric whose value bounds the gain, the sentence; ``{bound}`` is that value, ``{stage}``).
EXPECTED: Final[dict[str, tuple[str, str, str]]] = {
    "launches-per-token": (
        "decode",
        "speedup_bound",
        "Expected gain: at most {bound} on decode, together with the rest of its host overhead (decode's wall time "
        "over its GPU busy time per step).",
    ),
    "d2h-per-token": (
        "decode",
        "speedup_bound",
        "Expected gain: at most {bound} on decode, together with the rest of its host overhead (decode's wall time "
        "over its GPU busy time per step).",
    ),
    "syncs-per-token": (
        "decode",
        "speedup_bound",
        "Expected gain: at most {bound} on decode, together with the rest of its host overhead (decode's wall time "
        "over its GPU busy time per step).",
    ),
    "moe-routing": (
        "",
        "moe_routing_bound",
        "Expected gain from these measurements: at most {bound} on the GPU work of {stage} if routing cost nothing "
        "(1 / (1 - its share)).",
    ),
    "sam-attention": (
        "sam",
        "attention_bound",
        "Expected gain from these measurements: at most {bound} on SAM's GPU work if attention cost nothing "
        "(1 / (1 - its share)).",
    ),
    "low-mfu-prefill": (
        "prefill",
        "measured_over_predicted",
        "Expected gain from the analytic model: at most {bound} on prefill's GPU work (its measured time over "
        "the roofline time).",
    ),
    "low-mfu-vision": (
        "vision",
        "measured_over_predicted",
        "Expected gain from the analytic model: at most {bound} on the vision encoders' GPU work (their measured "
        "time over the roofline time).",
    ),
    "far-from-roofline": (
        "",
        "measured_over_predicted",
        "Expected gain from the analytic model: at most {bound} on the GPU work of {stage} (the roofline bound).",
    ),
    "kernels-explain": (
        "",
        "measured_over_predicted",
        "Expected gain from the analytic model: at most {bound} on the GPU work of {stage} (its measured time over "
        "the roofline time).",
    ),
    "composition-gap": (
        "",
        "measured_over_calibrated",
        "Expected gain from these measurements: at most {bound} on the GPU work of {stage} if it ran as fast as "
        "its kernels timed alone.",
    ),
}


def _decode_change(base: Member, m: Member) -> str | None:
    b = base.run.setting("decode") if base.run else None
    v = m.run.setting("decode") if m.run else None
    if v == b or v not in ("graph", "compile"):
        return None
    return "decode with CUDA graphs" if v == "graph" else "decode with torch.compile"


def _setting_change(key: str, value: str, words: str) -> Callable[[Member, Member], str | None]:
    def change(base: Member, m: Member) -> str | None:
        b = base.run.setting(key) if base.run else None
        v = m.run.setting(key) if m.run else None
        return words if v == value and b != value else None

    return change


def _batch_change(base: Member, m: Member) -> str | None:
    b = base.run.batch if base.run else 1
    v = m.run.batch if m.run else 1
    return f"{v} pages per forward" if v > b else None


def _host_change(base: Member, m: Member) -> str | None:
    return _decode_change(base, m) or _setting_change("moe", "grouped", "the grouped MoE (no host sync)")(base, m)


#: Rule id -> (the stage whose time the change should cut, which variant makes the change and in what words).
_MEASURED: Final[dict[str, tuple[str, tuple[str, ...], Callable[[Member, Member], str | None]]]] = {
    "launch-bound": ("decode", ("decode", "cache"), _decode_change),
    "launches-per-token": ("decode", ("decode", "cache"), _decode_change),
    "syncs-per-token": ("decode", ("decode", "cache", "moe"), _host_change),
    "d2h-per-token": ("decode", ("decode", "cache", "moe"), _host_change),
    "moe-routing": (END_TO_END, ("moe",), _setting_change("moe", "grouped", "the grouped MoE")),
    "low-mfu-prefill": ("prefill", ("batch", "batching"), _batch_change),
    "low-mfu-vision": ("vision", ("batch", "batching"), _batch_change),
}


def _others(base: Member, m: Member, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The execution settings ``m`` changes from the baseline besides ``keys`` (its measurement includes them)."""
    b = dict(base.run.execution) if base.run else {}
    return tuple((k, v) for k, v in (m.run.execution if m.run else ()) if k not in keys and b.get(k) != v)


@attrs.frozen
class MeasuredGain:
    """One change measured by a what-if variant, per page."""

    rule: str
    change: str
    variant: str
    stage: str
    before_ms: float  #: per page, the baseline
    after_ms: float  #: per page, the variant
    speedup: float
    verdict: str
    gpu: str | None

    def evidence(self) -> tuple[summ.Evidence, ...]:
        """The numbers of the sentence (keys ``whatif:<variant>:<stage>:...``: measured in another run)."""
        key = f"whatif:{self.variant}:{self.stage}"
        return (
            summ.Evidence(f"{key}:before_ms", self.before_ms, f"{self.before_ms:,.0f}"),
            summ.Evidence(f"{key}:after_ms", self.after_ms, f"{self.after_ms:,.0f}"),
            summ.Evidence(f"{key}:speedup", self.speedup, summ.times(self.speedup)),
        )

    def text(self) -> str:
        """``Measured: decode with CUDA graphs (variant graph): 1,073 -> 210 ms per page, 5.1x ...``."""
        before, after, speed = (e.shown for e in self.evidence())
        where = "end to end" if self.stage == END_TO_END else f"in {self.stage}"
        on = f", on {self.gpu}" if self.gpu else ""
        return (
            f"Measured: {self.change} (what-if variant {self.variant}): {before} -> {after} ms per page {where}, "
            f"{speed} ({self.verdict}){on}."
        )


@attrs.frozen
class Measurements:
    """The measured gains of one what-if, by rule."""

    source: str  #: the what-if directory
    gains: tuple[MeasuredGain, ...]

    def for_rule(self, rule: str) -> tuple[MeasuredGain, ...]:
        """The gains measured for ``rule``."""
        return tuple(g for g in self.gains if g.rule == rule)


def measurements(w: WhatIf, source: str) -> Measurements:
    """Every rule's measured gain in ``w``: for each rule, the variant making its change with the fewest other
    changes (the first of equals)."""
    gains = []
    for rule, (stage, keys, change) in _MEASURED.items():
        found = [
            (m, c, _others(w.baseline, m, keys))
            for m in w.members
            if m.run is not None and (c := change(w.baseline, m)) is not None
        ]
        found.sort(key=lambda f: len(f[2]))
        for m, words, others in found[:1]:
            if others:
                words += " with " + ", ".join(f"{k}={v}" for k, v in others)
            comp = w.compare(m, stage)
            if comp is None or comp.speedup is None:
                continue
            pages = max(1, comp.pages)
            gains.append(
                MeasuredGain(
                    rule,
                    words,
                    m.name,
                    stage,
                    comp.base.mean / pages,
                    comp.other.mean / pages,
                    comp.speedup,
                    comp.verdict,
                    m.run.gpu if m.run else None,
                )
            )
    return Measurements(source, tuple(gains))


def find(inputs: Sequence[Path], whatif: Path | None) -> Measurements | None:
    """The measurements for an analysis of ``inputs``: from ``whatif`` (a what-if directory or its whatif.json)
    when given, else from a ``whatif.json`` beside a single run directory that is its baseline."""
    if whatif is not None:
        root = whatif if whatif.is_dir() else whatif.parent
        return measurements(collect([whatif]), str(root))
    if len(inputs) != 1 or not inputs[0].is_dir():
        return None
    run = inputs[0].resolve()
    index = read_index(run.parent / INDEX) if (run.parent / INDEX).is_file() else None
    if index is None or index.baseline.status != COMPLETE:  # none, or its baseline is still running
        return None
    if (run.parent / index.baseline.run_dir).resolve() != run:
        return None
    return measurements(collect([run.parent]), str(run.parent))


def _bound(view: ReportView, rule: str, st: summ.Statement) -> tuple[str, summ.Evidence] | None:
    stage_name, metric, _ = EXPECTED[rule]
    stages = [e.key.split(":")[1] for e in st.evidence if e.key.startswith("stage:")]
    name = stage_name or (stages[0] if len(set(stages)) == 1 else "")
    stage = view.stage(name) if name else None
    if stage is None:
        return None
    value = summ.METRICS[metric][0](view, stage)
    if value is None or not value > 0:
        return None
    return name, summ.Evidence(f"stage:{name}:{metric}", value, summ.times(value))


def with_gains(
    view: ReportView, actions: Sequence[summ.Statement], measured: Measurements | None = None
) -> tuple[summ.Statement, ...]:
    """``actions`` with each one's expected gain (where the rule has one and its stage is known) and, with a
    what-if, the measured gain of its change appended."""
    out = []
    for st in actions:
        text, ev = st.text, list(st.evidence)
        if st.rule in EXPECTED:
            found = _bound(view, st.rule, st)
            if found is not None:
                name, e = found
                text += " " + EXPECTED[st.rule][2].format(bound=e.shown, stage=name)
                if e.key not in {x.key for x in ev}:
                    ev.append(e)
        if measured is not None and st.rule is not None:
            for g in measured.for_rule(st.rule):
                text += " " + g.text()
                ev += g.evidence()
        out.append(attrs.evolve(st, text=text, evidence=tuple(ev)))
    return tuple(out)
