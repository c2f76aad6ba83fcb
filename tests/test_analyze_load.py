"""Loading nsys exports: schema 3.7 vs 3.20, parquetdir, GPU identity, and every bad input."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze.kernels import kernel_summary
from dsocr.analyze.load import load_trace
from dsocr.analyze.op_details import with_api_details, with_op_details
from dsocr.analyze.projection import projection_summary
from dsocr.analyze.schema import api_category
from dsocr.analyze.trace import SchemaVersion
from dsocr.contract.errors import BadInput, ExitCode, InputNotFound
from tracebuild import TraceBuilder


def test_h100_fixture_meta_and_gpu(h100_sqlite: Path) -> None:
    trace = load_trace(h100_sqlite, need_cuda=True)
    meta = trace.meta
    assert (meta.product_version, meta.schema, meta.source_format) == ("2025.3.2.0", SchemaVersion(3, 20, 3), "sqlite")
    assert meta.has_cuda and meta.has_nvtx
    assert (meta.session_start_ns, meta.session_end_ns, meta.duration_ns) == (458287573, 42306214548, 41847926975)
    (gpu,) = trace.gpus
    assert (gpu.name, gpu.chip_name, gpu.sm_count, gpu.compute_capability) == (
        "NVIDIA H100 80GB HBM3",
        "GH100",
        132,
        "9.0",
    )
    assert (gpu.clock_hz, gpu.memory_bandwidth_bps) == (1980000000, 3352320000000)
    counts = {
        name: frame.select(pl.len()).collect().item()
        for name, frame in [("ranges", trace.ranges), ("ops", trace.gpu_ops), ("api", trace.api), ("sync", trace.syncs)]
    }
    assert counts == {"ranges": 30646, "ops": 71440 + 4425 + 447, "api": 167731, "sync": 146}
    ops = trace.gpu_ops.collect()
    assert ops["api_id"].null_count() == 0  # every op found its launching call
    assert ops["op_id"].to_list() == list(range(ops.height))
    assert not {"grid", "block", "device_id", "correlation_id"} & set(ops.columns)  # detail columns: read if asked
    detailed = with_op_details(trace, trace.gpu_ops, ["grid", "block"]).collect()
    assert detailed["op_id"].to_list() == ops["op_id"].to_list()
    kernel = detailed.filter(pl.col("kind") == "kernel").row(0, named=True)
    assert kernel["grid"].count(",") == 2 and kernel["block"].count(",") == 2
    api = trace.api.collect()
    assert api.group_by("category").len().sort("category").rows() == [
        ("launch", 60906 + 8575 + 1880 + 79),
        ("memcpy", 4425),
        ("memset", 447),
        ("other", 167731 - 60906 - 8575 - 1880 - 79 - 4425 - 447 - 146 - 5),
        ("sync", 146 + 5),
    ]


def test_cpu_fixture_schema_37_without_cuda(cpu_sqlite: Path) -> None:
    trace = load_trace(cpu_sqlite)
    assert trace.meta.schema == SchemaVersion(3, 7, 2)
    assert trace.meta.product_version == "2023.4.4.54"
    assert not trace.meta.has_cuda and trace.gpus == ()
    ranges = trace.ranges.collect()
    assert ranges.height == 51  # the mark and the domain events are not ranges
    assert set(ranges["domain"]) == {"dsocr"}
    by_depth = ranges.group_by("depth").agg(pl.col("message").unique().sort()).sort("depth")
    assert by_depth.rows() == [
        (0, ["repeat", "warmup"]),
        (1, ["page"]),
        (2, ["decode", "prefill", "vision"]),
        (3, ["clip", "decode_step", "projector", "sam"]),
    ]
    repeats = ranges.filter(pl.col("name") == "dsocr:repeat")
    assert repeats["payload"].to_list() == [0, 1]
    steps = ranges.filter(pl.col("message") == "decode_step")
    assert steps["payload"].to_list() == [0, 1, 2, 3, 4] * 4
    decode_ids = set(ranges.filter(pl.col("message") == "decode")["range_id"])
    assert set(steps["parent_id"]) == decode_ids
    assert trace.gpu_ops.collect().height == 0 and trace.api.collect().height == 0
    assert projection_summary(trace).height == 0 and kernel_summary(trace).height == 0


def test_cpu_fixture_need_cuda_is_bad_input(cpu_sqlite: Path) -> None:
    with pytest.raises(BadInput, match=r"holds no CUDA kernels.*--trace=cuda,nvtx"):
        load_trace(cpu_sqlite, need_cuda=True)


def _write_parquetdir(sqlite_path: Path, out: Path) -> Path:
    out.mkdir()
    con = sqlite3.connect(sqlite_path)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    con.close()
    wanted = [t for t in tables if not t.startswith("ENUM_")]
    for table in wanted:
        df = pl.read_database_uri(f"SELECT * FROM {table}", f"sqlite://{sqlite_path}", engine="connectorx")
        df.write_parquet(out / f"{table}.parquet")
    return out


def test_parquetdir_gives_the_same_summaries(h100_sqlite: Path, tmp_path: Path) -> None:
    pq = _write_parquetdir(h100_sqlite, tmp_path / "h100_pq")
    from_pq = load_trace(pq)
    from_sqlite = load_trace(h100_sqlite)
    assert from_pq.meta.source_format == "parquetdir"
    assert from_pq.meta.schema == from_sqlite.meta.schema and from_pq.gpus == from_sqlite.gpus
    assert projection_summary(from_pq).equals(projection_summary(from_sqlite))
    assert kernel_summary(from_pq).equals(kernel_summary(from_sqlite))
    assert from_pq.ranges.collect().equals(from_sqlite.ranges.collect())
    cols = ["op_id", "kind", "name", "short_name", "grid", "stream_id", "api_id", "api_start", "tid"]
    details = ["short_name", "grid", "stream_id"]
    assert (
        with_op_details(from_pq, from_pq.gpu_ops, details)
        .select(cols)
        .collect()
        .equals(with_op_details(from_sqlite, from_sqlite.gpu_ops, details).select(cols).collect())
    )


def test_parquetdir_without_metadata_table(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "r")
    b.kernel(b.api(t, 10, 20, "cudaLaunchKernel_v7000"), 30, 40, "k")
    pq = _write_parquetdir(b.write(tmp_path / "t.sqlite"), tmp_path / "pq")
    (pq / "META_DATA_EXPORT.parquet").unlink()
    trace = load_trace(pq)
    assert (trace.meta.product_version, str(trace.meta.schema)) == ("unknown", "3.0.0")
    assert projection_summary(trace).select("range", "total_proj_ns").row(0) == ("r", 10)
    other = tmp_path / "other"
    other.mkdir()
    pl.DataFrame({"a": [1]}).write_parquet(other / "foo.parquet")
    with pytest.raises(BadInput, match=r"other: is not an Nsight Systems export"):
        load_trace(other)


def test_path_with_spaces_and_export_meta_data_table(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "r")
    b.kernel(b.api(t, 10, 20, "cudaLaunchKernel_v7000"), 30, 40, "k")
    folder = tmp_path / "a dir with spaces"
    folder.mkdir()
    trace = load_trace(b.write(folder / "my trace.sqlite", meta_table="EXPORT_META_DATA"))
    assert projection_summary(trace).select("range", "total_proj_ns").row(0) == ("r", 10)


# ---- bad input: one line naming the file, the problem and the fix ----


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(InputNotFound) as info:
        load_trace(missing)
    assert info.value.exit_code == ExitCode.NOT_FOUND
    assert info.value.message.startswith(f"{missing}: no such file or directory; give an nsys SQLite export")
    assert "\n" not in info.value.message


def test_directory_that_is_not_a_parquetdir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BadInput, match=r"is a directory without \.parquet files, not an nsys parquetdir export"):
        load_trace(tmp_path)


def test_text_file_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "trace.sqlite"
    path.write_text("Name,Value\n" * 20)
    with pytest.raises(BadInput) as info:
        load_trace(path)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert info.value.message == (
        f"{path}: is not an SQLite file; give an nsys SQLite export "
        "(`nsys export --type sqlite REPORT.nsys-rep`) or a parquetdir export"
    )


def test_nsys_rep_given_by_mistake(tmp_path: Path) -> None:
    path = tmp_path / "run.nsys-rep"
    path.write_bytes(b"\x00\x01QDSTRM" + bytes(200))
    with pytest.raises(
        BadInput, match=r"is an Nsight Systems report, not an SQLite export; run `nsys export --type sqlite"
    ):
        load_trace(path)


def test_sqlite_that_is_not_an_nsys_export(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE foo (a INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(BadInput, match=r"other\.sqlite: is not an Nsight Systems export \(no META_DATA_EXPORT table\)"):
        load_trace(path)


def test_truncated_fixture(h100_sqlite: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.sqlite"
    data = h100_sqlite.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        BadInput, match=r"truncated\.sqlite: is truncated \(\d+ bytes, its SQLite header promises \d+\)"
    ):
        load_trace(path)


def test_truncated_to_a_few_bytes(tmp_path: Path) -> None:
    path = tmp_path / "tiny.sqlite"
    path.write_bytes(b"SQLite format 3\x00\x10\x00")
    with pytest.raises(BadInput, match=r"tiny\.sqlite: is truncated \(18 bytes\)"):
        load_trace(path)


def test_corrupt_pages(cpu_sqlite: Path, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.sqlite"
    shutil.copy(cpu_sqlite, path)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), page):  # every page after the first: garbage headers
        data[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=r"corrupt\.sqlite: .*corrupt.*export it again"):
        load_trace(path)


def test_no_nvtx_table(tmp_path: Path) -> None:
    b = TraceBuilder()
    b.kernel(b.api(b.thread(), 10, 20, "cudaLaunchKernel_v7000"), 30, 40, "k")
    path = b.write(tmp_path / "no_nvtx.sqlite")
    with pytest.raises(BadInput, match=r"no_nvtx\.sqlite: has no NVTX_EVENTS table.*--trace=cuda,nvtx"):
        load_trace(path)
    trace = load_trace(path, need_nvtx=False)  # the caller may allow it
    assert trace.ranges.collect().height == 0
    assert kernel_summary(trace)["name"].to_list() == ["k"]
    assert projection_summary(trace).height == 0


def test_unknown_schema_major(tmp_path: Path) -> None:
    b = TraceBuilder(schema="4.1.0", product="2030.1.1")
    b.range(b.thread(), 0, 10, "r")
    path = b.write(tmp_path / "future.sqlite")
    with pytest.raises(BadInput, match=r"future\.sqlite: export schema 4\.1\.0 \(nsys 2030\.1\.1\) is not supported"):
        load_trace(path)


def test_empty_cuda_tables_load(tmp_path: Path) -> None:
    b = TraceBuilder()
    b.range(b.thread(), 0, 10, "r")
    path = b.write(
        tmp_path / "empty.sqlite",
        force_tables=("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME", "StringIds"),
    )
    trace = load_trace(path)
    assert trace.gpu_ops.collect().height == 0
    assert projection_summary(trace).height == 0


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("cudaLaunchKernel_v7000", "launch"),
        ("cudaLaunchKernelExC_v11060", "launch"),
        ("cudaLaunchCooperativeKernel_v9000", "launch"),
        ("cuLaunchKernel", "launch"),
        ("cuLaunchKernelEx", "launch"),
        ("cudaLaunchHostFunc_v10000", "other"),
        ("cudaMemcpyAsync_v3020", "memcpy"),
        ("cuMemcpyHtoDAsync_v2", "memcpy"),
        ("cudaMemsetAsync_v3020", "memset"),
        ("cudaStreamSynchronize_v3020", "sync"),
        ("cudaDeviceSynchronize_v3020", "sync"),
        ("cuCtxSynchronize", "sync"),
        ("cudaEventSynchronize_v3020", "sync"),
        ("cudaStreamWaitEvent_v3020", "other"),
        ("cudaGraphLaunch_v10000", "graph"),
        ("cudaMalloc_v3020", "other"),
    ],
)
def test_api_category(name: str, category: str) -> None:
    assert api_category(name) == category


def test_export_without_string_table(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "plain text range")
    trace = load_trace(b.write(tmp_path / "nostrings.sqlite", drop_tables=("StringIds",)))
    assert trace.ranges.collect()["name"].to_list() == ["plain text range"]
    assert kernel_summary(trace).height == 0


def test_ids_read_again_on_demand_equal_the_export(h100_sqlite: Path) -> None:
    """Correlation ids and the kernels' process ids are not kept after loading; asking for them
    (op_details) reads them again, in table order."""
    trace = load_trace(h100_sqlite)
    with sqlite3.connect(h100_sqlite) as con:
        api = [r[0] for r in con.execute("SELECT correlationId FROM CUPTI_ACTIVITY_KIND_RUNTIME ORDER BY rowid")]
        kernels = con.execute(
            "SELECT correlationId, globalPid FROM CUPTI_ACTIVITY_KIND_KERNEL ORDER BY rowid"
        ).fetchall()
        copies = [r[0] for r in con.execute("SELECT correlationId FROM CUPTI_ACTIVITY_KIND_MEMCPY ORDER BY rowid")]
    got_api = with_api_details(trace, trace.api, ["correlation_id"]).select("correlation_id").collect()
    assert got_api["correlation_id"].to_list() == api
    ids = ["correlation_id", "global_pid"]
    ops = with_op_details(trace, trace.gpu_ops, ids).select("kind", *ids, "api_id").collect()
    assert ops.filter(pl.col("kind") == "kernel").select(ids).rows() == kernels
    assert ops.filter(pl.col("kind") == "memcpy")["correlation_id"].to_list() == copies
    # joined on a filtered frame: the rows of that frame, in its order
    launched = with_op_details(trace, trace.gpu_ops.filter(pl.col("op_id") < 3), ["correlation_id"]).collect()
    assert launched["correlation_id"].to_list() == [k[0] for k in kernels[:3]]


def test_lookup_through_dense_table_and_through_replace() -> None:
    from dsocr.analyze import lookups

    table = pl.DataFrame({"_sid": [5, 7, -1], "v": ["five", "seven", "minus one"]})
    keys = pl.DataFrame({"k": pl.Series([5, 7, 6, None, 100, -1, -9], dtype=pl.Int32)})
    want = ["five", "seven", "none", "none", "none", "minus one", "none"]
    assert keys.select(lookups.lookup("k", table, "v", default="none", key_dtype=pl.Int32))["k"].to_list() == want
    wide = table.with_columns(pl.when(pl.col("_sid") == 7).then(1 << 40).otherwise(pl.col("_sid")).alias("_sid"))
    wide_keys = keys.with_columns(pl.col("k").cast(pl.Int64).replace(7, 1 << 40))
    assert wide_keys.select(lookups.lookup("k", wide, "v", default="none"))["k"].to_list() == want  # replace_strict
