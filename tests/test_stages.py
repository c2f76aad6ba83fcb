"""Stage tables: a hand-built trace with known answers, and the two real fixtures checked
against values computed independently here (raw SQL on the export, a plain interval union)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze.operators import parse_op_message
from dsocr.analyze.stages import DSOCR, FOREIGN, StageTables, analyze_stages, busy_union
from dsocr.analyze.trace import SchemaVersion, Trace, TraceMeta

T1 = (7 << 24) | 1  # pid 7, tid 1
T2 = (7 << 24) | 2
GPID = 7 << 24


def _ranges(rows: list[tuple[str, str | None, int, int, int, int | None, int]]) -> pl.DataFrame:
    """rows: (message, domain, start, end, global_tid, payload, depth)."""
    df = pl.DataFrame(
        rows,
        schema={
            "message": pl.Utf8,
            "domain": pl.Utf8,
            "start": pl.Int64,
            "end": pl.Int64,
            "global_tid": pl.Int64,
            "payload": pl.Int64,
            "depth": pl.UInt32,
        },
        orient="row",
    )
    return df.with_row_index("range_id").with_columns(
        pl.when(pl.col("domain").is_null())
        .then(pl.col("message"))
        .otherwise(pl.col("domain") + ":" + pl.col("message"))
        .alias("name"),
        pl.lit("PushPop").alias("style"),
        (pl.col("global_tid") // (1 << 24)).alias("pid"),
        (pl.col("global_tid") % (1 << 24)).alias("tid"),
        pl.lit(True).alias("ended_on_start_thread"),
        pl.lit(None, dtype=pl.UInt32).alias("parent_id"),
    )


def _api(rows: list[tuple[str, int, int, int, str]]) -> pl.DataFrame:
    """rows: (name, start, end, global_tid, category); correlation id = row index + 100."""
    df = pl.DataFrame(
        rows,
        schema={"name": pl.Utf8, "start": pl.Int64, "end": pl.Int64, "global_tid": pl.Int64, "category": pl.Utf8},
        orient="row",
    )
    return df.with_row_index("api_id").with_columns(
        (pl.col("api_id").cast(pl.Int64) + 100).alias("correlation_id"),
        (pl.col("global_tid") // (1 << 24)).alias("pid"),
        (pl.col("global_tid") % (1 << 24)).alias("tid"),
    )


def _ops(rows: list[tuple[str, str, int, int, int, int | None, int]], api: pl.DataFrame) -> pl.DataFrame:
    """rows: (kind, name, start, end, bytes, copy_kind, api_id)."""
    df = pl.DataFrame(
        rows,
        schema={
            "kind": pl.Utf8,
            "name": pl.Utf8,
            "start": pl.Int64,
            "end": pl.Int64,
            "bytes": pl.Int64,
            "copy_kind": pl.Int64,
            "api_id": pl.UInt32,
        },
        orient="row",
    )
    launch = api.select(
        "api_id",
        "correlation_id",
        pl.col("start").alias("api_start"),
        pl.col("end").alias("api_end"),
        "global_tid",
        "tid",
    )
    return (
        df.with_row_index("op_id")
        .join(launch, on="api_id", how="left")
        .with_columns(pl.lit(0).alias("device_id"), pl.lit(7).alias("stream_id"), pl.lit(GPID).alias("global_pid"))
    )


def hand_trace() -> Trace:
    """One repeat > page > vision(sam, clip), prefill, decode(2 steps) on thread T1, dsocr domain."""
    d = "dsocr"
    ranges = _ranges(
        [
            ("repeat", d, 0, 1000, T1, 0, 0),
            ("page", d, 10, 990, T1, 0, 1),
            ("vision", d, 20, 300, T1, None, 2),
            ("sam", d, 30, 150, T1, None, 3),
            ("clip", d, 160, 280, T1, None, 3),
            ("prefill", d, 310, 500, T1, None, 2),
            ("decode", d, 510, 980, T1, None, 2),
            ("decode_step", d, 520, 700, T1, 0, 3),
            (
                "aten::linear, seq = 2, op_id = 16, sizes = [[1, 8], [8, 8], []], input_op_ids = [(1,0)]",
                None,
                525,
                650,
                T1,
                None,
                4,
            ),
            (
                "aten::mm, seq = 3, op_id = 17, sizes = [[1, 8], [8, 8]], input_op_ids = [(16,0), (0,-1)]",
                None,
                530,
                600,
                T1,
                None,
                5,
            ),
            ("decode_step", d, 710, 970, T1, 1, 3),
        ]
    )
    api = _api(
        [
            ("cudaLaunchKernel", 40, 45, T1, "launch"),  # 0 -> k1 (sam)
            ("cudaLaunchKernel", 50, 55, T1, "launch"),  # 1 -> k2 (sam, overlaps k1)
            ("cuLaunchKernelEx", 170, 175, T1, "launch"),  # 2 -> k3 (clip, driver API)
            ("cudaMemcpyAsync", 320, 330, T1, "memcpy"),  # 3 -> DtoH copy (prefill)
            ("cudaStreamSynchronize", 331, 345, T1, "sync"),  # 4 (prefill) + a CUPTI sync record
            ("cudaLaunchKernel", 535, 540, T1, "launch"),  # 5 -> k4 (aten::mm in step 0)
            ("cudaMemsetAsync", 720, 725, T1, "memset"),  # 6 -> memset (step 1)
            ("cudaLaunchKernel", 730, 735, T1, "launch"),  # 7 -> k5 (step 1)
            ("cudaLaunchKernel", 1500, 1505, T1, "launch"),  # 8 -> k6, outside every range
            ("cudaLaunchKernel", 320, 325, T2, "launch"),  # 9 -> k7, other thread during prefill
            ("cudaGetDevice", 600, 601, T1, "other"),  # 10 (inside aten::mm, no GPU op)
        ]
    )
    ops = _ops(
        [
            ("kernel", "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT", 50, 100, 0, None, 0),
            ("kernel", "void at::native::vectorized_elementwise_kernel<(int)4, FillFunctor>", 80, 120, 0, None, 1),
            ("kernel", "void at::native::reduce_kernel<512>", 200, 210, 0, None, 2),
            ("memcpy", "[CUDA memcpy Device-to-Host]", 330, 340, 4096, 2, 3),
            ("kernel", "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT", 545, 560, 0, None, 5),
            ("memset", "[CUDA memset]", 730, 735, 256, None, 6),
            ("kernel", "void at::native::vectorized_elementwise_kernel<(int)4, FillFunctor>", 740, 800, 0, None, 7),
            ("kernel", "nvjet_outside", 1510, 1600, 0, None, 8),
            ("kernel", "nvjet_other_thread", 400, 450, 0, None, 9),
        ],
        api,
    )
    syncs = pl.DataFrame(
        {
            "start": [332],
            "end": [344],
            "sync_type": ["Stream sync"],
            "correlation_id": [104],
            "global_pid": [GPID],
            "api_id": pl.Series([4], dtype=pl.UInt32),
            "global_tid": [T1],
        }
    )
    meta = TraceMeta(
        path=Path("hand.sqlite"),
        product_version="2025.3.2.0",
        schema=SchemaVersion(3, 20, 3),
        source_format="sqlite",
        tables=frozenset({"NVTX_EVENTS", "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME"}),
    )
    return Trace(meta=meta, gpus=(), ranges=ranges.lazy(), gpu_ops=ops.lazy(), api=api.lazy(), syncs=syncs.lazy())


def _run(trace: Trace, via_parents: bool = True) -> StageTables:
    """Stage tables with H1's attribution; ``via_parents`` uses its innermost ranges for operators."""
    from dsocr.analyze.attribution import attribute

    att = attribute(trace)
    inner = att.op_innermost.lazy() if via_parents else None
    return analyze_stages(trace, att.op_ranges.lazy(), att.api_ranges.lazy(), op_innermost=inner)


def _row(df: pl.DataFrame, stage: str) -> dict[str, object]:
    rows = df.filter(pl.col("stage") == stage).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def test_hand_trace_stage_metrics() -> None:
    st = _run(hand_trace())
    assert st.mode == DSOCR
    s = st.summary
    assert s["stage"].to_list() == ["repeat", "page", "vision", "sam", "clip", "prefill", "decode", "decode_step"]
    sam = _row(s, "sam")
    # k1 [50,100) and k2 [80,120) overlap: busy is their union (70), not their sum (90)
    assert (sam["cpu_ns"], sam["gpu_busy_ns"], sam["kernel_ns"], sam["gpu_span_ns"]) == (120, 70, 90, 70)
    assert sam["gpu_idle_frac"] == pytest.approx(1 - 70 / 120)
    assert (sam["kernels"], sam["launches"], sam["api_calls"]) == (2, 2, 2)
    vision = _row(s, "vision")
    assert (vision["gpu_busy_ns"], vision["gpu_span_ns"], vision["kernels"], vision["launches"]) == (80, 160, 3, 3)
    pre = _row(s, "prefill")
    # the kernel launched by thread 2 during prefill is not prefill's
    assert (pre["kernels"], pre["memcpys"], pre["d2h_copies"], pre["d2h_bytes"], pre["h2d_bytes"]) == (0, 1, 1, 4096, 0)
    assert (pre["sync_calls"], pre["sync_records"], pre["syncs"], pre["launches"], pre["api_calls"]) == (1, 1, 1, 0, 2)
    assert pre["gpu_busy_ns"] == 10
    dec = _row(s, "decode")
    assert (dec["kernels"], dec["memsets"], dec["memset_bytes"], dec["launches"], dec["api_calls"]) == (2, 1, 256, 2, 4)
    assert dec["decode_steps"] == 2
    assert dec["launches_per_step"] == pytest.approx(1.0)
    assert dec["gpu_busy_ns"] == 15 + 5 + 60
    rep = _row(s, "repeat")
    assert rep["kernels"] == 5  # k6 (outside every range) and k7 (other thread) are nobody's
    steps = st.instances.filter(pl.col("stage") == "decode_step").sort("start")
    assert steps["step"].to_list() == [0, 1]
    assert steps["kernels"].to_list() == [1, 1]
    assert st.instances["repeat"].unique().to_list() == [0]
    assert st.instances.filter(pl.col("stage") != "repeat")["page"].unique().to_list() == [0]


def test_hand_trace_categories_kernels_operators() -> None:
    st = _run(hand_trace())
    assert st.operators.equals(_run(hand_trace(), via_parents=False).operators)
    cats = st.categories.filter(pl.col("stage") == "sam").sort("category")
    assert cats.select("category", "kernels", "total_ns").rows() == [("elementwise", 1, 40), ("gemm", 1, 50)]
    top = st.top_kernels.filter(pl.col("stage") == "decode")
    assert top["name"].to_list()[0].startswith("void at::native::vectorized_elementwise_kernel")
    assert top["rank"].to_list() == [1, 2]
    ops = st.operators.filter(pl.col("stage") == "decode_step")
    # the kernel is attributed to its innermost operator range (aten::mm, not aten::linear)
    assert ops.select("operator", "input_shapes", "calls", "kernels", "gpu_ns").rows() == [
        ("aten::mm", "[[1, 8], [8, 8]]", 1, 1, 15)
    ]
    assert st.operators.filter(pl.col("stage") == "sam").height == 0


def test_parse_op_message_strips_ids() -> None:
    msgs = [
        "aten::addmm, seq = 1, op_id = 5, sizes = [[16], [2, 8], [8, 16], [], []], input_op_ids = [(4,0)]",
        "aten::view, op_id = 9, sizes = [[1, 1], []], input_op_ids = [(3406,0), (0,-1)]",
        "detach_, op_id = 147, sizes = [[0]], input_op_ids = [(145,0)]",
        "aten::empty, op_id = 3",
    ]
    op, shapes = parse_op_message(pl.col("m"))
    got = pl.DataFrame({"m": msgs}).select(op, shapes).rows()
    assert got == [
        ("aten::addmm", "[[16], [2, 8], [8, 16], [], []]"),
        ("aten::view", "[[1, 1], []]"),
        ("detach_", "[[0]]"),
        ("aten::empty", None),
    ]


def test_busy_union_against_plain_python() -> None:
    iv = [(0, 10), (5, 15), (15, 20), (30, 40), (32, 35), (50, 51)]
    lf = pl.LazyFrame({"k": [1] * len(iv) + [2], "start": [a for a, _ in iv] + [7], "end": [b for _, b in iv] + [9]})
    got = dict(busy_union(lf, "k").collect().rows())
    assert got == {1: 20 + 10 + 1, 2: 2}


def test_foreign_trace_top_level_and_known_names() -> None:
    ranges = _ranges(
        [
            ("step", None, 0, 100, T1, None, 0),  # unknown top-level name: its own stage
            ("inner", None, 10, 20, T1, None, 1),  # nested unknown name: not a stage
            ("aten::add, op_id = 1", None, 200, 210, T1, None, 0),  # operator range: never a stage
            ("outer", "MyDomain", 300, 600, T1, None, 0),
            ("prefill", None, 310, 400, T1, None, 1),  # known stage name at depth 1
            ("decode", None, 410, 590, T1, None, 1),
            ("decode_step", None, 420, 500, T1, 0, 2),
        ]
    )
    empty_api = _api([])
    trace = Trace(
        meta=TraceMeta(Path("f.sqlite"), "2025.3.2.0", SchemaVersion(3, 20, 3), "sqlite", frozenset({"NVTX_EVENTS"})),
        gpus=(),
        ranges=ranges.lazy(),
        gpu_ops=_ops([], empty_api).lazy(),
        api=empty_api.lazy(),
        syncs=pl.LazyFrame(schema={"api_id": pl.UInt32}),
    )
    st = analyze_stages(trace, None, None)
    assert st.mode == FOREIGN
    assert st.summary["stage"].to_list() == ["prefill", "decode", "decode_step", "step", "MyDomain:outer"]
    assert st.summary["gpu_idle_frac"].null_count() == st.summary.height  # no GPU traced: unknown, not 100%
    assert _row(st.summary, "decode")["decode_steps"] == 1


# --------------------------------------------------------------------------- real fixtures


@pytest.fixture(scope="module")
def h100_stages(h100_sqlite: Path) -> StageTables:
    from dsocr.analyze.load import load_trace

    return _run(load_trace(h100_sqlite))


def _union(intervals: list[tuple[int, int]]) -> int:
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + ((cur_e - cur_s) if cur_e is not None else 0)


def _ops_in_range(con: sqlite3.Connection, start: int, end: int, gtid: int) -> list[tuple[str, int, int]]:
    """GPU ops whose launching runtime call on thread ``gtid`` lies within [start, end] (raw SQL)."""
    sql = """
        with api as (select correlationId c, globalTid g from CUPTI_ACTIVITY_KIND_RUNTIME
                     where globalTid = :g and start >= :s and end <= :e),
        ops as (select 'kernel' kind, start, end, correlationId c, globalPid p from CUPTI_ACTIVITY_KIND_KERNEL
                union all select 'memcpy', start, end, correlationId, globalPid from CUPTI_ACTIVITY_KIND_MEMCPY
                union all select 'memset', start, end, correlationId, globalPid from CUPTI_ACTIVITY_KIND_MEMSET)
        select kind, ops.start, ops.end from ops join api on ops.c = api.c and ops.p = (api.g >> 24) << 24
    """
    return con.execute(sql, {"g": gtid, "s": start, "e": end}).fetchall()


def test_h100_decode_against_raw_sql(h100_sqlite: Path, h100_stages: StageTables) -> None:
    con = sqlite3.connect(h100_sqlite)
    decodes = con.execute(
        "select e.start, e.end, e.globalTid from NVTX_EVENTS e left join StringIds s on s.id = e.textId "
        "where e.eventType = 59 and coalesce(e.text, s.value) = 'decode' order by e.start"
    ).fetchall()
    assert len(decodes) == 3
    inst = h100_stages.instances.filter(pl.col("stage") == "decode").sort("start")
    assert inst["cpu_ns"].to_list() == [e - s for s, e, _ in decodes]
    for (s, e, g), row in zip(decodes, inst.iter_rows(named=True), strict=True):
        ops = _ops_in_range(con, s, e, g)
        kernels = [(a, b) for k, a, b in ops if k == "kernel"]
        assert row["kernels"] == len(kernels)
        assert row["gpu_ops"] == len(ops)
        assert row["kernel_ns"] == sum(b - a for a, b in kernels)
        assert row["gpu_busy_ns"] == _union([(a, b) for _, a, b in ops])
        assert row["gpu_span_ns"] == max(b for _, _, b in ops) - min(a for _, a, _ in ops)
    timed = inst.sort("cpu_ns").row(-1, named=True)
    # README of the fixture: the 64-token decode is host bound, GPU busy ~159 ms of a 4,596 ms range
    assert timed["decode_steps"] == 64
    assert 150e6 < timed["gpu_busy_ns"] < 170e6
    assert timed["cpu_ns"] == pytest.approx(4.596e9, rel=1e-3)
    assert timed["gpu_idle_frac"] > 0.95
    assert timed["syncs"] == 0 and timed["d2h_copies"] == 0


def test_h100_stage_names_and_per_token(h100_stages: StageTables) -> None:
    s = h100_stages.summary
    assert h100_stages.mode == FOREIGN
    assert s["stage"].to_list() == ["prefill", "decode", "decode_step"]
    assert s["instances"].to_list() == [3, 3, 76]
    dec = _row(s, "decode")
    assert dec["decode_steps"] == 76
    assert 880 <= dec["launches_per_step"] <= 920  # README: about 900 launches per step
    assert dec["syncs_per_step"] == 0
    # every kernel of a decode_step lies in its decode: the same totals
    step = _row(s, "decode_step")
    assert (step["kernels"], step["kernel_ns"]) == (dec["kernels"], dec["kernel_ns"])


def test_h100_operators_from_emit_nvtx(h100_stages: StageTables) -> None:
    ops = h100_stages.operators
    assert set(ops["stage"].unique()) == {"prefill", "decode", "decode_step"}
    assert not ops["operator"].str.contains("op_id").any()
    assert ops["operator"].str.starts_with("aten::").all()
    first = ops.filter((pl.col("stage") == "prefill") & (pl.col("rank") == 1)).row(0, named=True)
    assert first["operator"] == "aten::_grouped_mm"
    assert first["input_shapes"].startswith("[[5400, 1280]")


def test_h100_operator_attribution_two_ways_agree(h100_sqlite: Path, h100_stages: StageTables) -> None:
    from dsocr.analyze.load import load_trace

    direct = _run(load_trace(h100_sqlite), via_parents=False).operators
    assert direct.height > 0
    assert direct.equals(h100_stages.operators)


def test_h100_categories_cover_all_kernel_time(h100_stages: StageTables) -> None:
    cats = h100_stages.categories.group_by("stage").agg(pl.col("total_ns").sum(), pl.col("pct").sum())
    s = h100_stages.summary.select("stage", "kernel_ns")
    joined = cats.join(s, on="stage")
    assert (joined["total_ns"] == joined["kernel_ns"]).all()
    assert joined["pct"].to_list() == pytest.approx([100.0] * joined.height)


def test_cpu_fixture_dsocr_stages(cpu_sqlite: Path) -> None:
    from dsocr.analyze.load import load_trace

    trace = load_trace(cpu_sqlite)
    st = analyze_stages(trace, None, None)
    assert st.mode == DSOCR
    counts = dict(st.summary.select("stage", "instances").rows())
    assert counts == {
        "repeat": 2,
        "page": 4,
        "vision": 4,
        "sam": 4,
        "clip": 4,
        "projector": 4,
        "prefill": 4,
        "decode": 4,
        "decode_step": 20,
    }
    con = sqlite3.connect(cpu_sqlite)
    raw = con.execute(
        "select s.value, e.start, e.end, e.int64Value from NVTX_EVENTS e join StringIds s on s.id = e.textId "
        "where e.eventType = 59 order by e.start"
    ).fetchall()
    by_start = {(name, start): end - start for name, start, end, _ in raw}
    for row in st.instances.iter_rows(named=True):
        assert row["cpu_ns"] == by_start[(row["stage"], row["start"])]
    inst = st.instances
    assert sorted(inst.filter(pl.col("stage") == "page").select("repeat", "page").rows()) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    steps = inst.filter(pl.col("stage") == "decode_step")
    assert sorted(steps["step"].to_list()) == sorted([0, 1, 2, 3, 4] * 4)
    assert steps.group_by("repeat", "page").len()["len"].to_list() == [5, 5, 5, 5]
    assert _row(st.summary, "decode")["decode_steps"] == 20
    # sam busy-loops 8 ms, clip 4 ms, projector 1 ms, each decode step 2 ms
    sam = _row(st.summary, "sam")["cpu_ns_mean"]
    assert isinstance(sam, float) and 8e6 <= sam < 9e6
    assert st.summary["kernels"].sum() == 0


@pytest.mark.parametrize("trace_of", ["hand", "h100"])
def test_one_pass_equals_per_depth_passes(trace_of: str, h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small trace's stage metrics in one pass over all depths equal those of one pass per depth."""
    import dsocr.analyze.stages as stages_mod
    from dsocr.analyze.load import load_trace

    trace = hand_trace() if trace_of == "hand" else load_trace(h100_sqlite)
    one = _run(trace)
    monkeypatch.setattr(stages_mod, "ONE_PASS_PAIRS", 0)
    per_depth = _run(trace)
    assert one.instances["depth"].n_unique() > 1
    assert one.instances.equals(per_depth.instances)
    for name in ("categories", "top_kernels", "operators"):
        assert getattr(one, name).equals(getattr(per_depth, name)), name


def test_parse_op_message_shapes_equal_the_regex() -> None:
    """The literal shape parsing gives exactly what ``sizes = (\\[.*\\])$`` after the cut gives."""
    msgs = [
        "aten::mm, seq = 1, op_id = 5, sizes = [[1, 8], [8, 8]], input_op_ids = [(4, 0)]",
        "é aten::x, sizes = [[1]]",
        "aten::y, sizes = [1]\nsizes = [2]",
        "aten::z, sizes = [1], sizes = [2]",
        "x, input_op_ids = [1]\n, sizes = [3]",
        "a, input_op_ids = b, input_op_ids = c, sizes = [4]",
        "sizes = [1], input_op_ids = []]",
        "sizes = [1] x",
        "sizes = [1]\n",
        "sizes = [",
        "sizes = []",
        "no shapes",
        "]",
        "",
        None,
    ]
    df = pl.DataFrame({"m": msgs})
    m = pl.col("m")
    want = m.str.replace(r", input_op_ids = .*$", "").str.extract(r"sizes = (\[.*\])$", 1)
    got = df.select(parse_op_message(m)[1])["input_shapes"].to_list()
    assert got == df.select(want)["m"].to_list()
    assert got[:4] == ["[[1, 8], [8, 8]]", "[[1]]", "[2]", "[1], sizes = [2]"]
    names = df.select(parse_op_message(m)[0])["operator"].to_list()
    assert names[:2] == ["aten::mm", "é aten::x"] and names[-2:] == ["", None]


def test_chunked_busy_union_and_gaps_equal_one_pass(h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Big traces take GPU busy time and idle gaps in chunks of keys and time windows (less memory):
    forced on the fixture with tiny chunks, every stage instance and gap equals the one-pass result."""
    from dsocr.analyze import gaps, stages
    from dsocr.analyze.pipeline import run_analysis

    one = run_analysis([h100_sqlite])
    calls: list[int] = []
    real_busy_of = stages._busy_of

    def counted(s: pl.DataFrame, key: str) -> pl.DataFrame:
        calls.append(s.height)
        return real_busy_of(s, key)

    monkeypatch.setattr(stages, "_busy_of", counted)
    windows: list[int] = []
    real_candidates = gaps._unseen_candidates

    def candidates(found: pl.DataFrame, deeper: pl.DataFrame, top_n: int) -> pl.DataFrame:
        windows.append(found.height)
        return real_candidates(found, deeper, top_n)

    monkeypatch.setattr(gaps, "_unseen_candidates", candidates)
    for module in (stages, gaps):
        monkeypatch.setattr(module, "BUSY_CHUNK_ROWS", 2_000)
        monkeypatch.setattr(module, "ONE_PASS_PAIRS", 0)
    chunked = run_analysis([h100_sqlite])
    assert len(calls) > 10 and max(calls) < 71_440  # several chunks, none with every kernel
    assert windows  # the deeper gaps were matched window by window
    assert chunked.stage_instances.equals(one.stage_instances)
    assert chunked.idle_gaps.equals(one.idle_gaps) and one.idle_gaps.height > 0
    assert chunked.stages.equals(one.stages)
