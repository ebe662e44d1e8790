"""nnprobe.probes.changes.UpdateTracker against copies kept by hand: the update it measures and the
norm it reports are those of the arrays, whatever the loop does between steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnprobe.probes import kernel
from nnprobe.probes.changes import UpdateTracker


@pytest.fixture(params=[True, False], ids=["kernel", "numpy"])
def kernel_state(request):
    was = kernel.in_use()
    on = kernel.use(request.param)
    if request.param and not on:
        pytest.skip("the C kernel is not built here or the CPU lacks AVX2")
    yield on
    kernel.use(was)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_updates_with_changes_between_steps(kernel_state, dtype):
    """Each step: keep W, update it in place; between some steps the loop also rescales W or writes
    one entry outside the step (a max-norm constraint, a manual fix). Every step's measured update
    is the in-step one and every kept norm is the current W's: a copy reused from the previous
    step's end would be caught by its fingerprint."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((37, 19)).astype(dtype)
    tracker = UpdateTracker()
    for step in range(12):
        before = W.copy()
        sq = tracker.keep(W)
        if sq is not None:
            assert sq == pytest.approx(float(np.sum(before.astype(np.float64) ** 2)), rel=1e-6)
        W -= (rng.standard_normal(W.shape) * 1e-3).astype(dtype)
        norm = tracker.in_place()
        expected = float(np.linalg.norm((W - before).astype(np.float64)))
        assert norm == pytest.approx(expected, rel=1e-5), step
        if tracker.after_finite is not None:
            assert tracker.after_finite
        if step % 3 == 1:
            W *= dtype(0.5)  # outside the step
        elif step % 3 == 2:
            W[4, 7] += dtype(1.0)  # one entry, outside the step


def test_an_update_to_inf_is_seen_by_the_read_that_measures_it(kernel_state):
    W = np.ones((8, 16), dtype=np.float32)
    tracker = UpdateTracker()
    tracker.keep(W)
    W[3, 3] = np.inf
    assert tracker.in_place() == math.inf
    assert tracker.after_finite in (False, None) and (tracker.after_finite is False) == kernel_state


def test_a_step_that_leaves_W_alone_measures_nothing_and_the_next_update_is_still_right(kernel_state):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((16, 16)).astype(np.float32)
    tracker = UpdateTracker()
    tracker.keep(W)
    assert tracker.in_place() is None  # no update in this step
    before = W.copy()
    tracker.keep(W)
    W += np.float32(0.25)
    assert tracker.in_place() == pytest.approx(float(np.linalg.norm((W - before).astype(np.float64))), rel=1e-6)


def test_a_loop_that_rebinds_W_has_its_update_measured_at_the_next_step(kernel_state):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((9, 24)).astype(np.float32)
    tracker = UpdateTracker()
    tracker.keep(W)
    new = (W - np.float32(0.01) * rng.standard_normal(W.shape).astype(np.float32)).astype(np.float32)
    assert tracker.in_place() is None  # the array handed over did not change
    assert tracker.rebound(new) == pytest.approx(float(np.linalg.norm((new - W).astype(np.float64))), rel=1e-6)


def test_the_copy_from_the_step_before_is_checked_only_when_it_can_serve(monkeypatch):
    """Recorded every 10th step, W has changed in between: keep() copies without first spending a read
    on a fingerprint that cannot match; on consecutive steps it checks and reuses the copy (the
    kernel's path: its update pass leaves the copy)."""
    was = kernel.in_use()
    if not kernel.use(True):
        pytest.skip("the C kernel is not built here or the CPU lacks AVX2")
    try:
        _reuse_case(monkeypatch)
    finally:
        kernel.use(was)


def _reuse_case(monkeypatch):
    reads = []
    real = kernel.active.fingerprint
    monkeypatch.setattr(kernel.active, "fingerprint", lambda x: reads.append(x.size) or real(x))
    W = np.random.default_rng(3).standard_normal((32, 32)).astype(np.float32)
    tracker = UpdateTracker()
    tracker.keep(W, 0)
    W -= np.float32(0.01)
    tracker.in_place(0)
    before = W.copy()
    assert tracker.keep(W, 1) == pytest.approx(float(np.sum(W.astype(np.float64) ** 2)), rel=1e-6)
    assert reads == [W.size]  # checked, and reused
    W -= np.float32(0.01)
    tracker.in_place(1)
    W -= np.float32(0.01)  # light steps 2..10 update W unseen
    tracker.keep(W, 11)
    assert reads == [W.size]  # no read spent on the stale copy
    W -= np.float32(0.02)
    assert tracker.in_place(11) == pytest.approx(float(np.linalg.norm(np.full(W.shape, 0.02))), rel=1e-4)
    assert before is not W
