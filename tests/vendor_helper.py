"""Run with the vendor's environment (transformers 4.46.3): the checkpoint's own code, for tests/test_vendor_path.py.

``python vendor_helper.py DIR PAGE MODE PROMPT_TOKENS OUT``, in one process (one model build):

1. DIR (a copy of the checkpoint's code and config, the decoder cut to 2 layers) gets
   ``model.safetensors``: the vendor's model built from config.json with seed 0 in bf16, its
   parameters (no buffers), as the published checkpoint holds them;
2. the vendor's own first-token logits with those weights: ``model.infer(...)`` itself on PAGE
   (its preprocessing, ids, bf16 images, generate), with a stand-in tokenizer (no tokenizer.json
   offline: no text before ``<image>``, dsocr's fixed ids after it) and ``generate`` limited to
   one token with its raw logits kept (infer hard-codes 8192 tokens). OUT gets
   ``{"logits": [...], "prompt_length": L}``.

On the CPU the checkpoint's code calls ``.cuda()``: here ``Tensor.cuda`` returns the tensor itself
(tests only). Run with tests/standin first on PYTHONPATH (a stand-in for torchvision's four names).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

MODES = {
    "tiny": (512, 512, False),
    "small": (640, 640, False),
    "base": (1024, 1024, False),
    "gundam": (1024, 640, True),
}


def checkpoint(directory: Path) -> Any:
    """The vendor's model from config.json, seed 0, bf16; its parameters saved as the checkpoint."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(directory), trust_remote_code=True, local_files_only=True)
    torch.manual_seed(0)
    model = AutoModel.from_config(config, trust_remote_code=True, torch_dtype=torch.bfloat16)
    model = model.to(torch.bfloat16).eval()
    params = {name: p.detach().contiguous() for name, p in model.named_parameters()}
    save_file(params, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return model


class StandInTokenizer:
    """What infer asks of a tokenizer: encode (fixed ids for text, none for the empty text before <image>),
    decode (for its streamer: nothing to show) and the EOS id."""

    eos_token_id = 1

    def __init__(self, ids_after: list[int]) -> None:
        self.ids_after = ids_after

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.ids_after) if text.strip() else []

    def decode(self, ids: Any, **_kwargs: Any) -> str:
        return ""


def reference(model: Any, page: Path, mode: str, prompt_tokens: int, out: Path) -> None:
    """infer's first-token logits (one token) on ``page``, written to ``out``."""
    vocab = int(model.config.vocab_size)
    ids_after = [(1000 + 37 * i) % vocab for i in range(prompt_tokens - 1)]
    kept: dict[str, Any] = {}
    original = model.generate

    def one_token(input_ids: Any, **kwargs: Any) -> Any:
        kwargs.update(max_new_tokens=1, output_logits=True, return_dict_in_generate=True)
        result = original(input_ids, **kwargs)
        kept["logits"] = result.logits[0][0].float()
        kept["prompt_length"] = int(input_ids.shape[1])
        return result.sequences

    model.generate = one_token
    torch.Tensor.cuda = lambda self, *a, **k: self  # the CPU: infer and forward call .cuda() (tests only)
    base_size, image_size, crop_mode = MODES[mode]
    with tempfile.TemporaryDirectory() as tmp:
        model.infer(
            StandInTokenizer(ids_after),
            prompt="<image>\nFree OCR. ",
            image_file=str(page),
            output_path=tmp,
            base_size=base_size,
            image_size=image_size,
            crop_mode=crop_mode,
        )
    out.write_text(json.dumps({"logits": kept["logits"].tolist(), "prompt_length": kept["prompt_length"]}))


if __name__ == "__main__":
    directory, page, mode, prompt_tokens, out = sys.argv[1:6]
    with torch.no_grad():
        reference(checkpoint(Path(directory)), Path(page), mode, int(prompt_tokens), Path(out))
