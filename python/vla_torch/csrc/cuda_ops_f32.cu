// The GPU operators' kernels for float tokens (cuda_ops.cuh).
#include "cuda_ops.cuh"
VLA_TORCH_INSTANTIATE(float)
