"""Shared test helpers, and the one record factory: synthetic records exactly as docs/log-schema.md writes them.

- `start_record(layers, ...)`: a start record; `layers` are (name, fan_in, units, activation) in forward order.
- `layer_stats(spec, over)`: a healthy per-layer object for a layer spec, with `over` deep-merged in;
  `plain_layer(name, dead=..., a_min=..., ...)` is the same object set from a few numbers, for tests of
  what summarises and draws records (digest, reports).
- `step_record(start, step, ...)`: a step record, with a layer object for every layer of `start`
  (`layers`: per-layer overrides by name, or the list of layer objects itself).
- `run_one`, `run_suite`: a detector, or the whole suite, over a stream of records.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, Optional, Union

from nnprobe.config import Config
from nnprobe.diagnose.detectors import DetectorSuite, RunContext, explain
from nnprobe.findings import Finding

NAN, INF = float("nan"), float("inf")

END = {"type": "end", "status": "completed", "steps": 0, "final_loss": 0.1, "stopped_by": None}


MLP_131 = [("dense1", 1, 3, "leaky_relu"), ("dense2", 3, 1, "identity")]


MLP_241 = [("dense1", 2, 4, "relu"), ("dense2", 4, 1, "identity")]


MLP_RELU = [("dense1", 2, 16, "relu"), ("dense2", 16, 16, "relu"), ("dense3", 16, 3, "softmax")]


MLP_SIGMOID = [("dense1", 2, 16, "sigmoid"), ("dense2", 16, 1, "sigmoid")]


def merge(base: dict, over: Optional[dict]) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def rule_std(fan_in: int, units: int, activation: str) -> float:
    if activation in ("relu", "leaky_relu", "elu", "gelu"):
        return math.sqrt(2.0 / fan_in)
    return math.sqrt(2.0 / (fan_in + units))


def start_record(layers=MLP_131, *, loss=None, optimizer=None, data=None, dtype="float64",
                 total_steps=100, task=None, name="t") -> dict:
    specs = [{"name": n, "fan_in": fi, "units": u, "activation": act, "is_output": i == len(layers) - 1}
             for i, (n, fi, u, act) in enumerate(layers)]
    loss = merge({"kind": "mse", "reduction": "mean", "from_logits": False, "epsilon": 0.0, "l2": 0.0}, loss)
    n_features = layers[0][1]
    classification = loss["kind"] != "mse"
    base_data = {"n_train": 100, "n_val": 0, "n_features": n_features,
                 "n_classes": layers[-1][2] if classification else None,
                 "input_mean": [0.0] * n_features, "input_std": [1.0] * n_features,
                 "input_min": [-2.0] * n_features, "input_max": [2.0] * n_features,
                 "target_mean": None if classification else 0.0, "target_std": None if classification else 1.0,
                 "target_min": None if classification else -2.0, "target_max": None if classification else 2.0}
    return {"type": "start", "schema": 1, "nnprobe": "0.1.0", "name": name, "seed": 0,
            "task": task or ("classification" if classification else "regression"), "dtype": dtype,
            "probes_every": 1, "total_steps": total_steps, "layers": specs, "loss": loss,
            "optimizer": merge({"kind": "sgd", "lr": 0.01, "clip_grad_norm": None}, optimizer),
            "data": merge(base_data, data)}


def layer_stats(spec: dict, over: Optional[dict] = None) -> dict:
    """A healthy per-layer object for this layer spec, with `over` deep-merged in."""
    fan_in, units, act = spec["fan_in"], spec["units"], spec["activation"]
    std = rule_std(fan_in, units, act)
    sat = 0.02 if act in ("sigmoid", "tanh") else None
    healthy = {
        "name": spec["name"],
        "z": {"mean": 0.1, "std": 1.0, "min": -3.0, "max": 3.2, "nan": 0, "posinf": 0, "neginf": 0, "sat_frac": sat},
        "a": {"mean": 0.4, "std": 0.6, "min": 0.0, "max": 3.2, "nan": 0, "posinf": 0, "neginf": 0,
              "zero_frac": 0.3, "dead": 0},
        "gW": {"norm": 0.05, "maxabs": 0.02, "nonfinite": 0, "zero_frac": 0.0},
        "gb": {"norm": 0.01, "maxabs": 0.01, "nonfinite": 0},
        "W": {"norm": std * math.sqrt(fan_in * units), "mean": 0.0, "std": std, "min": -2 * std, "max": 2 * std,
              "pos_frac": 0.5, "nonfinite": 0},
        "b": {"norm": 0.0, "mean": 0.0},
        "update_ratio": 1e-3,
    }
    return merge(healthy, over)


def step_record(start: dict, step: int, *, loss: float = 0.5, grad_norm: float = 0.1, full: bool = True,
                layers: Union[dict[str, dict], list[dict], None] = None, nonfinite=None, loss_in=None,
                **extra) -> dict:
    """`layers`: overrides by layer name (merged into healthy layers), or the record's list of layer objects."""
    rec = {"type": "step", "step": step, "full": full, "loss": loss, "grad_norm": grad_norm,
           "nonfinite": nonfinite, "loss_in": loss_in, **extra}
    if full:
        if isinstance(layers, list):
            rec["layers"] = layers
        else:
            rec["layers"] = [layer_stats(s, (layers or {}).get(s["name"])) for s in start["layers"]]
    return rec


def plain_layer(name: str, *, dead=0, a_min=0.0, a_max=1.0, grad=0.1, ratio=1e-3, nan=0) -> dict:
    """A layer object set from a few numbers: z and a span [a_min, a_max], `nan` of each non-finite, `dead`
    units, both gradient norms `grad`, unit-norm weights, the given update ratio."""
    counts = {"nan": nan, "posinf": 0, "neginf": 0}
    return layer_stats({"name": name, "fan_in": 1, "units": 1, "activation": "identity"}, {
        "z": {"mean": 0.0, "std": 1.0, "min": a_min, "max": a_max, **counts, "sat_frac": None},
        "a": {"mean": 0.2, "std": 0.5, "min": a_min, "max": a_max, **counts, "zero_frac": 0.0, "dead": dead},
        "gW": {"norm": grad, "maxabs": grad, "nonfinite": 0, "zero_frac": 0.0},
        "gb": {"norm": grad, "maxabs": grad, "nonfinite": 0},
        "W": {"norm": 1.0, "mean": 0.0, "std": 0.5, "min": -1.0, "max": 1.0, "pos_frac": 0.5, "nonfinite": 0},
        "b": {"norm": 0.0, "mean": 0.0},
        "update_ratio": ratio,
    })


def healthy_loss(step: int) -> float:
    return 0.05 + 0.95 * math.exp(-step / 40)


def healthy_stream(start: dict, n: int, **kw) -> list[dict]:
    return [step_record(start, s, loss=healthy_loss(s), **kw) for s in range(n)]


def make_config(**sections) -> Config:
    raw = merge({"data": {"source": "affine"}}, sections)
    return Config.model_validate(raw)


def run_suite(records: Iterable[dict], start: dict, config: Optional[Config] = None,
              end: Optional[dict] = END) -> tuple[list[Finding], dict[str, int]]:
    """All findings, and for each code the step of the record at which the suite reported it first fired."""
    suite = DetectorSuite(config or make_config(), start)
    fired: dict[str, int] = {}
    for rec in records:
        for code in suite.observe(rec):
            fired[code] = rec["step"]
    return suite.finish(end), fired


def run_one(code: str, records: Iterable[dict], start: dict, config: Optional[Config] = None,
            settings: Optional[dict] = None, end: Optional[dict] = END) -> tuple[list[Finding], Optional[int]]:
    """One detector's findings and the step of the record where its first_step got set."""
    det = explain(code)(RunContext(start=start, config=config or make_config()), settings)  # loads the catalog
    fired_at = None
    for rec in records:
        det.observe(rec)
        if fired_at is None and det.first_step is not None:
            fired_at = rec["step"]
    return det.static() + det.finish(end), fired_at


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def dead_stream(start: dict, n: int, dead: int = 2, layer: str = "dense1") -> list[dict]:
    return [step_record(start, s, loss=healthy_loss(s), layers={layer: {"a": {"dead": dead}}}) for s in range(n)]


def exploding_to_nan(start: dict) -> list[dict]:
    recs = [step_record(start, s, loss=10.0 ** (2 * s + 1), grad_norm=10.0 ** (3 * s + 2),
                        layers={"dense1": {"W": {"norm": 10.0 ** (s + 1)}, "z": {"max": 10.0 ** (s + 2)}}})
            for s in range(4)]
    recs.append(step_record(start, 4, loss=NAN, grad_norm=NAN,
                            nonfinite={"pass": "forward", "tensor": "pre-activation", "layer": "dense2"},
                            layers={"dense2": {"z": {"nan": 0, "posinf": 2, "neginf": 1}}}))
    recs.append(step_record(start, 5, loss=NAN, grad_norm=NAN,
                            nonfinite={"pass": "forward", "tensor": "pre-activation", "layer": "dense1"}))
    return recs
