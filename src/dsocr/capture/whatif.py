"""``dsocr whatif run``: the baseline and every variant of one workload captured on the same pages into one
directory (docs/whatif.md).

``OUT/baseline/``, ``OUT/<variant>/``: one run directory each, made by :func:`dsocr.capture.driver.run_capture`;
unprofiled CUDA-event timing for every variant (``profile`` False: no nsys), the nsys capture too for the
variants named in ``--profile``. ``OUT/whatif.json`` (:mod:`dsocr.contract.whatif_index`) is rewritten
atomically after every variant. A batch sweep (``--sweep-batch``) adds one variant per batch and stops at
the first that runs out of memory, saying where.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.capture import inputs as inputs_mod
from dsocr.capture import manifest as manifest_mod
from dsocr.capture.driver import CaptureResult, CaptureSettings, Reporter, preflight
from dsocr.contract.errors import BadInput, BadUsage, DsocrError, RunFailed
from dsocr.contract.whatif_index import (
    BASELINE,
    COMPLETE,
    FAILED,
    INDEX,
    OUT_OF_MEMORY,
    SKIPPED,
    Entry,
    Sweep,
    Variant,
    WhatIfIndex,
    check_unique,
)

#: What every sweep point sets besides its batch, unless ``--sweep-with`` says otherwise (graph decode needs
#: the grouped MoE: the loop's host syncs cannot be captured in a CUDA graph).
SWEEP_SETTINGS: Final = (("moe", "grouped"), ("decode", "graph"))
SWEEP_PREFIX: Final = "batch"


def sweep_name(batch: int) -> str:
    """The variant name of a sweep point (``batch8``)."""
    return f"{SWEEP_PREFIX}{batch}"


Capture = Callable[[CaptureSettings], CaptureResult]


@attrs.frozen
class WhatIfPlan:
    """What one ``dsocr whatif run`` does."""

    base: CaptureSettings  #: the baseline's settings (its ``out`` ignored)
    out: Path
    variants: tuple[Variant, ...] = ()
    profile: frozenset[str] = frozenset()  #: variant names also captured under nsys (``baseline`` too)
    sweep: tuple[int, ...] = ()
    sweep_settings: tuple[tuple[str, str], ...] = SWEEP_SETTINGS

    def all_variants(self) -> tuple[Variant, ...]:
        """The baseline, the named variants, then one per sweep batch, each marked profiled or not."""
        swept = tuple(
            Variant(sweep_name(b), (*(kv for kv in self.sweep_settings if kv[0] != "batch"), ("batch", str(b))))
            for b in self.sweep
        )
        out = (Variant(BASELINE), *self.variants, *swept)
        return tuple(attrs.evolve(v, profiled=v.name in self.profile) for v in out)


def settings_for(base: CaptureSettings, variant: Variant, run_dir: Path) -> CaptureSettings:
    """The capture settings of ``variant``: the baseline's with its keys (each a CaptureSettings field) changed."""
    changes: dict[str, Any] = {key: int(value) if key == "batch" else value for key, value in variant.settings}
    return attrs.evolve(
        base,
        **changes,
        out=run_dir,
        profile=variant.profiled,
        analyze=base.analyze and variant.profiled,
        calibrate=False if not variant.profiled else base.calibrate,
    )


def check_plan(plan: WhatIfPlan) -> tuple[tuple[Variant, CaptureSettings], ...]:
    """Every variant's settings, checked before anything runs (a bad one stops the what-if here, exit 2)."""
    if len(set(plan.sweep)) != len(plan.sweep):
        raise BadUsage("--sweep-batch: a batch is given twice; give each batch once (e.g. 1,2,4,8)")
    variants = plan.all_variants()
    check_unique(variants)
    names = {v.name for v in variants}
    unknown = sorted(plan.profile - names)
    if unknown:
        raise BadUsage(
            f"--profile {','.join(unknown)}: no such variant; name the baseline or a --variant "
            f"({', '.join(sorted(names))})"
        )
    if (plan.out / INDEX).exists():
        raise BadUsage(f"--out {plan.out}: already holds a what-if ({INDEX}); choose another --out or remove it")
    pages = inputs_mod.collect(list(plan.base.pages)) if plan.base.pages else inputs_mod.default_pages()
    out = []
    for v in variants:
        settings = settings_for(plan.base, v, plan.out / v.name)
        try:
            preflight(settings, pages)
        except BadUsage as exc:
            raise BadUsage(f"variant {v.name} ({v.describe()}): {exc.message}") from None
        except BadInput as exc:  # the variant's execution is one the worker cannot run: the variant is wrong
            if v.name == BASELINE:
                raise
            raise BadUsage(f"variant {v.name} ({v.describe()}): {exc.message}") from None
        out.append((v, settings))
    return tuple(out)


def _is_oom(exc: DsocrError) -> bool:
    return isinstance(exc, RunFailed) and "out of memory" in exc.message.lower()


def run_whatif(
    plan: WhatIfPlan,
    capture: Capture,
    command: Sequence[str] = (),
    reporter: Reporter | None = None,
) -> WhatIfIndex:
    """Run the baseline and every variant through ``capture`` (``run_capture`` with the CLI's reporter and
    analyzer bound); the index is rewritten after each. The baseline failing stops the what-if (its error);
    a variant failing is recorded and the next one runs; the sweep stops at its first out-of-memory batch."""
    checked = check_plan(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    entries = [Entry(v, v.name) for v, _ in checked]
    sweep = (
        Sweep(tuple(plan.sweep), tuple(kv for kv in plan.sweep_settings if kv[0] != "batch")) if plan.sweep else None
    )
    index = WhatIfIndex(manifest_mod.utc_now(), tuple(command), tuple(entries), sweep)
    index.write(plan.out)
    sweep_stopped = False
    swept = {sweep_name(b) for b in plan.sweep}
    for i, (variant, settings) in enumerate(checked):
        is_sweep = variant.name in swept
        if is_sweep and sweep_stopped:
            entries[i] = attrs.evolve(entries[i], status=SKIPPED, message="the sweep stopped at a smaller batch")
            index = attrs.evolve(index, entries=tuple(entries))
            index.write(plan.out)
            continue
        if reporter is not None:
            reporter.info(f"what-if: {variant.name} ({variant.describe()})")
        try:
            capture(settings)
        except KeyboardInterrupt:
            entries[i] = attrs.evolve(entries[i], status=FAILED, message="interrupted (Ctrl-C)")
            index = attrs.evolve(index, entries=tuple(entries))
            index.write(plan.out)
            raise
        except DsocrError as exc:
            if variant.name == BASELINE:
                entries[i] = attrs.evolve(entries[i], status=FAILED, message=exc.message)
                attrs.evolve(index, entries=tuple(entries)).write(plan.out)
                raise
            status = OUT_OF_MEMORY if _is_oom(exc) else FAILED
            entries[i] = attrs.evolve(entries[i], status=status, message=exc.message)
            if is_sweep and status == OUT_OF_MEMORY and sweep is not None:
                sweep_stopped = True
                sweep = attrs.evolve(sweep, stopped_at=int(variant.get("batch") or 0), reason=exc.message)
            if reporter is not None:
                reporter.warn(f"what-if variant {variant.name}: {exc.message}")
        else:
            entries[i] = attrs.evolve(entries[i], status=COMPLETE)
        index = attrs.evolve(index, entries=tuple(entries), sweep=sweep)
        index.write(plan.out)
    return index
