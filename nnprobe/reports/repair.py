"""`nnprobe fix` in the terminal: the control, each round's attempts with their numbers, the chain, the diff."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from nnprobe.repair.catalogue import PRUNE, TUNE
from nnprobe.repair.patches import describe
from nnprobe.repair.search import Attempt, RepairResult, targets
from nnprobe.repair.verdicts import SeedRun, Spread

VERDICT_STYLE = {"fixed": "bold green", "not fixed": "yellow", "worse": "red", "inconclusive": "magenta",
                 "invalid": "dim", "better": "bold green", "not better": "dim", "not needed": "bold green",
                 "needed": "dim"}
ROUND_TITLES = {TUNE: "tuning the learning rate of the repaired config",
                PRUNE: "the repaired config without each patch taken before the last"}


def _findings_line(runs: list[SeedRun], fail_on: str) -> str:
    ts = targets(runs, fail_on)
    if not ts:
        return f"nothing at or above {fail_on}"
    return ", ".join(f"{t.code} ({t.severity}, {t.seeds}/{len(runs)} seeds)" for t in ts)


def _metrics_line(runs: list[SeedRun]) -> str:
    words = f"final loss {Spread.of(r.final_loss for r in runs)}"
    if all(r.final_accuracy is not None for r in runs):
        acc = Spread.of(r.final_accuracy for r in runs)
        words += f", accuracy {acc}"
    return words


def _numbers(a: Attempt) -> str:
    v = a.verdict
    if v is None:
        return a.error or ""
    loss = (f"loss {v.loss} vs {v.control_loss}" if v.loss_compared
            else f"loss {v.loss} (scale changed, not compared)")
    acc = f"; accuracy {v.accuracy} vs {v.control_accuracy}" if v.accuracy is not None else ""
    return f"{v.reason}. {loss}{acc}"


def render_fix(report: Any) -> RenderableType:
    """The report of a FixReport (nnprobe.repair.fixer) as a rich renderable."""
    r: RepairResult = report.result
    head = Text()
    head.append(f"nnprobe fix {report.config}", style="bold")
    head.append(f"  ·  seeds {', '.join(map(str, r.seeds))}  ·  --fail-on {r.fail_on}  ·  "
                f"{r.runs_used} of {r.budget} runs")
    parts: list[RenderableType] = [
        head, Text(f"control: {_findings_line(r.control, r.fail_on)}; {_metrics_line(r.control)}")]
    rounds: dict[int, list[Attempt]] = {}
    for a in r.attempts:
        rounds.setdefault(a.round, []).append(a)
    for number, attempts in rounds.items():
        what = ROUND_TITLES.get(attempts[0].finding, attempts[0].finding)
        table = Table(title=Text(f"round {number}: {what}"), title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        table.add_column("verdict", no_wrap=True)
        table.add_column("patch", ratio=2, overflow="fold")
        table.add_column("from", no_wrap=True)
        table.add_column(Text("numbers: median [min, max] over seeds"), ratio=3, overflow="fold")
        for a in attempts:
            word = Text(a.word, style=VERDICT_STYLE.get(a.word, ""))
            if a.accepted:
                word.append(" ← taken" + (" as a step" if a.as_step else "")
                            + (", dropped later" if a.dropped else ""), style="bold")
            table.add_row(word, describe(a.candidate.patch), a.candidate.origin, _numbers(a))
        parts.append(table)
    if r.chain:
        lines = Text("accepted patch chain:\n", style="bold")
        for i, a in enumerate(r.chain, 1):
            lines.append(f"  {i}. {describe(a.candidate.patch)}  ({a.word} {a.finding}"
                         + (", as a step" if a.as_step else "") + ")\n", style="")
        parts.append(lines)
    else:
        parts.append(Text("no patch accepted: the config is unchanged."))
    style = "bold green" if r.ok else "bold red"
    parts.append(Text(f"result: {_findings_line(r.final, r.fail_on)}; {_metrics_line(r.final)} "
                      f"(stopped: {r.stopped})", style=style))
    if report.diff:
        where = f"written to {report.written}" if report.written else "not written (use -o FILE)"
        layout = "comments and key order kept" if report.kept_layout else \
            "re-written from the parsed config: comments lost"
        parts.append(Text(f"fixed config {where}; {layout}:", style="bold"))
        parts.append(Text(report.diff.rstrip("\n")))
    elif report.written:
        parts.append(Text(f"config unchanged, copied to {report.written}"))
    return Group(*parts)


__all__ = ["render_fix"]
