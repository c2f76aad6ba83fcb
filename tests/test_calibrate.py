"""``dsocr calibrate`` on the CPU: every kind times, the file's schema, errors per signature, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from dsocr.analytic.calibration import parse_calibration, required_kernels  # noqa: E402
from dsocr.analytic.signature import KINDS, Kernel  # noqa: E402
from dsocr.analytic.workload import Workload, estimate  # noqa: E402
from dsocr.capture import calibrate as cal  # noqa: E402
from dsocr.capture import calibrate_ops  # noqa: E402
from dsocr.cli import main  # noqa: E402
from dsocr.contract.errors import BadInput, ExitCode  # noqa: E402

K = Kernel.of

#: One tiny signature of every kind (and every variant a builder distinguishes).
TINY: list[Kernel] = [
    K("linear", rows=8, **{"in": 16}, out=24, bias=1),
    K("linear", rows=1, **{"in": 16}, out=24, bias=0),
    K("conv2d", batch=1, cin=3, cout=8, size=32, kernel=16, stride=16, padding=0, bias=1),
    K("conv2d", batch=2, cin=8, cout=4, size=8, kernel=3, stride=2, padding=1, bias=0),
    K("layer_norm", rows=16, dim=8, layout="last"),
    K("layer_norm", rows=16, dim=8, layout="2d"),
    K("layer_norm", rows=12, dim=8, layout="2d"),
    K("rms_norm", rows=5, dim=16),
    K("activation", fn="gelu", elements=100),
    K("activation", fn="quick_gelu", elements=100),
    K("activation", fn="silu", elements=100),
    K("gated", elements=100),
    K("elementwise", elements=100, inputs=2),
    K("elementwise", elements=100, inputs=3),
    K("copy", elements=5 * 28 * 28, pattern="window_partition", batch=1, side=20, dim=5, window=14),
    K("copy", elements=5 * 20 * 20, pattern="window_unpartition", batch=1, side=20, dim=5, window=14),
    K("copy", elements=101, pattern="concat", batch=0, side=0, dim=0, window=0),
    K("embedding", rows=4, vocab=50, dim=8),
    K("attention", batch=2, heads=2, kv_heads=2, q=16, kv=16, head_dim=8, causal=0, impl="sdpa", mask=1),
    K("attention", batch=1, heads=2, kv_heads=2, q=16, kv=16, head_dim=8, causal=0, impl="eager", mask=1),
    K("attention", batch=2, heads=2, kv_heads=2, q=5, kv=5, head_dim=8, causal=0, impl="sdpa", mask=0),
    K("attention", batch=1, heads=4, kv_heads=2, q=6, kv=6, head_dim=8, causal=1, impl="sdpa", mask=0),
    K("attention", batch=1, heads=4, kv_heads=2, q=1, kv=7, head_dim=8, causal=1, impl="sdpa", mask=0),
    K("attention", batch=1, heads=2, kv_heads=2, q=6, kv=6, head_dim=8, causal=1, impl="eager", mask=0),
    K("rel_pos", batch=2, heads=2, side=4, head_dim=8, table=27),
    K("rope", rows=6, heads=4, kv_heads=2, head_dim=8),
    K("kv_append", batch=1, kv_heads=2, new=6, past=0, head_dim=8),
    K("kv_append", batch=1, kv_heads=2, new=1, past=6, head_dim=8),
    K("router", rows=6, hidden=16, experts=8, top_k=2),
    K("routed_experts", rows=6, hidden=16, inter=8, experts=8, top_k=2),
]


def _measure(kernels: list[Kernel], **kwargs: Any) -> tuple[list[cal.Measured], cal.Method]:
    return cal.measure(kernels, device="cpu", iterations=2, warmup=1, l2_flush_bytes=0, **kwargs)


def test_every_kind_has_a_builder_and_a_tiny_case() -> None:
    assert set(calibrate_ops.BUILDERS) == set(KINDS)
    assert {k.kind for k in TINY} == set(KINDS)


def test_every_kind_runs_on_the_cpu_with_positive_times() -> None:
    results, method = _measure(TINY)
    assert [r.kernel.key for r in results] == [k.key for k in TINY]
    failed = {r.kernel.key: r.error for r in results if r.error is not None}
    assert failed == {}
    for r in results:
        assert r.min_ns is not None and r.median_ns is not None and r.max_ns is not None
        assert 0 < r.min_ns <= r.median_ns <= r.max_ns, r.kernel.key
        assert r.iterations == 2
    assert method == cal.Method(iterations=2, warmup=1, l2_flush_bytes=0, timer="perf_counter_ns")


def test_outputs_have_the_replicas_shapes() -> None:
    """What a few builders return: the tensors the replica's code produces at that signature."""
    cpu = torch.device("cpu")

    def out(k: Kernel) -> Any:
        torch.manual_seed(0)
        with torch.inference_mode():
            return calibrate_ops.build(k, cpu, torch.float32)()

    windows, pad = out(TINY[14])
    assert tuple(windows.shape) == (4, 14, 14, 5) and pad == (28, 28)  # 20 -> padded 28: 2 x 2 windows
    assert tuple(out(TINY[15]).shape) == (1, 20, 20, 5)
    assert tuple(out(TINY[18]).shape) == (2, 4, 4, 16)  # SAM attention back to [batch, side, side, dim]
    assert tuple(out(TINY[24]).shape) == (2, 2, 16, 16)  # rel-pos bias [batch, heads, side^2, side^2]
    keys, values = out(TINY[27])
    assert tuple(keys.shape) == tuple(values.shape) == (1, 2, 7, 8)  # past 6 + 1 new
    index, weights = out(TINY[28])  # MoeRouter: top-k ids and their float32 weights
    assert tuple(index.shape) == tuple(weights.shape) == (6, 2) and weights.dtype == torch.float32
    assert tuple(out(TINY[29]).shape) == (6, 16)


def test_routed_experts_time_in_either_moe_execution() -> None:
    """--moe picks the replica's MoE execution the routed experts run in; an unknown one stops before timing."""
    k = K("routed_experts", rows=5, hidden=16, inter=8, experts=4, top_k=2)
    for moe in ("loop", "grouped"):
        results, _ = _measure([k], moe=moe)
        assert results[0].error is None and results[0].median_ns is not None, moe
    with pytest.raises(BadInput, match="moe 'fast' is unknown: use one of loop, grouped"):
        _measure([k], moe="fast")


def test_duplicates_are_measured_once_in_first_seen_order() -> None:
    a, b = TINY[12], TINY[13]
    results, _ = _measure([a, b, a, b, a])
    assert [r.kernel.key for r in results] == [a.key, b.key]


def test_a_failing_signature_is_recorded_and_the_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    bad_shape = K("attention", batch=1, heads=2, kv_heads=2, q=15, kv=15, head_dim=8, causal=0, impl="sdpa", mask=1)
    ok = TINY[12]

    def out_of_memory(k: Kernel, device: Any, dtype: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB\nmore detail")

    monkeypatch.setitem(calibrate_ops.BUILDERS, "rms_norm", out_of_memory)
    done: list[tuple[int, str | None]] = []
    results, _ = _measure(
        [bad_shape, TINY[7], ok], on_done=lambda i, r: done.append((i, r.error and r.error.split(":")[0]))
    )
    assert [r.error is None for r in results] == [False, False, True]
    assert results[0].error is not None and "square" in results[0].error
    assert results[1].error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 40.00 GiB"
    assert (results[0].median_ns, results[0].iterations) == (None, 0)
    assert results[2].median_ns is not None and results[2].median_ns > 0
    assert done == [(0, "BadInput"), (1, "OutOfMemoryError"), (2, None)]


def test_an_unknown_kind_is_a_clear_error_before_anything_runs() -> None:
    started: list[int] = []
    with pytest.raises(BadInput, match=r"kind 'flash_mla' cannot be calibrated \(known kinds: linear, "):
        cal.measure([TINY[0], Kernel("flash_mla", (("q", 1),))], device="cpu", on_start=lambda i, k: started.append(i))
    assert started == []


def test_bad_parameters_are_recorded_per_signature() -> None:
    results, _ = _measure(
        [
            K("activation", fn="relu6", elements=10),
            K("copy", elements=1, pattern="zigzag", batch=0, side=0, dim=0, window=0),
        ]
    )
    assert [r.error for r in results] == [
        "BadInput: activation[fn=relu6,elements=10]: parameter fn = 'relu6' must be one of gelu, quick_gelu, silu",
        "BadInput: copy[elements=1,pattern=zigzag,batch=0,side=0,dim=0,window=0]: parameter pattern = 'zigzag' "
        "must be one of window_partition, window_unpartition, concat",
    ]


def test_the_document_schema_and_the_analytic_model_reads_it() -> None:
    results, method = _measure([TINY[0], K("activation", fn="relu6", elements=10)])
    doc = cal.calibration_document(results, method, device=torch.device("cpu"), dtype=torch.float32, extra={"x": 1})
    doc = json.loads(doc.text())
    assert list(doc) == [
        "schema",
        "version",
        "created",
        "gpu",
        "device",
        "dtype",
        "torch",
        "transformers",
        "method",
        "x",
        "kernels",
    ]
    assert (doc["schema"], doc["version"], doc["gpu"], doc["device"], doc["dtype"]) == (
        "dsocr.calibration",
        1,
        "cpu",
        "cpu",
        "fp32",
    )
    assert doc["created"].endswith("+00:00") and doc["torch"] == torch.__version__
    assert doc["method"] == {"iterations": 2, "warmup": 1, "l2_flush_bytes": 0, "timer": "perf_counter_ns"}
    first, second = doc["kernels"]
    assert first["key"] == "linear[rows=8,in=16,out=24,bias=1]" and first["kind"] == "linear"
    assert first["params"] == {"rows": 8, "in": 16, "out": 24, "bias": 1}
    assert first["error"] is None and first["iterations"] == 2 and first["median_ns"] > 0
    assert second["median_ns"] is None and second["error"].startswith("BadInput: ")
    parsed = parse_calibration(doc)
    assert set(parsed.times) == {first["key"]} and set(parsed.failed) == {second["key"]}
    assert parsed.times[first["key"]] == first["median_ns"]


def test_smoke_architecture_signatures_all_run() -> None:
    """Every signature the analytic model lists for a tiny-mode page of the smoke model runs here."""
    w = Workload(mode="tiny", prompt_tokens=4, new_tokens=3, dtype="fp32")
    kernels = required_kernels([estimate(w, cal.SMOKE_ARCH)])
    assert {k.kind for k in kernels} == set(KINDS)
    results, _ = cal.measure(kernels, device="cpu", iterations=1, warmup=0, l2_flush_bytes=0)
    assert [r.kernel.key for r in results if r.error is not None] == []


# --------------------------------------------------------------------------- CLI
def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    Image.new("RGB", (300, 400), "white").save(path)
    return path


SMOKE = ("--smoke", "--mode", "tiny", "--max-new-tokens", "2", "--iterations", "1", "--warmup-runs", "0")


def test_cli_on_cpu_writes_a_valid_file_atomically(
    capsys: pytest.CaptureFixture[str], page: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "new" / "dir"
    out = out_dir / "cal.json"
    code, stdout, err = run(
        capsys, *SMOKE, "--pages", str(page), "--device", "cpu", "--l2-flush-mb", "0", "--out", str(out)
    )
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert "warning" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["cal.json"]  # no temporary file left
    doc = json.loads(out.read_text())
    assert (doc["schema"], doc["device"], doc["gpu"], doc["dtype"]) == ("dsocr.calibration", "cpu", "cpu", "fp32")
    assert doc["method"]["l2_flush_bytes"] == 0 and doc["method"]["iterations"] == 1
    assert doc["workload"]["smoke"] is True and doc["workload"]["pages"] == ["page.png"]
    assert doc["workload"]["crop_grids"] == [[1, 1]]
    assert doc["workload"]["moe"] == "loop"  # the replica's default execution (--moe)
    w = Workload(mode="tiny", prompt_tokens=12, new_tokens=2, dtype="fp32")
    assert [k["key"] for k in doc["kernels"]] == [k.key for k in required_kernels([estimate(w, cal.SMOKE_ARCH)])]
    assert all(k["error"] is None and k["median_ns"] > 0 for k in doc["kernels"])


def test_cli_auto_device_falls_back_to_the_cpu_with_a_warning(
    capsys: pytest.CaptureFixture[str], page: Path, tmp_path: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: auto picks it")
    out = tmp_path / "cal.json"
    code, stdout, err = run(capsys, *SMOKE, "--pages", str(page), "--l2-flush-mb", "0", "--out", str(out), "--json")
    assert code == 0, err
    assert err.count("dsocr: warning: no CUDA GPU here: calibrating on the CPU") == 1
    assert json.loads(stdout) == json.loads(out.read_text())


def test_cli_a_failure_while_measuring_leaves_the_old_file(
    capsys: pytest.CaptureFixture[str], page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cal.json"
    out.write_text("old\n")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cal, "measure", boom)
    code, _, err = run(capsys, *SMOKE, "--pages", str(page), "--device", "cpu", "--out", str(out))
    assert code == ExitCode.INTERRUPTED and err.strip().endswith("dsocr: interrupted")
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "page.png"]


@pytest.mark.parametrize("where", ["directory", "under_a_file"])
def test_cli_bad_out_place_is_one_line_before_measuring(
    capsys: pytest.CaptureFixture[str], page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = tmp_path if where == "directory" else blocker / "cal.json"
    monkeypatch.setattr(cal, "measure", lambda *a, **k: pytest.fail("measured before checking --out"))
    code, stdout, err = run(capsys, *SMOKE, "--pages", str(page), "--device", "cpu", "--out", str(out))
    assert code == ExitCode.USAGE  # an output path of the wrong kind, as in every command (docs/exit-codes.md)
    assert stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dsocr: error: --out {out}: ")


def _flat(text: str) -> str:
    """A usage error's text without rich's box and line wrapping."""
    return " ".join(text.replace("│", " ").split())


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str], page: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "c.json")
    code, _, err = run(capsys, *SMOKE, "--pages", str(page), "--device", "tpu", "--out", out)
    assert code == ExitCode.USAGE and "'tpu' is not a device" in _flat(err)
    code, _, err = run(capsys, "--smoke", "--mode", "tiny", "--crops", "2x2", "--pages", str(page), "--out", out)
    assert code == ExitCode.USAGE and "mode tiny does not crop" in _flat(err)
    code, _, err = run(capsys, *SMOKE, "--pages", str(page), "--moe", "fast", "--out", out)
    assert code == ExitCode.USAGE and "'fast' is not an MoE execution" in _flat(err)
    code, _, err = run(capsys, *SMOKE, "--pages", str(tmp_path / "missing.png"), "--device", "cpu", "--out", out)
    assert code == ExitCode.NOT_FOUND and err.count("\n") == 1
    assert not (tmp_path / "c.json").exists()


def test_cli_cuda_without_a_gpu_is_an_environment_error(
    capsys: pytest.CaptureFixture[str], page: Path, tmp_path: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    code, _, err = run(capsys, *SMOKE, "--pages", str(page), "--device", "cuda", "--out", str(tmp_path / "c.json"))
    assert code == ExitCode.ENVIRONMENT
    assert err.strip() == "dsocr: error: --device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto"


def test_kernel_sums_take_each_run_range_device_total() -> None:
    from types import SimpleNamespace

    from dsocr.capture.calibrate import RUN_RANGE, kernel_sums_ns

    events = [
        SimpleNamespace(name=RUN_RANGE, device_time_total=12.5),
        SimpleNamespace(name="aten::add", device_time_total=3.0),
        SimpleNamespace(name=RUN_RANGE, device_time_total=11.25),
        # torch 2.11 on CUDA also lists the range as a GPU user annotation: not a run
        SimpleNamespace(name=RUN_RANGE, device_time_total=40.0, device_type="DeviceType.CUDA"),
    ]
    assert kernel_sums_ns(events) == [12500, 11250]
    old = [SimpleNamespace(name=RUN_RANGE, device_time_total=None, cuda_time_total=7.0)]
    assert kernel_sums_ns(old) == [7000]


def test_run_ranges_are_found_in_a_real_profile() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from dsocr.capture.calibrate import RUN_RANGE, kernel_sums_ns

    x = torch.ones(64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            with record_function(RUN_RANGE):
                (x + 1).sum()
    assert kernel_sums_ns(prof.events()) == [0, 0, 0]  # three runs found; no GPU kernels on the CPU
