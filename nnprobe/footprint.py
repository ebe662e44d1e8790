"""A config's memory estimate from what its data source and model imply, checked before allocating.

Apart from nnprobe.limits (the bounds and the arithmetic), because it reads the data sources and
the model's output width, which themselves use those bounds.
"""

from __future__ import annotations

from typing import Optional

from nnprobe.data import GENERATORS
from nnprobe.limits import check_footprint
from nnprobe.nn.model import output_units


def generated_shape(config) -> Optional[tuple[int, int, int, int]]:
    """(rows, features, outputs, extra values) of a synthetic source, known before generating; None for files."""
    gen = GENERATORS.get(config.data.source)
    if gen is None:
        return None
    k = gen.n_classes(config.data)
    n_features = 1 if config.data.source == "affine" else (2 if gen.planar else config.data.n_features)
    if k is None:
        outputs = 1
    elif config.task == "classification":
        outputs = output_units("classification", config.loss.kind, config.model.output, 1, k)
    else:
        outputs = 1 if k == 2 else k
    extra = k * n_features if k is not None else 0  # the class centres
    return config.data.n_samples, n_features, outputs, extra


def check_config_footprint(config, *, source: str) -> None:
    """The check for a synthetic source, before its data exist (file sources are checked once read)."""
    shape = generated_shape(config)
    if shape is not None:
        rows, features, outputs, extra = shape
        check_footprint(config, rows, features, outputs, source=source, extra_data_values=extra)


def check_data_footprint(config, data, *, source: str) -> None:
    """The check once the data are loaded, before the model is built."""
    n_targets = data.y_train.shape[1] if data.task == "regression" else 1
    outputs = output_units(data.task, config.loss.kind, config.model.output, n_targets, data.n_classes)
    check_footprint(config, len(data.x_train) + len(data.x_val), data.n_features, outputs, source=source)
