"""The analytic workload of an analyzed trace: from a run directory's files, or from flags.

A dsocr run directory says everything the analytic model needs: ``timing.json`` lists the
pages of one pass (image size and crop grid each), the mode, the prompt tokens, the new
tokens and the dtype. A foreign trace needs flags (``--mode/--crops/--prompt-tokens/
--max-new-tokens``, or ``--prefill-tokens`` for a decoder-only trace without vision).
Without either, :func:`workloads_for` says why no MFU can be given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.analytic.workload import ContextMode, Workload
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, BadUsage
from dsocr.contract.run_manifest import RunManifest, read_manifest
from dsocr.contract.run_timing import Execution, RunTiming, TimingPage, TimingRecord, read_timing
from dsocr.model.modes import NO_CROPS, TokenLayout, get_mode, parse_grid

#: Decode steps of a decoder-only workload default to this many new tokens.
DEFAULT_NEW_TOKENS: Final = 128


@attrs.frozen
class RunFiles:
    """The JSON documents of a dsocr run directory, typed and read once (``None`` where absent or unusable)."""

    directory: Path
    manifest: RunManifest | None
    timing: RunTiming | None
    baseline: RunTiming | None  #: timing-baseline.json, the other unprofiled runs in ``other_runs``
    #: one line per file that is there but unusable (corrupt JSON, not a regular file): never dropped silently
    problems: tuple[str, ...] = ()

    @property
    def is_run(self) -> bool:
        """Whether this is a dsocr run directory (manifest or timing present, or there but corrupt)."""
        return self.manifest is not None or self.timing is not None or bool(self.problems)

    @property
    def status(self) -> str | None:
        """The manifest's capture status (None without a manifest)."""
        return self.manifest.status if self.manifest is not None else None

    def warnings(self) -> list[str]:
        """One warning line per unusable file: which file, what is wrong, what the report lacks."""
        return [
            f"{problem}: left out, so the report lacks what it gives (settings, workload for MFU/MBU, unprofiled "
            "timings); restore the file or recapture"
            for problem in self.problems
        ]


def _baseline_k(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


def with_other_runs(directory: Path, baseline: RunTiming | None, problems: list[str]) -> RunTiming | None:
    """The baseline document with the run directory's other unprofiled runs in ``other_runs``.

    ``--baseline-runs`` 2 or more leaves ``timing-baseline-<k>.json`` beside ``timing-baseline.json``;
    each joins ``other_runs`` (ordered by k) with its ``file`` name. Without ``timing-baseline.json``
    the first of them stands in. A one-baseline run directory gives its baseline unchanged. An unusable
    file adds its line to ``problems``.
    """
    paths = sorted(directory.glob(rundir.TIMING_BASELINE_GLOB), key=lambda p: (_baseline_k(p), p.name))
    others = [doc.with_(file=p.name) for p in paths if (doc := _read_timing(p, problems)) is not None]
    if baseline is None and others:
        baseline, others = others[0], others[1:]
    if baseline is None or not others:
        return baseline
    return baseline.with_(other_runs=tuple(others))


def _read_timing(path: Path, problems: list[str]) -> RunTiming | None:
    doc, problem = read_timing(path)
    if problem is not None:
        problems.append(problem)
    return doc


def run_files(given: Path) -> RunFiles | None:
    """The run files beside a trace given on the command line (a run directory or a file in one), typed; None
    when it is not a run directory (see :func:`read_run_files`)."""
    files = read_run_files(given if given.is_dir() else given.parent)
    return files if files.is_run else None


def read_run_files(directory: Path) -> RunFiles:
    """The JSON documents of ``directory``, typed, each read once.

    A missing file is normal; an unusable one (corrupt JSON, not a regular file) is named in ``problems``;
    a readable one with a bad field raises BadInput naming the file and the field.
    """
    problems: list[str] = []
    manifest, problem = read_manifest(directory / rundir.MANIFEST)
    problems += [problem] if problem is not None else []
    timing = _read_timing(directory / rundir.TIMING, problems)
    baseline = with_other_runs(directory, _read_timing(directory / rundir.TIMING_BASELINE, problems), problems)
    return RunFiles(directory, manifest, timing, baseline, tuple(problems))


@attrs.frozen
class WorkloadFlags:
    """The workload flags of ``dsocr analyze`` (all optional) and the decode context mode.

    The workload flags describe a foreign trace (or override a run's timing.json); ``context``
    (``--context``) applies to every workload, a run's or the flags', and is not a workload flag.
    """

    mode: str | None = None
    crops: str | None = None
    prompt_tokens: int | None = None
    max_new_tokens: int | None = None
    prefill_tokens: int | None = None
    context: ContextMode = attrs.field(factory=ContextMode)  #: decode context of every step: auto, max, fixed:N

    @property
    def given(self) -> bool:
        """Whether any workload flag was given (``context`` alone describes no workload)."""
        return any(
            v is not None for v in (self.mode, self.crops, self.prompt_tokens, self.max_new_tokens, self.prefill_tokens)
        )


@attrs.frozen
class DecoderOnlyWorkload(Workload):
    """A workload without vision: ``prefill_tokens`` text positions, then decode (foreign decoder traces)."""

    prefill_tokens: int = 1

    @property
    def layout(self) -> TokenLayout:
        """No image embeddings."""
        return TokenLayout(0, 0, 0, 0, 0)

    @property
    def image_embeddings(self) -> int:
        """No image embeddings."""
        return 0

    @property
    def prefill_length(self) -> int:
        """The given prefill length."""
        return self.prefill_tokens

    def views(self) -> tuple[tuple[str, int, int], ...]:
        """No vision views."""
        return ()


@attrs.frozen
class RunWorkload:
    """The per-page workloads of one pass and where they came from."""

    pages: tuple[Workload, ...]  #: one per page of a pass (in order)
    names: tuple[str, ...]  #: page names
    source: str  #: ``run`` (timing.json) or ``flags``


def _dtype(timing: RunTiming) -> str:
    env = timing.environment or {}
    for value in (env.get("dtype"), timing.config_value("dtype")):
        if isinstance(value, str) and value.lower() not in ("auto", ""):
            return value.lower()
    return "bf16"


def from_timing(timing: RunTiming, flags: WorkloadFlags | None = None) -> RunWorkload:
    """Per-page workloads of a dsocr run's ``timing.json`` (flags given explicitly override it)."""
    f = flags or WorkloadFlags()
    mode = str(f.mode or timing.config_value("mode") or "gundam")
    prompt = timing.prompt.tokens if timing.prompt is not None and timing.prompt.tokens is not None else None
    prompt_tokens = f.prompt_tokens if f.prompt_tokens is not None else prompt
    if prompt_tokens is None and (timing.prompt is None or not timing.prompt.has("tokens")):
        prompt_tokens = timing.config_value("prompt_tokens")
    new_tokens = f.max_new_tokens if f.max_new_tokens is not None else timing.config_value("max_new_tokens")
    if not isinstance(prompt_tokens, int) or not isinstance(new_tokens, int):
        raise BadInput(
            "timing.json: no prompt tokens or max_new_tokens in its config; give --prompt-tokens and --max-new-tokens"
        )
    common: dict[str, Any] = {
        "mode": mode,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "dtype": _dtype(timing),
        "attn_impl": str(timing.config_value("attn_implementation") or "sdpa"),
        "context": f.context,
    }
    execution = timing.execution
    if execution is not None:  # the replica from issue 10 on: the vendor's lm_head, SDPA in vision
        common["attn_impl"] = str(execution.attn or common["attn_impl"])
        common["vision_attn_impl"] = "sdpa"
        if execution.prefill_logits in ("last", "all"):
            common["prefill_logits"] = execution.prefill_logits
    static_of = execution if execution is not None and str(execution.cache or "").startswith("static") else None
    out: list[Workload] = []
    names: list[str] = []
    for i, p in enumerate(timing.pages):
        grid = p.grid if f.crops is None else parse_grid(f.crops)
        size = (p.width, p.height) if p.width and p.height else None
        page_common = dict(common)
        if static_of is not None and f.context.kind == "auto":  # every step attends over the whole static cache
            page_common["context"] = ContextMode("fixed", _cache_length(p, new_tokens, static_of))
        if grid is not None and f.mode is None:
            out.append(Workload(crop_grid=grid, image_size=size, **page_common))
        elif size is not None and f.crops is None:
            out.append(Workload.for_image(*size, **page_common))
        else:
            out.append(Workload(crop_grid=_default_grid(mode, f.crops), image_size=size, **page_common))
        names.append(str(p.name or f"page {i}"))
    if not out:
        raise BadInput("timing.json: lists no pages; give the workload with --mode/--crops")
    batch = execution.batch if execution is not None else None
    if isinstance(batch, int) and batch > 1:
        return _batched(out, names, timing.pages, batch)
    return RunWorkload(tuple(w.validated() for w in out), tuple(names), "run")


def _cache_length(page: TimingPage, new_tokens: int, execution: Execution) -> int:
    """A static-cache page's cache length: its ``cache_length``, else prefill length + new tokens, else the
    ``static:N`` of the execution record."""
    if page.cache_length is not None:
        return page.cache_length
    if page.prefill_length is not None:
        return page.prefill_length + new_tokens
    _, _, n = str(execution.cache).partition(":")
    if n.isdigit():
        return int(n)
    raise BadInput("timing.json: a static-cache run without cache lengths; give --context fixed:N")


def _batched(out: list[Workload], names: list[str], pages: Sequence[TimingPage], batch: int) -> RunWorkload:
    """One workload per forward of a ``batch`` run (batch = the pages it held): the pages' ``forward`` indices,
    or (older records) the worker's rule: bucketed by crop grid in order of first appearance, ``batch`` per forward."""
    groups: dict[Any, list[int]] = {}
    if pages and all(p.forward is not None for p in pages):
        for i, p in enumerate(pages):
            groups.setdefault(p.forward, []).append(i)
    else:
        by_grid: dict[tuple[int, int], list[int]] = {}
        for i, w in enumerate(out):
            by_grid.setdefault(w.crop_grid, []).append(i)
        chunks = [ids[k : k + batch] for ids in by_grid.values() for k in range(0, len(ids), batch)]
        groups = dict(enumerate(chunks))
    works = tuple(attrs.evolve(out[ids[0]], batch=len(ids)).validated() for ids in groups.values())
    labels = tuple(" + ".join(names[i] for i in ids) for ids in groups.values())
    return RunWorkload(works, labels, "run")


def _default_grid(mode: str, crops: str | None) -> tuple[int, int]:
    if crops is not None and crops.strip().lower() != "auto":
        return parse_grid(crops)
    return (2, 2) if get_mode(mode).crops_allowed else NO_CROPS


def from_flags(flags: WorkloadFlags, pages: int = 1) -> RunWorkload:
    """``pages`` identical workloads described by the flags (a foreign trace); a workload the flags cannot
    describe is a usage error (exit 2, as in ``dsocr model``)."""
    try:
        return _from_flags(flags, pages)
    except BadInput as exc:
        raise BadUsage(exc.message) from None


def _from_flags(flags: WorkloadFlags, pages: int) -> RunWorkload:
    new_tokens = flags.max_new_tokens if flags.max_new_tokens is not None else DEFAULT_NEW_TOKENS
    w: Workload
    if flags.prefill_tokens is not None:
        if flags.mode is not None or flags.crops is not None:
            raise BadInput("--prefill-tokens describes a decoder-only trace: give it without --mode/--crops")
        if flags.prefill_tokens < 1:
            raise BadInput(f"--prefill-tokens {flags.prefill_tokens} is out of range: give at least 1")
        w = DecoderOnlyWorkload(
            prompt_tokens=flags.prefill_tokens,
            new_tokens=new_tokens,
            prefill_tokens=flags.prefill_tokens,
            context=flags.context,
        )
    else:
        mode = flags.mode or "gundam"
        w = Workload(
            mode=mode,
            crop_grid=_default_grid(mode, flags.crops),
            prompt_tokens=flags.prompt_tokens if flags.prompt_tokens is not None else 12,
            new_tokens=new_tokens,
            context=flags.context,
        )
    v = w.validated()
    return RunWorkload((v,) * max(1, pages), tuple(f"page {i}" for i in range(max(1, pages))), "flags")


def workloads_for(
    files: RunFiles | None, flags: WorkloadFlags, pages_per_pass: int
) -> tuple[RunWorkload | None, str | None]:
    """The workload of an analyzed trace and, when there is none, the reason (one line)."""
    if files is not None and files.timing is not None and files.timing.pages:
        return from_timing(files.timing, flags), None
    if flags.given:
        return from_flags(flags, pages_per_pass), None
    return None, (
        "no workload: the trace is not in a dsocr run directory (no timing.json beside it); give "
        "--mode/--crops/--prompt-tokens/--max-new-tokens (or --prefill-tokens N for a decoder-only trace) for MFU"
    )


def compact_timing(timing: RunTiming | None, full_steps: int = 1) -> RunTiming | None:
    """A timing document with its ``records`` made compact for analysis.json.

    Every record is kept except ``decode_step`` ones: those of the first ``full_steps``
    (repeat, page) pairs stay one per step (their context lengths feed the decode plot); the
    others are summed into one record per (repeat, page) with ``steps`` set, so per-repeat sums
    stay exact. The keys keep their order, then ``records``, ``records_compacted`` and ``other_runs``.
    """
    if timing is None:
        return None
    keep: list[TimingRecord] = []
    summed: dict[tuple[Any, Any], tuple[TimingRecord, float, int, int]] = {}
    seen: dict[tuple[Any, Any], int] = {}
    for r in timing.records:
        if r.stage != "decode_step":
            keep.append(r)
            continue
        key = (r.repeat, r.page)
        place = seen.setdefault(key, len(seen))
        if place < full_steps:
            keep.append(r)
            continue
        first, ms, tokens, steps = summed.get(key) or (r.with_(index=None, ms=0.0, tokens=0, steps=0), 0.0, 0, 0)
        summed[key] = (first, ms + float(r.ms or 0.0), tokens + int(r.tokens or 0), steps + 1)
    records = (
        *keep,
        *(first.with_(ms=ms, tokens=t, steps=n, context_length=None) for first, ms, t, n in summed.values()),
    )
    keys = [k for k in (timing.with_().keys or ()) if k not in ("records", "other_runs")]
    keys += ["records"] + (["records_compacted"] if "records_compacted" not in keys else [])
    others = tuple(c for o in timing.other_runs if (c := compact_timing(o, full_steps)) is not None)
    keys += ["other_runs"] if others else []
    return attrs.evolve(timing, records=records, records_compacted=bool(summed), other_runs=others, keys=tuple(keys))
