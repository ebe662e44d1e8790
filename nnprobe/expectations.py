"""`expect:` — the regression contract a config pins for CI; each line becomes a pass/fail Check."""

from __future__ import annotations

import math

from nnprobe.findings import severity_rank
from nnprobe.result import Check, RunResult


def evaluate_expectations(config, result: RunResult) -> list[Check]:
    exp = config.expect
    checks: list[Check] = []
    if exp.max_severity is not None:
        worse = [f for f in result.findings if severity_rank(f.severity) > severity_rank(exp.max_severity)]
        if worse:
            codes = ", ".join(sorted({f"{f.code} ({f.severity})" for f in worse}))
            checks.append(Check("expect.max_severity", False,
                                f"expected no finding above {exp.max_severity}, got {len(worse)}: {codes}"))
        else:
            checks.append(Check("expect.max_severity", True, f"no finding above {exp.max_severity}"))
    if exp.final_loss_below is not None:
        loss = result.final_loss
        if loss is None or not math.isfinite(loss):
            checks.append(Check("expect.final_loss_below", False,
                                f"expected a final loss below {exp.final_loss_below:g}, but the run has no finite final loss"))
        elif loss < exp.final_loss_below:
            checks.append(Check("expect.final_loss_below", True, f"final loss {loss:.6g} < {exp.final_loss_below:g}"))
        else:
            over = loss - exp.final_loss_below
            checks.append(Check("expect.final_loss_below", False,
                                f"final loss {loss:.6g} is not below {exp.final_loss_below:g} (over by {over:.3g}, "
                                f"{over / abs(exp.final_loss_below) * 100 if exp.final_loss_below else math.inf:.1f}%)"))
    if exp.max_grad_norm_below is not None:
        g = result.max_grad_norm
        ok = g is not None and g < exp.max_grad_norm_below
        msg = (f"largest gradient norm {g:.6g} < {exp.max_grad_norm_below:g}" if ok else
               f"largest gradient norm {'(none finite)' if g is None else format(g, '.6g')} is not below "
               f"{exp.max_grad_norm_below:g}" + (f" ({g / exp.max_grad_norm_below:.3g}x the limit)" if g else ""))
        checks.append(Check("expect.max_grad_norm_below", ok, msg))
    if exp.steps_completed:
        total = result.start.get("total_steps")
        ok = result.status == "completed" and (total is None or result.steps == total)
        checks.append(Check("expect.steps_completed", ok,
                            f"{result.steps} of {total} steps, status {result.status}"))
    if exp.findings_absent:
        present = sorted({f.code for f in result.findings} & set(exp.findings_absent))
        checks.append(Check("expect.findings_absent", not present,
                            f"present: {', '.join(present)}" if present else
                            f"none of {', '.join(exp.findings_absent)}"))
    return checks
