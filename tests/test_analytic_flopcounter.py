"""The analytic model against ``torch.utils.flop_counter.FlopCounterMode`` on the CPU replica (eager attention).

The counter counts matmuls and convolutions (what the model calls tensor FLOPs) per module; it
sees ``scaled_dot_product_attention`` as 0 on the CPU, so the decoder runs eager and SAM's and
CLIP's SDPA (the vendor's, their only path) is replaced here by the same math written out; the
routed experts are checked in test_analytic_fixture.py instead. Widths are narrowed for
speed; every structural feature stays (windowed + global SAM blocks with padding, dense + MoE
decoder layers).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from dsocr.analytic import layers
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture

torch = pytest.importorskip("torch")
replica_mod = pytest.importorskip("dsocr.execution.replica", reason="no replica module")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]  # ~10 s: building and running the replica

VIEW = 320  # 20x20 SAM grid: windows pad 20 -> 28 (4 windows of 14x14); compressed to 5x5
BATCH = 2
PROMPT = 37
REL = 0.01  # the issue asks for 1% (the rotary embedding's tiny inv_freq x positions matmul is all that differs)


def narrow() -> Architecture:
    a = DEEPSEEK_OCR
    return attrs.evolve(
        a,
        sam=attrs.evolve(
            a.sam,
            hidden=32,
            layers=3,
            heads=2,
            mlp=64,
            global_layers=(1,),
            neck_channels=16,
            compressor_channels=(16, 32),
        ),
        clip=attrs.evolve(a.clip, hidden=32, layers=2, heads=2, mlp=64),
        projector=attrs.evolve(a.projector, in_features=64, out_features=48),
        decoder=attrs.evolve(
            a.decoder,
            vocab=256,
            hidden=48,
            layers=3,
            heads=2,
            kv_heads=2,
            head_dim=24,  # = hidden / heads, as in the real model (1280 / 10 = 128)
            dense_intermediate=96,
            moe_intermediate=32,
            routed_experts=8,
            experts_per_token=2,
        ),
        name="narrow",
    )


ARCH = narrow()


def _counts(fc: Any) -> dict[str, int]:
    return {name: int(sum(ops.values())) for name, ops in fc.get_flop_counts().items()}


def _math_sdpa(q: Any, k: Any, v: Any, attn_mask: Any = None, **_: Any) -> Any:
    """SDPA written out (scores, mask, softmax, values), so that the counter sees its matmuls."""
    weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if attn_mask is not None:
        weights = weights + attn_mask
    return weights.softmax(-1) @ v


@pytest.fixture(scope="module")
def counted() -> dict[str, Any]:
    from dsocr.execution.replica_decoder import KVCache

    r = replica_mod.build_replica(ARCH, device="cpu", attn_implementation="eager")
    out: dict[str, Any] = {}
    patch = pytest.MonkeyPatch()
    patch.setattr(torch.nn.functional, "scaled_dot_product_attention", _math_sdpa)
    try:
        with torch.no_grad():
            pixels = torch.randn(BATCH, 3, VIEW, VIEW)
            with FlopCounterMode(display=False) as fc:
                sam_map = r.sam(pixels)
            out["sam"] = _counts(fc)
            with FlopCounterMode(display=False) as fc:
                clip_out = r.clip(sam_map)
            out["clip"] = _counts(fc)
    finally:
        patch.undo()
    with torch.no_grad():
        features = torch.cat([clip_out[:, 1:], sam_map.flatten(2).transpose(1, 2)], dim=-1)
        with FlopCounterMode(display=False) as fc:
            r.projector(features)
        out["projector"] = _counts(fc)["Global"]
        cache = KVCache()
        with FlopCounterMode(display=False) as fc:
            hidden = r.decoder(torch.randn(1, PROMPT, ARCH.decoder.hidden), cache)
        out["prefill"] = _counts(fc)
        with FlopCounterMode(display=False) as fc:
            r.decoder(torch.randn(1, 1, ARCH.decoder.hidden), cache)
        out["decode"] = _counts(fc)
        with FlopCounterMode(display=False) as fc:
            r.lm_head(hidden)  # every prefill position, as the replica's (and the vendor's) prefill
        out["lm_head"] = _counts(fc)["Global"]
    return out


def _tensor(module: Any) -> int:
    return int(module.total().tensor_flops)


def test_sam_blocks_neck_compressor(counted: dict[str, Any]) -> None:
    sam = layers.sam(ARCH.sam, VIEW, BATCH, b=4, impl="eager")
    got = counted["sam"]
    by_path = {m.path: m for m in sam.walk()}
    for i in range(ARCH.sam.layers):
        assert _tensor(by_path[f"vision.sam.blocks.{i}"]) == pytest.approx(got[f"SamEncoder.blocks.{i}"], rel=REL), (
            f"block {i}"
        )
    assert _tensor(by_path["vision.sam.patch_embed"]) == pytest.approx(got["SamEncoder.patch_embed"], rel=REL)
    assert _tensor(by_path["vision.sam.neck"]) == pytest.approx(got["SamEncoder.neck"], rel=REL)
    assert _tensor(by_path["vision.sam.compressor"]) == pytest.approx(got["SamEncoder.compressor"], rel=REL)
    assert _tensor(sam) == pytest.approx(got["Global"], rel=REL)


def test_clip_layers(counted: dict[str, Any]) -> None:
    side = layers.sam_output_side(ARCH.sam, VIEW)
    clip = layers.clip(ARCH.clip, side, BATCH, b=4, impl="eager")
    got = counted["clip"]
    for layer in clip.children[1:]:
        i = layer.path.rsplit(".", 1)[1]
        assert _tensor(layer) == pytest.approx(got[f"ClipVision.transformer.layers.{i}"], rel=REL), layer.path
    assert _tensor(clip) == pytest.approx(got["Global"], rel=REL)


def test_projector(counted: dict[str, Any]) -> None:
    side = layers.sam_output_side(ARCH.sam, VIEW)
    assert _tensor(layers.projector(ARCH.projector, side, BATCH, b=4)) == pytest.approx(counted["projector"], rel=REL)


@pytest.mark.parametrize("stage", ["prefill", "decode"])
def test_decoder_attention_mlp_router_shared(counted: dict[str, Any], stage: str) -> None:
    d = ARCH.decoder
    ps = layers.Pass(1, PROMPT, PROMPT, decode=False) if stage == "prefill" else layers.Pass(1, 1, PROMPT + 1, True)
    dec = {m.path: m for m in layers.decoder(d, ps, b=4, impl="eager").walk()}
    got = counted[stage]
    for i in range(d.layers):
        key = f"Decoder.layers.{i}"
        assert _tensor(dec[f"decoder.layers.{i}.attention"]) == pytest.approx(got[f"{key}.self_attn"], rel=REL)
        if d.is_moe(i):
            assert _tensor(dec[f"decoder.layers.{i}.moe.router"]) == pytest.approx(got[f"{key}.mlp.gate"], rel=REL)
            assert _tensor(dec[f"decoder.layers.{i}.moe.shared_experts"]) == pytest.approx(
                got[f"{key}.mlp.shared_experts"], rel=REL
            )
        else:
            assert _tensor(dec[f"decoder.layers.{i}.mlp"]) == pytest.approx(got[f"{key}.mlp"], rel=REL)


def test_lm_head(counted: dict[str, Any]) -> None:
    assert _tensor(layers.lm_head(ARCH.decoder, PROMPT, b=4)) == pytest.approx(counted["lm_head"], rel=REL)
