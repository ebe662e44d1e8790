"""A finding: one pathology, where and when it first held, the numbers, and the config change that fixes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

SEVERITIES = ("info", "warning", "error")
_RANK = {name: i for i, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """info < warning < error; 'never' ranks above everything so nothing reaches it."""
    return _RANK.get(severity, len(SEVERITIES))


@dataclass
class Finding:
    code: str
    severity: str
    step: Optional[int]
    layer: Optional[str]
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fixes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "step": self.step,
            "layer": self.layer,
            "message": self.message,
            "evidence": self.evidence,
            "fixes": list(self.fixes),
        }


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then earliest step (static findings first), then layer."""
    return sorted(
        findings,
        key=lambda f: (-severity_rank(f.severity), -1 if f.step is None else f.step, f.layer or "", f.code),
    )


def at_or_above(findings: list[Finding], threshold: str) -> list[Finding]:
    if threshold == "never":
        return []
    rank = severity_rank(threshold)
    return [f for f in findings if severity_rank(f.severity) >= rank]
