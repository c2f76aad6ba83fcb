"""The capture worker end to end on the CPU: timing.json, NVTX nesting and order, module ranges, failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dsocr.capture import worker
from dsocr.capture.worker_config import Shrink, WorkerConfig
from dsocr.capture.worker_ranges import RecordingEmitter, emitter, use_emitter
from dsocr.contract import module_paths as mp
from dsocr.contract import nvtx_names as names
from dsocr.contract.errors import BadInput, EnvironmentProblem, ExitCode, InputNotFound, RunFailed

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dsocr.execution.replica import build_replica  # noqa: E402
from test_replica import narrow_arch  # noqa: E402

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[1]
SAMPLE_RUN = REPO / "src" / "dsocr" / "data" / "sample" / "h100-gundam-2p2r"


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pages") / "p.png"
    img = Image.new("RGB", (800, 1000), (250, 250, 250))
    img.paste((20, 20, 20), (100, 100, 700, 160))
    img.save(path)
    return path


def config(page: Path, tmp: Path, **kw) -> WorkerConfig:
    values = {
        "pages": (str(page),),
        "timing_out": str(tmp / "timing.json"),
        "device": "cpu",
        "mode": "tiny",
        "repeats": 1,
        "warmup": 1,
        "max_new_tokens": 3,
        "capture_range": "nvtx",
        "progress": False,
        "shrink": Shrink(1, 1, 2, vocab=1024, routed_experts=8),
    }
    values.update(kw)
    return WorkerConfig(**values).validate()


@pytest.fixture(scope="module")
def e2e(page, tmp_path_factory):
    """One real worker run: shrunk replica (1/1/2 layers), tiny mode, 1 page, 1 repeat, 3 new tokens."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = config(page, tmp, module_ranges=True)
    rec = RecordingEmitter()
    with use_emitter(rec):
        doc = worker.run(cfg).to_json()
    return cfg, doc, rec


def test_timing_json_holds_every_stage_with_counts(e2e) -> None:
    cfg, doc, _ = e2e
    assert json.loads(Path(cfg.timing_out).read_text()) == doc
    # the keys in the order every worker wrote them (the bundled sample's timing.json), down to pages and records
    sample = json.loads((SAMPLE_RUN / "timing.json").read_text())
    assert list(doc) == list(sample) and list(doc["model"]) == list(sample["model"])
    # keys added since the sample was captured (records' ``batch``) follow the sample's, which keep their order
    assert list(doc["pages"][0]) == list(sample["pages"][0])
    assert list(doc["records"][0])[: len(sample["records"][0])] == list(sample["records"][0])
    assert list(doc["prompt"]) == list(sample["prompt"]) and list(doc["setup"]) == list(sample["setup"])
    assert (doc["schema"], doc["clock"], doc["profiled"], doc["interrupted"]) == (
        "dsocr.timing",
        "perf-counter",
        True,
        False,
    )
    assert doc["pages"][0] | {"path": None} == {
        "index": 0,
        "name": "p.png",
        "path": None,
        "width": 800,
        "height": 1000,
        "grid": [1, 1],
        "crops": 0,
        "image_tokens": 73,
        "vision_tokens": 64,
        "prefill_length": 85,
    }
    assert doc["prompt"]["tokens"] == 12 and doc["prompt"]["source"] == "fixed-ids"
    assert any("12 token ids" in a for a in doc["assumptions"])
    rows = [(r["stage"], r["index"], r["tokens"], r["prefill_length"], r["context_length"]) for r in doc["records"]]
    assert rows == [
        ("repeat", None, None, None, None),
        ("page", None, 3, None, None),
        ("vision", None, 73, None, None),
        ("sam", 0, 64, None, None),
        ("clip", 0, 64, None, None),
        ("projector", 0, 64, None, None),
        ("prefill", None, 85, 85, 85),
        ("decode", None, 2, 85, 87),
        ("decode_step", 0, 1, 85, 86),
        ("decode_step", 1, 1, 85, 87),
    ]
    assert all(r["ms"] > 0 and r["repeat"] == 0 for r in doc["records"])
    assert all(r["page"] == 0 for r in doc["records"][1:])
    by = {r["stage"]: r["ms"] for r in doc["records"]}
    assert by["page"] >= by["vision"] + by["prefill"] + by["decode"]
    assert doc["model"]["kind"] == "replica" and doc["model"]["parameters"] > 0
    # the vendor's execution by default, recorded
    assert doc["model"]["execution"] == {
        "moe": "loop",
        "attn": "eager",
        "autocast": "none",
        "decode": "eager",
        "batch": 1,
        "batching": "bucketed-by-grid",
        "dtype": "float32",
        "cache": "dynamic",
        "prefill_logits": "all",
    }
    assert all(r["batch"] == 1 for r in doc["records"][1:])
    assert doc["model"]["attn_implementation"] == doc["config"]["attn_implementation"] == "eager"
    assert doc["config"]["moe"] == "loop"
    assert any("lm_head over every prompt position" in a for a in doc["assumptions"])


def test_stage_ranges_nest_in_contract_order(e2e) -> None:
    _, _, rec = e2e
    tree = rec.tree(names.DOMAIN)
    assert tree[0] == (0, names.WARMUP, None)
    assert tree[1:] == [
        (0, names.CAPTURE, None),
        (1, names.WARMUP, None),  # the capture warm-up (default 1 pass): first thing inside the capture
        (1, names.REPEAT, 0),
        (2, names.PAGE, 0),
        (3, names.VISION, None),
        (4, names.SAM, None),
        (4, names.CLIP, None),
        (4, names.PROJECTOR, None),
        (3, names.PREFILL, None),
        (3, names.DECODE, None),
        (4, names.DECODE_STEP, 0),
        (4, names.DECODE_STEP, 1),
    ]
    parents: list[str] = []
    for depth, name, _ in tree[1:]:
        parents[depth:] = [name]
        if name in names.PARENT and names.PARENT[name] is not None:
            assert parents[depth - 1] == names.PARENT[name]


def test_module_ranges_are_named_by_contract_paths_and_nest(e2e) -> None:
    _, doc, rec = e2e
    tree = rec.tree(names.MODULE_DOMAIN)
    seen = {name for _, name, _ in tree}
    expected = {
        mp.SAM_PATCH_EMBED,
        mp.SAM_NECK,
        mp.SAM_COMPRESSOR,
        mp.PROJECTOR,
        mp.EMBED_TOKENS,
        mp.DECODER_NORM,
        mp.LM_HEAD,
        mp.sam_block(0),
        mp.clip_layer(0),
        *(mp.decoder_layer(i) for i in range(2)),
        *(mp.decoder_attention(i) for i in range(2)),
        mp.decoder_mlp(0),
        mp.decoder_moe(1),
        mp.decoder_moe_router(1),
        mp.decoder_moe_experts(1),
        mp.decoder_moe_shared(1),
    }
    assert seen == expected == set(doc["model"]["module_ranges"])
    # only inside the capture (hooks go on after the warm-up rounds): the capture warm-up pass and the repeat,
    # each 1 prefill + 2 decode steps, run each decoder layer 3 times
    assert sum(1 for _, n, _ in tree if n == mp.decoder_moe_experts(1)) == 2 * 3
    moe_depth = next(d for d, n, _ in tree if n == mp.decoder_moe(1))
    i = next(k for k, (_, n, _) in enumerate(tree) if n == mp.decoder_moe(1))
    assert [(d - moe_depth, n) for d, n, _ in tree[i + 1 : i + 4]] == [
        (1, mp.decoder_moe_router(1)),
        (1, mp.decoder_moe_experts(1)),
        (1, mp.decoder_moe_shared(1)),
    ]
    assert (moe_depth - 1, mp.decoder_layer(1)) in {(d, n) for d, n, _ in tree}


@pytest.fixture
def narrow_model(monkeypatch):
    model = build_replica(narrow_arch(), seed=1)
    monkeypatch.setattr(worker, "load_model", lambda cfg: model)
    return model


CALLS = "test.calls"  #: the domain the counting model records its calls in


def count_calls(monkeypatch: pytest.MonkeyPatch, model) -> None:
    """Record every vision, prefill and decode-step call of ``model`` in the current emitter (domain ``test.calls``)."""
    cls = type(model)
    for name in ("encode_views", "prefill", "decode_step"):
        original = getattr(cls, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            em = emitter()
            em.push(_name, CALLS)
            try:
                return _original(self, *args, **kwargs)
            finally:
                em.pop(CALLS)

        monkeypatch.setattr(cls, name, counted)


def calls_by_context(rec: RecordingEmitter) -> dict[tuple[str, str], int]:
    """Model calls per (where, call): where is ``warmup`` (before the capture), ``capture warmup``
    (the capture warm-up: a ``warmup`` range inside ``capture``, or at the top level after the
    first one when there is no capture range) or ``repeat``."""
    out: dict[tuple[str, str], int] = {}
    stack: list[str] = []
    warmups = 0
    for ev in rec.events:
        if ev.domain == names.DOMAIN:
            if ev.kind == "push":
                stack.append(str(ev.name))
                warmups += ev.name == names.WARMUP
            else:
                stack.pop()
        elif ev.domain == CALLS and ev.kind == "push":
            if names.REPEAT in stack:
                where = "repeat"
            elif names.WARMUP in stack:
                inside = names.CAPTURE in stack or (warmups > 1 and stack == [names.WARMUP])
                where = "capture warmup" if inside else "warmup"
            else:
                where = "outside"
            key = (where, str(ev.name))
            out[key] = out.get(key, 0) + 1
    return out


def _page_copy(page: Path, tmp: Path) -> Path:
    other = tmp / "q.png"
    other.write_bytes(page.read_bytes())
    return other


@pytest.mark.parametrize("passes", [2, 0])
def test_capture_warmup_runs_whole_passes_inside_the_capture_without_stages(
    page, tmp_path, narrow_model, passes, capsys, monkeypatch
) -> None:
    """2 pages x 2 repeats x 3 tokens: the capture warm-up runs ``passes`` full passes, records nothing."""
    rec = RecordingEmitter()
    count_calls(monkeypatch, narrow_model)
    pages = (str(page), str(_page_copy(page, tmp_path)))
    cfg = config(page, tmp_path, pages=pages, repeats=2, warmup=1, capture_warmup=passes)
    with use_emitter(rec):
        doc = worker.run(cfg, emit_progress=True).to_json()
    tree = rec.tree()
    # the capture range opens, then the capture warm-up (when it runs), then the repeats
    inside = [(d, n) for d, n, _ in tree[1:] if n in (names.CAPTURE, names.WARMUP, names.REPEAT)]
    warm = [(1, names.WARMUP)] if passes else []
    assert tree[0] == (0, names.WARMUP, None)
    assert inside == [(0, names.CAPTURE), *warm, (1, names.REPEAT), (1, names.REPEAT)]
    # no range at all nested in the capture warm-up (no stage ranges)
    at = [i for i, (_, n, _) in enumerate(tree) if n == names.WARMUP][1:]
    assert all(tree[i + 1][0] <= tree[i][0] for i in at)
    # each repeat and each capture warm-up pass runs both pages: vision, prefill, 2 decode steps
    pass_work = {"encode_views": 2, "prefill": 2, "decode_step": 4}
    assert calls_by_context(rec) == {
        **{("warmup", k): 1 if k != "decode_step" else 2 for k in pass_work},  # one distinct grid
        **{("capture warmup", k): passes * v for k, v in pass_work.items() if passes},
        **{("repeat", k): 2 * v for k, v in pass_work.items()},
    }
    # timing.json: the repeats' records only, the capture warm-up in setup
    assert len(doc["records"]) == 2 * (1 + 2 * 9)
    assert {r["repeat"] for r in doc["records"]} == {0, 1}
    setup = doc["setup"]
    assert setup["capture_warmup_rounds"] == passes == doc["config"]["capture_warmup"]
    assert (setup["capture_warmup_s"] > 0) == (passes > 0)
    assert setup["capture_wall_s"] > 0 and setup["capture_open_s"] >= 0 and setup["capture_close_s"] >= 0
    # progress: the capture warm-up's pages, then the repeats'
    events = [json.loads(line.removeprefix("@dsocr ")) for line in capsys.readouterr().out.splitlines()]
    middle = [e for e in events if e["event"] in ("capture_start", "capture_warmup_done", "page_done")]
    assert middle[0] == {"event": "capture_start", "capture_warmup": passes}
    warm_pages = [{"event": "page_done", "warmup": r, "page": p} for r in range(passes) for p in range(2)]
    done = [{"event": "capture_warmup_done", "rounds": passes}] if passes else []
    rest = [{k: v for k, v in e.items() if k != "seconds"} for e in middle[1:]]
    assert rest == [
        *warm_pages,
        *done,
        *({"event": "page_done", "repeat": r, "page": p} for r in range(2) for p in range(2)),
    ]


def test_baseline_without_capture_range_does_the_same_work(page, tmp_path, narrow_model, monkeypatch) -> None:
    count_calls(monkeypatch, narrow_model)

    def run(capture_range: str, out: Path) -> tuple[dict, RecordingEmitter]:
        rec = RecordingEmitter()
        cfg = config(page, out, capture_range=capture_range, repeats=2, warmup=1, capture_warmup=1, max_new_tokens=2)
        with use_emitter(rec):
            return worker.run(cfg).to_json(), rec

    (tmp_path / "p").mkdir()
    (tmp_path / "b").mkdir()
    doc, rec = run("none", tmp_path / "b")
    profiled, prec = run("nvtx", tmp_path / "p")
    assert (doc["profiled"], profiled["profiled"]) == (False, True)
    tree = rec.tree()
    # the same sequence as the profiled run, without the capture range: warm-up, capture warm-up, repeats
    assert [n for d, n, _ in tree if d == 0] == [names.WARMUP, names.WARMUP, names.REPEAT, names.REPEAT]
    assert [(d + 1, n, p) for d, n, p in tree[1:]] == [(d, n, p) for d, n, p in prec.tree()[2:]]
    assert calls_by_context(rec) == calls_by_context(prec)
    assert calls_by_context(rec)[("capture warmup", "prefill")] == 1
    assert [p for _, n, p in tree if n == names.DECODE_STEP] == [0, 0]
    assert len(doc["records"]) == 2 * 9
    assert doc["setup"]["capture_warmup_rounds"] == 1 and doc["setup"]["capture_warmup_s"] > 0


def test_out_of_memory_names_the_stage_and_page(page, tmp_path, narrow_model, monkeypatch) -> None:
    def oom(_self, _x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(narrow_model), "prefill", oom)
    with pytest.raises(RunFailed) as err, use_emitter(RecordingEmitter()):
        worker.run(config(page, tmp_path, warmup=0, capture_warmup=0))
    assert err.value.message == (
        "CUDA out of memory in repeat 0 page 0 (p.png, tiny 1x1 crops) prefill: use a smaller mode "
        "(--mode base or tiny), fewer crops (--crops none) or a GPU with more free memory"
    )
    assert err.value.exit_code == ExitCode.RUN_FAILED
    with pytest.raises(RunFailed, match=r"in warm-up round 0 page 0 \(p.png, tiny 1x1 crops\) prefill"):
        worker.run(config(page, tmp_path, warmup=1))
    with pytest.raises(RunFailed, match=r"in capture warm-up pass 0 page 0 \(p.png, tiny 1x1 crops\) prefill"):
        worker.run(config(page, tmp_path, warmup=0, capture_warmup=1))


def test_op_ranges_on_cpu_torch_fail_with_a_clear_message(page, tmp_path) -> None:
    if torch.version.cuda is not None:
        pytest.skip("a CUDA build of torch supports emit_nvtx")
    cfg = config(page, tmp_path, op_ranges=True)
    with pytest.raises(EnvironmentProblem) as err:
        worker.check_environment(cfg)
    assert "--op-ranges needs a CUDA build of torch" in err.value.message
    assert f"torch {torch.__version__} is CPU-only" in err.value.message
    with pytest.raises(EnvironmentProblem, match="emit_nvtx raised 'Torch not compiled with CUDA enabled'"):  # noqa: SIM117
        with worker.op_ranges(cfg):
            pass


def test_cuda_device_without_gpu(page, tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    cfg = config(page, tmp_path, device="cuda", capture_range="cuda-profiler-api")
    with pytest.raises(EnvironmentProblem, match=r"no CUDA device is visible to torch .*use --device cpu"):
        worker.check_environment(cfg)


def test_config_round_trip_and_errors(page, tmp_path) -> None:
    cfg = config(page, tmp_path)
    path = tmp_path / "RUN_CONFIG.json"
    cfg.write(path)
    assert WorkerConfig.read(path) == cfg
    with pytest.raises(BadInput, match="capture_range cuda-profiler-api needs a CUDA device"):
        config(page, tmp_path, capture_range="cuda-profiler-api")
    with pytest.raises(BadInput, match="has unknown fields colour"):
        WorkerConfig.from_dict({"pages": ["a.png"], "timing_out": "t.json", "colour": 1})
    with pytest.raises(BadInput, match="field repeats is '3', expected int"):
        WorkerConfig.from_dict({"pages": ["a.png"], "timing_out": "t.json", "repeats": "3"})
    with pytest.raises(BadInput, match="field capture_warmup is True, expected int"):
        WorkerConfig.from_dict({"pages": ["a.png"], "timing_out": "t.json", "capture_warmup": True})
    with pytest.raises(BadInput, match="worker config capture_warmup is -1: it must be 0 or more"):
        config(page, tmp_path, capture_warmup=-1)
    assert WorkerConfig.from_dict({"pages": ["a.png"], "timing_out": "t.json"}).capture_warmup == 1
    with pytest.raises(BadInput, match="lacks timing_out"):
        WorkerConfig.from_dict({"pages": ["a.png"]})


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsocr.capture.worker", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_worker_process_exit_codes_and_one_line_errors(tmp_path) -> None:
    missing = _run_module("--config", str(tmp_path / "none.json"))
    assert missing.returncode == ExitCode.NOT_FOUND == InputNotFound.exit_code
    assert missing.stderr.strip() == (
        f"dsocr worker: error: worker config {tmp_path / 'none.json'} does not exist: "
        "pass the RUN_CONFIG.json the driver wrote"
    )
    assert '"event":"failed"' in missing.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pages": ["a.png"], "timing_out": "t.json", "mode": "huge"}))
    out = _run_module("--config", str(bad))
    assert out.returncode == ExitCode.BAD_INPUT
    assert out.stderr.strip() == "dsocr worker: error: unknown resolution mode 'huge': use one of " + ", ".join(
        ["tiny", "small", "base", "large", "gundam", "gundam-m"]
    )


class _FakeCuda:
    """Just enough of torch.cuda for StageTimer: a clock, an allocator peak, events."""

    def __init__(self) -> None:
        self.now = 0.0
        self.allocated = 0
        self.peak = 0
        self.syncs = 0
        fake = self

        class Event:
            def __init__(self, enable_timing: bool) -> None:
                assert enable_timing
                self.t = 0.0

            def record(self) -> None:
                self.t = fake.now

            def elapsed_time(self, end) -> float:
                return end.t - self.t

        self.Event = Event

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def max_memory_allocated(self) -> int:
        return self.peak

    def reset_peak_memory_stats(self) -> None:
        self.peak = self.allocated

    def synchronize(self) -> None:
        self.syncs += 1


def test_stage_timer_gives_nested_stages_their_own_peaks() -> None:
    from types import SimpleNamespace

    from dsocr.capture.timing import StageTimer

    cuda = _FakeCuda()
    timer = StageTimer(cuda=False)
    timer.cuda, timer._torch = True, SimpleNamespace(cuda=cuda)
    with timer.stage({"stage": "page"}):
        cuda.alloc(100)
        with timer.stage({"stage": "vision"}):
            cuda.alloc(1000)
            cuda.now += 5.0
            cuda.alloc(-1000)
        with timer.stage({"stage": "prefill"}):
            cuda.alloc(300)
            cuda.now += 2.0
    recs = timer.records()
    assert cuda.syncs == 1
    assert [(r["stage"], r["ms"], r["peak_allocated_bytes"]) for r in recs] == [
        ("page", 7.0, 1100),
        ("vision", 5.0, 1100),
        ("prefill", 2.0, 400),
    ]


def test_op_memory_pass_on_the_cpu(page, tmp_path) -> None:
    """``op_memory_out``: one extra pass under the profiler after the capture; op_memory.json per stage and operator."""
    from dsocr.contract.op_memory import OpMemory

    out = tmp_path / "op_memory.json"
    cfg = config(page, tmp_path, warmup=0, capture_warmup=0, op_memory_out=str(out))
    rec = RecordingEmitter()
    with use_emitter(rec):
        doc = worker.run(cfg).to_json()
    assert doc["setup"]["op_memory_s"] > 0
    # the pass adds no stage range and no record: one repeat's worth, as without it
    assert len(doc["records"]) == 10
    assert [n for _, n, _ in rec.tree()].count(names.PREFILL) == 1
    mem = OpMemory.read(out)
    assert mem.device == "cpu"
    stages = {s.stage: s for s in mem.stages}
    assert {"sam", "clip", "projector", "vision", "prefill", "decode", "decode_step", "page"} <= set(stages)
    assert stages["decode_step"].instances == 2 and stages["prefill"].instances == 1
    for name in ("sam", "clip", "prefill", "decode_step"):
        s = stages[name]
        assert s.peak_bytes is None  # the CPU allocator keeps no peak
        assert s.allocated_bytes > 0 and s.allocations > 0 and s.peak_increase_bytes > 0
        assert s.operators and all(o.operator.startswith("aten::") for o in s.operators)
        assert s.allocated_bytes >= sum(o.allocated_bytes for o in s.operators)
        sizes = [o.allocated_bytes for o in s.operators]
        assert sizes == sorted(sizes, reverse=True)
    assert "aten::mm" in {o.operator for o in stages["prefill"].operators} | {
        o.operator for o in stages["decode_step"].operators
    }
