"""``dsocr generate``: one page through a model; prints the generated ids and the first token's top logits."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated, Any

from dsocr.cli._values import decode_value, device_value, dtype_value, mode_value, moe_value
from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, option
from dsocr.contract.errors import BadInput, BadUsage

#: The analytic model's dtype names (shared through DSOCR_DTYPE) -> torch's.
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _opt(name: str, help_text: str, **kwargs: Any) -> Any:
    return option("generate", name, help=help_text, **kwargs)


@app.command()
def generate(
    model: Annotated[
        str,
        _opt("--model", "'replica', a checkpoint dir, or a hub id in the local Hugging Face cache (never downloaded)."),
    ] = "replica",
    trust_remote_code: Annotated[
        bool, _opt("--trust-remote-code", "Run the checkpoint's own code and generate (transformers 4.46.3).")
    ] = False,
    random_weights: Annotated[
        bool, _opt("--random-weights", "Run a checkpoint dir's config with seeded random weights (no safetensors).")
    ] = False,
    page: Annotated[
        Path | None, _opt("--page", "Page image or PDF (its first page); default: the first shipped standard page.")
    ] = None,
    max_new_tokens: Annotated[int, _opt("--max-new-tokens", "Tokens to generate (greedy).", min=1)] = 32,
    device: Annotated[str, _opt("--device", "cuda, cuda:N, or cpu.", callback=device_value)] = "cuda",
    dtype: Annotated[
        str,
        _opt(
            "--dtype",
            "auto (bf16 on CUDA, fp32 on CPU; bf16 for the checkpoint's code), bfloat16, ...",
            callback=dtype_value,
        ),
    ] = "auto",
    prompt_tokens: Annotated[
        int, _opt("--prompt-tokens", "Text prompt length in tokens (fixed ids without tokenizer.json).", min=1)
    ] = 12,
    mode: Annotated[str, _opt("--mode", "Resolution mode (tiny ... gundam).", callback=mode_value)] = "gundam",
    attn: Annotated[
        str | None,
        _opt(
            "--attn", "Attention: eager or sdpa (replica); eager (default) or flash_attention_2 (--trust-remote-code)."
        ),
    ] = None,
    moe: Annotated[
        str, _opt("--moe", "The replica's MoE execution: loop (the vendor's; default) or grouped.", callback=moe_value)
    ] = "loop",
    decode: Annotated[
        str,
        _opt(
            "--decode",
            "Decode: eager (default), graph (static KV cache, one CUDA graph replayed) or compile; graph and "
            "compile need --moe grouped and CUDA (docs/variants.md).",
            callback=decode_value,
        ),
    ] = "eager",
    seed: Annotated[int, _opt("--seed", "Seed of random weights.")] = 0,
    logits_out: Annotated[
        Path | None,
        _opt("--logits-out", "Also write the first token's logits (float32 .npy) there, to compare implementations."),
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """One page through a model: prompt length, generated ids, the first token's 5 highest logits."""
    from dsocr.capture.one_page import GenerateSettings, generate_page
    from dsocr.capture.worker_config import check_variant

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    try:
        check_variant(decode, 1, moe=moe, device=device, vendor=trust_remote_code, pages=None)
    except BadInput as exc:
        raise BadUsage(exc.message) from None
    result = generate_page(
        GenerateSettings(
            model=model,
            trust_remote_code=trust_remote_code,
            random_weights=random_weights,
            page=page,
            max_new_tokens=max_new_tokens,
            device=device,
            dtype=_DTYPE_ALIASES.get(dtype.strip().lower(), dtype),
            prompt_tokens=prompt_tokens,
            mode=mode,
            seed=seed,
            attn=attn,
            moe=moe,
            decode=decode,
        )
    )
    if logits_out is not None:
        import numpy as np

        from dsocr.contract.atomic import write_bytes

        buf = io.BytesIO()
        np.save(buf, result.first_token_logits)
        write_bytes(logits_out, buf.getvalue())
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
        return
    if quiet:
        return
    m = result.model
    weights = "seeded random weights" if m.random_weights else "checkpoint weights"
    ui.out.print(f"model: {m.kind} {m.source} ({weights}; {m.execution})", markup=False)
    ui.out.print(f"page: {result.page}, prompt length {result.prompt_length}", markup=False)
    ui.out.print(f"generated ids: {' '.join(map(str, result.ids))}", markup=False)
    top = ", ".join(f"{t.id} ({t.logit:.4g})" for t in result.first_token_top)
    ui.out.print(f"first token, top {len(result.first_token_top)} logits: {top}", markup=False)
