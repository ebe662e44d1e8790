"""nnprobe.torch.Probe: what it records, where it says a NaN was born, and that it never breaks training."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from nnprobe.diagnose.load import load_run  # noqa: E402
from nnprobe.errors import RunDirError  # noqa: E402
from nnprobe.torch import Probe, ProbeError  # noqa: E402
from nnprobe.torch import host as torch_host  # noqa: E402
from torch_loops import BadAt, BadBackward, data, records, steps_of, train  # noqa: E402


@pytest.fixture(autouse=True, params=["host", "device"])
def statistics_path(request, monkeypatch):
    """Every test runs on both paths: CPU float tensors read through NumPy views (host), and the torch
    reductions that CUDA and bfloat16/float16 models take (device), forced here on the CPU."""
    if request.param == "device":
        import nnprobe.torch.probe as probe_module

        monkeypatch.setattr(probe_module, "_HOST_DTYPES", ())
    return request.param


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


# ---------------------------------------------------------------- what is recorded


def test_layers_are_weighted_modules_in_execution_order_named_by_module_path(tmp_path):
    class Net(nn.Module):  # declared in one order, run in another
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 3)
            self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh())

        def forward(self, x):
            return self.head(self.body(x))

    torch.manual_seed(0)
    probe = train(Net(), tmp_path / "run", steps=1)
    start = records(probe.run_dir)[0]
    assert [(l["name"], l["fan_in"], l["units"], l["activation"], l["is_output"]) for l in start["layers"]] == [
        ("body.0", 4, 8, "tanh", False), ("head", 8, 3, "softmax", True)]
    assert start["loss"]["from_logits"] is True  # the logits went into the loss


def test_full_records_every_n_steps_carry_z_a_and_parameters_matching_an_independent_computation(tmp_path):
    model = _mlp()
    x, y = data()
    with torch.no_grad():
        z0 = model[0](x)
        w0 = model[0].weight.detach().clone()
    probe = train(model, tmp_path / "run", steps=5, every=2, x=x, y=y)
    steps = steps_of(probe.run_dir)
    assert [r["full"] for r in steps] == [True, False, True, False, True]
    first = steps[0]["layers"][0]
    assert first["z"]["mean"] == pytest.approx(z0.mean().item(), rel=1e-5)
    assert first["z"]["std"] == pytest.approx(z0.std(correction=0).item(), rel=1e-5)
    assert first["a"]["max"] == pytest.approx(torch.relu(z0).max().item())
    assert first["a"]["zero_frac"] == pytest.approx((z0 <= 0).float().mean().item())
    assert first["a"]["dead"] == int((z0.amax(0) <= 0).sum())
    assert first["W"]["norm"] == pytest.approx(w0.norm().item(), rel=1e-6)
    assert first["W"]["pos_frac"] == pytest.approx((w0 > 0).float().mean().item())
    assert set(steps[2]["layers"][0]["W"]) == {"norm", "nonfinite"}  # the distribution at step 0 only


def test_gradients_grad_norm_and_update_ratio_match_the_tensors(tmp_path):
    model = _mlp()
    x, y = data()
    ref = _mlp()
    loss = nn.functional.cross_entropy(ref(x), y)
    loss.backward()
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ref.parameters()])).item()
    w_before = ref[2].weight.detach().clone()
    w_after = w_before - 0.1 * ref[2].weight.grad
    probe = train(model, tmp_path / "run", steps=1, x=x, y=y)
    rec = steps_of(probe.run_dir)[0]
    assert rec["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert rec["grad_norm"] == pytest.approx(total, rel=1e-5)
    out = rec["layers"][1]
    assert out["gW"]["norm"] == pytest.approx(ref[2].weight.grad.norm().item(), rel=1e-5)
    assert out["gb"]["maxabs"] == pytest.approx(ref[2].bias.grad.abs().max().item(), rel=1e-5)
    assert out["update_ratio"] == pytest.approx(((w_after - w_before).norm() / w_before.norm()).item(), rel=1e-4)


def test_functional_activation_is_the_next_layers_input_and_is_identified(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(nn.functional.relu(self.fc1(x)))

    torch.manual_seed(0)
    net = Net()
    x, y = data()
    with torch.no_grad():
        a = torch.relu(net.fc1(x))
    probe = train(net, tmp_path / "run", steps=1, x=x, y=y)
    assert records(probe.run_dir)[0]["layers"][0]["activation"] == "relu"
    layer = steps_of(probe.run_dir)[0]["layers"][0]
    assert layer["a"]["mean"] == pytest.approx(a.mean().item(), rel=1e-5)
    assert layer["z"]["min"] < 0 <= layer["a"]["min"]


def test_inplace_relu_leaves_the_recorded_preactivation_intact(tmp_path):
    """nn.ReLU(inplace=True) overwrites z; the record's z is taken before it does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
    probe = train(model, tmp_path / "run", steps=2)
    layer = steps_of(probe.run_dir)[0]["layers"][0]
    assert layer["z"]["min"] < 0
    assert layer["a"]["min"] == 0.0
    assert probe.errors.count == 0


def test_probabilities_into_a_hand_written_log_are_recorded_as_loss_in(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
    x, y = data()
    probe = train(model, tmp_path / "run", steps=1, x=x, y=y,
                   loss_fn=lambda p, t: -torch.log(p[torch.arange(len(t)), t]).mean())
    start = records(probe.run_dir)[0]
    assert start["loss"]["from_logits"] is False and start["layers"][-1]["activation"] == "softmax"
    loss_in = steps_of(probe.run_dir)[0]["loss_in"]
    assert loss_in["n"] == 32 * 3 and 0 < loss_in["min"] <= loss_in["max"] < 1


def test_convolution_layers_are_recorded(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    x = torch.randn(8, 1, 6, 6)
    y = torch.randint(0, 2, (8,))
    probe = train(model, tmp_path / "run", steps=1, x=x, y=y)
    start = records(probe.run_dir)[0]
    assert [(l["name"], l["fan_in"], l["units"]) for l in start["layers"]] == [("0", 9, 4), ("3", 64, 2)]
    assert start["data"]["n_features"] == len(start["data"]["input_mean"]) == 1  # per input channel


def test_layers_argument_restricts_what_is_recorded(tmp_path):
    probe = train(_mlp(), tmp_path / "run", steps=1, probe_kwargs={"layers": ["2"]})
    assert [l["name"] for l in steps_of(probe.run_dir)[0]["layers"]] == ["2"]


# ---------------------------------------------------------------- the non-finite origin


def _nan_run(tmp_path, model, *, x=None, y=None, loss_fn=None):
    probe = train(model, tmp_path / "run", steps=3, every=100, x=x, y=y, loss_fn=loss_fn)
    bad = [r for r in steps_of(probe.run_dir) if r["nonfinite"]]
    return probe, bad[0]


def test_forward_origin_is_the_module_that_made_the_nan_not_those_it_passed_through(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), BadAt(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    probe, rec = _nan_run(tmp_path, model)
    assert rec["step"] == 0 and rec["full"] is True  # a light step turned full by its NaN
    assert rec["nonfinite"] == {"pass": "forward", "tensor": "output", "layer": "0", "module": "2"}
    assert probe.stopped and probe.result.status == "diverged"
    codes = {f.code: f for f in probe.result.findings}
    assert codes["nonfinite"].step == 0


def test_forward_origin_in_code_between_modules(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(torch.sqrt(self.fc1(x)))  # sqrt of a negative number: NaN made outside any module

    torch.manual_seed(0)
    _, rec = _nan_run(tmp_path, Net())
    assert rec["nonfinite"] == {"pass": "forward", "tensor": "activation", "layer": "fc1",
                                "module": "code before fc2"}


def test_nonfinite_input_is_named_as_the_input(tmp_path):
    x, y = data()
    x[3, 1] = float("inf")
    _, rec = _nan_run(tmp_path, _mlp(), x=x, y=y)
    assert rec["nonfinite"]["tensor"] == "input" and rec["nonfinite"]["layer"] is None


def test_loss_origin_when_every_forward_tensor_is_finite(tmp_path):
    _, rec = _nan_run(tmp_path, _mlp(), loss_fn=lambda out, t: torch.log(out - out).mean())
    assert rec["nonfinite"]["pass"] == "forward" and rec["nonfinite"]["tensor"] == "loss"


def test_backward_origin_is_the_first_hook_that_sees_a_nonfinite_gradient(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), BadBackward(), nn.Linear(8, 3))
    _, rec = _nan_run(tmp_path, model)
    # the gradient of the output layer's z is finite; the tanh output's gradient comes through _BadBackward
    assert rec["nonfinite"] == {"pass": "backward", "tensor": "activation-gradient", "layer": "0", "module": "1"}


def test_update_origin_when_the_step_itself_overflows(tmp_path):
    probe = train(_mlp(), tmp_path / "run", steps=2, every=100, lr=3e38,  # lr * grad overflows float32
                   loss_fn=lambda out, t: 1e3 * nn.functional.cross_entropy(out, t))
    rec = [r for r in steps_of(probe.run_dir) if r["nonfinite"]][0]
    assert rec["step"] == 0
    assert rec["nonfinite"]["pass"] == "update" and rec["nonfinite"]["tensor"] in ("weight", "bias")


# ---------------------------------------------------------------- never breaking the training


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _unprobed(steps, x, y):
    """The same model trained by the same loop without a probe."""
    plain = _mlp()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(plain(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return plain


def test_probing_leaves_the_training_bit_identical(tmp_path):
    x, y = data()
    plain, probed = _unprobed(4, x, y), _mlp()
    train(probed, tmp_path / "run", steps=4, every=2, x=x, y=y)
    for p, q in zip(plain.parameters(), probed.parameters()):
        assert torch.equal(p, q)


def test_hooks_are_removed_on_close_and_on_an_exception_in_the_loop(tmp_path):
    model = _mlp()
    probe = train(model, tmp_path / "ok", steps=1)
    assert _hook_count(model) == 0 and len(probe.hooks) == 0
    x, y = data()
    with pytest.raises(ZeroDivisionError):
        with Probe(model, tmp_path / "failed", loss="cross_entropy") as probe:
            with probe.step() as s:
                s.loss(nn.functional.cross_entropy(model(x), y))
            with probe.step():
                model(x)
                raise ZeroDivisionError("the user's bug")
    assert _hook_count(model) == 0
    log = records(probe.run_dir)
    assert log[-1] == {"type": "end", "status": "failed", "steps": 1, "final_loss": log[1]["loss"],
                           "stopped_by": None}
    assert probe.result.status == "failed"


def test_an_exception_inside_a_hook_is_counted_and_training_goes_on(tmp_path, monkeypatch, statistics_path):
    from nnprobe.torch import stats as torch_stats

    calls = {"n": 0}
    # the statistics of a step's z: through NumPy views on the host path, torch reductions on the device path
    module, name = (torch_host, "preactivation") if statistics_path == "host" else (torch_stats, "forward_parts")
    real = getattr(module, name)

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 1:  # the first layer's z, in its forward hook at step 0
            raise RuntimeError("probe bug")
        return real(*args)

    monkeypatch.setattr(module, name, flaky)
    x, y = data()
    plain, probed = _unprobed(3, x, y), _mlp()
    with pytest.warns(RuntimeWarning, match="1 exception"):
        probe = train(probed, tmp_path / "run", steps=3, x=x, y=y)
    assert probe.errors.count == 1 and "probe bug" in probe.errors.first
    assert [r.get("probe_errors", 0) for r in steps_of(probe.run_dir)] == [1, 0, 0]
    assert any("probe bug" in p for p in probe.result.log_problems)
    assert json.loads((probe.run_dir / "meta.json").read_text())["probe_errors"]["count"] == 1
    for p, q in zip(plain.parameters(), probed.parameters()):
        assert torch.equal(p, q)


def test_same_run_directory_and_diagnose_agree_with_the_live_findings(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), BadAt(), nn.Linear(8, 3))
    probe = train(model, tmp_path / "run", steps=3)
    assert sorted(p.name for p in probe.run_dir.iterdir()) == ["config.yaml", "findings.json", "meta.json",
                                                               "steps.jsonl"]
    live = [(f.code, f.step, f.layer) for f in probe.result.findings]
    again = [(f.code, f.step, f.layer) for f in load_run(probe.run_dir).findings]
    assert live == again and ("nonfinite", 0, "0") in live


def test_cli_diagnose_of_a_probed_run_exits_1_on_an_error(tmp_path):
    from click.testing import CliRunner

    from nnprobe.cli import cli

    torch.manual_seed(0)
    probe = train(nn.Sequential(nn.Linear(4, 8), BadAt(), nn.Linear(8, 3)), tmp_path / "run", steps=2)
    res = CliRunner().invoke(cli, ["diagnose", str(probe.run_dir), "--format", "json"], catch_exceptions=False)
    assert res.exit_code == 1
    assert json.loads(res.output)["findings"][0]["code"] == "nonfinite"


def test_stopped_probe_records_nothing_more(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), BadAt(), nn.Linear(8, 3))
    x, y = data()
    with Probe(model, tmp_path / "run", loss="cross_entropy") as probe:
        for _ in range(3):  # a loop that ignores probe.stopped
            with probe.step() as s:
                s.loss(nn.functional.cross_entropy(model(x), y))
    assert probe.stopped and len(steps_of(probe.run_dir)) == 1


def test_identical_seeded_runs_write_identical_step_logs(tmp_path):
    logs = []
    for name in ("a", "b"):
        probe = train(_mlp(), tmp_path / name, steps=3, probe_kwargs={"name": "same"})
        logs.append((probe.run_dir / "steps.jsonl").read_text())
    assert logs[0] == logs[1]


# ---------------------------------------------------------------- misuse


@pytest.mark.parametrize("kwargs, match", [
    ({"every": 0}, "every: expected a positive integer"),
    ({"loss": "nll"}, "loss: expected one of mse, bce, cross_entropy"),
    ({"task": "ranking"}, "task: expected one of regression, classification"),
    ({"layers": ["9"]}, "'9' is not a module path"),
    ({"layers": ["1"]}, "'1' is a ReLU, which nnprobe cannot record"),
    ({"stop_on": ["nonfinte"]}, "did you mean 'nonfinite'"),
], ids=["every", "loss", "task", "layers-missing", "layers-unsupported", "stop_on"])
def test_misuse_raises_a_probe_error_naming_the_argument(tmp_path, kwargs, match):
    with pytest.raises(ProbeError, match=match):
        Probe(_mlp(), tmp_path / "run", **kwargs)


def test_a_directory_that_holds_a_run_is_never_overwritten(tmp_path):
    train(_mlp(), tmp_path / "run", steps=1)
    with pytest.raises(RunDirError, match="not empty") as info:
        Probe(_mlp(), tmp_path / "run")
    assert str(info.value).startswith("Probe(out=...):") and "--out" not in str(info.value)  # a library's terms


def test_import_nnprobe_never_imports_torch():
    code = "import sys, nnprobe, nnprobe.cli, nnprobe.app; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_model_is_probed_on_the_device(tmp_path):
    model = _mlp().cuda()
    x, y = data()
    probe = train(model, tmp_path / "run", steps=2, x=x.cuda(), y=y.cuda())
    steps = steps_of(probe.run_dir)
    assert math.isfinite(steps[0]["loss"]) and steps[0]["layers"][0]["z"]["nan"] == 0


class _Huge(nn.Module):
    """Finite outputs whose sum of squares overflows float32 (entries of 1e20)."""

    def forward(self, x):
        return torch.full_like(x, 1e20)


def test_huge_but_finite_tensors_are_not_named_nonfinite(tmp_path):
    """A check whose reduction overflows on entries of 1e20 is confirmed entry by entry before a NaN is named."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), _Huge(), nn.Linear(8, 3))
    x, y = data()
    probe = train(model, tmp_path / "run", steps=2, every=100, x=x, y=y,
                   loss_fn=lambda out, t: (out * 0.0).sum() + nn.functional.cross_entropy(out * 0.0, t))
    assert [r["nonfinite"] for r in steps_of(probe.run_dir)] == [None, None]
    assert "nonfinite" not in {f.code for f in probe.result.findings}


def test_a_bare_linear_model_is_one_layer_named_model(tmp_path):
    torch.manual_seed(0)
    probe = train(nn.Linear(4, 3), tmp_path / "run", steps=1)
    assert [l["name"] for l in steps_of(probe.run_dir)[0]["layers"]] == ["model"]


def test_ctrl_c_finishes_the_step_and_stops_with_status_interrupted(tmp_path):
    import os
    import signal

    model = _mlp()
    x, y = data()
    with Probe(model, tmp_path / "run", loss="cross_entropy") as probe:
        for i in range(5):
            with probe.step() as s:
                s.loss(nn.functional.cross_entropy(model(x), y))
                if i == 1:
                    os.kill(os.getpid(), signal.SIGINT)  # handled by the probe: no KeyboardInterrupt
            if probe.stopped:
                break
    assert i == 1 and probe.result.status == "interrupted"
    assert len(steps_of(probe.run_dir)) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back after the first


def test_a_bfloat16_model_on_the_cpu_is_recorded_like_its_float32_twin(tmp_path):
    """bfloat16 has no NumPy view: such a model takes the torch reductions on the CPU. Its records carry
    the same statistics as the float32 model's (on either path), to bfloat16's precision."""
    x, y = data()
    wide = train(_mlp(), tmp_path / "f32", steps=3, x=x, y=y)
    narrow = train(_mlp().to(torch.bfloat16), tmp_path / "bf16", steps=3, x=x.to(torch.bfloat16), y=y)
    assert narrow.errors.count == 0 and narrow.result.status == "completed"
    for r32, r16 in zip(steps_of(wide.run_dir), steps_of(narrow.run_dir)):
        assert r16["loss"] == pytest.approx(r32["loss"], rel=0.05)
        for l32, l16 in zip(r32["layers"], r16["layers"]):
            assert l16["name"] == l32["name"]
            assert l16["z"]["std"] == pytest.approx(l32["z"]["std"], rel=0.05)
            assert l16["a"]["zero_frac"] == pytest.approx(l32["a"]["zero_frac"], abs=0.05)
            assert l16["gW"]["norm"] == pytest.approx(l32["gW"]["norm"], rel=0.1)
            assert l16["W"]["norm"] == pytest.approx(l32["W"]["norm"], rel=0.02)
