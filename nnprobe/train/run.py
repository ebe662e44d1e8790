"""One training run: data, trainer, run directory, log, live detectors, and the analysed result."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nnprobe.config import Config, dump_config
from nnprobe.data import load_dataset
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.diagnose.expectations import evaluate_expectations
from nnprobe.diagnose.observers import RecordObservers
from nnprobe.result import RunResult
from nnprobe.rngs import data_rng
from nnprobe.train.loop import Trainer
from nnprobe.train.rundir import metadata, new_run_dir, now, write_json
from nnprobe.train.runlog import LogWriter
from nnprobe.train.signals import StopFlag, catch_signals

ProgressFn = Callable[[int, int, float], None]


def train(config: Config, out_dir: Optional[Path] = None, *, progress: Optional[ProgressFn] = None,
          config_path: Optional[Path] = None, runs_root: Path = Path("runs"),
          hidden_activation=None, user_code: Optional[list[dict]] = None) -> RunResult:
    """Train one config into a fresh run directory and return the analysed result."""
    data = load_dataset(config.data, config.task, data_rng(config.seed))
    trainer = Trainer(config, data, hidden_activation)
    run_dir = new_run_dir(config, out_dir, runs_root)
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    meta = metadata(config, config_path, user_code or [])
    write_json(run_dir / "meta.json", meta)

    start = trainer.start_record()
    suite = DetectorSuite(config, start)
    digest = Digest(start)
    stop_codes = set(config.stop_on)
    observers = RecordObservers(suite, digest, stop_codes)
    flag = StopFlag()
    status, stopped_by, steps_done, last_loss = "completed", None, 0, None
    t0 = time.perf_counter()
    writer = LogWriter(run_dir / "steps.jsonl")
    try:
        with catch_signals(flag), np.errstate(all="ignore"):
            writer.write(start)
            fired_static = stop_codes & {f.code for f in suite.static_findings()}
            if fired_static:
                status, stopped_by = "diverged", sorted(fired_static)[0]
            batches = trainer.batches()
            for step in range(trainer.total_steps if status == "completed" else 0):
                record = trainer.step(step, next(batches))
                writer.write(record)
                steps_done, last_loss = step + 1, record["loss"]
                newly = observers.observe(record)
                if progress is not None:
                    progress(step + 1, trainer.total_steps, last_loss)
                if newly:
                    status, stopped_by = "diverged", newly[0]
                    break
                if flag.signal is not None:
                    status = "interrupted"
                    break
            end = {"type": "end", "status": status, "steps": steps_done,
                   "final_loss": last_loss if last_loss is not None and math.isfinite(last_loss) else None,
                   "stopped_by": stopped_by}
            writer.write(end)
    except BaseException:
        # a bug or an interrupt outside a step: keep every record written so far and say how it ended
        status = "interrupted" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "failed"
        meta.update(status=status, ended=now(), duration_s=round(time.perf_counter() - t0, 3), steps=steps_done)
        write_json(run_dir / "meta.json", meta)
        writer.write({"type": "end", "status": status, "steps": steps_done, "final_loss": None, "stopped_by": None})
        raise
    finally:
        writer.close()
    observers.flush()
    duration = time.perf_counter() - t0
    digest.finish(end)
    findings = suite.finish(end)
    result = RunResult(
        run_dir=str(run_dir), status=status, steps=steps_done, final_loss=end["final_loss"], findings=findings,
        start=start, digest=digest, stopped_by=stopped_by, max_grad_norm=digest.max_grad_norm,
        detector_codes=suite.watching_codes(),
    )
    result.checks = evaluate_expectations(config, result)
    meta.update(status=status, ended=now(), duration_s=round(duration, 3), steps=steps_done,
                step_time_ms=round(1000 * duration / max(steps_done, 1), 4), interrupted_by=flag.signal)
    write_json(run_dir / "meta.json", meta)
    result.meta = meta
    write_json(run_dir / "findings.json", result.to_json())
    return result
