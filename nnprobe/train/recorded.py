"""A run whose loop nnprobe does not own (nnprobe.Recorder, nnprobe.torch.Probe): the same run directory, log and live detectors as `train`.

The caller hands over the start record once the model is known, then one step record per step;
this object writes them, feeds the detectors (those in `stop_on` at once, the others in batches,
as `train` does), and at the end writes the end record, meta.json and findings.json.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from nnprobe.config import Config, dump_config
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.diagnose.observers import RecordObservers
from nnprobe.result import RunResult
from nnprobe.train.rundir import metadata, new_run_dir, now, write_json
from nnprobe.train.runlog import LogWriter
from nnprobe.train.write_errors import could_not_write, is_write_error, record_failure


def recorded_config(name: str, loss_kind: Optional[str], every: int, stop_on: list[str]) -> Config:
    """The config a recorded run is diagnosed with: what the recorder was told, defaults for the rest."""
    raw = {"name": name, "data": {"source": "recorded"}, "probes": {"every": every}, "stop_on": list(stop_on)}
    if loss_kind is not None:
        raw["loss"] = {"kind": loss_kind}
    return Config.model_validate(raw)


def end_record(status: str, steps: int, last_loss: Optional[float], stopped_by: Optional[str]) -> dict:
    finite = last_loss is not None and math.isfinite(last_loss)
    return {"type": "end", "status": status, "steps": steps, "final_loss": last_loss if finite else None,
            "stopped_by": stopped_by}


def analysed_result(run_dir: Path, end: dict, start: dict, suite: DetectorSuite, digest: Digest,
                    observers: RecordObservers) -> RunResult:
    """Everything held back fed, the end seen: the run's findings and summary (train and recorded runs)."""
    from nnprobe.diagnose.expectations import evaluate_expectations

    observers.flush()
    digest.finish(end)
    result = RunResult(
        run_dir=str(run_dir), status=end["status"], steps=end["steps"], final_loss=end["final_loss"],
        findings=suite.finish(end), start=start, digest=digest, stopped_by=end["stopped_by"],
        max_grad_norm=digest.max_grad_norm, skipped=list(suite.skipped), detector_codes=suite.watching_codes(),
        config=suite.context.config,
    )
    result.checks = evaluate_expectations(suite.context.config, result)
    return result


class RecordedRun:
    """One run directory fed records by someone else's loop.

    A write that fails (a full disk, a file-size limit, a read-only directory) raises RunDirError,
    naming the cause and how many step records are complete, after ending the log and meta.json as
    `failed` where it can; the run records nothing more. `remedy` and `argument` name the run
    directory in the caller's terms (the `out` argument of the Recorder or Probe), not the CLI's.
    """

    def __init__(self, config: Config, out: Path | str, extra_meta: Optional[dict] = None,
                 remedy: str = "choose a writable directory", argument: str = "out") -> None:
        self.config = config
        self.remedy = remedy
        self.run_dir = new_run_dir(config, Path(out), argument=argument)
        self.meta = metadata(config, None, [])
        self.meta.update(extra_meta or {})
        self.writer: Optional[LogWriter] = None
        self.write_failed = False
        with self._writing():
            (self.run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
            write_json(self.run_dir / "meta.json", self.meta)
            self.writer = LogWriter(self.run_dir / "steps.jsonl")
        self.start: Optional[dict] = None
        self.observers: Optional[RecordObservers] = None
        self.steps = 0
        self.last_loss: Optional[float] = None
        self.stopped_by: Optional[str] = None
        self.result: Optional[RunResult] = None
        self._t0 = time.perf_counter()

    @contextmanager
    def _writing(self):
        """A failed write ends the run as failed, with every complete record kept, and says so."""
        try:
            yield
        except OSError as exc:
            if not is_write_error(exc):
                raise
            written = self.writer.steps_written if self.writer is not None else 0
            self.write_failed = True
            record_failure(self.run_dir, self.meta, self.writer, written, f"{exc.strerror or exc}")
            raise could_not_write(self.run_dir, exc, written, self.remedy) from None

    def begin(self, start: dict) -> None:
        """Write the start record; static findings in `stop_on` stop the run before its first step."""
        self.start = start
        suite = DetectorSuite(self.config, start)
        stop_codes = set(self.config.stop_on)
        self.observers = RecordObservers(suite, Digest(start), stop_codes)
        with self._writing():
            self.writer.write(start)
        fired = stop_codes & {f.code for f in suite.static_findings()}
        if fired:
            self.stopped_by = sorted(fired)[0]

    def step(self, record: dict) -> Optional[str]:
        """Write and observe one step record; the stop_on code that first fired at it, if any."""
        with self._writing():
            self.writer.write(record)
        self.steps += 1
        self.last_loss = record.get("loss")
        newly = self.observers.observe(record)
        if newly and self.stopped_by is None:
            self.stopped_by = newly[0]
        return newly[0] if newly else None

    def finish(self, status: str, extra_meta: Optional[dict] = None) -> RunResult:
        """Write the end record, meta.json and findings.json; idempotent. After a failed write, the
        result of what was recorded, status `failed`, and nothing more is written."""
        if self.result is not None:
            return self.result
        if self.write_failed:
            self.result = RunResult(run_dir=str(self.run_dir), status="failed", steps=self.writer.steps_written
                                    if self.writer is not None else 0, final_loss=None, findings=[])
            self.result.meta = self.meta
            return self.result
        if status == "completed" and self.stopped_by is not None:
            status = "diverged"
        end = end_record(status, self.steps, self.last_loss, self.stopped_by if status == "diverged" else None)
        with self._writing():
            try:
                if self.start is not None:
                    self.writer.write(end)
            finally:
                self.writer.close()
        duration = time.perf_counter() - self._t0
        self.meta.update(status=status, ended=now(), duration_s=round(duration, 3), steps=self.steps,
                         step_time_ms=round(1000 * duration / max(self.steps, 1), 4), **(extra_meta or {}))
        if self.start is None:  # no step was ever taken: nothing to analyse
            result = RunResult(run_dir=str(self.run_dir), status=status, steps=0, final_loss=None, findings=[])
        else:
            suite, digest = self.observers.suite, self.observers.digest
            result = analysed_result(self.run_dir, end, self.start, suite, digest, self.observers)
        result.meta = self.meta
        with self._writing():  # a failed write here leaves the run failed, as meta.json then says
            write_json(self.run_dir / "meta.json", self.meta)
            write_json(self.run_dir / "findings.json", result.to_json())
        self.result = result
        return result
