"""What a config will allocate and how long it will run, checked before anything is allocated.

A width of 10**8, 10**12 samples or 10**8 classes is a typo far more often than a plan; NumPy
would answer with a MemoryError (or the out-of-memory killer) long after the run directory was
made. These estimates are deliberately rough (within a small factor) and err on the low side,
so that only configs that cannot fit are refused, each with what it would take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from nnprobe.errors import ConfigError

GIB = 1 << 30
#: the default ceiling on a run's estimated memory; NNPROBE_MAX_MEMORY_GB raises (or lowers) it
DEFAULT_MAX_BYTES = 4 * GIB
#: optimizer steps: 10**8 steps of the smallest network take about three hours
MAX_STEPS = 100_000_000
#: hidden layers: every step record holds statistics for each layer
MAX_LAYERS = 1000
#: bytes a generated or loaded float64 value costs while the data is made (raw, split, normalized)
_DATA_COPIES = 3
#: a parameter's copies: weights, gradient, up to two optimizer moments, the update's temporary
_PARAM_COPIES = 5
#: an activation's copies: pre-activation, activation, its gradient, a temporary
_ACTIVATION_COPIES = 4


def max_bytes() -> int:
    """The memory ceiling: NNPROBE_MAX_MEMORY_GB when set to a positive number, else 4 GiB."""
    text = os.environ.get("NNPROBE_MAX_MEMORY_GB", "").strip()
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_MAX_BYTES
    return int(value * GIB) if value > 0 else DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class Footprint:
    """Estimated bytes by what holds them."""

    data: int
    parameters: int
    activations: int

    @property
    def total(self) -> int:
        return self.data + self.parameters + self.activations


def data_bytes(n_values: int) -> int:
    """Bytes `n_values` input or target values take while the data are made (float64, a few copies)."""
    return _DATA_COPIES * 8 * n_values


def estimate(config, n_rows: int, n_features: int, n_outputs: int, extra_data_values: int = 0) -> Footprint:
    """Bytes a run of `config` needs on `n_rows` x `n_features` inputs and `n_outputs` output units."""
    itemsize = np.dtype(config.model.dtype).itemsize
    widths = [n_features, *config.model.hidden, n_outputs]
    params = sum((fan_in + 1) * units for fan_in, units in zip(widths[:-1], widths[1:]))
    batch = min(config.training.batch_size or n_rows, n_rows)
    data_values = n_rows * (n_features + n_outputs) + extra_data_values
    return Footprint(
        data=data_bytes(data_values),
        parameters=_PARAM_COPIES * itemsize * params,
        activations=_ACTIVATION_COPIES * itemsize * batch * sum(widths[1:]),
    )


def _gib(n: int) -> str:
    if n >= GIB / 10:
        return f"{n / GIB:,.1f} GiB"
    return f"{n / (1 << 20):,.1f} MiB" if n >= 1 << 20 else f"{n / 1024:,.0f} KiB"


def check_footprint(config, n_rows: int, n_features: int, n_outputs: int, *, source: str,
                    extra_data_values: int = 0) -> Footprint:
    """Raise ConfigError when the estimate is above the ceiling, saying what takes the memory."""
    fp = estimate(config, n_rows, n_features, n_outputs, extra_data_values)
    limit = max_bytes()
    if fp.total > limit:
        raise ConfigError(
            f"{source}: this config would need about {_gib(fp.total)} of memory (data {_gib(fp.data)} for "
            f"{n_rows:,} rows of {n_features:,} features; parameters {_gib(fp.parameters)} for widths "
            f"{[n_features, *config.model.hidden, n_outputs]}; activations {_gib(fp.activations)}), above nnprobe's "
            f"limit of {_gib(limit)}. Check model.hidden, data.n_samples, data.n_features, data.n_classes and "
            "training.batch_size for a typo; to allow more, set NNPROBE_MAX_MEMORY_GB."
        )
    return fp
