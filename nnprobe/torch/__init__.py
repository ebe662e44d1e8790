"""nnprobe for PyTorch loops: `from nnprobe.torch import Probe` (extra `nnprobe[torch]`).

`import nnprobe` never imports torch; only this package does.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "nnprobe.torch needs PyTorch: pip install 'nnprobe[torch]' (or any torch >= 2.1)."
    ) from exc

from nnprobe.torch.layers import ProbeError
from nnprobe.torch.probe import Probe, Step

__all__ = ["Probe", "ProbeError", "Step"]
