"""Kernel categories: every kernel of the H100 fixture lands in a sensible category."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import H100_DIR, missing_fixture
from dsocr.analyze.categories import CATEGORIES, LABELS, OTHER, RULES, categorize, category_expr

# (substring of the demangled name, expected category), one per kernel family of the fixture
EXPECTED = [
    ("cutlass::gemm::kernel::GemmUniversal<cutlass::gemm::GroupProblemShape", "gemm"),
    ("nvjet_sm90_tst_", "gemm"),
    ("sm80_xmma_gemm_f32f32", "gemm"),
    ("cutlass_80_simt_sgemm", "gemm"),
    ("cublasLt::splitKreduce_kernel", "gemm"),
    ("dot_kernel<float", "gemm"),
    ("reduce_1Block_kernel<float, (int)128, (int)7, cublasGemv", "gemm"),
    ("cudnn_generated_fort_native_sdpa", "attention"),
    ("sbtopk::gatherTopK", "moe_routing"),
    ("bitonicSortKVInPlace", "moe_routing"),
    ("DeviceRadixSort", "moe_routing"),
    ("DeviceScanKernel", "moe_routing"),
    ("DeviceScanInitKernel", "moe_routing"),
    ("kernelHistogram1D", "moe_routing"),
    ("prepare_grouped_gemm_data", "moe_routing"),
    ("index_put_kernel_impl", "moe_routing"),
    ("index_kernel_impl", "moe_routing"),
    ("vectorized_gather_kernel", "moe_routing"),
    ("indexSelectSmallIndex", "moe_routing"),
    ("fill_reverse_indices_kernel", "moe_routing"),
    ("ReduceOp<float, at::native::MeanOps", "reduction"),
    ("sum_functor", "reduction"),
    ("ArgMaxOps", "reduction"),
    ("softmax_warp_forward", "reduction"),
    ("cudnn::fusion::lean_reduction_kernel", "reduction"),
    ("direct_copy_kernel_cuda", "copy"),
    ("bfloat16_copy_kernel_cuda", "copy"),
    ("CatArrayBatchedCopy", "copy"),
    ("MulFunctor", "elementwise"),
    ("CUDAFunctor_add", "elementwise"),
    ("CUDAFunctorOnSelf_add", "elementwise"),
    ("div_floor_kernel_cuda", "elementwise"),
    ("cos_kernel_cuda", "elementwise"),
    ("masked_fill_kernel", "elementwise"),
    ("silu_kernel", "elementwise"),
    ("rsqrt_kernel_cuda", "elementwise"),
    ("pow_tensor_scalar_kernel_impl", "elementwise"),
    ("neg_kernel_cuda", "elementwise"),
    ("arange_cuda_out", "elementwise"),
    ("compare_scalar_kernel", "elementwise"),
    ("FillFunctor", "elementwise"),
    ("sin_kernel_cuda", "elementwise"),
    ("launch_clamp_scalar", "elementwise"),
    ("random_from_to_kernel", "elementwise"),
]


@pytest.fixture(scope="module")
def fixture_kernel_names() -> list[str]:
    path = H100_DIR / "cuda_gpu_kern_sum.csv"
    if not path.exists():
        missing_fixture(f"oracle {path}")
    return pl.read_csv(path, infer_schema_length=None)["Name"].to_list()


def _expected(name: str) -> str | None:
    # the most specific (longest) matching key decides
    hits = [(len(k), cat) for k, cat in EXPECTED if k in name]
    return max(hits)[1] if hits else None


def test_every_fixture_kernel_has_an_expected_category(fixture_kernel_names: list[str]) -> None:
    assert len(fixture_kernel_names) == 66
    wrong = {}
    for name in fixture_kernel_names:
        want = _expected(name)
        assert want is not None, f"no expectation for kernel {name[:120]}"
        if categorize(name) != want:
            wrong[name[:100]] = (categorize(name), want)
    assert wrong == {}
    assert all(categorize(n) != OTHER for n in fixture_kernel_names)


def test_polars_expression_equals_python_function(fixture_kernel_names: list[str]) -> None:
    names = [*fixture_kernel_names, "ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "my_custom_kernel", "[CUDA memcpy]"]
    df = pl.DataFrame({"name": names}).with_columns(category_expr(pl.col("name")).alias("cat"))
    assert df["cat"].to_list() == [categorize(n) for n in names]


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "communication"),
        ("flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64, 64, 4>>", "attention"),
        ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
        ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>", "normalization"),
        ("void vllm::rms_norm_kernel<c10::BFloat16>", "normalization"),
        ("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn", "gemm"),
        ("void moe_align_block_size_kernel<int>", "moe_routing"),
        ("some_unknown_kernel", "other"),
    ],
)
def test_other_common_kernels(name: str, category: str) -> None:
    assert categorize(name) == category


def test_table_is_consistent() -> None:
    assert {cat for cat, _ in RULES} | {OTHER} == set(CATEGORIES)
    assert set(LABELS) == set(CATEGORIES)
