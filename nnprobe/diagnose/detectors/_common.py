"""Helpers the detectors share: safe reads of record fields, number formatting, persistence, and fixes.

Everything here is O(1) or O(layers) per call: detectors run live at every step and offline
over logs of any length, so no helper keeps a history that grows with the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from nnprobe.findings import Fix, change
from nnprobe.nn.activations import names_where, traits_of

# read off the activations' declared traits (nnprobe.nn.activations.Traits)
RELU_FAMILY = names_where(family="relu")
SQUASHING = names_where(family="squashing")
PROBABILITY_OUTPUT = {"bce": "sigmoid", "cross_entropy": "softmax"}


# ---------------------------------------------------------------- reading records


def finite(x: Any) -> Optional[float]:
    """x as a float when it is a finite number, else None (missing, null, NaN, inf, text)."""
    if type(x) is float:  # the common case, checked first: it runs for every stat of every record
        return x if x - x == 0.0 else None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def number(x: Any) -> Optional[float]:
    """x as a float when it is any number, NaN and inf included, else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def stat(layer: Optional[dict], group: str, key: str) -> Optional[float]:
    """A finite per-layer statistic such as stat(layer, "gW", "norm"), or None when absent or not finite."""
    block = layer.get(group) if type(layer) is dict else None
    return finite(block.get(key)) if type(block) is dict else None


def record_layers(record: dict) -> list[dict]:
    """The per-layer objects of a full record (an empty list for a cheap record).

    When every entry is a dict (always, for a log nnprobe wrote) this is the record's own
    list, not a copy: callers only read it.
    """
    if not record.get("full"):
        return []
    layers = record.get("layers")
    if type(layers) is list:
        for l in layers:
            if type(l) is not dict:
                break
        else:
            return layers
    return [l for l in layers if isinstance(l, dict)] if isinstance(layers, list) else []


def layer_key(layer: dict) -> str:
    """The name a per-layer object is matched by (str() of its "name", as in the start record's specs)."""
    name = layer.get("name")
    return name if type(name) is str else str(name)


def step_of(record: dict) -> int:
    step = record.get("step")
    if type(step) is int:  # the common case, checked first
        return step
    return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else -1


# ---------------------------------------------------------------- formatting


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a message: 3 significant digits, NaN/inf spelled out, None as n/a."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == int(x) and abs(x) < 1e6:
            return str(int(x))
        return f"{x:.{digits}g}"
    return str(x)


def pct(fraction: Optional[float]) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.0f}%"


def yaml_number(x: float) -> str:
    """A float that YAML reads back as a float (PyYAML needs a dot in 1.0e-05)."""
    text = f"{x:.1g}" if x < 1e-4 or x >= 1e5 else f"{x:.2g}"
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exp = text.split("e")
        text = f"{mantissa}.0e{exp}"
    return text


def clean(obj: Any) -> Any:
    """Evidence made JSON-safe: non-finite floats become the strings the step log uses."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def duration(first: int, last: Optional[int], held: int, seen: int, to_end: bool) -> str:
    """How long a persistent condition held: 'from step 12 to the end (988 steps, all 988 full records)'."""
    last = first if last is None else last
    if first == last:
        return f"at step {first}"
    where = "to the end" if to_end else f"to step {last}"
    share = f"all {seen}" if held >= seen else f"{held} of {seen}"
    return f"from step {first} {where} ({last - first + 1} steps, {share} full records)"


# ---------------------------------------------------------------- persistence


class Persistence:
    """Consecutive full records where a condition held; confirmed once a run reaches `patience`.

    `first` is the first step of the run that got confirmed; from there on `held` counts the
    full records where the condition held and `seen` all full records up to `last`, the last
    step where it held; `active` says whether it holds at the latest record.
    """

    def __init__(self, patience: float) -> None:
        self.patience = max(1, int(patience))
        self.run_start: Optional[int] = None
        self.run_len = 0
        self.first: Optional[int] = None
        self.held = 0
        self.seen = 0
        self._pending = 0
        self.last: Optional[int] = None
        self.active = False

    def update(self, step: int, holds: bool, ready: bool = True) -> bool:
        """Feed one full record; True exactly at the record that confirms the condition.

        `ready` False holds confirmation back (a warm-up) without breaking the run.
        """
        if not holds and not self.run_len and self.first is None:  # idle and staying idle (the common case)
            self.active = False
            return False
        self.active = holds
        if self.first is not None:
            self._pending += 1
            if holds:
                self.held += 1
                self.seen += self._pending
                self._pending = 0
                self.last = step
            return False
        if not holds:
            self.run_start, self.run_len = None, 0
            return False
        if self.run_len == 0:
            self.run_start = step
        self.run_len += 1
        if self.run_len >= self.patience and ready:
            self.first, self.last = self.run_start, step
            self.held = self.seen = self.run_len
            return True
        return False

    @property
    def confirmed(self) -> bool:
        return self.first is not None

    def describe(self, last_full: Optional[int]) -> str:
        return duration(self.first, self.last, self.held, self.seen, self.active and self.last == last_full)

    def reaches_end(self, last_full: Optional[int]) -> bool:
        return self.active and self.last == last_full


# ---------------------------------------------------------------- facts about the run


def input_problems(data: dict, max_scale: float = 10.0, max_offset: float = 3.0,
                   min_std: float = 0.01) -> list[dict]:
    """Input features far from zero mean / unit scale, from the start record's data statistics."""
    means, stds = data.get("input_mean") or [], data.get("input_std") or []
    mins, maxs = data.get("input_min") or [], data.get("input_max") or []
    bad = []
    for i, (mean, std) in enumerate(zip(means, stds)):
        mean, std = finite(mean), finite(std)
        if mean is None or std is None:
            continue
        lo = finite(mins[i]) if i < len(mins) else None
        hi = finite(maxs[i]) if i < len(maxs) else None
        reasons = scale_reasons(mean, std, max_scale, max_offset, min_std)
        if reasons:
            bad.append({"feature": i, "mean": mean, "std": std, "min": lo, "max": hi,
                        "magnitude": math.hypot(mean, std), "reasons": reasons})
    return bad


def scale_reasons(mean: float, std: float, max_scale: float, max_offset: float, min_std: float) -> list[str]:
    """Why a variable with this mean and std is far from zero mean / unit scale (empty: it is not)."""
    reasons = []
    magnitude = math.hypot(mean, std)
    if magnitude > max_scale:
        reasons.append(f"magnitude sqrt(mean^2 + std^2) = {fmt(magnitude)} > {fmt(max_scale)}")
    if std < min_std:
        reasons.append(f"std {fmt(std)} < {fmt(min_std)}" + (" (constant)" if std == 0 else ""))
    elif abs(mean) > max_offset * std:
        reasons.append(f"|mean| = {fmt(abs(mean))} > {fmt(max_offset)} std")
    return reasons


def target_problem(data: dict, max_scale: float = 10.0, max_offset: float = 3.0,
                   min_std: float = 0.0) -> Optional[dict]:
    mean, std = finite(data.get("target_mean")), finite(data.get("target_std"))
    if mean is None or std is None:
        return None
    reasons = scale_reasons(mean, std, max_scale, max_offset, min_std)
    if not reasons:
        return None
    return {"mean": mean, "std": std, "min": finite(data.get("target_min")),
            "max": finite(data.get("target_max")), "magnitude": math.hypot(mean, std), "reasons": reasons}


@dataclass
class RunFacts:
    """The configuration facts fixes are phrased from (start record first, the config for the rest)."""

    lr: float
    optimizer: str
    clip: Optional[float]
    reduction: str
    batch: int
    n_train: int
    loss_kind: str
    from_logits: bool
    epsilon: float
    output: str
    activation: str
    negative_slope: float
    dtype: str
    init: str
    bias_init: Any
    depth: int
    input_span: Optional[tuple[float, float]]
    unnormalized_inputs: bool
    target_span: Optional[tuple[float, float]]
    unnormalized_targets: bool

    @classmethod
    def of(cls, context: Any) -> "RunFacts":
        start = context.start or {}
        # a loop recorded by nnprobe.Recorder has a config of defaults, not of what the loop did: not a fact
        config = None if start.get("recorded") else context.config
        model = getattr(config, "model", None)
        loss = start.get("loss") or {}
        opt = start.get("optimizer") or {}
        data = start.get("data") or {}
        layers = start.get("layers") or []
        hidden = [l for l in layers if not l.get("is_output")]
        out = [l for l in layers if l.get("is_output")]
        batch = getattr(getattr(config, "training", None), "batch_size", None) or data.get("n_train") or 0
        settings = (getattr(config, "detectors", None) or {}).get("unnormalized-inputs", {})
        limits = {k: float(settings[k]) for k in ("max_scale", "max_offset", "min_std") if k in settings}
        lows = [v for v in (finite(x) for x in data.get("input_min") or []) if v is not None]
        highs = [v for v in (finite(x) for x in data.get("input_max") or []) if v is not None]
        t_lo, t_hi = finite(data.get("target_min")), finite(data.get("target_max"))
        return cls(
            lr=finite(opt.get("lr")) or getattr(getattr(config, "optimizer", None), "lr", 0.001),
            optimizer=str(opt.get("kind") or getattr(getattr(config, "optimizer", None), "kind", "sgd")),
            clip=finite(opt.get("clip_grad_norm")),
            reduction=str(loss.get("reduction") or "mean"),
            batch=int(min(batch, data.get("n_train") or batch)) if batch else 0,
            n_train=int(data.get("n_train") or 0),
            loss_kind=str(loss.get("kind") or "mse"),
            from_logits=bool(loss.get("from_logits")),
            epsilon=finite(loss.get("epsilon")) or 0.0,
            output=str(out[0]["activation"]) if out else str(getattr(model, "output", "identity")),
            activation=str(hidden[0]["activation"]) if hidden else str(getattr(model, "activation", "identity")),
            negative_slope=float(getattr(model, "negative_slope", 0.01)),
            dtype=str(start.get("dtype") or getattr(model, "dtype", "float64")),
            init=str(getattr(model, "init", "unknown")),
            bias_init=getattr(model, "bias_init", None),
            depth=len(layers),
            input_span=(min(lows), max(highs)) if lows and highs else None,
            unnormalized_inputs=bool(input_problems(data, **limits)),
            target_span=(t_lo, t_hi) if t_lo is not None and t_hi is not None else None,
            unnormalized_targets=target_problem(
                data, **{k: v for k, v in limits.items() if k != "min_std"}) is not None,
        )

    @property
    def textbook_log(self) -> bool:
        return self.loss_kind in PROBABILITY_OUTPUT and not self.from_logits

    @property
    def relu_hidden(self) -> bool:
        return self.activation in RELU_FAMILY

    def init_for(self, activation: str) -> str:
        traits = traits_of(activation)
        return "he_normal" if traits is not None and traits.init_rule == "he" else "xavier_normal"


def _span(span: Optional[tuple[float, float]]) -> str:
    return f"[{fmt(span[0])}, {fmt(span[1])}]" if span else "far from unit scale"


def lower_lr(lr: float, factor: float = 10.0) -> float:
    """The learning rate `factor` times lower, to the two digits a fix text shows (so text and value agree)."""
    return float(yaml_number(lr / factor))


def _lower_lr(f: RunFacts, factor: float = 10.0) -> Fix:
    return change({"optimizer.lr": lower_lr(f.lr, factor)}, f"{factor:g}x lower than {fmt(f.lr)}")


# Each entry: the fact-dependent config change, or None where it does not apply. An entry may also
# return plain text (advice that is no config change): fixes() turns it into a text-only Fix.
FIXES: dict[str, Callable[[RunFacts], Optional[Fix | str]]] = {
    "from_logits": lambda f: (
        change({"loss.from_logits": True},
               "log-sigmoid / log-softmax of the pre-activation never evaluates log(0)")
        if f.textbook_log else None),
    "probability_output": lambda f: (
        change({"model.output": PROBABILITY_OUTPUT[f.loss_kind]}, f"{f.output} outputs are not probabilities")
        if f.loss_kind in PROBABILITY_OUTPUT and f.output not in PROBABILITY_OUTPUT.values() else None),
    "float32": lambda f: (
        change({"model.dtype": "float32"}, "float16 overflows to inf above 65504") if f.dtype == "float16" else None),
    "normalize": lambda f: (
        change({"data.normalize": "standardize"}, f"inputs span {_span(f.input_span)}")
        if f.unnormalized_inputs else None),
    "normalize_target": lambda f: (
        change({"data.normalize_target": "standardize"}, f"targets span {_span(f.target_span)}")
        if f.unnormalized_targets else None),
    "reduction_mean": lambda f: (
        change({"loss.reduction": "mean"}, f"sum multiplies every gradient by the batch size ({f.batch})")
        if f.reduction == "sum" and f.batch > 1 else None),
    "lower_lr": lambda f: _lower_lr(f),
    "clip": lambda f: (
        change({"optimizer.clip_grad_norm": 1.0}, "caps the norm of each step's gradient (Pascanu et al. 2013)")
        if f.clip is None else None),
    "fan_in_init": lambda f: (
        change({"model.init": f.init_for(f.activation)}, f"scaled to fan-in for {f.activation}")
        if f.init not in ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "lecun_normal") else None),
    "bias_zeros": lambda f: (
        change({"model.bias_init": "zeros"}, "biases drawn from U[0, 1) all push the same way")
        if f.bias_init not in ("zeros", 0, 0.0, None) else None),
    "larger_batch": lambda f: (
        change({"training.batch_size": min(32, f.n_train) if f.batch < 32 else min(4 * f.batch, f.n_train)},
               f"the loss of {f.batch} example(s) per step swings with every batch")
        if 0 < f.batch < f.n_train else None),
}


def fixes(facts: RunFacts, *keys: str) -> list[Fix]:
    """The applicable fixes, in the order asked for, without repeats."""
    out: list[Fix] = []
    for key in keys:
        fix = FIXES[key](facts)
        if fix and fix not in out:
            out.append(Fix.of(fix))
    return out


def weight_count(spec: dict) -> int:
    """fan_in x units of a layer of the start record (0 when unknown)."""
    return int(spec.get("fan_in") or 0) * int(spec.get("units") or 0)


class Convergence:
    """The run's first finite loss, and whether a later loss has fallen below `fraction` of it.

    Detectors that judge gradients or update sizes stay quiet once the loss is nearly solved:
    small gradients are then expected, not a pathology.
    """

    __slots__ = ("first", "fraction")

    def __init__(self, fraction: float) -> None:
        self.first: Optional[float] = None
        self.fraction = fraction

    def update(self, loss: Optional[float]) -> bool:
        first = self.first
        if first is None and loss is not None:
            self.first = first = loss
        return loss is not None and first is not None and first > 0 and loss < self.fraction * first
