"""The checkpoint directory rules: what ``--model``, ``--trust-remote-code`` and ``--random-weights`` run.

Checked before any run directory or output is made (no torch import; safetensors headers only):

- weights present, no flag: the weights load into dsocr's replica (the checkpoint's code is not run);
- ``--trust-remote-code``: the checkpoint's own code runs (its ``auto_map`` module and the modules
  it imports must be in the directory; transformers must be the vendor's 4.46.3);
- no weights: ``--random-weights`` runs the config with seeded random weights, else an error that
  names both flags;
- a ``config.json`` of another model, weights that disagree with the config, a hub id not in the
  cache: one line each, with the fix.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract.errors import BadInput, EnvironmentProblem
from dsocr.execution.hub import ModelSource, resolve
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture

#: The transformers version the vendor's remote code is pinned to.
VENDOR_TRANSFORMERS: Final = "4.46.3"
CONFIG_FILE: Final = "config.json"
#: What a DeepSeek-OCR config.json says it is.
MODEL_TYPES: Final = frozenset({"deepseek_vl_v2", "DeepseekOCR"})
ARCHITECTURES: Final = frozenset({"DeepseekOCRForCausalLM"})
#: Tensors a state_dict may hold that are buffers, not parameters (the replica and the vendor rebuild them).
BUFFERS: Final = frozenset({"model.vision_model.embeddings.position_ids"})

KIND_REPLICA: Final = "replica"  #: dsocr's replica, random weights, no checkpoint
KIND_CHECKPOINT: Final = "checkpoint"  #: a checkpoint's weights (or its config, random) in dsocr's replica
KIND_VENDOR: Final = "vendor"  #: the checkpoint's own code (trust_remote_code)

_RELATIVE_IMPORT: Final = re.compile(r"^\s*from\s+\.(\w+)\s+import", re.MULTILINE)


@attrs.frozen
class ConfigSizes:
    """The decoder sizes a DeepSeek-OCR ``config.json`` states (top level, else ``language_config``)."""

    layers: int
    routed_experts: int
    vocab: int
    hidden: int
    dense_layers: int
    eos_token_id: int | None


@attrs.frozen
class ModelPlan:
    """What a run will load: the source, the code that runs, the weights."""

    source: ModelSource
    kind: str  #: KIND_REPLICA, KIND_CHECKPOINT or KIND_VENDOR
    random_weights: bool  #: seeded random weights (always so for the replica)
    weights: tuple[Path, ...] = ()  #: the checkpoint's safetensors files (empty with random weights)
    sizes: ConfigSizes | None = None

    @property
    def directory(self) -> Path:
        """The checkpoint directory (not for the replica)."""
        assert self.source.directory is not None
        return self.source.directory

    def code_note(self) -> str:
        """Which code ran, for the report."""
        if self.kind == KIND_VENDOR:
            return "the checkpoint's own code (trust_remote_code), its generate"
        if self.kind == KIND_CHECKPOINT:
            return "dsocr's replica; the checkpoint's code was not run"
        return "dsocr's replica"


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` as a dict; BadInput when missing or not a JSON object."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise BadInput(
            f"checkpoint directory {directory} has no {CONFIG_FILE}: copy the checkpoint's config.json there"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON ({exc}): restore the checkpoint's config") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} is not a JSON object: restore the checkpoint's config")
    return data


def check_model_type(directory: Path, config: Mapping[str, Any]) -> None:
    """BadInput unless ``config`` describes DeepSeek-OCR."""
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    if model_type in MODEL_TYPES or (isinstance(archs, list) and ARCHITECTURES & set(map(str, archs))):
        return
    raise BadInput(
        f"{directory / CONFIG_FILE} describes another model (model_type {model_type!r}, architectures {archs}), "
        "not DeepSeek-OCR (deepseek_vl_v2, DeepseekOCRForCausalLM): pass a DeepSeek-OCR checkpoint"
    )


def _int(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default


def config_sizes(config: Mapping[str, Any]) -> ConfigSizes:
    """The decoder sizes of a DeepSeek-OCR config (the vendor reads the top level; language_config fills gaps)."""
    lang = config.get("language_config")
    merged: dict[str, Any] = dict(lang) if isinstance(lang, dict) else {}
    merged.update({k: v for k, v in config.items() if k != "language_config"})
    d = DEEPSEEK_OCR.decoder
    eos = merged.get("eos_token_id")
    return ConfigSizes(
        layers=_int(merged, "num_hidden_layers", d.layers),
        routed_experts=_int(merged, "n_routed_experts", d.routed_experts),
        vocab=_int(merged, "vocab_size", d.vocab),
        hidden=_int(merged, "hidden_size", d.hidden),
        dense_layers=_int(merged, "first_k_dense_replace", d.dense_layers),
        eos_token_id=eos if isinstance(eos, int) and not isinstance(eos, bool) else None,
    )


def architecture_from_config(sizes: ConfigSizes, base: Architecture = DEEPSEEK_OCR) -> Architecture:
    """The replica's architecture for a config (decoder layer, expert and vocabulary counts; vision as published)."""
    return attrs.evolve(
        base,
        decoder=attrs.evolve(
            base.decoder,
            layers=sizes.layers,
            routed_experts=sizes.routed_experts,
            vocab=sizes.vocab,
            dense_layers=sizes.dense_layers,
        ),
        name=f"{base.name} (config)",
    )


def check_code(directory: Path, config: Mapping[str, Any]) -> None:
    """BadInput unless the ``auto_map`` module and the modules it imports relatively are in ``directory``."""
    auto = config.get("auto_map") or {}
    target = auto.get("AutoModel") or auto.get("AutoModelForCausalLM") if isinstance(auto, dict) else None
    if not isinstance(target, str) or "." not in target:
        raise BadInput(
            f"{directory / CONFIG_FILE} has no auto_map.AutoModel, so there is no code to trust: "
            "drop --trust-remote-code to load the checkpoint into dsocr's replica"
        )
    first = f"{target.rsplit('.', 1)[0]}.py"
    missing: list[str] = []
    seen: set[str] = set()
    todo = [first]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = directory / name
        if not path.is_file():
            missing.append(name)
            continue
        todo += [f"{m}.py" for m in _RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8", errors="replace"))]
    if missing:
        raise BadInput(
            f"--trust-remote-code: {directory} lacks the checkpoint's code ({', '.join(sorted(missing))}): copy the "
            "checkpoint's *.py files there, or drop --trust-remote-code to load the weights into dsocr's replica"
        )


def installed_transformers() -> str | None:
    """The installed transformers version (from its metadata; no import), or None."""
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_transformers(found: str | None = None) -> str:
    """EnvironmentProblem unless transformers is the vendor's pinned version; the version found."""
    found = installed_transformers() if found is None else found
    if found != VENDOR_TRANSFORMERS:
        what = f"transformers {found} is installed" if found else "transformers is not installed"
        raise EnvironmentProblem(
            f"--trust-remote-code runs the checkpoint's own code, which needs transformers {VENDOR_TRANSFORMERS}, but "
            f"{what}: run dsocr from an environment with transformers=={VENDOR_TRANSFORMERS} (docs/capture.md), "
            "or drop --trust-remote-code to load the checkpoint into dsocr's replica"
        )
    return found


def weight_files(directory: Path) -> tuple[Path, ...]:
    """The checkpoint's ``*.safetensors`` files."""
    return tuple(sorted(directory.glob("*.safetensors")))


def _count(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for name in shapes if (m := rx.match(name))}
    return max(found) + 1 if found else 0


def check_weights_match(directory: Path, sizes: ConfigSizes, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """BadInput when the weights' decoder layer/expert counts or embedding shape disagree with config.json."""
    found = {
        "num_hidden_layers": _count(shapes, r"model\.layers\.(\d+)\."),
        "n_routed_experts": _count(shapes, r"model\.layers\.\d+\.mlp\.experts\.(\d+)\."),
    }
    embed = shapes.get("model.embed_tokens.weight")
    stated = {"num_hidden_layers": sizes.layers, "n_routed_experts": sizes.routed_experts}
    if embed is not None and len(embed) == 2:
        found |= {"vocab_size": embed[0], "hidden_size": embed[1]}
        stated |= {"vocab_size": sizes.vocab, "hidden_size": sizes.hidden}
    if not found["num_hidden_layers"]:
        raise BadInput(
            f"the weights in {directory} hold no DeepSeek-OCR decoder tensors (model.layers.N.*): "
            "use the weights of this checkpoint, in the vendor's parameter names"
        )
    if not found["n_routed_experts"]:
        del found["n_routed_experts"], stated["n_routed_experts"]
    bad = [f"{k} {stated[k]} in config.json, {found[k]} in the weights" for k in stated if stated[k] != found[k]]
    if bad:
        raise BadInput(
            f"the weights in {directory} do not match its config.json ({'; '.join(bad)}): "
            "put the config.json that came with these weights beside them"
        )


def plan_model(
    spec: str,
    *,
    trust_remote_code: bool = False,
    random_weights: bool = False,
    env: Mapping[str, str] | None = None,
    transformers_version: str | None = None,
) -> ModelPlan:
    """Apply the checkpoint directory rules to ``--model SPEC`` and the flags; one-line errors."""
    source = resolve(spec, env)
    if source.is_replica:
        if trust_remote_code:
            raise BadInput(
                "--trust-remote-code runs a checkpoint's own code: pass its directory or hub id as --model, "
                "not 'replica'"
            )
        return ModelPlan(source, KIND_REPLICA, random_weights=True)
    directory = source.directory
    assert directory is not None
    config = read_config(directory)
    check_model_type(directory, config)
    sizes = config_sizes(config)
    if trust_remote_code:
        check_code(directory, config)
        check_transformers(transformers_version)
    kind = KIND_VENDOR if trust_remote_code else KIND_CHECKPOINT
    if random_weights:
        return ModelPlan(source, kind, random_weights=True, sizes=sizes)
    files = weight_files(directory)
    if not files:
        others = sorted(p.name for p in directory.glob("*.bin"))
        also = f" (only {', '.join(others[:3])}: convert them to safetensors)" if others else ""
        raise BadInput(
            f"checkpoint directory {directory} has no *.safetensors weights{also}: add the weights, or pass "
            "--random-weights to run its config with seeded random weights (with --trust-remote-code, in the "
            "checkpoint's own code)"
        )
    from dsocr.execution.checkpoint import read_shapes

    check_weights_match(directory, sizes, read_shapes(list(files)))
    if trust_remote_code:
        check_format_metadata(files)
    return ModelPlan(source, kind, random_weights=False, weights=files, sizes=sizes)


def check_format_metadata(files: tuple[Path, ...]) -> None:
    """BadInput for a safetensors file without the ``format`` metadata entry: transformers 4.46.3's
    ``from_pretrained`` reads ``metadata.get("format")`` and fails on a file saved without metadata."""
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            metadata = handle.metadata()
        if not metadata or "format" not in metadata:
            raise BadInput(
                f"checkpoint file {f} has no 'format' entry in its safetensors metadata, which the checkpoint's "
                "own loader (transformers 4.46.3) needs: save it with save_file(..., metadata={'format': 'pt'}), "
                "or drop --trust-remote-code to load it into the replica"
            )
