"""Prompt ids from a local checkpoint's own tokenizer files, when it ships them.

No DeepSeek tokenizer is available offline, so the worker normally uses a fixed id sequence.
A checkpoint directory holding ``tokenizer.json`` (the vocabulary itself) is tokenized with
transformers' ``AutoTokenizer`` (local files only): the text before ``<image>`` follows the BOS
id, the text after it follows the image embeddings, as the vendor's code lays it out. A
directory with only ``tokenizer_config.json`` (as the DeepSeek-OCR repository's code files come)
has no vocabulary: it uses the fixed ids like a directory without tokenizer files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import attrs

from dsocr.contract.errors import BadInput

IMAGE_TAG: Final = "<image>"
#: The file that makes a directory tokenizable (``tokenizer_config.json`` alone holds no vocabulary).
TOKENIZER_FILES: Final = ("tokenizer.json",)


@attrs.frozen
class PromptIds:
    """Token ids before and after the image embeddings, and the EOS id."""

    ids_before: tuple[int, ...]
    ids_after: tuple[int, ...]
    eos_token_id: int | None


def has_tokenizer(directory: Path) -> bool:
    """Whether ``directory`` ships a tokenizer's vocabulary (``tokenizer.json``)."""
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def load_prompt(directory: Path, text: str) -> PromptIds | None:
    """Tokenize ``text`` (containing one ``<image>``) with the directory's tokenizer; None without one."""
    if not has_tokenizer(directory):
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BadInput(
            f"tokenizer files in {directory} cannot be loaded ({exc}): fix or remove them to use fixed prompt ids"
        ) from None
    before, _, after = text.partition(IMAGE_TAG)
    bos = tok.bos_token_id if tok.bos_token_id is not None else 0
    ids_before = (int(bos), *(int(i) for i in tok.encode(before, add_special_tokens=False)))
    ids_after = tuple(int(i) for i in tok.encode(after, add_special_tokens=False))
    eos = tok.eos_token_id
    return PromptIds(ids_before, ids_after, None if eos is None else int(eos))
