"""`expect:` — the regression contract a config pins for CI; each line becomes a pass/fail Check.

Every failed Check says what was expected, what the run did, and by how much it missed, so
that the CI log alone tells what broke. Order follows SPEC.md's keys.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from nnprobe.findings import Finding, severity_rank, sort_findings
from nnprobe.result import Check, RunResult


def _where(f: Finding) -> str:
    parts = [f.severity]
    if f.layer:
        parts.append(f.layer)
    parts.append("static" if f.step is None else f"step {f.step}")
    return f"{f.code} ({', '.join(parts)})"


def _list(findings: list[Finding], limit: int = 5) -> str:
    shown = [_where(f) for f in sort_findings(findings)[:limit]]
    more = f" and {len(findings) - limit} more" if len(findings) > limit else ""
    return ", ".join(shown) + more


def _ended(result: RunResult) -> str:
    text = f"status {result.status}"
    if result.stopped_by:
        text += f", stopped by {result.stopped_by}"
    return text + f" after {result.steps} steps"


def _finite(x: Any) -> Optional[float]:
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _nonfinite_grad(result: RunResult) -> tuple[int, Optional[int]]:
    """How many recorded gradient norms were NaN/inf, and the first such step when known."""
    env = getattr(result.digest, "grad_norm", None)
    if env is None:
        return 0, None
    count = int(getattr(env, "n_nan", 0) + getattr(env, "n_posinf", 0) + getattr(env, "n_neginf", 0))
    first = getattr(env, "first_bad_step", None) if getattr(env, "first_bad_value", None) is not None else None
    return count, first


def _max_severity(limit: str, result: RunResult) -> Check:
    worse = [f for f in result.findings if severity_rank(f.severity) > severity_rank(limit)]
    if worse:
        return Check("expect.max_severity", False,
                     f"expected no finding above {limit}, got {len(worse)}: {_list(worse)}")
    return Check("expect.max_severity", True, f"no finding above {limit}")


def _final_loss_below(limit: float, result: RunResult) -> Check:
    loss = _finite(result.final_loss)
    if loss is None:
        return Check("expect.final_loss_below", False,
                     f"expected a final loss below {limit:g}, but the run has no finite final loss ({_ended(result)})")
    if loss < limit:
        return Check("expect.final_loss_below", True, f"final loss {loss:.6g} < {limit:g}")
    over = loss - limit
    pct = f", {over / abs(limit) * 100:.3g}% over" if limit else ""
    return Check("expect.final_loss_below", False,
                 f"final loss {loss:.6g} is not below {limit:g} (over by {over:.3g}{pct})")


def _max_grad_norm_below(limit: float, result: RunResult) -> Check:
    bad, first = _nonfinite_grad(result)
    if bad:
        at = f" from step {first}" if first is not None else ""
        return Check("expect.max_grad_norm_below", False,
                     f"the gradient norm was not finite{at} ({bad} step(s)), so it is not below {limit:g}")
    g = _finite(result.max_grad_norm)
    if g is None:
        return Check("expect.max_grad_norm_below", False,
                     f"expected the gradient norm to stay below {limit:g}, but no gradient norm was recorded "
                     "(probes.enabled: false records only the loss)")
    if g < limit:
        return Check("expect.max_grad_norm_below", True, f"largest gradient norm {g:.6g} < {limit:g}")
    return Check("expect.max_grad_norm_below", False,
                 f"largest gradient norm {g:.6g} is not below {limit:g} ({g / limit:.3g}x the limit)")


def _steps_completed(result: RunResult) -> Check:
    total = result.start.get("total_steps")
    ok = result.status == "completed" and (total is None or result.steps == total)
    of = f" of {total}" if total is not None else ""
    if ok:
        return Check("expect.steps_completed", True, f"completed all {result.steps} steps")
    missing = f", {total - result.steps} short" if isinstance(total, int) else ""
    return Check("expect.steps_completed", False,
                 f"expected every step to complete, ran {result.steps}{of}{missing} ({_ended(result)})")


def _findings_absent(codes: list[str], result: RunResult) -> Check:
    present = [f for f in result.findings if f.code in set(codes)]
    if present:
        return Check("expect.findings_absent", False,
                     f"expected none of {', '.join(codes)}, got {len(present)}: {_list(present)}")
    return Check("expect.findings_absent", True, f"none of {', '.join(codes)}")


def evaluate_expectations(config, result: RunResult) -> list[Check]:
    """One Check per configured `expect:` key (none when the config pins nothing)."""
    exp = config.expect
    checks: list[Check] = []
    if exp.max_severity is not None:
        checks.append(_max_severity(exp.max_severity, result))
    if exp.final_loss_below is not None:
        checks.append(_final_loss_below(exp.final_loss_below, result))
    if exp.max_grad_norm_below is not None:
        checks.append(_max_grad_norm_below(exp.max_grad_norm_below, result))
    if exp.steps_completed:
        checks.append(_steps_completed(result))
    if exp.findings_absent:
        checks.append(_findings_absent(list(exp.findings_absent), result))
    return checks
