"""What a finished analysis hands to the renderers: the SPEC.md summary plus what the reports draw from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from nnprobe.findings import Finding


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
    skipped: list = field(default_factory=list)  # diagnose.skipped.Skipped: detectors a recorded run could not run

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
