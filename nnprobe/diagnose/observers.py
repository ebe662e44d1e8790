"""The digest and the detectors, fed every step record of a run, in order (`train` and `diagnose`).

A training step evicts the interpreter's code and data from the caches (every GEMM and every
pass over the weights streams more than L2 holds), so per-record Python run once a step costs
2-5x what the same code costs in a loop. Only the detectors whose code can stop the run
(`stop_on`) need each record at once; the digest and the other detectors get the records in
batches, in the same order, which gives the same results (they are pure functions of the
record stream; records are not changed once written) at close to the warm cost.
"""

from __future__ import annotations

from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest

#: records held back for the digest and the detectors that cannot stop the run
BATCH = 32


class RecordObservers:
    def __init__(self, suite: DetectorSuite, digest: Digest, stop_codes: set[str]) -> None:
        self.suite = suite
        self.digest = digest
        self._live = [d for d in suite.detectors if d.code in stop_codes]
        self._batched = [d for d in suite.detectors if d.code not in stop_codes]
        self._pending: list[dict] = []

    def observe(self, record: dict, flush: bool = True) -> list[str]:
        """Feed one step record; return the stop_on codes that first fired at it.

        `flush=False` leaves a full batch for the caller to flush (the bench times it on its own).
        """
        newly = self.suite.observe(record, self._live)
        self._pending.append(record)
        if flush and self.full:
            self.flush()
        return newly

    @property
    def full(self) -> bool:
        return len(self._pending) >= BATCH

    def flush(self) -> None:
        """Everything held back, now: call before reading the digest or the findings."""
        pending, self._pending = self._pending, []
        observe = self.digest.observe
        for record in pending:
            observe(record)
        for det in self._batched:
            det_observe = det.observe
            for record in pending:
                det_observe(record)
