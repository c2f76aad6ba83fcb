"""One torch builder per kernel kind: the replica's own operators at one signature's shape.

:func:`build` allocates the inputs (and weights) of one :class:`~dsocr.analytic.signature.Kernel`
once, seeded, on the device, and returns a closure that runs the primitive alone. Wherever the
replica runs a transformers function or class (``DeepseekOcr2TextRMSNorm``, ``apply_rotary_pos_emb``,
``sdpa_attention_forward``, the SAM attention's ``get_decomposed_rel_pos``, ``DynamicLayer.update``,
the MoE router and experts class with the experts implementation the replica's decoder selects,
``window_partition``/``window_unpartition``), the closure calls that same code, and its inputs
have the layout (strides, memory format, dtype) the replica's tensors have there:

- ``conv2d``: the image (``cin`` = 3) arrives contiguous (NCHW); every later convolution of SAM's
  neck and compressor gets a permuted channels-last tensor (``permute(0, 3, 1, 2)`` of an NHWC map),
  so its input is ``channels_last``.
- ``layer_norm`` ``2d``: SAM's channels-first LayerNorm2d on a channels-last ``[1, dim, h, w]`` map
  (``h * w = rows``), as the neck's convolutions leave it.
- ``attention`` with ``mask=1`` is SAM's: the qkv projection's output ``[batch, side*side, 3*dim]`` is
  reshaped/permuted/unbound as the SAM attention does, then SDPA (or the eager matmul-softmax-matmul)
  with the float bias, then the output permute back to ``[batch, side, side, dim]``. With ``mask=0``
  (CLIP, decoder) q/k/v are the transposed views of the projections and transformers' attention
  function runs (GQA handling, causal flag, output transpose). ``q`` must be a square for SAM.
- ``router`` and ``routed_experts`` route uniformly at random (seeded random logits); the router's
  weights are float32 as its ``F.linear`` upcast sees them, the experts get float32 routing weights.

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

#: Activation functions of ``activation`` (transformers' ``ACT2FN`` names the replica's configs use).
ACTIVATIONS: Final = ("gelu", "quick_gelu", "silu")
COPY_PATTERNS: Final = ("window_partition", "window_unpartition", "concat")
ATTENTION_IMPLS: Final = ("sdpa", "eager")


def _blocks() -> Any:
    from dsocr.execution.replica import transformers_blocks

    return transformers_blocks()


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
    norm = _module(_blocks().DeepseekOcr2SamLayerNorm(dim, data_format="channels_first"), device, dtype)
    side = math.isqrt(rows)
    h, w = (side, side) if side * side == rows else (1, rows)
    x = _randn((1, dim, h, w), device, dtype).contiguous(memory_format=torch.channels_last)
    return lambda: norm(x)


def _rms_norm(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    rows, dim = _int(k, "rows", 1), _int(k, "dim", 1)
    norm = _module(_blocks().DeepseekOcr2TextRMSNorm(dim), device, dtype)
    x = _randn((1, rows, dim), device, dtype)
    return lambda: norm(x)


def _activation(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from transformers.activations import ACT2FN

    fn = ACT2FN[_str(k, "fn", ACTIVATIONS)]
    x = _randn((_int(k, "elements", 1),), device, dtype)
    return lambda: fn(x)


def _gated(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from transformers.activations import ACT2FN

    act = ACT2FN["silu"]  # DeepseekOcr2TextMLP: act_fn(gate_proj(x)) * up_proj(x)
    n = _int(k, "elements", 1)
    gate, up = _randn((n,), device, dtype), _randn((n,), device, dtype)
    return lambda: act(gate) * up


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
    layer = _blocks().DeepseekOcr2SamVisionLayer
    batch, side, dim, window = (_int(k, n, 1) for n in ("batch", "side", "dim", "window"))
    if pattern == "window_partition":
        x = _randn((batch, side, side, dim), device, dtype)
        return lambda: layer.window_partition(None, x, window)
    padded = -(-side // window) * window
    windows = _randn((batch * (padded // window) ** 2, window, window, dim), device, dtype)
    return lambda: layer.window_unpartition(None, windows, window, (padded, padded), (side, side))


def _embedding(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch
    from torch import nn

    rows, vocab, dim = _int(k, "rows", 1), _int(k, "vocab", 1), _int(k, "dim", 1)
    table = _module(nn.Embedding(vocab, dim), device, dtype)
    ids = torch.randint(0, vocab, (1, rows), device=device)
    return lambda: table(ids)


# --------------------------------------------------------------------------- attention
class _AttnModule:
    """What transformers' attention functions read from the calling module."""

    training = False

    def __init__(self, heads: int, kv_heads: int, causal: bool) -> None:
        self.num_key_value_groups = heads // kv_heads
        self.is_causal = causal


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
            weights = weights + bias.view_as(weights)  # the replica's reshape_as copy is timed in rel_pos
            weights = torch.nn.functional.softmax(weights, dtype=torch.float32, dim=-1).to(query.dtype)
            weights = torch.nn.functional.dropout(weights, p=0.0, training=False)
            out = (weights @ value).reshape(batch, heads, side, side, -1)
            return out.permute(0, 2, 3, 1, 4).reshape(batch, side, side, -1)
        return out.view(batch, heads, side, side, -1).permute(0, 2, 3, 1, 4).reshape(batch, side, side, -1)

    return run


def _attention(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch

    impl = _str(k, "impl", ATTENTION_IMPLS)
    if _int(k, "mask"):
        return _sam_attention(k, device, dtype, impl)
    batch, heads, kv_heads = _int(k, "batch", 1), _int(k, "heads", 1), _int(k, "kv_heads", 1)
    q, kv, head_dim, causal = _int(k, "q", 1), _int(k, "kv", 1), _int(k, "head_dim", 1), bool(_int(k, "causal"))
    if heads % kv_heads:
        raise BadInput(f"{k.key}: heads must be a multiple of kv_heads")
    module: Any = _AttnModule(heads, kv_heads, causal)
    # the projections' outputs viewed [batch, len, heads, head_dim] and transposed, as CLIP and the decoder
    # do; the decoder's (causal) keys and values come out of its KV cache's torch.cat, contiguous
    query = _randn((batch, q, heads, head_dim), device, dtype).transpose(1, 2)
    if causal:
        key, value = (_randn((batch, kv_heads, kv, head_dim), device, dtype) for _ in range(2))
    else:
        key, value = (_randn((batch, kv, kv_heads, head_dim), device, dtype).transpose(1, 2) for _ in range(2))
    scaling = head_dim**-0.5
    if impl == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        def sdpa() -> Any:
            # transformers' sdpa mask is None here (no padding): SDPA's own is_causal for prefill, none for decode
            out = sdpa_attention_forward(module, query, key, value, None, scaling=scaling, is_causal=causal)[0]
            return out.reshape(batch, q, -1).contiguous()

        return sdpa
    eager = _blocks().eager_attention_forward
    mask = None
    if causal:  # the eager path gets create_causal_mask's additive float mask [batch, 1, q, kv]
        allowed = torch.ones(q, kv, dtype=torch.bool, device=device).tril(kv - q)
        mask = torch.zeros(q, kv, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        mask = mask.expand(batch, 1, q, kv)
    return lambda: eager(module, query, key, value, mask, scaling=scaling)[0].reshape(batch, q, -1).contiguous()


def _rel_pos(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch
    from torch import nn

    blocks = _blocks()
    batch, heads, side, head_dim, table = (_int(k, n, 1) for n in ("batch", "heads", "side", "head_dim", "table"))
    config = blocks.DeepseekOcr2SamVisionConfig(
        hidden_size=heads * head_dim, num_attention_heads=heads, window_size=1, image_size=16, patch_size=16
    )
    with torch.device("meta"):
        attn = blocks.DeepseekOcr2SamVisionAttention(config, window_size=1)
    attn.rel_pos_h = nn.Parameter(_randn((table, head_dim), device, dtype), requires_grad=False)
    attn.rel_pos_w = nn.Parameter(_randn((table, head_dim), device, dtype), requires_grad=False)
    n = side * side
    qkv_out = _randn((batch, side, side, 3 * heads * head_dim), device, dtype)
    qkv = qkv_out.reshape(batch, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    query = qkv.reshape(3, batch * heads, n, -1).unbind(0)[0]  # as the SAM attention's query

    def run() -> Any:
        bias = attn.get_decomposed_rel_pos(query, attn.rel_pos_h, attn.rel_pos_w, (side, side), (side, side))
        return bias.reshape(batch, heads, n, n)

    return run


def _rope(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    rows, heads, kv_heads, head_dim = (_int(k, n, 1) for n in ("rows", "heads", "kv_heads", "head_dim"))
    apply = _blocks().apply_rotary_pos_emb
    query = _randn((1, rows, heads, head_dim), device, dtype).transpose(1, 2)
    key = _randn((1, rows, kv_heads, head_dim), device, dtype).transpose(1, 2)
    cos, sin = _randn((1, rows, head_dim), device, dtype), _randn((1, rows, head_dim), device, dtype)
    return lambda: apply(query, key, cos, sin)


def _kv_append(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    from transformers import cache_utils

    layer_class: Any = cache_utils.DynamicLayer

    batch, kv_heads, new, head_dim = (_int(k, n, 1) for n in ("batch", "kv_heads", "new", "head_dim"))
    past = _int(k, "past")
    # rope's outputs keep the projections' [batch, new, kv_heads, head_dim] layout (transposed views)
    keys, values = (_randn((batch, new, kv_heads, head_dim), device, dtype).transpose(1, 2) for _ in range(2))
    cached = [_randn((batch, kv_heads, past, head_dim), device, dtype) for _ in range(2)] if past else None

    def run() -> Any:
        layer = layer_class()
        if cached is not None:  # a cache already holding ``past`` positions (set without a kernel)
            layer.dtype, layer.device, layer.is_initialized = dtype, device, True
            layer.keys, layer.values = cached
        return layer.update(keys, values)

    return run


def _text_config(hidden: int, experts: int, top_k: int, inter: int = 1) -> Any:
    blocks = _blocks()
    return blocks.DeepseekOcr2TextConfig(
        hidden_size=hidden,
        moe_intermediate_size=inter,
        n_routed_experts=experts,
        num_experts_per_tok=top_k,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        vocab_size=8,
    )


def _router(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch

    rows, hidden, experts, top_k = (_int(k, n, 1) for n in ("rows", "hidden", "experts", "top_k"))
    gate = _blocks().DeepseekOcr2TextTopkRouter(_text_config(hidden, experts, top_k))
    gate.weight.data = torch.randn(experts, hidden) * 0.02
    gate = _module(gate, device, dtype)
    x = _randn((1, rows, hidden), device, dtype)
    return lambda: gate(x)


_EXPERTS_IMPL: dict[str, str] = {}


def experts_implementation() -> str:
    """The experts implementation the replica's decoder selects (transformers' default for the model)."""
    if "impl" not in _EXPERTS_IMPL:
        import torch

        blocks = _blocks()
        config = _text_config(8, 2, 1)
        config.mlp_layer_types = ["sparse"]
        with torch.device("meta"):
            model = blocks.DeepseekOcr2TextModel(config)
        _EXPERTS_IMPL["impl"] = str(model.config._experts_implementation)
    return _EXPERTS_IMPL["impl"]


def _routed_experts(k: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    import torch

    rows, hidden, inter, experts, top_k = (_int(k, n, 1) for n in ("rows", "hidden", "inter", "experts", "top_k"))
    if top_k > experts:
        raise BadInput(f"{k.key}: top_k must not exceed experts")
    config = _text_config(hidden, experts, top_k, inter)
    config._experts_implementation = experts_implementation()
    module = _blocks().DeepseekOcr2TextExperts(config)
    module.gate_up_proj.data = torch.randn(experts, 2 * inter, hidden) * 0.02
    module.down_proj.data = torch.randn(experts, hidden, inter) * 0.02
    module = _module(module, device, dtype)
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


def build(kernel: Kernel, device: torch.device, dtype: torch.dtype) -> Runner:
    """Allocate ``kernel``'s inputs on ``device`` and return the closure that runs it once."""
    check_kinds([kernel])
    return BUILDERS[kernel.kind](kernel, device, dtype)
