"""The YAML config: pydantic models with SPEC.md's keys and defaults, loading, --set overrides.

Every model forbids unknown keys; errors are turned into one-paragraph ConfigError messages
that name the file, the dotted key path (with its line where the YAML gives one) and what is
valid, with a "did you mean" hint for misspelt keys.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nnprobe.data import SOURCES
from nnprobe.nn.activations import HIDDEN, OUTPUT
from nnprobe.errors import ConfigError

Severity = Literal["info", "warning", "error"]
BUILTIN_ACTIVATIONS = tuple(HIDDEN)  # the registry decides (nnprobe.nn.activations: each class's traits)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info) -> Any:
        """YAML's yes/true would otherwise pass as 1 for a number (pydantic's lax mode)."""
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and bool not in get_args(annotation):
                raise ValueError(f"expected a number or a name, not the boolean {value!r}")
        return value


class DataConfig(_Strict):
    source: Literal[SOURCES]  # type: ignore[valid-type]  (the data registry: generators, then file loaders)
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


class ModelConfig(_Strict):
    hidden: list[int] = Field(default_factory=lambda: [3])
    activation: str = "leaky_relu"
    negative_slope: float = Field(0.01, ge=0)
    output: Literal[tuple(OUTPUT)] = "identity"  # type: ignore[valid-type]  (the registry's output activations)
    init: Literal[
        "uniform", "normal", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "lecun_normal", "zeros"
    ] = "uniform"
    init_scale: float = 1.0
    bias_init: Union[Literal["zeros", "uniform", "normal"], float] = "uniform"
    dtype: Literal["float16", "float32", "float64"] = "float64"

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


class LossConfig(_Strict):
    kind: Literal["mse", "bce", "cross_entropy"] = "mse"
    reduction: Literal["mean", "sum"] = "mean"
    from_logits: bool = False
    epsilon: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)


class OptimizerConfig(_Strict):
    kind: Literal["sgd", "momentum", "nesterov", "adam", "rmsprop"] = "sgd"
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


class Config(_Strict):
    name: Optional[str] = None
    seed: int = 0
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


def _line_index(text: str) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line, for error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple, int] = {}

    def walk(node: Any, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = path + (key.value,)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _model_for_path(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model that owns the mapping at `loc` (used for did-you-mean hints)."""
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


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
    given = err.get("input")
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
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.__class__.__name__}).") from None
    return key, value


def load_raw(path: Path) -> tuple[dict, str]:
    """Read a YAML file into a dict, raising ConfigError for anything unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file. Check the path, or start from configs/quickstart.yaml.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML config file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}).") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{path}{where}: not valid YAML: {problem}. Fix the syntax there (indentation and ':' after each key are "
            "the usual culprits) and run `nnprobe validate` again."
        ) from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a config needs at least `data: {{source: ...}}`.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, seed, data, model, ...), got a {type(raw).__name__}.")
    return raw, text


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, override and validate a config; relative data paths resolve against the config's folder."""
    path = Path(path)
    raw, text = load_raw(path)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, str(path))
    return validate_config(raw, source=str(path), text=text, base_dir=path.parent, default_name=path.stem)


def validate_config(raw: dict, *, source: str, text: str = "", base_dir: Path = Path("."), default_name: str = "run") -> Config:
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        lines = _line_index(text) if text else {}
        problems = [_describe_error(e, lines, source) for e in exc.errors(include_url=False)]
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
    return config


def dump_config(config: Config) -> str:
    """The resolved config as YAML, every key explicit, so a run directory is self-describing."""
    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)


def json_schema() -> dict:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nnprobe config"
    return schema
