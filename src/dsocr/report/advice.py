"""Advice with numbers: each recommendation of the summary (:data:`dsocr.report.summary.RULES`) with the gain
the measurements bound it to, and, where a what-if measured that change, the measured gain (docs/whatif.md).

Expected gains come from the run itself: decode's GPU busy time against its wall time per step bounds what
removing host overhead can give (one bound for the one host-overhead finding: launches, syncs and copies are
its evidence, not separate gains); a kernel category's share of a stage's GPU time bounds what making it free
can give (``1 / (1 - share)``); the measured-over-roofline ratio bounds what better kernels can give. Each is
also said for a whole page (the other stages unchanged), a bound already stated is not repeated as another
gain, and :data:`GAINS_NOTE` says that the gains overlap.

Measured gains come from a what-if directory (:mod:`dsocr.report.whatif`): the variant that makes the change
the rule recommends, its time per page before and after (in the stage and for a whole page), the speedup and
the ``dsocr diff`` significance call. ``dsocr analyze RUN --whatif DIR`` names the what-if; without it a run
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

#: The words that open every expected gain: what it is (a bound from this run) and what it is not (measured).
EXPECTED_OPENING = "Expected gain, an upper bound from this run (not measured):"


@attrs.frozen
class Expected:
    """How a recommendation's expected gain is bounded: ``metric`` of ``stage`` (empty: the one stage the rule
    fired in), said by ``text`` (``{bound}``, ``{stage}`` and the ``also`` metrics as ``{<metric>}``)."""

    stage: str
    metric: str
    text: str
    also: tuple[str, ...] = ()


_PASS = " That GPU work is {busy_share_of_pass} of a {unit}'s time, so a whole {unit} at most {pass} faster."

#: Rule id (or :data:`summ.HOST_FINDING`) -> its expected gain. A GPU-work bound also gives the pass-level bound
#: ``pass_<metric>`` (:data:`summ.GPU_BOUNDS`); the host finding's bound covers all of its counts at once.
EXPECTED: Final[dict[str, Expected]] = {
    summ.HOST_FINDING: Expected(
        "decode",
        "speedup_bound",
        "without any of this CPU overhead, decode would be at most {bound} faster (the GPU works {busy_per_step} of "
        "each {wall_per_step} decode step, one generated token) and a whole {unit} at most {pass_speedup_bound} "
        "faster (the other stages unchanged). The counts above are one overhead with this one bound: their gains do "
        "not add up.",
        ("busy_per_step", "wall_per_step", "pass_speedup_bound"),
    ),
    "moe-routing": Expected(
        "",
        "moe_routing_bound",
        "at most {bound} on the GPU work of {stage} if routing cost nothing (1 / (1 - its share)).",
    ),
    "sam-attention": Expected(
        "sam", "attention_bound", "at most {bound} on SAM's GPU work if attention cost nothing (1 / (1 - its share))."
    ),
    "low-mfu-prefill": Expected(
        "prefill",
        "measured_over_predicted",
        "at most {bound} on prefill's GPU work, if it ran at the ideal (roofline) time.",
    ),
    "low-mfu-vision": Expected(
        "vision",
        "measured_over_predicted",
        "at most {bound} on the vision encoders' GPU work, if it ran at the ideal (roofline) time.",
    ),
    "far-from-roofline": Expected(
        "",
        "measured_over_predicted",
        "at most {bound} on the GPU work of {stage}, if it ran at the ideal (roofline) time.",
    ),
    "kernels-explain": Expected(
        "",
        "measured_over_predicted",
        "at most {bound} on the GPU work of {stage}, if it ran at the ideal (roofline) time.",
    ),
    "composition-gap": Expected(
        "",
        "measured_over_calibrated",
        "at most {bound} on the GPU work of {stage}, if it ran as fast as its kernels timed alone.",
    ),
}

#: Below the list of recommendations when more than one states a gain: the gains overlap.
GAINS_NOTE = (
    "Each expected gain is the most that one change could give by this run's numbers, each for its own part of the "
    "time. The changes overlap (faster GPU work leaves less to gain from removing CPU overhead, and the reverse), "
    "so their gains neither add up nor multiply."
)

#: What to fund, in a few words, by finding (the top of summary.md).
FUND: Final[dict[str, str]] = {
    summ.HOST_FINDING: "cutting decode's CPU overhead (CUDA graphs or a serving engine)",
    "moe-routing": "a fused MoE kernel in {stage}",
    "sam-attention": "flash attention in SAM",
    "low-mfu-prefill": "batching pages and fusing kernels in prefill",
    "low-mfu-vision": "batching pages in the vision encoders",
    "far-from-roofline": "faster kernels for {stage}",
    "kernels-explain": "faster kernels for {stage}",
    "composition-gap": "removing the extra work around the kernels of {stage}",
}

#: A what-if setting in words (others: ``key=value``).
SETTING_WORDS: Final[dict[tuple[str, str], str]] = {
    ("moe", "grouped"): "the grouped MoE",
    ("moe", "loop"): "the looped MoE",
    ("attn", "sdpa"): "SDPA attention",
    ("attn", "eager"): "eager attention",
    ("attn", "flash_attention_2"): "flash attention",
    ("decode", "graph"): "CUDA graphs for decode",
    ("decode", "compile"): "torch.compile for decode",
    ("decode", "eager"): "eager decode",
}

#: The significance call in words.
VERDICT_WORDS: Final[dict[str, str]] = {
    "significant": "beyond the run-to-run spread, so not noise",
    "within noise": "within the run-to-run spread, so not a clear gain",
    "spread unknown": "run-to-run spread unknown",
}


def _decode_change(base: Member, m: Member) -> str | None:
    b = base.run.setting("decode") if base.run else None
    v = m.run.setting("decode") if m.run else None
    if v == b or v not in ("graph", "compile"):
        return None
    return "CUDA graphs for decode" if v == "graph" else "torch.compile for decode"


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
    summ.HOST_FINDING: ("decode", ("decode", "cache", "moe"), _host_change),
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
    """One change measured by a what-if variant, per page: in the stage it targets and for a whole page."""

    rule: str
    change: str
    variant: str
    stage: str
    before_ms: float  #: per page, the baseline
    after_ms: float  #: per page, the variant
    speedup: float
    verdict: str
    gpu: str | None
    #: A whole page (end to end) before, after, speedup and verdict, where the stage is not already end to end.
    page: tuple[float, float, float, str] | None = None

    def evidence(self) -> tuple[summ.Evidence, ...]:
        """The numbers of the sentence (keys ``whatif:<variant>:<stage>:...``, ``end_to_end`` for a whole page:
        measured in other runs)."""
        out = []
        rows = [(self.stage, self.before_ms, self.after_ms, self.speedup)]
        if self.page is not None:
            rows.append((END_TO_END, *self.page[:3]))
        for stage, before, after, speed in rows:
            key = f"whatif:{self.variant}:{stage.replace(' ', '_')}"
            out += [
                summ.Evidence(f"{key}:before_ms", before, f"{before:,.0f}"),
                summ.Evidence(f"{key}:after_ms", after, f"{after:,.0f}"),
                summ.Evidence(f"{key}:speedup", speed, summ.times(speed)),
            ]
        return tuple(out)

    def short(self) -> str:
        """``decode 5.1x faster (1,073 -> 210 ms per page), a whole page 2.5x (...)``: the top of summary.md."""
        ev = [e.shown for e in self.evidence()]
        if self.stage == END_TO_END:
            text = f"a whole page {ev[2]} faster (from {ev[0]} to {ev[1]} ms)"
        else:
            text = f"{self.stage} {ev[2]} faster (its time per page from {ev[0]} to {ev[1]} ms)"
        if self.page is not None:
            text += f", a whole page {ev[5]} faster (from {ev[3]} to {ev[4]} ms)"
        return text

    def text(self) -> str:
        """``Measured in a what-if ...: decode took 1,073 -> 210 ms per page, 5.1x faster, ...``."""
        ev = [e.shown for e in self.evidence()]
        same = self.page is None or self.page[3] == self.verdict
        verdict = "" if not same else f" ({'both ' if self.page else ''}{VERDICT_WORDS[self.verdict]})"
        if self.stage == END_TO_END:
            text = f"a whole page went from {ev[0]} to {ev[1]} ms, {ev[2]} faster"
        else:
            text = f"{self.stage}'s time per page went from {ev[0]} to {ev[1]} ms, {ev[2]} faster"
            text += "" if same else f" ({VERDICT_WORDS[self.verdict]})"
        if self.page is not None:
            text += f", and a whole page from {ev[3]} to {ev[4]} ms, {ev[5]} faster"
            text += "" if same else f" ({VERDICT_WORDS[self.page[3]]})"
        on = f", on {self.gpu}" if self.gpu else ""
        return (
            f"Measured in a what-if (a separate pair of unprofiled runs of the same pages, without and with "
            f"{self.change}; the variant named {self.variant}): {text}{verdict}{on}."
        )


@attrs.frozen
class Measurements:
    """The measured gains of one what-if, by rule."""

    source: str  #: the what-if directory
    gains: tuple[MeasuredGain, ...]

    def for_rule(self, rule: str) -> tuple[MeasuredGain, ...]:
        """The gains measured for ``rule``."""
        return tuple(g for g in self.gains if g.rule == rule)


def _words(key: str, value: str) -> str:
    return SETTING_WORDS.get((key, value), f"{key}={value}")


def _used(rule: str, keys: tuple[str, ...], base: Member, m: Member) -> tuple[str, ...]:
    """The settings ``m``'s change of ``rule`` stands for: for the host finding's decode change only decode's own
    (a MoE change beside it is another change, named)."""
    return ("decode", "cache") if rule == summ.HOST_FINDING and _decode_change(base, m) else keys


def measurements(w: WhatIf, source: str) -> Measurements:
    """Every rule's measured gain in ``w``: for each rule, the variant making its change with the fewest other
    changes (the first of equals; for the host finding a decode change first)."""
    gains = []
    for rule, (stage, keys, change) in _MEASURED.items():
        found = [
            (m, c, _others(w.baseline, m, _used(rule, keys, w.baseline, m)))
            for m in w.members
            if m.run is not None and (c := change(w.baseline, m)) is not None
        ]
        # the host finding: a decode variant first (its MoE change named), then the fewest other changes
        found.sort(key=lambda f: (rule == summ.HOST_FINDING and _decode_change(w.baseline, f[0]) is None, len(f[2])))
        for m, words, others in found[:1]:
            if others:
                words += ", also with " + ", ".join(_words(k, v) for k, v in others)
            comp = w.compare(m, stage)
            if comp is None or comp.speedup is None:
                continue
            pages = max(1, comp.pages)
            page = None
            whole = w.compare(m, END_TO_END) if stage != END_TO_END else None
            if whole is not None and whole.speedup is not None:
                n = max(1, whole.pages)
                page = (whole.base.mean / n, whole.other.mean / n, whole.speedup, whole.verdict)
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
                    page,
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


def _bound(view: ReportView, rule: str, st: summ.Statement) -> tuple[str, dict[str, summ.Evidence]] | None:
    """The stage of ``rule``'s expected gain and its numbers by placeholder (``bound``, the ``also`` metrics and,
    for a GPU-work bound, ``busy_share_of_pass`` and ``pass``); None where the stage or the bound is unknown."""
    exp = EXPECTED[rule]
    stages = [e.key.split(":")[1] for e in st.evidence if e.key.startswith("stage:")]
    name = exp.stage or (stages[0] if len(set(stages)) == 1 else "")
    stage = view.stage(name) if name else None
    if stage is None:
        return None
    found: dict[str, summ.Evidence] = {}
    names = {"bound": exp.metric, **{m: m for m in exp.also}}
    if exp.metric in summ.GPU_BOUNDS:
        names |= {"busy_share_of_pass": "busy_share_of_pass", "pass": f"pass_{exp.metric}"}
    for field, metric in names.items():
        getter, fmt = summ.METRICS[metric]
        value = getter(view, stage)
        if value is None or not value > 0:
            if field == "bound" or metric in exp.also:
                return None
            continue
        found[field] = summ.Evidence(f"stage:{name}:{metric}", value, summ.FORMATS[fmt](value))
    return name, found


def _expected(view: ReportView, st: summ.Statement, said: set[str]) -> tuple[str, list[summ.Evidence]]:
    """The expected-gain sentence of ``st`` and its numbers; a bound an earlier recommendation already stated
    (``said``: its evidence key) is named as the same gain, not repeated as another."""
    found = _bound(view, st.rule or "", st) if st.rule in EXPECTED else None
    if found is None:
        return "", []
    name, ev = found
    exp = EXPECTED[st.rule or ""]
    if ev["bound"].key in said:
        return f" Expected gain: the same one as stated above for the GPU work of {name}, not an additional one.", []
    said.add(ev["bound"].key)
    unit = _unit(view)
    text = f" {EXPECTED_OPENING} " + exp.text.format(stage=name, unit=unit, **{k: e.shown for k, e in ev.items()})
    if "pass" in ev and "busy_share_of_pass" in ev:
        text += _PASS.format(unit=unit, **{k: e.shown for k, e in ev.items()})
    return text, list(ev.values())


def _unit(view: ReportView) -> str:
    """What a pass-level speedup is said of: a page where the run knows its pages (the same ratio as a pass)."""
    return "page" if view.identity.pages else "pass"


def with_gains(
    view: ReportView, actions: Sequence[summ.Statement], measured: Measurements | None = None
) -> tuple[summ.Statement, ...]:
    """``actions`` with each one's expected gain (where the rule has one and its stage is known) and, with a
    what-if, the measured gain of its change appended."""
    out = []
    said: set[str] = set()
    for st in actions:
        text, ev = st.text, list(st.evidence)
        more, found = _expected(view, st, said)
        text += more
        ev += [e for e in found if e.key not in {x.key for x in ev}]
        if measured is not None and st.rule is not None:
            for g in measured.for_rule(st.rule):
                text += " " + g.text()
                ev += g.evidence()
        out.append(attrs.evolve(st, text=text, evidence=tuple(ev)))
    return tuple(out)


def gains_note(actions: Sequence[summ.Statement]) -> str | None:
    """:data:`GAINS_NOTE` where more than one recommendation states an expected gain."""
    return GAINS_NOTE if sum(EXPECTED_OPENING in a.text for a in actions) > 1 else None


def _pass_bound(st: summ.Statement) -> summ.Evidence | None:
    return next((e for e in st.evidence if e.key.split(":")[-1].startswith("pass_")), None)


def fund(
    view: ReportView, actions: Sequence[summ.Statement], measured: Measurements | None = None
) -> summ.Statement | None:
    """The top of summary.md's "what to fund": the recommendation whose expected gain on a whole pass is largest
    (the first of equals), with that bound, its stage's bound and, with a what-if, its measured gain."""
    ranked = [(b, st) for st in actions if st.rule in FUND and (b := _pass_bound(st)) is not None]
    if not ranked:
        return None
    best, st = max(ranked, key=lambda r: r[0].value)
    stage = best.key.split(":")[1]
    bound = next(e for e in st.evidence if e.key == f"stage:{stage}:{EXPECTED[st.rule or ''].metric}")
    on = stage if st.rule == summ.HOST_FINDING else f"the GPU work of {stage}"
    text = (
        f"What to fund: {FUND[st.rule or ''].format(stage=stage)}. Expected: a whole {_unit(view)} at most "
        f"{best.shown} faster ({on} at most {bound.shown}; an upper bound from this run, not measured)."
        + ("" if measured is not None and measured.for_rule(st.rule or "") else " No what-if has measured it yet.")
    )
    ev = [best, bound]
    for g in measured.for_rule(st.rule or "") if measured is not None and st.rule is not None else ():
        on_gpu = f" on {g.gpu}" if g.gpu else ""
        text += f" Measured in a what-if (a separate pair of runs without and with the change){on_gpu}: {g.short()}."
        ev += g.evidence()
    return summ.Statement(text, tuple(ev), st.rule, st.rules)
