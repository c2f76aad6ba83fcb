"""Numerics of dsocr's plain-torch replica: equal to the transformers-5 replica from the same weights,
and its executions (``moe`` loop/grouped, ``attn`` eager/sdpa) equal to each other (CPU, small shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from PIL import Image  # noqa: E402

from dsocr.execution.checkpoint import load_model  # noqa: E402
from dsocr.execution.preprocess import preprocess  # noqa: E402
from dsocr.execution.replica import build_replica  # noqa: E402
from test_replica import narrow_arch  # noqa: E402

pytestmark = pytest.mark.torch

EXECUTIONS = [("loop", "eager"), ("loop", "sdpa"), ("grouped", "eager"), ("grouped", "sdpa")]


def run(model, views, steps: int = 2):
    """Prefill logits and ``steps`` greedy decode logits, float32 on the CPU."""
    with torch.inference_mode():
        emb = model.encode_views(views.to(model.device, model.dtype))
        x = model.embed_prompt(torch.tensor([0]), emb, torch.arange(1, 12))
        logits, past = model.prefill(x)
        out = [logits.float()]
        for _ in range(steps):
            logits, past = model.decode_step(logits.argmax(-1, keepdim=True), past)
            out.append(logits.float())
    return out


def rel_l2(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def views():
    return preprocess(Image.new("RGB", (700, 560), (40, 120, 200)), "tiny")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, views):
    """The transformers-5 replica of before (seeded, float32, SDPA): its logits, its weights as a vendor checkpoint."""
    pytest.importorskip("transformers.models.deepseek_ocr2")
    import replica_transformers5 as t5

    old = t5.build_replica(narrow_arch(), seed=5, attn_implementation="sdpa")
    mapping = t5.vendor_map_t5(old.arch, "clip.vision_model." if hasattr(old.clip, "vision_model") else "clip.")
    params = dict(old.root.named_parameters())
    tensors = {}
    for name, pieces in mapping.items():
        parts = []
        for piece in pieces:
            t = params[piece.target]
            t = t if piece.expert is None else t[piece.expert]
            t = t if piece.dst_rows is None else t[piece.dst_rows[0] : piece.dst_rows[1]]
            parts.append(t)
        tensors[name] = torch.cat(parts).contiguous().clone()
    directory = tmp_path_factory.mktemp("t5ckpt")
    (directory / "config.json").write_text(json.dumps({"language_config": {"first_k_dense_replace": 1}}))
    safetensors_torch.save_file(tensors, str(directory / "model.safetensors"))
    return run(old, views), directory, sorted(old.module_paths())


@pytest.mark.parametrize(("moe", "attn"), EXECUTIONS)
def test_same_logits_as_the_transformers5_replica_in_float32(reference, views, moe: str, attn: str) -> None:
    want, directory, old_paths = reference
    new = load_model(Path(directory), base=narrow_arch(), moe=moe, attn_implementation=attn)
    assert (new.moe, new.attn_implementation) == (moe, attn)
    assert sorted(new.module_paths()) == old_paths  # the same module ranges as before
    got = run(new, views)
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == torch.float32
        assert rel_l2(g, w) < 1e-5, step
        assert torch.equal(g.argmax(-1), w.argmax(-1)), step


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_executions_agree_with_the_vendor_default(views, dtype: str) -> None:
    base = run(build_replica(narrow_arch(), seed=9, dtype=dtype), views)
    bound = 1e-5 if dtype == "float32" else 2e-2
    for moe, attn in EXECUTIONS[1:]:
        other = run(build_replica(narrow_arch(), seed=9, dtype=dtype, moe=moe, attn_implementation=attn), views)
        for step, (a, b) in enumerate(zip(other, base, strict=True)):
            assert rel_l2(a, b) < bound, (moe, attn, step)
    assert all(t.dtype == torch.float32 for t in base)  # logits.float(), as the vendor's forward


def test_prefill_runs_lm_head_over_every_position(views) -> None:
    r = build_replica(narrow_arch(), seed=1)
    seen = []
    handle = r.lm_head.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    try:
        with torch.inference_mode():
            x = r.embed_prompt(torch.tensor([0]), r.encode_views(views), torch.arange(1, 12))
            logits, past = r.prefill(x)
            r.decode_step(logits.argmax(-1, keepdim=True), past)
    finally:
        handle.remove()
    assert seen == [(1, x.shape[1], 64), (1, 1, 64)]


def test_loop_moe_syncs_with_the_host_once_per_moe_layer_and_grouped_never(views, monkeypatch) -> None:
    """The vendor's ``moe_infer`` copies the per-expert counts to the host; the grouped path does not."""
    calls = {"n": 0}
    real = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    for moe, want in (("loop", 1), ("grouped", 0)):  # narrow_arch: one MoE layer
        calls["n"] = 0
        r = build_replica(narrow_arch(), seed=1, moe=moe)
        with torch.inference_mode():
            x = r.embed_prompt(torch.tensor([0]), r.encode_views(views), torch.arange(1, 12))
            _, past = r.prefill(x)
            calls["n"] = 0
            r.decode_step(torch.tensor([[3]]), past)
        assert calls["n"] == want, moe
