"""nnprobe.Recorder: a hand-written NumPy loop gets train's run directory, records, findings and reports.

Statistics are checked against NumPy computed here on the same arrays (float64 references,
explicit tolerances); misuse against the RecorderError it must raise and the log it must leave.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnprobe
from nnprobe.cli import cli
from nnprobe.diagnose.detectors import all_codes
from nnprobe.diagnose.load import load_run
from nnprobe.diagnose.skipped import NEEDS
from nnprobe.errors import NnprobeError, RecorderError


def lines(run_dir) -> list[dict]:
    from nnprobe.train.runlog import loads

    return [loads(l) for l in (Path(run_dir) / "steps.jsonl").read_text(encoding="utf-8").splitlines()]


def steps_of(run_dir) -> list[dict]:
    return [r for r in lines(run_dir) if r["type"] == "step"]


class Net:
    """A 2-4-1 network written the way people write one: arrays, a forward pass, a backward pass, SGD."""

    def __init__(self, dtype=np.float64, seed=0, lr=0.1, in_place=True, n=32):
        rng = np.random.default_rng(seed)
        self.X = rng.normal(size=(n, 2)).astype(dtype)
        self.y = (self.X[:, :1] * self.X[:, 1:] > 0).astype(dtype)
        self.W1 = (rng.normal(size=(2, 4)) * 0.8).astype(dtype)
        self.b1 = np.zeros(4, dtype=dtype)
        self.W2 = (rng.normal(size=(4, 1)) * 0.5).astype(dtype)
        self.b2 = np.zeros(1, dtype=dtype)
        self.lr, self.in_place = dtype(lr), in_place

    def step(self, s, *, layer_kwargs=None, skip=()):
        X, y = self.X, self.y
        z1 = X @ self.W1 + self.b1
        a1 = np.tanh(z1)
        s.layer("hidden", z=z1, a=a1, W=self.W1, b=self.b1, activation="tanh", **(layer_kwargs or {}))
        z2 = a1 @ self.W2 + self.b2
        p = 1 / (1 + np.exp(-z2))
        s.layer("output", z=z2, a=p, W=self.W2, b=self.b2, activation="sigmoid")
        with np.errstate(all="ignore"):  # the textbook cost, as written: log(0) is part of some cases
            cost = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        if "loss" not in skip:
            s.loss(cost, outputs=p, targets=y)
        n = X.shape[0]
        d2 = (p - y) / n
        gW2, gb2 = a1.T @ d2, d2.sum(axis=0)
        d1 = (d2 @ self.W2.T) * (1 - a1 ** 2)
        gW1, gb1 = X.T @ d1, d1.sum(axis=0)
        if "grads" not in skip:
            s.grads("output", gW=gW2, gb=gb2)
            s.grads("hidden", gW=gW1, gb=gb1)
        self.seen = dict(z1=z1.copy(), a1=a1.copy(), W1=self.W1.copy(), gW1=gW1.copy(), gb1=gb1.copy(), p=p.copy())
        if self.in_place:
            self.W1 -= self.lr * gW1
            self.b1 -= self.lr * gb1
            self.W2 -= self.lr * gW2
            self.b2 -= self.lr * gb2
        else:
            self.W1 = self.W1 - self.lr * gW1
            self.b1 = self.b1 - self.lr * gb1
            self.W2 = self.W2 - self.lr * gW2
            self.b2 = self.b2 - self.lr * gb2
        self.W1_after = self.W1.copy()
        return cost


def record(tmp_path, net=None, steps=5, **kwargs):
    net = net or Net()
    kwargs.setdefault("loss", "bce")
    seen = []
    with nnprobe.Recorder(tmp_path / "run", **kwargs) as rec:
        rec.data(net.X, net.y)
        for _ in range(steps):
            with rec.step() as s:
                net.step(s)
            seen.append(net.seen | {"W1_after": net.W1_after})
    return rec, seen


# ---------------------------------------------------------------- records against references


@pytest.mark.parametrize("in_place", [True, False], ids=["W -= lr*g", "W = W - lr*g"])
def test_step_records_match_numpy_on_the_same_arrays(tmp_path, in_place):
    rec, seen = record(tmp_path, Net(in_place=in_place))
    records = steps_of(rec.result.run_dir)
    assert [r["step"] for r in records] == list(range(5)) and all(r["full"] for r in records)
    for r, ref in zip(records, seen):
        hidden = r["layers"][0]
        assert hidden["z"]["mean"] == pytest.approx(ref["z1"].mean(), rel=1e-12, abs=1e-15)
        assert hidden["z"]["std"] == pytest.approx(ref["z1"].std(), rel=1e-10)
        assert hidden["z"]["sat_frac"] == pytest.approx(np.mean(np.abs(ref["z1"]) > np.arccosh(10.0)))
        assert hidden["a"]["max"] == ref["a1"].max()
        assert hidden["gW"]["norm"] == pytest.approx(np.linalg.norm(ref["gW1"]), rel=1e-12)
        assert hidden["gb"]["maxabs"] == pytest.approx(np.abs(ref["gb1"]).max(), rel=1e-12)
        assert hidden["W"]["norm"] == pytest.approx(np.linalg.norm(ref["W1"]), rel=1e-12)
        p = ref["p"]
        assert r["loss_in"] == {"n": p.size, "min": p.min(), "max": p.max(), "n_zero": 0, "n_one": 0,
                                "n_outside": 0, "n_below_eps": 0}
    # the update actually applied, ||W_after - W_before|| / ||W_before||: in-place loops show it at the end of
    # the step, loops that rebind W hand the new array over at the next step (the ratio lands on that record)
    ratios = [r["layers"][0]["update_ratio"] for r in records]
    expected = [np.linalg.norm(ref["W1_after"] - ref["W1"]) / np.linalg.norm(ref["W1"]) for ref in seen]
    if in_place:
        assert ratios == pytest.approx(expected, rel=1e-9)
    else:
        assert ratios[0] is None and ratios[1:] == pytest.approx(expected[:-1], rel=1e-9)


def test_first_step_records_the_weight_distribution_for_poor_init(tmp_path):
    rec, seen = record(tmp_path, steps=2)
    first, second = steps_of(rec.result.run_dir)
    W = seen[0]["W1"]
    assert first["layers"][0]["W"]["pos_frac"] == pytest.approx(np.mean(W > 0))
    assert first["layers"][0]["W"]["std"] == pytest.approx(W.std(), rel=1e-12)
    assert set(second["layers"][0]["W"]) == {"norm", "nonfinite"}


def test_start_record_describes_the_loop_and_what_it_gave(tmp_path):
    rec, _ = record(tmp_path, steps=1)
    start = lines(rec.result.run_dir)[0]
    assert start["layers"] == [
        {"name": "hidden", "fan_in": 2, "units": 4, "activation": "tanh", "is_output": False},
        {"name": "output", "fan_in": 4, "units": 1, "activation": "sigmoid", "is_output": True}]
    assert start["task"] == "classification" and start["loss"]["kind"] == "bce" and start["batch_size"] == 32
    assert start["data"]["n_features"] == 2 and start["data"]["n_classes"] == 2
    assert set(start["recorded"]["given"]) >= {"z", "a", "W", "b", "gW", "gb", "loss", "outputs", "data"}
    meta = json.loads((Path(rec.result.run_dir) / "meta.json").read_text())
    assert meta["recorded"] == {"loss": "bce", "task": None, "every": 1, "stop_on": ["nonfinite"], "name": None}
    assert meta["status"] == "completed" and meta["steps"] == 1


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_float_dtype_is_recorded(tmp_path, dtype):
    rec, seen = record(tmp_path, Net(dtype=dtype), steps=2)
    r = steps_of(rec.result.run_dir)[0]
    assert lines(rec.result.run_dir)[0]["dtype"] == np.dtype(dtype).name
    z = seen[0]["z1"].astype(np.float64)
    assert r["layers"][0]["z"]["mean"] == pytest.approx(z.mean(), rel=1e-3 if dtype == np.float16 else 1e-6, abs=1e-6)


def test_non_contiguous_views_and_2d_biases_give_the_same_numbers(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(16, 6))
    W, b = rng.normal(size=(3, 6)), rng.normal(size=6)
    g = rng.normal(size=(3, 6))
    out = {}
    for label, (zz, WW, bb, gg) in {
        "plain": (z, W, b, g),
        "views": (np.asfortranarray(z), np.asfortranarray(W), b.reshape(1, -1), g.T.copy().T),
    }.items():
        with nnprobe.Recorder(tmp_path / label, loss="mse") as rec:
            with rec.step() as s:
                s.layer("l", z=zz, a=np.maximum(zz, 0), W=WW, b=bb, activation="relu")
                s.loss(1.0)
                s.grads("l", gW=gg, gb=gg[0])
        out[label] = steps_of(rec.result.run_dir)[0]["layers"][0]
    assert not np.asfortranarray(z).flags.c_contiguous
    for key in ("z", "a", "W", "gW", "b"):
        plain, views = out["plain"][key], out["views"][key]
        assert set(plain) == set(views), key
        for stat, value in plain.items():
            assert views[stat] == (value if value is None else pytest.approx(value, rel=1e-12)), (key, stat)


# ---------------------------------------------------------------- live and offline agree


def test_diagnose_gives_exactly_the_findings_the_recorder_gave_live(tmp_path):
    net = Net(lr=40.0)  # large steps: saturation, a large update ratio
    rec, _ = record(tmp_path, net, steps=40)
    live = rec.result.to_json()
    offline = load_run(rec.result.run_dir).to_json()
    assert live["findings"], "the case should produce findings"
    assert offline == live
    assert json.loads((Path(rec.result.run_dir) / "findings.json").read_text()) == live


def test_cli_reads_a_recorded_run_like_any_other(tmp_path):
    rec, _ = record(tmp_path, Net(lr=40.0), steps=20)
    run = rec.result.run_dir
    runner = CliRunner()
    for args in (["diagnose", run, "--format", "json"], ["diagnose", run, "--format", "junit"],
                 ["diagnose", run, "--format", "markdown"], ["diagnose", run, "--baseline", run]):
        res = runner.invoke(cli, args, catch_exceptions=False)
        assert res.exit_code in (0, 1), res.output
    res = runner.invoke(cli, ["report", run, "-o", str(tmp_path / "r.html")], catch_exceptions=False)
    assert res.exit_code == 0 and (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_training_a_recorded_config_says_why_it_cannot(tmp_path):
    rec, _ = record(tmp_path, steps=1)
    res = CliRunner().invoke(cli, ["train", str(Path(rec.result.run_dir) / "config.yaml"), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "recorded from a hand-written training loop" in res.output
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- NaN is data


def test_a_nan_loss_stops_the_run_and_names_the_loss(tmp_path):
    with nnprobe.Recorder(tmp_path / "run") as rec:
        for i in range(10):
            with rec.step() as s:
                s.layer("l", z=np.ones((4, 2)), activation="relu")
                s.loss(float("nan") if i == 3 else 1.0 / (i + 1))
            if rec.stopped:
                break
    result = rec.result
    assert result.status == "diverged" and result.stopped_by == "nonfinite" and result.steps == 4
    (nf,) = [f for f in result.findings if f.code == "nonfinite"]
    assert nf.step == 3 and nf.evidence["tensor"] == "loss"


def test_the_first_nonfinite_tensor_is_named_in_computation_order(tmp_path):
    z2 = np.ones((4, 3))
    z2[1, 2] = np.inf
    with nnprobe.Recorder(tmp_path / "run", loss="mse", stop_on=()) as rec:
        with rec.step() as s:
            s.layer("one", z=np.ones((4, 3)), a=np.ones((4, 3)))
            s.layer("two", z=z2, a=np.full((4, 3), np.nan))
            s.loss(float("nan"))
            s.grads("two", gW=np.full((3, 3), np.nan))
    (r,) = steps_of(rec.result.run_dir)
    assert r["nonfinite"] == {"pass": "forward", "tensor": "pre-activation", "layer": "two"}
    assert r["layers"][1]["z"]["posinf"] == 1 and r["layers"][1]["a"]["nan"] == 12
    assert r["grad_norm"] is None  # layer "one" gave no gradient: no global norm, not a partial one


def test_an_update_that_makes_a_weight_nonfinite_is_the_update_pass(tmp_path):
    W = np.ones((2, 2))
    with nnprobe.Recorder(tmp_path / "run", loss="mse") as rec:
        with rec.step() as s:
            s.layer("l", z=np.ones((3, 2)), W=W)
            s.loss(1.0)
            s.grads("l", gW=np.ones((2, 2)))
            W -= np.array([[np.inf, 0.0], [0.0, 0.0]])
    (r,) = steps_of(rec.result.run_dir)
    assert r["nonfinite"] == {"pass": "update", "tensor": "weight", "layer": "l"}
    assert rec.result.status == "diverged"


def test_light_steps_between_full_ones_and_a_nonfinite_light_step_is_full(tmp_path):
    with nnprobe.Recorder(tmp_path / "run", loss="mse", every=3, stop_on=()) as rec:
        for i in range(7):
            with rec.step() as s:
                z = np.full((4, 2), np.nan if i == 4 else 1.0)
                s.layer("l", z=z, a=z)
                s.loss(1.0)
                s.grads("l", gW=np.ones((2, 2)), gb=np.ones(2))
    records = steps_of(rec.result.run_dir)
    assert [r["full"] for r in records] == [True, False, False, True, True, False, True]
    assert records[1]["grad_norm"] == pytest.approx(np.sqrt(6)) and "layers" not in records[1]
    assert records[4]["layers"][0]["z"]["nan"] == 8 and records[4]["nonfinite"]["tensor"] == "pre-activation"


# ---------------------------------------------------------------- honesty about what was not given


def test_a_loop_that_gives_only_the_loss_says_which_detectors_were_skipped(tmp_path):
    with nnprobe.Recorder(tmp_path / "run") as rec:
        for i in range(5):
            with rec.step() as s:
                s.loss(1.0 / (i + 1))
    doc = rec.result.to_json()
    skipped = {s["code"]: s for s in doc["skipped"]}
    assert {"exploding-gradients", "vanishing-gradients", "dead-relu", "poor-init", "log-zero",
            "unnormalized-inputs", "large-update-ratio", "output-loss-mismatch"} <= set(skipped)
    assert "loss-divergence" not in skipped and "nonfinite" not in skipped
    assert skipped["exploding-gradients"]["missing"] == ["gW"]
    assert "s.grads" in skipped["exploding-gradients"]["enable"]
    assert "rec.data" in skipped["unnormalized-inputs"]["enable"]
    assert load_run(rec.result.run_dir).to_json()["skipped"] == doc["skipped"]
    runner = CliRunner()
    for args in (["diagnose", str(rec.result.run_dir)], ["diagnose", str(rec.result.run_dir), "--format", "markdown"]):
        res = runner.invoke(cli, args, catch_exceptions=False)
        assert "Not checked" in res.output and "exploding-gradients" in res.output and "not given gW" in res.output
    html = tmp_path / "r.html"
    runner.invoke(cli, ["report", str(rec.result.run_dir), "-o", str(html)], catch_exceptions=False)
    assert "exploding-gradients: not given gW" in html.read_text()


def test_a_run_made_by_train_skips_nothing(tmp_path):
    from nnprobe.config import load_config
    from nnprobe.train.run import train

    root = Path(__file__).resolve().parent.parent
    result = train(load_config(root / "configs" / "quickstart.yaml", ["training.steps=3"]), tmp_path / "t")
    assert result.skipped == [] and "skipped" not in result.to_json()


def test_every_detector_says_what_a_recorded_loop_must_give():
    """Drift: a detector added to the registry must say what it reads, or a recorded run would run it blind."""
    assert set(all_codes()) <= set(NEEDS)


# ---------------------------------------------------------------- in-place writes


def reluGrad(arg):
    arg[arg > 0] = 1
    arg[arg <= 0] = 0
    return arg


def test_a_derivative_that_writes_into_z_is_caught(tmp_path):
    """Seed case 3: reluGrad(z) overwrote z with 0/1 after z was handed over; the record keeps the forward
    statistics and the detector names the layer."""
    rng = np.random.default_rng(0)
    with nnprobe.Recorder(tmp_path / "run", loss="mse") as rec:
        for _ in range(3):
            with rec.step() as s:
                z = rng.normal(size=(8, 4))
                s.layer("hidden", z=z, a=np.maximum(z, 0), activation="relu")
                mean = z.mean()
                s.loss(1.0)
                reluGrad(z)
    records = steps_of(rec.result.run_dir)
    assert records[-1]["layers"][0]["z"]["mean"] == pytest.approx(mean, rel=1e-12)
    assert all(r["layers"][0]["changed_after_forward"] == ["z"] for r in records)
    (f,) = [f for f in rec.result.findings if f.code == "gradient-mismatch"]
    assert f.layer == "hidden" and f.step == 0 and f.evidence["records"] == 3 and "reluGrad" in f.message


def test_a_loop_that_leaves_z_alone_has_no_in_place_evidence(tmp_path):
    rec, _ = record(tmp_path, steps=3)
    assert not any("changed_after_forward" in l for r in steps_of(rec.result.run_dir) for l in r["layers"])
    assert "gradient-mismatch" not in {f.code for f in rec.result.findings}


def test_the_fingerprint_sees_a_permutation_and_a_sign_flip():
    from nnprobe.probes.changes import Fingerprint

    z = np.arange(12.0).reshape(3, 4) - 5
    before = Fingerprint.of(z)
    assert before.same(Fingerprint.of(z.copy()))
    assert not before.same(Fingerprint.of(z[::-1].copy()))
    assert not before.same(Fingerprint.of(-z))
    nan = np.full(3, np.nan)
    assert Fingerprint.of(nan).same(Fingerprint.of(nan.copy()))


@pytest.mark.parametrize("kernel_on", [True, False])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_fingerprint_sees_every_kind_of_write_a_derivative_function_makes(kernel_on, dtype):
    """One entry changed, a mask written over z, a negation, two entries swapped, one row moved: each
    changes the fingerprint; a copy, or the same array read again, does not (kernel and NumPy alike)."""
    from nnprobe.probes import kernel
    from nnprobe.probes.changes import Fingerprint

    was = kernel.in_use()
    kernel.use(kernel_on)
    try:
        z = np.random.default_rng(3).standard_normal((64, 33)).astype(dtype)
        before = Fingerprint.of(z)
        assert before.same(Fingerprint.of(z)) and before.same(Fingerprint.of(z.copy()))
        assert before.same(Fingerprint.of(np.asfortranarray(z)))  # the values in order, whatever the layout
        writes = {
            "one entry": lambda a: a.__setitem__((17, 5), a[17, 5] + 1),
            "a 0/1 mask": lambda a: a.__setitem__(slice(None), (a > 0).astype(a.dtype)),
            "negation": lambda a: np.negative(a, out=a),
            "a swap": lambda a: a.__setitem__((0, [1, 2]), a[0, [2, 1]]),
            "a row moved": lambda a: a.__setitem__(slice(None), np.roll(a, 1, axis=0)),
        }
        for what, write in writes.items():
            changed = z.copy()
            write(changed)
            assert not before.same(Fingerprint.of(changed)), what
    finally:
        kernel.use(was)


# ---------------------------------------------------------------- misuse, and the log stays whole


def expect_failure(tmp_path, body, match, steps=3):
    with pytest.raises(RecorderError, match=match):
        with nnprobe.Recorder(tmp_path / "run", loss="mse") as rec:
            for i in range(steps):
                with rec.step() as s:
                    body(s, i)
    result = load_run(rec.run_dir)
    assert result.status == "failed" and lines(rec.run_dir)[-1]["type"] == "end"
    return rec, result


def layer(s, name="l", rows=4, units=2, **kw):
    s.layer(name, z=np.ones((rows, units)), W=np.ones((3, units)), **kw)


@pytest.mark.parametrize("body, match", [
    (lambda s, i: layer(s, "l" if i == 0 else "renamed"), r"expected 'l'"),
    (lambda s, i: [layer(s, n) for n in (("a", "b") if i == 0 else ("b", "a"))], r"in this order"),
    (lambda s, i: layer(s, units=2 if i == 0 else 3), r"shape"),
    (lambda s, i: layer(s, activation="relu" if i == 0 else "tanh"), r"activation='tanh'"),
    (lambda s, i: (layer(s), s.loss(1.0)) if i == 0 else s.layer("l", z=np.ones((4, 2))), r"given \['z'\]"),
    (lambda s, i: [layer(s, n) for n in (("a", "b") if i == 0 else ("a",))], r"\['b'\] were not given"),
], ids=["renamed", "reordered", "reshaped", "activation", "fewer tensors", "fewer layers"])
def test_a_layout_that_changes_after_the_first_step_is_misuse(tmp_path, body, match):
    rec, result = expect_failure(tmp_path, body, match)
    assert result.steps == 2  # the first step, and the one that went wrong, both written


def test_the_batch_dimension_may_change(tmp_path):
    with nnprobe.Recorder(tmp_path / "run") as rec:
        for rows in (8, 8, 3):
            with rec.step() as s:
                layer(s, rows=rows)
    assert rec.result.status == "completed"


@pytest.mark.parametrize("body, match", [
    (lambda s, i: s.grads("ghost", gW=np.ones((2, 2))), r"s.grads\('ghost'\): no layer of that name"),
    (lambda s, i: s.layer("l", z=[[1.0, 2.0]]), r"expected a NumPy array, got list"),
    (lambda s, i: s.loss([1.0]), r"expected the loss as a number, got list"),
    (lambda s, i: (layer(s), layer(s)), r"already given in this step"),
    (lambda s, i: s.layer("l", z=np.ones((2, 2, 2))), r"at most 2 dimensions"),
    (lambda s, i: s.layer("l", z=np.array(["a"])), r"array of numbers"),
], ids=["undeclared grads", "list", "loss list", "layer twice", "3-d", "strings"])
def test_misuse_inside_a_step_is_a_recorder_error(tmp_path, body, match):
    expect_failure(tmp_path, body, match, steps=1)


def test_a_step_block_entered_twice_or_nested_is_misuse(tmp_path):
    with pytest.raises(RecorderError, match="entered twice"):
        with nnprobe.Recorder(tmp_path / "a") as rec:
            step = rec.step()
            with step as s:
                s.loss(1.0)
            with step:
                pass
    with pytest.raises(RecorderError, match="inside another one"):
        with nnprobe.Recorder(tmp_path / "b") as rec:
            with rec.step():
                with rec.step():
                    pass
    assert load_run(tmp_path / "b").status == "failed"


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "cross-entropy"}, r"did you mean 'cross_entropy'"),
    ({"task": "regresion"}, r"did you mean 'regression'"),
    ({"every": 0}, r"positive integer"),
    ({"stop_on": ["nonfinit"]}, r"did you mean 'nonfinite'"),
], ids=["loss", "task", "every", "stop_on"])
def test_bad_arguments_are_a_recorder_error_before_anything_is_written(tmp_path, kwargs, match):
    with pytest.raises(RecorderError, match=match):
        nnprobe.Recorder(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_recorder_error_is_an_nnprobe_error_and_public():
    assert issubclass(nnprobe.RecorderError, NnprobeError) and nnprobe.RecorderError is RecorderError


def test_calls_outside_their_block_are_misuse(tmp_path):
    rec = nnprobe.Recorder(tmp_path / "run")
    with pytest.raises(RecorderError, match="inside `with nnprobe.Recorder"):
        rec.step()
    with pytest.raises(RecorderError, match="once the `with"):
        rec.result
    with rec:
        with rec.step() as s:
            s.loss(1.0)
        with pytest.raises(RecorderError, match="before the first step"):
            rec.data(np.ones((3, 1)))
    with pytest.raises(RecorderError, match="outside its step block"):
        s.loss(2.0)


# ---------------------------------------------------------------- the person's exceptions and Ctrl-C


class Boom(Exception):
    pass


def test_an_exception_in_the_loop_propagates_unchanged_and_the_run_failed(tmp_path):
    with pytest.raises(Boom, match="their bug"):
        with nnprobe.Recorder(tmp_path / "run", loss="mse") as rec:
            for i in range(5):
                with rec.step() as s:
                    layer(s)
                    if i == 2:
                        raise Boom("their bug")
                    s.loss(1.0)
    records = lines(rec.run_dir)
    assert [r["type"] for r in records] == ["start", "step", "step", "step", "end"]
    assert records[3]["loss"] is None and records[3]["layers"][0]["z"]["mean"] == 1.0  # what was given
    assert records[-1]["status"] == "failed" and rec.result.status == "failed"
    assert json.loads((rec.run_dir / "meta.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGTERM"])
def test_ctrl_c_or_sigterm_ends_the_run_interrupted_with_every_record(tmp_path, how):
    with pytest.raises(KeyboardInterrupt):
        with nnprobe.Recorder(tmp_path / "run", loss="mse") as rec:
            for i in range(100):
                with rec.step() as s:
                    layer(s)
                    s.loss(1.0)
                    if i == 40:
                        if how == "SIGTERM":
                            os.kill(os.getpid(), signal.SIGTERM)
                        raise KeyboardInterrupt
    records = steps_of(rec.run_dir)
    assert len(records) == 41 and lines(rec.run_dir)[-1]["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is not None and load_run(rec.run_dir).status == "interrupted"


def test_a_used_directory_is_never_overwritten(tmp_path):
    first, _ = record(tmp_path, steps=1)
    second, _ = record(tmp_path, steps=2)
    assert Path(first.result.run_dir) == tmp_path / "run" and Path(second.result.run_dir) == tmp_path / "run-2"
    assert len(steps_of(first.result.run_dir)) == 1


def test_an_empty_run_is_still_a_readable_run(tmp_path):
    with nnprobe.Recorder(tmp_path / "run") as rec:
        pass
    assert rec.result.status == "completed" and rec.result.steps == 0
    assert load_run(rec.result.run_dir).steps == 0


def test_import_nnprobe_stays_light():
    code = ("import sys, nnprobe; heavy = [m for m in ('torch', 'numpy', 'nnprobe.train.recorder', 'pydantic') "
            "if m in sys.modules]; print(heavy); nnprobe.Recorder; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "False"


def test_junit_marks_skipped_detectors_skipped_not_passed(tmp_path):
    import xml.etree.ElementTree as ET

    from nnprobe.reports.junit import junit_suite

    with nnprobe.Recorder(tmp_path / "run") as rec:
        with rec.step() as s:
            s.loss(1.0)
    suite = junit_suite(rec.result)
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["exploding-gradients"].find("skipped").get("message").startswith("exploding-gradients: not given gW")
    assert cases["loss-divergence"].find("skipped") is None
    assert int(suite.get("skipped")) == len(rec.result.skipped) > 0
    ET.tostring(suite)  # serialisable
