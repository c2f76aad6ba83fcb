"""Static-cache decode (``--decode graph|compile`` without the CUDA graph) and batched pages, on the CPU.

The static step runs eagerly here (the CUDA graph / torch.compile only wrap it on CUDA): same greedy
tokens as the dynamic cache, logits close, in float32 and bf16; a batch of pages gives each page's
page-by-page tokens.
"""

from __future__ import annotations

import pytest

from dsocr.contract.errors import BadInput

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from dsocr.execution.preprocess import preprocess  # noqa: E402
from dsocr.execution.replica import build_replica  # noqa: E402
from dsocr.execution.static_decode import StaticDecoder, StaticDecoders, check_decode, static_mask  # noqa: E402
from test_replica import narrow_arch  # noqa: E402

pytestmark = pytest.mark.torch

STEPS = 6
IDS_BEFORE = torch.tensor([0])
IDS_AFTER = torch.arange(1, 12)


def rel_l2(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def dynamic(model, views_list, steps: int = STEPS):
    """Greedy tokens ``(B, steps + 1)`` and per-step logits with the dynamic cache (today's eager decode)."""
    with torch.inference_mode():
        emb = model.encode_batch([v.to(model.device, model.dtype) for v in views_list])
        x = model.embed_prompts(IDS_BEFORE, emb, IDS_AFTER)
        logits, past = model.prefill(x)
        token = logits.argmax(-1, keepdim=True)
        tokens, out = [token], [logits]
        for _ in range(steps):
            logits, past = model.decode_step(token, past)
            token = logits.argmax(-1, keepdim=True)
            tokens.append(token)
            out.append(logits)
    return torch.cat(tokens, dim=1), out


def static(model, views_list, steps: int = STEPS):
    """The same with a static cache of ``L + steps + 1`` positions, the step run eagerly."""
    with torch.inference_mode():
        emb = model.encode_batch([v.to(model.device, model.dtype) for v in views_list])
        x = model.embed_prompts(IDS_BEFORE, emb, IDS_AFTER)
        dec = StaticDecoder.create(model, x.shape[0], x.shape[1], steps + 1, "eager")
        out = [dec.prefill(x)]
        for _ in range(steps):
            dec.step()
            out.append(dec.logits)
    return dec, out


@pytest.fixture(scope="module")
def page():
    return preprocess(Image.new("RGB", (700, 560), (40, 120, 200)), "tiny")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_static_cache_step_gives_the_dynamic_cache_tokens_and_logits(page, dtype: str, attn: str) -> None:
    model = build_replica(narrow_arch(), seed=4, dtype=dtype, moe="grouped", attn_implementation=attn)
    want_tokens, want = dynamic(model, [page])
    dec, got = static(model, [page])
    assert torch.equal(dec.tokens, want_tokens)
    bound = 1e-5 if dtype == "float32" else 2e-2
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == torch.float32
        assert rel_l2(g, w) < bound, step
    assert int(dec.position) == dec.prefill_length + STEPS  # incremented on the device, once per step
    assert dec.cache.length == dec.prefill_length + STEPS + 1


def test_static_cache_is_reused_for_the_next_page_of_its_shape(page) -> None:
    """A second page of the same shape overwrites the cache: positions after it are masked, not cleared."""
    model = build_replica(narrow_arch(), seed=5, moe="grouped")
    other = preprocess(Image.new("RGB", (700, 560), (200, 30, 10)), "tiny")
    decoders = StaticDecoders(model, STEPS + 1, "eager")
    with torch.inference_mode():
        for views in (page, other):
            emb = model.encode_batch([views])
            x = model.embed_prompts(IDS_BEFORE, emb, IDS_AFTER)
            dec = decoders.get(1, x.shape[1])
            dec.prefill(x)
            for _ in range(STEPS):
                dec.step()
    want_tokens, _ = dynamic(model, [other])
    assert torch.equal(dec.tokens, want_tokens)
    assert len(decoders.by_shape) == 1
    assert decoders.cache_lengths() == [dec.prefill_length + STEPS + 1]


def test_static_mask_blocks_positions_after_the_step() -> None:
    mask = static_mask(torch.tensor([2]), 5, torch.float32)
    assert mask.shape == (1, 1, 1, 5)
    assert mask[0, 0, 0, :3].tolist() == [0.0, 0.0, 0.0]
    assert (mask[0, 0, 0, 3:] == torch.finfo(torch.float32).min).all()


@pytest.mark.parametrize("decode", ["eager", "graph"])
def test_a_batch_of_pages_gives_each_pages_own_tokens(page, decode: str) -> None:
    """Pages of one crop grid in one forward: greedy tokens equal page by page (float32)."""
    model = build_replica(narrow_arch(), seed=6, moe="grouped")
    pages = [preprocess(Image.new("RGB", (700, 560), c), "tiny") for c in ((40, 120, 200), (250, 250, 250), (0, 0, 0))]
    alone = torch.cat([dynamic(model, [p])[0] for p in pages])
    if decode == "eager":
        together, _ = dynamic(model, pages)
    else:  # the static step (the body a CUDA graph captures), run eagerly
        dec, _ = static(model, pages)
        together = dec.tokens
    assert together.shape == (3, STEPS + 1)
    assert torch.equal(together, alone)


def test_a_batch_of_pages_with_different_grids_is_refused() -> None:
    model = build_replica(narrow_arch(), seed=6)
    a = preprocess(Image.new("RGB", (700, 560)), "gundam")
    b = preprocess(Image.new("RGB", (300, 1400)), "gundam")
    assert a.grid != b.grid
    with pytest.raises(BadInput, match="one crop grid"):
        model.encode_batch([a, b])


@pytest.mark.parametrize(
    ("decode", "moe", "device", "vendor", "match"),
    [
        ("graph", "loop", "cuda", False, "needs --moe grouped"),
        ("compile", "loop", "cuda", False, "needs --moe grouped"),
        ("graph", "grouped", "cpu", False, "needs a CUDA device"),
        ("compile", "grouped", "cpu", False, "needs a CUDA device"),
        ("graph", "grouped", "cuda", True, "trust-remote-code"),
        ("static", "grouped", "cuda", False, "unknown"),
    ],
)
def test_impossible_decodes_are_refused(decode: str, moe: str, device: str, vendor: bool, match: str) -> None:
    with pytest.raises(BadInput, match=match):
        check_decode(decode, moe=moe, device=device, vendor=vendor)


def test_possible_decodes_pass() -> None:
    check_decode("eager", moe="loop", device="cpu")
    check_decode("graph", moe="grouped", device="cuda:0")
    check_decode("compile", moe="grouped", device="cuda")


def test_execution_records_the_variant() -> None:
    model = build_replica(narrow_arch(), device="meta", dtype="bfloat16", moe="grouped")
    assert model.execution == {
        "moe": "grouped",
        "attn": "eager",
        "autocast": "none",
        "decode": "eager",
        "batch": 1,
        "batching": "bucketed-by-grid",
        "dtype": "bfloat16",
        "cache": "dynamic",
    }


def test_a_batch_of_pages_with_crops_gives_each_pages_own_tokens() -> None:
    """Crops of all pages run as one batch, then the global views: each page's layout and tokens as alone."""
    model = build_replica(narrow_arch(), seed=8, moe="grouped")
    pages = [preprocess(Image.new("RGB", (1200, 700), c), "gundam", "2x1") for c in ((10, 80, 160), (240, 200, 0))]
    assert all(p.crops is not None and p.grid == (2, 1) for p in pages)
    alone = torch.cat([dynamic(model, [p], steps=2)[0] for p in pages])
    together, _ = dynamic(model, pages, steps=2)
    assert torch.equal(together, alone)
    with torch.inference_mode():
        one = model.encode_views(pages[1])
        both = model.encode_batch(pages)
    assert torch.allclose(both[1], one, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_compiled_static_step_gives_the_eager_static_tokens(page, monkeypatch) -> None:
    """``--decode compile``'s step through torch.compile(mode="reduce-overhead") on the CPU (bf16: grouped_mm's
    compiled form takes bf16 only; CUDA graph trees skip the CPU, so this checks the compiled step, not its graph)."""
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *_a, **_k: None)  # compile() waits for the GPU
    model = build_replica(narrow_arch(), seed=4, dtype="bfloat16", moe="grouped")
    want, _ = static(model, [page], steps=4)
    with torch.inference_mode():
        emb = model.encode_batch([page.to(model.device, model.dtype)])
        x = model.embed_prompts(IDS_BEFORE, emb, IDS_AFTER)
        dec = StaticDecoder.create(model, 1, x.shape[1], 5, "compile")
        dec.prefill(x)
        for _ in range(4):
            dec.step()
    assert dec.compiled is not None and dec.setup_s > 0
    assert torch.equal(dec.tokens, want.tokens)
