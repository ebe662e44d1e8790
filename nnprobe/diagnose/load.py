"""`diagnose`: rebuild a run's result from its directory alone, with the detectors that ran live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from nnprobe.config import Config, load_config
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.errors import ConfigError, RunDirError
from nnprobe.diagnose.expectations import evaluate_expectations
from nnprobe.diagnose.observers import RecordObservers
from nnprobe.result import RunResult
from nnprobe.train.runlog import LogContents, iter_records


def load_run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.exists():
        raise RunDirError(
            f"{run_dir}: not a run directory (no config.yaml). Pass a directory made by `nnprobe train`, "
            "such as one under runs/."
        )
    try:
        return load_config(path, check_memory=False)  # reading a log allocates nothing the config implies
    except ConfigError as exc:
        raise RunDirError(f"{run_dir}: the run's resolved config is unreadable: {exc}") from None


#: what config.yaml and the log's start record both state: (key, from the config, from the start record)
_AGREEING: tuple[tuple[str, Callable[[Config], Any], Callable[[dict], Any]], ...] = (
    ("name", lambda c: c.name, lambda s: s.get("name")),
    ("seed", lambda c: c.seed, lambda s: s.get("seed")),
    ("model.hidden", lambda c: list(c.model.hidden), lambda s: [la.get("units") for la in s.get("layers", [])[:-1]]),
    ("model.output", lambda c: c.model.output, lambda s: (s.get("layers") or [{}])[-1].get("activation")),
    ("loss.kind", lambda c: c.loss.kind, lambda s: (s.get("loss") or {}).get("kind")),
    ("optimizer.kind", lambda c: c.optimizer.kind, lambda s: (s.get("optimizer") or {}).get("kind")),
    ("optimizer.lr", lambda c: c.optimizer.lr, lambda s: (s.get("optimizer") or {}).get("lr")),
)


def config_mismatches(config: Config, start: dict) -> list[str]:
    """Keys where config.yaml says something else than the log's start record (an edited or swapped file)."""
    out = []
    # a recorded run's config.yaml states only what the recorder was told (name, loss, schedule): the
    # model, the optimizer and the seed there are defaults, not claims about the loop
    recorded = config.data.source == "recorded"
    for key, from_config, from_start in _AGREEING:
        if recorded and key.startswith(("model.", "optimizer.", "seed")):
            continue
        try:
            ours, logged = from_config(config), from_start(start)
        except (AttributeError, TypeError):  # a start record without the field (an older or partial log)
            continue
        if logged is not None and ours != logged:
            out.append(f"{key}: {ours!r} in config.yaml, {logged!r} in the log")
    return out


def _read_meta(run_dir: Path) -> dict:
    """meta.json as a dict; {} when it is missing or unreadable (a killed run may not have rewritten it)."""
    try:
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def load_run(run_dir: Path | str) -> RunResult:
    """Stream the step log through the detectors and the digest; memory does not grow with its length."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"{run_dir}: no such run directory. `ls runs/` lists the runs made here.")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: is a file, not a run directory.")
    config = load_run_config(run_dir)
    contents = LogContents()

    def observers_for(start: dict) -> RecordObservers:  # the same feeding as `train`; nothing here stops a run
        return RecordObservers(DetectorSuite(config, start), Digest(start), set())

    observers: Optional[RecordObservers] = None
    for record in iter_records(run_dir / "steps.jsonl", contents):
        if observers is None:  # the start record is read by now: it comes before any step record
            observers = observers_for(contents.start)
        observers.observe(record)
    if contents.start is None:
        raise RunDirError(
            f"{run_dir / 'steps.jsonl'}: no readable start record (the first line), so the layers and data "
            "the log describes are unknown. " + ("; ".join(contents.problems[:3]) or "The log is empty.")
        )
    if observers is None:
        observers = observers_for(contents.start)
    observers.flush()
    suite, digest = observers.suite, observers.digest
    end = contents.end
    problems = list(contents.problems)
    mismatches = config_mismatches(config, contents.start)
    if mismatches:
        problems.append("config.yaml does not match the log's start record (edited after the run?): "
                        + "; ".join(mismatches) + "; the findings follow the log, the thresholds config.yaml")
    if end is None:
        status = "interrupted"
        problems.append("no end record: the run was killed before it finished; analysed up to the last whole line")
    else:
        status = end.get("status", "interrupted")
    last = contents.last_step
    final_loss = last.get("loss") if last else None
    if not isinstance(final_loss, (int, float)) or isinstance(final_loss, bool):
        final_loss = None
    digest.finish(end)
    result = RunResult(
        run_dir=str(run_dir), status=status, steps=contents.n_steps, final_loss=final_loss,
        findings=suite.finish(end), start=contents.start, digest=digest, log_problems=problems,
        stopped_by=(end or {}).get("stopped_by"), max_grad_norm=digest.max_grad_norm,
        detector_codes=suite.watching_codes(), meta=_read_meta(run_dir), skipped=list(suite.skipped), config=config,
    )
    result.checks = evaluate_expectations(config, result)
    return result
