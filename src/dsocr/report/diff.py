"""``dsocr diff A B``: what changed between two analyses, and whether it exceeds the noise.

A change is marked significant only when ``|B - A| > 2 x sqrt(sd_A^2 + sd_B^2)``, the two
runs' own pass-to-pass standard deviations; with a single pass on either side the spread is
unknown and the change is not judged. Kernels and operators have no per-pass values in the
analysis: their spread is estimated from their stage's GPU-busy coefficient of variation
(said so in the output).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.analyze.analysis_doc import AnalysisDocument
from dsocr.analyze.workload_from_run import RunFiles, read_run_files
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, DsocrError, InputNotFound
from dsocr.contract.paths import check_input
from dsocr.contract.run_manifest import RunManifest, read_manifest
from dsocr.report import significance
from dsocr.report.adapt import view_from_analysis
from dsocr.report.significance import SIGMAS
from dsocr.report.view import KernelView, ReportView, StageView, Stat

TOP: Final = 15

#: Stage metrics compared: (key, label, unit, getter).
STAGE_METRICS: Final[tuple[tuple[str, str, str, Callable[[StageView], Stat | None]], ...]] = (
    ("range_ns", "profiled range", "ns", lambda s: s.range_ns),
    ("unprofiled_ns", "unprofiled", "ns", lambda s: s.unprofiled_ns),
    ("gpu_busy_ns", "GPU busy", "ns", lambda s: s.gpu_busy_ns),
    ("idle_frac", "GPU idle", "pct", lambda s: s.idle_frac),
    ("kernels", "kernels", "count", lambda s: s.kernels),
    ("launches", "launches", "count", lambda s: s.launches),
    ("syncs", "syncs", "count", lambda s: s.syncs),
    ("d2h_copies", "D2H copies", "count", lambda s: s.d2h_copies),
    ("mfu_busy", "MFU (busy)", "pct", lambda s: s.mfu_busy),
)


@attrs.frozen
class Change:
    """One compared quantity: A, B, their spreads and the verdict."""

    kind: str  #: ``stage``, ``kernel`` or ``operator``
    stage: str
    name: str  #: metric label (stages) or kernel/operator name
    unit: str  #: ``ns`` (shown as ms), ``pct`` (fractions), ``count``
    a: float | None
    b: float | None
    sd_a: float | None = None
    sd_b: float | None = None
    estimated_spread: bool = False  #: spread derived from the stage's CV, not measured per pass

    @property
    def delta(self) -> float | None:
        """B - A (``None`` when either side is missing)."""
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def rel(self) -> float | None:
        """(B - A) / A; ``None`` when A is 0 or missing."""
        d = self.delta
        return None if d is None or not self.a else d / abs(self.a)

    @property
    def noise(self) -> float | None:
        """``SIGMAS`` x the combined standard deviation; ``None`` when a side's spread is unknown."""
        return significance.noise(self.sd_a, self.sd_b)

    @property
    def significant(self) -> bool | None:
        """Whether |B - A| exceeds the noise; ``None`` when that cannot be judged."""
        return significance.significant(self.a, self.b, self.sd_a, self.sd_b)

    @property
    def verdict(self) -> str:
        """``significant``, ``within noise``, ``spread unknown``, ``only in A`` or ``only in B``."""
        if self.a is None:
            return "only in B"
        if self.b is None:
            return "only in A"
        sig = self.significant
        if sig is None:
            return "spread unknown"
        return "significant" if sig else "within noise"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row (non-finite numbers as ``None``)."""
        row = {
            **attrs.asdict(self),
            "delta": self.delta,
            "rel": self.rel,
            "noise": self.noise,
            "significant": self.significant,
            "verdict": self.verdict,
        }
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


@attrs.frozen
class Side:
    """One compared analysis."""

    label: str
    view: ReportView
    problems: tuple[str, ...] = ()  #: run-directory files that are there but unusable (corrupt JSON), named
    #: the run's manifest: the directory's manifest.json, else the one inside the analysis.json
    manifest: RunManifest | None = None


@attrs.frozen
class Diff:
    """The comparison of two analyses."""

    a: Side
    b: Side
    stages: tuple[Change, ...]
    kernels: tuple[Change, ...]
    operators: tuple[Change, ...]

    @property
    def single_pass(self) -> bool:
        """Whether either side has a single pass (spread unknown)."""
        return self.a.view.passes < 2 or self.b.view.passes < 2

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "a": {"label": self.a.label, "passes": self.a.view.passes, "gpu": self.a.view.identity.gpu},
            "b": {"label": self.b.label, "passes": self.b.view.passes, "gpu": self.b.view.identity.gpu},
            "sigmas": SIGMAS,
            "stages": [c.to_dict() for c in self.stages],
            "kernels": [c.to_dict() for c in self.kernels],
            "operators": [c.to_dict() for c in self.operators],
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc}); pass an analysis.json written by dsocr analyze") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not an analysis document (a JSON object); pass an analysis.json from dsocr analyze")
    return data


def load_side(path: Path) -> Side:
    """Read a run directory (its analysis.json, manifest.json, timing.json) or an analysis.json file."""
    files: RunFiles | None = None
    if check_input(path, "pass a run directory or an analysis.json"):
        doc_path = path / rundir.ANALYSIS_JSON
        if not os.path.lexists(doc_path):
            raise BadInput(f"{path}: holds no {rundir.ANALYSIS_JSON}; run `dsocr analyze {path} --out {path}` first")
        check_input(doc_path, "run `dsocr analyze` on the run directory again", directory_ok=False)
        files = read_run_files(path)
    else:
        doc_path = path
    doc = _read_json(doc_path)
    version = str(doc.get("schema_version", ""))
    if "stages" not in doc or not version:
        raise BadInput(
            f"{doc_path}: not an analysis.json (no schema_version/stages); pass one written by dsocr analyze"
        )
    if version.split(".")[0] != rundir.ANALYSIS_SCHEMA_VERSION.split(".")[0]:
        raise BadInput(
            f"{doc_path}: analysis schema {version}, this dsocr reads {rundir.ANALYSIS_SCHEMA_VERSION}; "
            "re-run dsocr analyze on its trace"
        )
    _check_shape(doc, doc_path)
    typed = AnalysisDocument.from_json(doc, str(doc_path))  # what dsocr analyze rendered, read back
    # the settings compared: the run directory's manifest.json (beside a given analysis.json too), else the copy
    # inside analysis.json
    manifest = files.manifest if files is not None else read_manifest(doc_path.parent / rundir.MANIFEST)[0]
    try:
        manifest = manifest if manifest is not None else typed.manifest
        if files is not None:
            view = view_from_analysis(typed, manifest=files.manifest, timing=files.timing, baseline=files.baseline)
        else:
            view = view_from_analysis(typed)
    except DsocrError:
        raise
    except Exception as exc:  # an untrusted document: whatever breaks in reading it is its fault, said in one line
        raise BadInput(
            f"{doc_path}: incomplete or malformed analysis document ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); re-run dsocr analyze on its trace"
        ) from None
    return Side(str(path), view, files.problems if files is not None else (), manifest)


#: Keys of analysis.json holding objects (when present).
_OBJECT_KEYS: Final = ("trace", "repeats", "analytic", "modules", "manifest", "timing", "baseline")


def _check_shape(doc: Mapping[str, Any], doc_path: Path) -> None:
    """BadInput naming the first key of ``doc`` whose value has the wrong JSON type (tables: lists of objects)."""
    from dsocr.analyze.analysis_json import TABLE_KEYS

    for key in sorted(TABLE_KEYS):
        rows = doc.get(key)
        if rows is not None and not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
            raise BadInput(
                f"{doc_path}: malformed analysis document ('{key}' is not a list of objects); "
                "re-run dsocr analyze on its trace"
            )
    for key in _OBJECT_KEYS:
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise BadInput(
                f"{doc_path}: malformed analysis document ('{key}' is not an object); re-run dsocr analyze on its trace"
            )


#: Stage metrics that only a trace with CUDA activity has: never compared against a CPU-only side.
GPU_METRICS: Final = frozenset({"gpu_busy_ns", "idle_frac", "kernels", "launches", "syncs", "d2h_copies", "mfu_busy"})


def _stage_changes(a: ReportView, b: ReportView) -> list[Change]:
    names = [s.name for s in a.stages] + [s.name for s in b.stages if a.stage(s.name) is None]
    out = []
    for name in names:
        sa, sb = a.stage(name), b.stage(name)
        for key, label, unit, get in STAGE_METRICS:
            gpu = key in GPU_METRICS
            xa = get(sa) if sa and (a.has_gpu or not gpu) else None
            xb = get(sb) if sb and (b.has_gpu or not gpu) else None
            if xa is None and xb is None:
                continue
            out.append(
                Change(
                    "stage",
                    name,
                    label,
                    unit,
                    xa.mean if xa else None,
                    xb.mean if xb else None,
                    xa.stddev if xa else None,
                    xb.stddev if xb else None,
                )
            )
    return out


def _busy_cv(view: ReportView, stage: str) -> float | None:
    s = view.stage(stage)
    return None if s is None else s.gpu_busy_ns.cv


def _row_changes(
    kind: str, a: ReportView, b: ReportView, rows_a: tuple[KernelView, ...], rows_b: tuple[KernelView, ...]
) -> list[Change]:
    def key(k: KernelView) -> tuple[str, str, str]:
        return (k.stage, k.name, k.shapes or "")

    ia = {key(k): k for k in rows_a}
    ib = {key(k): k for k in rows_b}
    pa, pb = max(1, a.passes), max(1, b.passes)
    out = []
    for k in list(ia) + [k for k in ib if k not in ia]:
        ka, kb = ia.get(k), ib.get(k)
        va = ka.total_ns / pa if ka else None
        vb = kb.total_ns / pb if kb else None
        cva, cvb = _busy_cv(a, k[0]), _busy_cv(b, k[0])
        name = k[1] + (f" {k[2]}" if k[2] else "")
        out.append(
            Change(
                kind,
                k[0],
                name,
                "ns",
                va,
                vb,
                None if va is None or cva is None else va * cva,
                None if vb is None or cvb is None else vb * cvb,
                estimated_spread=True,
            )
        )

    # per stage, the largest absolute changes first (missing on one side counts as its whole value)
    def size(c: Change) -> float:
        return abs(c.delta) if c.delta is not None else (c.a or c.b or 0.0)

    stages = list(dict.fromkeys(c.stage for c in out))
    ranked: list[Change] = []
    for st in stages:
        ranked += sorted((c for c in out if c.stage == st), key=lambda c: (-size(c), c.name))[:TOP]
    return ranked


def diff(a: Side, b: Side) -> Diff:
    """Compare two analyses."""
    return Diff(
        a,
        b,
        tuple(_stage_changes(a.view, b.view)),
        tuple(_row_changes("kernel", a.view, b.view, a.view.kernels, b.view.kernels)),
        tuple(_row_changes("operator", a.view, b.view, a.view.operators, b.view.operators)),
    )


def diff_paths(a: Path, b: Path) -> Diff:
    """Compare the analyses at two paths (run directories or analysis.json files)."""
    return diff(load_side(a), load_side(b))


def fmt_value(v: float | None, unit: str) -> str:
    """A value in its unit (ns shown as ms)."""
    if v is None:
        return "—"
    if unit == "ns":
        return f"{v / 1e6:,.3f} ms"
    if unit == "pct":
        return f"{100 * v:.2f}%"
    return f"{v:,.1f}" if v != round(v) else f"{v:,.0f}"


def fmt_delta(c: Change) -> str:
    """B - A with sign, in the change's unit (percentage points for fractions)."""
    d = c.delta
    if d is None:
        return "—"
    if c.unit == "ns":
        return f"{d / 1e6:+,.3f} ms"
    if c.unit == "pct":
        return f"{100 * d:+.2f} pp"
    return f"{d:+,.1f}" if d != round(d) else f"{d:+,.0f}"


def fmt_rel(c: Change) -> str:
    """(B - A) / A as a signed percentage."""
    r = c.rel
    return "—" if r is None else f"{100 * r:+.1f}%"


def render(d: Diff, fmt: str, headline: str = "", warnings: Sequence[str] = ()) -> str:
    """The diff as ``md`` or ``html`` (self-contained), with the headline and warnings under the title."""
    from dsocr.report.html import environment

    template = {"md": "diff.md.j2", "html": "diff.html.j2"}[fmt]
    return (
        environment()
        .get_template(template)
        .render(
            d=d,
            value=fmt_value,
            delta=fmt_delta,
            rel=fmt_rel,
            sigmas=SIGMAS,
            groups=_groups(d),
            headline=headline,
            warnings=list(warnings),
        )
    )


def _groups(d: Diff) -> list[tuple[str, str, list[tuple[str, list[Change]]]]]:
    out = []
    for title, rows, kind in (
        ("Stages", d.stages, "stage"),
        ("Top kernels", d.kernels, "kernel"),
        ("Top operators", d.operators, "operator"),
    ):
        by: dict[str, list[Change]] = {}
        for c in rows:
            by.setdefault(c.stage, []).append(c)
        out.append((title, kind, list(by.items())))
    return out


def summary_line(d: Diff) -> Mapping[str, int]:
    """How many compared quantities got each verdict."""
    counts: dict[str, int] = {}
    for c in (*d.stages, *d.kernels, *d.operators):
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return counts
