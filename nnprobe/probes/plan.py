"""What a probed training step measures, and when: decided once per step, in one place.

A full step (every `probes.every` steps, and always the first and the last) takes every layer's
statistics; any other step takes only the every-step checks (loss, global gradient norm, where a
non-finite value was born), and becomes full only if one turns up (probes.records). The weight
distribution is taken at step 0 only: it is what `poor-init` judges, and reading every weight matrix
four more times a step would cost more than everything else the probes do at large widths.

When a full step reads z and a is a matter of speed, never of the numbers: a large tensor is read
right after its layer made it, while it is still in the cache, and a small one at the end of the
step, where the passes of all layers run back to back (cheaper than interleaving Python between the
GEMMs). An activation that nnprobe did not write may change z or a in its backward pass, so its
layer is always read at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

#: z up to this many bytes is summarised at the end of the step, larger ones as soon as they are made
DEFER_BYTES = 1 << 17


@dataclass(frozen=True)
class StepPlan:
    """One step's plan. `eager[i]`: take layer i's forward statistics as soon as the layer ran."""

    step: int
    full: bool
    weight_distribution: bool
    eager: tuple[bool, ...]


class Planner:
    """Plans each step of a run from its schedule and its layers."""

    def __init__(self, every: int, total_steps: int, z_bytes: Sequence[int], may_defer: Sequence[bool]) -> None:
        """`z_bytes[i]`: the size of layer i's pre-activation for one batch; `may_defer[i]`: its activation
        is known to leave z and a alone in the backward pass."""
        self.every = every
        self.last = total_steps - 1
        self._eager = tuple(not defer or nbytes > DEFER_BYTES for nbytes, defer in zip(z_bytes, may_defer))

    def plan(self, step: int) -> StepPlan:
        full = step % self.every == 0 or step == self.last
        return StepPlan(step, full, step == 0, self._eager)
