"""`nnprobe check`'s terminal table: one row per config, then why each non-passing one did not pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from nnprobe.check import CheckReport
from nnprobe.findings import severity_rank


def _display(config: str) -> str:
    """A config path as short as it can be shown: relative to the working directory when it is below it."""
    try:
        return str(Path(config).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return config


def render_check(report: CheckReport):
    """A rich renderable: one table row per config, then why each non-passing one did not pass."""
    styles = {"pass": "bold green", "fail": "bold red", "invalid": "bold red", "error": "bold red"}
    names = [_display(o.config) for o in report.outcomes]
    table = Table(title_justify="left")
    table.add_column("config", overflow="fold", min_width=min(max(map(len, names), default=6), 24))
    for col in ("status", "steps", "final loss", "worst finding", "expect", "verdict"):
        table.add_column(col, no_wrap=col in ("steps", "final loss", "verdict"))
    for o, shown in zip(report.outcomes, names):
        steps = "-" if o.steps is None else (f"{o.steps}/{o.total_steps}" if o.total_steps else str(o.steps))
        loss = "-" if o.final_loss is None else f"{o.final_loss:.4g}"
        if o.status is None:
            loss = "-"
        w = o.worst
        worst = Text("-") if o.status is None else Text("none", style="green") if w is None else Text(
            f"{w['code']} ({w['severity']}" + (f", {w['layer']}" if w.get("layer") else "")
            + ("" if w.get("step") is None else f", step {w['step']}") + ")",
            style={"error": "red", "warning": "yellow"}.get(w["severity"], ""))
        exp = o.expectations
        if not exp:
            expect = Text("-")
        else:
            bad = sum(1 for c in exp if not c["ok"])  # which ones: listed below the table
            expect = (Text(f"{len(exp)}/{len(exp)} ok", style="green") if not bad else
                      Text(f"{len(exp) - bad}/{len(exp)} ok", style="red"))
        table.add_row(shown, o.status or "-", steps, loss, worst, expect,
                      Text(o.verdict.upper(), style=styles[o.verdict]))
    parts: list[Any] = [table]
    for o in report.outcomes:
        if o.verdict == "pass":
            continue
        lines = [Text(f"{o.config}: {o.verdict.upper()}", style=styles[o.verdict])]
        if o.message:
            lines.append(Text(f"  {o.message}"))
        for c in o.checks:
            if not c["ok"]:
                lines.append(Text(f"  {c['name']}: {c['message']}"))
        if report.fail_on != "never":
            for f in o.findings:
                if severity_rank(f["severity"]) >= severity_rank(report.fail_on):
                    where = f" {f['layer']}" if f.get("layer") else ""
                    step = "" if f.get("step") is None else f" step {f['step']}"
                    lines.append(Text(f"  {f['severity']} {f['code']}{where}{step}: {f['message']}"))
        if o.run_dir:
            lines.append(Text(f"  run: {o.run_dir}  (nnprobe diagnose {o.run_dir})", style="dim"))
        parts.append(Group(*lines))
    parts.append(Text(report.summary(), style="bold"))
    return Group(*parts)
