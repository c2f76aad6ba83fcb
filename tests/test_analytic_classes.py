"""The declarative class table: replica and vendor classes -> analytic kinds; unknowns listed, never dropped."""

from __future__ import annotations

import pytest

from dsocr.analytic.classes import UNCLASSIFIED, classify, classify_modules, unclassified


@pytest.mark.parametrize(
    ("cls", "name", "kind"),
    [
        ("SamBlock", "sam.blocks.3", "sam_block"),
        ("SamCompressor", "sam.compressor", "sam_compressor"),
        ("ClipLayer", "clip.transformer.layers.0", "clip_layer"),
        ("DecoderLayer", "decoder.layers.5", "decoder_layer"),
        ("Moe", "decoder.layers.5.mlp", "moe"),
        ("MoeExperts", "decoder.layers.5.mlp.experts", "moe_experts"),
        ("MoeRouter", "decoder.layers.5.mlp.gate", "moe_router"),
        ("SwiGluMlp", "decoder.layers.0.mlp", "dense_mlp"),
        ("SwiGluMlp", "decoder.layers.5.mlp.shared_experts", "moe_shared_experts"),
        ("LlamaAttention", "model.layers.0.self_attn", "decoder_attention"),  # the vendor's (use_mla=False)
        ("Linear", "lm_head", "lm_head"),
        ("Linear", "decoder.layers.0.self_attn.q_proj", "linear"),
        ("Block", "model.sam_model.blocks.2", "sam_block"),  # the vendor's SAM
        ("NoTPTransformerBlock", "model.vision_model.transformer.layers.4", "clip_layer"),
        ("MlpProjector", "model.projector", "projector"),
        ("DeepseekV2MoE", "model.layers.3.mlp", "moe"),
        ("DeepseekV2MLP", "model.layers.3.mlp.shared_experts", "moe_shared_experts"),
        ("MoEGate", "model.layers.3.mlp.gate", "moe_router"),
        ("Module", "layout", "layout"),
    ],
)
def test_classify(cls: str, name: str, kind: str) -> None:
    assert classify(cls, name) == kind


def test_unknown_classes_are_listed_not_dropped() -> None:
    items = classify_modules([("a", "Linear"), ("b", "FancyNewBlock"), ("c", "Module")])
    assert [c.name for c in items] == ["a", "b", "c"]
    assert [(c.name, c.class_name) for c in unclassified(items)] == [("b", "FancyNewBlock"), ("c", "Module")]
    assert classify("FancyNewBlock", "layout") == UNCLASSIFIED  # the layout rule is for the replica's bare Module


@pytest.mark.torch
def test_every_replica_module_is_classified() -> None:
    pytest.importorskip("torch")
    replica = pytest.importorskip("dsocr.execution.replica")
    r = replica.build_replica(device="meta")
    items = classify_modules((n, type(m).__name__) for n, m in r.root.named_modules())
    assert unclassified(items) == []
    paths = r.module_paths()
    kinds = {p: classify(type(m).__name__, p) for p, m in paths.items()}
    assert kinds["vision.sam.blocks.2"] == "sam_block"
    assert kinds["decoder.layers.5.moe.shared_experts"] == "moe_shared_experts"
    assert kinds["decoder.layers.0.mlp"] == "dense_mlp"
    assert kinds["lm_head"] == "lm_head"
    assert UNCLASSIFIED not in kinds.values()
