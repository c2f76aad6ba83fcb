"""The DeepSeek-V2 MoE decoder as the vendor's ``modeling_deepseekv2.py`` runs it, in plain torch.

DeepSeek-OCR's language model has ``use_mla=False``, so the vendor's layers use transformers
4.46.3's ``LlamaAttention`` (``mha_eager``): q/k/v/o projections, a rotary embedding computed in
every layer (float32, autocast off), the additive causal mask that
``_prepare_4d_causal_attention_mask`` builds from generate's all-ones 2-D mask, scores in the
working dtype, softmax in float32 cast back, and a KV cache that concatenates. Layer 0 has a dense
SwiGLU MLP; the others a ``DeepseekV2MoE``: the ``MoEGate`` router (``F.linear`` on float32
copies, softmax, greedy unsorted top-k, times ``routed_scaling_factor``), the routed experts and
the shared experts (one SwiGLU of twice the expert width), added.

Two executions of the same weights (:data:`MOE_EXECUTIONS`, :data:`ATTN_EXECUTIONS`):

- ``moe="loop"`` (default) is the vendor's ``moe_infer``: per-expert token counts copied to the
  host (one device-to-host copy and sync per MoE layer), a Python loop with three GEMMs per expert
  that received tokens, a scatter back and the float32 weighted sum. ``moe="grouped"`` is one
  batched path with no host sync: sort by expert, ``torch.nn.functional.grouped_mm`` for gate/up
  and for down (as transformers 5's ``grouped_mm`` experts), weighted sum.
- ``attn="eager"`` (default) is the vendor's attention math with the 4-D mask; ``attn="sdpa"`` is
  ``scaled_dot_product_attention`` with ``is_causal`` on prefill and no mask tensor.

The expert weights are stacked (``gate_up_proj[E] = [gate; up]``, ``down_proj[E]``) so that both
executions read the same parameters; the loop multiplies by row slices of them, which are the
same contiguous matrices as the vendor's per-expert ``nn.Linear`` weights.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from dsocr.model.architecture import DecoderConfig

if TYPE_CHECKING:
    from dsocr.execution.static_decode import StaticKVCache

#: MoE executions: the vendor's per-expert loop with a host sync, or one grouped GEMM path.
MOE_EXECUTIONS: Final = ("loop", "grouped")
#: Decoder attention executions: the vendor's eager math, or torch's SDPA.
ATTN_EXECUTIONS: Final = ("eager", "sdpa")
#: ``routed_scaling_factor`` of the checkpoint's config (the DeepseekV2Config default).
ROUTED_SCALING: Final = 1.0


@attrs.define(eq=False)
class KVCache:
    """Keys and values per layer, grown by concatenation (transformers 4.46.3's ``DynamicCache``)."""

    keys: dict[int, torch.Tensor] = attrs.field(factory=dict)  #: layer -> ``(B, kv_heads, positions, d)``
    values: dict[int, torch.Tensor] = attrs.field(factory=dict)

    def get_seq_length(self, layer: int = 0) -> int:
        """Cached positions of ``layer`` (0 when empty)."""
        return int(self.keys[layer].shape[-2]) if layer in self.keys else 0

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys and values of ``layer``; return the whole cached keys and values."""
        if layer not in self.keys:
            self.keys[layer] = key
            self.values[layer] = value
        else:
            self.keys[layer] = torch.cat([self.keys[layer], key], dim=-2)
            self.values[layer] = torch.cat([self.values[layer], value], dim=-2)
        return self.keys[layer], self.values[layer]


class RMSNorm(nn.Module):
    """``DeepseekV2RMSNorm``: float32 statistics, the weight applied in the input dtype."""

    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class RotaryEmbedding(nn.Module):
    """transformers 4.46.3's default ``LlamaRotaryEmbedding``: cos/sin in float32 (autocast off), then cast.

    ``inv_freq`` is computed in float32 and stored in the model's dtype (the default dtype while
    the replica is built): the vendor's README loads the model and calls ``.to(torch.bfloat16)``,
    which rounds this buffer to bf16 too, and its forward upcasts the rounded values. (With the
    buffer kept in float32 the bf16 logits differ by about 2% relative L2; rounded, they are
    bit-equal to the vendor's code on the CPU.)
    """

    inv_freq: torch.Tensor

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq.to(torch.get_default_dtype()), persistent=False)
        self.attention_scaling = 1.0

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        pos = position_ids[:, None, :].float()
        device_type = x.device.type if x.device.type != "mps" else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            freqs = (inv.float() @ pos.float()).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos()
            sin = emb.sin()
        cos = cos * self.attention_scaling
        sin = sin * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``cat(-x2, x1)`` of the two halves of the last dimension."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate ``q`` and ``k`` ``(B, heads, L, d)`` by ``cos``/``sin`` ``(B, L, d)`` (half-split RoPE)."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def causal_mask(batch: int, q_len: int, past: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``_prepare_4d_causal_attention_mask`` of an all-ones 2-D mask: additive ``(B, 1, q, past + q)``."""
    kv_len = past + q_len
    ones = torch.ones((batch, kv_len), dtype=torch.long, device=device)  # generate's attention_mask
    expanded = ones[:, None, None, :].expand(batch, 1, q_len, kv_len).to(dtype)
    inverted = 1.0 - expanded
    padding = inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min).to(device)
    if q_len == 1:
        return padding
    mask = torch.full((q_len, q_len), torch.finfo(dtype).min, device=device)
    cond = torch.arange(mask.size(-1), device=device)
    mask.masked_fill_(cond < (cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    if past > 0:
        mask = torch.cat([torch.zeros(q_len, past, dtype=dtype, device=device), mask], dim=-1)
    causal = mask[None, None, :, :].expand(batch, 1, q_len, kv_len)
    return causal.masked_fill(padding.bool(), torch.finfo(dtype).min)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(B, kv_heads, L, d)`` -> ``(B, kv_heads * n_rep, L, d)`` (expand + reshape; nothing when ``n_rep`` is 1)."""
    if n_rep == 1:
        return x
    batch, kv_heads, length, dim = x.shape
    return x[:, :, None, :, :].expand(batch, kv_heads, n_rep, length, dim).reshape(batch, kv_heads * n_rep, length, dim)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, attn: str, groups: int = 1
) -> torch.Tensor:
    """Attention between RoPE/cache and ``o_proj``: ``(B, heads, q, d)`` and keys/values -> ``(B, q, heads * d)``.

    ``eager``: ``LlamaAttention``'s math (scores in the working dtype, additive ``mask``, float32
    softmax cast back); ``sdpa``: ``scaled_dot_product_attention``, causal when more than one query, with
    ``mask`` as its additive mask when one is given (a static-cache decode step).
    """
    bsz, _, q_len, head_dim = q.shape
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    if attn == "sdpa":  # a mask only in a static-cache step (over the whole cache); causal on prefill
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and q_len > 1)
    else:
        weights = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(head_dim)
        if mask is not None:
            weights = weights + mask[:, :, :, : k.shape[-2]]
        weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, v)
    return out.transpose(1, 2).contiguous().reshape(bsz, q_len, -1)


class DecoderAttention(nn.Module):
    """Multi-head attention with RoPE and a KV cache (``LlamaAttention``'s eager path, or SDPA)."""

    def __init__(self, cfg: DecoderConfig, layer: int, attn: str) -> None:
        super().__init__()
        self.layer_idx = layer
        self.num_heads = cfg.heads
        self.num_key_value_heads = cfg.kv_heads
        self.head_dim = cfg.head_dim
        self.attn = attn
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.hidden, bias=False)
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: KVCache | StaticKVCache,
    ) -> torch.Tensor:
        bsz, q_len, _ = hidden.size()
        q = self.q_proj(hidden).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(v, position_ids)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = cache.update(self.layer_idx, k, v)
        out = attend(q, k, v, mask, self.attn, self.num_heads // self.num_key_value_heads)
        return self.o_proj(out)  # type: ignore[no-any-return]


class SwiGluMlp(nn.Module):
    """``DeepseekV2MLP``: ``down(silu(gate(x)) * up(x))`` (layer 0's dense MLP and the shared experts)."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # type: ignore[no-any-return]


class MoeRouter(nn.Module):
    """``MoEGate`` (softmax scoring, greedy top-k, no normalization): ``(top-k ids, float32 weights)``.

    The vendor computes the logits with ``F.linear`` on float32 copies of the input and weight;
    under ``torch.autocast("cuda", bfloat16)`` (which the replica enters on CUDA in bf16, as the
    vendor's ``infer`` does) that linear runs in bf16; without autocast (the CPU) in float32.
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.top_k = cfg.experts_per_token
        self.weight = nn.Parameter(torch.empty((cfg.routed_experts, cfg.hidden)))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = hidden.shape[-1]
        logits = F.linear(hidden.view(-1, h).type(torch.float32), self.weight.type(torch.float32), None)
        scores = logits.softmax(dim=-1, dtype=torch.float32)
        weights, ids = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        return ids, weights * ROUTED_SCALING


class MoeExperts(nn.Module):
    """The routed experts (stacked SwiGLU weights) and the dispatch/combine around them.

    ``forward(x (T, H), ids (T, k), weights (T, k))`` -> ``(T, H)``, by the ``loop`` or ``grouped`` execution.
    """

    def __init__(self, cfg: DecoderConfig, moe: str) -> None:
        super().__init__()
        self.num_experts = cfg.routed_experts
        self.intermediate = cfg.moe_intermediate
        self.moe = moe
        inter, hidden = cfg.moe_intermediate, cfg.hidden
        self.gate_up_proj = nn.Parameter(torch.empty(cfg.routed_experts, 2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(cfg.routed_experts, hidden, inter))
        bound = 1 / math.sqrt(hidden)  # nn.Linear's default init range for the vendor's per-expert layers
        nn.init.uniform_(self.gate_up_proj, -bound, bound)
        nn.init.uniform_(self.down_proj, -1 / math.sqrt(inter), 1 / math.sqrt(inter))

    def forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.moe == "grouped":
            return self._grouped(x, ids, weights)
        return self._loop(x, ids, weights)

    def _expert(self, e: int, tokens: torch.Tensor) -> torch.Tensor:
        gate_up, inter = self.gate_up_proj[e], self.intermediate
        hidden = F.silu(F.linear(tokens, gate_up[:inter])) * F.linear(tokens, gate_up[inter:])
        return F.linear(hidden, self.down_proj[e])

    def _loop(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The vendor's ``moe_infer`` (``ep_size`` 1)."""
        counts = ids.new_zeros((ids.shape[0], self.num_experts))
        counts.scatter_(1, ids, 1)
        tokens_per_expert = counts.sum(dim=0)
        idxs = ids.view(-1).argsort()
        sorted_tokens = x[idxs // ids.shape[1]]
        # the vendor's ``.cpu().numpy()``: one device-to-host copy and a host sync per MoE layer
        host_counts: list[int] = tokens_per_expert.cpu().tolist()
        outputs = []
        start = 0
        for e, n in enumerate(host_counts):
            if n == 0:
                continue
            outputs.append(self._expert(e, sorted_tokens[start : start + n]))
            start += n
        outs = torch.cat(outputs, dim=0) if outputs else sorted_tokens.new_empty(0)
        new_x = torch.empty_like(outs)
        new_x[idxs] = outs
        return (
            new_x.view(*ids.shape, -1).type(weights.dtype).mul_(weights.unsqueeze(dim=-1)).sum(dim=1).type(new_x.dtype)
        )

    def _grouped(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """No host sync: tokens sorted by expert, two grouped GEMMs (transformers 5's ``grouped_mm`` experts)."""
        top_k, tokens, hidden = ids.size(-1), x.size(0), x.size(-1)
        sample_weights = weights.reshape(-1)
        expert_ids, perm = torch.sort(ids.reshape(-1))
        selected = x[perm // top_k]
        sample_weights = sample_weights[perm]
        # histc counts float ids on the CPU and int ids on CUDA (neither takes the other)
        counted = expert_ids.float() if x.device.type in ("cpu", "mps") else expert_ids.int()
        per_expert = torch.histc(counted, bins=self.num_experts, min=0, max=self.num_experts - 1)
        offsets = torch.cumsum(per_expert, dim=0, dtype=torch.int32)
        w = self.gate_up_proj
        proj = F.grouped_mm(selected.to(w.dtype), w.transpose(-2, -1), offs=offsets)
        gate, up = proj.chunk(2, dim=-1)
        proj = F.silu(gate) * up
        down = self.down_proj
        proj = F.grouped_mm(proj.to(down.dtype), down.transpose(-2, -1), offs=offsets)
        weighted = proj * sample_weights.unsqueeze(-1)
        inv_perm = torch.empty_like(perm)
        inv_perm[perm] = torch.arange(perm.size(0), device=x.device)
        weighted = weighted[inv_perm]
        return weighted.view(tokens, top_k, hidden).sum(dim=1).to(x.dtype)


class Moe(nn.Module):
    """``DeepseekV2MoE``: router, routed experts, plus the shared experts on the same input."""

    def __init__(self, cfg: DecoderConfig, moe: str) -> None:
        super().__init__()
        self.gate = MoeRouter(cfg)
        self.experts = MoeExperts(cfg, moe)
        self.shared_experts = SwiGluMlp(cfg.hidden, cfg.shared_intermediate)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        identity = hidden
        shape = hidden.shape
        ids, weights = self.gate(hidden)
        y = self.experts(hidden.view(-1, shape[-1]), ids, weights).view(*shape)
        return y + self.shared_experts(identity)  # type: ignore[no-any-return]


class DecoderLayer(nn.Module):
    """Pre-norm layer: RMSNorm, attention, residual; RMSNorm, dense MLP or MoE, residual."""

    def __init__(self, cfg: DecoderConfig, layer: int, moe: str, attn: str) -> None:
        super().__init__()
        self.self_attn = DecoderAttention(cfg, layer, attn)
        self.mlp: nn.Module = Moe(cfg, moe) if cfg.is_moe(layer) else SwiGluMlp(cfg.hidden, cfg.dense_intermediate)
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: KVCache | StaticKVCache,
    ) -> torch.Tensor:
        residual = hidden
        hidden = residual + self.self_attn(self.input_layernorm(hidden), mask, position_ids, cache)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))  # type: ignore[no-any-return]


class Decoder(nn.Module):
    """``DeepseekV2Model``: token embedding, layers, final RMSNorm (``lm_head`` is the replica's own)."""

    def __init__(self, cfg: DecoderConfig, moe: str, attn: str) -> None:
        super().__init__()
        self.attn = attn
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, moe, attn) for i in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.rms_eps)

    def forward(
        self, inputs_embeds: torch.Tensor, cache: KVCache | StaticKVCache, position: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden states after the final norm ``(B, L, hidden)``; ``cache`` grows by ``L`` positions.

        ``position`` (a ``(1,)`` long device tensor, with a static cache and one token): a static decode step
        at that position, attending over the whole cache through a mask built on the device.
        """
        batch, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        mask: torch.Tensor | None
        if position is not None:
            from dsocr.execution.static_decode import static_mask

            position_ids = position.reshape(1, 1)
            mask = static_mask(position, cache.keys[0].shape[-2], inputs_embeds.dtype)
        else:
            past = cache.get_seq_length()
            position_ids = torch.arange(past, length + past, dtype=torch.long, device=device).unsqueeze(0)
            mask = None if self.attn == "sdpa" else causal_mask(batch, length, past, inputs_embeds.dtype, device)
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, mask, position_ids, cache)
        return self.norm(hidden)  # type: ignore[no-any-return]
