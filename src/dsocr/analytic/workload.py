"""A workload (mode, crops, prompt, new tokens, batch, dtype, decode context) and its estimate per stage.

``estimate(workload)`` composes the domain modules into the three stages the capture times:
``vision`` (per view group: SAM, CLIP, projector; crops run as one batch, then the global
view, as the replica does), ``prefill`` (the decoder over image embeddings + prompt tokens,
causal, then ``lm_head`` on the last position) and ``decode`` (``new_tokens - 1`` greedy steps,
each one position attending to its context, summed exactly over the steps).
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

from dsocr.analytic import layers
from dsocr.analytic.cost import Cost
from dsocr.analytic.primitives import AttnImpl
from dsocr.analytic.tree import Module, affine_sum, merge_modules, total_of
from dsocr.contract import module_paths as mp
from dsocr.contract.errors import BadInput
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture
from dsocr.model.modes import (
    DEFAULT_MODE,
    NO_CROPS,
    TokenLayout,
    check_grid,
    get_mode,
    image_token_layout,
    select_crop_grid,
)

#: Bytes per element of the dtypes the model can run in.
DTYPE_BYTES: Final[dict[str, int]] = {
    "bf16": 2,
    "bfloat16": 2,
    "fp16": 2,
    "float16": 2,
    "fp32": 4,
    "float32": 4,
}
STAGE_NAMES: Final = ("vision", "prefill", "decode")
#: The vision parts (the NVTX stage names ``sam``, ``clip``, ``projector``) -> module paths.
VISION_PARTS: Final[dict[str, str]] = {"sam": mp.SAM, "clip": mp.CLIP, "projector": mp.PROJECTOR}


@attrs.frozen
class ContextMode:
    """How long the context of each decode step is.

    ``auto``: its real length (``prefill + i`` at step ``i``, what the capture measures); ``max``: the
    final length (``prefill + steps``) at every step, an upper bound for the same run; ``fixed:N``: N at
    every step (``fixed:8192`` is the model's whole window).
    """

    kind: Literal["auto", "max", "fixed"] = "auto"
    tokens: int | None = None  #: the fixed context for ``fixed``

    def __str__(self) -> str:
        return f"fixed:{self.tokens}" if self.kind == "fixed" else self.kind


def parse_context(text: str, window: int = DEEPSEEK_OCR.decoder.max_positions) -> ContextMode:
    """Parse ``auto``, ``max`` or ``fixed:N`` (``0 < N <= window``, the model's positions)."""
    t = text.strip().lower()
    if t in ("auto", "max"):
        return ContextMode(t)  # type: ignore[arg-type]
    if t.startswith("fixed:") and t[6:].isdigit() and int(t[6:]) > window:
        raise BadInput(
            f"decode context {text!r} exceeds the model's {window}-position window: use fixed:N with N <= {window}"
        )
    if t.startswith("fixed:") and t[6:].isdigit() and int(t[6:]) > 0:
        return ContextMode("fixed", int(t[6:]))
    raise BadInput(f"decode context {text!r} is not understood: use auto, max or fixed:N with N > 0 (e.g. fixed:4096)")


@attrs.frozen
class Workload:
    """What one page costs: mode and crop grid, prompt, generated tokens, batch, dtype, decode context."""

    mode: str = DEFAULT_MODE
    crop_grid: tuple[int, int] = NO_CROPS
    prompt_tokens: int = 12
    new_tokens: int = 128
    batch: int = 1
    dtype: str = "bf16"
    context: ContextMode = ContextMode()
    attn_impl: AttnImpl = "sdpa"
    prefill_logits: Literal["last", "all"] = "last"  #: lm_head on the last prefill position (replica) or all
    image_size: tuple[int, int] | None = None  #: the image the grid was chosen for, if any

    @classmethod
    def for_image(cls, width: int, height: int, mode: str = DEFAULT_MODE, **kwargs: object) -> Workload:
        """A workload whose crop grid is what the vendor's preprocessing picks for a ``width x height`` image."""
        grid = select_crop_grid(width, height, mode)
        return cls(mode=mode, crop_grid=grid, image_size=(width, height), **kwargs)  # type: ignore[arg-type]

    def validated(self, arch: Architecture = DEEPSEEK_OCR) -> Workload:
        """Check every field (one-line BadInput naming the bad value); returns the workload normalized."""
        m = get_mode(self.mode)
        grid = check_grid(m, self.crop_grid)
        if self.dtype.lower() not in DTYPE_BYTES:
            raise BadInput(f"dtype {self.dtype!r} is unknown: use one of bf16, fp16, fp32")
        for name, value, least in (("prompt tokens", self.prompt_tokens, 0), ("new tokens", self.new_tokens, 1)):
            if value < least:
                raise BadInput(f"{name} = {value} is out of range: give at least {least}")
        if self.batch < 1:
            raise BadInput(f"batch = {self.batch} is out of range: give at least 1")
        if self.attn_impl not in ("sdpa", "eager"):
            raise BadInput(f"attention implementation {self.attn_impl!r} is unknown: use sdpa or eager")
        out = attrs.evolve(self, mode=m.name, crop_grid=grid, dtype=self.dtype.lower())
        window = arch.decoder.max_positions
        if out.prefill_length > window:
            raise BadInput(
                f"prefill length {out.prefill_length} exceeds the model's {window}-position window: "
                "use fewer prompt tokens or a mode with fewer image tokens"
            )
        if out.context.kind == "auto" and out.prefill_length + out.decode_steps > window:
            raise BadInput(
                f"prefill {out.prefill_length} + {out.decode_steps} decode steps exceeds the model's {window}-position "
                "window: use fewer new tokens or --context fixed:N"
            )
        return out

    @property
    def bytes_per_element(self) -> int:
        """Bytes per element of ``dtype``."""
        return DTYPE_BYTES[self.dtype.lower()]

    @property
    def layout(self) -> TokenLayout:
        """Image embeddings of one image (global, crops, newlines, separator)."""
        return image_token_layout(self.mode, self.crop_grid)

    @property
    def image_embeddings(self) -> int:
        """Image embeddings per sequence."""
        return self.layout.total

    @property
    def prefill_length(self) -> int:
        """Prefill positions per sequence: image embeddings + prompt tokens."""
        return self.image_embeddings + self.prompt_tokens

    @property
    def decode_steps(self) -> int:
        """Decode steps: the first new token comes from prefill."""
        return self.new_tokens - 1

    def decode_contexts(self, window: int) -> tuple[int, int, int]:
        """(first, last, sum) of the context lengths the decode steps attend to (0s when no steps)."""
        n = self.decode_steps
        if n == 0:
            return 0, 0, 0
        first, last = self.prefill_length + 1, self.prefill_length + n
        if self.context.kind == "auto":
            return first, last, n * self.prefill_length + n * (n + 1) // 2
        c = last if self.context.kind == "max" else int(self.context.tokens or window)
        return c, c, n * c

    def views(self) -> tuple[tuple[str, int, int], ...]:
        """(kind, view size, views per image) groups in the order the replica runs them."""
        m = get_mode(self.mode)
        w, h = self.crop_grid
        groups: list[tuple[str, int, int]] = []
        if (w, h) != NO_CROPS and m.crop_size is not None:
            groups.append(("crop", m.crop_size, w * h))
        groups.append(("global", m.global_size, 1))
        return tuple(groups)


@attrs.frozen
class ViewEstimate:
    """One view group of the vision stage (all crops run as one batch; the global view alone)."""

    kind: str
    size: int  #: pixels per side
    count: int  #: views of this kind per image
    tokens: int  #: vision tokens per view after the compressor
    sam: Cost
    clip: Cost
    projector: Cost

    @property
    def total(self) -> Cost:
        """SAM + CLIP + projector of this group."""
        return self.sam + self.clip + self.projector


@attrs.frozen
class StageEstimate:
    """One stage's top-level modules (``vision.sam``/``clip``/``projector``, or ``decoder`` and ``lm_head``)."""

    name: str
    modules: tuple[Module, ...]

    @property
    def cost(self) -> Cost:
        """The stage's total cost."""
        return total_of(self.modules)

    def module(self, path: str) -> Module | None:
        """The module at ``path`` in this stage, if it runs here."""
        for top in self.modules:
            for m in top.walk():
                if m.path == path:
                    return m
        return None


@attrs.frozen
class ModelEstimate:
    """The analytic model's answer for one workload."""

    workload: Workload
    arch: Architecture
    stages: tuple[StageEstimate, ...]
    views: tuple[ViewEstimate, ...]
    decode_context: tuple[int, int, int]  #: (first, last, sum) over decode steps

    def stage(self, name: str) -> StageEstimate:
        """The stage called ``name`` (vision, prefill, decode)."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def params(self) -> int:
        """Parameters of the whole model (vision + decoder + lm_head), each counted once."""
        return self.stage("vision").cost.params + self.stage("prefill").cost.params

    @property
    def weight_footprint_bytes(self) -> int:
        """Memory the weights occupy in the workload's dtype (a footprint; ``Cost.weight_read_bytes`` is traffic)."""
        return self.params * self.workload.bytes_per_element

    @property
    def kv_cache_bytes(self) -> int:
        """KV cache at its largest (after the last decode step), all sequences."""
        d = self.arch.decoder
        w = self.workload
        positions = w.prefill_length + w.decode_steps
        if w.context.kind != "auto" and w.decode_steps:
            positions = self.decode_context[1]
        return 2 * d.layers * w.batch * d.kv_heads * d.head_dim * positions * w.bytes_per_element

    @property
    def peak_activation_bytes(self) -> int:
        """The largest activation working set of any operation (a lower bound on peak activation memory)."""
        return max((s.cost.act_bytes for s in self.stages), default=0)

    @property
    def total(self) -> Cost:
        """All stages together; parameters counted once (prefill and decode run the same decoder weights)."""
        total = Cost()
        for s in self.stages:
            total = total + s.cost
        return attrs.evolve(total, params=self.params)

    def vision_part(self, part: str) -> Cost:
        """Cost of one vision part (``sam``, ``clip`` or ``projector``)."""
        m = self.stage("vision").module(VISION_PARTS[part])
        return m.total() if m is not None else Cost()


def _vision(arch: Architecture, w: Workload, b: int) -> tuple[StageEstimate, tuple[ViewEstimate, ...]]:
    tops: list[Module] = []
    views: list[ViewEstimate] = []
    for kind, size, count in w.views():
        rows = w.batch * count
        side = layers.sam_output_side(arch.sam, size)
        s = layers.sam(arch.sam, size, rows, b=b, impl=w.attn_impl)
        c = layers.clip(arch.clip, side, rows, b=b, impl=w.attn_impl)
        pr = layers.projector(arch.projector, side, rows, b=b)
        if kind == "global":
            lay = layers.layout(arch.decoder.hidden, w.image_embeddings, w.batch, b=b)
            pr = attrs.evolve(pr, ops=(*pr.ops, lay))
        views.append(ViewEstimate(kind, size, count, side * side, s.total(), c.total(), pr.total()))
        tops += [s, c, pr]
    return StageEstimate("vision", merge_modules(tops)), tuple(views)


def _prefill(arch: Architecture, w: Workload, b: int) -> StageEstimate:
    d = arch.decoder
    ps = layers.Pass(w.batch, w.prefill_length, w.prefill_length, decode=False)
    dec = layers.decoder(d, ps, b=b, impl=w.attn_impl, looked_up=w.prompt_tokens, merged=w.image_embeddings)
    rows = w.batch if w.prefill_logits == "last" else ps.tokens
    return StageEstimate("prefill", (dec, layers.lm_head(d, rows, b=b)))


def _decode(arch: Architecture, w: Workload, b: int, contexts: tuple[int, int, int]) -> StageEstimate:
    n = w.decode_steps
    if n == 0:
        return StageEstimate("decode", ())
    d = arch.decoder
    first, last, total = contexts

    def step(c: int) -> tuple[Module, Module]:
        ps = layers.Pass(w.batch, 1, c, decode=True)
        return layers.decoder(d, ps, b=b, impl=w.attn_impl), layers.lm_head(d, w.batch, b=b)

    at0, at1, atmax = step(first), step(first + 1), step(last)
    extra = total - n * first
    mods = tuple(affine_sum(m0, m1, mm, n, extra, last - first) for m0, m1, mm in zip(at0, at1, atmax, strict=True))
    return StageEstimate("decode", mods)


def estimate(workload: Workload, arch: Architecture = DEEPSEEK_OCR) -> ModelEstimate:
    """FLOPs, bytes, parameters and memory of ``workload`` per stage and module."""
    w = workload.validated(arch)
    b = w.bytes_per_element
    contexts = w.decode_contexts(arch.decoder.max_positions)
    vision, views = _vision(arch, w, b)
    stages = (vision, _prefill(arch, w, b), _decode(arch, w, b, contexts))
    return ModelEstimate(w, arch, stages, views, contexts)
