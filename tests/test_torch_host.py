"""The PyTorch probe's CPU path: its statistics are nnprobe's host statistics of the very tensors the step
made, and its non-finite origin names the producing module on light and full steps alike."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from nnprobe.probes import kernel, statistics  # noqa: E402
from nnprobe.torch import Probe  # noqa: E402
from nnprobe.torch.layers import SATURATION, bounded_by_input  # noqa: E402
from torch_loops import BadAt, BadBackward, NaNGrad, data, steps_of, train  # noqa: E402


def _data():
    return data(n=64, features=6)


def _loop(model, out, *, x=None, y=None, **kwargs):
    """The shared loop on this file's 6-feature batch."""
    if x is None:
        x, y = _data()
    return train(model, out, x=x, y=y, **kwargs)


def _reference(model, steps, lr=0.1, x=None, y=None):
    """Each step's z, a, W, b (as the forward used them), gradients and W after the update, taken from a
    copy of the model trained by the same loop without a probe, as NumPy arrays."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    out = []
    for _ in range(steps):
        seen = {}
        h = x
        for m in model:
            h = m(h)
            if isinstance(m, nn.Linear):
                seen.setdefault("z", []).append(h.detach().numpy().copy())
                seen.setdefault("a", []).append(h.detach().numpy().copy())  # replaced by the activation's output
            else:
                seen["a"][-1] = h.detach().numpy().copy()
        seen["W"] = [m.weight.detach().numpy().copy() for m in linears]
        seen["b"] = [m.bias.detach().numpy().copy() for m in linears]
        loss = nn.functional.cross_entropy(h, y)
        opt.zero_grad()
        loss.backward()
        seen["gW"] = [m.weight.grad.numpy().copy() for m in linears]
        seen["gb"] = [m.bias.grad.numpy().copy() for m in linears]
        opt.step()
        seen["W_after"] = [m.weight.detach().numpy().copy() for m in linears]
        seen["loss"] = loss.item()
        out.append(seen)
    return out


def _close(got: dict, want: dict, rel=1e-5, abs_=1e-7):
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=rel, abs=abs_), key
        else:
            assert got[key] == value, key


@pytest.fixture(params=[True, False], ids=["kernel", "numpy"])
def engine(request):
    """Both host engines: the one-pass C kernel (where built) and NumPy alone."""
    if request.param and kernel._KERNEL is None:
        pytest.skip("the C kernel is not built here")
    was = kernel.in_use()
    kernel.use(request.param)
    yield request.param
    kernel.use(was)


@pytest.mark.parametrize("inplace", [False, True])
def test_cpu_statistics_are_nnprobes_host_statistics_of_the_same_arrays(tmp_path, engine, inplace):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace=inplace), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 3))
    x, y = _data()
    want = _reference(model, 3, x=x, y=y)
    probe = _loop(model, tmp_path / "run", steps=3, every=1, x=x, y=y)
    steps = steps_of(probe.run_dir)
    saturation = [None, SATURATION["tanh"], None]  # the flat region of the tanh after the second layer
    for i, (rec, ref) in enumerate(zip(steps, want)):
        assert rec["full"] and rec["nonfinite"] is None
        assert rec["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        total = sum(float((g.astype(np.float64) ** 2).sum()) for g in ref["gW"] + ref["gb"])
        assert rec["grad_norm"] == pytest.approx(math.sqrt(total), rel=1e-5)
        for j, layer in enumerate(rec["layers"]):
            z, a = ref["z"][j], ref["a"][j]
            zs, dead = statistics.preactivation_stats(z, saturation[j])
            _close(layer["z"], zs)
            _close(layer["a"], statistics.activation_stats(a, dead))
            w = statistics.weight_stats(ref["W"][j]) if i == 0 else statistics.weight_norm_stats(ref["W"][j])
            _close(layer["W"], w)
            _close(layer["b"], statistics.bias_stats(ref["b"][j]))
            _close(layer["gW"], statistics.gradient_stats(ref["gW"][j], True))
            _close(layer["gb"], statistics.gradient_stats(ref["gb"][j], False))
            moved = np.linalg.norm((ref["W_after"][j] - ref["W"][j]).astype(np.float64))
            assert layer["update_ratio"] == pytest.approx(moved / w["norm"], rel=1e-4)


def test_a_float64_model_and_a_convolution_take_the_host_path(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    x = torch.randn(8, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    with torch.no_grad():
        z = model[0](x)
    probe = _loop(model, tmp_path / "run", steps=2, every=1, x=x, y=y)
    conv = steps_of(probe.run_dir)[0]["layers"][0]
    per_channel = z.movedim(1, -1).reshape(-1, 4).numpy()  # units are channels: every position a row
    zs, dead = statistics.preactivation_stats(per_channel, None)
    _close(conv["z"], zs)
    assert conv["a"]["dead"] == dead == int((z.amax(dim=(0, 2, 3)) <= 0).sum())


# ---------------------------------------------------------------- the non-finite origin, light and full


class _Functional(nn.Module):
    def __init__(self, bad_backward=False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)
        self.bad_backward = bad_backward

    def forward(self, x):
        h = nn.functional.relu(self.fc1(x))
        return self.fc2(NaNGrad.apply(h) if self.bad_backward else torch.sqrt(h - 1.0))


def _negative_inf_layer():
    """A first layer whose pre-activation is -inf for every example: an in-place ReLU turns it into 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight.fill_(-3e38)
        model[0].bias.zero_()
    return model


def _origin_cases():
    torch.manual_seed(0)
    yield ("module", lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(inplace=True), BadAt(), nn.Linear(8, 3)),
           {}, {"pass": "forward", "tensor": "output", "layer": "0", "module": "2"})
    yield ("functional", lambda: _Functional(), {},
           {"pass": "forward", "tensor": "activation", "layer": "fc1", "module": "code before fc2"})
    yield ("inplace-relu", _negative_inf_layer, {"x": torch.rand(64, 6) + 0.1},
           {"pass": "forward", "tensor": "pre-activation", "layer": "0", "module": "0"})
    yield ("loss", lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
           {"loss_fn": lambda o, t: torch.log(o - o).mean()},
           {"pass": "forward", "tensor": "loss", "layer": None, "module": None})
    yield ("backward", lambda: nn.Sequential(nn.Linear(6, 8), nn.Tanh(), BadBackward(), nn.Linear(8, 3)), {},
           {"pass": "backward", "tensor": "activation-gradient", "layer": "0", "module": "1"})
    yield ("backward-functional", lambda: _Functional(bad_backward=True), {},
           # fc1's a is fc2's input, made after the NaN-making backward: z's gradient is the first one bad
           {"pass": "backward", "tensor": "pre-activation-gradient", "layer": "fc1", "module": "fc1"})
    yield ("update", lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
           {"lr": 3e38, "loss_fn": lambda o, t: 1e3 * nn.functional.cross_entropy(o, t)}, "update")


@pytest.mark.parametrize("every", [1, 100], ids=["full", "light"])
@pytest.mark.parametrize("name,make,kwargs,want", list(_origin_cases()), ids=[c[0] for c in _origin_cases()])
def test_the_nonfinite_origin_names_the_producer_on_light_and_fullsteps_of(tmp_path, every, name, make, kwargs, want):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", None)
    y = None
    if x is not None:
        y = _data()[1]
    torch.manual_seed(0)
    probe = _loop(make(), tmp_path / "run", steps=2, every=every, x=x, y=y, **kwargs)
    bad = [r for r in steps_of(probe.run_dir) if r["nonfinite"]]
    assert bad and bad[0]["step"] == 0 and bad[0]["full"] is True  # a light step turned full by its NaN
    if want == "update":
        assert bad[0]["nonfinite"]["pass"] == "update" and bad[0]["nonfinite"]["tensor"] in ("weight", "bias")
    else:
        assert bad[0]["nonfinite"] == want
    assert "nonfinite" in {f.code for f in probe.result.findings}


def test_activations_bounded_by_their_input_are_the_usual_ones():
    assert all(bounded_by_input(m) for m in (nn.ReLU(), nn.ReLU(inplace=True), nn.Sigmoid(), nn.Tanh(),
                                             nn.LeakyReLU(0.01), nn.GELU(), nn.Softmax(dim=1), nn.Identity()))
    assert not bounded_by_input(nn.LeakyReLU(1e30))  # a slope above 1 can overflow a finite input
    assert not bounded_by_input(nn.Dropout()) and not bounded_by_input(nn.Linear(2, 2))


@pytest.mark.parametrize("case", ["classes", "one-hot", "one-unit-probabilities", "one-unit-logits", "mismatch"])
def test_accuracy_on_the_host_is_the_device_paths(tmp_path, case):
    from nnprobe.torch import host

    g = torch.Generator().manual_seed(0)
    out = torch.randn(32, 4, generator=g)
    targets = torch.randint(0, 4, (32,), generator=g)
    from_logits = True
    if case == "one-hot":
        targets = nn.functional.one_hot(targets, 4).float()
    elif case.startswith("one-unit"):
        out = torch.rand(32, 1, generator=g) if case.endswith("probabilities") else torch.randn(32, 1, generator=g)
        targets = torch.randint(0, 2, (32, 1), generator=g).float()
        from_logits = case.endswith("logits")
    elif case == "mismatch":
        targets = targets[:16]
    probe = Probe(nn.Linear(4, 4), tmp_path / "run", loss="cross_entropy")
    probe._from_logits = from_logits
    want = probe._device.accuracy(out, targets)
    probe.close()
    got = host.accuracy(out, targets, from_logits)
    assert (got is None) == (want is None)
    if want is not None:
        assert got == pytest.approx(float(want))
