"""The exact-shape DeepSeek-OCR replica: dsocr's own plain-torch modules, executed as the vendor's code.

Shapes come from :class:`dsocr.model.architecture.Architecture`; weights are seeded random
(bf16 on CUDA, float32 on the CPU by default) or a checkpoint's (:mod:`dsocr.execution.checkpoint`).
No transformers import: the modules follow the ops and casts of the checkpoint's own code
(``deepencoder.py``, ``modeling_deepseekv2.py``, transformers 4.46.3's ``LlamaAttention``):

- SAM (:mod:`~dsocr.execution.replica_sam`): patch embed, windowed/global blocks with relative
  positions, neck, the two stride-2 convolutions (``compressor``).
- CLIP-L (:mod:`~dsocr.execution.replica_clip`): the SAM map as patch embeddings, class token and
  resized position embeddings, ``pre_layrnorm``, the encoder layers; no ``post_layernorm``.
- Projector: ``Linear(2048, 1280)`` on concat(CLIP tokens without class token, SAM tokens).
- Decoder (:mod:`~dsocr.execution.replica_decoder`): layer 0 dense, the rest MoE; an untied
  ``lm_head`` over every prefill position, its logits cast to float32 (``logits.float()``).
- Layout: learned ``image_newline`` after every row of each map, one ``view_separator`` after
  the global view; crops (tiled into one map) come first, as in the vendor's code.

Execution (:data:`MOE_EXECUTIONS`, :data:`ATTN_IMPLEMENTATIONS`): by default the vendor's
(``moe="loop"``: a host sync and one GEMM triple per used expert in every MoE layer;
``attn_implementation="eager"``); ``moe="grouped"`` and ``attn_implementation="sdpa"`` are the
faster variants. Casts: the vendor's ``infer`` runs under ``torch.autocast("cuda", bfloat16)``
with a bf16 model; the replica enters the same autocast in every stage function when it runs in
bf16 on CUDA, so each op gets the vendor's cast (the router's float32 ``F.linear`` becomes bf16,
LayerNorms compute in float32). On the CPU the vendor's ``autocast("cuda")`` does nothing, and
the replica takes no autocast either: every op runs in the model's dtype plus the code's own casts.
The replica's parameter count is the checkpoint's, 3,336,106,240 for the full architecture.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import attrs

from dsocr.contract import module_paths as mp
from dsocr.contract import nvtx_names as names
from dsocr.contract.errors import BadInput
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dsocr.execution.preprocess import PreparedImage
    from dsocr.execution.replica_decoder import KVCache

#: The parameter count of the published checkpoint (2,710 tensors, 6,672,212,480 bf16 bytes).
FULL_PARAMETERS: Final = 3_336_106_240
#: ``attn_implementation`` values the replica accepts (decoder attention; the vendor's is eager).
ATTN_IMPLEMENTATIONS: Final = ("eager", "sdpa")
#: ``moe`` values: the vendor's per-expert loop with a host sync, or grouped GEMMs without one.
MOE_EXECUTIONS: Final = ("loop", "grouped")
#: How pages are batched (``--batch N``): pages with the same crop grid share vision shapes and prefill length.
BATCHING: Final = "bucketed-by-grid"
#: The vendor's execution (the default).
DEFAULT_ATTN: Final = "eager"
DEFAULT_MOE: Final = "loop"

#: A factory of context managers, one per stage (``sam``, ``clip``, ``projector``); the
#: capture passes its NVTX/timing stage here, tests a recorder.
StageFn = Callable[[str], AbstractContextManager[Any]]


def _no_stage(_name: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def resolve_dtype(device: str, dtype: Any = None) -> torch.dtype:
    """The dtype for ``device``: bf16 on CUDA, float32 elsewhere, unless ``dtype`` (name or dtype) is given."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    table |= {"float32": torch.float32, "fp32": torch.float32}
    try:
        return table[str(dtype).lower()]
    except KeyError:
        raise BadInput(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32") from None


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@attrs.define(eq=False)
class Replica:
    """DeepSeek-OCR as torch modules plus the stage functions the capture worker times."""

    arch: Architecture
    root: Any  #: nn.ModuleDict holding every part (for .parameters(), .to(), state_dict())
    sam: Any  #: SamEncoder (``blocks``, ``neck``, ``compressor``)
    clip: Any  #: ClipVision (``embeddings``, ``pre_layrnorm``, ``transformer.layers``)
    projector: Any  #: nn.Linear(2048, 1280)
    decoder: Any  #: Decoder (``embed_tokens``, ``layers``, ``norm``)
    lm_head: Any  #: nn.Linear(1280, vocab, bias=False)
    layout: Any  #: nn.Module with parameters ``image_newline`` and ``view_separator``
    device: Any
    dtype: Any
    eos_token_id: int | None = None  #: set by a real checkpoint; the replica never stops early
    moe: str = DEFAULT_MOE  #: ``loop`` (the vendor's) or ``grouped``
    attn_implementation: str = DEFAULT_ATTN  #: decoder attention: ``eager`` (the vendor's) or ``sdpa``
    #: How the capture runs it (set by the worker, recorded in ``execution``): decode ``eager|graph|compile``,
    #: pages per forward, and the KV cache (``dynamic`` or ``static:N``, N the longest static cache used).
    decode: str = "eager"
    batch: int = 1
    cache: str = "dynamic"

    # ----------------------------------------------------------------- structure
    @property
    def execution(self) -> dict[str, str | int]:
        """How the replica executes (timing.json's ``model.execution``, docs/variants.md): ``moe``, ``attn``,
        ``autocast``, ``decode``, ``batch``, ``batching``, ``dtype``, ``cache``."""
        return {
            "moe": self.moe,
            "attn": self.attn_implementation,
            "autocast": self.autocast_dtype or "none",
            "decode": self.decode,
            "batch": self.batch,
            "batching": BATCHING,
            "dtype": str(self.dtype).removeprefix("torch."),
            "cache": self.cache,
        }

    @property
    def autocast_dtype(self) -> str | None:
        """``bfloat16`` when the stage functions run under the vendor's CUDA autocast, else None."""
        import torch

        return "bfloat16" if self.device.type == "cuda" and self.dtype == torch.bfloat16 else None

    def _autocast(self) -> AbstractContextManager[Any]:
        return self.autocast()

    def autocast(self, cache_enabled: bool = True) -> AbstractContextManager[Any]:
        """The vendor's ``torch.autocast("cuda", bfloat16)`` in bf16 on CUDA; nothing elsewhere (see module doc).

        ``cache_enabled=False`` inside a CUDA graph capture (torch's documentation asks for it)."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled)

    def parameter_count(self) -> int:
        """Number of parameters (3,336,106,240 for the full architecture)."""
        return sum(int(p.numel()) for p in self.root.parameters())

    def module_paths(self) -> dict[str, nn.Module]:
        """The contract's module paths (``vision.sam.blocks.3``, ``decoder.layers.5.moe``, ...) -> modules.

        ``vision.clip.embeddings`` is absent: its work is timed with CLIP's stage range.
        """
        paths: dict[str, nn.Module] = {
            mp.SAM: self.sam,
            mp.SAM_PATCH_EMBED: self.sam.patch_embed,
            mp.SAM_NECK: self.sam.neck,
            mp.SAM_COMPRESSOR: self.sam.compressor,
            mp.CLIP: self.clip,
            mp.PROJECTOR: self.projector,
            mp.DECODER: self.decoder,
            mp.EMBED_TOKENS: self.decoder.embed_tokens,
            mp.DECODER_NORM: self.decoder.norm,
            mp.LM_HEAD: self.lm_head,
        }
        for i, block in enumerate(self.sam.blocks):
            paths[mp.sam_block(i)] = block
        for i, layer in enumerate(self.clip.transformer.layers):
            paths[mp.clip_layer(i)] = layer
        for i, layer in enumerate(self.decoder.layers):
            paths[mp.decoder_layer(i)] = layer
            paths[mp.decoder_attention(i)] = layer.self_attn
            if self.arch.decoder.is_moe(i):
                paths[mp.decoder_moe(i)] = layer.mlp
                paths[mp.decoder_moe_router(i)] = layer.mlp.gate
                paths[mp.decoder_moe_experts(i)] = layer.mlp.experts
                paths[mp.decoder_moe_shared(i)] = layer.mlp.shared_experts
            else:
                paths[mp.decoder_mlp(i)] = layer.mlp
        return paths

    # ----------------------------------------------------------------- vision
    def encode_view(self, pixels: torch.Tensor, stage: StageFn | None = None) -> torch.Tensor:
        """SAM -> CLIP -> projector on a batch of same-size views ``(B, 3, S, S)``: ``(B, s*s, hidden)``."""
        import torch

        st = stage or _no_stage
        with self._autocast():
            with st(names.SAM):
                sam_map = self.sam(pixels)  # B, 1024, s, s
            with st(names.CLIP):
                clip_out = self.clip(sam_map)
            with st(names.PROJECTOR):
                features = torch.cat([clip_out[:, 1:], sam_map.flatten(2).permute(0, 2, 1)], dim=-1)
                out: torch.Tensor = self.projector(features)
        return out

    def lay_out(self, global_features: torch.Tensor, crop_features: torch.Tensor | None, grid: tuple[int, int]) -> Any:
        """Image embeddings ``(n, hidden)``: tiled crops + newlines, global + newlines, separator."""
        with self._autocast():
            return lay_out(self.layout.image_newline, self.layout.view_separator, global_features, crop_features, grid)

    def encode_views(self, views: PreparedImage, stage: StageFn | None = None) -> torch.Tensor:
        """Image embeddings ``(n, hidden)`` of one page: crops (one batch), then the global view, then layout."""
        crops = None
        if views.crops is not None:
            crops = self.encode_view(views.crops, stage)
        glob = self.encode_view(views.global_view, stage)
        return self.lay_out(glob, crops, views.grid)  # type: ignore[no-any-return]

    def encode_batch(self, pages: Sequence[PreparedImage], stage: StageFn | None = None) -> list[torch.Tensor]:
        """Image embeddings of pages with one crop grid: all pages' crops as one batch, then all global views as
        one batch, then each page's layout (one page: :meth:`encode_views`)."""
        import torch

        if len(pages) == 1:
            return [self.encode_views(pages[0], stage)]
        grids = {p.grid for p in pages}
        if len(grids) != 1:
            raise BadInput(f"a batch holds pages of one crop grid, not {sorted(grids)}: bucket the pages by grid")
        crops = None
        if pages[0].crops is not None:
            crops = self.encode_view(torch.cat([p.crops for p in pages if p.crops is not None]), stage)
        glob = self.encode_view(torch.cat([p.global_view for p in pages]), stage)
        n_crops = 0 if crops is None else crops.shape[0] // len(pages)
        out = []
        for i, p in enumerate(pages):
            page_crops = None if crops is None else crops[i * n_crops : (i + 1) * n_crops]
            out.append(self.lay_out(glob[i : i + 1], page_crops, p.grid))
        return out

    # ----------------------------------------------------------------- decoder
    def embed_prompt(self, ids_before: torch.Tensor, image_embeds: torch.Tensor, ids_after: torch.Tensor) -> Any:
        """Prefill input ``(1, L, hidden)``: ids before the image, image embeddings, ids after (one lookup)."""
        import torch

        embed = self.decoder.embed_tokens
        n = ids_before.numel()
        text = embed(torch.cat([ids_before.reshape(-1), ids_after.reshape(-1)]).unsqueeze(0)).to(image_embeds.dtype)
        return torch.cat([text[:, :n], image_embeds.unsqueeze(0), text[:, n:]], dim=1)

    def embed_prompts(
        self, ids_before: torch.Tensor, image_embeds: Sequence[torch.Tensor], ids_after: torch.Tensor
    ) -> Any:
        """Prefill input ``(B, L, hidden)`` of pages with the same image length (one page: :meth:`embed_prompt`)."""
        import torch

        rows = [self.embed_prompt(ids_before, e, ids_after) for e in image_embeds]
        return rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)

    def prefill(self, input_embeds: torch.Tensor, cache: Any = None) -> tuple[torch.Tensor, Any]:
        """Decoder over the whole prompt ``(B, L, hidden)`` with a fresh KV cache (or ``cache``, a static one):
        (float32 logits of the last position ``(B, vocab)``, cache). ``lm_head`` runs over every position, as
        the vendor's forward does."""
        from dsocr.execution.replica_decoder import KVCache

        cache = KVCache() if cache is None else cache
        with self._autocast():
            hidden = self.decoder(input_embeds, cache)
            logits = self.lm_head(hidden).float()
        return logits[:, -1], cache

    def decode_step(self, token: torch.Tensor, past: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One greedy step: token ids ``(B, 1)`` and the cache -> (float32 logits ``(B, vocab)``, cache)."""
        with self._autocast():
            hidden = self.decoder(self.decoder.embed_tokens(token.reshape(-1, 1)), past)
            logits = self.lm_head(hidden).float()
        return logits[:, -1], past


def lay_out(
    newline: torch.Tensor,
    separator: torch.Tensor,
    global_features: torch.Tensor,
    crop_features: torch.Tensor | None,
    grid: tuple[int, int],
) -> torch.Tensor:
    """The vendor's layout: crops tiled row by row into one map, ``newline`` after every row of it and of
    the global map, crops first, then the global view, then ``separator``: ``(n, hidden)``."""
    import torch

    hidden = global_features.shape[-1]
    g = math.isqrt(global_features.shape[1])
    glob = global_features.reshape(g, g, hidden)
    glob = torch.cat([glob, newline.expand(g, 1, hidden)], dim=1).reshape(-1, hidden)
    parts = []
    if crop_features is not None:
        w, h = grid
        c = math.isqrt(crop_features.shape[1])
        tiled = crop_features.reshape(h, w, c, c, hidden).permute(0, 2, 1, 3, 4).reshape(h * c, w * c, hidden)
        tiled = torch.cat([tiled, newline.expand(h * c, 1, hidden)], dim=1).reshape(-1, hidden)
        parts.append(tiled)
    parts += [glob, separator.reshape(1, hidden)]
    return torch.cat(parts, dim=0)


def check_execution(attn_implementation: str, moe: str) -> None:
    """BadInput naming the accepted values when ``attn_implementation`` or ``moe`` is unknown."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise BadInput(f"attn_implementation {attn_implementation!r} is unknown: use one of {ATTN_IMPLEMENTATIONS}")
    if moe not in MOE_EXECUTIONS:
        raise BadInput(f"moe {moe!r} is unknown: use one of {MOE_EXECUTIONS}")


def build_replica(
    arch: Architecture = DEEPSEEK_OCR,
    *,
    device: str = "cpu",
    dtype: Any = None,
    seed: int = 0,
    attn_implementation: str = DEFAULT_ATTN,
    moe: str = DEFAULT_MOE,
) -> Replica:
    """Build the replica for ``arch`` on ``device`` with seeded random weights, in eval mode.

    ``device="meta"`` builds it without memory (for parameter counts); ``dtype`` defaults to bf16
    on CUDA and float32 elsewhere; ``attn_implementation`` is ``eager`` (the vendor's) or ``sdpa``;
    ``moe`` is ``loop`` (the vendor's) or ``grouped``.
    """
    check_execution(attn_implementation, moe)
    import torch
    from torch import nn

    from dsocr.execution.replica_clip import ClipVision
    from dsocr.execution.replica_decoder import Decoder
    from dsocr.execution.replica_sam import SamEncoder

    torch_dtype = resolve_dtype(device, dtype)
    hidden = arch.decoder.hidden
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(torch_dtype):
        sam = SamEncoder(arch.sam)
        clip = ClipVision(arch.clip)
        projector = nn.Linear(arch.projector.in_features, arch.projector.out_features)
        decoder = Decoder(arch.decoder, moe, attn_implementation)
        lm_head = nn.Linear(hidden, arch.decoder.vocab, bias=False)
        layout = nn.Module()
        std = hidden**-0.5
        layout.image_newline = nn.Parameter(torch.randn(hidden) * std)
        layout.view_separator = nn.Parameter(torch.randn(hidden) * std)
    root = nn.ModuleDict(
        {"sam": sam, "clip": clip, "projector": projector, "decoder": decoder, "lm_head": lm_head, "layout": layout}
    )
    root.eval()
    root.requires_grad_(False)
    return Replica(
        arch=arch,
        root=root,
        sam=sam,
        clip=clip,
        projector=projector,
        decoder=decoder,
        lm_head=lm_head,
        layout=layout,
        device=torch.device(device),
        dtype=torch_dtype,
        moe=moe,
        attn_implementation=attn_implementation,
    )
