// The GPU operators' kernels for __half tokens (cuda_ops.cuh).
#include "cuda_ops.cuh"
VLA_TORCH_INSTANTIATE(__half)
