"""NVTX -> GPU attribution and projection on small hand-built traces (tests/tracebuild.py)."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze.attribution import attribute
from dsocr.analyze.kernels import kernel_summary
from dsocr.analyze.load import load_trace
from dsocr.analyze.op_details import with_op_details
from dsocr.analyze.projection import projection_summary, projection_trace
from dsocr.analyze.trace import Trace
from tracebuild import TraceBuilder

LAUNCH = "cudaLaunchKernel_v7000"


def _load(b: TraceBuilder, tmp_path: Path, name: str = "t.sqlite") -> Trace:
    return load_trace(b.write(tmp_path / name))


def _by_name(df: pl.DataFrame, key: str = "range") -> dict[str, dict[str, object]]:
    return {row[key]: row for row in df.to_dicts()}


def _range_ids(trace: Trace) -> dict[str, int]:
    return dict(trace.ranges.select("name", "range_id").collect().iter_rows())


@pytest.fixture
def nested(tmp_path: Path) -> Trace:
    """Two threads; thread A: outer > inner (+ an empty range), thread B: one range."""
    b = TraceBuilder()
    a, t2 = b.thread(100, 101), b.thread(100, 102)
    b.range(a, 0, 100, "outer")
    b.range(a, 10, 50, "inner")
    b.range(a, 60, 70, "no_gpu")  # holds only a non-launching API call
    b.range(t2, 0, 100, "other_thread")
    b.kernel(b.api(a, 20, 25, LAUNCH), 30, 40, "k1")
    b.kernel(b.api(a, 55, 58, "cuLaunchKernelEx"), 80, 95, "k2")  # driver API launch
    b.api(a, 62, 64, "cudaGetDeviceProperties_v12000")
    b.kernel(b.api(t2, 5, 8, LAUNCH), 200, 210, "k3")
    b.kernel(b.api(a, 150, 151, LAUNCH), 300, 301, "outside")  # outside every range
    return _load(b, tmp_path)


def test_nested_ranges_on_two_threads(nested: Trace) -> None:
    s = _by_name(projection_summary(nested))
    assert set(s) == {"outer", "inner", "other_thread"}  # no_gpu has no GPU op: dropped
    assert (s["outer"]["total_proj_ns"], s["outer"]["gpu_ops"], s["outer"]["total_range_ns"]) == (65, 2, 100)
    assert (s["inner"]["total_proj_ns"], s["inner"]["gpu_ops"]) == (10, 1)
    assert (s["other_thread"]["total_proj_ns"], s["other_thread"]["gpu_ops"]) == (10, 1)
    assert (s["outer"]["avg_level"], s["outer"]["avg_children"]) == (0.0, 1.0)  # no_gpu is not counted
    assert (s["inner"]["avg_level"], s["inner"]["avg_children"]) == (1.0, 0.0)


def test_depth_and_parent(nested: Trace) -> None:
    ranges = nested.ranges.collect()
    ids = _range_ids(nested)
    rows = _by_name(ranges, "name")
    assert rows["outer"]["depth"] == 0 and rows["outer"]["parent_id"] is None
    assert rows["inner"]["depth"] == 1 and rows["inner"]["parent_id"] == ids["outer"]
    assert rows["no_gpu"]["parent_id"] == ids["outer"]
    assert rows["other_thread"]["depth"] == 0
    assert ranges.schema["depth"] == pl.UInt32 and ranges.schema["parent_id"] == pl.UInt32


def test_attribution_all_enclosing_ranges_and_innermost(nested: Trace) -> None:
    ids = _range_ids(nested)
    att = attribute(nested)
    ops = nested.gpu_ops.select("op_id", "name").collect()
    op_of = dict(zip(ops["name"], ops["op_id"], strict=True))
    pairs = set(att.op_ranges.iter_rows())
    assert pairs == {
        (op_of["k1"], ids["outer"]),
        (op_of["k1"], ids["inner"]),
        (op_of["k2"], ids["outer"]),
        (op_of["k3"], ids["other_thread"]),
    }
    assert dict(att.op_innermost.iter_rows()) == {
        op_of["k1"]: ids["inner"],
        op_of["k2"]: ids["outer"],
        op_of["k3"]: ids["other_thread"],
    }
    api = nested.api.select("api_id", "name").collect()
    props = api.filter(pl.col("name") == "cudaGetDeviceProperties")["api_id"][0]
    assert {r for a, r in att.api_ranges.iter_rows() if a == props} == {ids["outer"], ids["no_gpu"]}


def test_api_categories_and_names(nested: Trace) -> None:
    api = nested.api.collect()
    cats = dict(zip(api["name"], api["category"], strict=False))
    assert cats == {
        "cudaLaunchKernel": "launch",
        "cuLaunchKernelEx": "launch",
        "cudaGetDeviceProperties": "other",
    }


def test_memcpy_memset_and_graph_launch(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 1000, "step")
    b.memcpy(b.api(t, 10, 20, "cudaMemcpyAsync_v3020"), 30, 50, 4096, kind=1)
    b.memcpy(b.api(t, 60, 70, "cudaMemcpyAsync_v3020"), 80, 90, 256, kind=2)
    b.memset(b.api(t, 100, 110, "cudaMemsetAsync_v3020"), 120, 125, 64)
    graph = b.api(t, 200, 210, "cudaGraphLaunch_v10000")
    for i in range(3):  # --cuda-graph-trace=node: each node its own kernel row, one correlation id
        b.kernel(graph, 300 + 10 * i, 305 + 10 * i, "graph_node_kernel", graph_node=i + 1)
    sync = b.api(t, 400, 500, "cudaStreamSynchronize_v3020")
    b.sync(sync, 410, 495)
    trace = _load(b, tmp_path)
    ops = trace.gpu_ops.collect()
    assert ops.filter(pl.col("kind") == "memcpy")["name"].to_list() == [
        "[CUDA memcpy Host-to-Device]",
        "[CUDA memcpy Device-to-Host]",
    ]
    assert ops.filter(pl.col("kind") == "memset")["name"].to_list() == ["[CUDA memset]"]
    assert ops["bytes"].sum() == 4096 + 256 + 64
    s = projection_summary(trace).row(0, named=True)
    # 2 copies + 1 memset + 1 graph launch (3 kernels, one correlation id) = 4 GPU ops
    assert (s["range"], s["gpu_ops"], s["total_proj_ns"]) == ("step", 4, 325 - 30)
    api = trace.api.collect()
    assert dict(zip(api["name"], api["category"], strict=False)) == {
        "cudaMemcpyAsync": "memcpy",
        "cudaMemsetAsync": "memset",
        "cudaGraphLaunch": "graph",
        "cudaStreamSynchronize": "sync",
    }
    syncs = trace.syncs.collect()
    assert syncs.select("sync_type", "start").row(0) == ("Stream sync", 410)
    assert syncs["api_id"][0] == api.filter(pl.col("name") == "cudaStreamSynchronize")["api_id"][0]
    kern = kernel_summary(trace).row(0, named=True)
    assert (kern["name"], kern["instances"], kern["total_ns"], kern["time_pct"]) == ("graph_node_kernel", 3, 15, 100.0)


def test_range_left_open_is_left_out_and_counted(tmp_path: Path) -> None:
    """A range that never closed has no end: it is dropped (NVIDIA's reports invent one), the rest renumbered."""
    b = TraceBuilder()
    b.session = (5, 5000)
    t = b.thread()
    b.range(t, 10, None, "never_popped")
    b.range(t, 15, 100, "closed")
    b.range(t, 16, None, "never_popped")
    b.kernel(b.api(t, 20, 30, LAUNCH), 40, 60, "k")
    trace = _load(b, tmp_path)
    assert trace.meta.session_end_ns == 5000 and trace.meta.duration_ns == 4995
    ranges = trace.ranges.collect()
    assert ranges.select("range_id", "name", "end", "depth", "parent_id").rows() == [(0, "closed", 100, 0, None)]
    assert (trace.meta.open_ranges.count, trace.meta.open_ranges.names) == (2, (("never_popped", 2),))
    assert str(trace.meta.open_ranges) == "2 NVTX ranges never closed (never_popped x2)"
    s = projection_summary(trace).row(0, named=True)
    assert (s["range"], s["total_range_ns"], s["total_proj_ns"]) == ("closed", 85, 20)


def test_ranges_in_two_domains_and_registered_strings(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    dsocr = b.domain("dsocr", t)
    other = b.domain("lib", t, registered=True)
    b.range(t, 0, 100, "step", domain=dsocr, registered=True, payload=3)
    b.range(t, 1, 99, "step", domain=other)
    b.range(t, 2, 98, "step")  # default domain: bare message
    b.kernel(b.api(t, 10, 20, LAUNCH), 30, 40, "k")
    trace = _load(b, tmp_path)
    ranges = trace.ranges.collect()
    assert ranges.select("name", "domain", "message", "payload").rows() == [
        ("dsocr:step", "dsocr", "step", 3),
        ("lib:step", "lib", "step", None),
        ("step", None, "step", None),
    ]
    assert sorted(projection_summary(trace)["range"].to_list()) == ["dsocr:step", "lib:step", "step"]


def test_domain_of_same_id_in_another_process_does_not_leak(tmp_path: Path) -> None:
    b = TraceBuilder()
    p1, p2 = b.thread(100, 100), b.thread(200, 200)
    b.domain("first", p1)  # domainId 1 in process 100 only
    b.range(p1, 0, 10, "a", domain=1)
    b.range(p2, 0, 10, "b", domain=1)  # domainId 1 of process 200 was never named
    names = load_trace(b.write(tmp_path / "d.sqlite")).ranges.collect()["name"].to_list()
    assert names == ["first:a", "b"]


def test_startend_ranges_that_do_not_nest(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 50, "A", style="StartEnd")
    b.range(t, 30, 100, "B", style="StartEnd")
    b.kernel(b.api(t, 10, 12, LAUNCH), 110, 120, "kA")  # in A only
    b.kernel(b.api(t, 35, 40, LAUNCH), 130, 140, "kAB")  # in A and B
    b.kernel(b.api(t, 60, 62, LAUNCH), 150, 170, "kB")  # in B only
    b.kernel(b.api(t, 45, 55, LAUNCH), 200, 210, "straddles")  # starts in A, ends after it: B only
    trace = _load(b, tmp_path)
    s = _by_name(projection_summary(trace))
    assert (s["A"]["gpu_ops"], s["A"]["total_proj_ns"], s["A"]["style"]) == (2, 30, "StartEnd")
    assert (s["B"]["gpu_ops"], s["B"]["total_proj_ns"]) == (3, 80)


def test_range_ended_on_another_thread_encloses_nothing(tmp_path: Path) -> None:
    b = TraceBuilder()
    t, u = b.thread(100, 100), b.thread(100, 101)
    b.range(t, 0, 100, "cross", style="StartEnd", end_thread=u)
    b.range(t, 0, 100, "local", style="StartEnd")
    b.kernel(b.api(t, 10, 20, LAUNCH), 30, 40, "k")
    trace = _load(b, tmp_path)
    ranges = _by_name(trace.ranges.collect(), "name")
    assert ranges["cross"]["ended_on_start_thread"] is False
    assert projection_summary(trace)["range"].to_list() == ["local"]


def test_kernel_without_api_row_is_kept_but_not_attributed(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "r")
    b.kernel(999, 30, 40, "orphan")  # no runtime row with correlation 999
    b.kernel(b.api(t, 10, 20, LAUNCH), 50, 60, "k")
    trace = _load(b, tmp_path)
    ops = trace.gpu_ops.collect()
    assert ops.filter(pl.col("name") == "orphan")["api_id"].to_list() == [None]
    assert projection_summary(trace).select("gpu_ops", "total_proj_ns").row(0) == (1, 10)
    assert kernel_summary(trace)["name"].sort().to_list() == ["k", "orphan"]


def test_same_correlation_id_in_another_process_is_not_joined(tmp_path: Path) -> None:
    b = TraceBuilder()
    t1, t2 = b.thread(100, 100), b.thread(200, 200)
    b.range(t1, 0, 100, "p100")
    b.range(t2, 0, 100, "p200")
    b.api(t1, 10, 20, LAUNCH, correlation=5)
    b.api(t2, 10, 20, LAUNCH, correlation=5)
    b.kernel(5, 30, 40, "k", pid=200)
    trace = _load(b, tmp_path)
    assert projection_summary(trace)["range"].to_list() == ["p200"]
    assert trace.gpu_ops.collect()["tid"].to_list() == [200]


def test_pid_tid_and_payload_columns(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread(4321, 4322)
    b.range(t, 0, 10, "u64", payload=7, payload_column="uint64Value")
    b.range(t, 1, 9, "i32", payload=-3, payload_column="int32Value")
    ranges = _load(b, tmp_path).ranges.collect()
    assert ranges.select("pid", "tid", "payload").rows() == [(4321, 4322, 7), (4321, 4322, -3)]


def test_identical_intervals_and_touching_ranges(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "first")
    b.range(t, 0, 100, "second")  # same interval: nests inside the earlier one
    b.range(t, 100, 200, "after")  # starts where they end
    b.kernel(b.api(t, 100, 100, LAUNCH), 300, 310, "edge")  # zero-length call at t=100
    trace = _load(b, tmp_path)
    rows = _by_name(trace.ranges.collect(), "name")
    ids = _range_ids(trace)
    assert (rows["second"]["depth"], rows["second"]["parent_id"]) == (1, ids["first"])
    assert rows["after"]["depth"] == 0
    # NVIDIA's rule is inclusive at both ends: the call at 100 lies in all three ranges
    assert sorted(projection_summary(trace)["range"].to_list()) == ["after", "first", "second"]


def _brute_force(ranges: pl.DataFrame, api: pl.DataFrame) -> set[tuple[int, int]]:
    out = set()
    for r in ranges.iter_rows(named=True):
        if not r["ended_on_start_thread"]:
            continue
        for a in api.iter_rows(named=True):
            if a["global_tid"] == r["global_tid"] and r["start"] <= a["start"] and a["end"] <= r["end"]:
                out.add((a["api_id"], r["range_id"]))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sweep_equals_brute_force_on_random_overlapping_ranges(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    b = TraceBuilder()
    threads = [b.thread(100, 100 + i) for i in range(3)]
    for i in range(60):
        t = rng.choice(threads)
        start = rng.randrange(0, 900)
        end = start + rng.randrange(0, 200)
        b.range(t, start, end, f"r{i % 7}", style=rng.choice(["PushPop", "StartEnd"]))
    for _ in range(200):
        t = rng.choice(threads)
        start = rng.randrange(0, 1000)
        corr = b.api(t, start, start + rng.randrange(0, 30), LAUNCH)
        b.kernel(corr, 2000 + start, 2010 + start, "k")
    trace = _load(b, tmp_path)
    att = attribute(trace)
    expected = _brute_force(trace.ranges.collect(), trace.api.collect())
    assert set(att.api_ranges.iter_rows()) == expected
    assert att.api_ranges.height == len(expected)
    # depth = number of enclosing ranges (identical intervals nest in range_id order)
    ranges = trace.ranges.collect()
    for r in ranges.iter_rows(named=True):
        enclosing = ranges.filter(
            (pl.col("global_tid") == r["global_tid"])
            & (pl.col("range_id") != r["range_id"])
            & (pl.col("start") <= r["start"])
            & (pl.col("end") >= r["end"])
            & ~((pl.col("start") == r["start"]) & (pl.col("end") == r["end"]) & (pl.col("range_id") > r["range_id"]))
        )
        assert r["depth"] == enclosing.height


def test_projection_trace_columns(nested: Trace) -> None:
    inst = projection_trace(nested)
    assert inst.columns == [
        "range_id",
        "name",
        "style",
        "pid",
        "tid",
        "start",
        "end",
        "range_ns",
        "proj_start",
        "proj_end",
        "proj_ns",
        "gpu_ops",
        "depth",
        "parent_id",
        "children",
    ]
    assert inst["proj_start"].is_sorted()


def _nested_ranges(b: TraceBuilder, rng: random.Random, thread: int, start: int, end: int, depth: int) -> None:
    """Properly nested push/pop ranges filling [start, end] recursively."""
    t = start
    while t < end and depth < 6:
        length = rng.randrange(0, max(1, (end - t) // 2) + 1)
        if t + length > end:
            break
        b.range(thread, t, t + length, f"d{depth}_{rng.randrange(3)}")
        if rng.random() < 0.6:
            _nested_ranges(b, rng, thread, t, t + length, depth + 1)
        t += length + rng.randrange(0, 5)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_nested_pushpop_sweep_equals_brute_force(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    b = TraceBuilder()
    threads = [b.thread(100, 100 + i) for i in range(2)]
    for t in threads:
        _nested_ranges(b, rng, t, 0, 2000, 0)
    for _ in range(300):
        t = rng.choice(threads)
        start = rng.randrange(0, 2000)
        corr = b.api(t, start, start + rng.randrange(0, 3), LAUNCH)
        if rng.random() < 0.8:
            b.kernel(corr, 5000 + start, 5000 + start + rng.randrange(1, 50), "k")
    trace = _load(b, tmp_path)
    ranges, api = trace.ranges.collect(), trace.api.collect()
    expected = _brute_force(ranges, api)
    att = attribute(trace)
    assert set(att.api_ranges.iter_rows()) == expected and att.api_ranges.height == len(expected)
    depth = dict(zip(ranges["range_id"], ranges["depth"], strict=True))
    deepest: dict[int, int] = {}
    for a, r in expected:
        if a not in deepest or depth[r] > depth[deepest[a]]:
            deepest[a] = r
    assert dict(att.api_innermost.iter_rows()) == deepest
    # the tree fold equals the explicit pairs
    by_tree = projection_trace(trace).sort("range_id")
    by_pairs = projection_trace(trace, att.api_ranges).sort("range_id")
    assert by_tree.equals(by_pairs)
    assert by_tree.height > 10


def test_unsorted_correlation_ids_in_one_process(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "r")
    b.api(t, 10, 20, LAUNCH, correlation=9)
    b.api(t, 30, 40, LAUNCH, correlation=3)
    b.api(t, 200, 210, LAUNCH, correlation=5)  # outside the range
    b.kernel(3, 50, 60, "k3")
    b.kernel(9, 70, 90, "k9")
    b.kernel(5, 300, 310, "k5")
    trace = _load(b, tmp_path)
    ops = trace.gpu_ops.select("name", "api_start").collect()
    assert dict(ops.iter_rows()) == {"k3": 30, "k9": 10, "k5": 200}
    assert projection_summary(trace).select("gpu_ops", "total_proj_ns").row(0) == (2, 40)


def test_kernel_detail_columns_are_read_on_demand(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "r")
    b.kernel(b.api(t, 1, 2, LAUNCH), 10, 20, "gemm(int)", short="gemm", grid=(4, 2, 1), block=(256, 1, 1), stream=13)
    b.memcpy(b.api(t, 3, 4, "cudaMemcpyAsync_v3020"), 30, 40, 512, kind=8)
    b.kernel(b.api(t, 5, 6, LAUNCH), 50, 60, "graph_k", graph_node=77)
    trace = _load(b, tmp_path)
    details = ["short_name", "grid", "block", "stream_id", "graph_node_id", "device_id"]
    ops = with_op_details(trace, trace.gpu_ops, details).sort("op_id").collect()
    assert ops.select("kind", "name", *details).rows() == [
        ("kernel", "gemm(int)", "gemm", "4,2,1", "256,1,1", 13, None, 0),
        ("kernel", "graph_k", "graph_k", "1,1,1", "128,1,1", 7, 77, 0),
        ("memcpy", "[CUDA memcpy Device-to-Device]", "[CUDA memcpy Device-to-Device]", None, None, 7, None, 0),
    ]
    # a filtered selection gathers by op id
    memcpy_only = with_op_details(trace, trace.gpu_ops.filter(pl.col("kind") == "memcpy"), ["stream_id"])
    assert memcpy_only.select("op_id", "stream_id", "tid").collect().rows() == [(2, 7, 100)]
    later = with_op_details(trace, trace.gpu_ops.filter(pl.col("start") >= 50), ["grid"])
    kernels = later.select("grid", "api_start", "api_end").collect()
    assert kernels.rows() == [("1,1,1", 5, 6)]


def _kernels_named(tmp_path: Path, duplicate_a: bool) -> Trace:
    """Three kernels "a" (10 and 20 ns) and "b" (5 ns); ``duplicate_a``: the second "a" names
    itself through a second StringIds row with the same text (a different ``name_id``)."""
    b = TraceBuilder()
    t = b.thread(100, 100)
    b.range(t, 0, 1000, "r")
    for start, end, name in [(10, 20, "a"), (30, 50, "a"), (60, 65, "b")]:
        b.kernel(b.api(t, start - 5, start - 4, LAUNCH), start, end, name)
    if duplicate_a:
        b.rows["StringIds"].append({"id": 999, "value": "a"})
        b.rows["CUPTI_ACTIVITY_KIND_KERNEL"][1]["demangledName"] = 999
    return _load(b, tmp_path)


@pytest.mark.parametrize("duplicate_a", [False, True])
def test_kernel_summary_by_name_id_merges_ids_of_one_name(tmp_path: Path, duplicate_a: bool) -> None:
    trace = _kernels_named(tmp_path, duplicate_a)
    ids = trace.gpu_ops.filter(pl.col("kind") == "kernel").select("name_id").collect()["name_id"].n_unique()
    assert ids == (3 if duplicate_a else 2)
    got = kernel_summary(trace).select("name", "instances", "total_ns", "min_ns", "max_ns", "median_ns", "time_pct")
    assert got.rows() == [("a", 2, 30, 10, 20, 15.0, 85.7), ("b", 1, 5, 5, 5, 5.0, 14.3)]


def test_enclosing_keeps_no_ids_when_they_are_row_numbers(nested: Trace) -> None:
    from dsocr.analyze.sweep import enclosing

    att = attribute(nested)
    enc = att.api_enclosing
    n = nested.api.select(pl.len()).collect().item()
    assert enc.row_ids is None and enc.ids.to_list() == list(range(n))
    items = nested.api.select("api_id", "global_tid", "start", "end").collect()
    some = enclosing(enc.index, items.filter(pl.col("api_id") % 2 == 1), "api_id")
    assert some.row_ids is not None and some.ids.to_list() == list(range(1, n, 2))
    # the same innermost range for a call, whichever set of calls is searched
    dense = enc.dense_inner_pos(n)
    assert some.dense_inner_pos(n).gather(some.ids).to_list() == dense.gather(some.ids).to_list()
    assert some.dense_inner_pos(n).gather(list(range(0, n, 2))).null_count() == len(range(0, n, 2))
