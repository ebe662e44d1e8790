"""Numerical failures: the first NaN/inf of the run, and probabilities that reach a log at exactly 0 or 1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from nnprobe.diagnose.detectors.base import register
from nnprobe.diagnose.detectors._common import (
    RunFacts, clean, finite, fixes, fmt, number, record_layers, stat, step_of,
)
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.findings import Finding

FLOAT16_MAX = 65504.0

# Per-layer statistic group holding the counts of each tensor named in `nonfinite`.
TENSOR_GROUP = {"pre-activation": "z", "activation": "a"}


@dataclass
class _Snapshot:
    """What the last healthy full record said: the numbers that usually tell the story."""

    step: int
    loss: Optional[float]
    grad_norm: Optional[float]
    max_w_norm: Optional[float]
    max_w_layer: Optional[str]
    max_g_norm: Optional[float]
    max_g_layer: Optional[str]
    max_abs_z: Optional[float]
    max_abs_z_layer: Optional[str]
    out_z: Optional[tuple[Optional[float], Optional[float], str]] = None

    @classmethod
    def of(cls, record: dict) -> "_Snapshot":
        def largest(values: list[tuple[Optional[float], str]]) -> tuple[Optional[float], Optional[str]]:
            known = [(v, name) for v, name in values if v is not None]
            return max(known) if known else (None, None)

        layers = record_layers(record)
        names = [str(l.get("name")) for l in layers]
        w = largest([(stat(l, "W", "norm"), n) for l, n in zip(layers, names)])
        g = largest([(stat(l, "gW", "norm"), n) for l, n in zip(layers, names)])
        z = largest([(_max_abs(l, "z"), n) for l, n in zip(layers, names)])
        out = layers[-1] if layers else None
        out_z = (stat(out, "z", "min"), stat(out, "z", "max"), str(out.get("name"))) if out else None
        return cls(step_of(record), finite(record.get("loss")), finite(record.get("grad_norm")),
                   w[0], w[1], g[0], g[1], z[0], z[1], out_z)

    def describe(self) -> str:
        parts = [f"gradient norm {fmt(self.grad_norm)}"]
        if self.max_w_layer:
            parts.append(f"largest weight norm {fmt(self.max_w_norm)} ({self.max_w_layer})")
        if self.max_abs_z_layer:
            parts.append(f"largest |pre-activation| {fmt(self.max_abs_z)} ({self.max_abs_z_layer})")
        if self.out_z and self.out_z[2] != self.max_abs_z_layer and None not in self.out_z[:2]:
            parts.append(f"output pre-activation in [{fmt(self.out_z[0])}, {fmt(self.out_z[1])}] ({self.out_z[2]})")
        return f"at step {self.step} (last full record before it): " + ", ".join(parts)

    def evidence(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self.loss, "grad_norm": self.grad_norm,
                "max_weight_norm": self.max_w_norm, "max_weight_norm_layer": self.max_w_layer,
                "max_grad_norm": self.max_g_norm, "max_grad_norm_layer": self.max_g_layer,
                "max_abs_pre_activation": self.max_abs_z, "max_abs_pre_activation_layer": self.max_abs_z_layer,
                "output_pre_activation": list(self.out_z[:2]) if self.out_z else None}


def _max_abs(layer: dict, group: str) -> Optional[float]:
    lo, hi = stat(layer, group, "min"), stat(layer, group, "max")
    known = [abs(v) for v in (lo, hi) if v is not None]
    return max(known) if known else None


@dataclass
class _Origin:
    step: int
    pass_: str
    tensor: str
    layer: Optional[str]
    kind: str  # "NaN", "+inf", "-inf", a combination, or "NaN or inf" when the record does not say
    loss: Optional[float]
    grad_norm: Optional[float]
    log_events: int = 0


def _log_events(record: dict) -> int:
    """Probabilities at exactly 0 or 1, or outside [0, 1], fed to the loss's log in this record."""
    li = record.get("loss_in")
    if not isinstance(li, dict):
        return 0
    return sum(int(finite(li.get(k)) or 0) for k in ("n_zero", "n_one", "n_outside"))


def _kind_of(record: dict, tensor: str, layer: Optional[str]) -> str:
    """NaN or ±inf, where the record's counts say which."""
    if tensor == "loss":
        loss = number(record.get("loss"))
        if loss is not None and loss != loss:
            return "NaN"
        if loss is not None and loss in (float("inf"), float("-inf")):
            return "+inf" if loss > 0 else "-inf"
    group = TENSOR_GROUP.get(tensor)
    if group:
        for l in record_layers(record):
            if l.get("name") == layer and isinstance(l.get(group), dict):
                counts = l[group]
                kinds = [k for k, key in (("NaN", "nan"), ("+inf", "posinf"), ("-inf", "neginf"))
                         if (finite(counts.get(key)) or 0) > 0]
                if kinds:
                    return " and ".join(kinds)
    return "NaN or inf"


@dataclass
class _FixContext:
    origin: _Origin
    facts: RunFacts
    before: Optional[_Snapshot]
    exploded: bool


# Fix rules by where the first non-finite value was born; each returns texts or nothing.
_FIX_RULES: list[Callable[[_FixContext], list[str]]] = [
    lambda c: ["data: the inputs themselves hold NaN or inf — clean or impute them before training"]
    if c.origin.tensor == "input" else [],
    lambda c: fixes(c.facts, "float32") if c.origin.pass_ != "forward" or c.origin.tensor != "input" else [],
    lambda c: fixes(c.facts, "from_logits", "probability_output")
    if c.origin.tensor in ("loss", "weight-gradient", "bias-gradient", "activation") else [],
    lambda c: fixes(c.facts, "normalize", "normalize_target")
    if c.exploded or (c.facts.dtype == "float16" and c.origin.tensor != "input") else [],
    lambda c: fixes(c.facts, "reduction_mean") if c.exploded else [],
    lambda c: fixes(c.facts, "lower_lr", "clip") if c.exploded or c.origin.pass_ == "update" else [],
    lambda c: fixes(c.facts, "fan_in_init") if c.exploded else [],
]


@register
class NonFinite(Detector):
    code = "nonfinite"
    severity = "error"
    summary = "NaN or ±inf appeared; where it was born first: step, layer, tensor and pass."
    thresholds = {
        "explode_norm": Threshold(
            1e3,
            "gradient norm of the last healthy step above which the NaN/inf is blamed on an explosion "
            "(same default as exploding-gradients.max_norm) and lr / clipping / normalisation fixes are offered",
        ),
    }
    explanation = Explanation(
        meaning=(
            "A NaN or infinity appeared in a tensor of the step. nnprobe checks every tensor in computation order "
            "(input, each layer's pre-activation and activation, the loss, the gradients from the last layer back, "
            "then the updated parameters) and names the first one, so the report points at where the value was "
            "born, not where it spread to. Once one value is NaN every later step is NaN."
        ),
        causes=[
            "exploding updates: weights grow by orders of magnitude per step until a pre-activation overflows "
            "(unnormalized inputs, sum reduction, a learning rate too large for the data's scale)",
            "log(0) = -inf in a hand-written cross-entropy once a sigmoid/softmax output rounds to exactly 0 or 1, "
            "and 0 * -inf = NaN",
            "float16 overflow: anything above 65504 becomes inf",
            "NaN or inf in the input data",
        ],
        fixes=[
            "data.normalize: standardize (and data.normalize_target: standardize for regression)",
            "loss.from_logits: true for bce / cross_entropy",
            "a lower optimizer.lr, or optimizer.clip_grad_norm: 1.0",
            "model.dtype: float32 instead of float16",
        ],
        references=[
            "IEEE 754: overflow gives ±inf, inf - inf and 0 * inf give NaN",
            "SageMaker Debugger ExplodingTensor rule: flags any NaN/inf tensor",
            "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks (clipping)",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        self.origin: Optional[_Origin] = None
        self.before: Optional[_Snapshot] = None
        # The last healthy full record itself (records are never changed once observed); its
        # _Snapshot is built only when a non-finite origin appears, not for every record.
        self._last_full_record: Optional[dict] = None
        self.last_finite_loss: Optional[tuple[int, float]] = None
        self.prev_grad_norm: Optional[tuple[int, float]] = None
        self.grad_norm_before: Optional[tuple[int, float]] = None
        self.bad_steps = 0
        self.last_bad: Optional[int] = None

    @property
    def last_full(self) -> Optional[_Snapshot]:
        """What the last healthy full record said."""
        rec = self._last_full_record
        return _Snapshot.of(rec) if rec is not None else None

    def observe(self, record: dict) -> None:
        get = record.get
        if not isinstance(get("nonfinite"), dict):
            # the healthy case, decided here without building an _Origin: exactly when _origin() is None
            loss_raw, gn_raw = get("loss"), get("grad_norm")
            loss, gn = finite(loss_raw), finite(gn_raw)
            if (loss is not None or number(loss_raw) is None) and (gn is not None or number(gn_raw) is None):
                step = step_of(record)
                if loss is not None:
                    self.last_finite_loss = (step, loss)
                if get("full"):
                    self._last_full_record = record
                if gn is not None:
                    self.prev_grad_norm = (step, gn)
                return
        step = step_of(record)
        origin = self._origin(record)  # not None: the test above is the negation of its own
        self.bad_steps += 1
        self.last_bad = step
        if self.origin is None:
            self.origin = origin
            self.before = self.last_full
            self.grad_norm_before = self.prev_grad_norm
            self.first_step = step

    @staticmethod
    def _origin(record: dict) -> Optional[_Origin]:
        step = step_of(record)
        nf = record.get("nonfinite")
        loss, gn = number(record.get("loss")), number(record.get("grad_norm"))
        if isinstance(nf, dict):
            tensor, layer = str(nf.get("tensor") or "unknown"), nf.get("layer")
            return _Origin(step, str(nf.get("pass") or "unknown"), tensor, layer, _kind_of(record, tensor, layer),
                           finite(loss), finite(gn), _log_events(record))
        # Older or partial records without the field: fall back on the loss and the gradient norm.
        if loss is not None and finite(loss) is None:
            return _Origin(step, "forward", "loss", None, _kind_of(record, "loss", None), None, finite(gn),
                           _log_events(record))
        if gn is not None and finite(gn) is None:
            return _Origin(step, "backward", "gradient", None, "NaN or inf", finite(loss), None)
        return None

    def finish(self, end: Optional[dict]) -> list[Finding]:
        o = self.origin
        if o is None:
            return []
        facts = RunFacts.of(self.context)
        where = f"{o.tensor} of {o.layer}" if o.layer else o.tensor
        gn_before = self.grad_norm_before[1] if self.grad_norm_before else None
        exploded = (gn_before is not None and gn_before > self.t["explode_norm"]) or (
            self.before is not None and self.before.grad_norm is not None
            and self.before.grad_norm > self.t["explode_norm"])
        story = []
        if self.last_finite_loss:
            story.append(f"last finite loss {fmt(self.last_finite_loss[1])} at step {self.last_finite_loss[0]}")
        if self.grad_norm_before and (self.before is None or self.before.step != self.grad_norm_before[0]):
            story.append(f"gradient norm {fmt(gn_before)} at step {self.grad_norm_before[0]}")
        if self.before is not None:
            story.append(self.before.describe())
        if o.log_events:
            story.append(f"in that step the loss took the log of {o.log_events} "
                         f"probabilit{'y' if o.log_events == 1 else 'ies'} at exactly 0 or 1 or outside [0, 1] "
                         "(see log-zero)")
        if o.pass_ != "forward" and o.loss is not None:
            story.append(f"the loss of step {o.step} itself was still finite ({fmt(o.loss)})")
        f16 = facts.dtype == "float16"
        if f16 and self.before is not None and self.before.max_abs_z is not None:
            story.append(f"float16 holds at most {fmt(FLOAT16_MAX)}")
        message = (
            f"{o.kind} first appeared at step {o.step} in the {o.pass_} pass: {where}"
            + ("; " + "; ".join(story) if story else "")
            + f". {self.bad_steps} recorded step(s) with non-finite values, the last at step {self.last_bad}."
        )
        ctx = _FixContext(o, facts, self.before, exploded)
        fix_list: list[str] = []
        for rule in _FIX_RULES:
            for text in rule(ctx):
                if text not in fix_list:
                    fix_list.append(text)
        evidence = {
            "step": o.step, "pass": o.pass_, "tensor": o.tensor, "layer": o.layer, "kind": o.kind,
            "loss": o.loss, "grad_norm": o.grad_norm,
            "last_finite_loss": self.last_finite_loss[1] if self.last_finite_loss else None,
            "last_finite_loss_step": self.last_finite_loss[0] if self.last_finite_loss else None,
            "grad_norm_before": gn_before,
            "before": self.before.evidence() if self.before else None,
            "steps_nonfinite": self.bad_steps, "last_step": self.last_bad,
            "exploded_before": exploded, "log_events": o.log_events,
        }
        return [self.finding(step=o.step, layer=o.layer, message=message, evidence=clean(evidence), fixes=fix_list)]


# ---------------------------------------------------------------- log-zero


@dataclass(frozen=True)
class _LogEvent:
    """One kind of bad probability: which loss_in counter, and what taking its log does."""

    field: str
    applies: Callable[[str, float], bool]  # (loss kind, epsilon) -> counted for this loss?
    describe: Callable[[int, dict, float, str], str]


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


_LOG_EVENTS = [
    _LogEvent("n_zero", lambda kind, eps: True,
              lambda n, li, eps, kind: f"probability 0.0 reached exactly {_times(n)}"),
    _LogEvent("n_one", lambda kind, eps: kind == "bce",
              lambda n, li, eps, kind: f"probability 1.0 reached exactly {_times(n)}"),
    _LogEvent("n_outside", lambda kind, eps: True,
              lambda n, li, eps, kind: f"{n} values outside [0, 1] (min {fmt(finite(li.get('min')))}, "
                                 f"max {fmt(finite(li.get('max')))}): the log of a negative number is NaN"),
    _LogEvent("n_below_eps", lambda kind, eps: eps > 0,
              lambda n, li, eps, kind: f"{n} came within epsilon {fmt(eps)} of "
                                       + ("0 or 1" if kind == "bce" else "0")),
]


def _log_counts(li: dict, events: list[_LogEvent]) -> dict[str, int]:
    """Counts per event, each probability counted once: n_below_eps also counts the exact 0s and 1s and
    the values outside [0, 1], so only what it adds beyond them is kept."""
    counts = {e.field: int(finite(li.get(e.field)) or 0) for e in events}
    if "n_below_eps" in counts:
        exact = sum(v for k, v in counts.items() if k != "n_below_eps")
        counts["n_below_eps"] = max(0, counts["n_below_eps"] - exact)
    return counts

_LOG_TERMS = {
    "bce": "takes log(a) and log(1 - a)",
    "cross_entropy": "takes log(a)",
}


@register
class LogZero(Detector):
    code = "log-zero"
    severity = "error"
    summary = "A probability reached exactly 0 or 1 where the loss takes its log (or fell below epsilon)."
    thresholds = {
        "min_count": Threshold(
            1,
            "probabilities at 0 / 1 / outside [0, 1] / within epsilon in one step that make it fire (>=); "
            "1, because a single log(0) = -inf already makes the loss infinite and 0 * log(0) = NaN (IEEE 754)",
        ),
    }
    explanation = Explanation(
        meaning=(
            "The loss was computed with the textbook formula (loss.from_logits: false) and a probability fed to its "
            "log was exactly 0 or 1, or outside [0, 1], or so close that only loss.epsilon kept it finite. nnprobe "
            "counts these before epsilon is added. A sigmoid or softmax output rounds to exactly 1.0 in float64 once "
            "its input passes about 37 (float32: about 17), which a well-separated problem reaches after enough "
            "steps: the loss falls nicely, then log(0) = -inf and 0 * log(0) = NaN. A lower learning rate only "
            "postpones the step at which it happens."
        ),
        causes=[
            "a confident sigmoid/softmax output saturating to exactly 0 or 1 (well-separated data, many steps)",
            "an output that is not a probability at all (ReLU, identity or tanh output) fed to BCE/cross-entropy",
            "float32/float16 outputs, which saturate far earlier than float64",
        ],
        fixes=[
            "loss.from_logits: true (log-sigmoid / log-softmax computed on the pre-activation, never log(0))",
            "model.output: sigmoid (bce) or softmax (cross_entropy)",
            "a lower optimizer.lr only delays it",
        ],
        references=[
            "Goodfellow, Bengio & Courville 2016, Deep Learning, §6.2.2.2-6.2.2.3 and §4.1 (softplus / log-softmax "
            "forms avoid log(0))",
            "TensorFlow sigmoid_cross_entropy_with_logits and PyTorch BCEWithLogitsLoss: the fused stable form",
        ],
    )

    def __init__(self, context, settings=None) -> None:
        super().__init__(context, settings)
        loss = (context.start or {}).get("loss") or {}
        self.kind = str(loss.get("kind") or "mse")
        self.epsilon = finite(loss.get("epsilon")) or 0.0
        self.events = [e for e in _LOG_EVENTS if e.applies(self.kind, self.epsilon)]
        self.first: Optional[dict[str, Any]] = None
        self.steps_hit = 0
        self.last_hit: Optional[int] = None
        self.peak = 0
        self.peak_step: Optional[int] = None
        self.nan_after: Optional[int] = None
        self.last_step: Optional[int] = None

    def observe(self, record: dict) -> None:
        step = step_of(record)
        self.last_step = step
        if self.first is not None and self.nan_after is None and finite(record.get("loss")) is None \
                and number(record.get("loss")) is not None:
            self.nan_after = step
        li = record.get("loss_in")
        if not isinstance(li, dict):
            return
        counts = _log_counts(li, self.events)
        total = sum(counts.values())
        if total < self.t["min_count"] or total == 0:
            return
        self.steps_hit += 1
        self.last_hit = step
        if total > self.peak:
            self.peak, self.peak_step = total, step
        if self.first is None:
            self.first = {"step": step, "counts": counts, "loss_in": dict(li), "loss": number(record.get("loss"))}
            self.first_step = step
            if finite(record.get("loss")) is None and number(record.get("loss")) is not None:
                self.nan_after = step

    def finish(self, end: Optional[dict]) -> list[Finding]:
        if self.first is None:
            return []
        facts = RunFacts.of(self.context)
        first, li = self.first, self.first["loss_in"]
        parts = [e.describe(first["counts"][e.field], li, self.epsilon, self.kind) for e in self.events
                 if first["counts"][e.field] > 0]
        if len(parts) > 1 and first["counts"].get("n_below_eps"):
            parts[-1] = parts[-1].replace(" came within", " more came within")
        n = finite(li.get("n"))
        of_n = f" (of {int(n)} probabilities)" if n is not None else ""
        eps_text = ("with epsilon 0 that is log(0) = -inf and 0*log(0) = NaN" if self.epsilon == 0
                    else f"epsilon {fmt(self.epsilon)} turns log(0) into {fmt(math.log(self.epsilon))}, a huge but "
                         "finite loss whose gradient 1/(a + epsilon) is just as huge")
        term = _LOG_TERMS.get(self.kind, "takes a log")
        to_end = self.last_hit is not None and self.last_hit == self.last_step
        span = (f"it happened at {self.steps_hit} step(s) up to "
                + ("the end" if to_end else f"step {self.last_hit}")
                + f", at most {self.peak} in one step (step {self.peak_step})")
        nan_text = (f"; the loss became non-finite at step {self.nan_after}" if self.nan_after is not None
                    else "; the loss itself stayed finite")
        output = facts.output
        not_prob = output not in ("sigmoid", "softmax")
        message = (
            "; ".join(parts) + of_n + f" at step {first['step']} where loss.kind {self.kind} {term}"
            + (f" of a {output} output, which is not a probability" if not_prob else "")
            + f"; {eps_text}. {span[0].upper() + span[1:]}{nan_text}. "
            + ("No learning rate helps: the output is not a probability." if not_prob else
               "A lower optimizer.lr only postpones it: the output still saturates, later.")
        )
        fix_list = fixes(facts, "from_logits", "probability_output")
        if not fix_list:
            fix_list = [f"loss.from_logits: true  — keeps the loss exact where epsilon {fmt(self.epsilon)} clamps it"]
        evidence = {
            "step": first["step"], "loss_kind": self.kind, "epsilon": self.epsilon, "output": output,
            **{k: int(finite(li.get(k)) or 0) for k in ("n_zero", "n_one", "n_outside", "n_below_eps")},
            "n": n, "min": number(li.get("min")), "max": number(li.get("max")),
            "loss_at_step": first["loss"], "steps_with_events": self.steps_hit, "last_step": self.last_hit,
            "peak_count": self.peak, "peak_step": self.peak_step, "loss_nonfinite_step": self.nan_after,
        }
        layer = self._output_layer()
        return [self.finding(step=first["step"], layer=layer, message=message, evidence=clean(evidence),
                             fixes=fix_list)]

    def _output_layer(self) -> Optional[str]:
        layers = (self.context.start or {}).get("layers") or []
        return str(layers[-1]["name"]) if layers else None

