"""Finite differences: backprop against central differences, per tensor, and each activation's derivative
against its forward. The numerical check only; `nnprobe.app.gradcheck_config` runs it over a config and
`nnprobe.reports.gradcheck` draws the result.

Tolerance (documented in docs/user-activations.md and printed with every report):

- a gradient entry mismatches when |bp - fd| / max(|bp|, |fd|, floor) > tol, where tol is the
  `gradient-mismatch` detector's `max_rel_error` (default 1e-4, CS231n's "suspect" line; set
  `detectors: {gradient-mismatch: {max_rel_error: 1e-6}}` to tighten it) and
  floor = 1e-3 * max(1, |loss|) for parameters, 1e-3 for activation derivatives: a relative
  tolerance that becomes an absolute one (tol * 1e-3 of the loss scale) for entries too small to
  be compared relatively. In float64 with a step h = 1e-5 * max(1, |x|) the finite-difference
  noise is ~1e-11 of the loss scale, far below it (observed errors of correct code: < 1e-8);
- an entry whose perturbation crosses a kink (a ReLU switching on or off) is skipped: its
  one-sided differences disagree, so no finite difference is meaningful there. An entry above
  tolerance is tried again with h/10 before it counts as a mismatch.

Everything runs in float64 whatever `model.dtype` says, on a seeded batch of 8 training examples,
all entries of small tensors and a seeded random subset of 50 entries of larger ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from nnprobe.nn.activations import HIDDEN, Activation, LeakyReLU

DEFAULT_TOL = 1e-4  # the gradient-mismatch detector's max_rel_error default (app.tolerance_for reads the live one)
ACT_FLOOR = 1e-3
PARAM_FLOOR = 1e-3  # times max(1, |loss|)
STEP = 1e-5  # times max(1, |x|)
KINK_TOL = 1e-3  # one-sided slopes differing by more than this (relative) mean a kink within the step
BATCH_SIZE = 8
MAX_ENTRIES = 50


def json_number(x: Optional[float]) -> Any:
    """A float for JSON: finite as is, non-finite as the log's strings, None as null."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def fmt_number(x: Optional[float], spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


# ---------------------------------------------------------------- activations


@dataclass
class ActivationReport:
    """How an elementwise activation's derivative compares with finite differences of its forward."""

    name: str
    role: str  # "hidden" | "output"
    tolerance: float = DEFAULT_TOL
    layers: list[str] = field(default_factory=list)
    file: Optional[str] = None
    elementwise: bool = True
    n_points: int = 0
    n_checked: int = 0
    n_kinks: int = 0
    n_bad: int = 0
    max_rel_error: Optional[float] = None
    worst: Optional[dict[str, float]] = None  # z, derivative, finite_difference
    in_place: list[str] = field(default_factory=list)  # "forward" and/or "derivative"
    in_place_detail: dict[str, dict[str, Any]] = field(default_factory=dict)
    builtin_match: Optional[str] = None

    @property
    def user(self) -> bool:
        return ":" in self.name

    @property
    def mismatch(self) -> bool:
        return self.max_rel_error is not None and not self.max_rel_error <= self.tolerance

    @property
    def ok(self) -> bool:
        return not self.mismatch and not self.in_place

    def subject(self) -> str:
        if self.user:
            return f"model.activation {self.name!r} ({self.file or 'its module'})"
        return f"the {self.role} activation {self.name!r}"

    def describe(self) -> str:
        """One paragraph: what is wrong, the measured numbers, what to change."""
        parts: list[str] = []
        for what in self.in_place:
            d = self.in_place_detail.get(what, {})
            example = ""
            if "z" in d:
                example = f" (z = {d['z']:.6g} became {d['became']:.6g})"
            fix = ("`return np.where(z > 0, 1.0, 0.0)`" if what == "derivative" else "`return np.maximum(z, 0)`")
            parts.append(
                f"{self.subject()}: {what}(z) modifies its argument z in place: {d.get('changed', '?')} of "
                f"{d.get('total', '?')} entries changed{example}. Backprop passes the layer's cached pre-activation, "
                "so after the call the layer's z holds other numbers, and everything that reads z afterwards (the "
                "probes here; the next use of z in hand-written code) is wrong. Return a new array instead of "
                f"writing into z, e.g. {fix}, or start with `z = z.copy()`."
            )
        if self.mismatch and self.worst is not None:
            w = self.worst
            hint = ""
            if self.builtin_match:
                formula = _derivative_formula(self.builtin_match)
                hint = (f" Its forward(z) matches the built-in {self.builtin_match}, whose derivative is {formula}"
                        f"; or use `model.activation: {self.builtin_match}`." if formula else
                        f" Its forward(z) matches the built-in {self.builtin_match}; `model.activation: "
                        f"{self.builtin_match}` has a tested derivative.")
            parts.append(
                f"{self.subject()}: derivative(z) disagrees with central finite differences of forward(z): largest "
                f"relative error {fmt_number(self.max_rel_error)} at z = {w['z']:.6g} (derivative returned "
                f"{w['derivative']:.6g}, finite differences give {w['finite_difference']:.6g}), above the tolerance "
                f"{self.tolerance:g}; {self.n_bad} of {self.n_checked} points checked disagree. Backprop multiplies by this "
                f"derivative in every hidden layer, so their gradients are wrong.{hint}"
            )
        if not parts:
            checked = f"{self.n_checked} points" + (f", {self.n_kinks} near a kink skipped" if self.n_kinks else "")
            return (f"{self.subject()}: derivative matches finite differences of forward (largest relative error "
                    f"{fmt_number(self.max_rel_error)} over {checked}).")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "activation": self.name, "role": self.role, "layers": list(self.layers), "file": self.file,
            "elementwise": self.elementwise, "tolerance": self.tolerance, "points": self.n_points, "checked": self.n_checked,
            "near_kink": self.n_kinks, "mismatched": self.n_bad, "max_rel_error": json_number(self.max_rel_error),
            "worst": {k: json_number(v) for k, v in self.worst.items()} if self.worst else None,
            "in_place": list(self.in_place), "builtin_match": self.builtin_match, "ok": self.ok,
        }


def _derivative_formula(builtin: str) -> Optional[str]:
    """The "a' = ..." half of a built-in activation's docstring (the formula kept beside the code)."""
    doc = (HIDDEN[builtin].__doc__ or "").split("\n")[0]
    for part in doc.split(";"):
        if "a'" in part:
            return part.strip().rstrip(".")
    return None


def _points(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Seeded points in [-6, -0.05] U [0.05, 6]: the working range of an activation, away from a kink at 0."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 6.0, shape) * rng.choice([-1.0, 1.0], shape)


def _in_place(fn, z: np.ndarray) -> tuple[np.ndarray, Optional[dict[str, Any]]]:
    """Call fn on a copy of z and compare the copy with z afterwards."""
    arg = z.copy()
    out = fn(arg)
    changed = ~((arg == z) | (np.isnan(arg) & np.isnan(z)))
    if not changed.any():
        return out, None
    i = int(np.flatnonzero(changed)[0])
    return out, {"changed": int(changed.sum()), "total": int(z.size), "z": float(z.flat[i]),
                 "became": float(arg.flat[i])}


def _fd_slopes(forward, z: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences, and a mask of points where the one-sided slopes disagree (a kink within h)."""
    zp, zm = z + h, z - h
    fp, fm, f0 = forward(zp.copy()), forward(zm.copy()), forward(z.copy())
    fd = (fp - fm) / (zp - zm)
    right, left = (fp - f0) / (zp - z), (f0 - fm) / (z - zm)
    scale = np.maximum(1.0, np.maximum(np.abs(right), np.abs(left)))
    kink = ~(np.abs(right - left) <= KINK_TOL * scale)
    return fd, kink


def _rel_error(a: np.ndarray, b: np.ndarray, floor: float) -> np.ndarray:
    err = np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return np.where(np.isnan(err), np.inf, err)


def _builtin_match(act: Activation, z: np.ndarray) -> Optional[str]:
    with np.errstate(all="ignore"):
        try:
            mine = act.forward(z.copy())
        except Exception:
            return None
        for name, cls in HIDDEN.items():
            ref = LeakyReLU(0.01) if cls is LeakyReLU else cls()
            if np.allclose(mine, ref.forward(z), rtol=1e-6, atol=1e-9):
                return name
    return None


def check_activation(act: Activation, *, role: str = "hidden", layers: Optional[list[str]] = None,
                     seed: int = 0, shape: tuple[int, int] = (40, 5),
                     tolerance: Optional[float] = None) -> ActivationReport:
    """Derivative vs finite differences of forward at seeded points away from 0, plus in-place checks.

    A user activation that raises or returns the wrong shape/dtype raises UserCodeError from here.
    `tolerance`: the relative error allowed (the gradient-mismatch detector's; app.tolerance_for).
    """
    tol = DEFAULT_TOL if tolerance is None else float(tolerance)
    file = str(getattr(act, "file", None) or "") or None
    report = ActivationReport(name=getattr(act, "name", type(act).__name__), role=role, tolerance=tol,
                              layers=list(layers or []), file=file, elementwise=act.elementwise)
    if not act.elementwise:
        return report  # softmax: its Jacobian-vector product is covered by the parameter check
    z = _points(seed, shape)
    with np.errstate(all="ignore"):
        a, changed = _in_place(act.forward, z)
        if changed:
            report.in_place.append("forward")
            report.in_place_detail["forward"] = changed
        d, changed = _in_place(lambda arg: act.derivative(arg, a.copy()), z)
        if changed:
            report.in_place.append("derivative")
            report.in_place_detail["derivative"] = changed
        h = STEP * np.maximum(1.0, np.abs(z))
        fd, kink = _fd_slopes(act.forward, z, h)
        err = _rel_error(d, fd, ACT_FLOOR)
        retry = (err > tol) & ~kink
        if retry.any():  # a kink just inside the step, or truncation error: try a smaller step
            fd2, kink2 = _fd_slopes(act.forward, z, h / 10)
            err2 = _rel_error(d, fd2, ACT_FLOOR)
            better = retry & (err2 < err)
            err, fd = np.where(better, err2, err), np.where(better, fd2, fd)
            kink = kink | (retry & kink2 & ~(err2 <= tol))
        usable = ~kink & np.isfinite(fd)
    report.n_points = int(z.size)
    report.n_kinks = int(np.count_nonzero(kink))
    report.n_checked = int(np.count_nonzero(usable))
    if report.n_checked:
        masked = np.where(usable, err, -1.0)
        i = int(np.argmax(masked))
        report.max_rel_error = float(masked.flat[i])
        report.n_bad = int(np.count_nonzero(usable & (err > tol)))
        report.worst = {"z": float(z.flat[i]), "derivative": float(d.flat[i]), "finite_difference": float(fd.flat[i])}
    if report.mismatch:
        report.builtin_match = _builtin_match(act, z)
    return report


# ---------------------------------------------------------------- parameters


@dataclass
class TensorReport:
    layer: str
    tensor: str  # "W" | "b"
    shape: tuple[int, ...]
    n_entries: int
    tolerance: float = DEFAULT_TOL
    n_checked: int = 0
    n_kinks: int = 0
    n_nonfinite: int = 0
    n_bad: int = 0
    max_rel_error: Optional[float] = None
    worst: Optional[dict[str, Any]] = None  # index, backprop, finite_difference

    @property
    def mismatch(self) -> bool:
        return self.max_rel_error is not None and not self.max_rel_error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape), "entries": self.n_entries, "checked": self.n_checked,
            "near_kink": self.n_kinks, "nonfinite": self.n_nonfinite, "mismatched": self.n_bad,
            "max_rel_error": json_number(self.max_rel_error),
            "worst": ({"index": list(self.worst["index"]), "backprop": json_number(self.worst["backprop"]),
                       "finite_difference": json_number(self.worst["finite_difference"])} if self.worst else None),
            "ok": not self.mismatch,
        }


def check_tensor(P: np.ndarray, grad: np.ndarray, loss_fn, L0: float, floor: float, rng: np.random.Generator,
                  report: TensorReport, max_entries: int) -> None:
    """Fill `report` with backprop's `grad` of P against central differences of `loss_fn` (P perturbed in place
    and restored), at every entry of a small P and a seeded sample of `max_entries` of a larger one."""
    size = P.size
    entries = np.arange(size) if size <= max_entries else np.sort(rng.choice(size, max_entries, replace=False))
    errors: list[tuple[float, int, float, float]] = []
    flat_grad = grad.ravel()
    for i in entries:
        i = int(i)
        theta = float(P.flat[i])
        bp = float(flat_grad[i])
        best: Optional[tuple[float, float]] = None
        kink_seen = False
        for h in (STEP * max(1.0, abs(theta)), STEP * max(1.0, abs(theta)) / 10):
            P.flat[i] = theta + h
            hp = float(P.flat[i]) - theta
            Lp = loss_fn()
            P.flat[i] = theta - h
            hm = theta - float(P.flat[i])
            Lm = loss_fn()
            P.flat[i] = theta
            if not (math.isfinite(Lp) and math.isfinite(Lm)):
                break
            fd = (Lp - Lm) / (hp + hm)
            right, left = (Lp - L0) / hp, (L0 - Lm) / hm
            if abs(right - left) > KINK_TOL * max(abs(right), abs(left), floor):
                kink_seen = True
                continue
            err = abs(bp - fd) / max(abs(bp), abs(fd), floor)
            if math.isnan(err):
                err = math.inf
            if best is None or err < best[0]:
                best = (err, fd)
            if err <= report.tolerance:
                break
        if best is None:
            if kink_seen:
                report.n_kinks += 1
            else:
                report.n_nonfinite += 1
            continue
        errors.append((best[0], i, bp, best[1]))
    report.n_checked = len(errors)
    if errors:
        err, i, bp, fd = max(errors)
        report.max_rel_error = err
        report.n_bad = sum(1 for e in errors if e[0] > report.tolerance)
        report.worst = {"index": tuple(int(k) for k in np.unravel_index(i, P.shape)), "backprop": bp,
                        "finite_difference": fd}


__all__ = ["ActivationReport", "TensorReport", "check_activation", "check_tensor", "fmt_number", "json_number"]
