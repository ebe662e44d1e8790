"""The patch chain: train the control over K seeds, try candidates for the worst finding, keep what is proven.

Pure of I/O except through `train` (one config per seed in, their runs out; `executor_train`
builds it on the shared executor), so the chain's rules are tested with scripted runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from nnprobe.errors import NnprobeError
from nnprobe.findings import severity_rank
from nnprobe.repair.catalogue import PROBABILITY_OUTPUT, PRUNE, TUNE, Situation, repairs_for
from nnprobe.repair.patches import Patch, apply_patch, changes_anything, combine, describe, get_dotted, patch_key
from nnprobe.repair.verdicts import SeedRun, Spread, Verdict, judge, judge_pruning, judge_tuning, loss_comparable

DEFAULT_SEEDS = 3
DEFAULT_BUDGET = 80

# Why the chain stopped.
DONE = "nothing at or above --fail-on is left"
BUDGET = "the budget of runs is spent"
NO_CANDIDATE = "no candidate fixed what is left"


class RepairError(NnprobeError):
    """The control itself cannot be trained: its config or data is unusable, or training crashed."""


@dataclass
class Candidate:
    patch: Patch
    origin: str  # "finding" (the finding's own fix) | "catalogue"
    label: str


@dataclass
class Attempt:
    """One candidate tried on one finding, and what it came to."""

    round: int
    finding: str
    candidate: Candidate
    verdict: Optional[Verdict] = None
    error: Optional[str] = None  # the patched config is invalid, or its runs failed
    accepted: bool = False
    as_step: bool = False  # accepted without fixing outright: it removed the finding and others took its place
    dropped: bool = False  # accepted, then found not needed once later patches were in (docs/fix.md, pruning)

    @property
    def word(self) -> str:
        return self.verdict.verdict if self.verdict is not None else "invalid"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"round": self.round, "finding": self.finding, "patch": dict(self.candidate.patch),
                               "origin": self.candidate.origin, "label": self.candidate.label,
                               "verdict": self.word, "accepted": self.accepted, "as_step": self.as_step,
                               "dropped": self.dropped}
        if self.verdict is not None:
            doc.update(self.verdict.to_json())
        if self.error:
            doc["reason"] = self.error
        return doc


@dataclass
class Target:
    """A finding at or above --fail-on in the current runs: how bad, in how many seeds, how early."""

    code: str
    severity: str
    seeds: int
    step: Optional[int]

    def order(self) -> tuple:
        return (-severity_rank(self.severity), -self.seeds, -1 if self.step is None else self.step, self.code)


def targets(runs: list[SeedRun], fail_on: str) -> list[Target]:
    """The findings to fix, worst first: most severe, then found in the most seeds, then earliest."""
    found: dict[str, Target] = {}
    for run in runs:
        for code in run.failing_codes(fail_on):
            f = [x for x in run.findings if x.code == code]
            severity = max((x.severity for x in f), key=severity_rank)
            steps = [x.step for x in f]
            step = None if None in steps else min(steps)
            t = found.get(code)
            if t is None:
                found[code] = Target(code, severity, 1, step)
            else:
                t.seeds += 1
                t.severity = max(t.severity, severity, key=severity_rank)
                t.step = None if step is None or t.step is None else min(t.step, step)
    return sorted(found.values(), key=Target.order)


def _score(runs: list[SeedRun], fail_on: str) -> tuple[int, int]:
    """How bad a set of runs is: its worst failing severity, then how many (seed, code) pairs fail."""
    ts = targets(runs, fail_on)
    return (max((severity_rank(t.severity) for t in ts), default=-1), sum(t.seeds for t in ts))


def candidates(code: str, config: dict, runs: list[SeedRun]) -> list[Candidate]:
    """The finding's own fixes that change the config (from the first seed that has it), then the catalogue's."""
    out: list[Candidate] = []
    seen: set[tuple] = set()

    def add(patch: Patch, origin: str, label: str) -> None:
        key = patch_key(patch)
        if patch and key not in seen and changes_anything(config, patch):
            seen.add(key)
            out.append(Candidate(dict(patch), origin, label))

    first = next((f for r in runs for f in r.findings if f.code == code), None)
    for fix in first.fixes if first is not None else []:
        if fix.set:
            add(fix.set, "finding", str(fix))
    situation = Situation(config, dict(first.evidence) if first is not None else {})
    for repair, patch in repairs_for(code, situation):
        add(patch, "catalogue", repair.name)
    return out


Validate = Callable[[dict], None]  # raises NnprobeError when a patched config is invalid
# (one config per seed, a label) -> (the runs in that order, or the first failure's message)
Train = Callable[[list[dict], str], tuple[list[SeedRun], Optional[str]]]


@dataclass
class RepairResult:
    """Everything `nnprobe fix` reports: the control, every attempt, the accepted chain and where it ended."""

    seeds: list[int]
    fail_on: str
    budget: int
    runs_used: int
    control: list[SeedRun]
    final: list[SeedRun]
    attempts: list[Attempt]
    stopped: str
    config: dict  # the final resolved config (the original's when nothing was accepted)
    left: list[Target] = field(default_factory=list)

    @property
    def chain(self) -> list[Attempt]:
        return [a for a in self.attempts if a.accepted and not a.dropped]

    @property
    def patch(self) -> Patch:
        return combine(a.candidate.patch for a in self.chain)

    @property
    def ok(self) -> bool:
        return not self.left

    def findings_of(self, runs: list[SeedRun]) -> list[dict[str, Any]]:
        return [{"code": t.code, "severity": t.severity, "seeds": t.seeds, "step": t.step}
                for t in targets(runs, "info")]

    def summary(self, runs: list[SeedRun]) -> dict[str, Any]:
        loss = Spread.of(r.final_loss for r in runs)
        doc: dict[str, Any] = {"seeds": [r.seed for r in runs], "final_loss": loss.to_json(),
                               "findings": self.findings_of(runs)}
        if all(r.final_accuracy is not None for r in runs):
            doc["final_accuracy"] = Spread.of(r.final_accuracy for r in runs).to_json()
        return doc


class _OutOfBudget(Exception):
    """The next candidate's runs would not fit in the budget."""


@dataclass
class _Tried:
    attempt: Attempt
    config: dict
    runs: list[SeedRun]


class _Chain:
    """The chain's state: the current config and its runs, the accepted patches, what was tried, runs spent."""

    def __init__(self, config: dict, train: Train, validate: Validate, seeds: int, budget: int, fail_on: str,
                 on_attempt: Optional[Callable[[Attempt], None]]) -> None:
        base_seed = int(config.get("seed") or 0)
        self.seeds = [base_seed + i for i in range(seeds)]
        self.train, self.validate, self.budget, self.fail_on = train, validate, budget, fail_on
        self.on_attempt = on_attempt
        self.used = 0
        self.attempts: list[Attempt] = []
        self.kept: list[Attempt] = []  # the accepted attempts still in the chain, in order
        self.visited = {patch_key({})}
        self.round = 0
        self.base = self.current = config
        self.runs = self._train(config, "control")
        if self.runs is None:
            raise RepairError(self._error)
        self.control_runs = self.runs

    def _train(self, config: dict, label: str) -> Optional[list[SeedRun]]:
        self.used += len(self.seeds)
        runs, self._error = self.train([{**config, "seed": s} for s in self.seeds], label)
        return None if self._error else runs

    def score(self, runs: list[SeedRun]) -> tuple[int, int]:
        return _score(runs, self.fail_on)

    @property
    def patches(self) -> list[Patch]:
        return [a.candidate.patch for a in self.kept]

    def attempt(self, code: str, cand: Candidate, judge_runs: Callable[[list[SeedRun]], Verdict],
                chain: Optional[list[Patch]] = None) -> Optional[_Tried]:
        """Validate and train one candidate (on top of the current config, or the base config with the
        patches `chain` instead); None when skipped or failed."""
        combined = combine(self.patches + [cand.patch]) if chain is None else combine(chain)
        key = patch_key(combined)
        if key in self.visited:
            return None
        attempt = Attempt(self.round, code, cand)
        patched = apply_patch(self.current, cand.patch) if chain is None else apply_patch(self.base, combined)
        try:
            self.validate(patched)
        except NnprobeError as exc:
            attempt.error = str(exc)
            self.attempts.append(attempt)
            return None
        if self.used + len(self.seeds) > self.budget:
            raise _OutOfBudget
        self.visited.add(key)
        runs = self._train(patched, f"round {self.round}: {describe(cand.patch)}")
        self.attempts.append(attempt)
        if runs is None:
            attempt.error = self._error
        else:
            attempt.verdict = judge_runs(runs)
        if self.on_attempt is not None:
            self.on_attempt(attempt)
        return None if runs is None else _Tried(attempt, patched, runs)

    def accept(self, tried: _Tried, as_step: bool = False) -> None:
        tried.attempt.accepted, tried.attempt.as_step = True, as_step
        self.kept.append(tried.attempt)
        self.current, self.runs = tried.config, tried.runs

    def fix_round(self, code: str) -> bool:
        """Try the finding's candidates; accept the first fixed one, else the best step. Whether one was taken."""
        self.round += 1
        control = self.runs
        step: Optional[_Tried] = None
        try:
            for cand in candidates(code, self.current, control):
                tried = self.attempt(code, cand, lambda runs: judge(code, control, runs, self.fail_on,
                                                                    loss_compared=loss_comparable(cand.patch)))
                if tried is None:
                    continue
                if tried.attempt.verdict.verdict == "fixed":
                    self.accept(tried)
                    return True
                best = min(self.score(control), self.score(step.runs)) if step else self.score(control)
                if tried.attempt.verdict.is_step and self.score(tried.runs) < best:
                    step = tried
        except _OutOfBudget:
            if step is not None:
                self.accept(step, as_step=True)
            raise
        if step is not None:
            self.accept(step, as_step=True)
        return step is not None

    def prune_round(self) -> None:
        """Try the repaired config without each accepted patch but the last, earliest first: a patch taken
        before the real causes were fixed (clipping an explosion that standardized data then prevents)
        is dropped when nothing comes back without it and the metrics are no worse."""
        self.round += 1
        for kept in list(self.kept[:-1]):
            control = self.runs
            patch = kept.candidate.patch
            others = [a.candidate.patch for a in self.kept if a is not kept]
            revert = {key: get_dotted(self.base, key) for key in patch}
            cand = Candidate(revert, "pruning", f"without {describe(patch)}")
            tried = self.attempt(PRUNE, cand, lambda runs: judge_pruning(control, runs, self.fail_on,
                                                                           loss_comparable(patch)), chain=others)
            if tried is not None and tried.attempt.verdict.verdict == "not needed":
                kept.dropped = True
                self.kept.remove(kept)
                self.current, self.runs = tried.config, tried.runs

    def tune_round(self) -> bool:
        """Try the tuning list on the repaired config; accept the first that is better beyond the spread."""
        self.round += 1
        control = self.runs
        for repair, patch in repairs_for(TUNE, Situation(self.current, {})):
            tried = self.attempt(TUNE, Candidate(patch, "tuning", repair.name),
                                 lambda runs: judge_tuning(control, runs, self.fail_on))
            if tried is not None and tried.attempt.verdict.verdict == "better":
                self.accept(tried)
                return True
        return False


def search(config: dict, *, train: Train, validate: Validate, seeds: int = DEFAULT_SEEDS,
           budget: int = DEFAULT_BUDGET, fail_on: str = "warning",
           on_attempt: Optional[Callable[[Attempt], None]] = None) -> RepairResult:
    """Run the control, then the chain: the worst finding's candidates in order until one is proven.

    A `fixed` candidate is taken at once (candidates come in order of preference). When none is, the
    one that removed the finding in every seed without worsening the metrics and left the least
    behind is taken as a step, if it leaves less than there was. A finding nothing removes is set
    aside and the next is tried; the chain ends when nothing at or above fail_on is left, when no
    candidate is left for anything, or when the next candidate would not fit in the budget. Once
    something was fixed and nothing is left, the learning rate is tuned (docs/fix.md) while the
    budget lasts; a healthy config is never changed.
    """
    if seeds < 1 or budget < seeds:
        raise NnprobeError(f"--budget {budget} must be at least --seeds {seeds} (the control alone takes "
                           f"{seeds} runs).")
    chain = _Chain(config, train, validate, seeds, budget, fail_on, on_attempt)
    set_aside: set[str] = set()
    stopped = DONE
    try:
        while True:
            todo = [t for t in targets(chain.runs, fail_on) if t.code not in set_aside]
            if not targets(chain.runs, fail_on):
                break
            if not todo:
                stopped = NO_CANDIDATE
                break
            if chain.fix_round(todo[0].code):
                set_aside.clear()
            else:
                set_aside.add(todo[0].code)
        if stopped == DONE and chain.kept[1:]:
            chain.prune_round()
        while stopped == DONE and chain.kept and chain.tune_round():
            pass
    except _OutOfBudget:
        stopped = BUDGET if targets(chain.runs, fail_on) else DONE
    return RepairResult(chain.seeds, fail_on, budget, chain.used, chain.control_runs,
                        chain.runs, chain.attempts, stopped, chain.current, targets(chain.runs, fail_on))


def executor_train(run_tasks: Callable[[list[Any]], list[Any]], *, config_dir: str, source: Optional[str],
                   fail_on: str) -> Train:
    """A Train that runs the K seeded configs as executor Tasks (runs not kept) and reads their documents."""
    from nnprobe.executor import CANCELLED, Task

    def train(configs: list[dict], label: str) -> tuple[list[SeedRun], Optional[str]]:
        tasks = [Task(key=f"{label} (seed {c['seed']})", config=c, config_dir=config_dir, out_dir=None,
                      fail_on=fail_on, source=source) for c in configs]
        results = run_tasks(tasks)
        for r in results:
            if r.reason == CANCELLED:
                raise RepairError(f"interrupted during {label}; nothing was written.")
            if not r.ok or r.doc is None:
                return [], r.error or f"{r.key}: the run failed"
        classification = get_dotted(configs[0], "loss.kind") in PROBABILITY_OUTPUT
        return [SeedRun.from_doc(r.doc, c["seed"], classification) for r, c in zip(results, configs)], None

    return train


__all__ = ["Attempt", "BUDGET", "Candidate", "DEFAULT_BUDGET", "DEFAULT_SEEDS", "DONE", "NO_CANDIDATE",
           "RepairError", "RepairResult", "Target", "candidates", "executor_train", "search", "targets"]
