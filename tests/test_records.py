"""nnprobe.probes.records: the step and start records built from a step's tensors, outside the Trainer.

A two-layer network is run by hand in NumPy (float64 references), its tensors handed to the builder in
every accepted form (arrays of each float dtype, non-contiguous views, 1-D and 2-D biases, statistics
computed elsewhere, absent tensors), and the record checked against the references; then the
non-finite origin in computation order, a light step that turns full, and the start record."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnprobe.probes import kernel, records
from nnprobe.probes import statistics as st

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RTOL = {"float16": 2e-3, "float32": 2e-5, "float64": 1e-12}


@pytest.fixture(autouse=True, params=["kernel", "numpy"])
def stats_path(request):
    was = kernel.in_use()
    if not kernel.use(request.param == "kernel") and request.param == "kernel":
        kernel.use(was)
        pytest.skip("the C kernel is not built here or the CPU lacks AVX2")
    yield request.param
    kernel.use(was)


def network(dtype="float64", seed=0):
    """x -> relu(x W1 + b1) -> sigmoid(. W2 + b2), MSE; every tensor of one step, in `dtype`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)).astype(dtype)
    W1, b1 = rng.normal(size=(3, 5)).astype(dtype), rng.normal(size=5).astype(dtype)
    W2, b2 = rng.normal(size=(5, 2)).astype(dtype), rng.normal(size=2).astype(dtype)
    t = rng.uniform(size=(40, 2)).astype(dtype)
    z1 = x @ W1 + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W2 + b2
    a2 = 1 / (1 + np.exp(-z2))
    loss = float(np.mean(np.sum((a2.astype(np.float64) - t) ** 2, axis=1)))
    dz2 = 2 * (a2 - t) / x.shape[0] * a2 * (1 - a2)
    gW2, gb2 = a1.T @ dz2, dz2.sum(axis=0)
    dz1 = np.where(z1 > 0, dz2 @ W2.T, 0).astype(dtype)
    gW1, gb1 = x.T @ dz1, dz1.sum(axis=0)
    return dict(x=x, W1=W1, b1=b1, W2=W2, b2=b2, t=t, z1=z1, a1=a1, z2=z2, a2=a2, loss=loss,
                gW1=gW1, gb1=gb1, gW2=gW2, gb2=gb2)


def build(n, *, step=0, full=True, **over):
    rec = records.StepRecordBuilder(step, full=full, weight_distribution=True)
    rec.input(over.get("x", n["x"]))
    rec.layer("dense1", z=over.get("z1", n["z1"]), a=over.get("a1", n["a1"]), W=over.get("W1", n["W1"]),
              b=over.get("b1", n["b1"]), a_from_z="relu")
    rec.layer("dense2", z=over.get("z2", n["z2"]), a=over.get("a2", n["a2"]), W=over.get("W2", n["W2"]),
              b=over.get("b2", n["b2"]), saturation=5.986)
    rec.loss(over.get("loss", n["loss"]))
    rec.grads("dense2", gW=over.get("gW2", n["gW2"]), gb=over.get("gb2", n["gb2"]))
    rec.grads("dense1", gW=over.get("gW1", n["gW1"]), gb=over.get("gb1", n["gb1"]))
    rec.before_update()
    for name, W in (("dense1", "W1"), ("dense2", "W2")):
        rec.update(name, W_after=over.get(W + "_after", n[W]), b_after=True, norm=0.5)
    return rec.record()


def close(got, want, rtol):
    assert got == pytest.approx(want, rel=rtol, abs=rtol * 1e-3)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_step_record_matches_float64_references(dtype):
    n = network(dtype)
    r = build(n)
    rtol = RTOL[dtype]
    assert [k for k in r] == ["type", "step", "full", "loss", "grad_norm", "nonfinite", "loss_in", "layers"]
    assert r["full"] is True and r["nonfinite"] is None and r["loss_in"] is None
    grads = [n[k].astype(np.float64) for k in ("gW1", "gb1", "gW2", "gb2")]
    close(r["grad_norm"], math.sqrt(sum(float((g * g).sum()) for g in grads)), rtol)
    d1, d2 = r["layers"]
    assert list(d1) == ["name", "z", "a", "gW", "gb", "W", "b", "update_ratio"]
    z1 = n["z1"].astype(np.float64)
    close(d1["z"]["mean"], z1.mean(), rtol)
    close(d1["z"]["std"], z1.std(), rtol)
    assert d1["z"]["min"] == float(n["z1"].min()) and d1["z"]["max"] == float(n["z1"].max())
    assert d1["a"]["dead"] == int((n["z1"] <= 0).all(axis=0).sum())
    assert d1["a"]["zero_frac"] == float((n["a1"] == 0).mean())
    assert d1["z"]["sat_frac"] is None
    assert d2["z"]["sat_frac"] == float((np.abs(n["z2"].astype(np.float64)) > 5.986).mean())
    close(d2["gW"]["norm"], float(np.linalg.norm(n["gW2"].astype(np.float64))), rtol)
    assert d2["gW"]["maxabs"] == float(np.abs(n["gW2"]).max())
    W1 = n["W1"].astype(np.float64)
    close(d1["W"]["norm"], float(np.linalg.norm(W1)), rtol)
    assert d1["W"]["pos_frac"] == float((W1 > 0).mean())
    close(d1["b"]["mean"], float(n["b1"].astype(np.float64).mean()), rtol)
    close(d1["update_ratio"], 0.5 / float(np.linalg.norm(W1)), rtol)


def same_numbers(got, want, rtol):
    """Equal records, floats within rtol (a view takes other passes, which round differently)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for k in want:
            same_numbers(got[k], want[k], rtol)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            same_numbers(g, w, rtol)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=rtol)
    else:
        assert got == want


def test_views_and_bias_shapes_give_the_contiguous_numbers():
    """A transposed (non-contiguous) W, a strided z, 2-D biases: the statistics of the plain arrays."""
    n = network("float32")
    plain = build(n)
    W1_view = np.ascontiguousarray(n["W1"].T).T  # same values, Fortran order
    z_wide = np.zeros((40, 10), dtype=np.float32)
    z_wide[:, ::2] = n["z1"]
    z_view = z_wide[:, ::2]  # a strided view
    assert not W1_view.flags.c_contiguous and not z_view.flags.c_contiguous
    viewed = build(n, W1=W1_view, z1=z_view, b1=n["b1"].reshape(1, -1), gb2=n["gb2"].reshape(1, -1))
    same_numbers(viewed, plain, 1e-6)


def test_statistics_computed_elsewhere_are_used_as_given():
    n = network()
    given = {"norm": 123.0, "maxabs": 7.0, "nonfinite": 0, "zero_frac": 0.25}
    z_given = {"mean": 1.0, "std": 2.0, "min": -1.0, "max": 3.0, "nan": 0, "posinf": 0, "neginf": 0,
               "sat_frac": None}
    r = build(n, gW1=given, z1=z_given)
    d1 = r["layers"][0]
    assert d1["gW"] == given and d1["z"] == z_given
    # the global norm from the given norm: sqrt(123^2 + the others' squares)
    others = sum(float(np.sum(n[k] ** 2)) for k in ("gb1", "gW2", "gb2"))
    assert r["grad_norm"] == pytest.approx(math.sqrt(123.0 ** 2 + others), rel=1e-12)


def test_an_absent_tensor_is_null_and_the_global_norm_unknown():
    """A source without gradients must not look healthy: no gradient norm made of the ones that exist."""
    n = network()
    r = build(n, gW1=None, a2=None)
    d1, d2 = r["layers"]
    assert d1["gW"] is None and d2["a"] is None
    assert r["grad_norm"] is None
    assert d2["z"]["mean"] == pytest.approx(float(n["z2"].mean()), rel=1e-12)  # the rest is still there


def test_layers_without_grads_call_leave_gradients_null():
    n = network()
    rec = records.StepRecordBuilder(0)
    rec.layer("dense1", z=n["z1"], a=n["a1"])
    rec.loss(n["loss"])
    r = rec.record()
    assert r["grad_norm"] is None and r["layers"][0]["gW"] is None and r["layers"][0]["W"] is None
    assert r["layers"][0]["update_ratio"] is None


# ---------------------------------------------------------------- the non-finite origin


@pytest.mark.parametrize("key,expected", [
    ("x", {"pass": "forward", "tensor": "input", "layer": None}),
    ("z1", {"pass": "forward", "tensor": "pre-activation", "layer": "dense1"}),
    ("a2", {"pass": "forward", "tensor": "activation", "layer": "dense2"}),
    ("gW1", {"pass": "backward", "tensor": "weight-gradient", "layer": "dense1"}),
    ("gb2", {"pass": "backward", "tensor": "bias-gradient", "layer": "dense2"}),
    ("W2_after", {"pass": "update", "tensor": "weight", "layer": "dense2"}),
])
def test_origin_names_the_poisoned_tensor(key, expected):
    n = network()
    base = key.removesuffix("_after")
    arr = n[base].copy()
    arr.flat[0] = np.inf
    r = build(n, **{key: arr})
    assert r["nonfinite"] == expected


def test_origin_is_the_first_in_computation_order():
    """Forward before the loss before backward (last layer first) before the update."""
    n = network()
    bad = {k: n[k].copy() for k in ("a2", "gW2", "gW1", "W1")}
    for arr in bad.values():
        arr.flat[0] = np.nan
    r = build(n, a2=bad["a2"], loss=math.nan, gW2=bad["gW2"], gW1=bad["gW1"], W1_after=bad["W1"])
    assert r["nonfinite"] == {"pass": "forward", "tensor": "activation", "layer": "dense2"}
    r = build(n, loss=math.inf, gW2=bad["gW2"])
    assert r["nonfinite"] == {"pass": "forward", "tensor": "loss", "layer": None}
    r = build(n, gW2=bad["gW2"], gW1=bad["gW1"], W1_after=bad["W1"])
    assert r["nonfinite"] == {"pass": "backward", "tensor": "weight-gradient", "layer": "dense2"}
    r = build(n, W1_after=bad["W1"])
    assert r["nonfinite"] == {"pass": "update", "tensor": "weight", "layer": "dense1"}


def test_statistics_given_with_nonfinite_counts_name_the_origin():
    n = network()
    z = st.tensor_stats(n["z2"])
    z.update(nan=3, sat_frac=None)
    r = build(n, z2=z)
    assert r["nonfinite"] == {"pass": "forward", "tensor": "pre-activation", "layer": "dense2"}


def test_a_light_step_becomes_full_when_something_goes_nonfinite():
    n = network()
    light = build(n, full=False)
    assert light["full"] is False and "layers" not in light
    assert light["grad_norm"] == pytest.approx(build(n)["grad_norm"], rel=1e-12)
    gW2 = n["gW2"].copy()
    gW2[1, 1] = -np.inf
    upgraded = build(n, full=False, gW2=gW2)
    assert upgraded["full"] is True
    assert upgraded["layers"][1]["gW"]["nonfinite"] == 1
    assert upgraded["layers"][0]["z"] == build(n)["layers"][0]["z"]
    assert upgraded["grad_norm"] == math.inf


def test_an_update_that_goes_nonfinite_keeps_the_step_light():
    """Born in the update: named on the light record; the next step meets it in its forward pass."""
    n = network()
    W2 = n["W2"].copy()
    W2[0, 0] = np.nan
    r = build(n, full=False, W2_after=W2)
    assert r["full"] is False and r["nonfinite"] == {"pass": "update", "tensor": "weight", "layer": "dense2"}


def test_loss_inputs_are_counted_before_epsilon():
    rec = records.StepRecordBuilder(3, full=False)
    p = np.array([[0.0, 1.0, 0.5, 1e-9]])
    rec.loss(0.7, records.LossInputs(p, epsilon=1e-6, two_sided=True))
    r = rec.record()
    assert r["loss_in"] == {"n": 4, "min": 0.0, "max": 1.0, "n_zero": 1, "n_one": 1, "n_outside": 0,
                            "n_below_eps": 3}
    assert r["grad_norm"] is None and r["nonfinite"] is None


def test_misuse_is_refused_with_the_layer_named():
    rec = records.StepRecordBuilder(0)
    rec.layer("dense1")
    with pytest.raises(ValueError, match="dense1.*twice"):
        rec.layer("dense1")
    with pytest.raises(ValueError, match="dense9.*dense1"):
        rec.grads("dense9", gW=np.zeros(2))
    with pytest.raises(ValueError, match="a_from_z"):
        rec.layer("dense2", a_from_z="leaky")
    with pytest.raises(TypeError, match="dense3.z.*int"):
        rec.layer("dense3", z=np.zeros((2, 2), dtype=int))


def test_loss_record_is_the_unprobed_step():
    assert records.loss_record(4, 1.5) == {"type": "step", "step": 4, "full": False, "loss": 1.5,
                                           "grad_norm": None, "nonfinite": None, "loss_in": None}
    assert records.loss_record(5, math.nan)["nonfinite"] == {"pass": "forward", "tensor": "loss", "layer": None}


# ---------------------------------------------------------------- the start record


def test_start_record_from_layer_specs_and_data():
    x = np.array([[0.0, 10.0], [2.0, 30.0]], dtype=np.float32)
    y = np.array([[1.0], [3.0]])
    specs = [records.LayerSpec("dense1", 2, 4, "relu", False), records.LayerSpec("dense2", 4, 1, "identity", True)]
    r = records.start_record(name="hand", seed=7, task="regression", dtype="float32", layers=specs, x=x, y=y,
                             loss={"kind": "mse"}, optimizer={"kind": "sgd", "lr": 0.1}, batch_size=2,
                             total_steps=9)
    assert r["type"] == "start" and r["schema"] == records.SCHEMA_VERSION
    assert r["layers"][1] == {"name": "dense2", "fan_in": 4, "units": 1, "activation": "identity", "is_output": True}
    assert r["data"]["input_mean"] == [1.0, 20.0] and r["data"]["input_std"] == [1.0, 10.0]
    assert r["data"]["target_mean"] == 2.0 and r["data"]["target_max"] == 3.0
    assert r["data"]["n_train"] == 2 and r["data"]["n_features"] == 2
    unknown = records.start_record(name="hand", seed=None, task=None, dtype="float64", layers=specs, x=None)
    assert unknown["data"] is None and unknown["loss"] is None


def test_train_writes_the_builders_start_record(tmp_path):
    """`train` builds its start record with start_record: the same dict as built here from its parts."""
    from nnprobe.config import validate_config
    from nnprobe.train.run import train
    from nnprobe.train.runlog import loads

    cfg = validate_config({"seed": 1, "data": {"source": "affine", "n_samples": 20},
                           "model": {"hidden": [3]}, "training": {"steps": 2}}, source="test")
    result = train(cfg, tmp_path / "run")
    start = loads((tmp_path / "run" / "steps.jsonl").read_text().splitlines()[0])
    assert start == result.start
    assert [l["name"] for l in start["layers"]] == ["dense1", "dense2"]
    assert start["loss"] == {"kind": "mse", "reduction": "mean", "from_logits": False, "epsilon": 0.0, "l2": 0.0}


def test_records_built_from_arrays_say_which_units_are_dead():
    """The dead-unit mask was added where `train` takes its statistics only, so the Recorder and the torch
    probe wrote counts alone and dead-relu's windows over small batches could only bound, never name, the
    units that stayed dead."""
    n = network()
    z1 = n["z1"].copy()
    z1[:, [1, 3]] = -np.abs(z1[:, [1, 3]]) - 0.5  # units 1 and 3 are 0 for every example
    rec = build(n, z1=z1, a1=np.maximum(z1, 0))
    a = rec["layers"][0]["a"]
    assert a["dead"] == 2
    assert a["dead_units"] == st.dead_units(z1)
    assert int(a["dead_units"], 16) == (1 << 1) | (1 << 3)
    assert "dead_units" not in rec["layers"][1]["a"]  # a sigmoid layer has no dead units to name
