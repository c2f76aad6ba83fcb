"""The analytic workload of an analyzed trace: from a run directory's files, or from flags.

A dsocr run directory says everything the analytic model needs: ``timing.json`` lists the
pages of one pass (image size and crop grid each), the mode, the prompt tokens, the new
tokens and the dtype. A foreign trace needs flags (``--mode/--crops/--prompt-tokens/
--max-new-tokens``, or ``--prefill-tokens`` for a decoder-only trace without vision).
Without either, :func:`workloads_for` says why no MFU can be given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.analytic.workload import ContextMode, Workload
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, BadUsage
from dsocr.contract.rundocs import read_doc
from dsocr.model.modes import NO_CROPS, TokenLayout, get_mode, parse_grid

#: Decode steps of a decoder-only workload default to this many new tokens.
DEFAULT_NEW_TOKENS: Final = 128


@attrs.frozen
class RunFiles:
    """The JSON documents of a dsocr run directory (``None`` where absent or unusable)."""

    directory: Path
    manifest: dict[str, Any] | None
    timing: dict[str, Any] | None
    baseline: dict[str, Any] | None  #: timing-baseline.json, the other unprofiled runs in ``other_runs``
    #: one line per file that is there but unusable (corrupt JSON, not a regular file): never dropped silently
    problems: tuple[str, ...] = ()

    @property
    def is_run(self) -> bool:
        """Whether this is a dsocr run directory (manifest or timing present, or there but corrupt)."""
        return self.manifest is not None or self.timing is not None or bool(self.problems)

    def warnings(self) -> list[str]:
        """One warning line per unusable file: which file, what is wrong, what the report lacks."""
        return [
            f"{problem}: left out, so the report lacks what it gives (settings, workload for MFU/MBU, unprofiled "
            "timings); restore the file or recapture"
            for problem in self.problems
        ]


class _Reader:
    """Reads a run directory's JSON files, keeping one line per unusable one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, path: Path) -> dict[str, Any] | None:
        doc, problem = read_doc(path)
        if problem is not None:
            self.problems.append(problem)
        return doc


def _read_json(path: Path) -> dict[str, Any] | None:
    return read_doc(path)[0]


def _baseline_k(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


def with_other_runs(
    directory: Path, baseline: dict[str, Any] | None, read: Callable[[Path], dict[str, Any] | None] = _read_json
) -> dict[str, Any] | None:
    """The baseline document with the run directory's other unprofiled runs in ``other_runs``.

    ``--baseline-runs`` 2 or more leaves ``timing-baseline-<k>.json`` beside ``timing-baseline.json``;
    each joins ``other_runs`` (ordered by k) with its ``file`` name. Without ``timing-baseline.json``
    the first of them stands in. A one-baseline run directory gives its baseline unchanged.
    """
    paths = sorted(directory.glob(rundir.TIMING_BASELINE_GLOB), key=lambda p: (_baseline_k(p), p.name))
    others = [{**doc, "file": p.name} for p in paths if (doc := read(p)) is not None]
    if baseline is None and others:
        baseline, others = others[0], others[1:]
    if baseline is None or not others:
        return baseline
    return {**baseline, "other_runs": others}


def run_files(given: Path) -> RunFiles | None:
    """The run files beside a trace given on the command line (a run directory or a file in one)."""
    directory = given if given.is_dir() else given.parent
    read = _Reader()
    manifest = read(directory / rundir.MANIFEST)
    timing = read(directory / rundir.TIMING)
    baseline = with_other_runs(directory, read(directory / rundir.TIMING_BASELINE), read)
    files = RunFiles(directory, manifest, timing, baseline, tuple(read.problems))
    return files if files.is_run else None


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


def _dtype(timing: Mapping[str, Any]) -> str:
    env = timing.get("environment") or {}
    cfg = timing.get("config") or {}
    for value in (env.get("dtype"), cfg.get("dtype")):
        if isinstance(value, str) and value.lower() not in ("auto", ""):
            return value.lower()
    return "bf16"


def from_timing(timing: Mapping[str, Any], flags: WorkloadFlags | None = None) -> RunWorkload:
    """Per-page workloads of a dsocr run's ``timing.json`` (flags given explicitly override it)."""
    f = flags or WorkloadFlags()
    cfg = timing.get("config") or {}
    prompt = timing.get("prompt") or {}
    pages = timing.get("pages") or []
    mode = str(f.mode or cfg.get("mode") or "gundam")
    prompt_tokens = f.prompt_tokens if f.prompt_tokens is not None else prompt.get("tokens", cfg.get("prompt_tokens"))
    new_tokens = f.max_new_tokens if f.max_new_tokens is not None else cfg.get("max_new_tokens")
    if not isinstance(prompt_tokens, int) or not isinstance(new_tokens, int):
        raise BadInput(
            "timing.json: no prompt tokens or max_new_tokens in its config; give --prompt-tokens and --max-new-tokens"
        )
    common: dict[str, Any] = {
        "mode": mode,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "dtype": _dtype(timing),
        "attn_impl": str(cfg.get("attn_implementation") or "sdpa"),
        "context": f.context,
    }
    execution = (timing.get("model") or {}).get("execution")
    if isinstance(execution, Mapping):  # the replica from issue 10 on: the vendor's lm_head, SDPA in vision
        common["attn_impl"] = str(execution.get("attn") or common["attn_impl"])
        common["vision_attn_impl"] = "sdpa"
        if execution.get("prefill_logits") in ("last", "all"):
            common["prefill_logits"] = execution["prefill_logits"]
    record: Mapping[str, Any] = execution if isinstance(execution, Mapping) else {}
    static = str(record.get("cache") or "").startswith("static")
    out: list[Workload] = []
    names: list[str] = []
    for i, p in enumerate(pages):
        grid = p.get("grid") if f.crops is None else list(parse_grid(f.crops))
        size = (int(p["width"]), int(p["height"])) if p.get("width") and p.get("height") else None
        page_common = dict(common)
        if static and f.context.kind == "auto":  # every step attends over the page's whole static cache
            page_common["context"] = ContextMode("fixed", _cache_length(p, new_tokens, record))
        if isinstance(grid, list) and len(grid) == 2 and f.mode is None:
            out.append(Workload(crop_grid=(int(grid[0]), int(grid[1])), image_size=size, **page_common))
        elif size is not None and f.crops is None:
            out.append(Workload.for_image(*size, **page_common))
        else:
            out.append(Workload(crop_grid=_default_grid(mode, f.crops), image_size=size, **page_common))
        names.append(str(p.get("name") or f"page {i}"))
    if not out:
        raise BadInput("timing.json: lists no pages; give the workload with --mode/--crops")
    batch = record.get("batch")
    if isinstance(batch, int) and batch > 1:
        return _batched(out, names, pages, batch)
    return RunWorkload(tuple(w.validated() for w in out), tuple(names), "run")


def _cache_length(page: Mapping[str, Any], new_tokens: int, execution: Mapping[str, Any]) -> int:
    """A static-cache page's cache length: its ``cache_length``, else prefill length + new tokens, else the
    ``static:N`` of the execution record."""
    if isinstance(page.get("cache_length"), int):
        return int(page["cache_length"])
    if isinstance(page.get("prefill_length"), int):
        return int(page["prefill_length"]) + new_tokens
    _, _, n = str(execution.get("cache")).partition(":")
    if n.isdigit():
        return int(n)
    raise BadInput("timing.json: a static-cache run without cache lengths; give --context fixed:N")


def _batched(out: list[Workload], names: list[str], pages: Sequence[Mapping[str, Any]], batch: int) -> RunWorkload:
    """One workload per forward of a ``batch`` run (batch = the pages it held): the pages' ``forward`` indices,
    or (older records) the worker's rule: bucketed by crop grid in order of first appearance, ``batch`` per forward."""
    groups: dict[Any, list[int]] = {}
    if all(isinstance(p.get("forward"), int) for p in pages):
        for i, p in enumerate(pages):
            groups.setdefault(p["forward"], []).append(i)
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
    if files is not None and files.timing is not None and files.timing.get("pages"):
        return from_timing(files.timing, flags), None
    if flags.given:
        return from_flags(flags, pages_per_pass), None
    return None, (
        "no workload: the trace is not in a dsocr run directory (no timing.json beside it); give "
        "--mode/--crops/--prompt-tokens/--max-new-tokens (or --prefill-tokens N for a decoder-only trace) for MFU"
    )


def compact_timing(timing: Mapping[str, Any] | None, full_steps: int = 1) -> dict[str, Any] | None:
    """A timing document with its ``records`` made compact for analysis.json.

    Every record is kept except ``decode_step`` ones: those of the first ``full_steps``
    (repeat, page) pairs stay one per step (their context lengths feed the decode plot); the
    others are summed into one record per (repeat, page) with ``steps`` set, so per-repeat sums
    stay exact.
    """
    if timing is None:
        return None
    records: Sequence[Mapping[str, Any]] = timing.get("records") or []
    keep: list[dict[str, Any]] = []
    summed: dict[tuple[Any, Any], dict[str, Any]] = {}
    seen: list[tuple[Any, Any]] = []
    for r in records:
        if r.get("stage") != "decode_step":
            keep.append(dict(r))
            continue
        key = (r.get("repeat"), r.get("page"))
        if key not in seen:
            seen.append(key)
        if seen.index(key) < full_steps:
            keep.append(dict(r))
            continue
        agg = summed.setdefault(key, {**dict(r), "index": None, "ms": 0.0, "tokens": 0, "steps": 0})
        agg["ms"] += float(r.get("ms") or 0.0)
        agg["tokens"] += int(r.get("tokens") or 0)
        agg["steps"] += 1
        agg["context_length"] = None
    out = {k: v for k, v in timing.items() if k not in ("records", "other_runs")}
    out["records"] = keep + list(summed.values())
    out["records_compacted"] = bool(summed)
    others = timing.get("other_runs")
    if isinstance(others, list) and others:
        out["other_runs"] = [compact_timing(o, full_steps) for o in others if isinstance(o, Mapping)]
    return out
