"""gradcheck: backprop vs central finite differences per layer, activation derivatives vs their forward."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnprobe.nn.activations import HIDDEN, OUTPUT, LeakyReLU
from nnprobe.cli import cli
from nnprobe.config import validate_config
from nnprobe.app import gradcheck_config, tolerance_for
from nnprobe.nn.finite_differences import MAX_ENTRIES, check_activation

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "user_activations"
FINDING_KEYS = {"code", "severity", "step", "layer", "message", "evidence", "fixes"}


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def cfg(**sections):
    raw = {"data": {"source": "blobs", "n_samples": 40, "normalize": "standardize"},
           "model": {"hidden": [5, 4], "init": "xavier_normal"}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_config(raw, source="test.yaml")


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("name", sorted(HIDDEN), ids=sorted(HIDDEN))
def test_every_builtin_hidden_activation_passes(name):
    act = LeakyReLU(0.01) if name == "leaky_relu" else HIDDEN[name]()
    report = check_activation(act, tolerance=1e-6)
    assert report.ok, report.describe()
    assert report.n_checked >= 190  # only points whose step straddles a kink are skipped
    assert report.max_rel_error < 1e-6


@pytest.mark.parametrize("name", sorted(OUTPUT), ids=sorted(OUTPUT))
def test_output_activations_are_checked_or_skipped(name):
    report = check_activation(OUTPUT[name](), role="output")
    assert report.ok
    assert report.n_checked == (0 if name == "softmax" else report.n_points)


class _WrongSigmoid:
    name, elementwise, file = "mod:Sig", True, "mod.py"

    def forward(self, z):
        return 1 / (1 + np.exp(-z))

    def derivative(self, z, a):
        return 1 - a


def test_wrong_derivative_is_measured_and_matched_to_the_builtin():
    report = check_activation(_WrongSigmoid())
    assert report.mismatch and not report.ok
    assert report.max_rel_error > 0.9
    assert report.n_bad == report.n_checked
    assert report.builtin_match == "sigmoid"
    w = report.worst
    assert abs(w["derivative"] - w["finite_difference"]) > 0.5
    assert "whose derivative is a' = a(1 - a)" in report.describe()


class _InPlaceForward:
    name, elementwise, file = "mod:Relu", True, "mod.py"

    def forward(self, z):
        z[z < 0] = 0
        return z

    def derivative(self, z, a):
        return (z > 0).astype(z.dtype)


def test_forward_modifying_its_input_is_reported():
    report = check_activation(_InPlaceForward())
    assert report.in_place == ["forward"]
    assert not report.mismatch  # the values are right: only the in-place write is wrong
    assert "forward(z) modifies its argument z in place" in report.describe()
    assert report.in_place_detail["forward"]["became"] == 0.0


def test_kinks_are_skipped_not_failed():
    """ReLU's kink at 0 is excluded; a hard-tanh's kinks at +-1 are found by the one-sided slopes."""

    class HardTanh:
        name, elementwise = "mod:HardTanh", True

        def forward(self, z):
            return np.clip(z, -1, 1)

        def derivative(self, z, a):
            return (np.abs(z) < 1).astype(z.dtype)

    z = np.array([[-1.0, 1.0, 0.5, 2.0]])
    report = check_activation(HardTanh())
    assert report.ok, report.describe()
    # at exactly the kink, the one-sided slopes differ
    from nnprobe.nn.finite_differences import STEP, _fd_slopes

    _, kink = _fd_slopes(HardTanh().forward, z, STEP * np.ones_like(z))
    assert kink.tolist() == [[True, True, False, False]]


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize(
    "loss,output", [
        ({"kind": "mse"}, "identity"),
        ({"kind": "bce", "from_logits": False}, "sigmoid"),
        ({"kind": "bce", "from_logits": True}, "sigmoid"),
        ({"kind": "cross_entropy", "from_logits": False}, "softmax"),
        ({"kind": "cross_entropy", "from_logits": True, "l2": 0.1}, "softmax"),
    ],
    ids=["mse", "bce", "bce-logits", "ce", "ce-logits-l2"],
)
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_builtin_networks_pass(loss, output, activation):
    data = {"source": "affine", "n_samples": 30, "normalize": "standardize"} if loss["kind"] == "mse" else {}
    report = gradcheck_config(cfg(loss=loss, model={"output": output, "activation": activation}, data=data), ".")
    assert report.ok, [f.message for f in report.findings]
    checked = [t for t in report.tensors if t.max_rel_error is not None]
    assert len(checked) == 6  # W and b of three layers
    assert max(t.max_rel_error for t in checked) < 1e-6


def test_large_tensors_are_sampled_and_dtype_is_float64():
    report = gradcheck_config(cfg(model={"hidden": [64], "dtype": "float16"}), ".")
    w1 = report.tensors[0]
    assert w1.n_entries == 128 and w1.n_checked + w1.n_kinks == MAX_ENTRIES
    assert report.tensors[1].n_checked + report.tensors[1].n_kinks == MAX_ENTRIES  # b of dense1: 64 entries
    assert report.tensors[3].n_entries == report.tensors[3].n_checked == 3  # b of dense2: all entries
    assert report.ok
    assert report.to_json()["dtype"] == "float64"


def test_tolerance_follows_the_detector_setting():
    tight = cfg(detectors={"gradient-mismatch": {"max_rel_error": 1e-16}})
    assert tolerance_for(tight) == 1e-16
    assert tolerance_for(cfg()) == 1e-4
    report = gradcheck_config(tight, ".")
    assert not report.ok  # float64 rounding alone is above 1e-16
    assert {f.code for f in report.findings} == {"gradient-mismatch"}


def test_sampling_is_seeded():
    a = gradcheck_config(cfg(model={"hidden": [64]}), ".").to_json()
    b = gradcheck_config(cfg(model={"hidden": [64]}), ".").to_json()
    assert a == b


# ---------------------------------------------------------------- the examples, through the CLI


def test_cli_passes_the_correct_example():
    result = run("gradcheck", str(EXAMPLES / "swish.yaml"))
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.stdout and "dense1" in result.stdout and "swish:Swish" in result.stdout


def test_cli_catches_the_sigmoid_bug():
    result = run("gradcheck", str(EXAMPLES / "sigmoid-bug.yaml"))
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())
    assert "derivative(z) disagrees with central finite differences of forward(z)" in out
    assert "matches the built-in sigmoid" in out
    assert "gradient-mismatch dense1" in out  # the layer below the wrong derivative
    assert "FAILED" in out


def test_cli_catches_the_in_place_relu():
    result = run("gradcheck", str(EXAMPLES / "relu-inplace.yaml"))
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())
    assert "derivative(z) modifies its argument z in place" in out
    assert "z = z.copy()" in out


def test_cli_json_has_the_finding_shape_and_per_layer_errors():
    result = run("gradcheck", str(EXAMPLES / "sigmoid-bug.yaml"), "--format", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["status"] == "failed"
    assert [l["layer"] for l in doc["layers"]] == ["dense1", "dense2"]
    dense1, dense2 = doc["layers"]
    assert dense1["W"]["max_rel_error"] > 0.1 and not dense1["W"]["ok"]
    assert dense2["W"]["max_rel_error"] < 1e-6 and dense2["b"]["ok"]
    assert all(set(f) == FINDING_KEYS for f in doc["findings"])
    assert {(f["code"], f["severity"], f["layer"]) for f in doc["findings"]} == {
        ("gradient-mismatch", "error", None), ("gradient-mismatch", "error", "dense1")}
    layer_finding = next(f for f in doc["findings"] if f["layer"] == "dense1")
    assert layer_finding["message"].startswith(f"{layer_finding['evidence']['tensor']} of dense1: backprop gives ")
    assert "checked entries of dense1's W and b disagree" in layer_finding["message"]
    assert layer_finding["evidence"]["rel_error"] > 0.1 and layer_finding["evidence"]["max_rel_error"] == 1e-4
    assert layer_finding["fixes"][-1] == "model.activation: sigmoid"
    assert doc["activations"][0]["activation"] == "sigmoid_bug:Sigmoid"
    assert doc["user_code"][0]["sha256"]


def test_cli_on_a_seed_config_passes():
    result = run("gradcheck", str(ROOT / "configs" / "relu-regression.yaml"), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["findings"] == []


def test_cli_user_code_that_raises_is_exit_2(tmp_path):
    (tmp_path / "acts.py").write_text(textwrap.dedent("""
        class Act:
            def forward(self, z):
                return z
            def derivative(self, z):
                raise RuntimeError("not written yet")
    """))
    (tmp_path / "c.yaml").write_text('data: {source: blobs}\nmodel: {activation: "acts:Act"}\n')
    result = run("gradcheck", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2
    assert "derivative(z) raised RuntimeError: not written yet" in result.stderr
    assert "Traceback" not in result.output
