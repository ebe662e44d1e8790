"""Imports every detector module so that each registers itself; MODULES is the report order, whatever
else imported a detector module first."""

from nnprobe.diagnose.detectors import numeric  # noqa: F401  nonfinite, log-zero
from nnprobe.diagnose.detectors import outputs  # noqa: F401  output-loss-mismatch
from nnprobe.diagnose.detectors import gradients  # noqa: F401  exploding-gradients, vanishing-gradients
from nnprobe.diagnose.detectors import units  # noqa: F401  dead-relu, saturated-activations
from nnprobe.diagnose.detectors import configuration  # noqa: F401  unnormalized-inputs, poor-init
from nnprobe.diagnose.detectors import training  # noqa: F401  large-update-ratio, loss-divergence, loss-plateau
from nnprobe.diagnose.detectors import derivatives  # noqa: F401  gradient-mismatch
from nnprobe.diagnose.detectors import curve  # noqa: F401  loss-oscillation, loss-spike

#: the report order: the detectors of these modules, in this order (within a module, as registered)
MODULES = tuple(m.__name__ for m in (numeric, outputs, gradients, units, configuration, training, derivatives, curve))
