"""``dsocr model``: Markdown and JSON output, the documented schema, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsocr.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["model", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--mode", "gundam", "--crops", "2x2", "--prompt-tokens", "12", "--new-tokens", "128", "--format", "json"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "dsocr.model/2"
    w = doc["workload"]
    assert (w["mode"], w["crop_grid"], w["image_embeddings"], w["prefill_length"], w["new_tokens"]) == (
        "gundam",
        [2, 2],
        693,
        705,
        128,
    )
    assert w["context_mode"] == "auto"
    assert [(v["kind"], v["count"]) for v in w["views"]] == [("crop", 4), ("global", 1)]
    for stage in ("vision", "prefill", "decode"):
        assert {"flops", "tensor_flops", "bytes"} <= doc["stages"][stage].keys()
        assert doc["stages"][stage]["flops"] >= doc["stages"][stage]["tensor_flops"] > 0
    assert doc["memory"]["params"] == 3_336_106_240
    # the decoder runs in prefill and decode but its parameters count once (issue 12: 6.27e9 before)
    assert doc["total"]["params"] == 3_336_106_240
    assert doc["stages"]["prefill"]["params"] == doc["stages"]["decode"]["params"] == 2_934_734_080
    # footprint vs traffic: the weights' memory (params x 2 bytes) and the weights read by the operations
    assert doc["memory"]["weight_footprint_bytes"] == 2 * 3_336_106_240
    assert "weights_bytes" not in doc["memory"] and "weight_bytes" not in doc["total"]
    assert doc["total"]["weight_read_bytes"] == sum(doc["stages"][s]["weight_read_bytes"] for s in doc["stages"])
    modules = {m["path"]: m for m in doc["modules"]}
    assert [m["path"] for m in doc["modules"] if m["parent"] is None] == [
        "vision.sam",
        "vision.clip",
        "vision.projector",
        "decoder",
        "lm_head",
    ]
    for path in (
        "vision.sam.blocks.3",
        "decoder.layers.5.moe",
        "decoder.layers.5.moe.experts",
        "vision.clip.layers.23",
    ):
        assert {"path", "kind", "calls", "flops", "bytes", "params"} <= modules[path].keys()
    assert modules["decoder.layers.5.moe.experts"]["categories"]["matmul"] > 0
    assert doc["peak"] is None
    assert sum(m["params"] for m in doc["modules"] if m["parent"] is None) == 3_336_106_240


def test_markdown_with_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--mode", "base", "--gpu", "NVIDIA H100 80GB HBM3", "--depth", "0")
    assert code == 0
    assert "mode **base**, crop grid 1x1" in out
    assert "image embeddings 273 = 256 global + 0 crop tokens + 16 newlines + 1 separator" in out
    assert "peak 989.4 TFLOP/s, 3.35 TB/s (table: H100 SXM5 80GB)" in out
    assert "| vision.sam | sam | 1 |" in out
    assert "vision.sam.blocks.0" not in out  # --depth 0


def test_image_size_picks_grid_and_out_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    code, out, _err = run(capsys, "--image-size", "1654x2339", "--json", "--out", str(target))
    assert code == 0 and out == ""
    doc = json.loads(target.read_text())
    assert doc["workload"]["crop_grid"] == [2, 3]
    assert doc["workload"]["image_size"] == [1654, 2339]


def test_unknown_gpu_warns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--gpu", "Tesla T4", "--format", "json")
    assert code == 0
    assert json.loads(out)["peak"]["tflops_source"] == "unknown"
    assert "is not in the peak table" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--crops", "2x2", "--image-size", "800x600"), "dsocr: error: give --crops or --image-size, not both"),
        (("--mode", "tiny", "--crops", "2x2"), "dsocr: error: mode tiny does not crop, but crop grid 2x2 was given"),
    ],
)
def test_bad_options_one_line(capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def _flat(text: str) -> str:
    """Click's boxed usage error as one line of words."""
    return " ".join(text.replace("\u2502", " ").split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--crops", "3x"), "Invalid value for '--crops' (env var: 'DSOCR_CROPS'): crop grid '3x' is not WxH"),
        (("--crops", "2by2"), "Invalid value for '--crops' (env var: 'DSOCR_CROPS'): crop grid '2by2' is not WxH"),
        (("--mode", "huge"), "Invalid value for '--mode' (env var: 'DSOCR_MODE'): unknown resolution mode 'huge'"),
        (("--context", "soon"), "Invalid value for '--context' (env var: 'DSOCR_CONTEXT'): decode context 'soon'"),
        (("--new-tokens", "0"), "Invalid value for '--max-new-tokens' / '--new-tokens'"),
        (("--peak-tflops", "0"), "Invalid value for '--peak-tflops' (env var: 'DSOCR_PEAK_TFLOPS'): 0 is not a posi"),
        (("--dtype", "f8"), "Invalid value for '--dtype' (env var: 'DSOCR_DTYPE'): 'f8' is not a dtype"),
        (("--batch", "0"), "Invalid value for '--batch'"),
    ],
)
def test_bad_option_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    """A bad option value exits 2 (docs/exit-codes.md) with click's usage message naming the option."""
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("dsocr: error: dsocr model: ") and err.count("\n") == 1  # one line
    assert message in err
    assert out == "" and "Traceback" not in err


def test_json_parts_and_assumptions_with_peak(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--crops", "3x1", "--gpu", "NVIDIA H100 80GB HBM3", "--json")
    assert code == 0
    doc = json.loads(out)
    parts = doc["stages"]["vision"]["parts"]
    assert set(parts) == {"sam", "clip", "projector"}
    assert all(parts[p]["predicted_ns"] > 0 for p in parts)
    assert doc["peak"]["source"] == "table: H100 SXM5 80GB"
    assert (
        "the crops of a page run as one batch, then the global view (two calls per vision module)" in doc["assumptions"]
    )


def test_crops_auto_follows_the_image(capsys: pytest.CaptureFixture[str]) -> None:
    """``--crops auto`` (capture's default, shared through DSOCR_CROPS) means: from --image-size, else 2x2."""
    code, out, _ = run(capsys, "--crops", "auto", "--image-size", "800x600", "--json")
    assert code == 0 and json.loads(out)["workload"]["crop_grid"] == [3, 2]
    code, out, _ = run(capsys, "--crops", "auto", "--json")
    assert code == 0 and json.loads(out)["workload"]["crop_grid"] == [2, 2]


def test_markdown_bytes_are_binary_units(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--mode", "gundam", "--crops", "2x2", "--new-tokens", "128")
    assert code == 0
    # 2 x 3,336,106,240 bytes = 6.2136 GiB (6.67 GB in decimal units, as the HTML never said)
    assert "- parameters 3,336,106,240 (6.21 GiB of weights)" in out
    # KV cache at its largest: 2 x 12 layers x 10 KV heads x 128 x (705 + 127 positions) x 2 bytes = 48.75 MiB
    assert "- KV cache at its largest 48.8 MiB" in out
    assert " GB" not in out and " MB" not in out
