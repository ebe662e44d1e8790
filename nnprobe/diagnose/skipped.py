"""Which detectors a recorded run could not run, and what would enable them: never a silent all-clear.

A run that `train` made records everything, so nothing is skipped. A run recorded from a
hand-written loop (nnprobe.Recorder) records what the loop handed over; its start record lists
that under `recorded.given`, so the live run and `diagnose` skip the same detectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Need:
    """What a detector reads, as the recorder's inputs (all of them), and the call that provides it."""

    inputs: tuple[str, ...]
    enable: str


#: finding code -> what it needs from a recorded loop. Input names: z, a, W, gW (per layer: at least one
#: layer gave it), loss, outputs (s.loss), loss_kind (Recorder(loss=)), activation (of the last layer), data
NEEDS: dict[str, Need] = {
    "nonfinite": Need((), "any tensor or the loss"),
    "log-zero": Need(("loss_kind", "outputs"),
                     "Recorder(loss='bce' or 'cross_entropy') and s.loss(value, outputs=p), p being what the loss "
                     "takes the log of"),
    "output-loss-mismatch": Need(("loss_kind", "activation"),
                                 "Recorder(loss=...) and the last layer's s.layer(..., activation=...)"),
    "exploding-gradients": Need(("gW",), "s.grads(name, gW=...) for each layer"),
    "vanishing-gradients": Need(("gW",), "s.grads(name, gW=...) for each layer"),
    "dead-relu": Need(("z", "activation"), "s.layer(name, z=..., activation='relu')"),
    "saturated-activations": Need(("z", "activation"), "s.layer(name, z=..., activation='sigmoid' or 'tanh')"),
    "unnormalized-inputs": Need(("data",), "rec.data(X, y) before the first step"),
    "poor-init": Need(("W",), "s.layer(name, W=...) from the first step on"),
    "large-update-ratio": Need(("W",), "s.layer(name, W=...) at every step"),
    "loss-divergence": Need(("loss",), "s.loss(value)"),
    "loss-plateau": Need(("loss",), "s.loss(value)"),
    "loss-oscillation": Need(("loss",), "s.loss(value)"),
    "loss-spike": Need(("loss",), "s.loss(value)"),
    # the in-place evidence needs z; a full finite-difference check needs a backward pass nnprobe owns
    "gradient-mismatch": Need(("z",), "s.layer(name, z=...); a full check: `nnprobe gradcheck` on a YAML twin"),
}


@dataclass(frozen=True)
class Skipped:
    code: str
    missing: tuple[str, ...]
    enable: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "missing": list(self.missing), "enable": self.enable}

    @property
    def text(self) -> str:
        return f"{self.code}: not given {', '.join(self.missing)}; enable with {self.enable}"


def skipped_detectors(start: Optional[dict], codes: list[str]) -> list[Skipped]:
    """The detectors among `codes` that a recorded run did not give the inputs for (none for `train`'s runs)."""
    recorded = (start or {}).get("recorded")
    if not isinstance(recorded, dict):
        return []
    given = set(recorded.get("given") or [])
    out = []
    for code in codes:
        need = NEEDS.get(code)
        if need is None:
            continue
        missing = tuple(x for x in need.inputs if x not in given)
        if missing:
            out.append(Skipped(code, missing, need.enable))
    return out
