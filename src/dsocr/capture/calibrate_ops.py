"""One torch builder per kernel kind: the replica's own operators at one signature's shape.

:func:`build` allocates the inputs (and weights) of one :class:`~dsocr.analytic.signature.Kernel`
once, seeded, on the device, and returns a closure that runs the primitive alone. Wherever the
replica runs one of its own functions or modules (:mod:`dsocr.execution.replica_sam`,
``replica_clip``, ``replica_decoder``: ``SamLayerNorm2d``, ``rel_pos_bias``, the window
partition, CLIP's and the decoder's ``attend``, ``RMSNorm``, the rotary embedding and
``apply_rotary_pos_emb``, ``KVCache.update``, ``MoeRouter``, ``MoeExperts`` in the chosen ``moe``
execution), the closure calls that same code, and its inputs have the layout (strides, memory
format, dtype) the replica's tensors have there:

- ``conv2d``: the image (``cin`` = 3) arrives contiguous (NCHW); every later convolution of SAM's
  neck and compressor gets a permuted channels-last tensor (``permute(0, 3, 1, 2)`` of an NHWC map),
  so its input is ``channels_last``.
- ``layer_norm`` ``2d``: SAM's channels-first LayerNorm2d on a channels-last ``[1, dim, h, w]`` map
  (``h * w = rows``), as the neck's convolutions leave it.
- ``attention`` with ``mask=1`` is SAM's: the qkv projection's output ``[batch, side*side, 3*dim]`` is
  reshaped/permuted/unbound as the SAM attention does, then SDPA (or the eager matmul-softmax-matmul)
  with the float bias, then the output permute back to ``[batch, side, side, dim]``. With ``mask=0``
  and ``causal=0`` (CLIP) the fused qkv output ``[batch, len, 3, heads, head_dim]`` is split as CLIP
  does; with ``causal=1`` (decoder) q is the projection's transposed view, keys and values are too
  on prefill (no past: the cache keeps them as they come) and contiguous after the cache's
  ``torch.cat`` on decode; the eager path adds the replica's additive causal mask.
- ``rope`` computes cos/sin from the positions (every decoder layer does, as the vendor's) and
  rotates q and k.
- ``router`` and ``routed_experts`` route uniformly at random (seeded random logits); the experts
  get float32 routing weights. With ``moe="loop"`` the per-expert GEMMs (and the host sync) follow
  that routing.

Everything runs under ``torch.inference_mode()`` (as the capture worker does); torch is imported
lazily by the caller, never at this module's import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from dsocr.contract.errors import BadInput

if TYPE_CHECKING:
    import torch

    from dsocr.analytic.signature import Kernel

#: A closure running one primitive once (its result is returned so nothing is optimized away).
Runner = Callable[[], Any]
Builder = Callable[["Kernel", "torch.device", "torch.dtype"], Runner]

#: Activation functions of ``activation`` (SAM's GELU, CLIP's quick-GELU, the decoder's SiLU).
ACTIVATIONS: Final = ("gelu", "quick_gelu", "silu")
COPY_PATTERNS: Final = ("window_partition", "window_unpartition", "concat")
ATTENTION_IMPLS: Final = ("sdpa", "eager")
#: The MoE executions ``routed_experts`` can time (the replica's ``moe``).
MOE_EXECUTIONS: Final = ("loop", "grouped")


def _int(kernel: Kernel, name: str, least: int = 0) -> int:
    value = kernel.param(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise BadInput(f"{kernel.key}: parameter {name} = {value!r} must be an integer >= {least}")
    return value


def _str(kernel: Kernel, name: str, allowed: tuple[str, ...]) -> str:
    value = kernel.param(name)
    if value not in allowed:
        raise BadInput(f"{kernel.key}: parameter {name} = {value!r} must be one of {', '.join(allowed)}")
    return str(value)


def _randn(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    import torch

    return torch.randn(shape, device=device, dtype=torch.float32).to(dtype)


def _module(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


# --------------------------------------------------------------------------- dense
def _linear(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from torch import nn

    rows, n_in, n_out = _int(k, "rows", 1), _int(k, "in", 1), _int(k, "out", 1)
    layer = _module(nn.Linear(n_in, n_out, bias=bool(_int(k, "bias"))), device, dtype)
    x = _randn((rows, n_in), device, dtype)
    return lambda: layer(x)


def _conv2d(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch
    from torch import nn

    batch, cin, cout, size = (_int(k, n, 1) for n in ("batch", "cin", "cout", "size"))
    kernel, stride = _int(k, "kernel", 1), _int(k, "stride", 1)
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=_int(k, "padding"), bias=bool(_int(k, "bias")))
    conv = _module(conv, device, dtype)
    x = _randn((batch, cin, size, size), device, dtype)
    if cin != 3:  # after the patch embedding SAM's maps are permuted NHWC tensors: channels-last
        x = x.contiguous(memory_format=torch.channels_last)
    return lambda: conv(x)


def _layer_norm(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch
    from torch import nn

    rows, dim = _int(k, "rows", 1), _int(k, "dim", 1)
    layout = _str(k, "layout", ("last", "2d"))
    if layout == "last":
        norm = _module(nn.LayerNorm(dim), device, dtype)
        x = _randn((rows, dim), device, dtype)
        return lambda: norm(x)
    from dsocr.execution.replica_sam import SamLayerNorm2d

    norm = _module(SamLayerNorm2d(dim), device, dtype)
    side = math.isqrt(rows)
    h, w = (side, side) if side * side == rows else (1, rows)
    x = _randn((1, dim, h, w), device, dtype).contiguous(memory_format=torch.channels_last)
    return lambda: norm(x)


def _rms_norm(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from dsocr.execution.replica_decoder import RMSNorm

    rows, dim = _int(k, "rows", 1), _int(k, "dim", 1)
    norm = _module(RMSNorm(dim, 1e-6), device, dtype)
    x = _randn((1, rows, dim), device, dtype)
    return lambda: norm(x)


def _activation(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch.nn.functional as F

    from dsocr.execution.replica_clip import quick_gelu

    fns: dict[str, Callable[[Any], Any]] = {"gelu": F.gelu, "quick_gelu": quick_gelu, "silu": F.silu}
    fn = fns[_str(k, "fn", ACTIVATIONS)]
    x = _randn((_int(k, "elements", 1),), device, dtype)
    return lambda: fn(x)


def _gated(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch.nn.functional as F

    n = _int(k, "elements", 1)
    gate, up = _randn((n,), device, dtype), _randn((n,), device, dtype)
    return lambda: F.silu(gate) * up  # SwiGluMlp: silu(gate_proj(x)) * up_proj(x)


def _elementwise(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    n, inputs = _int(k, "elements", 1), _int(k, "inputs", 1)
    xs = [_randn((n,), device, dtype) for _ in range(inputs)]
    if inputs == 1:  # a unary pass (read once, write once)
        return lambda: xs[0] * 0.5

    def add() -> Any:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out

    return add


def _copy(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch

    pattern = _str(k, "pattern", COPY_PATTERNS)
    if pattern == "concat":
        n = _int(k, "elements", 1)
        a, b = _randn((n // 2,), device, dtype), _randn((n - n // 2,), device, dtype)
        return lambda: torch.cat([a, b])
    from dsocr.execution.replica_sam import window_partition, window_unpartition

    batch, side, dim, window = (_int(k, n, 1) for n in ("batch", "side", "dim", "window"))
    if pattern == "window_partition":
        x = _randn((batch, side, side, dim), device, dtype)
        return lambda: window_partition(x, window)
    padded = -(-side // window) * window
    windows = _randn((batch * (padded // window) ** 2, window, window, dim), device, dtype)
    return lambda: window_unpartition(windows, window, (padded, padded), (side, side))


def _embedding(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch
    from torch import nn

    rows, vocab, dim = _int(k, "rows", 1), _int(k, "vocab", 1), _int(k, "dim", 1)
    table = _module(nn.Embedding(vocab, dim), device, dtype)
    ids = torch.randint(0, vocab, (1, rows), device=device)
    return lambda: table(ids)


# --------------------------------------------------------------------------- attention
def _sam_attention(k: Kernel, device: torch.device, dtype: torch.dtype, impl: str) -> Runner:
    """SAM's attention between ``qkv`` and ``proj`` (the rel-pos bias is the ``rel_pos`` kind)."""
    import torch
    import torch.nn.functional as F

    batch, heads, q, head_dim = (_int(k, n, 1) for n in ("batch", "heads", "q", "head_dim"))
    side = math.isqrt(q)
    if side * side != q or _int(k, "kv", 1) != q or _int(k, "kv_heads", 1) != heads:
        raise BadInput(f"{k.key}: a masked (SAM) attention needs q = kv = a square and kv_heads = heads")
    qkv_out = _randn((batch, side, side, 3 * heads * head_dim), device, dtype)
    bias = _randn((batch, heads, q, q), device, dtype)
    scale = head_dim**-0.5

    def run() -> Any:
        qkv = qkv_out.reshape(batch, q, 3, heads, -1).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.reshape(3, batch * heads, q, -1).unbind(0)
        if impl == "sdpa":
            out = F.scaled_dot_product_attention(
                query.view(batch, heads, q, -1),
                key.view(batch, heads, q, -1),
                value.view(batch, heads, q, -1),
                attn_mask=bias,
            )
        else:
            weights = (query * scale) @ key.transpose(-2, -1)
            weights = weights + bias.view_as(weights)
            weights = torch.nn.functional.softmax(weights, dtype=torch.float32, dim=-1).to(query.dtype)
            weights = torch.nn.functional.dropout(weights, p=0.0, training=False)
            out = (weights @ value).reshape(batch, heads, side, side, -1)
            return out.permute(0, 2, 3, 1, 4).reshape(batch, side, side, -1)
        return out.view(batch, heads, side, side, -1).permute(0, 2, 3, 1, 4).reshape(batch, side, side, -1)

    return run


def _attention(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    impl = _str(k, "impl", ATTENTION_IMPLS)
    if _int(k, "mask"):
        return _sam_attention(k, device, dtype, impl)
    from dsocr.execution import replica_clip, replica_decoder

    batch, heads, kv_heads = _int(k, "batch", 1), _int(k, "heads", 1), _int(k, "kv_heads", 1)
    q, kv, head_dim, causal = _int(k, "q", 1), _int(k, "kv", 1), _int(k, "head_dim", 1), bool(_int(k, "causal"))
    if heads % kv_heads:
        raise BadInput(f"{k.key}: heads must be a multiple of kv_heads")
    if not causal and impl == "sdpa" and q == kv and kv_heads == heads:
        xqkv = _randn((batch, q, 3, heads, head_dim), device, dtype)  # CLIP's fused qkv_proj output, viewed
        return lambda: replica_clip.attend(xqkv)
    # the projections' outputs viewed [batch, len, heads, head_dim] and transposed; after a decode
    # step's torch.cat in the KV cache the keys and values are contiguous
    query = _randn((batch, q, heads, head_dim), device, dtype).transpose(1, 2)
    if causal and kv > q:
        key, value = (_randn((batch, kv_heads, kv, head_dim), device, dtype) for _ in range(2))
    else:
        key, value = (_randn((batch, kv, kv_heads, head_dim), device, dtype).transpose(1, 2) for _ in range(2))
    mask = None
    if causal and impl == "eager":  # built once per forward, outside the layers
        mask = replica_decoder.causal_mask(batch, q, kv - q, dtype, device)
    groups = heads // kv_heads
    return lambda: replica_decoder.attend(query, key, value, mask, impl, groups)


def _rel_pos(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from dsocr.execution.replica_sam import rel_pos_bias

    batch, heads, side, head_dim, table = (_int(k, n, 1) for n in ("batch", "heads", "side", "head_dim", "table"))
    rel_h, rel_w = _randn((table, head_dim), device, dtype), _randn((table, head_dim), device, dtype)
    n = side * side
    qkv_out = _randn((batch, side, side, 3 * heads * head_dim), device, dtype)
    qkv = qkv_out.reshape(batch, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    query = qkv.reshape(3, batch * heads, n, -1).unbind(0)[0]  # as the SAM attention's query
    return lambda: rel_pos_bias(query, rel_h, rel_w, batch, heads, side, side)


def _rope(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch

    from dsocr.execution.replica_decoder import RotaryEmbedding, apply_rotary_pos_emb

    rows, heads, kv_heads, head_dim = (_int(k, n, 1) for n in ("rows", "heads", "kv_heads", "head_dim"))
    rotary = RotaryEmbedding(head_dim, 10_000.0)
    rotary.inv_freq = rotary.inv_freq.to(device=device, dtype=dtype)  # stored in the model's dtype, as the replica
    query = _randn((1, rows, heads, head_dim), device, dtype).transpose(1, 2)
    key = _randn((1, rows, kv_heads, head_dim), device, dtype).transpose(1, 2)
    value = _randn((1, rows, kv_heads, head_dim), device, dtype).transpose(1, 2)
    positions = torch.arange(rows, device=device).unsqueeze(0)

    def run() -> Any:
        cos, sin = rotary(value, positions)  # every layer computes its own, as the vendor's LlamaAttention
        return apply_rotary_pos_emb(query, key, cos, sin)

    return run


def _kv_append(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from dsocr.execution.replica_decoder import KVCache

    batch, kv_heads, new, head_dim = (_int(k, n, 1) for n in ("batch", "kv_heads", "new", "head_dim"))
    past = _int(k, "past")
    # rope's outputs keep the projections' [batch, new, kv_heads, head_dim] layout (transposed views)
    keys, values = (_randn((batch, new, kv_heads, head_dim), device, dtype).transpose(1, 2) for _ in range(2))
    cached = [_randn((batch, kv_heads, past, head_dim), device, dtype) for _ in range(2)] if past else None

    def run() -> Any:
        cache = KVCache() if cached is None else KVCache({0: cached[0]}, {0: cached[1]})  # holding ``past`` positions
        return cache.update(0, keys, values)

    return run


def _decoder_config(hidden: int, experts: int, top_k: int, inter: int = 1) -> Any:
    import attrs

    from dsocr.model.architecture import DEEPSEEK_OCR

    return attrs.evolve(
        DEEPSEEK_OCR.decoder, hidden=hidden, routed_experts=experts, experts_per_token=top_k, moe_intermediate=inter
    )


def _router(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from dsocr.execution.replica_decoder import MoeRouter

    rows, hidden, experts, top_k = (_int(k, n, 1) for n in ("rows", "hidden", "experts", "top_k"))
    gate = _module(MoeRouter(_decoder_config(hidden, experts, top_k)), device, dtype)
    x = _randn((1, rows, hidden), device, dtype)
    return lambda: gate(x)


def _routed_experts(k: Kernel, device: torch.device, dtype: torch.dtype, moe: str = "loop") -> Runner:
    import torch

    from dsocr.execution.replica_decoder import MoeExperts

    if moe not in MOE_EXECUTIONS:
        raise BadInput(f"moe {moe!r} is unknown: use one of {', '.join(MOE_EXECUTIONS)}")
    rows, hidden, inter, experts, top_k = (_int(k, n, 1) for n in ("rows", "hidden", "inter", "experts", "top_k"))
    if top_k > experts:
        raise BadInput(f"{k.key}: top_k must not exceed experts")
    module = _module(MoeExperts(_decoder_config(hidden, experts, top_k, inter), moe), device, dtype)
    x = _randn((rows, hidden), device, dtype)
    scores = torch.randn(rows, experts, device=device).softmax(dim=-1)  # uniform random routing
    weights, index = torch.topk(scores, k=top_k, dim=-1, sorted=False)
    return lambda: module(x, index, weights)


BUILDERS: Final[dict[str, Builder]] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "activation": _activation,
    "gated": _gated,
    "elementwise": _elementwise,
    "copy": _copy,
    "embedding": _embedding,
    "attention": _attention,
    "rel_pos": _rel_pos,
    "rope": _rope,
    "kv_append": _kv_append,
    "router": _router,
    "routed_experts": _routed_experts,
}


def check_kinds(kernels: list[Kernel]) -> None:
    """Raise a one-line BadInput naming the first kernel whose kind has no builder."""
    for k in kernels:
        if k.kind not in BUILDERS:
            raise BadInput(
                f"kernel {k.key}: kind {k.kind!r} cannot be calibrated (known kinds: {', '.join(BUILDERS)}); "
                "update dsocr's calibration builders"
            )


def build(kernel: Kernel, device: torch.device, dtype: torch.dtype, moe: str = "loop") -> Runner:
    """Allocate ``kernel``'s inputs on ``device`` and return the closure that runs it once.

    ``moe`` picks the replica's MoE execution that ``routed_experts`` times (``loop``, the vendor's, or ``grouped``).
    """
    check_kinds([kernel])
    if kernel.kind == "routed_experts":
        return _routed_experts(kernel, device, dtype, moe)
    return BUILDERS[kernel.kind](kernel, device, dtype)
