"""Static checks: the findings that follow from a config and its data before any training step."""

from __future__ import annotations

import numpy as np

from nnprobe.nn.activations import Identity
from nnprobe.config import Config
from nnprobe.data import load_dataset
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.findings import Finding


def start_record_for(config: Config) -> dict:
    """The start record `train` would write, built without training (data generated, model initialised)."""
    from nnprobe.train.loop import Trainer

    data_seq = np.random.SeedSequence(config.seed).spawn(1)[0]
    data = load_dataset(config.data, config.task, np.random.default_rng(data_seq))
    placeholder = Identity() if ":" in config.model.activation else None
    return Trainer(config, data, hidden_activation=placeholder).start_record()


def static_findings(config: Config) -> list[Finding]:
    return DetectorSuite(config, start_record_for(config)).static_findings()
