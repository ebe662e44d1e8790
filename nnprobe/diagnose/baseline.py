"""`diagnose RUN --baseline BASE`: is this run at least as good as a reference run of the same problem?

Two runs are comparable when they train the same network on the same data against the same
objective: every key of `data`, `model.hidden`, `model.output`, `loss.kind` and `loss.reduction`
must match (a different loss scale or data set makes the numbers incomparable; RunDirError,
exit 2). Every other key is a setting the comparison is *about*, such as a learning rate raised in
a pull request: it may differ, and the first check lists what did. `name` and `expect` are
cosmetic and ignored; a data file is compared by its name, not its absolute directory, so a
baseline recorded on another machine still compares.

Each comparison is a Check (kind "baseline"), one line of the "what changed" table:

- baseline.config           what differs from the baseline's config (informational, always ok)
- baseline.status           completed < interrupted < diverged < failed; worse fails
- baseline.final_loss       fails when worse than the baseline's by more than `tolerance` (relative)
- baseline.new_finding[C]   one per finding code at warning or above that the baseline did not have
- baseline.first_step[C]    one per shared code at warning or above; fails when it now starts earlier
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from nnprobe.config import dump_config
from nnprobe.errors import RunDirError
from nnprobe.findings import Finding, severity_rank
from nnprobe.result import Check, RunResult

KIND = "baseline"
COSMETIC = frozenset({("name",), ("expect",)})
#: key paths that define the problem; a prefix matches everything below it
IDENTITY = (("data",), ("model", "hidden"), ("model", "output"), ("loss", "kind"), ("loss", "reduction"))
STATUS_RANK = {"completed": 0, "interrupted": 1, "diverged": 2, "failed": 3}
MIN_SEVERITY = "warning"


def _config_of(result: RunResult) -> dict[str, Any]:
    """The run's resolved config as config.yaml holds it: from the result, else (a result built by hand) the file."""
    if result.config is not None:
        return yaml.safe_load(dump_config(result.config))
    return _read_config(result.run_dir)


def _read_config(run_dir: str) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml), so it cannot be compared.") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc.__class__.__name__}), so the run cannot be compared.") from None
    if not isinstance(raw, dict):
        raise RunDirError(f"{path}: not a mapping of config keys, so the run cannot be compared.")
    return raw


def _flatten(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, path + (str(key),))
    else:
        yield path, node


def _comparable(path: tuple, value: Any) -> Any:
    if path == ("data", "path") and isinstance(value, str):
        return Path(value).name
    return value


def _under(path: tuple, prefixes) -> bool:
    return any(path[: len(p)] == p for p in prefixes)


def config_differences(run_cfg: dict, base_cfg: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, baseline value, run value) for every non-cosmetic key that differs."""
    run_flat = {p: _comparable(p, v) for p, v in _flatten(run_cfg) if not _under(p, COSMETIC)}
    base_flat = {p: _comparable(p, v) for p, v in _flatten(base_cfg) if not _under(p, COSMETIC)}
    missing = object()
    out = []
    for path in sorted(set(run_flat) | set(base_flat)):
        a, b = base_flat.get(path, missing), run_flat.get(path, missing)
        if a != b:
            out.append((".".join(path), None if a is missing else a, None if b is missing else b))
    return out


def _show(value: Any) -> str:
    return "(absent)" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _diff_text(diffs: list[tuple[str, Any, Any]], limit: int = 8) -> str:
    text = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in diffs[:limit])
    return text + (f"; and {len(diffs) - limit} more" if len(diffs) > limit else "")


def _finite(x: Optional[float]) -> Optional[float]:
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _first_by_code(findings: list[Finding]) -> dict[str, Finding]:
    """The earliest finding of each code at warning or above (static findings, step None, count as step -1)."""
    out: dict[str, Finding] = {}
    rank = severity_rank(MIN_SEVERITY)
    for f in findings:
        if severity_rank(f.severity) < rank:
            continue
        cur = out.get(f.code)
        key = -1 if f.step is None else f.step
        if cur is None or key < (-1 if cur.step is None else cur.step):
            out[f.code] = f
    return out


def _where(f: Finding) -> str:
    parts = [f.severity]
    if f.layer:
        parts.append(f.layer)
    parts.append("static" if f.step is None else f"step {f.step}")
    return ", ".join(parts)


def _step_label(step: int) -> str:
    return "static" if step < 0 else f"step {step}"


def _status_text(r: RunResult) -> str:
    by = f", stopped by {r.stopped_by}" if r.stopped_by else ""
    return f"{r.status} ({r.steps} steps{by})"


def compare_to_baseline(result: RunResult, baseline: RunResult, tolerance: float = 0.10) -> list[Check]:
    """The regression checks of `result` against `baseline`; RunDirError when they are not runs of the same problem."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise RunDirError(f"--tolerance: expected a non-negative number such as 0.1 (10%), got {tolerance!r}.")
    run_cfg, base_cfg = _config_of(result), _config_of(baseline)
    diffs = config_differences(run_cfg, base_cfg)
    fatal = [d for d in diffs if _under(tuple(d[0].split(".")), IDENTITY)]
    if fatal:
        raise RunDirError(
            f"{result.run_dir} and the baseline {baseline.run_dir} are not runs of the same config, so their losses and "
            f"findings cannot be compared: {_diff_text(fatal)}. A baseline must train the same network "
            "(model.hidden, model.output) on the same data (data.*) with the same loss (loss.kind, loss.reduction); "
            "other settings such as optimizer.lr may differ. Record a baseline from this config first."
        )
    checks: list[Check] = []
    checks.append(Check(
        "baseline.config", True,
        f"changed since the baseline: {_diff_text(diffs)}" if diffs else "same config as the baseline",
        kind=KIND,
    ))

    # status
    r_rank, b_rank = STATUS_RANK.get(result.status, 3), STATUS_RANK.get(baseline.status, 3)
    if r_rank > b_rank:
        checks.append(Check("baseline.status", False,
                            f"status got worse: {_status_text(baseline)} -> {_status_text(result)}", kind=KIND))
    else:
        checks.append(Check("baseline.status", True,
                            f"{_status_text(result)}; baseline {_status_text(baseline)}", kind=KIND))

    # final loss
    r_loss, b_loss = _finite(result.final_loss), _finite(baseline.final_loss)
    allowed = f"allowed +{tolerance * 100:.3g}%"
    if b_loss is None and r_loss is None:
        checks.append(Check("baseline.final_loss", True, "neither run has a finite final loss", kind=KIND))
    elif r_loss is None:
        checks.append(Check("baseline.final_loss", False,
                            f"no finite final loss (baseline {b_loss:.6g})", kind=KIND))
    elif b_loss is None:
        checks.append(Check("baseline.final_loss", True,
                            f"final loss {r_loss:.6g}; the baseline had none finite", kind=KIND))
    else:
        limit = b_loss + tolerance * abs(b_loss)
        change = (r_loss - b_loss) / abs(b_loss) if b_loss else (math.inf if r_loss > 0 else 0.0)
        pct = "inf" if math.isinf(change) else f"{change * 100:+.3g}%"
        ok = r_loss <= limit
        text = f"final loss {r_loss:.6g} vs baseline {b_loss:.6g}: {pct} ({allowed})"
        checks.append(Check("baseline.final_loss", ok, text if ok else "worse: " + text, kind=KIND))

    # findings
    r_first, b_first = _first_by_code(result.findings), _first_by_code(baseline.findings)
    new = [c for c in r_first if c not in b_first]
    for code in new:
        f = r_first[code]
        checks.append(Check(f"baseline.new_finding[{code}]", False,
                            f"new {code} ({_where(f)}), not in the baseline: {f.message}", kind=KIND))
    if not new:
        gone = sorted(set(b_first) - set(r_first))
        extra = f"; gone since the baseline: {', '.join(gone)}" if gone else ""
        checks.append(Check("baseline.new_findings", True,
                            f"no finding at {MIN_SEVERITY} or above that the baseline did not have{extra}", kind=KIND))
    for code in sorted(set(r_first) & set(b_first)):
        rf, bf = r_first[code], b_first[code]
        r_step = -1 if rf.step is None else rf.step
        b_step = -1 if bf.step is None else bf.step
        if r_step < b_step:
            checks.append(Check(f"baseline.first_step[{code}]", False,
                                f"{code} now starts earlier: {_step_label(r_step)} (baseline {_step_label(b_step)})", kind=KIND))
        else:
            checks.append(Check(f"baseline.first_step[{code}]", True,
                                f"{code} first at {_step_label(r_step)} (baseline {_step_label(b_step)})", kind=KIND))
    return checks


__all__ = ["compare_to_baseline", "config_differences"]
