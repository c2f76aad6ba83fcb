"""The capture worker's variants on the CPU: ``batch`` (pages per forward, bucketed by grid) and the static-cache
decode of ``--decode graph`` with the CUDA graph replaced by the step it would replay (graph capture is CUDA only)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from PIL import Image

from dsocr.capture import worker
from dsocr.capture.worker_config import WorkerConfig
from dsocr.capture.worker_ranges import RecordingEmitter, use_emitter
from dsocr.contract import nvtx_names as names
from dsocr.contract.errors import BadInput

torch = pytest.importorskip("torch")

from dsocr.execution import static_decode  # noqa: E402
from test_worker import config  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> tuple[str, ...]:
    """Three pages of one crop grid (tiny mode: no crops), the second given twice."""
    tmp = tmp_path_factory.mktemp("pages")
    out = []
    for i, shade in enumerate((250, 200)):
        img = Image.new("RGB", (800, 1000), (shade, shade, shade))
        img.paste((20, 20, 20), (100, 100 + 50 * i, 700, 160 + 50 * i))
        img.save(tmp / f"p{i}.png")
        out.append(str(tmp / f"p{i}.png"))
    return (out[0], out[1], out[1])


def run(cfg: WorkerConfig) -> tuple[dict, RecordingEmitter]:
    rec = RecordingEmitter()
    with use_emitter(rec):
        return worker.run(cfg).to_json(), rec


def test_a_batch_runs_pages_of_one_grid_in_one_forward(pages, tmp_path) -> None:
    """3 pages, batch 2: forwards of 2 and 1 pages; records name the first page and the pages held."""
    cfg = config(Path(pages[0]), tmp_path, pages=pages, batch=2, moe="grouped")
    doc, rec = run(cfg)
    page_records = [(r["page"], r["batch"], r["tokens"]) for r in doc["records"] if r["stage"] == "page"]
    assert page_records == [(0, 2, 2 * 3), (2, 1, 3)]
    steps = [(r["page"], r["batch"], r["tokens"]) for r in doc["records"] if r["stage"] == "decode_step"]
    assert steps == [(0, 2, 2), (0, 2, 2), (2, 1, 1), (2, 1, 1)]  # one record per batched step
    prefill = [(r["tokens"], r["prefill_length"]) for r in doc["records"] if r["stage"] == "prefill"]
    assert prefill == [(2 * 85, 85), (85, 85)]
    # one decode_step range per batched step in the captured repeat
    repeat_steps = [p for d, n, p in rec.tree() if n == names.DECODE_STEP]
    assert repeat_steps[-4:] == [0, 1, 0, 1]
    assert [p.get("forward") for p in doc["pages"]] == [0, 0, 1]
    execution = doc["model"]["execution"]
    assert (execution["batch"], execution["batching"], execution["cache"]) == (2, "bucketed-by-grid", "dynamic")
    assert doc["config"]["batch"] == 2
    assert any("batch 2" in a for a in doc["assumptions"])


def test_pages_bucket_by_grid_in_order_of_first_appearance() -> None:
    def plan(i: int, grid: tuple[int, int]) -> worker.PagePlan:
        views = attrs.make_class("V", {"grid": attrs.field()})(grid)
        return worker.PagePlan(i, None, views, 0)  # type: ignore[arg-type]

    plans = [plan(0, (2, 2)), plan(1, (1, 1)), plan(2, (2, 2)), plan(3, (2, 2)), plan(4, (1, 1))]
    groups = worker.bucket_by_grid(plans, 2)
    assert [[p.index for p in g] for g in groups] == [[0, 2], [3], [1, 4]]
    assert [[p.index for p in g] for g in worker.bucket_by_grid(plans, 1)] == [[i] for i in range(5)]


class ReplayedStep:
    """Stands for the CUDA graph: replaying runs the captured step eagerly."""

    replays = 0

    def __init__(self, body) -> None:
        self.body = body

    def replay(self) -> None:
        ReplayedStep.replays += 1
        self.body()


def test_graph_decode_runs_the_static_step_with_the_graph_replaced(pages, tmp_path, monkeypatch) -> None:
    """Everything of --decode graph but torch.cuda.CUDAGraph, on the CPU: one capture per forward shape,
    one replay per step, the variant recorded (graph decode itself is refused on the CPU: validate is skipped)."""
    captures = []

    def capture(self) -> None:
        captures.append((self.batch, self.prefill_length))
        self.graph = ReplayedStep(self._step_body)
        self.setup_s += 0.5

    monkeypatch.setattr(static_decode.StaticDecoder, "capture", capture)
    ReplayedStep.replays = 0
    cfg = attrs.evolve(config(Path(pages[0]), tmp_path, pages=pages, moe="grouped"), decode="graph", batch=2)
    doc, _ = run(cfg)
    assert captures == [(2, 85), (1, 85)]  # in the warm-up round, once per forward shape
    # warm-up: 2 shapes x 2 steps; repeat: 2 forwards x 2 steps; the capture warm-up pass: the same
    assert ReplayedStep.replays == 4 + 4 + 4
    execution = doc["model"]["execution"]
    assert (execution["decode"], execution["cache"], execution["batch"]) == ("graph", "static:88", 2)
    assert doc["setup"]["graph_capture_s"] == 1.0
    assert doc["setup"]["static_cache_lengths"] == [88]
    assert [p["cache_length"] for p in doc["pages"]] == [88, 88, 88]
    steps = [r for r in doc["records"] if r["stage"] == "decode_step"]
    assert [(r["batch"], r["context_length"]) for r in steps] == [(2, 86), (2, 87), (1, 86), (1, 87)]


def test_static_decode_gives_the_eager_tokens_in_the_worker(pages, tmp_path, monkeypatch) -> None:
    """The worker's static path (graph replaced) generates the eager path's greedy tokens."""
    model = worker.load_model(config(Path(pages[0]), tmp_path, moe="grouped"))
    monkeypatch.setattr(worker, "load_model", lambda _cfg: model)
    seen: list = []
    original = static_decode.StaticDecoder.step

    def step(self) -> None:
        original(self)
        seen.append(self.tokens.clone())

    monkeypatch.setattr(static_decode.StaticDecoder, "step", step)
    cfg = attrs.evolve(config(Path(pages[0]), tmp_path, pages=pages[:1], moe="grouped", warmup=0), decode="graph")
    monkeypatch.setattr(
        static_decode.StaticDecoder, "capture", lambda self: setattr(self, "graph", ReplayedStep(self._step_body))
    )
    run(cfg)
    got = seen[-1]
    with torch.inference_mode():
        plan = worker.preprocess(Image.open(pages[0]).convert("RGB"), "tiny", "auto").to(model.device, model.dtype)
        prompt = worker.fixed_prompt(12, model.arch.decoder.vocab)
        emb = model.encode_views(plan)
        x = model.embed_prompt(torch.tensor(prompt.ids_before), emb, torch.tensor(prompt.ids_after))
        logits, past = model.prefill(x)
        token = logits.argmax(-1, keepdim=True)
        want = [token]
        for _ in range(2):
            logits, past = model.decode_step(token, past)
            token = logits.argmax(-1, keepdim=True)
            want.append(token)
    assert torch.equal(got, torch.cat(want, dim=1))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"decode": "graph"}, "needs --moe grouped"),
        ({"decode": "compile", "moe": "grouped"}, "needs a CUDA device"),
        ({"decode": "fast"}, "unknown"),
        ({"batch": 0}, "at least 1"),
    ],
)
def test_impossible_variants_in_a_worker_config_are_refused(pages, tmp_path, changes, match) -> None:
    with pytest.raises(BadInput, match=match):
        config(Path(pages[0]), tmp_path, **changes)


def test_batch_larger_than_pages_is_refused() -> None:
    from dsocr.capture.worker_config import check_variant

    with pytest.raises(BadInput, match="larger than the 3 page"):
        check_variant("eager", 4, moe="loop", device="cpu", vendor=False, pages=3)
    with pytest.raises(BadInput, match="needs dsocr's replica"):
        check_variant("eager", 2, moe="loop", device="cuda", vendor=True, pages=3)
    check_variant("eager", 3, moe="loop", device="cpu", vendor=False, pages=3)
