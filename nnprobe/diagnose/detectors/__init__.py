"""The detector registry and the suite that runs them over a record stream."""

from __future__ import annotations

import difflib
from typing import Any, Optional

from nnprobe.diagnose.detectors.base import REGISTRY, Detector, Explanation, RunContext, Threshold, register
from nnprobe.diagnose.skipped import skipped_detectors
from nnprobe.findings import SEVERITIES, Finding, sort_findings


_ordered = False


def _load_all() -> None:
    """Import the detector modules once; each registers its classes. The registry is then put in the
    catalog's order, so that reports do not depend on which module some other import loaded first."""
    global _ordered
    if _ordered:
        return
    from nnprobe.diagnose.detectors import catalog

    rank = {name: i for i, name in enumerate(catalog.MODULES)}
    ordered = sorted(REGISTRY.items(), key=lambda item: rank.get(item[1].__module__, len(rank)))  # stable
    REGISTRY.clear()
    REGISTRY.update(ordered)
    _ordered = True


def all_codes() -> list[str]:
    _load_all()
    return list(REGISTRY)


def _unknown_code(code: str, key: str) -> ValueError:
    hint = difflib.get_close_matches(code, all_codes(), n=1)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ValueError(f"{key}: unknown finding code {code!r}{did}; valid codes: {', '.join(all_codes())}")


def validate_codes(codes: list[str], key: str) -> None:
    for code in codes:
        if code not in all_codes():
            raise _unknown_code(code, key)


def validate_detector_settings(settings: dict[str, dict[str, Any]]) -> None:
    for code, values in settings.items():
        if code not in all_codes():
            raise _unknown_code(code, "detectors")
        if not isinstance(values, dict):
            raise ValueError(f"detectors.{code}: expected a mapping of thresholds, severity or enabled, got {values!r}")
        cls = REGISTRY[code]
        valid = sorted(cls.thresholds) + ["enabled", "severity"]
        for name, value in values.items():
            if name not in valid:
                hint = difflib.get_close_matches(str(name), valid, n=1)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ValueError(f"detectors.{code}.{name}: unknown setting{did}; valid: {', '.join(valid)}")
            if name == "severity" and value not in SEVERITIES:
                raise ValueError(f"detectors.{code}.severity: expected one of {', '.join(SEVERITIES)}, got {value!r}")
            if name == "enabled" and not isinstance(value, bool):
                raise ValueError(f"detectors.{code}.enabled: expected true or false, got {value!r}")
            if name in cls.thresholds and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"detectors.{code}.{name}: expected a number, got {value!r}")


class DetectorSuite:
    """Every enabled, non-ignored detector, fed the same records; the one place findings are assembled."""

    def __init__(self, config: Any, start: dict[str, Any]) -> None:
        _load_all()
        self.context = RunContext(start=start, config=config)
        ignored = set(config.ignore)
        recorded = bool((start or {}).get("recorded"))
        enabled = [code for code, cls in REGISTRY.items()
                   if code not in ignored and config.detectors.get(code, {}).get("enabled", True) is not False
                   and (recorded or not getattr(cls, "recorded_runs_only", False))]
        # a recorded run that was not given what a detector reads skips it, and says so
        self.skipped = skipped_detectors(start, enabled)
        skip = {s.code for s in self.skipped}
        self.detectors: list[Detector] = [REGISTRY[code](self.context, config.detectors.get(code, {}))
                                          for code in enabled if code not in skip]
        self._static = [f for d in self.detectors for f in d.static()]
        self._fired: set[str] = {f.code for f in self._static}

    def static_findings(self) -> list[Finding]:
        return list(self._static)

    def watching_codes(self) -> list[str]:
        """The codes of this suite's detectors that watch a run (gradcheck-only detectors do not)."""
        return [d.code for d in self.detectors if watches_runs(type(d))]

    def observe(self, record: dict[str, Any], detectors: Optional[list[Detector]] = None) -> list[str]:
        """Feed one record to every detector (or to `detectors`, some of them); return the codes that
        first fired at it (drives stop_on)."""
        newly: list[str] = []
        for det in self.detectors if detectors is None else detectors:
            det.observe(record)
            if det.first_step is not None and det.code not in self._fired:
                self._fired.add(det.code)
                newly.append(det.code)
        return newly

    def finish(self, end: Optional[dict[str, Any]] = None) -> list[Finding]:
        found = list(self._static)
        for det in self.detectors:
            found.extend(det.finish(end))
        return sort_findings(found)


def watches_runs(cls: type[Detector]) -> bool:
    """Whether a detector looks at a run at all (its records or its start), not only at gradcheck's report
    (or, for `recorded_runs_only`, at what only a loop nnprobe does not own leaves in its records)."""
    return (not (cls.observe is Detector.observe and cls.static is Detector.static)
            and not getattr(cls, "recorded_runs_only", False))


def explain(code: str) -> type[Detector]:
    """The detector class for a code (its explanation and thresholds), or ValueError with the valid list."""
    _load_all()
    if code not in REGISTRY:
        raise _unknown_code(code, "explain")
    return REGISTRY[code]


__all__ = [
    "REGISTRY", "Detector", "DetectorSuite", "Explanation", "RunContext", "Threshold",
    "all_codes", "explain", "register", "validate_codes", "validate_detector_settings",
]
