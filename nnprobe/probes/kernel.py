"""The optional C kernel (nnprobe/probes/_kernels.c), and the switch that turns it off.

It is used only where it was built and the CPU has AVX2; NNPROBE_NUMPY_STATS=1 in the
environment, or use(False), makes nnprobe use NumPy alone (the same numbers, more passes).
"""

from __future__ import annotations

import os

try:
    from nnprobe.probes import _kernels
except ImportError:  # built without a C compiler
    _kernels = None

#: the kernel module while it is in use, else None
active = _kernels if _kernels is not None and _kernels.available() and not os.environ.get("NNPROBE_NUMPY_STATS") else None


def use(enabled: bool) -> bool:
    """Switch the kernel on or off (tests, benchmarks); returns whether it is now in use."""
    global active
    active = _kernels if enabled and _kernels is not None and _kernels.available() else None
    return active is not None


def in_use() -> bool:
    return active is not None
