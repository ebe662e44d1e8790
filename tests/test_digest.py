"""The digest's envelopes against a naive reference, its bounded memory, and non-finite handling."""

from __future__ import annotations

import math
import random

import pytest

from nnprobe.diagnose.digest import Digest, Envelope, has_dead_units
from conftest import plain_layer, start_record, step_record

# the network these records describe: 2 inputs, 4 ReLU units, 1 identity output
PLAIN_NET = [("dense1", 2, 4, "relu"), ("dense2", 4, 1, "identity")]

# -- records as docs/log-schema.md writes them ------------------------------------------------


def check_against_reference(env: Envelope, points: list[tuple[int, float]]) -> None:
    """Every bucket's min/max/count equal the true ones over the steps it covers; the buckets cover every step."""
    buckets = env.buckets()
    assert len(buckets) <= env.cap
    covered = 0
    for b in buckets:
        inside = [v for s, v in points if b.first <= s <= b.last]
        finite = [v for v in inside if v is not None and math.isfinite(v)]
        assert inside, f"bucket {b} holds no step"
        assert b.n == len(finite)
        assert b.bad == len(inside) - len(finite)
        if finite:
            assert b.lo == min(finite)
            assert b.hi == max(finite)
            assert b.mean == pytest.approx(sum(finite) / len(finite), rel=1e-9, abs=1e-12)
        else:
            assert b.lo is None and b.hi is None
        covered += len(inside)
    assert covered == len(points)
    for a, b in zip(buckets, buckets[1:]):
        assert a.last < b.first


# -- Envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,cap,stride",
    [(10, 8, 1), (1000, 16, 1), (10_007, 64, 1), (5000, 512, 7), (513, 512, 1)],
    ids=["fits", "many-merges", "odd-length", "sparse-steps", "one-past-cap"],
)
def test_envelope_matches_naive_reference(n, cap, stride):
    rng = random.Random(n * cap + stride)
    env = Envelope(cap)
    points = []
    for i in range(n):
        step, value = i * stride, rng.gauss(0.0, 1.0) * 10 ** rng.randint(-3, 3)
        env.add(step, value)
        points.append((step, value))
    check_against_reference(env, points)
    assert env.count == n
    assert env.min_value == min(v for _, v in points)
    assert env.max_value == max(v for _, v in points)
    assert env.first_value == points[0][1] and env.last_value == points[-1][1]
    assert env.width & (env.width - 1) == 0  # widths only ever double


def test_bucket_count_never_exceeds_cap():
    env = Envelope(32)
    arrays = (env.lo, env.hi, env.sum, env.n, env.bad)
    for step in range(5000):
        env.add(step, float(step % 17))
        assert len(env.buckets()) <= 32
        assert all(len(a) == 32 for a in arrays)
    assert len(env.buckets()) <= 32
    assert env.width == 256


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["spike-up", "spike-down"])
def test_single_spike_survives_a_million_steps(sign):
    """A one-step excursion must stay visible: thinning points would drop it, an envelope cannot."""
    rng = random.Random(7)
    n, spike_at = 1_000_000, 612_345
    env = Envelope(512)
    for step in range(n):
        env.add(step, 1e6 * sign if step == spike_at else rng.random())
    buckets = env.buckets()
    assert len(buckets) <= 512
    holder = next(b for b in buckets if b.first <= spike_at <= b.last)
    extreme = holder.hi if sign > 0 else holder.lo
    assert extreme == 1e6 * sign
    others = [b for b in buckets if b is not holder]
    assert all(0.0 <= b.lo and b.hi < 1.0 for b in others)
    assert (env.max_step if sign > 0 else env.min_step) == spike_at


def test_nonfinite_and_null_values_are_counted_and_marked_not_enveloped():
    env = Envelope(8)
    series = [1.0, None, math.nan, 2.0, math.inf, -math.inf, 3.0, 0.5]
    for step, value in enumerate(series):
        env.add(step, value)
    assert (env.n_none, env.n_nan, env.n_posinf, env.n_neginf) == (1, 1, 1, 1)
    assert env.n_bad == 4
    assert env.first_bad_step == 1 and env.first_bad_value is None
    assert (env.min_value, env.max_value) == (0.5, 3.0)
    assert env.last_value == 0.5
    buckets = env.buckets()
    assert [b.bad for b in buckets] == [0, 1, 1, 0, 1, 1, 0, 0]
    assert [b.hi for b in buckets] == [1.0, None, None, 2.0, None, None, 3.0, 0.5]
    check_against_reference(env, list(enumerate(series)))
    assert env.worst_high() == (None, 1)  # the first non-finite value beats any finite maximum


def test_envelope_of_only_nonfinite_values_has_no_finite_range():
    env = Envelope()
    env.add(0, math.nan)
    assert not env.has_finite and not env.empty
    assert env.worst_high()[1] == 0 and math.isnan(env.worst_high()[0])
    [bucket] = env.buckets()
    assert bucket.lo is None and bucket.bad == 1


def test_empty_envelope():
    env = Envelope()
    assert env.empty and env.buckets() == [] and env.count == 0 and env.worst_high() == (None, None)


def test_huge_finite_values_keep_the_mean_inside_the_band():
    """Summing 1e308-scale values overflows; the plotted mean must still be a finite number in [lo, hi]."""
    env = Envelope(2)
    for step in range(8):
        env.add(step, 1.5e308)
    for b in env.buckets():
        assert b.lo <= b.mean <= b.hi and math.isfinite(b.mean)


@pytest.mark.parametrize("cap", [0, 3, 1])
def test_envelope_cap_must_be_even(cap):
    with pytest.raises(ValueError, match="cap"):
        Envelope(cap)


START = start_record(PLAIN_NET)


# -- Digest --------------------------------------------------------------------------------------


def test_digest_layer_summary_start_worst_end():
    d = Digest(START)
    grads = [0.5, 4.0, 2.0, 1.0]
    deads = [0, 3, 1, 2]
    for step, (g, dead) in enumerate(zip(grads, deads)):
        d.observe(step_record(START, step, loss=1.0 / (step + 1), grad_norm=1.0, layers=[
            plain_layer("dense1", dead=dead, a_min=-float(step), a_max=float(step * 2), grad=g),
            plain_layer("dense2", grad=g / 10)]))
    d.finish({"type": "end", "status": "completed", "steps": 4, "final_loss": 0.25, "stopped_by": None})
    s1, s2 = d.layer_summaries()
    assert (s1.grad_start, s1.grad_worst, s1.grad_worst_step, s1.grad_end) == (0.5, 4.0, 1, 1.0)
    assert (s1.dead_start, s1.dead_worst, s1.dead_worst_step, s1.dead_end) == (0.0, 0.75, 1, 0.5)
    assert (s1.act_min, s1.act_max) == (-3.0, 6.0)
    assert s1.dead_applies and not s2.dead_applies
    assert s2.grad_worst == pytest.approx(0.4)
    assert d.n_records == d.n_full == 4 and d.end["status"] == "completed"
    assert (d.first_step, d.last_step) == (0, 3)


def test_light_records_feed_only_the_every_step_series():
    d = Digest(START)
    d.observe(step_record(START, 0, loss=2.0, grad_norm=1.0, layers=[plain_layer("dense1"), plain_layer("dense2")],
                          accuracy=0.5))
    for step in range(1, 10):
        d.observe(step_record(START, step, loss=2.0 - step / 10, full=False, grad_norm=float(step)))
    assert d.loss.count == 10 and d.grad_norm.count == 10
    assert d.layers[0].grad_norm.count == 1 and d.accuracy.count == 1
    assert d.val_loss.empty and d.n_full == 1 and d.has_layer_stats
    assert d.grad_norm.max_value == 9.0


def test_first_nonfinite_and_nonfinite_activations_are_recorded():
    d = Digest(START)
    d.observe(step_record(START, 0, loss=1.0, grad_norm=1.0, layers=[plain_layer("dense1"), plain_layer("dense2")]))
    where = {"pass": "forward", "tensor": "activation", "layer": "dense1"}
    d.observe(step_record(START, 1, loss=math.nan, grad_norm=math.nan, nonfinite=where, layers=[
        plain_layer("dense1", nan=3, a_min=None, a_max=None, grad=None, ratio=None),
        plain_layer("dense2", grad=math.inf)]))
    d.observe(step_record(START, 2, loss=math.nan, grad_norm=math.nan, nonfinite={"pass": "forward", "tensor": "input",
                                                                        "layer": None}, full=False))
    assert d.first_nonfinite == {"step": 1, **where}
    assert d.nonfinite_records == 2
    s1, s2 = d.layer_summaries()
    assert s1.act_nonfinite_step == 1 and (s1.act_min, s1.act_max) == (0.0, 1.0)
    assert math.isnan(s1.grad_worst) and s1.grad_worst_step == 1  # null gradient norm: no finite entry
    assert math.isinf(s2.grad_worst) and s2.grad_worst_step == 1 and math.isinf(s2.grad_end)
    assert d.loss.n_nan == 2 and d.loss.first_bad_step == 1


def test_run_that_diverged_at_step_zero():
    d = Digest(START)
    d.observe(step_record(START, 0, loss=math.inf, grad_norm=math.nan, layers=[
        plain_layer("dense1", a_min=None, a_max=None, grad=None, ratio=None, nan=8),
        plain_layer("dense2", a_min=None, a_max=None, grad=None, ratio=None, nan=2)],
        nonfinite={"pass": "forward", "tensor": "pre-activation", "layer": "dense1"}))
    d.finish({"type": "end", "status": "diverged", "steps": 1, "final_loss": None, "stopped_by": "nonfinite"})
    assert not d.loss.has_finite and d.loss.n_posinf == 1
    s1 = d.layer_summaries()[0]
    assert s1.act_min is None and s1.act_max is None and math.isnan(s1.grad_start)


def test_malformed_record_is_counted_not_raised():
    d = Digest(START)
    d.observe({"type": "step", "step": 0, "full": True, "loss": "oops", "layers": []})
    d.observe({"type": "step", "step": -1, "full": False, "loss": 1.0})
    d.observe({"type": "step", "full": False, "loss": 1.0})
    d.observe(step_record(START, 1, loss=1.0, grad_norm=1.0, layers=[{"name": "dense1", "a": {"dead": "x"}}]))
    assert d.n_malformed == 4
    d.observe(step_record(START, 2, loss=0.5, grad_norm=1.0, layers=[{"name": "dense9"}, plain_layer("dense2")]))
    assert d.n_malformed == 4 and d.loss.last_value == 0.5


def test_digest_memory_is_bounded_by_the_cap():
    d = Digest(START, cap=16)
    for step in range(3000):
        d.observe(step_record(START, step, loss=1.0, grad_norm=1.0, full=step % 3 == 0,
                              layers=[plain_layer("dense1"), plain_layer("dense2")]))
    for env in [d.loss, d.grad_norm] + [ls.grad_norm for ls in d.layers]:
        assert len(env.lo) == 16 and len(env.buckets()) <= 16


@pytest.mark.parametrize("activation,applies", [
    ("relu", True), ("leaky_relu", True), ("elu", False), ("gelu", False), ("softplus", False),
    ("mypkg.acts:swish", True), ("sigmoid", False), ("tanh", False), ("softmax", False), ("identity", False),
])
def test_dead_units_apply_to_the_relu_family(activation, applies):
    """Regression: the digest counted dead units for elu, gelu and softplus while dead-relu watched relu and
    leaky_relu only. Both now read Traits.dead_units (user code, whose traits are unknown, is shown)."""
    assert has_dead_units(activation) is applies
