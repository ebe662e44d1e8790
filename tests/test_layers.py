"""`model.layers`, the per-layer form of the model: validation (one form or the other), what each layer is
built from, the resolved config round trip, and equivalence with the hidden/activation/output form."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from nnprobe.cli import cli
from nnprobe.config import dump_config, load_config, validate_config
from nnprobe.data import load_dataset
from nnprobe.errors import ConfigError
from nnprobe.train.loop import Trainer

LAYERS = """
data: {source: blobs, n_samples: 120, n_features: 4, n_classes: 3}
model:
  layers:
    - {units: 6, activation: tanh, init: lecun_uniform, bias_init: xavier_uniform}
    - {units: 5, activation: relu, init: {low: -0.05, high: 0.05}}
    - {activation: softmax, init: he_truncated_normal, init_scale: 0.5}
  init: xavier_normal
  bias_init: zeros
loss: {kind: cross_entropy, from_logits: true}
training: {steps: 5}
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def trainer(cfg) -> Trainer:
    data_seq = np.random.SeedSequence(cfg.seed).spawn(1)[0]
    return Trainer(cfg, load_dataset(cfg.data, cfg.task, np.random.default_rng(data_seq)))


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message.strip()
    return message


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("key,value", [("hidden", "[4]"), ("activation", "relu"), ("output", "softmax")])
def test_layers_and_the_other_form_together_is_an_error(tmp_path, key, value):
    text = LAYERS.replace("  init: xavier_normal\n", f"  init: xavier_normal\n  {key}: {value}\n")
    message = config_error(tmp_path, text)
    assert f"model.{key} cannot be set as well" in message and "keep one form" in message


@pytest.mark.parametrize("old,new,needles", [
    ("{units: 5, activation: relu,", "{activation: relu,", ["model.layers.1.units is required for a hidden layer"]),
    ("activation: softmax", "activation: elu",
     ["model.layers.2.activation: 'elu' is not an output activation", "softmax"]),
    ("activation: tanh", "activation: 'mod:act'", ["model.layers.0.activation", "model.activation"]),
    ("{low: -0.05, high: 0.05}", "{low: 0.05, high: -0.05}", ["model.layers.1.init", "low < high"]),
    ("{units: 6,", "{unit: 6,", ["model.layers.0.unit", "Did you mean 'model.layers.0.units'?"]),
], ids=["hidden-units", "output-activation", "user-activation", "empty-range", "misspelt-key"])
def test_a_wrong_layer_is_named_by_its_index_and_key(tmp_path, old, new, needles):
    message = config_error(tmp_path, LAYERS.replace(old, new))
    for needle in needles:
        assert needle in message


def validate_error(tmp_path: Path, text: str, *args: str) -> str:
    """`nnprobe validate`'s message for a config it rejects with exit status 2."""
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli, ["validate", str(path), *args], catch_exceptions=False)
    assert result.exit_code == 2 and "Traceback" not in result.output
    return result.stderr


def test_an_output_width_other_than_the_loss_needs_is_a_user_error(tmp_path):
    message = validate_error(tmp_path, LAYERS.replace("- {activation: softmax,", "- {units: 2, activation: softmax,"))
    assert "model.layers.2.units" in message and "need 3" in message


def test_set_hidden_on_a_layers_config_is_a_user_error(tmp_path):
    assert "model.hidden cannot be set as well" in validate_error(tmp_path, LAYERS, "--set", "model.hidden=[8]")


# ---------------------------------------------------------------- what each layer is built from


def test_each_layer_is_built_from_its_own_spec(tmp_path):
    cfg = load_config(write(tmp_path, LAYERS))
    model = trainer(cfg).model
    d1, d2, d3 = model.layers
    assert [(l.activation_name, l.fan_in, l.units) for l in model.layers] == [("tanh", 4, 6), ("relu", 6, 5),
                                                                               ("softmax", 5, 3)]
    assert np.abs(d1.W).max() <= math.sqrt(3 / 4)                 # lecun_uniform
    assert np.abs(d1.b).max() <= math.sqrt(6 / (6 + 6)) and np.any(d1.b)  # xavier_uniform on 6 biases
    assert np.abs(d2.W).max() <= 0.05                              # the range
    assert not np.any(d2.b) and not np.any(d3.b)                   # model.bias_init
    assert np.abs(d3.W).max() <= 0.5 * 2 * math.sqrt(2 / 5) / 0.87962566103423978  # he_truncated_normal * 0.5
    assert cfg.model.hidden == [6, 5] and cfg.model.output == "softmax" and cfg.model.activation == "tanh"


def test_the_resolved_config_round_trips_without_the_derived_keys(tmp_path):
    cfg = load_config(write(tmp_path, LAYERS))
    dumped = yaml.safe_load(dump_config(cfg))
    assert "hidden" not in dumped["model"] and "output" not in dumped["model"]
    again = validate_config(dumped, source="config.yaml")
    assert again.model == cfg.model
    np.testing.assert_array_equal(trainer(again).model.layers[1].W, trainer(cfg).model.layers[1].W)


def test_layers_train_exactly_like_the_same_model_written_with_hidden():
    """The two forms of one model are the same model: same draws in the same order, the same run."""
    base = {"seed": 4, "data": {"source": "moons", "n_samples": 80},
            "loss": {"kind": "bce", "from_logits": True}, "training": {"steps": 8}}
    short = {**base, "model": {"hidden": [7, 3], "activation": "elu", "output": "sigmoid", "init": "he_uniform",
                               "bias_init": "normal"}}
    long = {**base, "model": {"init": "he_uniform", "bias_init": "normal",
                              "layers": [{"units": 7, "activation": "elu"}, {"units": 3, "activation": "elu"},
                                         {"units": 1, "activation": "sigmoid"}]}}
    runs = []
    for raw in (short, long):
        t = trainer(validate_config(json.loads(json.dumps(raw)), source="test"))
        batches = t.batches()
        runs.append([t.step(s, next(batches))["loss"] for s in range(8)] + [p.tolist() for p in t.optimizer.params])
    assert runs[0] == runs[1]


def test_the_start_record_names_each_layers_activation(tmp_path):
    from nnprobe.app import start_record_for

    layers = start_record_for(load_config(write(tmp_path, LAYERS)))["layers"]
    assert [(l["activation"], l["is_output"]) for l in layers] == [("tanh", False), ("relu", False),
                                                                    ("softmax", True)]
