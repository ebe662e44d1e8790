"""A finding: one pathology, where and when it first held, the numbers, and the config change that fixes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import yaml

SEVERITIES = ("info", "warning", "error")
_RANK = {name: i for i, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """info < warning < error; 'never' ranks above everything so nothing reaches it."""
    return _RANK.get(severity, len(SEVERITIES))


class Fix(str):
    """One fix of a finding: its advice as text (what every renderer prints), and as data the config
    change it proposes (dotted key -> value), or None when the advice is not a config change.

    A str so that code and run directories from before fixes carried data keep working unchanged.
    """

    set: Optional[dict[str, Any]]

    def __new__(cls, text: str, set: Optional[dict[str, Any]] = None) -> "Fix":  # noqa: A002  SPEC's key
        fix = super().__new__(cls, text)
        fix.set = dict(set) if set else None
        return fix

    def __reduce__(self):
        return (Fix, (str(self), self.set))

    @property
    def text(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        return {"text": str(self), "set": dict(self.set) if self.set else None}

    @property
    def overrides(self) -> str:
        """The change as command-line overrides ('--set data.normalize=standardize'), '' for advice."""
        return " ".join(f"--set {key}={yaml_scalar(value)}" for key, value in (self.set or {}).items())

    def shown(self) -> str:
        """The text, then the overrides that try it: what reports print."""
        return f"{self} [{self.overrides}]" if self.set else str(self)

    @classmethod
    def of(cls, item: Any) -> "Fix":
        """A Fix from a Fix, a {"text", "set"} document, or a plain string (text only, as older runs saved it)."""
        if isinstance(item, Fix):
            return item
        if isinstance(item, dict):
            change = item.get("set")
            return cls(str(item.get("text") or ""), change if isinstance(change, dict) else None)
        return cls(str(item))


def yaml_scalar(value: Any) -> str:
    """A config value as YAML reads it back: true, null, 0.0001, 1.0e-05, standardize, "a: b"."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value and "#" not in value and ": " not in value
        except yaml.YAMLError:
            plain = False
        return value if plain and value.strip() == value and value else json.dumps(value)
    return json.dumps(value)


def change(values: dict[str, Any], why: str) -> Fix:
    """A config-change fix: its text ('key: value, key: value  — why') and its data say the same thing."""
    keys = ", ".join(f"{key}: {yaml_scalar(value)}" for key, value in values.items())
    return Fix(f"{keys}  — {why}" if why else keys, values)


@dataclass
class Finding:
    code: str
    severity: str
    step: Optional[int]
    layer: Optional[str]
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fixes: list[Fix] = field(default_factory=list)

    def __setattr__(self, name: str, value: Any) -> None:
        # every way fixes get set (the constructor, gradcheck's reassignment) ends with Fix items
        super().__setattr__(name, as_fixes(value) if name == "fixes" else value)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Finding":
        """A finding as `to_dict` wrote it, or as findings.json held it when fixes were plain strings."""
        return cls(str(doc.get("code")), str(doc.get("severity")), doc.get("step"), doc.get("layer"),
                   str(doc.get("message") or ""), dict(doc.get("evidence") or {}), list(doc.get("fixes") or []))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "step": self.step,
            "layer": self.layer,
            "message": self.message,
            "evidence": self.evidence,
            "fixes": [f.to_dict() for f in self.fixes],
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


def as_fixes(items: Iterable[Any]) -> list[Fix]:
    return [Fix.of(item) for item in items]
