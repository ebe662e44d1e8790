"""gradcheck: backprop against central finite differences, per layer, and each activation's derivative against its forward.

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
from pathlib import Path
from typing import Any, Optional

import numpy as np

from nnprobe.nn.activations import HIDDEN, Activation, LeakyReLU
from nnprobe.findings import Finding

DEFAULT_TOL = 1e-4  # the gradient-mismatch detector's max_rel_error default (used if the registry lacks it)
ACT_FLOOR = 1e-3
PARAM_FLOOR = 1e-3  # times max(1, |loss|)
STEP = 1e-5  # times max(1, |x|)
KINK_TOL = 1e-3  # one-sided slopes differing by more than this (relative) mean a kink within the step
BATCH_SIZE = 8
MAX_ENTRIES = 50
CODE = "gradient-mismatch"


def _num(x: Optional[float]) -> Any:
    """A float for JSON: finite as is, non-finite as the log's strings, None as null."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _fmt(x: Optional[float], spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _detector(cfg):
    """The registry's gradient-mismatch detector with the config's overrides (severity, max_rel_error), or None."""
    from nnprobe.diagnose.detectors import REGISTRY, RunContext, all_codes

    all_codes()
    cls = REGISTRY.get(CODE)
    if cls is None:
        return None
    settings = (getattr(cfg, "detectors", None) or {}).get(CODE, {}) if cfg is not None else {}
    return cls(RunContext(start={}, config=cfg), settings)


def tolerance_for(cfg=None) -> float:
    """The relative-error threshold: detectors.gradient-mismatch.max_rel_error, else its registry default."""
    det = _detector(cfg)
    if det is not None and "max_rel_error" in det.t:
        return float(det.t["max_rel_error"])
    return DEFAULT_TOL


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
                f"relative error {_fmt(self.max_rel_error)} at z = {w['z']:.6g} (derivative returned "
                f"{w['derivative']:.6g}, finite differences give {w['finite_difference']:.6g}), above the tolerance "
                f"{self.tolerance:g}; {self.n_bad} of {self.n_checked} points checked disagree. Backprop multiplies by this "
                f"derivative in every hidden layer, so their gradients are wrong.{hint}"
            )
        if not parts:
            checked = f"{self.n_checked} points" + (f", {self.n_kinks} near a kink skipped" if self.n_kinks else "")
            return (f"{self.subject()}: derivative matches finite differences of forward (largest relative error "
                    f"{_fmt(self.max_rel_error)} over {checked}).")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "activation": self.name, "role": self.role, "layers": list(self.layers), "file": self.file,
            "elementwise": self.elementwise, "tolerance": self.tolerance, "points": self.n_points, "checked": self.n_checked,
            "near_kink": self.n_kinks, "mismatched": self.n_bad, "max_rel_error": _num(self.max_rel_error),
            "worst": {k: _num(v) for k, v in self.worst.items()} if self.worst else None,
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
    """
    tol = tolerance_for() if tolerance is None else float(tolerance)
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
            "max_rel_error": _num(self.max_rel_error),
            "worst": ({"index": list(self.worst["index"]), "backprop": _num(self.worst["backprop"]),
                       "finite_difference": _num(self.worst["finite_difference"])} if self.worst else None),
            "ok": not self.mismatch,
        }


@dataclass
class GradcheckReport:
    config: str
    name: str
    batch_size: int
    loss: Optional[float]
    tensors: list[TensorReport]
    activations: list[ActivationReport]
    findings: list[Finding]
    layer_activations: dict[str, str] = field(default_factory=dict)
    user_code: list[dict] = field(default_factory=list)
    floor: float = PARAM_FLOOR
    tolerance: float = DEFAULT_TOL

    @property
    def ok(self) -> bool:
        return not self.findings

    def layer_rows(self) -> list[tuple[str, Optional[TensorReport], Optional[TensorReport]]]:
        rows: dict[str, dict[str, TensorReport]] = {}
        for t in self.tensors:
            rows.setdefault(t.layer, {})[t.tensor] = t
        return [(name, r.get("W"), r.get("b")) for name, r in rows.items()]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "name": self.name,
            "status": "passed" if self.ok else "failed",
            "batch_size": self.batch_size,
            "dtype": "float64",
            "loss": _num(self.loss),
            "tolerance": {"relative": self.tolerance, "floor": self.floor, "activation_floor": ACT_FLOOR, "step": STEP,
                          "max_entries_per_tensor": MAX_ENTRIES},
            "layers": [
                {"layer": name, "activation": self.layer_activations.get(name),
                 "W": w.to_dict() if w else None, "b": b.to_dict() if b else None}
                for name, w, b in self.layer_rows()
            ],
            "activations": [a.to_dict() for a in self.activations],
            "findings": [f.to_dict() for f in self.findings],
            "user_code": list(self.user_code),
        }


def _check_tensor(P: np.ndarray, grad: np.ndarray, loss_fn, L0: float, floor: float, rng: np.random.Generator,
                  report: TensorReport, max_entries: int) -> None:
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


def gradcheck_config(cfg, config_dir: Path | str, *, config_label: str = "", batch_size: int = BATCH_SIZE,
                     max_entries: int = MAX_ENTRIES) -> GradcheckReport:
    """Build the configured network in float64 and compare backprop with finite differences everywhere.

    A user activation that cannot be loaded, raises, or returns the wrong shape/dtype raises
    UserCodeError; a wrong derivative becomes a gradient-mismatch finding.
    """
    from nnprobe.data import load_dataset
    from nnprobe.train.loop import Trainer
    from nnprobe.nn.user_activations import load_user_activation, user_code_info

    tol = tolerance_for(cfg)
    cfg64 = cfg.model_copy(deep=True)
    cfg64.model.dtype = "float64"
    user = None
    info: list[dict] = []
    if ":" in cfg.model.activation:
        user = load_user_activation(cfg.model.activation, config_dir)
        info = [user_code_info(user)]
    data_seq = np.random.SeedSequence(cfg.seed).spawn(1)[0]
    data = load_dataset(cfg64.data, cfg64.task, np.random.default_rng(data_seq))
    trainer = Trainer(cfg64, data, hidden_activation=user)
    model = trainer.model
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x6763]))
    n = trainer.x.shape[0]
    idx = np.sort(rng.choice(n, size=min(batch_size, n), replace=False))
    xb, tb = trainer.x[idx], trainer.t[idx]
    l2 = cfg.loss.l2

    def loss_fn() -> float:
        model.forward(xb)
        out = model.output
        return trainer.loss(out.z, out.a, tb).value + model.l2_penalty(l2)

    act_reports: list[ActivationReport] = []
    hidden_layers = [l.name for l in model.layers[:-1]]
    if hidden_layers:
        rep = check_activation(model.layers[0].activation, role="hidden", layers=hidden_layers, seed=cfg.seed,
                               tolerance=tol)
        rep.name = cfg.model.activation
        act_reports.append(rep)
    rep = check_activation(model.output.activation, role="output", layers=[model.output.name], seed=cfg.seed,
                           tolerance=tol)
    rep.name = cfg.model.output
    if rep.elementwise:
        act_reports.append(rep)

    tensors: list[TensorReport] = []
    with np.errstate(all="ignore"):
        L0 = loss_fn()
        out = model.output
        lo = trainer.loss(out.z, out.a, tb)
        grads = [np.array(g, dtype=np.float64, copy=True) for g in model.backward(lo.grad_z, l2).flat()]
        floor = PARAM_FLOOR * max(1.0, abs(L0)) if math.isfinite(L0) else PARAM_FLOOR
        for k, P in enumerate(model.params()):
            layer = model.layers[k // 2]
            trep = TensorReport(layer.name, "W" if k % 2 == 0 else "b", tuple(P.shape), int(P.size), tolerance=tol)
            if math.isfinite(L0):
                _check_tensor(P, grads[k], loss_fn, L0, floor, rng, trep, max_entries)
            else:
                trep.n_nonfinite = min(int(P.size), max_entries)
            tensors.append(trep)

    report = GradcheckReport(
        config=config_label or cfg.name or "", name=cfg.name or "", batch_size=int(len(idx)),
        loss=L0, tensors=tensors, activations=act_reports, findings=[],
        layer_activations={l.name: l.activation_name for l in model.layers}, user_code=info, floor=floor,
        tolerance=tol,
    )
    report.findings = _findings(report, cfg)
    return report


def _activation_fixes(act: ActivationReport) -> list[str]:
    fixes = []
    if act.user:
        what = " and ".join(dict.fromkeys((["derivative"] if act.mismatch else []) + act.in_place))
        fixes.append(f"fix {what}(z) in {act.file or act.name} (docs/user-activations.md shows the pattern)")
    if act.builtin_match:
        fixes.append(f"model.activation: {act.builtin_match}")
    return fixes


def _findings(report: GradcheckReport, cfg) -> list[Finding]:
    det = _detector(cfg)
    severity = det.severity_level if det is not None else "error"
    findings: list[Finding] = []
    hidden_bad = next((a for a in report.activations if a.role == "hidden" and not a.ok), None)
    for act in report.activations:
        if act.ok:
            continue
        findings.append(Finding(
            CODE, severity, None, None, act.describe(),
            evidence={"activation": act.name, "role": act.role, "layers": act.layers,
                      "max_rel_error": _num(act.max_rel_error), "max_rel_error_allowed": act.tolerance,
                      "in_place": act.in_place,
                      "worst": {k: _num(v) for k, v in act.worst.items()} if act.worst else None},
            fixes=_activation_fixes(act),
        ))
    out_name = report.tensors[-1].layer if report.tensors else None
    for name, w, b in report.layer_rows():
        bad = [t for t in (w, b) if t is not None and t.mismatch]
        if not bad:
            continue
        worst = max(bad, key=lambda t: t.max_rel_error or 0.0)
        wi = worst.worst or {}
        index = "[" + ", ".join(str(i) for i in wi.get("index", ())) + "]"
        n_bad = sum(t.n_bad for t in bad)
        n_checked = sum(t.n_checked for t in (w, b) if t is not None)
        bp, fd = float(wi.get("backprop", math.nan)), float(wi.get("finite_difference", math.nan))
        message = (
            f"{worst.tensor} of {name}: backprop gives {bp:.6g} but finite differences give {fd:.6g} at index "
            f"{index}, a relative error of {_fmt(worst.max_rel_error)} (> {worst.tolerance:g}); {n_bad} of "
            f"{n_checked} checked entries of {name}'s W and b disagree."
        )
        evidence = {"tensor": worst.tensor, "rel_error": _num(worst.max_rel_error), "analytic": _num(bp),
                    "numeric": _num(fd), "index": list(wi.get("index", ())), "n_bad": n_bad,
                    "n_checked": n_checked, "max_rel_error": worst.tolerance}
        f = Finding(CODE, severity, None, name, message, evidence, [])
        if hidden_bad is not None and name != out_name:
            f.message += (f" The hidden activation {hidden_bad.name!r} is wrong (see its finding), and backprop goes "
                          "through it for every layer below the output, so these gradients are wrong too.")
            f.fixes = _activation_fixes(hidden_bad) or f.fixes
        else:
            f.message += (" Every activation's derivative matches its forward, so the mismatch comes from backprop "
                          f"itself (loss.kind {cfg.loss.kind}, model.output {cfg.model.output}, loss.from_logits "
                          f"{str(cfg.loss.from_logits).lower()}); please report it with this config.")
            if not cfg.loss.from_logits and cfg.loss.kind != "mse":
                f.fixes = ["loss.from_logits: true  — the fused loss, whose gradient is simply output - target"]
        f.evidence.update({t.tensor: t.to_dict() for t in (w, b) if t is not None})
        findings.append(f)
    return findings


# ---------------------------------------------------------------- rendering


def render_gradcheck(report: GradcheckReport):
    """A rich renderable: a table per layer (W and b), one per activation, the findings and the verdict."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def cell(t: Optional[TensorReport]) -> Text:
        if t is None:
            return Text("-")
        if t.max_rel_error is None:
            why = "near a kink" if t.n_kinks else "loss not finite"
            return Text(f"- (none checked: {why})", style="yellow")
        style = "red" if t.mismatch else "green"
        extra = f", {t.n_kinks} at a kink" if t.n_kinks else ""
        return Text(f"{t.max_rel_error:.2e}  ({t.n_checked}/{t.n_entries}{extra})", style=style)

    head = Text.assemble(
        ("gradcheck ", "bold"), (report.config or report.name, "bold"),
        f": batch of {report.batch_size} examples in float64, loss {_fmt(report.loss, '.6g')}; central differences "
        f"with h = {STEP:g}·max(1, |x|); an entry fails when |bp - fd| / max(|bp|, |fd|, {report.floor:.3g}) > "
        f"{report.tolerance:g}",
    )
    layers = Table(title="parameters: largest relative error (entries checked / total)", title_justify="left")
    for col in ("layer", "activation", "W", "b", "result"):
        layers.add_column(col)
    for name, w, b in report.layer_rows():
        bad = any(t is not None and t.mismatch for t in (w, b))
        layers.add_row(name, report.layer_activations.get(name, ""), cell(w), cell(b),
                       Text("MISMATCH", style="bold red") if bad else Text("ok", style="green"))
    acts = Table(title="activations: derivative vs finite differences of forward", title_justify="left")
    for col in ("activation", "role", "layers", "points", "largest rel. error", "in place", "result"):
        acts.add_column(col)
    for a in report.activations:
        acts.add_row(a.name, a.role, ", ".join(a.layers), f"{a.n_checked}/{a.n_points}",
                     Text(_fmt(a.max_rel_error, ".2e"), style="red" if a.mismatch else "green"),
                     Text(", ".join(a.in_place) or "no", style="red" if a.in_place else ""),
                     Text("ok", style="green") if a.ok else Text("WRONG", style="bold red"))
    parts: list[Any] = [head, layers, acts]
    for f in report.findings:
        where = f" {f.layer}" if f.layer else ""
        parts.append(Text.assemble((f"{f.severity} {f.code}{where}: ", "bold red"), f.message))
        for fix in f.fixes:
            parts.append(Text(f"    fix: {fix}"))
    if report.ok:
        parts.append(Text("PASSED: backprop matches finite differences in every layer.", style="bold green"))
    else:
        parts.append(Text(f"FAILED: {len(report.findings)} {CODE} finding(s).", style="bold red"))
    return Group(*parts)


__all__ = [
    "ActivationReport", "GradcheckReport", "TensorReport", "check_activation", "gradcheck_config",
    "render_gradcheck", "tolerance_for",
]
