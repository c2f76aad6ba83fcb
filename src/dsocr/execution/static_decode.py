"""Static-cache decode for the replica: a fixed-length KV cache and a decode step without host syncs or shape changes.

``--decode graph|compile`` (:data:`DECODE_MODES`) replaces the dynamic, concatenating
:class:`~dsocr.execution.replica_decoder.KVCache` by a :class:`StaticKVCache` of ``N`` positions
per layer (``N = prefill length + max_new_tokens``, per batch; preallocated once per batch shape
``(B, N)`` and reused for every page of that shape). Prefill stays eager: it writes its ``L``
keys and values into positions ``0..L-1`` and attends over those only, exactly as the dynamic
cache does. A decode step (:meth:`StaticDecoder.step`):

- takes its token ``(B, 1)`` and position ``(1,)`` from device tensors (``token``, ``position``),
- writes the step's keys and values at ``position`` (``index_copy_``),
- attends over the WHOLE cache with an additive mask built on the device from ``position``
  (0 where ``j <= position``, the dtype's minimum elsewhere),
- takes the greedy token on the device (``argmax``), writes it into ``token`` and into the
  ``tokens`` buffer ``(B, max_new_tokens)`` at ``position - L + 1``, and increments ``position``.

So every step has the same shapes and the same tensor addresses, and nothing reads a value on
the host: ``graph`` captures one step into a ``torch.cuda.CUDAGraph`` (after warm-up steps on
a side stream, as torch's documentation says) and replays it for every step; ``compile`` runs
the same step through ``torch.compile(mode="reduce-overhead")``. ``eager`` runs it uncaptured,
which is what the CPU tests compare with the dynamic cache. Generated tokens stay on the device
in ``tokens``; the caller copies them to the host once, when it needs them (the capture never does).
Both captured modes need ``moe="grouped"`` (the loop copies token counts to the host in every MoE
layer) and CUDA (:func:`check_decode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import torch

from dsocr.execution.variants import DECODE_COMPILE, DECODE_EAGER, DECODE_GRAPH, DECODE_MODES, check_decode

if TYPE_CHECKING:
    from dsocr.execution.replica import Replica

__all__ = ["DECODE_COMPILE", "DECODE_EAGER", "DECODE_GRAPH", "DECODE_MODES", "StaticDecoder", "StaticDecoders"]
__all__ += ["StaticKVCache", "check_decode", "static_mask"]

#: Warm-up steps on the side stream before the graph is captured (torch's documentation uses 3; 11 with DDP).
GRAPH_WARMUP_STEPS: Final = 3


def static_mask(position: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``(1, 1, 1, length)`` on ``position``'s device: 0 at ``j <= position``, ``finfo.min`` after."""
    j = torch.arange(length, device=position.device)
    blocked = j > position.reshape(1)
    zero = torch.zeros((), dtype=dtype, device=position.device)
    return torch.where(blocked, torch.finfo(dtype).min, zero).to(dtype).reshape(1, 1, 1, length)


@attrs.define(eq=False)
class StaticKVCache:
    """Keys and values of every layer in preallocated ``(B, kv_heads, N, d)`` buffers.

    Prefill (``position`` None) copies its ``L`` positions to ``0..L-1`` and returns them; a
    static decode step (``position`` set, a ``(1,)`` long device tensor) writes one position
    with ``index_copy_`` and returns the whole buffers (the step's mask hides positions after it).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    filled: int = 0  #: positions written by prefill (host int; decode steps do not change it)
    position: torch.Tensor | None = None  #: set during a static decode step

    @classmethod
    def allocate(
        cls, layers: int, batch: int, kv_heads: int, length: int, head_dim: int, dtype: torch.dtype, device: Any
    ) -> StaticKVCache:
        """Zeroed buffers for ``layers`` layers of ``length`` positions."""
        shape = (batch, kv_heads, length, head_dim)
        keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        return cls(keys, values)

    @property
    def length(self) -> int:
        """Positions per layer (``N``)."""
        return int(self.keys[0].shape[-2])

    def get_seq_length(self, layer: int = 0) -> int:
        """Positions written by prefill (the dynamic cache's meaning, for the prefill forward)."""
        return self.filled

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward's keys and values of ``layer``; return what attention reads."""
        k_buf, v_buf = self.keys[layer], self.values[layer]
        if self.position is not None:
            k_buf.index_copy_(2, self.position, key.to(k_buf.dtype))
            v_buf.index_copy_(2, self.position, value.to(v_buf.dtype))
            return k_buf, v_buf
        start, end = self.filled, self.filled + key.shape[-2]
        if end > self.length:
            raise ValueError(f"static cache of {self.length} positions cannot hold {end}")
        k_buf[:, :, start:end].copy_(key)
        v_buf[:, :, start:end].copy_(value)
        if layer == len(self.keys) - 1:
            self.filled = end
        return k_buf[:, :, :end], v_buf[:, :, :end]


@attrs.define(eq=False)
class StaticDecoder:
    """One batch shape's static cache, its device inputs and the (captured or compiled) decode step."""

    replica: Replica
    cache: StaticKVCache
    prefill_length: int
    max_new_tokens: int
    mode: str = DECODE_EAGER
    token: torch.Tensor = attrs.field(default=None)  #: ``(B, 1)`` long: the step's input token
    position: torch.Tensor = attrs.field(default=None)  #: ``(1,)`` long: the step's position
    tokens: torch.Tensor = attrs.field(default=None)  #: ``(B, max_new_tokens)`` long: generated ids
    logits: torch.Tensor | None = None  #: the last step's float32 logits ``(B, vocab)`` (eager/graph)
    graph: Any = None  #: torch.cuda.CUDAGraph once captured
    compiled: Callable[[], Any] | None = None
    setup_s: float = 0.0  #: graph capture or compilation time (warm-up steps included), seconds

    @classmethod
    def create(cls, replica: Replica, batch: int, prefill_length: int, max_new_tokens: int, mode: str) -> StaticDecoder:
        """Allocate the cache of ``prefill_length + max_new_tokens`` positions and the step inputs."""
        dec = replica.arch.decoder
        dev = replica.device
        cache = StaticKVCache.allocate(
            dec.layers, batch, dec.kv_heads, prefill_length + max_new_tokens, dec.head_dim, replica.dtype, dev
        )
        return cls(
            replica,
            cache,
            prefill_length,
            max_new_tokens,
            mode,
            token=torch.zeros((batch, 1), dtype=torch.long, device=dev),
            position=torch.zeros((1,), dtype=torch.long, device=dev),
            tokens=torch.zeros((batch, max_new_tokens), dtype=torch.long, device=dev),
        )

    @property
    def batch(self) -> int:
        """Pages per forward."""
        return int(self.token.shape[0])

    def prefill(self, input_embeds: torch.Tensor) -> torch.Tensor:
        """Eager prefill into the static cache: float32 logits of the last position ``(B, vocab)``; sets the first
        token, ``position`` (= ``L``) and ``tokens[:, 0]``."""
        if input_embeds.shape[1] != self.prefill_length or input_embeds.shape[0] != self.batch:
            raise ValueError(
                f"prefill input {tuple(input_embeds.shape[:2])} does not match ({self.batch}, {self.prefill_length})"
            )
        self.cache.filled = 0
        self.cache.position = None
        logits, _ = self.replica.prefill(input_embeds, self.cache)
        first = torch.argmax(logits, dim=-1, keepdim=True)
        self.token.copy_(first)
        self.tokens[:, :1].copy_(first)
        self.position.fill_(self.prefill_length)
        return logits

    def _step_body(self) -> torch.Tensor:
        """One static step on the device (the body that is captured): returns the float32 logits ``(B, vocab)``."""
        r = self.replica
        self.cache.position = self.position
        try:
            with r.autocast(cache_enabled=False):
                embeds = r.decoder.embed_tokens(self.token)
                hidden = r.decoder(embeds, self.cache, position=self.position)
                logits: torch.Tensor = r.lm_head(hidden).float()[:, -1]
        finally:
            self.cache.position = None
        nxt = torch.argmax(logits, dim=-1, keepdim=True)
        self.token.copy_(nxt)
        self.tokens.index_copy_(1, self.position - (self.prefill_length - 1), nxt)
        self.position.add_(1)
        return logits

    def step(self) -> None:
        """One decode step: replay the graph, call the compiled step, or run the body eagerly."""
        if self.graph is not None:
            self.graph.replay()
        elif self.compiled is not None:
            torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]  # a new step: the previous step's outputs may be overwritten
            self.logits = self.compiled()
        elif self.mode == DECODE_GRAPH:
            self.capture()
            self.step()
        elif self.mode == DECODE_COMPILE:
            self.compile()
            self.step()
        else:
            self.logits = self._step_body()

    def _restore(self, token: torch.Tensor, position: torch.Tensor) -> None:
        self.token.copy_(token)
        self.position.copy_(position)

    def capture(self) -> None:
        """Warm up on a side stream, then capture one step into a CUDA graph (inputs restored afterwards)."""
        start = time.perf_counter()
        saved = (self.token.clone(), self.position.clone())
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_STEPS):
                self._step_body()
                self._restore(*saved)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._step_body()
        self._restore(*saved)  # capture records without running; the restore is for the warm-up steps
        torch.cuda.synchronize()
        self.graph = graph
        self.setup_s += time.perf_counter() - start

    def compile(self) -> None:
        """``torch.compile(mode="reduce-overhead")`` of the step; its first calls (compilation) run here.

        The step writes into the cache, token and position tensors in place; where torch's CUDA graph trees
        do not accept that (torch then logs "skipping cudagraphs due to mutated inputs"), the compiled step
        runs inductor's kernels without a CUDA graph: compare with ``graph`` on the GPU.
        """
        start = time.perf_counter()
        compiled = torch.compile(self._step_body, mode="reduce-overhead", fullgraph=False)
        saved = (self.token.clone(), self.position.clone())
        for _ in range(GRAPH_WARMUP_STEPS):  # compile, record the cudagraph tree, replay once
            torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
            compiled()
            self._restore(*saved)
        torch.cuda.synchronize()
        self.compiled = compiled
        self.setup_s += time.perf_counter() - start


@attrs.define(eq=False)
class StaticDecoders:
    """The static decoders of a run, one per batch shape ``(B, prefill length)``, created on first use."""

    replica: Replica
    max_new_tokens: int
    mode: str
    by_shape: dict[tuple[int, int], StaticDecoder] = attrs.field(factory=dict)

    def get(self, batch: int, prefill_length: int) -> StaticDecoder:
        """The decoder of this shape (allocated, not yet captured, on first use)."""
        key = (batch, prefill_length)
        if key not in self.by_shape:
            self.by_shape[key] = StaticDecoder.create(
                self.replica, batch, prefill_length, self.max_new_tokens, self.mode
            )
        return self.by_shape[key]

    @property
    def setup_s(self) -> float:
        """Capture or compile time of all shapes, seconds."""
        return sum(d.setup_s for d in self.by_shape.values())

    def cache_lengths(self) -> list[int]:
        """``N`` of every shape used, sorted."""
        return sorted({d.cache.length for d in self.by_shape.values()})
