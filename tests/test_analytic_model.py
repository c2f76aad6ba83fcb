"""The composed analytic model: exact parameter count, hand-worked golden values, scaling, stages."""

from __future__ import annotations

import attrs
import pytest

from dsocr.analytic import layers
from dsocr.analytic.cost import Cost
from dsocr.analytic.hierarchy import module_rows
from dsocr.analytic.tree import total_of
from dsocr.analytic.workload import ContextMode, Workload, estimate, parse_context
from dsocr.contract.errors import BadInput
from dsocr.model.architecture import DEEPSEEK_OCR, SamConfig

GUNDAM_2X2 = estimate(Workload(mode="gundam", crop_grid=(2, 2), prompt_tokens=12, new_tokens=128))


def test_full_parameter_count_is_the_checkpoints() -> None:
    assert GUNDAM_2X2.params == 3_336_106_240
    assert GUNDAM_2X2.weight_footprint_bytes == 6_672_212_480
    # decoder with embeddings and lm_head, then vision + projector + layout embeddings
    assert GUNDAM_2X2.stage("prefill").cost.params == 2_934_734_080
    assert GUNDAM_2X2.stage("vision").cost.params == 401_372_160


def test_parameter_breakdown_by_hand() -> None:
    vision = GUNDAM_2X2.stage("vision")
    block = 1536 + (768 * 2304 + 2304) + (768 * 768 + 768) + 1536 + (768 * 3072 + 3072) + (3072 * 768 + 768)
    windowed = block + 2 * (2 * 14 - 1) * 64
    global_ = block + 2 * (2 * 64 - 1) * 64
    sam = (768 * 3 * 256 + 768) + 64 * 64 * 768 + 8 * windowed + 4 * global_
    sam += (256 * 768 + 512 + 256 * 256 * 9 + 512) + 512 * 256 * 9 + 1024 * 512 * 9
    assert vision.module("vision.sam").total().params == sam == 95_569_152  # type: ignore[union-attr]
    clip_layer = 2048 + (1024 * 3072 + 3072) + (1024 * 1024 + 1024) + 2048 + (1024 * 4096 + 4096) + (4096 * 1024 + 1024)
    clip = 1024 + 1024 * 3 * 14 * 14 + 257 * 1024 + 2048 + 24 * clip_layer
    assert vision.module("vision.clip").total().params == clip  # type: ignore[union-attr]
    assert vision.module("vision.projector").total().params == 2048 * 1280 + 1280 + 2 * 1280  # type: ignore[union-attr]
    prefill = GUNDAM_2X2.stage("prefill")
    moe = prefill.module("decoder.layers.5.moe")
    assert moe is not None
    assert moe.total().params == 64 * 1280 + 64 * 3 * 1280 * 896 + 3 * 1280 * 1792
    assert prefill.module("decoder.layers.0.mlp").total().params == 3 * 1280 * 6848  # type: ignore[union-attr]


def test_tiny_sam_block_golden() -> None:
    """A windowed block on a 3x3 map with 2x2 windows, hidden 8, 2 heads, MLP 16, worked by hand."""
    cfg = SamConfig(hidden=8, heads=2, mlp=16, layers=1, window=2, global_layers=())
    block = layers.sam_block(0, cfg, side=3, batch=1, b=2, impl="sdpa").total()
    # padded to 4x4: 16 rows through qkv/proj, 4 windows of 4 tokens; 9 rows through the MLP
    qkv, proj = 2 * 16 * 8 * 24, 2 * 16 * 8 * 8
    attn = 4 * (4 * 2) * 16 * 4  # 4 windows x 2 heads, 16 pairs, head_dim 4, QK and AV
    rel = 2 * 2 * (4 * 2 * 4) * 2 * 4  # two einsums over 32 queries x 2 keys per axis x 4 channels
    mlp = 2 * (2 * 9 * 8 * 16)
    assert block.tensor_flops == qkv + proj + attn + rel + mlp == 15_872
    assert block.params == 16 + 216 + 72 + 2 * 3 * 4 + 16 + 144 + 136 == 624


def test_gundam_2x2_workload_facts() -> None:
    w = GUNDAM_2X2.workload
    assert w.image_embeddings == 693
    assert w.prefill_length == 705
    assert w.decode_steps == 127
    assert GUNDAM_2X2.decode_context == (706, 832, 127 * 705 + 127 * 128 // 2)
    assert [(v.kind, v.size, v.count, v.tokens) for v in GUNDAM_2X2.views] == [
        ("crop", 640, 4, 100),
        ("global", 1024, 1, 256),
    ]
    # SAM runs twice (the 4 crops as one batch, then the global view), every decoder module once per token
    rows = {r.path: r for r in module_rows(GUNDAM_2X2)}
    assert rows["vision.sam.blocks.3"].calls == 2
    assert rows["decoder.layers.5.moe.experts"].calls == 128
    assert rows["lm_head"].calls == 128
    assert {r.path for r in module_rows(GUNDAM_2X2) if r.parent is None} == {
        "vision.sam",
        "vision.clip",
        "vision.projector",
        "decoder",
        "lm_head",
    }


def test_linear_flops_are_linear_in_tokens() -> None:
    for prompt in (12, 500):
        est = estimate(Workload(mode="base", prompt_tokens=prompt, new_tokens=1))
        att = est.stage("prefill").module("decoder.layers.3.attention")
        assert att is not None
        q = next(o for o in att.ops if o.name == "q_proj")
        assert q.cost.tensor_flops == 2 * (273 + prompt) * 1280 * 1280


def test_global_attention_is_quadratic_windowed_linear() -> None:
    def attention_flops(mode: str, block: int) -> int:
        est = estimate(Workload(mode=mode, new_tokens=1))
        m = est.stage("vision").module(f"vision.sam.blocks.{block}")
        assert m is not None
        return sum(o.cost.tensor_flops for o in m.ops if o.name == "attention")

    # tiny (512): 32x32 tokens; base (1024): 64x64 -> 4x the tokens
    assert attention_flops("base", 2) == 16 * attention_flops("tiny", 2)
    # windowed: 9 windows of 14x14 (32 -> 42) vs 25 windows (64 -> 70)
    assert attention_flops("base", 0) * 9 == 25 * attention_flops("tiny", 0)


def test_decode_sum_is_exact_over_steps() -> None:
    """The closed-form decode sum equals building and adding every step."""
    w = Workload(mode="tiny", prompt_tokens=5, new_tokens=6)
    est = estimate(w)
    d = DEEPSEEK_OCR.decoder
    brute = Cost()
    for c in range(w.prefill_length + 1, w.prefill_length + w.decode_steps + 1):
        ps = layers.Pass(1, 1, c, decode=True)
        brute = brute.merged(total_of((layers.decoder(d, ps, b=2, impl="sdpa"), layers.lm_head(d, 1, b=2))))
    got = est.stage("decode").cost
    assert attrs.evolve(got, act_bytes=0) == attrs.evolve(brute, act_bytes=0)


def test_decode_context_modes() -> None:
    base = Workload(mode="gundam", crop_grid=(2, 2), new_tokens=9)
    # gundam 2x2: 693 image embeddings + 12 prompt tokens = 705 prefill positions, 8 decode steps
    assert base.decode_contexts(8192) == (706, 713, 8 * 705 + 36)
    # max: every step at the final length 705 + 8
    assert attrs.evolve(base, context=ContextMode("max")).decode_contexts(8192) == (713, 713, 8 * 713)
    assert attrs.evolve(base, context=parse_context("fixed:4096")).decode_contexts(8192) == (4096, 4096, 8 * 4096)
    att = 4 * 10 * 128 * 12  # per key position: heads x head_dim x layers, QK and AV
    light = estimate(base)
    top = estimate(attrs.evolve(base, context=ContextMode("max")))
    assert top.stage("decode").cost.tensor_flops - light.stage("decode").cost.tensor_flops == att * (
        8 * 713 - (8 * 705 + 36)
    )
    assert top.kv_cache_bytes == light.kv_cache_bytes == 2 * 12 * 10 * 128 * 713 * 2
    heavy = estimate(attrs.evolve(base, context=parse_context("fixed:8192")))  # the model's whole window
    assert heavy.stage("decode").cost.tensor_flops - light.stage("decode").cost.tensor_flops == att * (
        8 * 8192 - (8 * 705 + 36)
    )
    assert heavy.kv_cache_bytes == 2 * 12 * 10 * 128 * 8192 * 2


def test_kv_cache_and_memory() -> None:
    assert GUNDAM_2X2.kv_cache_bytes == 2 * 12 * 10 * 128 * (705 + 127) * 2
    assert GUNDAM_2X2.peak_activation_bytes > 0


def test_prefill_logits_last_or_all() -> None:
    last = GUNDAM_2X2.stage("prefill").module("lm_head")
    assert last is not None and last.total().tensor_flops == 2 * 1280 * 129_280
    every = estimate(Workload(crop_grid=(2, 2), prefill_logits="all")).stage("prefill").module("lm_head")
    assert every is not None and every.total().tensor_flops == 705 * 2 * 1280 * 129_280


def test_batch_scales_work_not_params() -> None:
    two = estimate(Workload(crop_grid=(2, 2), batch=2))
    assert two.params == GUNDAM_2X2.params
    assert two.stage("vision").cost.tensor_flops == 2 * GUNDAM_2X2.stage("vision").cost.tensor_flops


def test_for_image_picks_the_vendor_grid() -> None:
    w = Workload.for_image(1654, 2339, "gundam")
    assert w.crop_grid == (2, 3)
    assert estimate(w).workload.image_embeddings == 273 + 30 * 21


def test_gundam_m_views() -> None:
    est = estimate(Workload(mode="gundam-m", crop_grid=(2, 1), new_tokens=2))
    assert [(v.kind, v.size, v.tokens) for v in est.views] == [("crop", 1024, 256), ("global", 1280, 400)]
    assert est.workload.image_embeddings == 421 + 16 * 33


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "huge"}, r"unknown resolution mode 'huge'"),
        ({"mode": "base", "crop_grid": (2, 2)}, r"mode base does not crop"),
        ({"new_tokens": 0}, r"new tokens = 0 is out of range: give at least 1"),
        ({"prompt_tokens": -1}, r"prompt tokens = -1 is out of range"),
        ({"batch": 0}, r"batch = 0 is out of range"),
        ({"dtype": "int3"}, r"dtype 'int3' is unknown: use one of bf16, fp16, fp32"),
        ({"new_tokens": 8000, "crop_grid": (3, 3)}, r"exceeds the model.s 8192-position window"),
        ({"prompt_tokens": 8000, "crop_grid": (3, 3)}, r"prefill length 9203 exceeds the model.s 8192-position window"),
    ],
)
def test_bad_workloads(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        estimate(Workload(**kwargs))  # type: ignore[arg-type]


def test_bad_context() -> None:
    for bad in ("fixed:", "fixed:0", "sometimes"):
        with pytest.raises(BadInput, match=r"use auto, max or fixed:N with N > 0"):
            parse_context(bad)
