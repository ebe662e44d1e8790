"""Imports every detector module so that each registers itself (order = report order)."""

from nnprobe.detectors import numeric  # noqa: F401  nonfinite, log-zero
from nnprobe.detectors import outputs  # noqa: F401  output-loss-mismatch
from nnprobe.detectors import gradients  # noqa: F401  exploding-gradients, vanishing-gradients
from nnprobe.detectors import activations  # noqa: F401  dead-relu, saturated-activations
from nnprobe.detectors import static  # noqa: F401  unnormalized-inputs, poor-init
from nnprobe.detectors import training  # noqa: F401  large-update-ratio, loss-divergence, loss-plateau
from nnprobe.detectors import gradcheck  # noqa: F401  gradient-mismatch
