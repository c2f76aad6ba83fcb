"""What ``dsocr diff`` says beside its tables: why two runs may not be comparable, and the headline.

The warnings compare the runs' settings (their manifests, or the identity of the analyses): device,
GPU, mode, crops, dtype, pages, prompt and generated tokens and the range options (``--op-ranges``/``--module-ranges``
change the profiled times). The headline names the largest significant stage changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from dsocr.contract.run_manifest import ManifestSettings
from dsocr.report.diff import Change, Diff, Side, fmt_rel, fmt_value

#: Stage changes named in the headline.
HEADLINE_CHANGES: Final = 3

#: Compared settings: (key, label, why a difference matters).
SETTINGS: Final[tuple[tuple[str, str, str], ...]] = (
    ("device", "device", "CPU and GPU runs are not comparable"),
    ("gpu", "GPU", "the times compare hardware, not the change"),
    ("mode", "mode", "the vision workload differs"),
    ("crops", "crops", "the vision workload differs"),
    ("dtype", "dtype", "the arithmetic differs"),
    ("pages", "pages", "the inputs differ"),
    ("prompt_tokens", "prompt_tokens", "prefill does a different amount of work"),
    ("max_new_tokens", "max_new_tokens", "decode does a different amount of work"),
    ("op_ranges", "--op-ranges", "operator ranges add profiling overhead to one side"),
    ("module_ranges", "--module-ranges", "module ranges add profiling overhead to one side"),
)


def run_settings(side: Side) -> dict[str, Any]:
    """The compared settings of one side (``None`` where unknown): its manifest's, else its analysis's."""
    identity = side.view.identity
    settings = (side.manifest.settings if side.manifest is not None else None) or ManifestSettings(keys=())
    return {
        "device": settings.device,
        "gpu": identity.gpu,
        "mode": settings.mode or identity.mode,
        "crops": settings.crops,
        "dtype": settings.dtype,
        "prompt_tokens": settings.prompt_tokens or identity.prompt_tokens,
        "pages": tuple(Path(p).name for p in settings.pages) if settings.pages is not None else identity.pages,
        "max_new_tokens": settings.max_new_tokens or identity.new_tokens,
        "op_ranges": settings.op_ranges,
        "module_ranges": settings.module_ranges,
    }


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return f"{len(value)} ({', '.join(value[:3])}{', ...' if len(value) > 3 else ''})"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def comparability_warnings(a: Path, b: Path, d: Diff) -> list[str]:
    """One line per setting that differs between the two runs (settings unknown on a side are skipped)."""
    sa, sb = run_settings(d.a), run_settings(d.b)
    out = [*d.a.problems, *d.b.problems]
    out = [f"{p}: left out, so that side lacks what it gives (settings, timings); restore it or recapture" for p in out]
    gpu_side = _gpu_side(d)
    if gpu_side is not None:
        out.append(gpu_side)
    for key, label, why in SETTINGS:
        va, vb = sa[key], sb[key]
        if va is None or vb is None or va == vb or (key == "device" and gpu_side is not None):
            continue
        out.append(f"A and B differ in {label} ({_shown(va)} vs {_shown(vb)}): {why}")
    na, nb = d.a.view.nesting_note is not None, d.b.view.nesting_note is not None
    if na != nb:
        inside, beside = ("A", "B") if na else ("B", "A")
        out.append(
            f"{inside} ran vision inside prefill (the checkpoint's own code), {beside} beside it: the stage rows "
            f"compare prefill's own work on both sides, but {inside}'s prefill kernel and operator rows "
            "include vision's"
        )
    return out


def _gpu_side(d: Diff) -> str | None:
    """The warning when one side traced a GPU and the other is CPU-only (its GPU metrics are not compared)."""
    a, b = d.a.view.has_gpu, d.b.view.has_gpu
    if a == b:
        return None
    cpu, gpu = ("A", "B") if b else ("B", "A")
    return (
        f"{cpu} is a CPU-only run (its trace has no CUDA activity), {gpu} ran on a GPU: they are not comparable; "
        "GPU busy, idle, kernels, launches, syncs, D2H copies and MFU exist on one side only and are not judged "
        "(compare runs of one device)"
    )


def _size(c: Change) -> float:
    return abs(c.rel) if c.rel is not None else 0.0


def headline(d: Diff, n: int = HEADLINE_CHANGES) -> str:
    """One line: the ``n`` largest significant stage changes (relative), or why there are none."""
    changes = sorted((c for c in d.stages if c.verdict == "significant"), key=lambda c: (-_size(c), c.stage, c.name))
    if not changes:
        if d.single_pass:
            return "No change judged: a side has a single pass (capture with --repeats 3 to judge changes)"
        return "No significant stage change (every difference is within the runs' pass-to-pass noise)"
    parts = [
        f"{c.stage} {c.name} {fmt_rel(c)} ({fmt_value(c.a, c.unit)} -> {fmt_value(c.b, c.unit)})" for c in changes[:n]
    ]
    more = len(changes) - n
    return "Largest significant changes: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
