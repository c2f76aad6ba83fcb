"""`dsocr capture` / `dsocr export` / `dsocr pages` on the command line: one-line errors and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsocr.capture import manifest
from dsocr.cli import main
from dsocr.cli.capture import parse_shrink
from dsocr.contract.errors import BadUsage, ExitCode


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err


def test_bad_page_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "page.webp"
    bad.write_bytes(b"RIFF....WEBPjunk")
    code, err = _run(["capture", "--device", "cpu", "--pages", str(bad), "--out", str(tmp_path / "r")], capsys)
    assert code == ExitCode.BAD_INPUT
    assert (
        err == f"dsocr: error: {bad}: not a PNG, JPEG, TIFF, WebP or PDF file (unrecognized content); "
        "convert it or leave it out\n"
    )
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()


def test_missing_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["capture", "--pages", str(tmp_path / "nope.pdf")], capsys)
    assert code == ExitCode.NOT_FOUND
    assert (
        err == f"dsocr: error: {tmp_path / 'nope.pdf'}: no such file or directory; "
        "pass page images, PDFs or a directory of them\n"
    )


@pytest.mark.skipif(bool(manifest.gpu_environment()["gpus"]), reason="this machine has a GPU")
def test_no_gpu_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["capture", "--out", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ENVIRONMENT
    assert err.startswith("dsocr: error: no NVIDIA GPU found (")
    assert err.endswith(
        "or pass --device cpu to run the whole pipeline on the CPU under nsys (NVTX ranges, no kernels)\n"
    )


def test_bad_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["capture", "--model", str(tmp_path / "nockpt"), "--device", "cpu"], capsys)
    assert code == ExitCode.NOT_FOUND  # a path that does not exist (and no hub id: it is absolute)
    assert err == (
        f"dsocr: error: --model {tmp_path / 'nockpt'}: neither 'replica', an existing checkpoint directory nor a hub "
        "id (owner/name); pass one of them\n"
    )


def _flat(text: str) -> str:
    """Click's boxed usage error as one line of words."""
    return " ".join(text.replace("\u2502", " ").split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--repeats", "0"), "Invalid value for '--repeats' / '-r' (env var: 'DSOCR_REPEATS'):"),
        (
            ("--device", "tpu"),
            "Invalid value for '--device' (env var: 'DSOCR_DEVICE'): 'tpu' is not a device: use cuda",
        ),
        (("--mode", "huge"), "Invalid value for '--mode' (env var: 'DSOCR_MODE'): unknown resolution mode 'huge'"),
        (("--crops", "2by2"), "Invalid value for '--crops' (env var: 'DSOCR_CROPS'): crop grid '2by2' is not WxH"),
        (("--max-new-tokens", "0"), "Invalid value for '--max-new-tokens'"),
        (("--warmup", "-1"), "Invalid value for '--warmup'"),
        (("--capture-warmup", "-1"), "Invalid value for '--capture-warmup' (env var: 'DSOCR_CAPTURE_WARMUP')"),
        (("--baseline-runs", "-1"), "Invalid value for '--baseline-runs'"),
        (("--dtype", "f8"), "Invalid value for '--dtype' (env var: 'DSOCR_DTYPE'): 'f8' is not a dtype"),
        (
            ("--attn", "flash"),
            "Invalid value for '--attn' (env var: 'DSOCR_CAPTURE_ATTN'): 'flash' is not an attention execution",
        ),
        (("--moe", "fast"), "Invalid value for '--moe' (env var: 'DSOCR_MOE'): 'fast' is not an MoE execution"),
    ],
)
def test_bad_option_values_are_usage_errors(
    args: tuple[str, ...], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 (bad command line) with click's message naming the option, before any work (no run directory)."""
    code, err = _run(["capture", *args, "--out", str(tmp_path / "r")], capsys)
    assert code == ExitCode.USAGE
    assert err.startswith("dsocr: error: dsocr capture: ") and err.count("\n") == 1  # one line
    assert message in err
    assert "worker config" not in err and not (tmp_path / "r").exists()


def test_shrink_option() -> None:
    s = parse_shrink("1,2,3,512,4")
    assert (s.sam_layers, s.clip_layers, s.decoder_layers, s.vocab, s.routed_experts) == (1, 2, 3, 512, 4)
    s = parse_shrink("2,2,2")
    assert (s.vocab, s.routed_experts) == (None, None)
    assert parse_shrink(None) is None
    with pytest.raises(BadUsage) as exc:
        parse_shrink("2,x")
    assert exc.value.exit_code == ExitCode.USAGE
    assert exc.value.message.startswith("--shrink '2,x': give SAM,CLIP,DECODER layer counts")


def test_export_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["export", str(tmp_path / "gone")], capsys)
    assert code == ExitCode.NOT_FOUND
    assert (
        err == f"dsocr: error: {tmp_path / 'gone'}: no such run directory; pass a directory made by `dsocr capture`\n"
    )


def test_export_without_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["export", str(tmp_path)], capsys)
    assert code == ExitCode.NOT_FOUND
    assert err.startswith(f"dsocr: error: {tmp_path / 'trace.nsys-rep'}: no such nsys report")


@pytest.mark.skipif(manifest.torch_cuda_version() is not None, reason="torch here is a CUDA build")
def test_op_ranges_need_cuda_torch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["capture", "--device", "cpu", "--op-ranges", "--out", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ENVIRONMENT
    assert err.startswith("dsocr: error: --op-ranges needs a CUDA build of torch (emit_nvtx raises ")
    assert err.endswith("is CPU-only: drop --op-ranges or install a CUDA build of torch\n")
    assert not (tmp_path / "r").exists()


def test_baseline_runs_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["capture", "--device", "cpu", "--out", str(tmp_path / "r")]
    code, err = _run([*argv, "--baseline-runs", "-2"], capsys)
    assert code == ExitCode.USAGE and "Invalid value for '--baseline-runs'" in _flat(err)
    monkeypatch.setenv("DSOCR_BASELINE_RUNS", "-3")  # the option's variable
    code, err = _run(argv, capsys)
    assert code == ExitCode.USAGE and "Invalid value for '--baseline-runs' (env var: 'DSOCR_BASELINE_RUNS')" in _flat(
        err
    )
    assert not (tmp_path / "r").exists()


def test_capture_warmup_option_reaches_the_driver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--capture-warmup (default 1, DSOCR_CAPTURE_WARMUP) lands in the driver's settings, next to --warmup."""
    from dsocr.capture import driver

    seen: list[tuple[int, int]] = []

    def fake(settings: driver.CaptureSettings, reporter: object, **_: object) -> driver.CaptureResult:
        seen.append((settings.warmup, settings.capture_warmup))
        return driver.CaptureResult(run_dir=tmp_path / "r", manifest={})

    monkeypatch.setattr(driver, "run_capture", fake)
    for var in ("DSOCR_WARMUP", "DSOCR_CAPTURE_WARMUP"):
        monkeypatch.delenv(var, raising=False)
    argv = ["capture", "--device", "cpu", "--quiet"]
    assert _run(argv, capsys)[0] == ExitCode.OK
    assert _run([*argv, "--capture-warmup", "0"], capsys)[0] == ExitCode.OK
    monkeypatch.setenv("DSOCR_CAPTURE_WARMUP", "3")
    code, err = _run(argv, capsys)
    assert (code, err) == (ExitCode.OK, "")  # its own variable, not an old name of DSOCR_WARMUP (no warning)
    assert _run([*argv, "--capture-warmup", "2", "--warmup", "0"], capsys)[0] == ExitCode.OK
    assert seen == [(2, 1), (2, 0), (2, 3), (0, 2)]


def test_execution_options_reach_the_worker_and_the_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--attn/--moe (default: the vendor's eager/loop) land in the settings, the worker config and calibrate."""
    from dsocr.capture import driver

    seen: list[driver.CaptureSettings] = []

    def fake(settings: driver.CaptureSettings, reporter: object, **_: object) -> driver.CaptureResult:
        seen.append(settings)
        return driver.CaptureResult(run_dir=tmp_path / "r", manifest={})

    monkeypatch.setattr(driver, "run_capture", fake)
    for var in ("DSOCR_CAPTURE_ATTN", "DSOCR_MOE"):
        monkeypatch.delenv(var, raising=False)
    argv = ["capture", "--device", "cpu", "--quiet"]
    assert _run(argv, capsys)[0] == ExitCode.OK
    monkeypatch.setenv("DSOCR_MOE", "grouped")
    assert _run([*argv, "--attn", "sdpa"], capsys)[0] == ExitCode.OK
    # no --attn: the model path's default (eager for the replica and for the checkpoint's own code)
    assert [(s.attn, s.moe) for s in seen] == [(None, "loop"), ("sdpa", "grouped")]
    from dsocr.capture.inputs import default_pages

    first = seen[0].worker_config(default_pages()[:1], tmp_path / "t.json", profiled=False)
    assert (first.attn_implementation, first.moe) == ("eager", "loop")
    assert seen[0].to_json()["attn"] == "eager"  # the manifest records the attention that runs

    cfg = seen[1].worker_config(default_pages()[:1], tmp_path / "t.json", profiled=False)
    assert (cfg.attn_implementation, cfg.moe) == ("sdpa", "grouped")
    cmd = driver.calibrate_command(seen[1], tmp_path / "c.json")
    assert cmd[cmd.index("--moe") + 1] == "grouped"
    assert seen[1].to_json()["attn"] == "sdpa" and seen[1].to_json()["moe"] == "grouped"  # manifest settings


def test_variant_options_reach_the_worker_config_and_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--decode/--batch/--cuda-graph-trace (defaults eager/1/node) land in the settings, the worker config and
    the manifest's settings; the nsys command takes the graph trace mode."""
    from dsocr.capture import driver, nsys

    seen: list[driver.CaptureSettings] = []

    def fake(settings: driver.CaptureSettings, reporter: object, **_: object) -> driver.CaptureResult:
        seen.append(settings)
        return driver.CaptureResult(run_dir=tmp_path / "r", manifest={})

    monkeypatch.setattr(driver, "run_capture", fake)
    for var in ("DSOCR_DECODE", "DSOCR_BATCH", "DSOCR_CUDA_GRAPH_TRACE", "DSOCR_MOE"):
        monkeypatch.delenv(var, raising=False)
    assert _run(["capture", "--device", "cpu", "--quiet"], capsys)[0] == ExitCode.OK
    argv = ["capture", "--quiet", "--moe", "grouped", "--decode", "graph", "--batch", "4"]
    assert _run([*argv, "--cuda-graph-trace", "graph"], capsys)[0] == ExitCode.OK
    assert [(s.decode, s.batch, s.cuda_graph_trace) for s in seen] == [("eager", 1, "node"), ("graph", 4, "graph")]
    from dsocr.capture.inputs import default_pages

    cfg = seen[1].worker_config(default_pages()[:4], tmp_path / "t.json", profiled=False)
    assert (cfg.decode, cfg.batch, cfg.moe) == ("graph", 4, "grouped")
    manifest = seen[1].to_json()
    assert (manifest["decode"], manifest["batch"], manifest["cuda_graph_trace"]) == ("graph", 4, "graph")
    cmd = nsys.profile_command(Path("/x/nsys"), tmp_path / "t", ["python"], "cuda", cuda_graph_trace="graph")
    assert "--cuda-graph-trace=graph" in cmd and "--cuda-graph-trace=node" not in cmd
