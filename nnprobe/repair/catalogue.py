"""The repair catalogue: for each finding code, config patches to try in order, after the finding's own fixes.

The order follows AUTOTRAINER's strategy lists (Zhang et al., ICSE 2021, Table 2; the TOSEM
journal version extends them): the cheapest, most specific repair first, then broader ones.
AUTOTRAINER adds layers (batch normalisation) where nnprobe has config keys; where a single
key rarely suffices (a summed loss on raw-scale targets) an entry changes the few keys that
belong together, as the seed cases' `-fixed` twins do. docs/fix.md lists every entry with its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from nnprobe.repair.patches import Patch, combine, get_dotted

PROBABILITY_OUTPUT = {"bce": "sigmoid", "cross_entropy": "softmax"}
RELU_FAMILY = ("relu", "leaky_relu", "elu", "gelu", "gelu_erf")
FAN_IN_INITS = tuple(f"{rule}_{shape}" for rule in ("he", "xavier", "lecun")
                     for shape in ("normal", "uniform", "truncated_normal"))
ADAM_LR = 0.001  # Kingma & Ba 2015's default step size


@dataclass(frozen=True)
class Situation:
    """What a repair is built from: the current config (a resolved plain dict) and the finding's evidence."""

    config: dict[str, Any]
    evidence: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return get_dotted(self.config, key, default)

    @property
    def classification(self) -> bool:
        return self.get("loss.kind") in PROBABILITY_OUTPUT

    @property
    def lr(self) -> float:
        return float(self.get("optimizer.lr", 0.001))


@dataclass(frozen=True)
class Repair:
    """One catalogue entry: a name, the patch it builds (None where it does not apply) and why."""

    name: str
    build: Callable[[Situation], Optional[Patch]]
    why: str


def _round(x: float) -> float:
    """Two significant digits: the learning rates a person would write."""
    return float(f"{x:.2g}")


def _unless_set(s: Situation, patch: Patch) -> Optional[Patch]:
    """The part of the patch that changes something, or None when nothing would."""
    missing = object()
    out = {k: v for k, v in patch.items() if s.get(k, missing) != v}
    return out or None


def from_logits(s: Situation) -> Optional[Patch]:
    return _unless_set(s, {"loss.from_logits": True}) if s.classification else None


def probability_output(s: Situation) -> Optional[Patch]:
    kind, output = s.get("loss.kind"), s.get("model.output")
    if kind == "bce" and output == "softmax":
        return _unless_set(s, {"loss.kind": "cross_entropy", "loss.from_logits": True})
    if kind in PROBABILITY_OUTPUT and output != PROBABILITY_OUTPUT[kind]:
        return _unless_set(s, {"model.output": PROBABILITY_OUTPUT[kind], "loss.from_logits": True})
    return None


def identity_output(s: Situation) -> Optional[Patch]:
    return None if s.classification else _unless_set(s, {"model.output": "identity"})


def standardize(s: Situation) -> Optional[Patch]:
    patch = {"data.normalize": "standardize"}
    if not s.classification:
        patch["data.normalize_target"] = "standardize"
    return _unless_set(s, patch)


def mean_reduction(s: Situation) -> Optional[Patch]:
    return _unless_set(s, {"loss.reduction": "mean"})


def data_scale(s: Situation) -> Optional[Patch]:
    """Standardized inputs (and regression targets) with a mean loss: the scale every default assumes."""
    return _unless_set(s, combine([standardize(s) or {}, mean_reduction(s) or {}]))


def clip(s: Situation) -> Optional[Patch]:
    return _unless_set(s, {"optimizer.clip_grad_norm": 1.0}) if s.get("optimizer.clip_grad_norm") is None else None


def lr_times(factor: float) -> Callable[[Situation], Optional[Patch]]:
    def build(s: Situation) -> Optional[Patch]:
        return _unless_set(s, {"optimizer.lr": _round(s.lr * factor)})
    build.__name__ = f"lr_times_{factor:g}"
    return build


def fan_in_init(s: Situation) -> Optional[Patch]:
    activation = str(s.get("model.activation"))
    init = "he_normal" if activation in RELU_FAMILY else "xavier_normal"
    patch: Patch = {"model.bias_init": "zeros"}
    if s.get("model.init") not in FAN_IN_INITS:
        patch["model.init"] = init
    if s.get("model.init_scale", 1.0) != 1.0:
        patch["model.init_scale"] = 1.0
    return _unless_set(s, patch)


def leaky_relu(s: Situation) -> Optional[Patch]:
    activation = s.get("model.activation")
    if activation == "relu" or (activation == "leaky_relu" and float(s.get("model.negative_slope", 0.01)) < 0.01):
        return _unless_set(s, {"model.activation": "leaky_relu", "model.negative_slope": 0.01})
    return None


def relu_he(s: Situation) -> Optional[Patch]:
    if s.get("model.activation") not in ("sigmoid", "tanh"):
        return None
    return _unless_set(s, {"model.activation": "relu", "model.init": "he_normal", "model.bias_init": "zeros"})


def adam(s: Situation) -> Optional[Patch]:
    return _unless_set(s, {"optimizer.kind": "adam", "optimizer.lr": ADAM_LR}) if s.get("optimizer.kind") != "adam" \
        else None


def float32(s: Situation) -> Optional[Patch]:
    return _unless_set(s, {"model.dtype": "float32"}) if s.get("model.dtype") == "float16" else None


def larger_batch(s: Situation) -> Optional[Patch]:
    batch = s.get("training.batch_size")
    if batch is None:
        return None
    n = int(s.get("data.n_samples") or 0)
    return _unless_set(s, {"training.batch_size": None if n and batch * 4 >= n else batch * 4})


def both(*builders: Callable[[Situation], Optional[Patch]]) -> Callable[[Situation], Optional[Patch]]:
    """The builders' patches together; None unless every one of them applies."""
    def build(s: Situation) -> Optional[Patch]:
        parts = [b(s) for b in builders]
        return combine(parts) if all(parts) else None
    build.__name__ = "+".join(b.__name__ for b in builders)
    return build


def by_direction(high: Callable, low: Callable) -> Callable[[Situation], Optional[Patch]]:
    """large-update-ratio: one repair when the ratio is too high, another when too low."""
    def build(s: Situation) -> Optional[Patch]:
        return (low if s.evidence.get("direction") == "low" else high)(s)
    build.__name__ = f"{high.__name__}|{low.__name__}"
    return build


LOWER_LR = Repair("lower learning rate", lr_times(0.1), "10x smaller steps (AUTOTRAINER: reduce the learning rate)")
CLIP = Repair("clip gradients", clip, "caps each step's gradient norm at 1 (Pascanu et al. 2013)")
ADAM = Repair("Adam", adam, "per-parameter step sizes at Adam's default lr 1e-3 (Kingma & Ba 2015; AUTOTRAINER)")
FAN_IN = Repair("fan-in init", fan_in_init, "zero-mean weights scaled to fan-in, zero biases (He et al. 2015; "
                                            "Glorot & Bengio 2010)")
STANDARDIZE = Repair("standardize data", standardize, "zero-mean, unit-variance inputs (and regression targets) "
                                                      "(LeCun et al. 1998, Efficient BackProp §4.3)")
DATA_SCALE = Repair("data scale", data_scale, "standardized data and a mean loss: the scale learning rates assume")
FROM_LOGITS = Repair("loss from logits", from_logits, "log-sigmoid / log-softmax of the pre-activation never "
                                                      "takes log(0)")
PROBABILITY = Repair("probability output", probability_output, "the output the loss expects, loss from logits "
                                                               "(Bishop 2006 §5.2)")

# Per finding code, in the order they are tried (after the finding's own fixes).
REPAIRS: dict[str, tuple[Repair, ...]] = {
    "nonfinite": (
        Repair("float32", float32, "float16 overflows above 65504"),
        FROM_LOGITS, PROBABILITY, DATA_SCALE, CLIP, LOWER_LR, FAN_IN,
        Repair("data scale and fan-in init", both(data_scale, fan_in_init),
               "the three causes of seed case 1 removed together"),
        Repair("clip and lower learning rate", both(clip, lr_times(0.1)), "both limits on the step size"),
    ),
    "log-zero": (FROM_LOGITS, PROBABILITY),
    "output-loss-mismatch": (
        PROBABILITY,
        Repair("identity output", identity_output, "regression targets need an unbounded output"),
    ),
    "exploding-gradients": (
        DATA_SCALE, CLIP, LOWER_LR, FAN_IN,
        Repair("data scale and fan-in init", both(data_scale, fan_in_init), "scale and init together"),
    ),
    "vanishing-gradients": (
        Repair("ReLU with He init", relu_he, "no flat region for z > 0 (AUTOTRAINER: change the activation)"),
        Repair("leaky ReLU", leaky_relu, "a negative slope keeps a gradient flowing"),
        FAN_IN, STANDARDIZE, ADAM,
    ),
    "dead-relu": (
        Repair("leaky ReLU", leaky_relu, "a negative slope of 0.01 keeps dead units learning (Maas et al. 2013)"),
        FAN_IN, LOWER_LR,
        Repair("lower learning rate and fan-in init", both(lr_times(0.1), fan_in_init), "both causes at once"),
        ADAM,
    ),
    "saturated-activations": (
        STANDARDIZE, FAN_IN, LOWER_LR,
        Repair("ReLU with He init", relu_he, "no flat region for z > 0"),
    ),
    "unnormalized-inputs": (STANDARDIZE,),
    "poor-init": (FAN_IN,),
    "large-update-ratio": (
        Repair("learning rate by direction", by_direction(lr_times(0.1), lr_times(10)),
               "10x lower when updates are too large, 10x higher when too small (CS231n: ratio ~1e-3)"),
        Repair("clip gradients when too large", by_direction(clip, lambda s: None), "caps the step"),
        ADAM,
    ),
    "loss-divergence": (LOWER_LR, CLIP, ADAM),
    "loss-plateau": (
        ADAM,
        Repair("higher learning rate", lr_times(3), "3x larger steps where plain SGD crawls"),
        Repair("lower learning rate", lr_times(1 / 3), "3x smaller steps where they bounce across a valley"),
    ),
    "loss-oscillation": (
        ADAM, LOWER_LR,
        Repair("larger batch", larger_batch, "4x the batch (or the full batch): less gradient noise (AUTOTRAINER)"),
    ),
    "loss-spike": (
        LOWER_LR, CLIP, ADAM,
        Repair("larger batch", larger_batch, "4x the batch (or the full batch): less gradient noise"),
    ),
    # A wrong derivative is a bug in user code: the finding's own fix (a built-in activation) is the only change.
    "gradient-mismatch": (),
}


# Tried once fixes were accepted: a learning rate chosen for the broken config (raw-scale data, a summed
# loss, a mismatched output) is rarely the right one for the repaired config. A larger step first.
TUNING: tuple[Repair, ...] = (
    Repair("learning rate x10", lr_times(10), "the repaired config may take much larger steps"),
    Repair("learning rate x3", lr_times(3), "a smaller increase"),
)
TUNE = "tuning"  # the pseudo finding code of the tuning rounds
PRUNE = "pruning"  # ... and of the round that tries the repaired config without each accepted patch


def repairs_for(code: str, situation: Situation) -> list[tuple[Repair, Patch]]:
    """The catalogue's applicable patches for a finding (TUNE: the tuning list), in order, without repeats."""
    out: list[tuple[Repair, Patch]] = []
    seen: list[Patch] = []
    for repair in TUNING if code == TUNE else REPAIRS.get(code, ()):
        patch = repair.build(situation)
        if patch and patch not in seen:
            seen.append(patch)
            out.append((repair, patch))
    return out


def describe_repair(repair: Repair) -> str:
    """'lower learning rate: 10x smaller steps (...)', as explain lists the catalogue."""
    return f"{repair.name}: {repair.why}"


__all__ = ["PRUNE", "REPAIRS", "TUNE", "TUNING", "Repair", "Situation", "describe_repair", "repairs_for"]
