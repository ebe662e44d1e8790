"""Start and step records of a probed PyTorch run, from statistics already computed (docs/log-schema.md).

The per-tensor objects come in finished (nnprobe.torch.stats); this module only lays them out as
the log's records, so that the detectors, `diagnose` and the reports read a PyTorch run exactly as
they read `train`'s.
"""

from __future__ import annotations

from typing import Any, Optional

import nnprobe
from nnprobe.train.runlog import SCHEMA_VERSION


def start_record(*, name: str, task: str, dtype: str, every: int, batch_size: Optional[int],
                 layers: list[dict], loss: dict, optimizer: dict, data: dict) -> dict:
    return {
        "type": "start", "schema": SCHEMA_VERSION, "nnprobe": nnprobe.__version__, "name": name, "seed": None,
        "task": task, "dtype": dtype, "probes_every": every, "batch_size": batch_size, "total_steps": None,
        "layers": layers, "loss": loss, "optimizer": optimizer, "data": data, "source": "torch",
    }


def layer_entry(name: str, *, z: Optional[dict], a: Optional[dict], gW: Optional[dict], gb: Optional[dict],
                W: Optional[dict], b: Optional[dict], update_ratio: Optional[float]) -> dict:
    """One layer of a full record; a parameter the module lacks (a bias-free layer) is an empty object."""
    return {"name": name, "z": z, "a": a, "gW": gW if gW is not None else {}, "gb": gb if gb is not None else {},
            "W": W, "b": b if b is not None else {}, "update_ratio": update_ratio}


def step_record(step: int, *, loss: Optional[float], grad_norm: Optional[float], nonfinite: Optional[dict],
                loss_in: Optional[dict], layers: Optional[list[dict]], probe_errors: int = 0,
                extra: Optional[dict[str, Any]] = None) -> dict:
    record: dict[str, Any] = {"type": "step", "step": step, "full": layers is not None, "loss": loss,
                              "grad_norm": grad_norm, "nonfinite": nonfinite, "loss_in": loss_in}
    if extra:
        record.update(extra)
    if layers is not None:
        record["layers"] = layers
    if probe_errors:
        record["probe_errors"] = probe_errors
    return record
