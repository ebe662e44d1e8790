"""`nnprobe gradcheck`'s terminal rendering: a table per layer (W and b), one per activation, the verdict."""

from __future__ import annotations

from typing import Any, Optional

from nnprobe.nn.finite_differences import STEP, TensorReport, fmt_number
from nnprobe.result import GradcheckReport

CODE = "gradient-mismatch"


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
        f": batch of {report.batch_size} examples in float64, loss {fmt_number(report.loss, '.6g')}; central differences "
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
                     Text(fmt_number(a.max_rel_error, ".2e"), style="red" if a.mismatch else "green"),
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
