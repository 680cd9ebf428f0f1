// The GPU operators' kernels for __nv_bfloat16 tokens (cuda_ops.cuh).
#include "cuda_ops.cuh"
VLA_TORCH_INSTANTIATE(__nv_bfloat16)
