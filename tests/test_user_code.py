"""User activations: loading `module:name`, the contract checks, the refusal to train with a wrong derivative."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnprobe.cli import cli
from nnprobe.config import validate_config
from nnprobe.errors import UserCodeError
from nnprobe.app import prepare_user_activation
from nnprobe.nn.user_activations import load_user_activation, split_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "user_activations"

SWISH = """\
import numpy as np

def _s(z):
    return 1 / (1 + np.exp(-z))

class Swish:
    def forward(self, z):
        return z * _s(z)

    def derivative(self, z):
        s = _s(z)
        return s + z * s * (1 - s)

swish = Swish()
"""

CONFIG = """\
name: user
seed: 1
data: {{source: blobs, n_samples: 48, n_classes: 2, normalize: standardize}}
model: {{hidden: [4], activation: "{spec}", output: sigmoid, init: xavier_normal, bias_init: zeros}}
loss: {{kind: bce, from_logits: true}}
optimizer: {{lr: 0.1}}
training: {{steps: 5}}
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def module(tmp_path: Path, source: str, name: str = "acts") -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def config(tmp_path: Path, spec: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(CONFIG.format(spec=spec))
    return path


def z() -> np.ndarray:
    return np.linspace(-3, 3, 12).reshape(3, 4)


# ---------------------------------------------------------------- loading


def test_class_is_instantiated_and_wrapped(tmp_path):
    module(tmp_path, SWISH)
    act = load_user_activation("acts:Swish", tmp_path)
    zz = z()
    s = 1 / (1 + np.exp(-zz))
    np.testing.assert_allclose(act.forward(zz), zz * s)
    np.testing.assert_allclose(act.derivative(zz, None), s + zz * s * (1 - s))
    np.testing.assert_allclose(act.vjp(zz, None, np.full_like(zz, 2.0)), 2 * (s + zz * s * (1 - s)))
    assert act.elementwise and act.name == "acts:Swish"
    assert act.file == tmp_path / "acts.py"


def test_module_level_instance(tmp_path):
    module(tmp_path, SWISH)
    act = load_user_activation("acts:swish", tmp_path)
    assert act.forward(z()).shape == (3, 4)


def test_config_directory_wins_over_sys_path(tmp_path, monkeypatch):
    """A file next to the config is used even when sys.path has a module of the same name."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    module(elsewhere, SWISH.replace("return z * _s(z)", "return z * 0"))
    monkeypatch.syspath_prepend(str(elsewhere))
    here = tmp_path / "here"
    here.mkdir()
    module(here, SWISH)
    act = load_user_activation("acts:Swish", here)
    assert act.file == here / "acts.py"
    assert act.forward(np.ones((1, 1)))[0, 0] > 0.5


def test_falls_back_to_sys_path(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    module(pkg, SWISH, name="nonlin")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    act = load_user_activation("mypkg.nonlin:Swish", tmp_path / "nowhere")
    assert act.file == pkg / "nonlin.py"


def test_dotted_module_next_to_the_config(tmp_path):
    (tmp_path / "lib").mkdir()
    module(tmp_path / "lib", SWISH, name="nonlin")
    act = load_user_activation("lib.nonlin:Swish", tmp_path)
    assert act.file == tmp_path / "lib" / "nonlin.py"


def test_edited_file_is_reloaded(tmp_path):
    """A second load reads the file again instead of a cached module."""
    module(tmp_path, SWISH)
    first = load_user_activation("acts:Swish", tmp_path)
    module(tmp_path, SWISH.replace("return z * _s(z)", "return 2 * z * _s(z)"))
    second = load_user_activation("acts:Swish", tmp_path)
    assert second.forward(np.ones((1, 1)))[0, 0] == pytest.approx(2 * first.forward(np.ones((1, 1)))[0, 0])


@pytest.mark.parametrize("spec", ["acts", "acts:", ":Swish", "acts:Sw ish", "1acts:Swish", "acts:class"])
def test_malformed_spec(spec):
    with pytest.raises(UserCodeError, match=r"model\.activation: .* expected 'module:name'"):
        split_spec(spec)


# ---------------------------------------------------------------- load errors: one paragraph each


def test_module_not_found_names_the_file_looked_for(tmp_path):
    with pytest.raises(UserCodeError) as exc:
        load_user_activation("no_such_module_xyz:Act", tmp_path)
    msg = str(exc.value)
    assert "model.activation 'no_such_module_xyz:Act'" in msg
    assert str(tmp_path / "no_such_module_xyz.py") in msg and "sys.path" in msg


def test_module_importing_a_missing_package(tmp_path):
    module(tmp_path, "import not_installed_pkg_xyz\n")
    with pytest.raises(UserCodeError, match=r"acts.py imports .not_installed_pkg_xyz. \(line 1.*which is not installed"):
        load_user_activation("acts:Act", tmp_path)


def test_syntax_error_names_file_and_line(tmp_path):
    path = module(tmp_path, "x = 1\ndef broken(:\n")
    with pytest.raises(UserCodeError) as exc:
        load_user_activation("acts:Act", tmp_path)
    assert f"importing {path} raised SyntaxError" in str(exc.value) and "line 2" in str(exc.value)


def test_attribute_missing_suggests_the_close_name(tmp_path):
    module(tmp_path, SWISH)
    with pytest.raises(UserCodeError) as exc:
        load_user_activation("acts:Swsh", tmp_path)
    msg = str(exc.value)
    assert "has no attribute 'Swsh'" in msg and "Did you mean 'Swish'?" in msg
    assert str(tmp_path / "acts.py") in msg


def test_missing_method(tmp_path):
    module(tmp_path, """
        class Half:
            def forward(self, z):
                return z
    """)
    with pytest.raises(UserCodeError, match=r"has no callable derivative\(z\)"):
        load_user_activation("acts:Half", tmp_path)


def test_a_function_is_not_an_activation(tmp_path):
    module(tmp_path, "def relu(z):\n    return z\n")
    with pytest.raises(UserCodeError, match=r"is a function, but a user activation is an object with two methods"):
        load_user_activation("acts:relu", tmp_path)


def test_class_needing_arguments(tmp_path):
    module(tmp_path, """
        class Scaled:
            def __init__(self, k):
                self.k = k
            def forward(self, z):
                return self.k * z
            def derivative(self, z):
                return self.k + 0 * z
    """)
    with pytest.raises(UserCodeError, match="instantiates it with no arguments"):
        load_user_activation("acts:Scaled", tmp_path)


BAD_OUTPUTS = {
    "wrong-shape": ("return z.sum(axis=1)", "returned an array of shape (3,) for z of shape (3, 4)"),
    "int-dtype": ("return (z > 0).astype(int)", "dtype int64; expected floating point"),
    "not-an-array": ("return 1.0", "returned a float, expected a NumPy array"),
    "raises": ("raise ValueError('boom')", "raised ValueError: boom (line"),
}


@pytest.mark.parametrize("what", ["forward", "derivative"])
@pytest.mark.parametrize("case", list(BAD_OUTPUTS), ids=list(BAD_OUTPUTS))
def test_contract_violations_are_user_code_errors(tmp_path, what, case):
    body, needle = BAD_OUTPUTS[case]
    fwd = body if what == "forward" else "return np.tanh(z)"
    der = body if what == "derivative" else "return 1 - np.tanh(z) ** 2"
    module(tmp_path, f"""
        import numpy as np
        class Act:
            def forward(self, z):
                {fwd}
            def derivative(self, z):
                {der}
    """)
    act = load_user_activation("acts:Act", tmp_path)
    with pytest.raises(UserCodeError) as exc:
        act.forward(z()) if what == "forward" else act.derivative(z(), None)
    msg = str(exc.value)
    assert needle in msg
    assert f"model.activation 'acts:Act' ({tmp_path / 'acts.py'}): {what}(z)" in msg


def test_other_float_precision_is_cast_to_the_layer_dtype(tmp_path):
    module(tmp_path, """
        import numpy as np
        class Act:
            def forward(self, z):
                return np.tanh(z).astype(np.float64)
            def derivative(self, z):
                return np.where(z > 0, 1.0, 0.5)
    """)
    act = load_user_activation("acts:Act", tmp_path)
    z32 = z().astype(np.float32)
    assert act.forward(z32).dtype == np.float32
    assert act.derivative(z32, None).dtype == np.float32


# ---------------------------------------------------------------- prepare_user_activation (what train calls)


def _cfg(tmp_path: Path, spec: str):
    return validate_config(
        {"data": {"source": "blobs", "n_samples": 20}, "model": {"hidden": [3], "activation": spec}},
        source=str(tmp_path / "c.yaml"),
    )


def test_prepare_reports_file_and_sha256(tmp_path):
    path = module(tmp_path, SWISH)
    act, info = prepare_user_activation(_cfg(tmp_path, "acts:Swish"), tmp_path)
    assert act.name == "acts:Swish"
    assert info[0]["spec"] == "acts:Swish"
    assert info[0]["file"] == str(path.resolve())
    assert info[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info[0]["gradcheck"]["checked"] and info[0]["gradcheck"]["ok"]


def test_prepare_refuses_a_wrong_derivative_with_the_measured_error(tmp_path):
    module(tmp_path, """
        import numpy as np
        class Tanh:
            def forward(self, z):
                return np.tanh(z)
            def derivative(self, z):
                return 1 - np.tanh(z)  # wrong: 1 - tanh^2
    """)
    with pytest.raises(UserCodeError) as exc:
        prepare_user_activation(_cfg(tmp_path, "acts:Tanh"), tmp_path)
    msg = str(exc.value)
    assert "derivative(z) disagrees with central finite differences of forward(z)" in msg
    assert "largest relative error" in msg and "--no-gradcheck" in msg
    assert "matches the built-in tanh, whose derivative is a' = 1 - a^2" in msg


def test_prepare_without_check_still_loads_the_wrong_derivative(tmp_path):
    module(tmp_path, """
        import numpy as np
        class Tanh:
            def forward(self, z):
                return np.tanh(z)
            def derivative(self, z):
                return 1 - np.tanh(z)
    """)
    _, info = prepare_user_activation(_cfg(tmp_path, "acts:Tanh"), tmp_path, check=False)
    assert info[0]["gradcheck"] == {**info[0]["gradcheck"], "checked": False, "ok": False}
    assert info[0]["gradcheck"]["max_rel_error"] > 0.1


# ---------------------------------------------------------------- through the CLI


def test_train_refuses_the_sigmoid_bug_example(tmp_path):
    result = run("train", str(EXAMPLES / "sigmoid-bug.yaml"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "model.activation 'sigmoid_bug:Sigmoid'" in result.stderr
    assert "largest relative error 0.99" in result.stderr
    assert not (tmp_path / "run").exists()


def test_train_refuses_the_in_place_relu_example(tmp_path):
    result = run("train", str(EXAMPLES / "relu-inplace.yaml"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "derivative(z) modifies its argument z in place" in result.stderr


def test_train_no_gradcheck_runs_and_records_the_code(tmp_path):
    out = tmp_path / "run"
    result = run("train", str(EXAMPLES / "sigmoid-bug.yaml"), "--out", str(out), "--no-gradcheck",
                 "--format", "json", "--set", "training.steps=3")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    (entry,) = meta["user_code"]
    src = EXAMPLES / "sigmoid_bug.py"
    assert entry["spec"] == "sigmoid_bug:Sigmoid"
    assert entry["file"] == str(src.resolve())
    assert entry["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert entry["gradcheck"]["checked"] is False
    start = json.loads((out / "steps.jsonl").read_text().splitlines()[0])
    assert start["layers"][0]["activation"] == "sigmoid_bug:Sigmoid"


def test_train_with_a_correct_user_activation(tmp_path):
    module(tmp_path, SWISH)
    cfg = config(tmp_path, "acts:Swish")
    result = run("train", str(cfg), "--out", str(tmp_path / "run"), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "completed"


def test_train_with_a_missing_module_is_exit_2(tmp_path):
    cfg = config(tmp_path, "missing_acts:Swish")
    result = run("train", str(cfg), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "no module 'missing_acts'" in result.stderr and str(tmp_path / "missing_acts.py") in result.stderr


def test_yaml_python_tag_is_a_config_error_and_runs_nothing(tmp_path):
    """Loading code is never triggered by the YAML: safe_load rejects !!python tags (exit 2, no side effect)."""
    marker = tmp_path / "pwned"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {source: blobs}\n"
        f"name: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n"
        "model:\n  activation: !!python/object:collections.OrderedDict {}\n"
    )
    for command in ("validate", "train", "gradcheck"):
        result = run(command, str(cfg))
        assert result.exit_code == 2, (command, result.output)
        assert "not valid YAML" in result.stderr and "python/object" in result.stderr
        assert "Traceback" not in result.output
    assert not marker.exists()
