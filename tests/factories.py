"""Synthetic records exactly as docs/log-schema.md writes them, for tests of what reads the log."""

from __future__ import annotations

REGRESSION_DATA = {"n_train": 100, "n_val": 0, "n_features": 2, "n_classes": None,
                   "input_mean": [0.0, 0.0], "input_std": [1.0, 1.0], "input_min": [-2.0, -2.0],
                   "input_max": [2.0, 2.0], "target_mean": 0.0, "target_std": 1.0, "target_min": -2.0,
                   "target_max": 2.0}


def start_record(layers=(("dense1", 4, "relu"), ("dense2", 1, "identity")), *, task="regression",
                 total_steps=10, reduction="mean", lr=0.01, data=None):
    """layers: (name, units, activation) in forward order; the first layer takes 2 inputs."""
    specs, fan_in = [], 2
    for i, (name, units, act) in enumerate(layers):
        specs.append({"name": name, "fan_in": fan_in, "units": units, "activation": act,
                      "is_output": i == len(layers) - 1})
        fan_in = units
    return {"type": "start", "schema": 1, "nnprobe": "0.1.0", "name": "synthetic", "seed": 0, "task": task,
            "dtype": "float64", "probes_every": 1, "total_steps": total_steps, "layers": specs,
            "loss": {"kind": "mse", "reduction": reduction, "from_logits": False, "epsilon": 0.0, "l2": 0.0},
            "optimizer": {"kind": "sgd", "lr": lr, "clip_grad_norm": None},
            "data": dict(data or REGRESSION_DATA)}


def layer_stats(name, *, dead=0, a_min=0.0, a_max=1.0, grad=0.1, ratio=1e-3, nan=0):
    counts = {"nan": nan, "posinf": 0, "neginf": 0}
    return {"name": name,
            "z": {"mean": 0.0, "std": 1.0, "min": a_min, "max": a_max, **counts, "sat_frac": None},
            "a": {"mean": 0.2, "std": 0.5, "min": a_min, "max": a_max, **counts, "zero_frac": 0.0, "dead": dead},
            "gW": {"norm": grad, "maxabs": grad, "nonfinite": 0, "zero_frac": 0.0},
            "gb": {"norm": grad, "maxabs": grad, "nonfinite": 0},
            "W": {"norm": 1.0, "mean": 0.0, "std": 0.5, "min": -1.0, "max": 1.0, "pos_frac": 0.5, "nonfinite": 0},
            "b": {"norm": 0.0, "mean": 0.0},
            "update_ratio": ratio}


def step_record(step, loss, *, layers=None, full=True, grad_norm=1.0, nonfinite=None, **full_fields):
    record = {"type": "step", "step": step, "full": full, "loss": loss, "grad_norm": grad_norm,
              "nonfinite": nonfinite, "loss_in": None}
    if full:
        record.update(full_fields)
        record["layers"] = layers if layers is not None else []
    return record


def run_detector(code, records, start, settings=None, **config_sections):
    """One detector fed `records` in order: (its findings, the step of the record at which it first held)."""
    from nnprobe.config import Config
    from nnprobe.diagnose.detectors import REGISTRY, RunContext, all_codes

    all_codes()  # registers every detector
    config = Config.model_validate({"data": {"source": "affine"}, **config_sections})
    det = REGISTRY[code](RunContext(start=start, config=config), settings)
    fired_at = None
    for record in records:
        det.observe(record)
        if fired_at is None and det.first_step is not None:
            fired_at = record["step"]
    return det.static() + det.finish({"type": "end", "status": "completed"}), fired_at
