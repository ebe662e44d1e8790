"""Whether a candidate patch fixed a finding: its K seeded runs against the control's, with the seed spread.

Identical configs trained from different seeds differ, sometimes by several percent of accuracy,
so one run proves nothing. A candidate is judged on the same K seeds as the control, and its
final loss (accuracy, for classification) only counts as worse when it falls outside the range
the control's own seeds span. docs/fix.md states the rules; `judge` is the one place they live.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from nnprobe.findings import Finding, at_or_above, severity_rank

VERDICTS = ("fixed", "not fixed", "worse", "inconclusive")

# Keys whose change rescales or redefines the loss: the final loss is then no longer comparable
# with the control's (a summed loss is n times the mean; standardized targets divide MSE by std^2).
LOSS_SCALE_KEYS = ("loss.kind", "loss.reduction", "loss.epsilon", "loss.l2", "data.normalize_target")

# Two final losses this close are the same result: float noise, not a regression.
RTOL, ATOL = 1e-3, 1e-9
TINY = 1e-300  # a loss of exactly 0 compared by ratio


@dataclass(frozen=True)
class SeedRun:
    """One seeded training as the verdicts read it."""

    seed: int
    status: str
    final_loss: float  # inf when not finite or the run did not complete (a stopped run has no final loss)
    final_accuracy: Optional[float]  # None for regression; 0.0 for a classification run that did not complete
    findings: tuple[Finding, ...]

    @classmethod
    def from_doc(cls, doc: dict[str, Any], seed: int, classification: bool) -> "SeedRun":
        """From train's JSON document (plus final_accuracy), as the executor returns it."""
        completed = doc.get("status") == "completed"
        loss = doc.get("final_loss")
        loss = float(loss) if completed and isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf
        accuracy = doc.get("final_accuracy")
        if classification:
            accuracy = float(accuracy) if completed and accuracy is not None else 0.0
        else:
            accuracy = None
        findings = tuple(Finding.from_dict(f) for f in doc.get("findings") or [])
        return cls(seed, str(doc.get("status")), loss, accuracy, findings)

    def has(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def failing_codes(self, fail_on: str) -> set[str]:
        return {f.code for f in at_or_above(list(self.findings), fail_on)}


@dataclass(frozen=True)
class Spread:
    """Median and range over seeds."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> "Spread":
        values = sorted(values)
        return cls(statistics.median(values), values[0], values[-1])

    def to_json(self) -> dict[str, Optional[float]]:
        return {k: (v if math.isfinite(v) else None) for k, v in
                (("median", self.median), ("min", self.low), ("max", self.high))}

    def __str__(self) -> str:
        def num(x: float) -> str:
            return "diverged" if math.isinf(x) else f"{x:.4g}"
        return num(self.median) if self.low == self.high else f"{num(self.median)} [{num(self.low)}, {num(self.high)}]"


def _gap(a: float, b: float) -> float:
    """a - b, with equal infinities 0 apart (two diverged medians are the same result)."""
    return 0.0 if a == b else a - b


def _log(x: float) -> float:
    return math.log(max(x, TINY)) if math.isfinite(x) else x


def compare(control: Spread, candidate: Spread, higher_is_better: bool = False, log: bool = False) -> str:
    """How a candidate's seeds compare with the control's, the control's own range being the yardstick.

    With `log` the values are compared by ratio (losses: 0.01 against 0.1 is the same step as 0.1
    against 1), so a range of [0.09, 0.27] reads as a factor 3, not as 0.18.

    'better': the median is better than the control's by more than the control's range (max - min);
    'ok': the medians differ by no more than that range; 'worse': the median is worse by more than
    the range and every candidate seed is worse than the control's worst; 'unclear': worse by more
    than the range, but the two ranges overlap.
    """
    if log:
        control = Spread(_log(control.median), _log(control.low), _log(control.high))
        candidate = Spread(_log(candidate.median), _log(candidate.low), _log(candidate.high))
    sign = -1.0 if higher_is_better else 1.0
    spread = _gap(control.high, control.low)
    tolerance = (RTOL if log else RTOL * abs(control.median) + ATOL) if math.isfinite(control.median) else 0.0
    allowed = spread + tolerance
    behind = sign * _gap(candidate.median, control.median)  # > 0: the candidate is worse
    if behind < -allowed:
        return "better"
    if behind <= allowed:
        return "ok"
    worst_control = control.low if higher_is_better else control.high
    best_candidate = candidate.high if higher_is_better else candidate.low
    return "worse" if sign * _gap(best_candidate, worst_control) > tolerance else "unclear"


@dataclass
class Verdict:
    """A candidate's verdict on one finding, with the numbers it rests on."""

    verdict: str
    reason: str
    seeds: int
    seeds_with_finding: int
    control_seeds_with_finding: int
    new_codes: list[str]
    loss: Spread
    control_loss: Spread
    loss_compared: bool
    accuracy: Optional[Spread] = None
    control_accuracy: Optional[Spread] = None
    metrics: str = "ok"  # compare()'s word for the metrics taken together: the worst of loss and accuracy

    @property
    def removes_finding(self) -> bool:
        return self.seeds_with_finding == 0

    @property
    def is_step(self) -> bool:
        """Gone in every seed and no worse: the chain may take it as a step when nothing fixes outright."""
        return self.removes_finding and self.metrics in ("ok", "better")

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "reason": self.reason, "seeds": self.seeds,
            "seeds_with_finding": self.seeds_with_finding,
            "control_seeds_with_finding": self.control_seeds_with_finding, "new_findings": list(self.new_codes),
            "final_loss": self.loss.to_json(), "control_final_loss": self.control_loss.to_json(),
            "loss_compared": self.loss_compared,
            "final_accuracy": self.accuracy.to_json() if self.accuracy else None,
            "control_final_accuracy": self.control_accuracy.to_json() if self.control_accuracy else None,
        }


@dataclass
class _Metrics:
    word: str = "ok"
    notes: list[str] = field(default_factory=list)


def _metrics(control: list[SeedRun], candidate: list[SeedRun], loss_compared: bool) -> tuple[
        _Metrics, Spread, Spread, Optional[Spread], Optional[Spread]]:
    c_loss, k_loss = Spread.of(r.final_loss for r in control), Spread.of(r.final_loss for r in candidate)
    c_acc = k_acc = None
    out = _Metrics()
    words = []
    if loss_compared:
        word = compare(c_loss, k_loss, log=True)
        words.append(word)
        if word in ("worse", "unclear"):
            out.notes.append("final loss")
    if all(r.final_accuracy is not None for r in control + candidate):
        c_acc = Spread.of(r.final_accuracy for r in control)
        k_acc = Spread.of(r.final_accuracy for r in candidate)
        word = compare(c_acc, k_acc, higher_is_better=True)
        words.append(word)
        if word in ("worse", "unclear"):
            out.notes.append("final accuracy")
    out.word = ("worse" if "worse" in words else "unclear" if "unclear" in words
                else "better" if "better" in words else "ok")
    return out, c_loss, k_loss, c_acc, k_acc


def judge(code: str, control: list[SeedRun], candidate: list[SeedRun], fail_on: str,
          loss_compared: bool = True) -> Verdict:
    """The verdict of a candidate (its runs, seed for seed the control's) on the finding `code`.

    - not fixed: the finding is still there in some seed, or a finding at or above fail_on that no
      control seed had took its place;
    - worse: gone in every seed, but the final loss / accuracy of every seed is beyond the control's worst;
    - inconclusive: gone in every seed, but the median is beyond the control's range while the ranges
      overlap, or the control itself showed the finding in only some seeds (its absence proves little);
    - fixed: gone in every seed, nothing new at or above fail_on, and no worse than the control's spread.
    """
    k = len(candidate)
    with_finding = sum(r.has(code) for r in candidate)
    control_with = sum(r.has(code) for r in control)
    before = set().union(*(r.codes() for r in control))
    new = sorted(set().union(*(r.failing_codes(fail_on) for r in candidate)) - before,
                 key=lambda c: (-_rank_of(c, candidate), c))
    metrics, c_loss, k_loss, c_acc, k_acc = _metrics(control, candidate, loss_compared)

    def verdict(word: str, reason: str) -> Verdict:
        return Verdict(word, reason, k, with_finding, control_with, new, k_loss, c_loss, loss_compared, k_acc,
                       c_acc, metrics.word)

    numbers = " and ".join(metrics.notes)
    if with_finding:
        return verdict("not fixed", f"{code} still found in {with_finding} of {k} seeds")
    if metrics.word == "worse":
        return verdict("worse", f"{code} gone, but every seed's {numbers} is worse than the control's worst, "
                                "by more than the control's seed spread")
    if new:
        return verdict("not fixed", f"{code} gone, but replaced by {', '.join(new)} (at or above {fail_on}, "
                                    "in no control seed)")
    if metrics.word == "unclear":
        return verdict("inconclusive", f"{code} gone, but its median {numbers} is worse than the control's by more "
                                       "than the control's seed spread, while some seeds are not")
    if control_with < len(control):
        return verdict("inconclusive", f"{code} gone, but the control itself showed it in only {control_with} of "
                                       f"{len(control)} seeds")
    return verdict("fixed", f"{code} gone in all {k} seeds, nothing new at or above {fail_on}, no worse than the "
                            "control's spread")


def _rank_of(code: str, runs: list[SeedRun]) -> int:
    return max((severity_rank(f.severity) for r in runs for f in r.findings if f.code == code), default=-1)


def judge_tuning(control: list[SeedRun], candidate: list[SeedRun], fail_on: str) -> Verdict:
    """After the fixes: 'better' when nothing at or above fail_on appears in any seed and the final loss
    (or accuracy) beats the control's by more than the control's seed spread, the other no worse."""
    return _judge_change(control, candidate, fail_on, True, ("better",), ("better", "not better"))


def judge_pruning(control: list[SeedRun], candidate: list[SeedRun], fail_on: str, loss_compared: bool) -> Verdict:
    """The repaired config without one accepted patch: 'not needed' when nothing at or above fail_on
    comes back in any seed and the metrics are no worse than with it, beyond its seed spread."""
    return _judge_change(control, candidate, fail_on, loss_compared, ("ok", "better"), ("not needed", "needed"))


def _judge_change(control: list[SeedRun], candidate: list[SeedRun], fail_on: str, loss_compared: bool,
                  good: tuple[str, ...], words: tuple[str, str]) -> Verdict:
    failing = sorted(set().union(*(r.failing_codes(fail_on) for r in candidate)))
    metrics, c_loss, k_loss, c_acc, k_acc = _metrics(control, candidate, loss_compared)
    yes, no = words

    def verdict(word: str, reason: str) -> Verdict:
        return Verdict(word, reason, len(candidate), 0, 0, failing, k_loss, c_loss, loss_compared, k_acc, c_acc,
                       metrics.word)

    if failing:
        return verdict(no, f"brings back {', '.join(failing)}")
    if metrics.word in good:
        return verdict(yes, f"nothing at or above {fail_on}, " + (
            "better than the control by more than its seed spread" if metrics.word == "better"
            else "no worse than the control beyond its seed spread"))
    return verdict(no, "not better than the control beyond its seed spread" if "better" in good
                   else f"worse than the control beyond its seed spread ({metrics.word})")


def loss_comparable(patch_keys: Iterable[str]) -> bool:
    """Whether final losses stay comparable after a patch touching these keys."""
    return not any(key in LOSS_SCALE_KEYS for key in patch_keys)


__all__ = ["LOSS_SCALE_KEYS", "SeedRun", "Spread", "VERDICTS", "Verdict", "compare", "judge", "judge_pruning",
           "judge_tuning", "loss_comparable"]
