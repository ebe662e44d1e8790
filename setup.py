"""The optional C kernel (one-pass tensor statistics); everything else is in pyproject.toml.

`optional=True`: where no C compiler is available the install goes on without it, and
nnprobe.probes computes the same statistics with NumPy passes.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nnprobe.probes._kernels",
            ["nnprobe/probes/_kernels.c"],
            optional=True,
            # -fno-trapping-math lets the per-lane selects become SIMD blends; nothing is reassociated
            extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"],
        )
    ]
)
