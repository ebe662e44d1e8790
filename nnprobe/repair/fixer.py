"""`nnprobe fix` as a use-case: load the config, run the patch chain on an executor, write the fixed config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from nnprobe.config import load_raw, validate_config
from nnprobe.errors import ConfigError
from nnprobe.repair.patches import Patch
from nnprobe.repair.search import (
    DEFAULT_BUDGET, DEFAULT_SEEDS, Attempt, RepairResult, executor_train, search,
)
from nnprobe.repair.yamltext import patch_yaml_text, unified_diff


@dataclass
class FixReport:
    """What `nnprobe fix` prints: the chain's result, the fixed config's text and its diff from the original."""

    config: str
    result: RepairResult
    fixed_text: str
    kept_layout: bool
    diff: str
    written: Optional[str]

    @property
    def exit_status(self) -> int:
        return 0 if self.result.ok else 1

    @property
    def patch(self) -> Patch:
        return self.result.patch

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "config": self.config, "ok": r.ok, "stopped": r.stopped, "fail_on": r.fail_on, "seeds": r.seeds,
            "budget": r.budget, "runs": r.runs_used,
            "control": r.summary(r.control),
            "attempts": [a.to_json() for a in r.attempts],
            "chain": [{"finding": a.finding, "patch": dict(a.candidate.patch), "verdict": a.word,
                       "as_step": a.as_step} for a in r.chain],
            "patch": dict(self.patch), "final": r.summary(r.final),
            "left": [{"code": t.code, "severity": t.severity, "seeds": t.seeds} for t in r.left],
            "fixed_config": self.fixed_text, "layout_kept": self.kept_layout, "written": self.written,
            "diff": self.diff,
        }


def resolved_dict(config) -> dict:
    """A validated Config as the plain dict a run's config.yaml holds (what executor Tasks carry)."""
    return json.loads(config.model_dump_json())


def fix_config(path: Path, *, seeds: int = DEFAULT_SEEDS, budget: int = DEFAULT_BUDGET, fail_on: str = "warning",
               run_tasks: Callable[[list], list], output: Optional[Path] = None,
               on_attempt: Optional[Callable[[Attempt], None]] = None) -> FixReport:
    """Find a config with nothing at or above fail_on by proven patches, and write it to `output` if given."""
    path = Path(path)
    raw, text = load_raw(path)
    if output is not None and output.resolve() == path.resolve():
        raise ConfigError(f"-o {output}: that is the config being fixed; write the fixed config to another file "
                          "and compare them (the report shows the diff).")
    config = validate_config(raw, source=str(path), text=text, base_dir=path.parent, default_name=path.stem)
    base = resolved_dict(config)

    def validate(candidate: dict) -> None:
        validate_config(dict(candidate), source=f"{path} (patched)", base_dir=path.parent, default_name=path.stem)

    train = executor_train(run_tasks, config_dir=str(path.parent.resolve()), source=str(path), fail_on=fail_on)
    result = search(base, train=train, validate=validate, seeds=seeds, budget=budget, fail_on=fail_on,
                    on_attempt=on_attempt)
    patched = patch_yaml_text(text, result.patch) if result.patch else None
    fixed_text = patched.text if patched else text
    target_name = str(output) if output is not None else f"{path.stem}-fixed{path.suffix}"
    written = None
    if output is not None:
        try:
            output.write_text(fixed_text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"-o {output}: cannot write the fixed config ({exc.strerror}); choose another path.") \
                from None
        written = str(output)
    return FixReport(str(path), result, fixed_text, patched.kept_layout if patched else True,
                     unified_diff(text, fixed_text, str(path), target_name), written)


__all__ = ["FixReport", "fix_config", "resolved_dict"]
