"""Builds vla_torch with its operators (csrc/) against the installed torch:

    pip install --no-build-isolation ./python        (from the repository root)

Needs a C++ compiler for torch's C++ standard and Eigen's headers (VLA_EIGEN_INCLUDE, default
/usr/include/eigen3: Debian's libeigen3-dev). vla's own headers come from ../include. Where torch
has CUDA and nvcc is found, the CUDA operators are built too (VLA_TORCH_CUDA=0: not), for the
architectures in TORCH_CUDA_ARCH_LIST (vla's kernels are tuned for 9.0).
"""
import importlib.util
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("vla_torch_build", os.path.join(here, "vla_torch", "_build.py"))
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)
sources, defines, nvcc, with_cuda = _build.build_options("vla_torch/csrc")

Extension = CUDAExtension if with_cuda else CppExtension
setup(
    name="vla_torch",
    version="0.1.0",
    description="vla's Variational Linear Attention as a PyTorch operator with autograd",
    packages=["vla_torch"],
    package_data={"vla_torch": ["csrc/*.cpp", "csrc/*.h", "csrc/*.cuh", "csrc/*.cu"]},
    ext_modules=[
        Extension(
            "vla_torch._C",
            sources,
            include_dirs=[os.path.join(here, "..", "include"), os.environ.get("VLA_EIGEN_INCLUDE", "/usr/include/eigen3")],
            define_macros=[("VLA_TORCH_PYMODULE", None)] + [(d, None) for d in defines],
            extra_compile_args={"cxx": ["-O3"], "nvcc": nvcc} if with_cuda else ["-O3"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
