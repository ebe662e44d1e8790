"""The run behind nnprobe.Recorder: `train`'s run directory, metadata, step log and live detectors.

A recorded run directory is one `nnprobe diagnose`, `report` and `--baseline` read like any
other: config.yaml (with `data.source: recorded`, and what the recorder was told), meta.json
(`recorded`: the arguments it was given), steps.jsonl and findings.json.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

from nnprobe.config import Config, dump_config
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.diagnose.expectations import evaluate_expectations
from nnprobe.diagnose.observers import RecordObservers
from nnprobe.result import RunResult
from nnprobe.train.rundir import metadata, next_free_dir, now, write_json
from nnprobe.train.runlog import LogWriter


def recorded_config(name: str, loss_kind: Optional[str], every: int, stop_on: list[str]) -> Config:
    """The config a recorded run is diagnosed with: only what the recorder was told; the rest are defaults."""
    raw: dict[str, Any] = {"name": name, "data": {"source": "recorded"}, "probes": {"every": every},
                           "stop_on": list(stop_on)}
    if loss_kind is not None:
        raw["loss"] = {"kind": loss_kind}
    return Config.model_validate(raw)


class RecordedRun:
    """Opened when the recorder's block starts; fed the start record and each step record; finished once."""

    def __init__(self, recorder) -> None:
        self.config = recorded_config(recorder.name, recorder.loss_kind, recorder.every, recorder.stop_on)
        self.run_dir = next_free_dir(recorder.out)
        (self.run_dir / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
        self.meta = metadata(self.config, None, [])
        self.meta["recorded"] = dict(recorder.arguments)
        write_json(self.run_dir / "meta.json", self.meta)
        self.writer = LogWriter(self.run_dir / "steps.jsonl")
        self.stop_codes = set(self.config.stop_on)
        self.start_record: Optional[dict] = None
        self.observers: Optional[RecordObservers] = None
        self.status, self.stopped_by = "completed", None
        self.steps, self.last_loss = 0, None
        self.t0 = time.perf_counter()

    @property
    def started(self) -> bool:
        return self.start_record is not None

    def start(self, start: dict) -> None:
        """Write the start record and set up the detectors; a stop_on code among the static findings stops the run."""
        self.start_record = start
        self.writer.write(start)
        suite = DetectorSuite(self.config, start)
        self.observers = RecordObservers(suite, Digest(start), self.stop_codes)
        fired = sorted(self.stop_codes & {f.code for f in suite.static_findings()})
        if fired:
            self.status, self.stopped_by = "diverged", fired[0]

    def write_step(self, record: dict) -> list[str]:
        """Write one step record and feed it to the detectors; the stop_on codes that first fired at it."""
        self.writer.write(record)
        self.steps += 1
        self.last_loss = record["loss"]
        newly = self.observers.observe(record)
        if newly and self.stopped_by is None:
            self.status, self.stopped_by = "diverged", newly[0]
        return newly

    def finish(self, exc: Optional[BaseException], start_if_none: dict) -> RunResult:
        """The end record, findings.json and the result; `exc`: what ended the recorder's block, if anything."""
        if exc is not None:
            self.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        if not self.started:
            self.start(start_if_none)
        loss = self.last_loss
        end = {"type": "end", "status": self.status, "steps": self.steps,
               "final_loss": loss if loss is not None and math.isfinite(loss) else None,
               "stopped_by": self.stopped_by}
        try:
            self.writer.write(end)
        finally:
            self.writer.close()
        observers = self.observers
        observers.flush()
        digest, suite = observers.digest, observers.suite
        digest.finish(end)
        result = RunResult(
            run_dir=str(self.run_dir), status=self.status, steps=self.steps, final_loss=end["final_loss"],
            findings=suite.finish(end), start=self.start_record, digest=digest, stopped_by=self.stopped_by,
            max_grad_norm=digest.max_grad_norm, skipped=list(suite.skipped),
        )
        result.checks = evaluate_expectations(self.config, result)
        duration = time.perf_counter() - self.t0
        self.meta.update(status=self.status, ended=now(), duration_s=round(duration, 3), steps=self.steps,
                         step_time_ms=round(1000 * duration / max(self.steps, 1), 4))
        write_json(self.run_dir / "meta.json", self.meta)
        write_json(self.run_dir / "findings.json", result.to_json())
        return result
