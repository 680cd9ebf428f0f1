// Linear attention and DeltaNet through the same kernel template, against the float64 CPU baselines.
#include "support.cuh"

using vla::op::DeltaNet;
using vla::op::LinearAttention;
using namespace vtest;

TEMPLATE_TEST_CASE("baselines: float, every (dk, dv) pair", "[cuda][baselines]", LinearAttention, DeltaNet) {
  const std::int64_t dims[] = {32, 64, 128};
  const std::int64_t Ts[] = {1, 63, 1000};
  int i = 0;
  for (std::int64_t dk : dims)
    for (std::int64_t dv : dims) {
      const Shape s{1 + i % 2, Ts[i % 3], 1 + i % 3, dk, dv};
      check_forward<TestType, float>(s, i % 2 == 0);
      ++i;
    }
}

TEMPLATE_TEST_CASE("baselines: half and bf16 inputs", "[cuda][baselines]", LinearAttention, DeltaNet) {
  for (const Shape& s : {Shape{2, 63, 3, 64, 64}, Shape{1, 1000, 2, 64, 64}, Shape{1, 50, 2, 128, 32}}) {
    check_forward<TestType, __half>(s, true);
    check_forward<TestType, __nv_bfloat16>(s, false);
  }
}

TEMPLATE_TEST_CASE("baselines: split and varlen", "[cuda][baselines]", LinearAttention, DeltaNet) {
  check_split<TestType, float>({2, 150, 2, 64, 64}, 61);
  check_varlen<TestType, float>({0, 17, 17, 100, 163, 164}, 2, 64, 64);
}

TEST_CASE("linear attention: huge finite q: finite outputs that match the CPU", "[cuda][baselines][huge]") {
  // q ~ 1e30 with k, v ~ 1e15 (S = Σ v kᵀ stays finite in float): S q, kᵀq and zᵀq overflow.
  check_huge<LinearAttention>({1, 50, 2, 64, 64}, 1e30f, 1e15f, 1e15f);
  check_huge<LinearAttention>({2, 33, 1, 128, 32}, 1e30f, 1e15f, 1e15f);
  check_huge<LinearAttention>({1, 40, 2, 32, 64}, 1e37f, 1.f, 1.f, true);
}

TEST_CASE("deltanet: zero keys write nothing", "[cuda][baselines]") {
  check_forward<DeltaNet, float>({2, 80, 2, 64, 64}, true, 6);
}
