"""Map throughput: a 1-3-1 map of 100 cells x 300 steps through the executor, as ratios.

Run `python -m bench.maps [--cells N] [--steps N] [--no-dask]` from the repository root. It prints
cells per second with one worker and with every core, the parallel efficiency (target >= 80%),
the per-cell overhead beyond the training itself (target <= 20% of a cell's training time), and
the same map through a local Dask cluster; the JSON goes to bench/results-maps.json. Each wall-clock
figure is the best of --repeats runs; the overhead is also given in CPU seconds, which a busy
machine distorts least.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnprobe.app import train_config  # noqa: E402
from nnprobe.config import validate_config  # noqa: E402
from nnprobe.grid import parse_grids  # noqa: E402
from nnprobe.stability import plan_map, run_map  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "relu-regression-fixed.yaml"
TARGETS = {"parallel_efficiency": 0.80, "overhead": 0.20}


def plan(cells: int, steps: int):
    return plan_map(CONFIG, parse_grids([f"optimizer.lr=1e-4:1:{cells}log"]), steps=steps, out=None)


def training_only(the_plan) -> float:
    """Seconds to train every cell in this process, one after another: the work a map cannot avoid."""
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, task in enumerate(the_plan.tasks):
            cfg = validate_config(dict(task.config), source=str(CONFIG), base_dir=CONFIG.parent)
            train_config(cfg, out_dir=Path(tmp) / str(i), config_dir=CONFIG.parent)
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the local workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_map(the_plan, **executor) -> float:
    t0 = time.perf_counter()
    m = run_map(the_plan, **executor)
    elapsed = time.perf_counter() - t0
    errors = m.count("error")
    if errors:
        raise SystemExit(f"{errors} cell(s) failed; the benchmark needs every cell to run")
    return elapsed


def dask_map(the_plan, workers: int) -> float:
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster:
        return timed_map(the_plan, executor="dask", scheduler=cluster.scheduler_address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each measurement")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results-maps.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    the_plan = plan(args.cells, args.steps)
    n = len(the_plan.tasks)

    # best of --repeats, the three measurements alternating, so a burst of load elsewhere hits them alike
    train_s = one_s = all_s = train_cpu = one_cpu = math.inf
    for _ in range(args.repeats):
        c0 = cpu_seconds()
        train_s = min(train_s, training_only(the_plan))
        c1 = cpu_seconds()
        one_s = min(one_s, timed_map(the_plan, executor="local", jobs=1))
        c2 = cpu_seconds()
        all_s = min(all_s, timed_map(the_plan, executor="local", jobs=cores))
        train_cpu, one_cpu = min(train_cpu, c1 - c0), min(one_cpu, c2 - c1)
    results = {
        "cells": n, "steps": args.steps, "cores": cores, "repeats": args.repeats,
        "training_only_cells_per_s": n / train_s,
        "local_1_cells_per_s": n / one_s,
        f"local_{cores}_cells_per_s": n / all_s,
        "parallel_efficiency": (one_s / all_s) / cores,
        "overhead": one_s / train_s - 1.0,
        # CPU seconds are what a busy machine moves least: the worker's start-up, validation, pickling, judging
        "overhead_cpu": one_cpu / train_cpu - 1.0,
        "load_average_1min": os.getloadavg()[0],
    }
    if not args.no_dask:
        try:
            results[f"dask_{cores}_cells_per_s"] = n / dask_map(the_plan, cores)
        except ImportError:
            print("dask not installed: skipped (pip install 'nnprobe[dask]')", file=sys.stderr)

    print(f"1-3-1 map, {n} cells x {args.steps} steps, {cores} core(s)")
    for key, value in results.items():
        if key.endswith("_per_s"):
            print(f"  {key:32} {value:8.1f}")
    eff, over = results["parallel_efficiency"], results["overhead"]
    print(f"  {'parallel efficiency':32} {eff:8.0%}   (target >= {TARGETS['parallel_efficiency']:.0%}: "
          f"{'met' if eff >= TARGETS['parallel_efficiency'] else 'NOT met'})")
    print(f"  {'per-cell overhead vs training':32} {over:8.0%}   (target <= {TARGETS['overhead']:.0%}: "
          f"{'met' if over <= TARGETS['overhead'] else 'NOT met'})")
    print(f"  {'  the same in CPU time':32} {results['overhead_cpu']:8.0%}")
    print(f"  {'load average (1 min)':32} {results['load_average_1min']:8.1f}   (on {cores} core(s): above it, "
          "wall-clock ratios measure the other load)")
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
