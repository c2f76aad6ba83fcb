"""Data-parallel captures (``--gpus N`` / ``--devices``): the pages of each worker, its files, the merge.

Sharding: round-robin by page index: with N workers, worker k runs pages k, k + N, k + 2N, ...
of the capture's page list (every worker the same repeats), so neighbouring pages of a document
(often alike) spread over the devices and the shards differ by at most one page. Each worker keeps
the capture-wide page index (the ``page`` range payload and the timing records), so the analyzer
sees every page once per repeat, whichever worker ran it.

Each run of the workers (the profiled pass under nsys, every unprofiled baseline) writes one
timing file per worker (``timing-w<k>.json`` beside ``timing.json``, ...); :func:`merge_timing`
then writes the plain file the analyzer reads: all workers' pages and records, and a ``workers``
list (rank, device, pages, setup times, environment).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from dsocr.capture.timing import write_timing
from dsocr.contract.errors import BadInput, BadUsage, RunFailed
from dsocr.contract.run_timing import RunTiming, read_timing

SHARDING: Final = "round-robin by page index (worker k: pages k, k+N, k+2N, ...)"

T = TypeVar("T")


def shard(items: Sequence[T], workers: int) -> list[tuple[tuple[int, ...], tuple[T, ...]]]:
    """Round-robin shards: for each worker, (capture-wide indices, items)."""
    if workers < 1:
        raise BadUsage(f"{workers} workers: give at least one device")
    if len(items) < workers:
        raise BadUsage(
            f"{len(items)} page(s) for {workers} workers: every worker needs a page; "
            "give at least as many pages as devices (--pages) or fewer devices"
        )
    return [(tuple(range(k, len(items), workers)), tuple(items[k::workers])) for k in range(workers)]


def per_worker(name: str, rank: int) -> str:
    """``timing.json`` -> ``timing-w0.json``: a worker's own file beside the capture's one."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-w{rank}.{ext}" if dot else f"{name}-w{rank}"


def parse_devices(value: str) -> tuple[str, ...]:
    """``0,1`` -> ``cuda:0, cuda:1``; ``cpu,cpu`` -> two CPU workers; BadUsage otherwise."""
    out: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if part.isdigit():
            out.append(f"cuda:{int(part)}")
        elif part == "cpu":
            out.append("cpu")
        else:
            raise BadUsage(f"--devices {value!r}: {part!r} is neither a GPU index nor cpu; give e.g. 0,1 or 0,0")
    if not out or any(not p for p in value.split(",")):
        raise BadUsage(f"--devices {value!r}: give a comma-separated list such as 0,1 or 0,0 or cpu,cpu")
    if len({d == "cpu" for d in out}) > 1:
        raise BadUsage(f"--devices {value!r}: mixes GPUs and cpu; give GPU indices only, or cpu only")
    return tuple(out)


def resolve_devices(device: str, gpus: int | None, devices: str | None) -> tuple[str, tuple[str, ...]]:
    """``--device``, ``--gpus N``, ``--devices LIST`` -> (first worker's device, every worker's; ``()``: one)."""
    if gpus is not None and devices is not None:
        raise BadUsage("--gpus and --devices both given: give one (--gpus 2 is --devices 0,1)")
    if gpus is not None:
        if gpus < 1:
            raise BadUsage(f"--gpus {gpus}: give 1 or more")
        if device == "cpu":
            raise BadUsage("--gpus with --device cpu: for N workers on the CPU give --devices cpu,cpu,...")
        listed = tuple(f"cuda:{i}" for i in range(gpus))
    elif devices is not None:
        listed = parse_devices(devices)
    else:
        return device, ()
    return listed[0], (listed if len(listed) > 1 else ())


def device_entries(devices: Sequence[str], gpu: dict[str, Any], pages: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """The manifest's ``devices.workers``: each worker's rank, device, GPU (name, index, UUID) and pages."""
    gpus = {int(g["index"]): g for g in gpu.get("gpus") or [] if g.get("index") is not None}
    out = []
    for rank, (device, idx) in enumerate(zip(devices, pages, strict=True)):
        entry: dict[str, Any] = {"rank": rank, "nvtx_category": rank + 1, "device": device, "pages": list(idx)}
        if device != "cpu":
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            g = gpus.get(index, {})
            entry["gpu"] = {"index": index, "name": g.get("name"), "uuid": g.get("uuid")}
        out.append(entry)
    return out


def merge_timing(parts: Sequence[Path], out: Path, devices: Sequence[str]) -> None:
    """Write ``out``: the workers' timing files as one (pages and records of all, ``workers`` per worker)."""
    docs: list[RunTiming] = []
    for p in parts:
        try:
            doc, problem = read_timing(p)
        except BadInput as exc:
            doc, problem = None, exc.message
        if doc is None:
            raise RunFailed(
                f"{p}: a worker's timing file is missing or unreadable ({problem or 'no such file'}); "
                "see the capture log"
            )
        docs.append(doc)
    first = docs[0]
    pages = tuple(sorted((pg for d in docs for pg in d.pages), key=lambda pg: int(pg.index or 0)))
    config = dict(first.config or {})
    config["pages"] = [pg for d in docs for pg in (d.config or {}).get("pages") or []]
    for key in ("rank", "page_indices", "timing_out", "barrier"):
        config.pop(key, None)
    merged = first.with_(
        config=config,
        pages=pages,
        records=tuple(r for d in docs for r in d.records),
        interrupted=any(bool(d.interrupted) for d in docs),
        workers=tuple(
            {
                "rank": k,
                "device": devices[k],
                "file": parts[k].name,
                "pages": [pg.index for pg in d.pages],
                "setup": d.setup,
                "environment": d.environment,
            }
            for k, d in enumerate(docs)
        ),
    )
    write_timing(out, merged)
