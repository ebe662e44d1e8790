"""Streaming aggregates of a run for the reports, in memory that does not grow with the log.

A series is kept as a min/max envelope over a bounded number of step buckets, never as
thinned points: when the buckets run out, adjacent pairs merge and the bucket width
doubles, so every bucket still holds the exact minimum and maximum of its steps and a
one-step spike survives any log length. Non-finite values (and nulls, which the log writes
when no entry of a tensor was finite) are counted and their buckets marked, never mixed
into the envelope.

The Digest is fed the same records as the detectors, live in `train` and offline in
`diagnose`; its per-record work is a few float comparisons per layer, no NumPy.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Optional

from nnprobe.nn.activations import traits_of

INF = float("inf")
DEFAULT_CAP = 512


def has_dead_units(activation: Optional[str]) -> bool:
    """Whether a dead-unit fraction means something for this activation: its traits say so (the ReLU
    family), or it is user code, whose traits nnprobe cannot know (shown rather than hidden)."""
    traits = traits_of(activation)
    return traits is None or traits.dead_units


@dataclass(frozen=True)
class Bucket:
    """One bucket of a series: steps first..last (inclusive), the finite envelope, and what was not finite."""

    first: int
    last: int
    lo: Optional[float]  # None when every value in the bucket was non-finite
    hi: Optional[float]
    mean: Optional[float]
    n: int  # finite values
    bad: int  # NaN, ±inf or null values


class Envelope:
    """Min/max/mean of a scalar series over at most `cap` step buckets of equal width.

    Bucket k covers steps [k*width, (k+1)*width). Arrays are allocated once at `cap`
    entries; a step past the last bucket halves the resolution (pairs merge exactly).
    Steps are expected in increasing order, as the step log writes them.
    """

    __slots__ = (
        "cap", "width", "lo", "hi", "sum", "n", "bad",
        "first_step", "first_value", "last_step", "last_value",
        "min_value", "min_step", "max_value", "max_step",
        "n_nan", "n_posinf", "n_neginf", "n_none", "first_bad_step", "first_bad_value",
    )

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        if cap < 2 or cap % 2:
            raise ValueError(f"envelope cap: expected an even number >= 2, got {cap!r}")
        self.cap = cap
        self.width = 1
        self.lo = [INF] * cap
        self.hi = [-INF] * cap
        self.sum = [0.0] * cap
        self.n = [0] * cap
        self.bad = [0] * cap
        self.first_step: Optional[int] = None
        self.first_value: Optional[float] = None
        self.last_step: Optional[int] = None
        self.last_value: Optional[float] = None
        self.min_value = INF
        self.min_step: Optional[int] = None
        self.max_value = -INF
        self.max_step: Optional[int] = None
        self.n_nan = self.n_posinf = self.n_neginf = self.n_none = 0
        self.first_bad_step: Optional[int] = None
        self.first_bad_value: Optional[float] = None

    # -- feeding ---------------------------------------------------------------------------

    def add(self, step: int, value: Optional[float]) -> None:
        """Record one value (None, NaN and ±inf are counted and marked, not enveloped)."""
        k = step // self.width
        if k >= self.cap:
            k = self._make_room(step)
        if self.first_step is None:
            self.first_step = step
            self.first_value = value
        self.last_step = step
        self.last_value = value
        if value is None or value - value != 0:  # null, NaN or ±inf
            self._add_bad(k, step, value)
            return
        lo = self.lo
        if value < lo[k]:
            lo[k] = value
            if value < self.min_value:
                self.min_value = value
                self.min_step = step
        hi = self.hi
        if value > hi[k]:
            hi[k] = value
            if value > self.max_value:
                self.max_value = value
                self.max_step = step
        self.sum[k] += value
        self.n[k] += 1

    def _add_bad(self, k: int, step: int, value: Optional[float]) -> None:
        self.bad[k] += 1
        if value is None:
            self.n_none += 1
        elif value != value:
            self.n_nan += 1
        elif value > 0:
            self.n_posinf += 1
        else:
            self.n_neginf += 1
        if self.first_bad_step is None:
            self.first_bad_step = step
            self.first_bad_value = value

    def _make_room(self, step: int) -> int:
        """Merge adjacent bucket pairs (doubling the width) until `step` falls in the last bucket or before."""
        while step // self.width >= self.cap:
            half = self.cap // 2
            # whole lists at a time, not an index loop (half the time: a dozen envelopes merge together)
            lo, hi, sm, n, bad = self.lo, self.hi, self.sum, self.n, self.bad
            lo[:half] = [a if a < b else b for a, b in zip(lo[0::2], lo[1::2])]
            hi[:half] = [a if a > b else b for a, b in zip(hi[0::2], hi[1::2])]
            sm[:half] = map(operator.add, sm[0::2], sm[1::2])
            n[:half] = map(operator.add, n[0::2], n[1::2])
            bad[:half] = map(operator.add, bad[0::2], bad[1::2])
            lo[half:] = [INF] * half
            hi[half:] = [-INF] * half
            sm[half:] = [0.0] * half
            n[half:] = [0] * half
            bad[half:] = [0] * half
            self.width *= 2
        return step // self.width

    # -- reading ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Values recorded, finite or not."""
        return sum(self.n) + sum(self.bad)

    @property
    def n_bad(self) -> int:
        return self.n_nan + self.n_posinf + self.n_neginf + self.n_none

    @property
    def empty(self) -> bool:
        return self.first_step is None

    @property
    def has_finite(self) -> bool:
        return self.max_step is not None

    def buckets(self) -> list[Bucket]:
        """The non-empty buckets in step order (at most `cap`), their step ranges clipped to the series'."""
        out = []
        if self.first_step is None:
            return out
        w, s0, s1 = self.width, self.first_step, self.last_step
        for k in range(self.cap):
            n, bad = self.n[k], self.bad[k]
            if not n and not bad:
                continue
            first, last = max(k * w, s0), min(k * w + w - 1, s1)
            if n:
                lo, hi = self.lo[k], self.hi[k]
                mean = self.sum[k] / n
                if not lo <= mean <= hi:  # the sum overflowed or lost precision; keep the line inside the band
                    mean = lo / 2 + hi / 2
                out.append(Bucket(first, last, lo, hi, mean, n, bad))
            else:
                out.append(Bucket(first, last, None, None, None, 0, bad))
        return out

    def worst_high(self) -> tuple[Optional[float], Optional[int]]:
        """(value, step) of the worst value when high is bad: the first non-finite one, else the maximum."""
        if self.first_bad_step is not None:
            return self.first_bad_value, self.first_bad_step
        if self.max_step is None:
            return None, None
        return self.max_value, self.max_step


@dataclass
class LayerSummary:
    """One row of the terminal's per-layer table."""

    name: str
    activation: str
    units: int
    act_min: Optional[float]  # min of a.min over the run (finite values)
    act_max: Optional[float]
    act_nonfinite_step: Optional[int]  # first step where the activation held NaN/inf
    dead_applies: bool
    dead_start: Optional[float]
    dead_worst: Optional[float]
    dead_worst_step: Optional[int]
    dead_end: Optional[float]
    grad_start: Optional[float]
    grad_worst: Optional[float]
    grad_worst_step: Optional[int]
    grad_end: Optional[float]


class LayerSeries:
    """The per-layer series the reports plot, fed from full records."""

    __slots__ = ("name", "units", "activation", "grad_norm", "dead", "a_min", "a_max", "update_ratio",
                 "act_nonfinite", "act_nonfinite_step")

    def __init__(self, name: str, units: int, activation: str, cap: int) -> None:
        self.name = name
        self.units = units
        self.activation = activation
        self.grad_norm = Envelope(cap)
        self.dead = Envelope(cap)
        self.a_min = Envelope(cap)
        self.a_max = Envelope(cap)
        self.update_ratio = Envelope(cap)
        self.act_nonfinite = 0  # full records whose activation held a NaN or ±inf entry
        self.act_nonfinite_step: Optional[int] = None

    def summary(self) -> LayerSummary:
        """Start / worst / end values; a null in the log (no finite entry) is reported as NaN."""
        grad_worst, grad_worst_step = self.grad_norm.worst_high()
        dead_worst, dead_worst_step = self.dead.worst_high()
        return LayerSummary(
            name=self.name, activation=self.activation, units=self.units,
            act_min=self.a_min.min_value if self.a_min.has_finite else None,
            act_max=self.a_max.max_value if self.a_max.has_finite else None,
            act_nonfinite_step=self.act_nonfinite_step,
            dead_applies=has_dead_units(self.activation),
            dead_start=_seen(self.dead, self.dead.first_value),
            dead_worst=_seen(self.dead, dead_worst), dead_worst_step=dead_worst_step,
            dead_end=_seen(self.dead, self.dead.last_value),
            grad_start=_seen(self.grad_norm, self.grad_norm.first_value),
            grad_worst=_seen(self.grad_norm, grad_worst), grad_worst_step=grad_worst_step,
            grad_end=_seen(self.grad_norm, self.grad_norm.last_value),
        )


def _seen(envelope: Envelope, value: Optional[float]) -> Optional[float]:
    """None stays None only when the series never got a value; a recorded null becomes NaN."""
    if value is None and not envelope.empty:
        return math.nan
    return value


class Digest:
    """Everything the reports draw, aggregated record by record in bounded memory."""

    def __init__(self, start: dict[str, Any], cap: int = DEFAULT_CAP) -> None:
        self.start = start
        self.cap = cap
        self.loss = Envelope(cap)
        self.grad_norm = Envelope(cap)  # global norm, every step
        self.accuracy = Envelope(cap)
        self.val_loss = Envelope(cap)
        self.val_accuracy = Envelope(cap)
        self.layers: list[LayerSeries] = []
        for spec in start.get("layers") or []:
            self.layers.append(LayerSeries(str(spec.get("name")), int(spec.get("units") or 0),
                                           str(spec.get("activation")), cap))
        self._by_name = {ls.name: ls for ls in self.layers}
        # per layer name, what the per-record loop needs, looked up once: the series, its envelopes' add
        # methods and its unit count
        self._feeds = {ls.name: (ls, ls.grad_norm.add, ls.dead.add, ls.a_min.add, ls.a_max.add,
                                 ls.update_ratio.add, ls.units) for ls in self._by_name.values()}
        self.n_records = 0
        self.n_full = 0
        self.n_malformed = 0  # records a field of which had the wrong type; skipped where it broke
        self.first_step: Optional[int] = None
        self.last_step: Optional[int] = None
        self.first_nonfinite: Optional[dict[str, Any]] = None  # {"step", "pass", "tensor", "layer"}
        self.nonfinite_records = 0
        self.end: Optional[dict[str, Any]] = None

    def observe(self, record: dict[str, Any]) -> None:
        """Fold one step record (full or light) into the aggregates."""
        try:
            self._observe(record)
        except (TypeError, AttributeError, KeyError, ValueError):
            self.n_malformed += 1

    def _observe(self, record: dict[str, Any]) -> None:
        # Subscripts, not .get: every field read here is required by the schema, and a record
        # missing one is counted as malformed by observe().
        step = record["step"]
        if step < 0:
            raise ValueError("negative step")
        self.n_records += 1
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        self.loss.add(step, record["loss"])
        self.grad_norm.add(step, record["grad_norm"])
        nf = record["nonfinite"]
        if nf:
            self.nonfinite_records += 1
            if self.first_nonfinite is None:
                self.first_nonfinite = {"step": step, "pass": nf.get("pass"), "tensor": nf.get("tensor"),
                                        "layer": nf.get("layer")}
        if not record["full"]:
            return
        self.n_full += 1
        if "accuracy" in record:
            self.accuracy.add(step, record["accuracy"])
        if "val_loss" in record:
            self.val_loss.add(step, record["val_loss"])
        if "val_accuracy" in record:
            self.val_accuracy.add(step, record["val_accuracy"])
        feeds = self._feeds
        for lr in record["layers"]:
            feed = feeds.get(lr["name"])
            if feed is None:
                continue
            ls, add_grad, add_dead, add_min, add_max, add_ratio, units = feed
            add_grad(step, lr["gW"]["norm"])
            a = lr["a"]
            dead = a["dead"]
            add_dead(step, dead / units if dead is not None and units else None)
            add_min(step, a["min"])
            add_max(step, a["max"])
            if a["nan"] or a["posinf"] or a["neginf"]:
                ls.act_nonfinite += 1
                if ls.act_nonfinite_step is None:
                    ls.act_nonfinite_step = step
            add_ratio(step, lr["update_ratio"])

    @property
    def max_grad_norm(self) -> Optional[float]:
        """The largest finite global gradient norm of the run (None when there was none)."""
        value = self.grad_norm.max_value
        return value if value != -INF else None

    def finish(self, end: Optional[dict[str, Any]]) -> None:
        """Keep the end record (None when the log was cut off)."""
        self.end = end

    def layer_summaries(self) -> list[LayerSummary]:
        return [ls.summary() for ls in self.layers]

    @property
    def has_layer_stats(self) -> bool:
        return self.n_full > 0 and bool(self.layers)


__all__ = ["Bucket", "DEFAULT_CAP", "Digest", "Envelope", "LayerSeries", "LayerSummary", "has_dead_units"]
