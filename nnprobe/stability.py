"""`nnprobe map`: short runs of one config over a grid of values, each cell classified by the detectors.

A cell is `diverged` (non-finite, or stopped by a stop_on code), `unstable` (loss rising, exploding
gradients, oscillation, spikes, probabilities at 0 or 1, updates far too large), `stalled` (dead
units, vanishing gradients, saturation, a stuck loss, updates far too small) or `healthy`; `error`
when a run could not be had. Over several seeds the worst one decides.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from nnprobe.errors import ConfigError, RunDirError
from nnprobe.executor import INVALID, ExecutorError, Task, TaskResult, make_executor
from nnprobe.findings import severity_rank
from nnprobe.grid import Axis

MAX_RUNS = 100_000  # cells x seeds: every cell's config is validated and held before anything trains

# worst first: a cell over several seeds takes the first of these that any seed reached
CLASSES = ("error", "diverged", "unstable", "stalled", "healthy")
LETTERS = {"error": "E", "diverged": "D", "unstable": "U", "stalled": "S", "healthy": "H"}
MEANINGS = {
    "diverged": "non-finite values, or stopped by a stop_on finding",
    "unstable": "loss rising or oscillating, exploding gradients, spikes, log(0), updates far too large",
    "stalled": "dead or saturated units, vanishing gradients, a stuck loss, updates far too small",
    "healthy": "no finding at or above warning",
    "error": "no result: invalid data or user code, a crash, a dead worker, or cancelled",
}

# which class a finding at or above warning puts a run in (every detector code is here, in
# UPDATE_RATIO_CLASS or in NOT_DECIDING; a drift test keeps it so)
CODE_CLASS = {
    "nonfinite": "diverged",
    "loss-divergence": "unstable",
    "exploding-gradients": "unstable",
    "loss-oscillation": "unstable",
    "loss-spike": "unstable",
    "log-zero": "unstable",
    "dead-relu": "stalled",
    "vanishing-gradients": "stalled",
    "saturated-activations": "stalled",
    "loss-plateau": "stalled",
}
# large-update-ratio says which way: far above the rule of thumb is unstable, far below is stalled
UPDATE_RATIO_CLASS = {"high": "unstable", "low": "stalled"}
# a stuck loss is a stall whatever its severity (loss-plateau is info by default)
ANY_SEVERITY = frozenset({"loss-plateau"})
# facts about the config and its data, the same before any step: listed by `train`, never a cell's class
NOT_DECIDING = frozenset({"output-loss-mismatch", "unnormalized-inputs", "poor-init", "gradient-mismatch"})


def worst(classes) -> str:
    return min(classes, key=CLASSES.index)


def _finding_class(f: dict) -> Optional[str]:
    if f["code"] not in ANY_SEVERITY and severity_rank(f["severity"]) < severity_rank("warning"):
        return None
    if f["code"] == "large-update-ratio":
        return UPDATE_RATIO_CLASS.get((f.get("evidence") or {}).get("direction"))
    return CODE_CLASS.get(f["code"])


def classify(doc: dict) -> tuple[str, list[str]]:
    """A finished run's class and the finding codes behind it."""
    by_class: dict[str, list[str]] = {}
    for f in doc["findings"]:
        cls = _finding_class(f)
        if cls is not None and f["code"] not in by_class.setdefault(cls, []):
            by_class[cls].append(f["code"])
    if doc["status"] == "diverged" or doc["final_loss"] is None:
        codes = by_class.get("diverged", [])
        stopped = doc.get("stopped_by")
        return "diverged", sorted(set(codes) | ({stopped} if stopped else set()))
    if not by_class:
        return "healthy", []
    cls = worst(by_class)
    return cls, sorted(by_class[cls])


@dataclass
class SeedRun:
    """One seed of one cell."""

    seed: int
    cls: str
    final_loss: Optional[float] = None
    codes: list[str] = field(default_factory=list)
    status: Optional[str] = None
    steps: Optional[int] = None
    run_dir: Optional[str] = None
    error: Optional[str] = None
    reason: Optional[str] = None  # why there is no result (the executor's INVALID, CRASHED, DIED, CANCELLED)

    def to_json(self) -> dict[str, Any]:
        doc = {"seed": self.seed, "class": self.cls, "final_loss": self.final_loss, "codes": self.codes,
               "status": self.status, "steps": self.steps, "run_dir": self.run_dir}
        if self.error:
            doc["error"] = self.error
        return doc


def seed_run(seed: int, result: TaskResult) -> SeedRun:
    if not result.ok:
        doc = result.doc or {}
        return SeedRun(seed, "error", status=doc.get("status"), steps=doc.get("steps"), run_dir=doc.get("run_dir"),
                       error=result.error, reason=result.reason)
    cls, codes = classify(result.doc)
    return SeedRun(seed, cls, result.doc["final_loss"], codes, result.doc["status"], result.doc["steps"],
                   result.doc["run_dir"])


@dataclass
class Cell:
    values: dict[str, Any]
    runs: list[SeedRun]

    @property
    def cls(self) -> str:
        return worst(r.cls for r in self.runs)

    @property
    def deciding(self) -> SeedRun:
        """The first seed that reached the cell's class: its loss is the one shown."""
        return next(r for r in self.runs if r.cls == self.cls)

    @property
    def codes(self) -> list[str]:
        return sorted({c for r in self.runs if r.cls == self.cls for c in r.codes})

    def to_json(self) -> dict[str, Any]:
        return {"values": dict(self.values), "class": self.cls, "final_loss": self.deciding.final_loss,
                "codes": self.codes, "seeds": [r.to_json() for r in self.runs]}


@dataclass
class StabilityMap:
    """The finished map: axes in order, cells in row-major order of the axes (the last axis varies fastest)."""

    config: str
    axes: list[Axis]
    cells: list[Cell]
    steps: Optional[int] = None
    run_root: Optional[str] = None
    interrupted: Optional[str] = None

    def cell(self, *values) -> Cell:
        """The cell at these axis values (in axis order)."""
        for c in self.cells:
            if tuple(c.values[a.key] for a in self.axes) == values:
                return c
        raise KeyError(values)

    def count(self, cls: str) -> int:
        return sum(1 for c in self.cells if c.cls == cls)

    def largest_healthy(self, row_value: Any = None) -> Any:
        """The largest value of the first axis whose cell is healthy (in the row where the second axis is row_value)."""
        first = self.axes[0]
        healthy = [v for v in first.values
                   if self.cell(*((v,) if len(self.axes) == 1 else (v, row_value))).cls == "healthy"]
        if not healthy:
            return None
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in healthy):
            return max(healthy)
        return healthy[-1]

    @property
    def invalid(self) -> Optional[str]:
        """The first message of a run that could not start because its data or user code is unusable."""
        return next((r.error for c in self.cells for r in c.runs if r.reason == INVALID), None)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"config": self.config, "axes": [a.to_json() for a in self.axes],
                               "cells": [c.to_json() for c in self.cells]}
        if self.interrupted:
            doc["interrupted"] = self.interrupted
        return doc


# ---------------------------------------------------------------- planning and running


@dataclass
class MapPlan:
    """What to run: every cell's values and, per cell, one task per seed (validated before anything trains)."""

    config: str
    axes: list[Axis]
    values: list[dict[str, Any]]
    seeds: list[int]
    tasks: list[Task]
    steps: Optional[int]
    run_root: Optional[str]


def _with(raw: dict, key: str, value: Any) -> dict:
    from nnprobe.config import _set_dotted

    out = copy.deepcopy(raw)
    _set_dotted(out, key, value, "--grid")
    return out


def _map_root(out: Path, name: str) -> Path:
    """A fresh folder for this map's run directories: never one that already exists."""
    from nnprobe.train.rundir import fresh_dir

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot create the directory ({exc.strerror}); choose another with --out, "
                          "or --no-runs.") from None
    return fresh_dir(out, f"{name}-map-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}")


def plan_map(config_path: Path, axes: list[Axis], *, seeds: int = 1, overrides: tuple[str, ...] = (),
             steps: Optional[int] = None, out: Optional[Path] = Path("runs"), absolute_paths: bool = False) -> MapPlan:
    """Every cell's config, validated here (a bad key or value is a ConfigError naming the --grid), as tasks."""
    from nnprobe.config import load_config, validate_config

    config_path = Path(config_path)
    base = load_config(config_path, overrides)  # the config itself and --set must be valid on their own
    raw = base.model_dump()  # resolved: every key explicit, data.path absolute, the name settled
    if steps is not None:
        raw["training"].update(steps=steps, epochs=None)
    config_dir = str(config_path.resolve().parent)
    cells = math.prod(len(a.values) for a in axes)
    if cells * seeds > MAX_RUNS:
        raise ConfigError(f"--grid: {cells} cells x {seeds} seed(s) is {cells * seeds} runs; a map holds at most "
                          f"{MAX_RUNS}. Use fewer values (a log range such as 1e-4:1:9log covers four decades).")
    values = [dict(zip([a.key for a in axes], combo)) for combo in itertools.product(*(a.values for a in axes))]
    resolved: list[dict] = []
    for cell_values in values:
        cell_raw = raw
        for key, value in cell_values.items():
            cell_raw = _with(cell_raw, key, value)
        try:
            cfg = validate_config(cell_raw, source=str(config_path), base_dir=config_path.parent)
        except ConfigError as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in cell_values.items())
            raise ConfigError(f"--grid {shown}: this cell's config is invalid: {exc}") from None
        resolved.append(cfg.model_dump())
    seed_list = [base.seed + i for i in range(seeds)]
    root = None
    if out is not None:
        root_path = _map_root(Path(out), base.name)
        root = str(root_path.resolve() if absolute_paths else root_path)
    tasks = []
    for i, cfg_dict in enumerate(resolved):
        for s in seed_list:
            run_dir = None if root is None else str(Path(root) / f"cell{i:03d}-seed{s}")
            tasks.append(Task(key=f"{i}/{s}", config={**cfg_dict, "seed": s}, config_dir=config_dir, out_dir=run_dir,
                              fail_on="never", source=str(config_path)))
    return MapPlan(str(config_path), axes, values, seed_list, tasks, steps, root)


def run_map(plan: MapPlan, *, executor: str = "local", jobs: Optional[int] = None, scheduler: Optional[str] = None,
            on_result: Optional[Callable[[TaskResult], None]] = None) -> StabilityMap:
    """Run every task of the plan on the executor and classify each cell (worst seed first)."""
    try:
        with make_executor(executor, jobs=jobs, scheduler=scheduler) as ex:
            results = ex.run(plan.tasks, on_result=on_result)
            interrupted = ex.interrupted
    except ExecutorError:
        if plan.run_root is not None and not any(Path(plan.run_root).iterdir()):
            Path(plan.run_root).rmdir()  # nothing ran: leave no empty map folder behind
        raise
    by_key = {r.key: r for r in results}
    cells = []
    for i, values in enumerate(plan.values):
        cells.append(Cell(values, [seed_run(s, by_key[f"{i}/{s}"]) for s in plan.seeds]))
    result = StabilityMap(plan.config, plan.axes, cells, plan.steps, plan.run_root, interrupted)
    if plan.run_root is not None:
        import json

        (Path(plan.run_root) / "map.json").write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n",
                                                      encoding="utf-8")
    return result


__all__ = ["CLASSES", "CODE_CLASS", "NOT_DECIDING", "Cell", "LETTERS", "MapPlan", "SeedRun", "StabilityMap", "classify", "plan_map",
           "run_map", "worst"]
