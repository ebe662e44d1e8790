"""One training run: data, trainer, run directory, log, live detectors, and the analysed result."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nnprobe.config import Config, dump_config
from nnprobe.data import load_dataset
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.diagnose.observers import RecordObservers
from nnprobe.errors import DataError
from nnprobe.footprint import check_data_footprint
from nnprobe.result import RunResult
from nnprobe.rngs import data_rng
from nnprobe.train.loop import Trainer
from nnprobe.train.recorded import analysed_result, end_record
from nnprobe.train.rundir import metadata, new_run_dir, now, write_json
from nnprobe.train.runlog import LogWriter
from nnprobe.train.signals import StopFlag, catch_signals
from nnprobe.train.write_errors import could_not_write, is_write_error, record_failure

ProgressFn = Callable[[int, int, float], None]


def load_data(config: Config, source: str):
    """The config's data, from its seed, with data problems named after the config; then the memory check."""
    try:
        data = load_dataset(config.data, config.task, data_rng(config.seed))
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    check_data_footprint(config, data, source=source)
    return data


def train(config: Config, out_dir: Optional[Path] = None, *, progress: Optional[ProgressFn] = None,
          config_path: Optional[Path] = None, runs_root: Path = Path("runs"),
          hidden_activation=None, user_code: Optional[list[dict]] = None) -> RunResult:
    """Train one config into a fresh run directory and return the analysed result.

    SIGINT and SIGTERM are caught from before the run directory is made until its last file is
    written, so a signal never leaves a half-made directory: the run stops at the next step
    boundary with status `interrupted`. A failed write (a full disk, a file-size limit, a
    read-only directory) ends in a RunDirError after recording what it can.
    """
    data = load_data(config, str(config_path) if config_path is not None else f"config {config.name!r}")
    trainer = Trainer(config, data, hidden_activation)
    flag = StopFlag()
    with catch_signals(flag):
        run_dir = new_run_dir(config, out_dir, runs_root)
        meta = metadata(config, config_path, user_code or [])
        writer: Optional[LogWriter] = None
        try:
            (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
            write_json(run_dir / "meta.json", meta)
            writer = LogWriter(run_dir / "steps.jsonl")
            return _record(config, trainer, run_dir, meta, writer, flag, progress)
        except OSError as exc:
            if writer is not None and not is_write_error(exc):
                raise  # not a write that failed (user code, say): _record has ended the run as failed
            written = writer.steps_written if writer is not None else 0
            record_failure(run_dir, meta, writer, written, f"{exc.strerror or exc}")
            raise could_not_write(run_dir, exc, written, "choose a writable directory with --out") from None


def _end_after_exception(writer: LogWriter, run_dir: Path, meta: dict, steps_done: int, t0: float) -> None:
    """A bug or an interrupt outside the maths: keep every record written so far and say how it ended."""
    status = "interrupted" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "failed"
    meta.update(status=status, ended=now(), duration_s=round(time.perf_counter() - t0, 3), steps=steps_done)
    try:
        writer.write({"type": "end", "status": status, "steps": steps_done, "final_loss": None, "stopped_by": None})
        writer.close()
        write_json(run_dir / "meta.json", meta)
    except OSError:
        pass


def _record(config: Config, trainer: Trainer, run_dir: Path, meta: dict, writer: LogWriter, flag: StopFlag,
            progress: Optional[ProgressFn]) -> RunResult:
    """The training loop with its live detectors, then the end record, meta.json and findings.json."""
    start = trainer.start_record()
    suite = DetectorSuite(config, start)
    digest = Digest(start)
    stop_codes = set(config.stop_on)
    observers = RecordObservers(suite, digest, stop_codes)
    status, stopped_by, steps_done, last_loss = "completed", None, 0, None
    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"):
            writer.write(start)
            fired_static = stop_codes & {f.code for f in suite.static_findings()}
            if fired_static:
                status, stopped_by = "diverged", sorted(fired_static)[0]
            batches = trainer.batches()
            for step in range(trainer.total_steps if status == "completed" else 0):
                if flag.signal is not None:  # a signal during start-up: no step is started
                    status = "interrupted"
                    break
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
            end = end_record(status, steps_done, last_loss, stopped_by)
            writer.write(end)
            writer.close()
    except OSError as exc:
        if is_write_error(exc):
            raise  # train() records what it can and says what failed
        _end_after_exception(writer, run_dir, meta, steps_done, t0)
        raise
    except BaseException:
        _end_after_exception(writer, run_dir, meta, steps_done, t0)
        raise
    result = analysed_result(run_dir, end, start, suite, digest, observers)
    duration = time.perf_counter() - t0
    meta.update(status=status, ended=now(), duration_s=round(duration, 3), steps=steps_done,
                step_time_ms=round(1000 * duration / max(steps_done, 1), 4), interrupted_by=flag.signal)
    write_json(run_dir / "meta.json", meta)
    result.meta = meta
    write_json(run_dir / "findings.json", result.to_json())
    return result
