"""`nnprobe check`: train many configs, each in its own process and fresh run directory, and judge them together.

A config's verdict is `pass` (no finding at or above --fail-on, every `expect:` met), `fail`,
`invalid` (the config, its data or its user activation is unusable: the message says why) or
`error` (training crashed). The exit status is 2 when any config is invalid or errored, else 1
when any failed, else 0; every config is run whatever happens to the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

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


def _is_failing(result, fail_on: str) -> bool:
    from nnprobe.findings import at_or_above

    if fail_on == "never":
        return False
    return bool(at_or_above(result.findings, fail_on)) or any(not c.ok for c in result.checks)


def _unusable(config: str, verdict: str, message: str, classname: str = "nnprobe.config") -> Outcome:
    """An invalid or crashed config, with its JUnit error case and annotation."""
    import xml.etree.ElementTree as ET

    from nnprobe.reports.junit import annotation, error_suite

    title = "nnprobe invalid config" if verdict == "invalid" else "nnprobe crashed"
    return Outcome(config, verdict, message,
                   junit=ET.tostring(error_suite(config, message, classname=classname), encoding="unicode"),
                   annotations=[annotation("error", title, message, file=config)])


def run_one(config: str, out_root: str, fail_on: str = "error") -> Outcome:
    """Load, check and train one config into a fresh run directory under out_root (runs in a worker process)."""
    import xml.etree.ElementTree as ET

    from nnprobe.app import train_config
    from nnprobe.config import load_config
    from nnprobe.errors import NnprobeError
    from nnprobe.reports.junit import github_annotations, junit_suite

    path = Path(config)
    try:
        cfg = load_config(path)
        result = train_config(cfg, config_path=path, runs_root=Path(out_root))
    except NnprobeError as exc:
        return _unusable(config, "invalid", str(exc))
    except (Exception, KeyboardInterrupt) as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        at = f" ({Path(where[0].filename).name}, line {where[0].lineno})" if where else ""
        msg = (f"{config}: training stopped with {type(exc).__name__}: {exc}{at}. This is a bug in nnprobe (or "
               "in user code it ran); `nnprobe train` on this config shows the traceback.")
        if isinstance(exc, KeyboardInterrupt):
            msg = f"{config}: interrupted."
        return _unusable(config, "error", msg, classname="nnprobe.train")
    if result.status == "interrupted":
        verdict, message = "error", f"{config}: training was interrupted at step {result.steps}."
    else:
        verdict, message = ("fail" if _is_failing(result, fail_on) else "pass"), ""
    doc = result.to_json()
    return Outcome(
        config=config, verdict=verdict, message=message, name=cfg.name, run_dir=result.run_dir,
        status=result.status, steps=result.steps, total_steps=result.start.get("total_steps"),
        final_loss=doc["final_loss"], findings=doc["findings"], checks=doc.get("checks", []),
        junit=ET.tostring(junit_suite(result, fail_on=fail_on, name=f"nnprobe {config}"), encoding="unicode"),
        annotations=github_annotations(result, config_file=config),
    )


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
        }

    def junit(self) -> str:
        import xml.etree.ElementTree as ET

        from nnprobe.reports.junit import render_suites

        return render_suites(ET.fromstring(o.junit) for o in self.outcomes if o.junit)

    def annotations(self) -> list[str]:
        return [line for o in self.outcomes for line in o.annotations]


@contextmanager
def _one_blas_thread_per_worker(workers: int) -> Iterator[None]:
    """Several workers each spinning a multi-threaded BLAS on the same cores slow every step tens of times."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    if workers > 1:
        for n in names:
            os.environ.setdefault(n, "1")
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def run_check(paths: Iterable[Path | str], *, jobs: Optional[int] = None, fail_on: str = "error",
              out_root: Path | str = "runs", on_done: Optional[Callable[[Outcome], None]] = None) -> CheckReport:
    """Run every config in its own process (at most `jobs` at a time, default the CPU count), in input order."""
    configs, invalid = collect_configs(paths)
    results: dict[int, Outcome] = {}
    if configs:
        workers = max(1, min(jobs or os.cpu_count() or 1, len(configs)))
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded parent; user code stays in its worker
        with _one_blas_thread_per_worker(workers), cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(run_one, c, str(out_root), fail_on): i for i, c in enumerate(configs)}
            try:
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    try:
                        outcome = fut.result()
                    except Exception as exc:  # the worker process died (os._exit, a crash in native code)
                        outcome = _unusable(configs[i], "error",
                                            f"{configs[i]}: the worker process running it died "
                                            f"({type(exc).__name__}: {exc}).", classname="nnprobe.train")
                    results[i] = outcome
                    if on_done is not None:
                        on_done(outcome)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    outcomes = [results[i] for i in range(len(configs))] + invalid
    return CheckReport(outcomes, fail_on)


__all__ = ["CheckReport", "Outcome", "collect_configs", "run_check", "run_one"]
