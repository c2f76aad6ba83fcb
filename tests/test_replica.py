"""The exact-shape replica: parameter count, module paths, layout counts, forward on the CPU."""

from __future__ import annotations

import re

import attrs
import pytest

from dsocr.contract import module_paths as mp
from dsocr.contract.errors import BadInput
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from dsocr.execution.preprocess import preprocess  # noqa: E402
from dsocr.execution.replica import FULL_PARAMETERS, build_replica  # noqa: E402

pytestmark = pytest.mark.torch


def narrow_arch() -> Architecture:
    """Every width small, every structural feature kept (windowed + global SAM, dense + MoE decoder)."""
    a = DEEPSEEK_OCR
    return attrs.evolve(
        a,
        sam=attrs.evolve(
            a.sam,
            hidden=32,
            layers=2,
            heads=1,
            mlp=64,
            global_layers=(1,),
            neck_channels=16,
            compressor_channels=(16, 32),
        ),
        clip=attrs.evolve(a.clip, hidden=32, layers=2, heads=2, mlp=64),
        projector=attrs.evolve(a.projector, in_features=64, out_features=64),
        decoder=attrs.evolve(
            a.decoder,
            vocab=256,
            hidden=64,
            layers=2,
            heads=2,
            kv_heads=2,
            head_dim=32,
            dense_intermediate=128,
            moe_intermediate=32,
            routed_experts=8,
            experts_per_token=2,
        ),
        name="narrow",
    )


@pytest.fixture(scope="module")
def narrow():
    return build_replica(narrow_arch(), seed=3)


def test_full_parameter_count_is_exact_on_meta() -> None:
    r = build_replica(device="meta")
    assert r.parameter_count() == FULL_PARAMETERS == 3_336_106_240
    # the vendor's CLIP has no post_layernorm; its unused patch_embedding conv is a parameter
    assert sum(p.numel() for p in r.clip.parameters()) == 303_177_728
    assert sum(p.numel() for p in r.sam.parameters()) == 95_569_152
    assert sum(p.numel() for p in r.decoder.parameters()) + r.lm_head.weight.numel() == 2_934_734_080
    # bf16 bytes equal the vendor's safetensors payload
    assert r.parameter_count() * 2 == 6_672_212_480


def test_full_shapes_follow_the_architecture_on_meta() -> None:
    r = build_replica(device="meta")
    assert tuple(r.sam.pos_embed.shape) == (1, 64, 64, 768)
    assert tuple(r.sam.blocks[2].attn.rel_pos_h.shape) == (127, 64)  # global layer
    assert tuple(r.sam.blocks[0].attn.rel_pos_h.shape) == (27, 64)  # 14x14 windows
    assert tuple(r.sam.compressor.net_3.weight.shape) == (1024, 512, 3, 3)
    assert tuple(r.clip.embeddings.position_embedding.weight.shape) == (257, 1024)
    assert tuple(r.clip.transformer.layers[0].self_attn.qkv_proj.weight.shape) == (3 * 1024, 1024)  # fused
    assert tuple(r.decoder.layers[1].mlp.experts.gate_up_proj.shape) == (64, 2 * 896, 1280)
    assert tuple(r.decoder.layers[0].mlp.gate_proj.weight.shape) == (6848, 1280)
    assert tuple(r.lm_head.weight.shape) == (129_280, 1280)


def test_module_paths_are_the_contract_paths() -> None:
    r = build_replica(device="meta")
    paths = r.module_paths()
    assert paths[mp.sam_block(11)] is r.sam.blocks[11]
    assert paths[mp.clip_layer(23)] is r.clip.transformer.layers[23]
    assert paths[mp.SAM_COMPRESSOR] is r.sam.compressor and paths[mp.SAM_NECK] is r.sam.neck
    assert paths[mp.decoder_mlp(0)] is r.decoder.layers[0].mlp
    assert paths[mp.decoder_moe_experts(11)] is r.decoder.layers[11].mlp.experts
    assert mp.decoder_moe(0) not in paths and mp.decoder_mlp(1) not in paths
    counts = {
        "sam blocks": sum(1 for p in paths if re.fullmatch(r"vision\.sam\.blocks\.\d+", p)),
        "clip layers": sum(1 for p in paths if re.fullmatch(r"vision\.clip\.layers\.\d+", p)),
        "moe": sum(1 for p in paths if re.fullmatch(r"decoder\.layers\.\d+\.moe", p)),
    }
    assert counts == {"sam blocks": 12, "clip layers": 24, "moe": 11}
    assert len(paths) == 10 + 12 + 24 + 12 * 2 + 1 + 11 * 4


@pytest.mark.parametrize(
    ("mode", "size", "grid", "embeddings"),
    [
        ("tiny", (800, 1000), (1, 1), 8 * 9 + 1),
        ("base", (800, 1000), (1, 1), 273),
        ("gundam", (1300, 1280), (2, 2), 693),
        ("gundam", (1900, 1280), (3, 2), 20 * 31 + 273),
        ("gundam", (600, 500), (1, 1), 273),
    ],
)
def test_encode_views_gives_the_layout_count(narrow, mode, size, grid, embeddings) -> None:
    views = preprocess(Image.new("RGB", size, (230, 230, 230)), mode)
    assert views.grid == grid
    with torch.inference_mode():
        emb = narrow.encode_views(views)
    assert tuple(emb.shape) == (embeddings, 64) == (views.image_tokens, 64)
    assert torch.isfinite(emb).all()


def test_layout_puts_newlines_and_separator_where_the_vendor_does(narrow) -> None:
    g = torch.arange(4, dtype=torch.float32).reshape(1, 4, 1).expand(1, 4, 64)  # 2x2 global map
    crops = 10 + torch.arange(8, dtype=torch.float32).reshape(2, 4, 1).expand(2, 4, 64)  # 2 crops of 2x2, grid 2x1
    out = narrow.lay_out(g, crops, (2, 1))
    nl = float(narrow.layout.image_newline[0])
    sep = float(narrow.layout.view_separator[0])
    # tiled crops: row 0 = crop0 row0, crop1 row0, newline; row 1 = crop0 row1, crop1 row1, newline
    assert [float(x) for x in out[:, 0]] == [10, 11, 14, 15, nl, 12, 13, 16, 17, nl, 0, 1, nl, 2, 3, nl, sep]


def test_prefill_and_decode_step_with_two_layers(narrow) -> None:
    views = preprocess(Image.new("RGB", (300, 400), (10, 200, 30)), "tiny")
    with torch.inference_mode():
        emb = narrow.encode_views(views)
        x = narrow.embed_prompt(torch.tensor([0]), emb, torch.arange(1, 12))
        assert tuple(x.shape) == (1, 73 + 12, 64)
        logits, past = narrow.prefill(x)
        assert tuple(logits.shape) == (1, 256)
        assert past.get_seq_length() == 85
        token = logits.argmax(-1, keepdim=True)
        logits2, past = narrow.decode_step(token, past)
    assert tuple(logits2.shape) == (1, 256)
    assert past.get_seq_length() == 86
    assert torch.isfinite(logits2).all()


def test_seeded_weights_are_reproducible() -> None:
    a, b = build_replica(narrow_arch(), seed=7), build_replica(narrow_arch(), seed=7)
    c = build_replica(narrow_arch(), seed=8)
    wa, wb, wc = (r.decoder.layers[1].mlp.experts.down_proj for r in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.dtype == torch.float32 and a.lm_head.weight.dtype == torch.float32


def test_dtype_and_execution_options() -> None:
    r = build_replica(narrow_arch(), dtype="bfloat16", attn_implementation="sdpa", moe="grouped")
    assert r.lm_head.weight.dtype == torch.bfloat16
    assert (r.moe, r.attn_implementation) == ("grouped", "sdpa")
    assert r.execution == {  # no autocast on the CPU; decode, batch, cache: set by the capture worker
        "moe": "grouped",
        "attn": "sdpa",
        "autocast": "none",
        "decode": "eager",
        "batch": 1,
        "batching": "bucketed-by-grid",
        "dtype": "bfloat16",
        "cache": "dynamic",
    }
    d = build_replica(narrow_arch())
    assert (d.moe, d.attn_implementation) == ("loop", "eager")  # the vendor's execution by default
    with pytest.raises(BadInput, match="attn_implementation 'flash' is unknown"):
        build_replica(narrow_arch(), attn_implementation="flash")
    with pytest.raises(BadInput, match="moe 'fast' is unknown"):
        build_replica(narrow_arch(), moe="fast")
    with pytest.raises(BadInput, match="unknown dtype 'int8'"):
        build_replica(narrow_arch(), dtype="int8")


def test_casts_follow_the_vendors_bf16_model_and_cuda_autocast() -> None:
    """bf16 on CUDA runs under torch.autocast("cuda", bf16) as the vendor's infer; the rotary ``inv_freq`` is
    stored in the model's dtype (the vendor's ``.to(torch.bfloat16)`` rounds it) and upcast in the forward."""
    import warnings

    r = build_replica(narrow_arch(), device="meta", dtype="bfloat16")
    assert r.decoder.layers[0].self_attn.rotary_emb.inv_freq.dtype == torch.bfloat16
    assert build_replica(narrow_arch(), device="meta").decoder.layers[0].self_attn.rotary_emb.inv_freq.dtype == (
        torch.float32
    )
    assert r.autocast_dtype is None  # not CUDA: no autocast, as the vendor's autocast("cuda") off CUDA
    on_cuda = attrs.evolve(r, device=torch.device("cuda"))
    assert {k: on_cuda.execution[k] for k in ("moe", "attn", "autocast")} == {
        "moe": "loop",
        "attn": "eager",
        "autocast": "bfloat16",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU-only torch: "CUDA is not available ... Disabling autocast"
        ctx = on_cuda._autocast()
    assert isinstance(ctx, torch.autocast) and (ctx.device, ctx.fast_dtype) == ("cuda", torch.bfloat16)
    assert attrs.evolve(on_cuda, dtype=torch.float32).autocast_dtype is None  # an fp32 run is not the vendor's


def test_replica_runs_without_transformers() -> None:
    """The replica is dsocr's own torch code: it builds and runs with transformers unimportable."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "import torch\n"
        "from test_replica import narrow_arch\n"
        "from dsocr.execution.replica import build_replica\n"
        "r = build_replica(narrow_arch(), seed=1)\n"
        "with torch.inference_mode():\n"
        "    logits, past = r.prefill(torch.randn(1, 5, 64))\n"
        "    logits, past = r.decode_step(logits.argmax(-1, keepdim=True), past)\n"
        "print(past.get_seq_length(), 'transformers' in sys.modules and sys.modules['transformers'] is not None)\n"
    )
    import os

    env = dict(os.environ)
    here = os.path.dirname(__file__)
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["6", "False"]
