"""`nnprobe check`: train many configs on the executor, each in a fresh run directory, and judge them together.

A config's verdict is `pass` (no finding at or above --fail-on, every `expect:` met), `fail`,
`invalid` (the config, its data or its user activation is unusable: the message says why) or
`error` (training crashed). The exit status is 2 when any config is invalid or errored, else 1
when any failed, else 0; every config is run whatever happens to the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from nnprobe.executor import INVALID, Task, TaskResult, make_executor, run_task

CONFIG_SUFFIXES = (".yaml", ".yml")
VERDICTS = ("pass", "fail", "invalid", "error")


@dataclass
class Outcome:
    """What one config came to; plain data, so that it crosses the process boundary."""

    config: str
    verdict: str
    message: str = ""
    name: Optional[str] = None
    run_dir: Optional[str] = None
    status: Optional[str] = None
    steps: Optional[int] = None
    total_steps: Optional[int] = None
    final_loss: Optional[float] = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    junit: str = ""  # this config's <testsuite> element, serialized
    annotations: list[str] = field(default_factory=list)

    @property
    def worst(self) -> Optional[dict[str, Any]]:
        return self.findings[0] if self.findings else None  # findings come most severe first

    @property
    def expectations(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c.get("kind") == "expect"]

    @property
    def expectations_ok(self) -> Optional[bool]:
        exp = self.expectations
        return None if not exp else all(c["ok"] for c in exp)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config, "name": self.name, "verdict": self.verdict, "message": self.message or None,
            "run_dir": self.run_dir, "status": self.status, "steps": self.steps, "total_steps": self.total_steps,
            "final_loss": self.final_loss, "worst_finding": self.worst, "expectations_ok": self.expectations_ok,
            "findings": self.findings, "checks": self.checks,
        }


def _unusable(config: str, verdict: str, message: str, classname: str = "nnprobe.config") -> Outcome:
    """An invalid or crashed config, with its JUnit error case and annotation."""
    import xml.etree.ElementTree as ET

    from nnprobe.reports.junit import annotation, error_suite

    title = "nnprobe invalid config" if verdict == "invalid" else "nnprobe crashed"
    return Outcome(config, verdict, message,
                   junit=ET.tostring(error_suite(config, message, classname=classname), encoding="unicode"),
                   annotations=[annotation("error", title, message, file=config)])


def outcome_of(config: str, result: TaskResult) -> Outcome:
    """A config's verdict from its task's result: pass/fail when it trained, invalid or error when it could not."""
    doc = result.doc
    if doc is None:
        if result.reason == INVALID:
            return _unusable(config, "invalid", result.error or "")
        return _unusable(config, "error", result.error or "", classname="nnprobe.train")
    verdict = "error" if not result.ok else "fail" if doc["failing"] else "pass"  # not ok with a doc: interrupted
    return Outcome(
        config=config, verdict=verdict, message=result.error or "", name=doc["name"], run_dir=doc["run_dir"],
        status=doc["status"], steps=doc["steps"], total_steps=doc["total_steps"], final_loss=doc["final_loss"],
        findings=doc["findings"], checks=doc.get("checks", []), junit=doc.get("junit", ""),
        annotations=doc.get("annotations", []),
    )


def task_for(config: str, out_root: str, fail_on: str = "error") -> Task:
    """Load one config (in this process: an unusable file raises ConfigError) into the task that trains it."""
    from nnprobe.config import load_config

    cfg = load_config(Path(config))
    return Task(key=config, config=cfg.model_dump(), config_dir=str(Path(config).resolve().parent), out_dir=None,
                fail_on=fail_on, runs_root=out_root, source=config, ci_reports=True)


def run_one(config: str, out_root: str, fail_on: str = "error") -> Outcome:
    """Load, check and train one config into a fresh run directory under out_root, in this process."""
    from nnprobe.errors import NnprobeError

    try:
        task = task_for(config, out_root, fail_on)
    except NnprobeError as exc:
        return _unusable(config, "invalid", str(exc))
    return outcome_of(config, run_task(task))


def collect_configs(paths: Iterable[Path | str]) -> tuple[list[str], list[Outcome]]:
    """Expand directories to their *.yaml / *.yml (sorted, not recursive); a path that is neither is an invalid outcome."""
    configs: list[str] = []
    invalid: list[Outcome] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in CONFIG_SUFFIXES and q.is_file())
            if not found:
                invalid.append(_unusable(str(p), "invalid", f"{p}: the directory holds no *.yaml or *.yml config."))
            configs += [str(q) for q in found]
        elif p.is_file():
            configs.append(str(p))
        else:
            invalid.append(_unusable(str(p), "invalid", f"{p}: no such config file or directory."))
    seen: set[str] = set()
    unique = [c for c in configs if not (c in seen or seen.add(c))]
    return unique, invalid


@dataclass
class CheckReport:
    outcomes: list[Outcome]
    fail_on: str = "error"
    interrupted: Optional[str] = None  # "SIGINT" / "SIGTERM" when the check was cut short

    def count(self, verdict: str) -> int:
        return sum(1 for o in self.outcomes if o.verdict == verdict)

    @property
    def exit_status(self) -> int:
        if self.count("invalid") or self.count("error"):
            return 2
        return 1 if self.count("fail") else 0

    def summary(self) -> str:
        parts = [f"{self.count(v)} {'passed' if v == 'pass' else 'failed' if v == 'fail' else v}"
                 for v in VERDICTS if self.count(v) or v in ("pass", "fail")]
        return f"{len(self.outcomes)} config(s): {', '.join(parts)} (--fail-on {self.fail_on})"

    def to_json(self) -> dict[str, Any]:
        return {
            "fail_on": self.fail_on,
            "configs": [o.to_json() for o in self.outcomes],
            "summary": {v: self.count(v) for v in VERDICTS},
            "exit_status": self.exit_status,
            **({"interrupted": self.interrupted} if self.interrupted else {}),
        }

    def junit(self) -> str:
        import xml.etree.ElementTree as ET

        from nnprobe.reports.junit import render_suites

        return render_suites(ET.fromstring(o.junit) for o in self.outcomes if o.junit)

    def annotations(self) -> list[str]:
        return [line for o in self.outcomes for line in o.annotations]


def run_check(paths: Iterable[Path | str], *, jobs: Optional[int] = None, fail_on: str = "error",
              out_root: Path | str = "runs", on_done: Optional[Callable[[Outcome], None]] = None,
              executor: str = "local", scheduler: Optional[str] = None) -> CheckReport:
    """Train every config on the executor (at most `jobs` at a time locally, default the CPU count), in input order.

    A config that cannot be loaded is invalid without reaching a worker; one whose worker dies, or that
    Ctrl-C/SIGTERM cancels, is an error; every other config runs and is judged whatever happens to it.
    """
    from nnprobe.errors import NnprobeError

    configs, invalid = collect_configs(paths)
    outcomes: dict[int, Outcome] = {}
    tasks: list[Task] = []
    index: dict[str, int] = {}
    # on a cluster, run directories are named by absolute (shared) paths
    root = str(out_root) if executor == "local" else str(Path(out_root).resolve())
    for i, config in enumerate(configs):
        try:
            tasks.append(task_for(config, root, fail_on))
            index[config] = i
        except NnprobeError as exc:
            outcomes[i] = _unusable(config, "invalid", str(exc))
            if on_done is not None:
                on_done(outcomes[i])

    def finished(result: TaskResult) -> None:
        outcome = outcome_of(result.key, result)
        outcomes[index[result.key]] = outcome
        if on_done is not None:
            on_done(outcome)

    interrupted = None
    if tasks:
        with make_executor(executor, jobs=jobs, scheduler=scheduler) as ex:
            ex.run(tasks, on_result=finished)
            interrupted = ex.interrupted
    report = CheckReport([outcomes[i] for i in range(len(configs))] + invalid, fail_on)
    report.interrupted = interrupted
    return report


__all__ = ["CheckReport", "Outcome", "collect_configs", "outcome_of", "run_check", "run_one", "task_for"]
