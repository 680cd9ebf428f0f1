"""Builds vla_torch with its operators (csrc/ops.cpp) against the installed torch:

    pip install --no-build-isolation ./python        (from the repository root)

Needs a C++ compiler for torch's C++ standard and Eigen's headers (VLA_EIGEN_INCLUDE, default
/usr/include/eigen3: Debian's libeigen3-dev). vla's own headers come from ../include.
"""
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

here = os.path.dirname(os.path.abspath(__file__))
setup(
    name="vla_torch",
    version="0.1.0",
    description="vla's Variational Linear Attention as a PyTorch operator with autograd",
    packages=["vla_torch"],
    package_data={"vla_torch": ["csrc/*.cpp"]},
    ext_modules=[
        CppExtension(
            "vla_torch._C",
            ["vla_torch/csrc/ops.cpp"],
            include_dirs=[os.path.join(here, "..", "include"), os.environ.get("VLA_EIGEN_INCLUDE", "/usr/include/eigen3")],
            define_macros=[("VLA_TORCH_PYMODULE", None)],
            extra_compile_args=["-O3"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
