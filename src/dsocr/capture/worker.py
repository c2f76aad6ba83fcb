"""The capture worker: the process ``nsys profile`` runs (``python -m dsocr.capture.worker --config FILE``).

1. Everything is prepared before any stage: pages decoded and preprocessed, the model built or
   loaded, inputs moved to the device, prompt ids made (a fixed id sequence of
   ``prompt_tokens`` ids unless the checkpoint ships a tokenizer).
2. Warm-up rounds run every distinct crop grid once per round (vision, prefill and the full
   ``max_new_tokens - 1`` decode steps: every decode context length of the capture is met once, so
   no first-seen shape is paid inside the capture), inside one ``warmup`` range and before the
   capture range opens.
3. The capture range opens once around all repeats (``cudaProfilerStart/Stop``; on the CPU an
   NVTX range ``capture`` in domain ``dsocr``; or none for the unprofiled baseline), optionally
   inside ``emit_nvtx(record_shapes=True)`` (``op_ranges``), with module ranges installed
   (``module_ranges``).
4. Right after it opens, the capture warm-up: ``capture_warmup`` full passes over all pages
   (vision, prefill, the same decode steps) inside one ``warmup`` range, with no stage ranges and
   no records. Under tracing the first pass after the capture range opens runs slower on the host
   (H100, nsys 2025.3.1: every page of the first captured repeat ~33% slower, not so in the
   unprofiled runs); these passes are there to take that cost instead of the first repeat. The
   unprofiled baseline runs them too (the same work).
5. For each repeat and page: ``repeat`` > ``page`` > ``vision`` (``sam``, ``clip``,
   ``projector`` per view: the crops as one batch, then the global view), ``prefill`` (prompt
   embedding, decoder forward, first logits, first token), ``decode`` > ``decode_step`` (greedy
   with KV cache, ``max_new_tokens - 1`` steps; EOS ends the loop only with a real checkpoint).
   With ``batch`` > 1 each of these is one forward of the pages of one crop grid (:func:`bucket_by_grid`);
   with ``decode`` ``graph``/``compile`` the decode steps run the static-cache step
   (:mod:`dsocr.execution.static_decode`), captured or compiled at its first step in the warm-up.
6. With ``op_memory_out`` (``dsocr capture --op-memory``), after the capture range closed: one more
   pass over all pages under the PyTorch profiler with memory recording into ``op_memory.json``
   (:mod:`dsocr.capture.op_memory`; no ranges, no records).
7. ``timing.json`` gets every stage instance's time, tokens, lengths and peak memory.

Errors come out as one line on stderr with the contract's exit codes; CUDA out of memory names
the stage, repeat and page being run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.capture import progress
from dsocr.capture.inputs import InputPage, load_image, load_ref, parse_ref
from dsocr.capture.timing import StageTimer, timing_document, write_timing
from dsocr.capture.worker_config import CAPTURE_CUDA, CAPTURE_NVTX, MODEL_REPLICA, WorkerConfig
from dsocr.capture.worker_ranges import nvtx_range
from dsocr.contract import nvtx_names as names
from dsocr.contract.errors import BadInput, DsocrError, EnvironmentProblem, ExitCode, RunFailed
from dsocr.contract.run_timing import RunTiming
from dsocr.execution.checkpoint_rules import KIND_REPLICA, KIND_VENDOR, ModelPlan, architecture_from_config
from dsocr.execution.preprocess import PreparedImage, preprocess
from dsocr.execution.variants import DECODE_EAGER

#: The fixed prompt ids (no DeepSeek tokenizer offline): BOS, the image, then ``prompt_tokens - 1`` ids.
BOS_ID: Final = 0
PROMPT_TEXT: Final = "<image>\n<|grounding|>Convert the document to markdown."

ASSUMPTIONS_VENDOR: Final = (
    "the checkpoint's own code runs as its infer() does by default (its preprocessing, bf16 images, autocast bf16 "
    "on CUDA, generate with temperature 0, no_repeat_ngram_size 20, use_cache), with --max-new-tokens instead of "
    "infer's 8192 and without infer's text streamer (no tokenizer offline)",
    "stage ranges come from forward hooks: vision runs inside prefill (the first forward of generate); a "
    "decode_step runs from the start of one forward to the start of the next (generate's own work included), "
    "the last one to the return of generate",
)

ASSUMPTIONS_REPLICA: Final = (
    "weights are seeded random values (exact shapes): kernel cost depends on shapes, not values",
    "MoE routing with random weights is close to uniform (trained routing is skewed)",
    "EOS is ignored: every page generates exactly max_new_tokens tokens (1 from prefill, the rest decode steps)",
)


@attrs.frozen
class Prompt:
    """Prompt ids around the image embeddings."""

    ids_before: tuple[int, ...]
    ids_after: tuple[int, ...]
    source: str  #: ``fixed-ids`` or ``tokenizer``
    eos_token_id: int | None = None

    @property
    def tokens(self) -> int:
        """Text tokens of the prompt (without the image embeddings)."""
        return len(self.ids_before) + len(self.ids_after)


def fixed_prompt(prompt_tokens: int, vocab: int) -> Prompt:
    """``prompt_tokens`` fixed ids: BOS before the image, the rest after it (deterministic)."""
    after = tuple((1000 + 37 * i) % vocab for i in range(prompt_tokens - 1))
    return Prompt(ids_before=(BOS_ID,), ids_after=after, source="fixed-ids")


@attrs.define
class PagePlan:
    """One page, prepared."""

    index: int
    page: InputPage
    views: PreparedImage  #: on the device
    prefill_length: int

    def describe(self) -> dict[str, Any]:
        """The page's entry in timing.json."""
        w, h = self.views.grid
        return {
            "index": self.index,
            "name": self.page.name,
            "path": str(self.page.path),
            "width": self.views.source_size[0],
            "height": self.views.source_size[1],
            "grid": [w, h],
            "crops": 0 if (w, h) == (1, 1) else w * h,
            "image_tokens": self.views.image_tokens,
            "vision_tokens": self.views.layout.vision_tokens,
            "prefill_length": self.prefill_length,
        }


def bucket_by_grid(plans: list[PagePlan], batch: int) -> list[list[PagePlan]]:
    """The forwards of one pass: pages grouped by crop grid (grids in order of first appearance, pages in
    order within a grid), each grid's pages cut into forwards of ``batch`` (the last one may hold fewer).
    ``batch`` 1 keeps the pages' own order (one forward per page, as before batching existed)."""
    if batch == 1:
        return [[plan] for plan in plans]
    by_grid: dict[tuple[int, int], list[PagePlan]] = {}
    for plan in plans:
        by_grid.setdefault(plan.views.grid, []).append(plan)
    return [pages[i : i + batch] for pages in by_grid.values() for i in range(0, len(pages), batch)]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise EnvironmentProblem(
            "torch is not installed: the capture worker needs the capture extra (pip install 'dsocr[capture]')"
        ) from exc
    return torch


def load_pages(cfg: WorkerConfig) -> list[tuple[InputPage, Any]]:
    """Decode every page of the config: (page, RGB image)."""
    out: list[tuple[InputPage, Any]] = []
    for entry in cfg.pages:
        if isinstance(entry, dict):
            try:
                page = InputPage.from_json(entry)
            except (KeyError, TypeError, ValueError) as exc:
                raise BadInput(
                    f"worker config page entry {entry!r} is malformed ({exc}): use InputPage.to_json()"
                ) from None
            image = load_image(page)
        else:
            image = load_ref(entry)
            path, pdf_page = parse_ref(entry)
            name = path.name if pdf_page is None else f"{path.name}#{pdf_page}"
            page = InputPage(path=path, name=name, sha256="", width=image.width, height=image.height, pdf_page=pdf_page)
        out.append((page, image))
    return out


def check_environment(cfg: WorkerConfig) -> None:
    """Fail early, with one line, when the device or the op ranges cannot work here."""
    torch = _torch()
    if cfg.is_cuda and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
        raise EnvironmentProblem(
            f"no CUDA device is visible to torch {torch.__version__} ({build} build): "
            "run on a GPU machine, or use --device cpu"
        )
    if cfg.op_ranges and torch.version.cuda is None:
        raise EnvironmentProblem(
            f"--op-ranges needs a CUDA build of torch (emit_nvtx raises 'Torch not compiled with CUDA enabled'), "
            f"but torch {torch.__version__} is CPU-only: drop --op-ranges or install a CUDA build of torch"
        )


class Runner:
    """Runs stages with their NVTX ranges, timing and out-of-memory messages."""

    def __init__(self, cfg: WorkerConfig, model: Any, plans: list[PagePlan], prompt: Prompt) -> None:
        self.cfg = cfg
        self.model = model
        self.plans = plans
        self.prompt = prompt
        self.torch = _torch()
        self.timer = StageTimer(cuda=cfg.is_cuda)
        self.recording = False  #: emit ranges and time stages (off during warm-up)
        #: entered around every stage instance when set, recording or not (the --op-memory pass)
        self.stage_hook: Any = None
        self.what: list[str] = []
        #: the forwards of one pass: pages bucketed by crop grid, ``cfg.batch`` at most per forward
        self.groups = bucket_by_grid(plans, cfg.batch)
        #: static-cache decoders per batch shape (``--decode graph|compile``), else None (the dynamic cache)
        self.static: Any = None
        if cfg.decode != DECODE_EAGER:
            from dsocr.execution.static_decode import StaticDecoders

            self.static = StaticDecoders(model, cfg.max_new_tokens, cfg.decode)
        dev = model.device
        self.ids_before = self.torch.tensor(prompt.ids_before, dtype=self.torch.long, device=dev)
        self.ids_after = self.torch.tensor(prompt.ids_after, dtype=self.torch.long, device=dev)

    def describe_what(self) -> str:
        """What is being run, e.g. ``repeat 1 page 3 prefill (p.png, gundam 2x3 crops)``."""
        return " ".join(self.what) if self.what else "setup"

    @contextlib.contextmanager
    def stage(self, name: str, label: str, payload: int | None = None, **fields: Any) -> Iterator[dict[str, Any]]:
        """One stage instance: NVTX range + timing record when recording; OOM becomes RunFailed.

        Yields the record (a scratch dict when not recording) so the caller can fill in counts.
        """
        self.what.append(label)
        try:
            with contextlib.ExitStack() as stack:
                record: dict[str, Any] = {}
                if self.stage_hook is not None:
                    stack.enter_context(self.stage_hook(name))
                if self.recording:
                    stack.enter_context(nvtx_range(name, payload))
                    record = stack.enter_context(self.timer.stage({"stage": name, **fields}))
                try:
                    yield record
                except self.torch.cuda.OutOfMemoryError:
                    err = RunFailed(
                        f"CUDA out of memory in {self.describe_what()}: use a smaller mode (--mode base or tiny), "
                        "fewer crops (--crops none) or a GPU with more free memory"
                    )
                    err.what = self.describe_what()  # type: ignore[attr-defined]
                    raise err from None
        finally:
            self.what.pop()

    def run_page(self, repeat: int | None, plan: PagePlan, steps: int) -> int:
        """Vision, prefill and ``steps`` decode steps of one page; returns the tokens generated."""
        return self.run_forward(repeat, [plan], steps)

    def run_group(self, repeat: int | None, group: list[PagePlan], steps: int) -> int:
        """One forward of ``group`` (pages of one crop grid): :meth:`run_page` for a single page."""
        if len(group) == 1:
            return self.run_page(repeat, group[0], steps)
        return self.run_forward(repeat, group, steps)

    def run_forward(self, repeat: int | None, group: list[PagePlan], steps: int) -> int:
        """Vision, prefill and ``steps`` decode steps of the pages in ``group`` in one forward (``batch`` of them,
        one crop grid, so one prefill length); returns the tokens generated (all pages')."""
        torch = self.torch
        plan = group[0]
        batch = len(group)
        ctx = {"repeat": repeat, "page": plan.index, "batch": batch}
        views = plan.views
        view_tokens = [views.layout.crop_tokens * batch] if views.crops is not None else []
        view_tokens.append(views.layout.global_tokens * batch)
        counters: dict[str, int] = {}
        grid = "x".join(map(str, views.grid))

        def view_stage(name: str) -> contextlib.AbstractContextManager[dict[str, Any]]:
            i = counters.get(name, 0)
            counters[name] = i + 1
            return self.stage(name, f"{name} (view {i})", index=i, tokens=view_tokens[i], **ctx)

        L = plan.prefill_length
        names_of = plan.page.name if batch == 1 else f"{batch} pages from {plan.page.name}"
        label = f"page {plan.index} ({names_of}, {self.cfg.mode} {grid} crops)"
        static = self.static.get(batch, L) if self.static is not None else None
        generated = 0
        with self.stage(names.PAGE, label, payload=plan.index, **ctx) as page_record:
            with self.stage(names.VISION, "vision", tokens=views.image_tokens * batch, **ctx):
                image_embeds = self.model.encode_batch([p.views for p in group], stage=view_stage)
            with self.stage(names.PREFILL, "prefill", tokens=L * batch, prefill_length=L, context_length=L, **ctx):
                x = self.model.embed_prompts(self.ids_before, image_embeds, self.ids_after)
                if static is not None:
                    static.prefill(x)
                else:
                    logits, past = self.model.prefill(x)
                    token = torch.argmax(logits, dim=-1, keepdim=True)
            generated = 1
            # EOS ends decoding only for one page with the dynamic cache (a batch runs in lockstep, a static
            # step never reads its token on the host)
            eos = self.prompt.eos_token_id if batch == 1 and static is None else None
            with self.stage(names.DECODE, "decode", prefill_length=L, **ctx) as decode_record:
                for t in range(steps):
                    if eos is not None and int(token.item()) == eos:
                        break
                    with self.stage(
                        names.DECODE_STEP,
                        f"decode_step {t}",
                        payload=t,
                        index=t,
                        tokens=batch,
                        prefill_length=L,
                        context_length=L + t + 1,
                        **ctx,
                    ):
                        if static is not None:
                            static.step()
                        else:
                            logits, past = self.model.decode_step(token, past)
                            token = torch.argmax(logits, dim=-1, keepdim=True)
                    generated += 1
                decode_record.update(tokens=(generated - 1) * batch, context_length=L + generated - 1)
            page_record["tokens"] = generated * batch
        return generated * batch

    def warmup(self, rounds: int) -> list[int]:
        """Warm-up rounds (no ranges, no timing): every distinct crop grid once per round."""
        seen: dict[tuple[tuple[int, int], int], list[PagePlan]] = {}
        for group in self.groups:  # every forward shape (crop grid, pages) once
            seen.setdefault((group[0].views.grid, len(group)), group)
        # The whole decode: on the H100 a warm-up of 4 steps left every later step of the first
        # captured page ~3x slower (first-seen context lengths), in the unprofiled pass too.
        steps = self.cfg.max_new_tokens - 1
        self.recording = False
        if rounds:
            with nvtx_range(names.WARMUP):
                for r in range(rounds):
                    self.what.append(f"warm-up round {r}")
                    try:
                        for group in seen.values():
                            self.run_group(None, group, steps)
                    finally:
                        self.what.pop()
            if self.cfg.is_cuda:
                self.torch.cuda.synchronize()
        return [g[0].index for g in seen.values()]

    def capture_warmup(self, passes: int, on_page: Any = None) -> None:
        """``passes`` full passes over all pages in one ``warmup`` range: no stage ranges, no records.

        Run right after the capture range opens, so the tracer's own start-up cost falls on these
        passes and not on the first timed repeat; ends with a device synchronization (CUDA).
        """
        if not passes:
            return
        steps = self.cfg.max_new_tokens - 1
        self.recording = False
        with nvtx_range(names.WARMUP):
            for r in range(passes):
                self.what.append(f"capture warm-up pass {r}")
                try:
                    for group in self.groups:
                        self.run_group(None, group, steps)
                        if on_page is not None:
                            for plan in group:
                                on_page(r, plan.index)
                finally:
                    self.what.pop()
            if self.cfg.is_cuda:
                self.torch.cuda.synchronize()

    def op_memory_pass(self) -> Any:
        """One pass over all pages under the profiler with memory recording (no ranges, no records)."""
        from dsocr.capture.op_memory import measure

        steps = self.cfg.max_new_tokens - 1
        self.recording = False

        def one_pass(marks: Any) -> None:
            self.stage_hook = marks
            self.what.append("op-memory pass")
            try:
                for group in self.groups:
                    self.run_group(None, group, steps)
            finally:
                self.what.pop()
                self.stage_hook = None

        return measure(self.torch, self.cfg.device, one_pass)

    def capture(self, on_page: Any = None) -> None:
        """All repeats x pages, recorded."""
        self.recording = True
        steps = self.cfg.max_new_tokens - 1
        for r in range(self.cfg.repeats):
            with self.stage(names.REPEAT, f"repeat {r}", payload=r, repeat=r):
                for group in self.groups:
                    self.run_group(r, group, steps)
                    if on_page is not None:
                        for plan in group:
                            on_page(r, plan.index)


def _barrier(cfg: WorkerConfig, name: str) -> None:
    """Wait for the capture's other workers (data-parallel captures only)."""
    if cfg.barrier is not None and cfg.workers > 1:
        from dsocr.capture import barrier

        barrier.wait(Path(cfg.barrier), name, cfg.rank, cfg.workers)


@contextlib.contextmanager
def capture_range(cfg: WorkerConfig) -> Iterator[None]:
    """The capture range: cudaProfilerStart/Stop, an NVTX ``capture`` range, or nothing.

    The workers of a data-parallel capture open and close it together (:mod:`dsocr.capture.barrier`).
    """
    if cfg.capture_range == CAPTURE_CUDA:
        torch = _torch()
        torch.cuda.synchronize()
        _barrier(cfg, "open")
        torch.cuda.profiler.start()  # cudaProfilerStart, error-checked
        try:
            yield
        finally:
            torch.cuda.synchronize()
            _barrier(cfg, "close")
            torch.cuda.profiler.stop()
    elif cfg.capture_range == CAPTURE_NVTX:
        _barrier(cfg, "open")
        with nvtx_range(names.CAPTURE):
            try:
                yield
            finally:
                _barrier(cfg, "close")
    else:
        _barrier(cfg, "open")
        try:
            yield
        finally:
            _barrier(cfg, "close")


@contextlib.contextmanager
def op_ranges(cfg: WorkerConfig) -> Iterator[None]:
    """``emit_nvtx(record_shapes=True)`` when ``op_ranges``; EnvironmentProblem when torch cannot."""
    if not cfg.op_ranges:
        yield
        return
    torch = _torch()
    ctx = torch.autograd.profiler.emit_nvtx(record_shapes=True)
    try:
        ctx.__enter__()
    except (RuntimeError, AssertionError) as exc:
        raise EnvironmentProblem(
            f"--op-ranges failed: emit_nvtx raised '{exc}' (torch {torch.__version__}): "
            "it needs a CUDA build of torch; drop --op-ranges or install one"
        ) from None
    try:
        yield
    finally:
        ctx.__exit__(None, None, None)


def model_plan(cfg: WorkerConfig) -> ModelPlan:
    """The checkpoint directory rules applied to the config (:func:`dsocr.execution.checkpoint_rules.plan_model`)."""
    from dsocr.execution.checkpoint_rules import plan_model

    return plan_model(cfg.model, trust_remote_code=cfg.trust_remote_code, random_weights=cfg.random_weights)


def load_model(cfg: WorkerConfig, plan: ModelPlan | None = None) -> Any:
    """The replica; a checkpoint's weights (or its config, random) in the replica; or the checkpoint's own code."""
    plan = plan if plan is not None else model_plan(cfg)
    if plan.kind == KIND_VENDOR:
        from dsocr.execution.vendor import load_vendor

        return load_vendor(plan, device=cfg.device, seed=cfg.seed, attn=cfg.attn_implementation)
    from dsocr.execution.replica import build_replica

    if plan.kind == KIND_REPLICA or plan.random_weights:
        sizes = plan.sizes
        arch = cfg.architecture() if sizes is None else architecture_from_config(sizes)
        replica = build_replica(
            arch,
            device=cfg.device,
            dtype=cfg.dtype,
            seed=cfg.seed,
            attn_implementation=cfg.attn_implementation,
            moe=cfg.moe,
        )
        if sizes is not None:
            replica.eos_token_id = sizes.eos_token_id
        return replica
    from dsocr.execution.checkpoint import load_model as load_checkpoint

    return load_checkpoint(
        plan.directory,
        device=cfg.device,
        dtype=cfg.dtype,
        seed=cfg.seed,
        attn_implementation=cfg.attn_implementation,
        moe=cfg.moe,
    )


def make_prompt(cfg: WorkerConfig, model: Any, plan: ModelPlan | None = None) -> Prompt:
    """Fixed ids for the replica; a checkpoint's own tokenizer when it ships one (EOS then ends decoding)."""
    plan = plan if plan is not None else model_plan(cfg)
    if not plan.source.is_replica:
        from dsocr.execution.tokenizer import load_prompt

        found = load_prompt(plan.directory, PROMPT_TEXT)
        if found is not None:
            eos = found.eos_token_id if found.eos_token_id is not None else model.eos_token_id
            return Prompt(found.ids_before, found.ids_after, "tokenizer", eos)
        return attrs.evolve(fixed_prompt(cfg.prompt_tokens, model.arch.decoder.vocab), eos_token_id=model.eos_token_id)
    return fixed_prompt(cfg.prompt_tokens, model.arch.decoder.vocab)


def model_facts(cfg: WorkerConfig, plan: ModelPlan, model: Any) -> dict[str, Any]:
    """timing.json's ``model``: kind, source, weights, the code that ran, attention, execution."""
    vendor = plan.kind == KIND_VENDOR
    facts: dict[str, Any] = {
        "kind": "remote-code" if vendor else plan.kind,
        "source": cfg.model,
        "directory": None if plan.source.is_replica else str(plan.directory),
        "revision": plan.source.revision,
        "random_weights": plan.random_weights,
        "weights": f"seeded random (seed {cfg.seed})" if plan.random_weights else "checkpoint",
        "code": plan.code_note(),
        "architecture": model.arch.name,
        "parameters": model.parameter_count(),
        "execution": _execution(model),
        "attn_implementation": model.attn_implementation if vendor else cfg.attn_implementation,
    }
    if vendor:
        from dsocr.execution.vendor import NO_REPEAT_NGRAM_SIZE

        facts["vendor_execution"] = (
            f"the checkpoint's generate (greedy, no_repeat_ngram_size={NO_REPEAT_NGRAM_SIZE}, use_cache), "
            f"{model.attn_implementation} attention, autocast bf16 on CUDA, no text streamer"
        )
    return facts


def _execution(model: Any) -> dict[str, str | int] | None:
    """How the replica executes (``moe``, ``attn``, ``autocast``, ``decode``, ``batch``, ``batching``, ``dtype``,
    ``cache``, ``prefill_logits``); None for other models."""
    execution = getattr(model, "execution", None)
    return None if execution is None else {**execution, "prefill_logits": "all"}


def _environment(cfg: WorkerConfig, model: Any) -> dict[str, Any]:
    torch = _torch()
    from dsocr.capture.manifest import package_version

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "transformers": package_version("transformers"),  # None: not installed (the replica needs none)
        "cuda": torch.version.cuda,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "python": sys.version.split()[0],
    }
    if cfg.is_cuda:
        env["device_name"] = torch.cuda.get_device_name(model.device)
    return env


def run(cfg: WorkerConfig, emit_progress: bool | None = None) -> RunTiming:
    """Run the whole worker for ``cfg``; writes ``cfg.timing_out`` and returns its document."""
    say = cfg.progress if emit_progress is None else emit_progress

    def event(name: str, **fields: Any) -> None:
        if say:
            progress.emit(name, **fields)

    event(progress.STARTED, pid=os.getpid())
    check_environment(cfg)
    if cfg.workers > 1:
        from dsocr.capture.worker_ranges import set_category

        set_category(cfg.rank + 1)  # every range of this worker carries its rank + 1 as its NVTX category
    torch = _torch()
    torch.manual_seed(cfg.seed)
    plan = model_plan(cfg)  # the checkpoint directory rules, before anything is loaded
    vendor = plan.kind == KIND_VENDOR
    t0 = time.perf_counter()
    loaded = load_pages(cfg)
    pages = [page for page, _ in loaded]
    prepared = [preprocess(image, cfg.mode, cfg.crops) for _, image in loaded]
    t_inputs = time.perf_counter() - t0
    event(progress.INPUTS_READY, pages=len(pages), repeats=cfg.repeats)

    t0 = time.perf_counter()
    try:
        model = load_model(cfg)
    except torch.cuda.OutOfMemoryError:
        raise RunFailed(
            f"CUDA out of memory while loading the model ({cfg.model}) on {cfg.device}: "
            "free the GPU or use a larger one"
        ) from None
    prompt = make_prompt(cfg, model, plan)
    plans = [
        # the vendor path keeps dsocr's views on the host: they only describe the page (its inputs are its own)
        PagePlan(cfg.page_index(i), p, v if vendor else v.to(model.device, model.dtype), v.image_tokens + prompt.tokens)
        for i, (p, v) in enumerate(zip(pages, prepared, strict=True))
    ]
    inputs = (
        [model.prepare(image, cfg.mode, prompt.ids_before, prompt.ids_after) for _, image in loaded] if vendor else []
    )
    for page_plan, page_inputs in zip(plans, inputs, strict=False):
        if page_inputs.prompt_length != page_plan.prefill_length or page_inputs.grid != page_plan.views.grid:
            raise RunFailed(
                f"page {page_plan.page.name}: the checkpoint's preprocessing gives {page_inputs.prompt_length} prompt "
                f"positions and crop grid {page_inputs.grid}, dsocr's {page_plan.prefill_length} and "
                f"{page_plan.views.grid}: please report this with the page"
            )
    if cfg.is_cuda:
        torch.cuda.synchronize()
    t_model = time.perf_counter() - t0
    event(progress.MODEL_READY, seconds=round(t_model, 3), warmup=cfg.warmup)

    if not vendor:  # the variant, recorded in timing.json's model.execution
        model.decode, model.batch = cfg.decode, cfg.batch
        if cfg.decode != DECODE_EAGER:
            model.cache = f"static:{max(p.prefill_length for p in plans) + cfg.max_new_tokens}"
    runner: Runner
    if vendor:
        from dsocr.capture.vendor_ranges import VendorRunner

        runner = VendorRunner(cfg, model, plans, prompt, inputs)
    else:
        runner = Runner(cfg, model, plans, prompt)
    interrupted = False
    hooks = None
    t_warm = t_capture = t_open = t_close = t_cwarm = t_op_memory = 0.0
    # the checkpoint's infer runs under no_grad; dsocr's replica under inference_mode
    with torch.no_grad() if vendor else torch.inference_mode():
        t0 = time.perf_counter()
        warm_pages = runner.warmup(cfg.warmup)
        t_warm = time.perf_counter() - t0
        event(progress.WARMUP_DONE, rounds=cfg.warmup)
        if cfg.module_ranges:
            from dsocr.capture.module_ranges import install

            hooks = install(model.module_paths())
        try:
            t0 = time.perf_counter()
            with op_ranges(cfg), capture_range(cfg):
                t_open = time.perf_counter() - t0
                event(progress.CAPTURE_START, capture_warmup=cfg.capture_warmup)
                t1 = time.perf_counter()
                runner.capture_warmup(cfg.capture_warmup, lambda r, p: event(progress.PAGE_DONE, warmup=r, page=p))
                t2 = time.perf_counter()
                t_cwarm = t2 - t1 if cfg.capture_warmup else 0.0
                if cfg.capture_warmup:
                    event(progress.CAPTURE_WARMUP_DONE, rounds=cfg.capture_warmup, seconds=round(t_cwarm, 3))
                runner.capture(lambda r, p: event(progress.PAGE_DONE, repeat=r, page=p))
                t3 = time.perf_counter()
            t_close = time.perf_counter() - t3
            t_capture = time.perf_counter() - t2
            event(progress.CAPTURE_END)
            if cfg.op_memory_out is not None:
                t0 = time.perf_counter()
                runner.op_memory_pass().write(Path(cfg.op_memory_out))
                t_op_memory = time.perf_counter() - t0
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if hooks is not None:
                hooks.remove()
    assumptions = list(ASSUMPTIONS_REPLICA) if cfg.model == MODEL_REPLICA else []
    if plan.random_weights and cfg.model != MODEL_REPLICA:
        assumptions.append(
            f"weights are seeded random values (seed {cfg.seed}, --random-weights) in the checkpoint's shapes: "
            "kernel cost depends on shapes, not values; routing and stopping do not"
        )
    if vendor:
        assumptions += list(ASSUMPTIONS_VENDOR)
    elif cfg.model != MODEL_REPLICA:
        assumptions.append(f"the checkpoint's weights run in dsocr's replica: {plan.code_note()}")
    if prompt.source == "fixed-ids":
        assumptions.append(
            f"prompt: a fixed sequence of {prompt.tokens} token ids (BOS before the image, the rest after it) "
            "stands for the vendor prompt (no DeepSeek tokenizer offline)"
        )
    execution = _execution(model)
    if execution is not None:
        assumptions.append(
            f"execution: MoE {execution['moe']}, decoder attention {execution['attn']}, "
            f"autocast {execution['autocast']}; prefill computes lm_head over every prompt position in float32 "
            "(as the vendor's forward does)"
        )
    else:
        assumptions.append("prefill computes lm_head on the last position only (as transformers' generate does)")
    if cfg.batch > 1:
        assumptions.append(
            f"batch {cfg.batch}: pages of one crop grid run in one forward (vision on the stacked views, prefill on "
            "(B, L, hidden), decode steps in lockstep); a grid with fewer pages runs a smaller batch; a record's "
            "page is the forward's first page, its batch the pages it held, its tokens all pages' tokens"
        )
    if cfg.decode != DECODE_EAGER:
        assumptions.append(
            f"decode {cfg.decode}: a static KV cache of prefill length + max_new_tokens positions per forward shape, "
            "every step attends over the whole cache (masked after its position); prefill eager; EOS does not "
            "end decoding"
        )
    static_setup: dict[str, Any] = {}
    if runner.static is not None:
        key = "graph_capture_s" if cfg.decode == "graph" else "compile_s"
        static_setup = {key: runner.static.setup_s, "static_cache_lengths": runner.static.cache_lengths()}
    page_entries = [p.describe() for p in plans]
    place = {id(p): i for i, p in enumerate(plans)}
    for forward, group in enumerate(runner.groups):
        for member in group:
            entry = page_entries[place[id(member)]]
            if cfg.batch > 1:
                entry["forward"] = forward
            if runner.static is not None:
                entry["cache_length"] = member.prefill_length + cfg.max_new_tokens
    doc = timing_document(
        clock=runner.timer.clock,
        records=runner.timer.records(),
        config=cfg.to_dict(),
        model={**model_facts(cfg, plan, model), "module_ranges": list(hooks.paths) if hooks is not None else []},
        prompt={
            "source": prompt.source,
            "tokens": prompt.tokens,
            "ids_before": list(prompt.ids_before),
            "ids_after": list(prompt.ids_after),
            "eos_token_id": prompt.eos_token_id,
        },
        pages=page_entries,
        environment=_environment(cfg, model),
        setup={
            "inputs_s": t_inputs,
            "model_s": t_model,
            "warmup_s": t_warm,
            "warmup_rounds": cfg.warmup,
            "warmup_pages": warm_pages,
            "capture_open_s": t_open,
            "capture_warmup_rounds": cfg.capture_warmup,
            "capture_warmup_s": t_cwarm,
            "capture_wall_s": t_capture,
            "capture_close_s": t_close,
            **({"op_memory_s": t_op_memory} if cfg.op_memory_out is not None else {}),
            **static_setup,
        },
        assumptions=assumptions,
        interrupted=interrupted,
    )
    write_timing(Path(cfg.timing_out), doc)
    if interrupted:
        raise KeyboardInterrupt
    event(progress.FINISHED, timing=cfg.timing_out)
    return doc


def main(argv: list[str] | None = None) -> int:
    """``python -m dsocr.capture.worker --config FILE``: one line per error, the contract's exit codes."""
    parser = argparse.ArgumentParser(prog="python -m dsocr.capture.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="RUN_CONFIG.json written by the driver")
    args = parser.parse_args(argv)
    try:
        cfg = WorkerConfig.read(args.config)
        run(cfg)
        return int(ExitCode.OK)
    except DsocrError as exc:
        kind = progress.KIND_OOM if "out of memory" in exc.message else progress.KIND_ERROR
        progress.emit(progress.FAILED, kind=kind, what=getattr(exc, "what", "setup"), message=exc.message)
        print(f"dsocr worker: error: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("dsocr worker: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: keep the traceback for the driver's log
        progress.emit(progress.FAILED, kind=progress.KIND_ERROR, what="worker", message=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
