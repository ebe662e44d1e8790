"""The YAML config: pydantic models with SPEC.md's keys and defaults, loading, --set overrides.

Every model forbids unknown keys; errors are turned into one-paragraph ConfigError messages
that name the file, the dotted key path (with its line where the YAML gives one) and what is
valid, with a "did you mean" hint for misspelt keys.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import reprlib
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Union, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from nnprobe.data import SOURCES
from nnprobe.nn.activations import HIDDEN, OUTPUT
from nnprobe.errors import ConfigError
from nnprobe.nn.initializers import WEIGHT_INITS
from nnprobe.footprint import check_config_footprint
from nnprobe.limits import MAX_LAYERS, MAX_STEPS

Severity = Literal["info", "warning", "error"]
BUILTIN_ACTIVATIONS = tuple(HIDDEN)  # the registry decides (nnprobe.nn.activations: each class's traits)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info) -> Any:
        """YAML's yes/true would otherwise pass as 1 for a number (pydantic's lax mode)."""
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool):
            if annotation is not bool and bool not in get_args(annotation):
                raise ValueError(f"expected a number or a name, not the boolean {value!r}")
        elif isinstance(value, list) and get_args(annotation) == (int,):  # hidden: [true] is not a width of 1
            flags = [v for v in value if isinstance(v, bool)]
            if flags:
                raise ValueError(f"expected a list of integers, not the boolean {str(flags[0]).lower()} in it")
        return value


class DataConfig(_Strict):
    # the data registry (generators, then file loaders), and `recorded`: a run recorded from a loop nnprobe
    # does not own (nnprobe.Recorder, nnprobe.torch.Probe); it cannot be trained again
    source: Literal[SOURCES]  # type: ignore[valid-type]  (the registry; `recorded` is one of its loaders)
    n_samples: int = Field(100, gt=0)
    # affine
    low: float = 0.0
    high: float = 100.0
    integer: bool = True
    slope: float = 1.0
    intercept: float = 1.0
    noise: Optional[float] = Field(
        None, ge=0, description="noise scale; null = the generator's customary default (docs/data.md)"
    )
    # blobs / spirals / xor / moons / circles
    n_features: int = Field(2, gt=0)
    n_classes: int = Field(3, ge=2)
    separation: float = Field(3.0, ge=0)
    factor: float = Field(0.5, gt=0, lt=1, description="circles: inner radius / outer radius")
    # csv / npz
    path: Optional[str] = None
    target: Optional[Union[int, str]] = Field(None, description="csv: column name or index (default: last); npz: array name (default: y)")
    inputs: Optional[str] = Field(None, description="npz: array name of the inputs (default: x)")
    # preprocessing
    normalize: Literal["none", "standardize", "minmax"] = "none"
    normalize_target: Literal["none", "standardize"] = "none"
    validation_fraction: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_source(self) -> "DataConfig":
        if self.source in ("csv", "npz") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.source == "affine" and self.high <= self.low:
            raise ValueError(f"data.high ({self.high}) must be greater than data.low ({self.low})")
        return self


class InitRange(_Strict):
    """U(low, high), e.g. {low: -0.05, high: 0.05} (Keras's RandomUniform default)."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> "InitRange":
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low {self.low} and high {self.high}")
        return self


OutputName = Literal[tuple(OUTPUT)]  # type: ignore[valid-type]  (the registry's output activations)
InitName = Literal[tuple(WEIGHT_INITS)]  # type: ignore[valid-type]
Init = Union[InitName, InitRange]
BiasInit = Union[InitName, InitRange, float]


class LayerSpec(_Strict):
    """One dense layer of `model.layers`; init, bias_init and init_scale default to the model's."""

    units: Optional[int] = Field(None, gt=0, description="width; optional for the output layer (it follows the "
                                                         "loss and the data)")
    activation: str = Field(description="a built-in hidden activation, or an output activation for the last layer")
    init: Optional[Init] = Field(None, description="null = model.init")
    bias_init: Optional[BiasInit] = Field(None, description="null = model.bias_init")
    init_scale: Optional[float] = Field(None, description="null = model.init_scale")


class ModelConfig(_Strict):
    """The MLP, as `hidden` + `activation` + `output`, or layer by layer as `layers` (output layer last).

    With `layers`, hidden/activation/output are derived from it (the first hidden layer's activation)
    for the code that reads them, and are left out of the resolved config.
    """

    hidden: list[int] = Field(default_factory=lambda: [3], max_length=MAX_LAYERS)
    activation: str = "leaky_relu"
    negative_slope: float = Field(0.01, ge=0)
    output: OutputName = "identity"
    init: Init = "uniform"
    init_scale: float = 1.0
    bias_init: BiasInit = "uniform"
    dtype: Literal["float16", "float32", "float64"] = "float64"
    layers: Optional[list[LayerSpec]] = Field(
        None, min_length=1, max_length=MAX_LAYERS + 1, description="per-layer alternative to hidden/activation/output, output layer last: "
                                        "[{units, activation, init, bias_init, init_scale}, ...]")

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        bad = [w for w in v if w <= 0]
        if bad:
            raise ValueError(f"every hidden width must be a positive integer, got {bad}")
        return v

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v: str) -> str:
        if v in BUILTIN_ACTIVATIONS or ":" in v:
            return v
        hint = difflib.get_close_matches(v, BUILTIN_ACTIVATIONS, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(
            f"unknown activation {v!r}{did}; valid: {', '.join(BUILTIN_ACTIVATIONS)}, "
            "or 'module:name' for a user activation"
        )

    @model_validator(mode="after")
    def _one_form(self) -> "ModelConfig":
        if self.layers is None:
            return self
        both = [k for k in ("hidden", "activation", "output") if k in self.model_fields_set]
        if both:
            raise ValueError(
                f"model.layers describes every layer, so model.{both[0]} cannot be set as well: keep one form, "
                "either model.layers (output layer last) or model.hidden/activation/output")
        *hidden, out = self.layers
        outputs = get_args(OutputName)
        for i, spec in enumerate(hidden):
            if spec.units is None:
                raise ValueError(f"model.layers.{i}.units is required for a hidden layer")
            if spec.activation not in BUILTIN_ACTIVATIONS:
                raise ValueError(f"model.layers.{i}.activation: {spec.activation!r} is not a built-in activation; "
                                 f"valid: {', '.join(BUILTIN_ACTIVATIONS)} (a user activation goes in "
                                 "model.activation, with model.hidden)")
        if out.activation not in outputs:
            raise ValueError(f"model.layers.{len(hidden)}.activation: {out.activation!r} is not an output "
                             f"activation (the last layer is the output layer); valid: {', '.join(outputs)}")
        # the views the rest of nnprobe reads, not marked as set (so they stay out of the resolved config)
        for key, value in (("hidden", [spec.units for spec in hidden]), ("output", out.activation),
                           ("activation", hidden[0].activation if hidden else "identity")):
            self.__dict__[key] = value
        return self

    @model_serializer(mode="wrap")
    def _without_views(self, handler):
        data = handler(self)
        if self.layers is not None:
            for key in ("hidden", "activation", "output"):
                data.pop(key, None)
        return data

    def resolved_layers(self) -> list[LayerSpec]:
        """Every layer, output last, with init, bias_init and init_scale filled in, whichever form configured it."""
        if self.layers is not None:
            specs = self.layers
        else:
            specs = [LayerSpec.model_construct(units=w, activation=self.activation) for w in self.hidden]
            specs.append(LayerSpec.model_construct(units=None, activation=self.output))
        return [LayerSpec.model_construct(
            units=s.units, activation=s.activation,
            init=self.init if s.init is None else s.init,
            bias_init=self.bias_init if s.bias_init is None else s.bias_init,
            init_scale=self.init_scale if s.init_scale is None else s.init_scale) for s in specs]


class LossConfig(_Strict):
    kind: Literal["mse", "bce", "cross_entropy"] = "mse"
    reduction: Literal["mean", "sum"] = "mean"
    from_logits: bool = False
    epsilon: float = Field(0.0, ge=0, le=0.1, description="added inside each log: a small constant such as 1e-7")
    l2: float = Field(0.0, ge=0)


class OptimizerConfig(_Strict):
    kind: Literal["sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"] = "sgd"
    lr: float = Field(0.001, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1.0e-8, gt=0)
    clip_grad_norm: Optional[float] = Field(None, gt=0)


class TrainingConfig(_Strict):
    steps: Optional[int] = Field(None, gt=0, description="optimizer steps (default 1000 unless epochs is set)")
    epochs: Optional[int] = Field(None, gt=0, description="passes over the training set, instead of steps")
    batch_size: Optional[int] = Field(None, gt=0, description="null = full batch")
    shuffle: bool = True

    @field_validator("steps", "epochs")
    @classmethod
    def _sane_length(cls, v: Optional[int], info) -> Optional[int]:
        if v is not None and v > MAX_STEPS:
            hours = v * 100e-6 / 3600  # a probed step of the smallest network takes about 100 us
            took = f"{hours:,.0f} hours" if hours < 48 else f"{hours / 24:,.0f} days"
            raise ValueError(
                f"{v:,} {info.field_name} would take at least {took} even for the smallest network; at most "
                f"{MAX_STEPS:,}. Check for a typo"
            )
        return v

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "TrainingConfig":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set training.steps or training.epochs, not both")
        if self.steps is None and self.epochs is None:
            self.steps = 1000  # SPEC default, made explicit so the resolved config.yaml states it
        return self


class ProbesConfig(_Strict):
    enabled: bool = True
    every: int = Field(1, gt=0)


class ExpectConfig(_Strict):
    max_severity: Optional[Severity] = None
    final_loss_below: Optional[float] = None
    max_grad_norm_below: Optional[float] = Field(None, gt=0)
    steps_completed: Optional[bool] = Field(None, description="true: the run must finish all its steps")
    findings_absent: list[str] = Field(default_factory=list)

    @field_validator("findings_absent")
    @classmethod
    def _check_codes(cls, v: list[str]) -> list[str]:
        from nnprobe.diagnose.detectors import validate_codes

        validate_codes(v, "expect.findings_absent")
        return v


_NAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")
MAX_NAME = 100


def safe_name(text: str) -> str:
    """A file stem made usable as a run name: unsafe characters to '-', at most MAX_NAME characters."""
    name = _NAME_UNSAFE.sub("-", text).strip()[:MAX_NAME].strip(". ")
    return name or "run"


class Config(_Strict):
    name: Optional[str] = Field(None, description="names the run directory: no '/', backslash or control characters")
    seed: int = Field(0, ge=0, lt=2**128, description="a non-negative integer (NumPy's SeedSequence)")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-code overrides: thresholds, severity, enabled"
    )
    ignore: list[str] = Field(default_factory=list)
    stop_on: list[str] = Field(default_factory=lambda: ["nonfinite"])
    expect: ExpectConfig = Field(default_factory=ExpectConfig)

    @field_validator("name")
    @classmethod
    def _usable_as_directory(cls, v: Optional[str]) -> Optional[str]:
        """The run directory is runs/NAME-STAMP: a name must not leave runs/ or break the file system."""
        if v is None:
            return v
        if not v.strip():
            raise ValueError("the name is empty; give the run a name (it names its directory under runs/) or remove the key")
        if _NAME_UNSAFE.search(v) or v.strip(". ") == "":
            raise ValueError(
                f"{v[:40]!r} cannot name a run directory: no '/', '\\', '.' or '..' alone, or control characters. "
                "Use letters, digits, '-', '_' and '.'"
            )
        if len(v) > MAX_NAME:
            raise ValueError(f"the name has {len(v)} characters; at most {MAX_NAME} (it names a directory)")
        return v

    # field (not model) validators, so an unknown code is reported at its key path and line
    @field_validator("ignore", "stop_on")
    @classmethod
    def _check_codes(cls, v: list[str], info) -> list[str]:
        from nnprobe.diagnose.detectors import validate_codes

        validate_codes(v, info.field_name)
        return v

    @field_validator("detectors")
    @classmethod
    def _check_detectors(cls, v: dict) -> dict:
        from nnprobe.diagnose.detectors import validate_detector_settings

        validate_detector_settings(v)
        return v

    @property
    def task(self) -> str:
        """'regression' for mse, 'classification' for the cross-entropy family."""
        return "regression" if self.loss.kind == "mse" else "classification"


# ---------------------------------------------------------------- loading


#: a config is a few hundred bytes; 1 MiB leaves room for long detector lists and comments
MAX_CONFIG_BYTES = 1 << 20
#: nodes the document may hold once every alias is expanded (an alias bomb of a few hundred bytes holds billions)
MAX_YAML_NODES = 100_000
#: mappings and lists inside each other (the constructor recurses once per level)
MAX_YAML_DEPTH = 50

# libyaml's parser where PyYAML was built with it (about 10x faster); the same safe constructor either way
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first = key, line, first


class _Loader(_SafeBase):
    """yaml.safe_load's loader (no tag ever runs code) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    raise _DuplicateKey(key_node.value, line, seen[key_node.value])
                seen[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(text: str, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_NODES, or that nests too deep, from its events alone.

    The event stream does not expand aliases: each anchor's expanded size is counted once, and
    an alias adds that count, so a bomb is refused after reading its few hundred bytes.
    """
    sizes: dict[str, int] = {}
    open_sizes: list[int] = [0]
    open_anchors: list[Optional[str]] = [None]
    for event in yaml.parse(text, Loader=_SafeBase):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_sizes) > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{source}, line {event.start_mark.line + 1}: mappings and lists nest more than {MAX_YAML_DEPTH} "
                    "deep; a config is at most a few levels deep. Check the indentation and brackets there."
                )
            open_sizes.append(1)
            open_anchors.append(event.anchor)
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            n = open_sizes.pop()
            anchor = open_anchors.pop()
            if anchor is not None:
                sizes[anchor] = n
        elif isinstance(event, yaml.AliasEvent):
            n = sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            n = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        else:
            continue
        open_sizes[-1] += n
        if open_sizes[-1] > MAX_YAML_NODES:
            why = (" once its YAML aliases (*name) are resolved; a config holds a few dozen. Remove the aliases "
                   "that repeat large anchors (&name)") if sizes else "; a config holds a few dozen. Is this the right file?"
            raise ConfigError(
                f"{source}, line {event.start_mark.line + 1}: the document holds more than {MAX_YAML_NODES:,} values{why}."
            )


def _line_index(root: Any) -> dict[tuple, int]:
    """Map each key path in the composed document to its 1-based line, for error messages.

    An alias's node is the anchor's node: it is walked once, under the first path that reaches it.
    """
    lines: dict[tuple, int] = {}
    seen: set[int] = set()

    def walk(node: Any, path: tuple) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = path + (key.value,)
                lines.setdefault(sub, key.start_mark.line + 1)
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(path + (i,), item.start_mark.line + 1)
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxdict = 6
_REPR.maxlevel = 2
_REPR.maxstring = 60


def _short(value: Any, limit: int = 80) -> str:
    """repr() of a value given in a config, cut short: a message is one paragraph, an expanded list can be huge."""
    if isinstance(value, np.generic):
        value = value.item()
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _nonfinite_paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Key paths whose value is a float NaN or infinity (YAML's .nan, .inf)."""
    if isinstance(node, float) and not math.isfinite(node):
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _nonfinite_paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nonfinite_paths(value, path + (i,))


def _model_for_path(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model that owns the mapping at `loc` (used for did-you-mean hints)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):  # an item of a list of models (model.layers.0): the list's field named it
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def _model_in(annotation: Any) -> Optional[type[BaseModel]]:
    """The pydantic model an annotation holds, through Optional[...] and list[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class _Given:
    """The offending input, shown by !r as a short repr (an expanded list can be huge)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return _short(self.value)

    def __str__(self) -> str:
        return str(self.value) if isinstance(self.value, str) else _short(self.value)


def _describe_error(err: dict, lines: dict[tuple, int], source: str) -> str:
    # drop the union-member tags pydantic appends ("literal[...]", "float"), not keys such as data.integer
    loc = tuple(p for p in err["loc"]
                if not (isinstance(p, str) and (p.startswith("literal[") or p in ("float", "int", "str", "bool"))))
    path = ".".join(str(p) for p in loc) or "(top level)"
    where = source
    line = lines.get(loc)
    if line is None and loc:
        line = lines.get(loc[:-1])
    if line is not None:
        where = f"{source}, line {line}"
    kind = err["type"]
    given = _Given(err.get("input"))
    if kind == "extra_forbidden":
        parent = _model_for_path(loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        did = f" Did you mean {'.'.join(str(p) for p in loc[:-1] + (hint[0],))!r}?" if hint else ""
        return f"{where}: unknown key {path!r}.{did} Valid keys here: {', '.join(valid)}."
    if kind == "missing":
        return f"{where}: required key {path!r} is missing."
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        hint = difflib.get_close_matches(str(given), [e.strip(" '") for e in expected.replace(" or ", ",").split(",")], n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{where}: {path}: got {given!r}{did}; expected one of {expected}."
    if kind.endswith(("_type", "_parsing")) or kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{where}: {path}: {msg.lower().rstrip('.')}, got {given!r}."
    msg = msg if msg.endswith(".") else msg + "."
    if loc and msg.startswith(path):  # the validator already named the key (e.g. "detectors.dead-relu.fraction: ...")
        return f"{where}: {msg}"
    return f"{where}: {path}: {msg}"


def _set_dotted(raw: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(f"{source}: --set {dotted}: {prefix!r} is not a mapping, so it has no key {parts[i + 1]!r}.")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split one --set argument, KEY=VALUE, with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example --set optimizer.lr=0.01.")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set {text!r}: the key must be a dotted path such as optimizer.lr.")
    try:
        value = parse_yaml(value_text, f"--set {key}")[0] if value_text.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"--set {text[:80]!r}: the value is not usable YAML: {exc}") from None
    return key, value


@dataclass
class YamlDocument:
    """A config file's data and its composed node tree (kept for the line numbers of error messages)."""

    data: dict
    root: Any

    def lines(self) -> dict[tuple, int]:
        return _line_index(self.root)


def _read_text(path: Path) -> str:
    """The file's text, refusing what is not a regular file (a FIFO would hang) or is larger than a config can be."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a directory, expected a YAML config file.")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: is not a regular file (a pipe or a device?); pass a YAML config file.")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: is {info.st_size:,} bytes; a config is a few hundred, and nnprobe reads at most "
                f"{MAX_CONFIG_BYTES:,}. Is this the right file? Data belong in a csv or npz file (data.path)."
            )
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file. Check the path, or start from configs/quickstart.yaml.") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: is larger than the {MAX_CONFIG_BYTES:,} bytes nnprobe reads from a config.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: is not UTF-8 text; save the config as UTF-8.") from None


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, _DuplicateKey):
        return ConfigError(
            f"{path}, line {exc.line}: key {exc.key!r} is given twice in the same mapping (first on line {exc.first}); "
            "YAML would silently keep the last one. Remove one of them."
        )
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(
        f"{path}{where}: not valid YAML: {problem}. Fix the syntax there (indentation and ':' after each key are "
        "the usual culprits) and run `nnprobe validate` again."
    )


def parse_yaml(text: str, source: str) -> tuple[Any, Any]:
    """(data, composed root) of a YAML document: bounded before anything expands it, composed once."""
    try:
        _check_expansion(text, source)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(Path(source), exc) from None
    except RecursionError:
        raise ConfigError(f"{source}: the document nests too deep to read.") from None
    return data, root


def load_raw(path: Path) -> YamlDocument:
    """Read a YAML file into a dict, raising ConfigError for anything unreadable."""
    path = Path(path)
    raw, root = parse_yaml(_read_text(path), str(path))
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a config needs at least `data: {{source: ...}}`.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, seed, data, model, ...), got a {type(raw).__name__}.")
    return YamlDocument(raw, root)


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = (), *, check_memory: bool = True) -> Config:
    """Load, override and validate a config; relative data paths resolve against the config's folder.

    `check_memory=False` skips the estimate of what training would allocate (diagnose trains nothing)."""
    path = Path(path)
    doc = load_raw(path)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(doc.data, key, value, str(path))
    return validate_config(doc.data, source=str(path), lines=doc.lines, base_dir=path.parent,
                           default_name=safe_name(path.stem), check_memory=check_memory)


def _check_finite(raw: dict, source: str, lines: dict[tuple, int]) -> None:
    """NaN or infinity where a number is expected passes most range checks and is written back as null."""
    for loc in _nonfinite_paths(raw):
        line = lines.get(loc)
        where = f"{source}, line {line}" if line is not None else source
        key = ".".join(str(p) for p in loc)
        raise ConfigError(
            f"{where}: {key}: got {_short(_nested(raw, loc))}; every number in a config must be finite. Give a "
            "number, or null where the key allows it (e.g. optimizer.clip_grad_norm: null for no clipping)."
        )


def _nested(raw: Any, loc: tuple) -> Any:
    for part in loc:
        raw = raw[part]
    return raw


def validate_config(raw: dict, *, source: str, text: str = "", lines: Optional[Callable[[], dict]] = None,
                    base_dir: Path = Path("."), default_name: str = "run", check_memory: bool = True) -> Config:
    """Validate a raw mapping; `lines` (or the YAML `text`) gives the line numbers used in messages."""
    if lines is None:
        lines = (lambda: _line_index(parse_yaml(text, source)[1])) if text else dict
    index: Optional[dict] = None

    def line_index() -> dict:
        nonlocal index
        if index is None:
            index = lines()
        return index

    if any(True for _ in _nonfinite_paths(raw)):
        _check_finite(raw, source, line_index())
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe_error(e, line_index(), source) for e in exc.errors(include_url=False)]
        text_out = problems[0]
        if len(problems) > 1:
            shown = problems[1:4]
            text_out += f" Also ({len(problems) - 1} more): " + " ".join(shown)
            if len(problems) > 4:
                text_out += f" ... and {len(problems) - 4} more."
        raise ConfigError(text_out + " Run `nnprobe validate --schema` for every key and its type.") from None
    if config.name is None:
        config.name = default_name
    if config.data.path is not None:
        data_path = Path(config.data.path)
        if not data_path.is_absolute():
            data_path = (base_dir / data_path).resolve()
        config.data.path = str(data_path)
    if check_memory:
        check_config_footprint(config, source=source)
    return config


def dump_config(config: Config) -> str:
    """The resolved config as YAML, every key explicit, so a run directory is self-describing."""
    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)


def json_schema() -> dict:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nnprobe config"
    return schema
