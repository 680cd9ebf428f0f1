"""How vla_torch's extension is built: one list of sources and flags for setup.py and for the JIT
load in __init__.py (no side effects on import: setup.py loads this file alone)."""
import os

import torch


def build_options(csrc_dir):
    """The extension's sources and flags, for setup.py and the JIT load alike: (sources, defines,
    nvcc flags, with_cuda)."""
    from torch.utils import cpp_extension

    with_cuda = (os.environ.get("VLA_TORCH_CUDA", "1") != "0" and torch.version.cuda is not None
                 and cpp_extension.CUDA_HOME is not None)
    sources = [os.path.join(csrc_dir, "ops.cpp")]
    defines = []
    nvcc = []
    if with_cuda:
        # With no GPU visible torch cannot pick the architectures itself (it fails); vla's kernels
        # are built and tuned for Hopper.
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
        sources += [os.path.join(csrc_dir, f"cuda_ops_{t}.cu") for t in ("f32", "f16", "bf16")]
        defines.append("VLA_TORCH_CUDA")
        # torch hides half/bf16 operators and conversions from extensions; vla's kernels use them.
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__",
                "-U__CUDA_NO_BFLOAT16_OPERATORS__"]
    return sources, defines, nvcc, with_cuda
