"""Use-cases shared by the command line and `check`: train one config, and its static findings.

The CLI only parses arguments and prints; `check` (and every later front door) calls the same
functions, so that a config behaves alike whichever command ran it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nnprobe.config import Config
from nnprobe.data import load_dataset
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.errors import UserCodeError
from nnprobe.findings import Finding
from nnprobe.nn.activations import Identity
from nnprobe.nn.finite_differences import (
    BATCH_SIZE, DEFAULT_TOL, MAX_ENTRIES, PARAM_FLOOR, ActivationReport, TensorReport, check_activation,
    check_tensor, fmt_number, json_number,
)
from nnprobe.nn.user_activations import UserActivation, load_user_activation, user_code_info
from nnprobe.result import GradcheckReport, RunResult
from nnprobe.rngs import data_rng, gradcheck_rng


def user_activation(config: Config, config_dir: Path, check: bool = True):
    """Load a 'module:name' activation (explicitly configured, never by a YAML tag): (activation, user_code)."""
    if ":" not in config.model.activation:
        return None, []
    return prepare_user_activation(config, config_dir, check=check)


def prepare_user_activation(cfg, config_dir: Path | str, check: bool = True) -> tuple[UserActivation, list[dict]]:
    """Load the configured user activation and check it before training; returns (activation, user_code_info).

    The contract (no exception, a float array of z's shape) is always checked. With `check`, the
    derivative must also match finite differences of `forward` and neither method may modify its
    argument in place; otherwise UserCodeError (exit 2) with the measured error.
    """
    act = load_user_activation(cfg.model.activation, config_dir)
    report = check_activation(act, role="hidden", seed=cfg.seed, tolerance=tolerance_for(cfg))
    info = user_code_info(act)
    info["gradcheck"] = {
        "checked": bool(check),
        "max_rel_error": report.max_rel_error,
        "tolerance": report.tolerance,
        "in_place": list(report.in_place),
        "ok": report.ok,
    }
    if check and not report.ok:
        raise UserCodeError(
            f"{report.describe()} nnprobe refuses to train with it. Fix the activation (`nnprobe gradcheck CONFIG` "
            "shows the per-layer errors), or train anyway with --no-gradcheck to reproduce the bug."
        )
    return act, [info]


def train_config(config: Config, *, config_path: Optional[Path] = None, out_dir: Optional[Path] = None,
                 runs_root: Path = Path("runs"), progress: Optional[Callable[[int, int, float], None]] = None,
                 check_user_code: bool = True) -> RunResult:
    """Train one loaded config into a fresh run directory: what `train`, `check` and their successors run."""
    from nnprobe.train.run import train

    config_dir = Path(config_path).parent if config_path is not None else Path(".")
    hidden, user_code = user_activation(config, config_dir, check=check_user_code)
    return train(config, out_dir, progress=progress, config_path=config_path, runs_root=runs_root,
                 hidden_activation=hidden, user_code=user_code)


def start_record_for(config: Config) -> dict:
    """The start record `train` would write, built without training (data generated, model initialised)."""
    from nnprobe.train.loop import Trainer

    data = load_dataset(config.data, config.task, data_rng(config.seed))
    placeholder = Identity() if ":" in config.model.activation else None
    return Trainer(config, data, hidden_activation=placeholder).start_record()


def static_findings(config: Config) -> list[Finding]:
    """The findings that follow from a config and its data before any training step."""
    return DetectorSuite(config, start_record_for(config)).static_findings()


# ---------------------------------------------------------------- gradcheck: finite differences over a config

GRADIENT_MISMATCH = "gradient-mismatch"


def _gradcheck_detector(cfg):
    """The registry's gradient-mismatch detector with the config's overrides (severity, max_rel_error), or None."""
    from nnprobe.diagnose.detectors import REGISTRY, RunContext, all_codes

    all_codes()
    cls = REGISTRY.get(GRADIENT_MISMATCH)
    if cls is None:
        return None
    settings = (getattr(cfg, "detectors", None) or {}).get(GRADIENT_MISMATCH, {}) if cfg is not None else {}
    return cls(RunContext(start={}, config=cfg), settings)


def tolerance_for(cfg=None) -> float:
    """The relative-error threshold: detectors.gradient-mismatch.max_rel_error, else its registry default."""
    det = _gradcheck_detector(cfg)
    if det is not None and "max_rel_error" in det.t:
        return float(det.t["max_rel_error"])
    return DEFAULT_TOL


def gradcheck_config(cfg, config_dir: Path | str, *, config_label: str = "", batch_size: int = BATCH_SIZE,
                     max_entries: int = MAX_ENTRIES) -> GradcheckReport:
    """Build the configured network in float64 and compare backprop with finite differences everywhere.

    A user activation that cannot be loaded, raises, or returns the wrong shape/dtype raises
    UserCodeError; a wrong derivative becomes a gradient-mismatch finding.
    """
    from nnprobe.train.loop import Trainer

    tol = tolerance_for(cfg)
    cfg64 = cfg.model_copy(deep=True)
    cfg64.model.dtype = "float64"
    user = None
    info: list[dict] = []
    if ":" in cfg.model.activation:
        user = load_user_activation(cfg.model.activation, config_dir)
        info = [user_code_info(user)]
    data = load_dataset(cfg64.data, cfg64.task, data_rng(cfg.seed))
    trainer = Trainer(cfg64, data, hidden_activation=user)
    model = trainer.model
    rng = gradcheck_rng(cfg.seed)
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
                check_tensor(P, grads[k], loss_fn, L0, floor, rng, trep, max_entries)
            else:
                trep.n_nonfinite = min(int(P.size), max_entries)
            tensors.append(trep)

    report = GradcheckReport(
        config=config_label or cfg.name or "", name=cfg.name or "", batch_size=int(len(idx)),
        loss=L0, tensors=tensors, activations=act_reports, findings=[],
        layer_activations={l.name: l.activation_name for l in model.layers}, user_code=info, floor=floor,
        tolerance=tol,
    )
    report.findings = _gradcheck_findings(report, cfg)
    return report


def _activation_fixes(act: ActivationReport) -> list[str]:
    fixes = []
    if act.user:
        what = " and ".join(dict.fromkeys((["derivative"] if act.mismatch else []) + act.in_place))
        fixes.append(f"fix {what}(z) in {act.file or act.name} (docs/user-activations.md shows the pattern)")
    if act.builtin_match:
        fixes.append(f"model.activation: {act.builtin_match}")
    return fixes


def _gradcheck_findings(report: GradcheckReport, cfg) -> list[Finding]:
    det = _gradcheck_detector(cfg)
    severity = det.severity_level if det is not None else "error"
    findings: list[Finding] = []
    hidden_bad = next((a for a in report.activations if a.role == "hidden" and not a.ok), None)
    for act in report.activations:
        if act.ok:
            continue
        findings.append(Finding(
            GRADIENT_MISMATCH, severity, None, None, act.describe(),
            evidence={"activation": act.name, "role": act.role, "layers": act.layers,
                      "max_rel_error": json_number(act.max_rel_error), "max_rel_error_allowed": act.tolerance,
                      "in_place": act.in_place,
                      "worst": {k: json_number(v) for k, v in act.worst.items()} if act.worst else None},
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
            f"{index}, a relative error of {fmt_number(worst.max_rel_error)} (> {worst.tolerance:g}); {n_bad} of "
            f"{n_checked} checked entries of {name}'s W and b disagree."
        )
        evidence = {"tensor": worst.tensor, "rel_error": json_number(worst.max_rel_error), "analytic": json_number(bp),
                    "numeric": json_number(fd), "index": list(wi.get("index", ())), "n_bad": n_bad,
                    "n_checked": n_checked, "max_rel_error": worst.tolerance}
        f = Finding(GRADIENT_MISMATCH, severity, None, name, message, evidence, [])
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
