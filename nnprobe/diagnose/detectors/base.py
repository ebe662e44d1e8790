"""The detector contract: a small stateful object fed the step records in order.

A detector never looks at arrays, only at records (dicts as they are in the JSON Lines log),
so `train` (live) and `diagnose` (offline) run the very same code and agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from nnprobe.findings import Finding


@dataclass(frozen=True)
class Threshold:
    """A tunable number with the reason for its default (shown by `nnprobe explain`)."""

    default: float
    doc: str


@dataclass(frozen=True)
class Explanation:
    meaning: str
    causes: list[str]
    fixes: list[str]
    references: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What every detector may read besides the records: the start record and the resolved config."""

    start: dict[str, Any]
    config: Any  # nnprobe.config.Config

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.start["layers"]


class Detector:
    code: ClassVar[str]
    severity: ClassVar[str]
    summary: ClassVar[str]
    thresholds: ClassVar[dict[str, Threshold]] = {}
    explanation: ClassVar[Explanation]

    def __init__(self, context: RunContext, settings: Optional[dict[str, Any]] = None) -> None:
        settings = dict(settings or {})
        self.context = context
        self.severity_level = settings.pop("severity", None) or self.severity
        settings.pop("enabled", None)
        self.t = {name: float(settings.get(name, th.default)) for name, th in self.thresholds.items()}
        self.first_step: Optional[int] = None

    def static(self) -> list[Finding]:
        """Findings that follow from the config and start record alone (before any step)."""
        return []

    def observe(self, record: dict[str, Any]) -> None:
        """Consume one step record; set self.first_step the first time the finding holds."""

    def finish(self, end: Optional[dict[str, Any]]) -> list[Finding]:
        """The dynamic findings, at most one per layer, each with its first step and how long it held."""
        return []

    def finding(self, *, step: Optional[int], layer: Optional[str], message: str,
                evidence: dict[str, Any], fixes: list[str]) -> Finding:
        return Finding(self.code, self.severity_level, step, layer, message, evidence, fixes)


#: every detector class by its finding code; the detector modules fill it as they are imported
REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: add a detector to REGISTRY (it lives here, beside the contract, so that detector
    modules import nothing from the package that imports them)."""
    REGISTRY[cls.code] = cls
    return cls
