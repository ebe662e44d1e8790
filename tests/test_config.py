"""nnprobe.config: SPEC defaults, and every way a config can be wrong, each named by file, key path and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nnprobe.config import Config, dump_config, json_schema, load_config, parse_override, validate_config
from nnprobe.errors import ConfigError

MINIMAL = "data:\n  source: affine\n"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str, overrides=()) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert str(path) in message  # every message names the file
    assert "Traceback" not in message and "\n" not in message.strip()
    return message


# ---------------------------------------------------------------- defaults


def test_every_key_has_its_spec_default(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL, "relu-regression.yaml"))
    assert cfg.name == "relu-regression"  # the config file's stem
    assert cfg.seed == 0
    d = cfg.data
    assert (d.source, d.n_samples, d.low, d.high, d.integer, d.slope, d.intercept) == ("affine", 100, 0, 100, True, 1, 1)
    assert (d.normalize, d.normalize_target, d.validation_fraction, d.path) == ("none", "none", 0.0, None)
    m = cfg.model
    assert (m.hidden, m.activation, m.negative_slope, m.output) == ([3], "leaky_relu", 0.01, "identity")
    assert (m.init, m.init_scale, m.bias_init, m.dtype) == ("uniform", 1.0, "uniform", "float64")
    lo = cfg.loss
    assert (lo.kind, lo.reduction, lo.from_logits, lo.epsilon, lo.l2) == ("mse", "mean", False, 0.0, 0.0)
    o = cfg.optimizer
    assert (o.kind, o.lr, o.momentum, o.beta1, o.beta2, o.eps, o.clip_grad_norm) == ("sgd", 0.001, 0.9, 0.9, 0.999, 1e-8, None)
    t = cfg.training
    assert (t.steps, t.epochs, t.batch_size, t.shuffle) == (1000, None, None, True)
    assert (cfg.probes.enabled, cfg.probes.every) == (True, 1)
    assert cfg.detectors == {} and cfg.ignore == [] and cfg.stop_on == ["nonfinite"]
    assert cfg.expect.max_severity is None and cfg.expect.final_loss_below is None
    assert cfg.task == "regression"


def test_the_spec_example_loads_with_its_values(tmp_path):
    text = """\
name: relu-regression
seed: 0
data:
  source: affine
  n_samples: 100
  low: 0
  high: 100
  integer: true
  slope: 1
  intercept: 1
  normalize: none
  normalize_target: none
  validation_fraction: 0.0
model:
  hidden: [3]
  activation: leaky_relu
  negative_slope: 0.01
  output: identity
  init: uniform
  init_scale: 1.0
  bias_init: uniform
  dtype: float64
loss: {kind: mse, reduction: mean, from_logits: false, epsilon: 0.0, l2: 0.0}
optimizer: {kind: sgd, lr: 0.001, momentum: 0.9, beta1: 0.9, beta2: 0.999, eps: 1.0e-8, clip_grad_norm: null}
training: {steps: 1000, batch_size: null, shuffle: true}
probes: {enabled: true, every: 1}
detectors:
  dead-relu: {fraction: 0.5}
ignore: []
stop_on: [nonfinite]
expect:
  max_severity: info
  final_loss_below: null
"""
    cfg = load_config(write(tmp_path, text, "other-stem.yaml"))
    assert cfg.name == "relu-regression"
    assert cfg.detectors == {"dead-relu": {"fraction": 0.5}}
    assert cfg.expect.max_severity == "info"
    assert cfg.optimizer.eps == 1e-8 and isinstance(cfg.optimizer.eps, float)
    # the resolved config round-trips: every key explicit, nothing lost
    assert validate_config(yaml.safe_load(dump_config(cfg)), source="resolved") == cfg


def test_classification_task_and_bias_init_number(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "loss: {kind: cross_entropy}\nmodel: {bias_init: 0.1}\n"))
    assert cfg.task == "classification"
    assert cfg.model.bias_init == 0.1


# ---------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "optimiser:\n  lr: 0.1\n")
    assert "line 3" in msg
    assert "'optimiser'" in msg and "Did you mean 'optimizer'?" in msg


def test_unknown_nested_key_names_its_path(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "model:\n  activaton: relu\n")
    assert "line 4" in msg
    assert "'model.activaton'" in msg and "Did you mean 'model.activation'?" in msg
    assert "negative_slope" in msg  # the valid keys are listed


def test_unknown_activation_suggests_and_lists(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "model:\n  activation: rleu\n")
    assert "line 4" in msg and "model.activation" in msg and "'relu'" in msg and "leaky_relu" in msg


def test_unknown_literal_value_suggests(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "optimizer:\n  kind: adma\n")
    assert "line 4" in msg and "optimizer.kind" in msg and "did you mean 'adam'" in msg


@pytest.mark.parametrize(
    ("text", "path", "line", "hint"),
    [
        ("stop_on: [nonfinit]\n", "stop_on", 3, "nonfinite"),
        ("ignore:\n  - dead-rel\n", "ignore", 3, "dead-relu"),
        ("expect:\n  findings_absent: [log-zer]\n", "expect.findings_absent", 4, "log-zero"),
        ("detectors:\n  dead-relu: {fractoin: 0.5}\n", "detectors.dead-relu.fractoin", 3, "fraction"),
    ],
    ids=["stop_on", "ignore", "findings_absent", "detector-setting"],
)
def test_unknown_finding_code_is_named_at_its_key(tmp_path, text, path, line, hint):
    """Regression: codes were checked in a model validator, so the message said '(top level)' and no line."""
    msg = config_error(tmp_path, MINIMAL + text)
    assert f"line {line}: {path}" in msg
    assert f"did you mean '{hint}'" in msg
    assert "(top level)" not in msg
    assert f"{path}: {path}" not in msg


# ---------------------------------------------------------------- wrong types and values


def test_wrong_type_names_key_path_line_and_value(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "optimizer:\n  lr: fast\n")
    assert "line 4" in msg and "optimizer.lr" in msg and "'fast'" in msg and "number" in msg


def test_wrong_type_on_a_key_whose_name_starts_like_a_type(tmp_path):
    """Regression: loc parts starting with 'int' were dropped as union tags, so data.integer was reported as 'data'."""
    msg = config_error(tmp_path, MINIMAL + "  integer: maybe\n")
    assert "line 3: data.integer:" in msg and "'maybe'" in msg
    msg = config_error(tmp_path, MINIMAL + "  intercept: [1]\n")
    assert "data.intercept" in msg


def test_out_of_range_value(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "optimizer:\n  lr: -1\n")
    assert "line 4" in msg and "optimizer.lr" in msg and "greater than 0" in msg and "-1" in msg


def test_bad_hidden_width(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "model:\n  hidden: [3, 0]\n")
    assert "model.hidden" in msg and "positive" in msg


def test_steps_and_epochs_both_set(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "training:\n  steps: 3\n  epochs: 2\n")
    assert "line 3" in msg and "training" in msg and "not both" in msg


def test_epochs_alone_leaves_steps_unset(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "training: {epochs: 2}\n"))
    assert cfg.training.epochs == 2 and cfg.training.steps is None


# ---------------------------------------------------------------- unreadable files


def test_tab_in_yaml_names_line_and_column(tmp_path):
    msg = config_error(tmp_path, "seed: 0\ndata:\n\tsource: affine\n")
    assert "line 3, column 1" in msg and "not valid YAML" in msg


def test_missing_colon_names_line_and_column(tmp_path):
    msg = config_error(tmp_path, "data:\n  source affine\n  n_samples: 3\n")
    assert "line 3, column" in msg and "not valid YAML" in msg


def test_empty_file(tmp_path):
    assert "empty" in config_error(tmp_path, "")
    assert "empty" in config_error(tmp_path, "# only a comment\n")


def test_top_level_list(tmp_path):
    msg = config_error(tmp_path, "- data\n- model\n")
    assert "top level must be a mapping" in msg and "list" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such config file") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_data_source_missing(tmp_path):
    msg = config_error(tmp_path, "data:\n  n_samples: 10\n")
    assert "line 1" in msg and "'data.source' is missing" in msg
    msg = config_error(tmp_path, "seed: 1\n")
    assert "'data' is missing" in msg


def test_csv_without_a_path(tmp_path):
    msg = config_error(tmp_path, "data:\n  source: csv\n")
    assert "data.path is required" in msg


# ---------------------------------------------------------------- --set overrides


def test_set_overrides_parse_values_as_yaml(tmp_path):
    path = write(tmp_path, MINIMAL + "optimizer:\n  lr: 0.5\n")
    cfg = load_config(path, ["optimizer.lr=0.1", "model.hidden=[8, 4]", "loss.from_logits=true",
                             "optimizer.eps=1e-3", "training.batch_size=null"])
    assert cfg.optimizer.lr == 0.1 and isinstance(cfg.optimizer.lr, float)
    assert cfg.model.hidden == [8, 4]
    assert cfg.loss.from_logits is True
    assert cfg.optimizer.eps == 0.001  # YAML 1.1 reads 1e-3 as text; the model converts it
    assert cfg.training.batch_size is None


def test_set_creates_a_missing_section(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), ["loss.kind=bce"])
    assert cfg.loss.kind == "bce"


def test_set_a_nested_new_key_is_rejected_as_unknown(tmp_path):
    msg = config_error(tmp_path, MINIMAL, ["model.foo.bar=1"])
    assert "unknown key 'model.foo'" in msg


def test_set_through_a_scalar_is_rejected(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "seed: 3\n", ["seed.value=1"])
    assert "--set seed.value" in msg and "'seed' is not a mapping" in msg


@pytest.mark.parametrize("text", ["foo", "=1", "a..b=1"])
def test_malformed_set(text):
    with pytest.raises(ConfigError, match="--set") as info:
        parse_override(text)
    assert "KEY=VALUE" in str(info.value) or "dotted path" in str(info.value)


def test_set_wrong_type_names_the_key(tmp_path):
    msg = config_error(tmp_path, MINIMAL, ["optimizer.lr=fast"])
    assert "optimizer.lr" in msg and "'fast'" in msg


def test_parse_override_splits_at_the_first_equals():
    assert parse_override("name=a=b") == ("name", "a=b")
    assert parse_override(" optimizer.lr = 0.25") == ("optimizer.lr", 0.25)
    assert parse_override("training.batch_size=") == ("training.batch_size", None)


# ---------------------------------------------------------------- paths, schema, validate_config


def test_relative_data_path_resolves_against_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "data:\n  source: csv\n  path: data/points.csv\n", "configs/c.yaml")
    cfg = load_config(Path("configs/c.yaml"))
    assert cfg.data.path == str((tmp_path / "configs" / "data" / "points.csv").resolve())
    absolute = tmp_path / "elsewhere.csv"
    path.write_text(f"data:\n  source: npz\n  path: {absolute}\n", encoding="utf-8")
    assert load_config(path).data.path == str(absolute)


def test_json_schema_lists_every_top_level_key_and_is_json():
    schema = json.loads(json.dumps(json_schema()))
    assert set(schema["properties"]) == set(Config.model_fields)
    assert set(schema["properties"]) >= {"name", "seed", "data", "model", "loss", "optimizer", "training",
                                         "probes", "detectors", "ignore", "stop_on", "expect"}
    assert schema["required"] == ["data"]
    assert schema["$schema"].startswith("https://json-schema.org/")


def test_validate_config_names_its_source():
    with pytest.raises(ConfigError, match=r"^test: optimizer\.lr"):
        validate_config({"data": {"source": "affine"}, "optimizer": {"lr": "fast"}}, source="test")
    cfg = validate_config({"data": {"source": "affine"}}, source="test")
    assert cfg.name == "run"


def test_several_problems_are_counted():
    with pytest.raises(ConfigError, match=r"1 more") as info:
        validate_config({"data": {"source": "affine"}, "seed": "x", "optimizer": {"lr": "fast"}}, source="test")
    assert "seed" in str(info.value) and "optimizer.lr" in str(info.value)


@pytest.mark.parametrize("text, path", [
    ("data: {source: moons}\nseed: true\n", "seed"),
    ("data: {source: moons}\noptimizer: {lr: yes}\n", "optimizer.lr"),
    ("data: {source: moons}\nmodel: {bias_init: true}\n", "model.bias_init"),
])
def test_booleans_are_not_numbers(tmp_path, text, path):
    """YAML's true/yes used to pass as the number 1 through pydantic's lax mode."""
    message = config_error(tmp_path, text)
    assert path in message and "boolean" in message


def test_booleans_still_accepted_where_a_boolean_is_meant(tmp_path):
    cfg = load_config(write(tmp_path, "data: {source: affine, integer: false}\nloss: {from_logits: yes}\n"))
    assert cfg.data.integer is False and cfg.loss.from_logits is True
