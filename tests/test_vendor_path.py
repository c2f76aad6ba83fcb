"""The vendor path against the checkpoint's own code (transformers 4.46.3 in a second environment).

The vendor's code, with seeded random weights and the decoder cut to 2 layers, writes a checkpoint
(tests/vendor_helper.py, run by the vendor environment's python, ``DSOCR_VENDOR_PYTHON``; .ci/run
builds that environment). The checkpoint's own preprocessing (which the vendor path calls) gives
dsocr's tensors, ids and crop grid in gundam (crops), tiny and base. Then, on one page in tiny mode,
bf16 on the CPU:

- the vendor's own first-token logits: ``model.infer(...)`` itself, limited to one token;
- ``dsocr generate --trust-remote-code`` (the vendor path, in the vendor environment) and
  ``dsocr generate`` (the replica loading the checkpoint, here) agree with them: same argmax,
  top-5 overlap >= 4, relative L2 error < 2e-2;
- ``dsocr capture --trust-remote-code`` runs end to end under Debian's nsys: the contract's ranges
  with vision inside prefill, and the analyzer finds the stages.

Slow (the full-size SAM and CLIP in bf16 on the CPU): marked ``vendor`` and ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SHARED, missing_fixture
from dsocr.capture import nsys as nsys_mod
from dsocr.capture.pages import shipped_dir
from dsocr.contract.errors import EnvironmentProblem

REPO = Path(__file__).resolve().parents[1]
VENDOR_CODE = SHARED / "fixtures" / "vendor-deepseek-ocr"
VENDOR_PYTHON = os.environ.get("DSOCR_VENDOR_PYTHON")
HELPER = Path(__file__).with_name("vendor_helper.py")
#: Test-only stand-in for torchvision's four names (tests/standin/README.md).
STANDIN = Path(__file__).with_name("standin")
PAGE = shipped_dir() / "text-04-letter.png"
MODE = "tiny"
PROMPT_TOKENS = 12

pytestmark = [
    pytest.mark.vendor,
    pytest.mark.slow,
    pytest.mark.torch,
    pytest.mark.skipif(
        not VENDOR_PYTHON and not os.environ.get("CI"),
        reason="no vendor environment: set DSOCR_VENDOR_PYTHON to a python with transformers 4.46.3 (.ci/run)",
    ),
]


def _vendor_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN), str(REPO / "src")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _vendor(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    assert VENDOR_PYTHON, "CI must set DSOCR_VENDOR_PYTHON"
    done = subprocess.run(
        [VENDOR_PYTHON, *args], env=_vendor_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args[:3]} exited {done.returncode}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The checkpoint's code and config (decoder cut to 2 layers), weights the vendor's code wrote, and the
    vendor's own first-token logits with them (its infer, one token)."""
    if not VENDOR_CODE.is_dir():
        missing_fixture(str(VENDOR_CODE))
    out = tmp_path_factory.mktemp("vendor") / "DeepSeek-OCR"
    shutil.copytree(VENDOR_CODE, out)
    for f in out.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IWUSR)
    (out / "model.safetensors.index.json").unlink()  # it names the full checkpoint's one shard
    config = json.loads((out / "config.json").read_text())
    config["num_hidden_layers"] = config["language_config"]["num_hidden_layers"] = 2
    (out / "config.json").write_text(json.dumps(config, indent=1))
    ref = out.parent / "reference.json"
    _vendor(str(HELPER), str(out), str(PAGE), MODE, str(PROMPT_TOKENS), str(ref))
    assert (out / "model.safetensors").is_file()
    return out, json.loads(ref.read_text())


@pytest.fixture(scope="module")
def checkpoint(written: tuple[Path, dict[str, Any]]) -> Path:
    """The checkpoint directory."""
    return written[0]


@pytest.fixture(scope="module")
def reference(written: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    """The vendor's own first-token logits."""
    return written[1]


PREPARE = """
import json, sys, torch
from pathlib import Path
from PIL import Image
from transformers import AutoConfig
from dsocr.execution.preprocess import preprocess
from dsocr.execution.vendor import VendorModel
AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True, local_files_only=True)  # imports its code
code = next(m for n, m in sys.modules.items() if n.endswith(".modeling_deepseekocr"))
vendor = VendorModel(arch=None, root=None, code=code, device=torch.device("cpu"), dtype=torch.bfloat16,
                     attn_implementation="eager")
out = {}
for mode, page in zip(sys.argv[2::2], sys.argv[3::2]):
    image = Image.open(page)
    got = vendor.prepare(image, mode, (0,), tuple(range(1000, 1011)))
    ours = preprocess(image, mode)
    crops = None if ours.crops is None else bool(torch.equal(got.images_crop, ours.crops.to(torch.bfloat16)))
    out[mode] = {
        "grid": [list(got.grid), list(ours.grid)],
        "prompt_length": [got.prompt_length, ours.image_tokens + 12],
        "global_equal": bool(torch.equal(got.images_ori, ours.global_view.to(torch.bfloat16))),
        "crops_equal": crops,
        "mask": int(got.images_seq_mask.sum()),
    }
print(json.dumps(out))
"""


def test_the_checkpoints_preprocessing_equals_dsocrs(tmp_path: Path) -> None:
    """The vendor path uses the checkpoint's own preprocessing; the replica dsocr's: same tensors, ids, grid."""
    if not VENDOR_CODE.is_dir():
        missing_fixture(str(VENDOR_CODE))
    code = tmp_path / "code"
    shutil.copytree(VENDOR_CODE, code)
    big = shipped_dir() / "text-01-article.png"  # a page larger than 640 px: gundam cuts it into crops
    done = _vendor("-c", PREPARE, str(code), "gundam", str(big), MODE, str(PAGE), "base", str(PAGE))
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for mode, f in found.items():
        assert f["grid"][0] == f["grid"][1] and f["prompt_length"][0] == f["prompt_length"][1], (mode, f)
        assert f["global_equal"] and f["crops_equal"] in (None, True), (mode, f)
        assert f["mask"] == f["prompt_length"][0] - 12, (mode, f)
    assert found["gundam"]["crops_equal"] is True and found["gundam"]["grid"][0] != [1, 1]


def _generate_args(checkpoint: Path, logits: Path) -> list[str]:
    return [
        "generate",
        "--model",
        str(checkpoint),
        "--page",
        str(PAGE),
        "--mode",
        MODE,
        "--device",
        "cpu",
        "--dtype",
        "bfloat16",
        "--max-new-tokens",
        "2",
        "--prompt-tokens",
        str(PROMPT_TOKENS),
        "--json",
        "--logits-out",
        str(logits),
    ]


def _agrees(name: str, got: dict[str, Any], logits: np.ndarray, ref: dict[str, Any]) -> None:
    want = np.asarray(ref["logits"], dtype=np.float64)
    have = logits.astype(np.float64)
    assert got["prompt_length"] == ref["prompt_length"], name
    top_want = [int(i) for i in np.argsort(-want)[:5]]
    top_have = [t["id"] for t in got["first_token_top"]]
    assert top_have[0] == top_want[0] == got["ids"][0], (name, top_have, top_want)
    assert len(set(top_have) & set(top_want)) >= 4, (name, top_have, top_want)
    rel = float(np.linalg.norm(have - want) / np.linalg.norm(want))
    assert rel < 2e-2, (name, rel)
    assert [t["logit"] for t in got["first_token_top"]] == sorted(
        (t["logit"] for t in got["first_token_top"]), reverse=True
    )


def test_vendor_path_agrees_with_the_vendors_infer(checkpoint: Path, reference: dict[str, Any], tmp_path: Path) -> None:
    logits = tmp_path / "vendor.npy"
    done = _vendor("-m", "dsocr", *_generate_args(checkpoint, logits), "--trust-remote-code")
    got = json.loads(done.stdout)
    assert got["model"]["kind"] == "vendor" and got["model"]["attn_implementation"] == "eager", got["model"]
    assert not got["model"]["random_weights"]
    _agrees("vendor path", got, np.load(logits), reference)


def test_replica_from_the_vendors_checkpoint_agrees(
    checkpoint: Path, reference: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from dsocr.cli import main

    logits = tmp_path / "replica.npy"
    with pytest.raises(SystemExit) as exc:
        main(_generate_args(checkpoint, logits))
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    got = json.loads(out)
    assert got["model"]["kind"] == "checkpoint" and not got["model"]["random_weights"], got["model"]
    _agrees("replica", got, np.load(logits), reference)


def _nsys() -> Path | None:
    try:
        return nsys_mod.find(cwd=REPO).path
    except EnvironmentProblem:
        return None


def _dsocr_ranges(sqlite: Path) -> list[tuple[str, int | None]]:
    with sqlite3.connect(sqlite) as con:
        domains = dict(
            con.execute(
                "SELECT e.domainId, coalesce(e.text, s.value) FROM NVTX_EVENTS e LEFT JOIN StringIds s "
                "ON s.id = e.textId WHERE e.eventType = 75"
            ).fetchall()
        )
        rows = con.execute(
            "SELECT e.domainId, coalesce(e.text, s.value), e.int64Value FROM NVTX_EVENTS e "
            "LEFT JOIN StringIds s ON s.id = e.textId WHERE e.eventType = 59 ORDER BY e.start"
        ).fetchall()
    return [(n, p) for d, n, p in rows if domains.get(d) == "dsocr"]


@pytest.mark.nsys
def test_vendor_path_under_nsys_on_the_cpu(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nsys = _nsys()
    if nsys is None:
        pytest.skip("no nsys (run `bash scripts/install-nsys.sh` or set DSOCR_NSYS_HOME)")
    run = tmp_path / "run"
    argv = ["-m", "dsocr", "capture", "--device", "cpu", "--mode", MODE, "--model", str(checkpoint)]
    argv += ["--trust-remote-code", "--repeats", "1", "--warmup", "0", "--capture-warmup", "0"]
    argv += ["--max-new-tokens", "3", "--pages", str(PAGE), "--out", str(run), "--nsys", str(nsys)]
    _vendor(*argv, "--no-baseline", "--no-analyze", "--quiet", "--op-memory")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete", manifest.get("failure")
    per_page = ["page", "prefill", "vision", "sam", "clip", "projector", "decode", "decode_step", "decode_step"]
    ranges = _dsocr_ranges(run / "trace.sqlite")
    assert [n for n, _ in ranges] == ["capture", "repeat", *per_page]
    assert [(n, p) for n, p in ranges if n in ("repeat", "page", "decode_step")] == [
        ("repeat", 0),
        ("page", 0),
        ("decode_step", 0),
        ("decode_step", 1),
    ]
    timing = json.loads((run / "timing.json").read_text())
    assert timing["model"]["kind"] == "remote-code" and timing["model"]["attn_implementation"] == "eager"
    assert timing["model"]["random_weights"] is False
    assert any("vision runs inside prefill" in a for a in timing["assumptions"])
    stages = [r["stage"] for r in timing["records"]]
    assert stages == ["repeat", *per_page]
    # --op-memory: the extra pass ran the checkpoint's generate with the same stage hooks (after the trace)
    op_memory = json.loads((run / "op_memory.json").read_text())
    by_stage = {s["stage"]: s for s in op_memory["stages"]}
    assert {"sam", "clip", "prefill", "decode_step"} <= set(by_stage)
    assert by_stage["decode_step"]["instances"] == 2 and by_stage["sam"]["allocated_bytes"] > 0

    from dsocr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(run), "--out", str(run), "--quiet"])
    assert exc.value.code == 0, capsys.readouterr().err
    analysis = json.loads((run / "analysis.json").read_text())
    found = {s["stage"]: s["instances"] for s in analysis["stages"]}
    assert {k: found.get(k) for k in ("page", "prefill", "vision", "decode", "decode_step")} == {
        "page": 1,
        "prefill": 1,
        "vision": 1,
        "decode": 1,
        "decode_step": 2,
    }
