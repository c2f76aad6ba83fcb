"""The checkpoint directory rules, hub ids in a local cache, the tokenizer fallback, doctor's model paths.

The checkpoint's own files (code, config; no weights) come from ../shared/fixtures/vendor-deepseek-ocr,
copied into a temporary directory. Nothing here runs a model: every rule is decided before one loads.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from conftest import SHARED, missing_fixture
from dsocr.capture.doctor import Facts, check_model_paths
from dsocr.contract.errors import BadInput, EnvironmentProblem, ExitCode, InputNotFound
from dsocr.execution import hub
from dsocr.execution.checkpoint_rules import (
    KIND_CHECKPOINT,
    KIND_REPLICA,
    KIND_VENDOR,
    architecture_from_config,
    config_sizes,
    plan_model,
)
from dsocr.execution.tokenizer import load_prompt

VENDOR_CODE = SHARED / "fixtures" / "vendor-deepseek-ocr"
OK_TRANSFORMERS = "4.46.3"


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    """A user's checkpoint directory with the checkpoint's code and config, no weights."""
    if not VENDOR_CODE.is_dir():
        missing_fixture(str(VENDOR_CODE))
    out = tmp_path / "DeepSeek-OCR"
    shutil.copytree(VENDOR_CODE, out)
    for f in out.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IWUSR)
    return out


def _weights(
    directory: Path, layers: int = 12, experts: int = 64, vocab: int = 129280, metadata: dict[str, str] | None = None
) -> None:
    """A safetensors file with the decoder's tell-tale tensor names (tiny tensors but the embedding)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save = {}
    for i in range(layers):
        save[f"model.layers.{i}.input_layernorm.weight"] = torch.zeros(1)
    for e in range(experts):
        save[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"] = torch.zeros(1)
    save["model.embed_tokens.weight"] = torch.zeros(vocab, 1280, dtype=torch.int8)
    save_file(save, str(directory / "model.safetensors"), metadata=metadata)


def test_replica_and_flags(code_dir: Path) -> None:
    assert plan_model("replica").kind == KIND_REPLICA
    with pytest.raises(BadInput, match="not 'replica'"):
        plan_model("replica", trust_remote_code=True)
    plan = plan_model(str(code_dir), random_weights=True)
    assert (plan.kind, plan.random_weights, plan.weights) == (KIND_CHECKPOINT, True, ())
    assert "checkpoint's code was not run" in plan.code_note()
    vendor = plan_model(
        str(code_dir), trust_remote_code=True, random_weights=True, transformers_version=OK_TRANSFORMERS
    )
    assert vendor.kind == KIND_VENDOR and vendor.sizes is not None and vendor.sizes.eos_token_id == 1


def test_no_weights_names_both_flags(code_dir: Path) -> None:
    with pytest.raises(BadInput) as err:
        plan_model(str(code_dir))
    assert "--random-weights" in err.value.message and "--trust-remote-code" in err.value.message
    assert err.value.exit_code == ExitCode.BAD_INPUT and "\n" not in err.value.message


def test_trust_remote_code_without_code(code_dir: Path) -> None:
    (code_dir / "deepencoder.py").unlink()  # imported by modeling_deepseekocr.py
    with pytest.raises(BadInput, match=r"lacks the checkpoint's code \(deepencoder\.py\)"):
        plan_model(str(code_dir), trust_remote_code=True, random_weights=True, transformers_version=OK_TRANSFORMERS)
    for f in code_dir.glob("*.py"):
        f.unlink()
    with pytest.raises(BadInput, match=r"modeling_deepseekocr\.py.*drop --trust-remote-code"):
        plan_model(str(code_dir), trust_remote_code=True, random_weights=True, transformers_version=OK_TRANSFORMERS)


def test_wrong_transformers_names_both_versions(code_dir: Path) -> None:
    with pytest.raises(EnvironmentProblem) as err:
        plan_model(str(code_dir), trust_remote_code=True, random_weights=True, transformers_version="5.25.0")
    assert "transformers 5.25.0 is installed" in err.value.message and "4.46.3" in err.value.message
    assert err.value.exit_code == ExitCode.ENVIRONMENT


def test_config_of_another_model(code_dir: Path) -> None:
    (code_dir / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(BadInput, match=r"describes another model \(model_type 'llama'"):
        plan_model(str(code_dir), random_weights=True)


def test_weights_that_do_not_match_the_config(code_dir: Path) -> None:
    _weights(code_dir, layers=2, experts=8)
    with pytest.raises(BadInput) as err:
        plan_model(str(code_dir))
    msg = err.value.message
    assert "do not match its config.json" in msg
    assert "num_hidden_layers 12 in config.json, 2 in the weights" in msg and "n_routed_experts 64" in msg
    _weights(code_dir)
    plan = plan_model(str(code_dir))
    assert plan.kind == KIND_CHECKPOINT and not plan.random_weights and len(plan.weights) == 1


def test_remote_code_needs_the_format_metadata(code_dir: Path) -> None:
    """transformers 4.46.3's from_pretrained fails on a safetensors file saved without metadata (seen on the GPU
    machine as an AttributeError); the rule says so in one line, and the replica loader does not need it."""
    _weights(code_dir)
    with pytest.raises(BadInput) as err:
        plan_model(str(code_dir), trust_remote_code=True, transformers_version=OK_TRANSFORMERS)
    assert "no 'format' entry in its safetensors metadata" in err.value.message
    assert "metadata={'format': 'pt'}" in err.value.message
    assert plan_model(str(code_dir)).kind == KIND_CHECKPOINT
    _weights(code_dir, metadata={"format": "pt"})
    plan = plan_model(str(code_dir), trust_remote_code=True, transformers_version=OK_TRANSFORMERS)
    assert not plan.random_weights and len(plan.weights) == 1


def test_config_sizes_make_the_replicas_architecture(code_dir: Path) -> None:
    config = json.loads((code_dir / "config.json").read_text())
    config["num_hidden_layers"] = 2
    arch = architecture_from_config(config_sizes(config))
    assert (arch.decoder.layers, arch.decoder.routed_experts, arch.decoder.vocab) == (2, 64, 129280)
    assert arch.decoder.dense_layers == 1 and arch.sam.layers == 12


def _cache(root: Path, code_dir: Path, with_ref: bool = True) -> Path:
    repo = root / "models--deepseek-ai--DeepSeek-OCR"
    snap = repo / "snapshots" / "abc123"
    shutil.copytree(code_dir, snap)
    if with_ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("abc123")
    return snap


def test_hub_id_resolves_in_the_cache(code_dir: Path, tmp_path: Path) -> None:
    snap = _cache(tmp_path / "hub", code_dir)
    for env in ({"HF_HUB_CACHE": str(tmp_path / "hub")}, {"HF_HOME": str(tmp_path)}):
        source = hub.resolve("deepseek-ai/DeepSeek-OCR", env)
        assert (source.directory, source.revision, source.hub_id) == (snap, "abc123", "deepseek-ai/DeepSeek-OCR")
    (tmp_path / "hub" / "models--deepseek-ai--DeepSeek-OCR" / "refs" / "main").unlink()
    assert hub.resolve("deepseek-ai/DeepSeek-OCR", {"HF_HUB_CACHE": str(tmp_path / "hub")}).directory == snap


def test_hub_id_not_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(InputNotFound) as err:
        plan_model("deepseek-ai/DeepSeek-OCR")
    msg = err.value.message
    assert "not in the local Hugging Face cache" in msg and "never downloads" in msg
    assert "huggingface-cli download deepseek-ai/DeepSeek-OCR" in msg and err.value.exit_code == ExitCode.NOT_FOUND
    with pytest.raises(InputNotFound, match="neither 'replica'"):
        plan_model("./no/such/dir/here")


def test_tokenizer_config_alone_uses_the_fixed_ids(code_dir: Path) -> None:
    assert (code_dir / "tokenizer_config.json").is_file() and not (code_dir / "tokenizer.json").exists()
    assert load_prompt(code_dir, "<image>\nFree OCR.") is None


def test_capture_refuses_before_writing_anything(
    code_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dsocr.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["capture", "--device", "cpu", "--model", str(code_dir), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == ExitCode.BAD_INPUT, err
    assert err.count("\n") == 1 and err.startswith("dsocr: error: ") and "--random-weights" in err
    assert not out.exists()


def test_flash_attention_is_not_installed() -> None:
    from dsocr.execution.vendor import check_attention, check_options

    with pytest.raises(EnvironmentProblem, match="flash-attn package is not installed"):
        check_attention("flash_attention_2")
    check_attention("eager")
    with pytest.raises(BadInput, match="no sdpa path"):
        check_options("gundam", "auto", "auto", "sdpa")
    with pytest.raises(BadInput, match="gundam-m"):
        check_options("gundam-m", "auto", "auto", "eager")


def test_doctor_says_which_model_paths_run() -> None:
    base = {"torch": "2.13.0", "addict": "2.4.0", "easydict": "1.14", "einops": "0.8.2", "torchvision": "0.26.0"}
    ok = check_model_paths(Facts(python_version="3.12", packages={**base, "transformers": "4.46.3"}))
    assert ok.status == "ok" and "replica: yes" in ok.detail and "(--trust-remote-code): yes" in ok.detail
    other = check_model_paths(Facts(python_version="3.12", packages={**base, "transformers": "5.25.0", "einops": None}))
    assert other.status == "ok" and "transformers==4.46.3 (found 5.25.0)" in other.detail and "einops" in other.detail
    assert "4.46.3" in other.fix
