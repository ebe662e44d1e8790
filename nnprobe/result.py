"""What a finished analysis hands to the renderers: the SPEC.md summary plus what the reports draw from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from nnprobe.findings import Finding
from nnprobe.nn.finite_differences import (
    ACT_FLOOR, DEFAULT_TOL, MAX_ENTRIES, PARAM_FLOOR, STEP, ActivationReport, TensorReport, json_number,
)


@dataclass
class Check:
    """One pass/fail check beyond the detectors: an `expect:` line or a baseline comparison."""

    name: str
    ok: bool
    message: str
    kind: str = "expect"  # "expect" | "baseline"


@dataclass
class RunResult:
    run_dir: str
    status: str  # completed | diverged | interrupted | failed
    steps: int
    final_loss: Optional[float]
    findings: list[Finding]
    start: dict[str, Any] = field(default_factory=dict)
    digest: Any = None  # nnprobe.digest.Digest, fed the same records as the detectors
    checks: list[Check] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)  # lines diagnose skipped, and why
    stopped_by: Optional[str] = None
    max_grad_norm: Optional[float] = None  # largest finite global gradient norm of the run
    #: the codes whose detectors watched this run (None: not known, e.g. a result built by hand)
    detector_codes: Optional[list[str]] = None
    #: the run's metadata (meta.json): timings, the config file as given, ... so renderers read no files
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # diagnose.skipped.Skipped: detectors a recorded run could not run
    #: the run's resolved config (nnprobe.config.Config): what `--baseline` compares, without reading config.yaml
    config: Any = None

    def to_json(self) -> dict[str, Any]:
        """The document `--format json` prints, identical for train and diagnose."""
        loss = self.final_loss if self.final_loss is not None and math.isfinite(self.final_loss) else None
        doc: dict[str, Any] = {
            "run_dir": self.run_dir,
            "status": self.status,
            "steps": self.steps,
            "final_loss": loss,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.checks:
            doc["checks"] = [{"name": c.name, "kind": c.kind, "ok": c.ok, "message": c.message} for c in self.checks]
        if self.log_problems:
            doc["log_problems"] = list(self.log_problems)
        if self.skipped:
            doc["skipped"] = [s.to_dict() for s in self.skipped]
        return doc


@dataclass
class GradcheckReport:
    """What `nnprobe gradcheck` found, complete: the renderers (terminal, JSON) only read it."""

    config: str
    name: str
    batch_size: int
    loss: Optional[float]
    tensors: list[TensorReport]
    activations: list[ActivationReport]
    findings: list[Finding]
    layer_activations: dict[str, str] = field(default_factory=dict)
    user_code: list[dict] = field(default_factory=list)
    floor: float = PARAM_FLOOR
    tolerance: float = DEFAULT_TOL

    @property
    def ok(self) -> bool:
        return not self.findings

    def layer_rows(self) -> list[tuple[str, Optional[TensorReport], Optional[TensorReport]]]:
        rows: dict[str, dict[str, TensorReport]] = {}
        for t in self.tensors:
            rows.setdefault(t.layer, {})[t.tensor] = t
        return [(name, r.get("W"), r.get("b")) for name, r in rows.items()]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "name": self.name,
            "status": "passed" if self.ok else "failed",
            "batch_size": self.batch_size,
            "dtype": "float64",
            "loss": json_number(self.loss),
            "tolerance": {"relative": self.tolerance, "floor": self.floor, "activation_floor": ACT_FLOOR, "step": STEP,
                          "max_entries_per_tensor": MAX_ENTRIES},
            "layers": [
                {"layer": name, "activation": self.layer_activations.get(name),
                 "W": w.to_dict() if w else None, "b": b.to_dict() if b else None}
                for name, w, b in self.layer_rows()
            ],
            "activations": [a.to_dict() for a in self.activations],
            "findings": [f.to_dict() for f in self.findings],
            "user_code": list(self.user_code),
        }
