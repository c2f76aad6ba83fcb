"""Checkpoint loading: the vendor name/layout map, a synthetic vendor-layout checkpoint, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsocr.contract.errors import BadInput, EnvironmentProblem, InputNotFound
from dsocr.execution.checkpoint import Piece, check_remote_code_version, load_model, vendor_map
from dsocr.model.architecture import DEEPSEEK_OCR

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from dsocr.execution.replica import build_replica  # noqa: E402
from test_replica import narrow_arch  # noqa: E402

pytestmark = pytest.mark.torch


def vendor_tensors(replica, mapping: dict[str, tuple[Piece, ...]]) -> dict[str, object]:
    """The replica's weights written back in the vendor's names and layout (fused qkv, per-expert)."""
    params = dict(replica.root.named_parameters())
    out = {}
    for name, pieces in mapping.items():
        parts = []
        for piece in pieces:
            t = params[piece.target]
            if piece.expert is not None:
                t = t[piece.expert]
            if piece.dst_rows is not None:
                t = t[piece.dst_rows[0] : piece.dst_rows[1]]
            parts.append(t)
        out[name] = torch.cat(parts).contiguous().clone() if len(parts) > 1 else parts[0].contiguous().clone()
    return out


def write_checkpoint(directory: Path, tensors: dict[str, object], config: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or {"language_config": {"first_k_dense_replace": 1}}))
    safetensors_torch.save_file(tensors, str(directory / "model-00001-of-000001.safetensors"))
    return directory


def test_full_map_has_the_vendor_tensor_count_and_covers_every_replica_parameter() -> None:
    r = build_replica(device="meta")
    mapping = vendor_map(DEEPSEEK_OCR, "clip.vision_model." if hasattr(r.clip, "vision_model") else "clip.")
    assert len(mapping) == 2710  # the vendor's safetensors file holds 2,710 tensors
    params = dict(r.root.named_parameters())
    covered: dict[str, int] = {}
    for pieces in mapping.values():
        for p in pieces:
            t = params[p.target]
            if p.expert is not None:
                t = t[p.expert]
            rows = t.shape[0] if p.dst_rows is None else p.dst_rows[1] - p.dst_rows[0]
            covered[p.target] = covered.get(p.target, 0) + rows * (t[0].numel() if t.dim() else 1)
    assert set(covered) == set(params)
    assert {n: c for n, c in covered.items() if c != params[n].numel()} == {}
    assert mapping["model.vision_model.transformer.layers.3.self_attn.qkv_proj.weight"][1].src_rows == (1024, 2048)
    assert mapping["model.layers.4.mlp.experts.63.up_proj.weight"][0] == Piece(
        "decoder.layers.4.mlp.experts.gate_up_proj", expert=63, dst_rows=(896, 1792)
    )
    assert mapping["model.view_seperator"][0].target == "layout.view_separator"


@pytest.fixture(scope="module")
def source():
    return build_replica(narrow_arch(), seed=11)


def test_synthetic_vendor_checkpoint_loads_exactly(tmp_path, source) -> None:
    mapping = vendor_map(source.arch, "clip.vision_model." if hasattr(source.clip, "vision_model") else "clip.")
    tensors = vendor_tensors(source, mapping)
    # a saved state_dict's non-parameter buffer (the vendor's CLIP position ids) is ignored
    tensors["model.vision_model.embeddings.position_ids"] = torch.arange(257).unsqueeze(0)
    assert tuple(tensors["model.vision_model.transformer.layers.0.self_attn.qkv_proj.weight"].shape) == (96, 32)
    assert tuple(tensors["model.layers.1.mlp.experts.5.gate_proj.weight"].shape) == (32, 64)
    ckpt = write_checkpoint(tmp_path / "ckpt", tensors, {"language_config": {"eos_token_id": 1}})
    loaded = load_model(ckpt, seed=99, base=narrow_arch())
    assert loaded.eos_token_id == 1
    assert loaded.arch.sam.global_layers == (1,) and loaded.arch.decoder.routed_experts == 8
    want = dict(source.root.named_parameters())
    got = dict(loaded.root.named_parameters())
    assert set(want) == set(got)
    assert [n for n in want if not torch.equal(want[n], got[n])] == []


def test_unmapped_tensors_are_listed_both_ways(tmp_path, source) -> None:
    mapping = vendor_map(source.arch, "clip.vision_model." if hasattr(source.clip, "vision_model") else "clip.")
    tensors = vendor_tensors(source, mapping)
    del tensors["model.layers.1.mlp.experts.7.down_proj.weight"]
    tensors["model.vision_model.post_layernorm.weight"] = torch.ones(32)
    ckpt = write_checkpoint(tmp_path / "bad", tensors)
    with pytest.raises(BadInput) as err:
        load_model(ckpt, base=narrow_arch())
    msg = err.value.message
    assert "does not map onto the replica" in msg
    assert "1 tensors the replica has no place for (model.vision_model.post_layernorm.weight)" in msg
    assert "1 tensors the replica needs are missing (model.layers.1.mlp.experts.7.down_proj.weight)" in msg
    assert "\n" not in msg


def test_wrong_shapes_are_named(tmp_path, source) -> None:
    mapping = vendor_map(source.arch, "clip.vision_model." if hasattr(source.clip, "vision_model") else "clip.")
    tensors = vendor_tensors(source, mapping)
    tensors["model.projector.layers.weight"] = torch.zeros(64, 60)
    with pytest.raises(BadInput, match=r"wrong shape: model.projector.layers.weight \[64, 60\] != \[64, 64\]"):
        load_model(write_checkpoint(tmp_path / "shape", tensors), base=narrow_arch())


def test_directory_problems(tmp_path) -> None:
    with pytest.raises(InputNotFound, match=r"checkpoint directory .*nope does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match=r"has no config\.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(BadInput, match=r"has no \*.safetensors file"):
        load_model(tmp_path / "empty")
    write_checkpoint(tmp_path / "other", {"encoder.weight": torch.zeros(2)})
    with pytest.raises(BadInput, match="holds no DeepSeek-OCR tensors"):
        load_model(tmp_path / "other")


def test_trust_remote_code_needs_the_vendor_transformers(tmp_path) -> None:
    import transformers

    write_checkpoint(tmp_path / "ckpt", {"x": torch.zeros(1)})
    if transformers.__version__ == "4.46.3":
        pytest.skip("the vendor's transformers is installed")
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "deepseek_vl_v2", "auto_map": {"AutoModel": "m.X"}}')
    (tmp_path / "ckpt" / "m.py").write_text("")
    with pytest.raises(EnvironmentProblem) as err:
        load_model(tmp_path / "ckpt", trust_remote_code=True)
    assert f"needs transformers 4.46.3, but transformers {transformers.__version__} is installed" in err.value.message
    with pytest.raises(EnvironmentProblem):
        check_remote_code_version()
