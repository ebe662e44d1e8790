"""Terminal and markdown reports of a run, and the `explain` pages.

Functions here return rich renderables (or markdown text); cli.py prints them. Everything a
colour says is also said in words, so a report read without colour (NO_COLOR, a CI log, a
file) loses nothing, and every line fits 100 columns. Text from a run (messages, names,
paths) enters rich as `Text`, never as markup, so a `[` in a message is printed, not parsed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from nnprobe.findings import Finding, severity_rank, sort_findings
from nnprobe.result import RunResult

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
SPARK_NONFINITE = "×"
SPARK_WIDTH = 60
LOG_SCALE_RATIO = 100.0  # a loss whose highest/lowest column spans two decades is drawn on a log scale
MAX_LOG_PROBLEMS = 10

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_STATUS_STYLE = {"completed": "green", "diverged": "bold red", "interrupted": "yellow", "failed": "bold red"}


# -- formatting shared with the markdown and HTML reports -----------------------------------

# C0 controls but tab and newline, DEL, C1 controls, lone surrogates (undecodable path bytes), XML's non-characters
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any) -> str:
    """Text from a run (a name, a path, a message) made safe to print: an ESC sequence or a control
    character is shown as \\x1b and the like, never sent to the terminal; tabs and newlines stay."""
    text = str(text)
    return _UNPRINTABLE.sub(_escaped, text) if _UNPRINTABLE.search(text) else text



def fmt_num(value: Any) -> str:
    """A short, fixed-rule rendering of a number: 4 significant digits, exponent outside [1e-3, 1e4)."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != value:
        return "nan"
    if value in (math.inf, -math.inf):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if isinstance(value, int) and abs(value) < 10**6:
        return str(value)
    a = abs(value)
    if 1e-3 <= a < 1e4:
        return f"{value:.4g}"
    return f"{value:.2e}"


def fmt_pct(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if value != value or value in (math.inf, -math.inf):
        return fmt_num(value)
    return f"{value * 100:.0f}%"


def fmt_at(text: str, step: Optional[int]) -> str:
    return text if step is None else f"{text} @{step}"


def first_finding(findings: Sequence[Finding]) -> Optional[Finding]:
    """The finding with the earliest step (the most severe on a tie); static findings have no step."""
    timed = [f for f in findings if f.step is not None]
    if not timed:
        return None
    return min(timed, key=lambda f: (f.step, -severity_rank(f.severity), f.layer or "", f.code))


def status_words(result: RunResult) -> str:
    words = result.status
    if result.stopped_by:
        words += f" (stopped by {result.stopped_by})"
    return words


# -- sparkline --------------------------------------------------------------------------------


@dataclass
class Spark:
    """A sparkline and where each of its columns lies in steps (to put markers under it)."""

    text: str
    log: bool = False
    columns: list[tuple[int, int]] = field(default_factory=list)  # (first step, last step) per column
    lo: Optional[float] = None
    hi: Optional[float] = None

    def column_of(self, step: int) -> Optional[int]:
        """The column that covers `step` (the nearest one when no column does)."""
        if not self.columns:
            return None
        for i, (_first, last) in enumerate(self.columns):
            if step <= last:
                return i
        return len(self.columns) - 1


def sparkline(envelope: Any, width: int = SPARK_WIDTH) -> Spark:
    """One character per column; its height is the highest finite value of the column's steps.

    Using the top of the envelope keeps a one-step spike visible at any log length. A column
    holding a NaN or inf is drawn as `×`, whatever else it holds. Log scale when every value is
    positive and the columns span two decades or more.
    """
    buckets = envelope.buckets() if envelope is not None else []
    if not buckets:
        return Spark("")
    n = len(buckets)
    ncols = min(width, n)
    cols: list[tuple[int, int, Optional[float], bool]] = []
    for c in range(ncols):
        group = buckets[c * n // ncols:(c + 1) * n // ncols]
        his = [b.hi for b in group if b.hi is not None]
        cols.append((group[0].first, group[-1].last, max(his) if his else None, any(b.bad for b in group)))
    values = [v for _, _, v, _ in cols if v is not None]
    spark = Spark("", columns=[(a, b) for a, b, _, _ in cols])
    if values:
        spark.lo, spark.hi = min(values), max(values)
        spark.log = spark.lo > 0 and spark.hi / spark.lo >= LOG_SCALE_RATIO
    tlo = _spark_t(spark.lo, spark.log) if values else 0.0
    thi = _spark_t(spark.hi, spark.log) if values else 0.0
    chars = []
    for _, _, v, bad in cols:
        if bad or v is None:
            chars.append(SPARK_NONFINITE)
        elif thi == tlo:
            chars.append(SPARK_LEVELS[3])
        else:
            level = int(round((_spark_t(v, spark.log) - tlo) / (thi - tlo) * (len(SPARK_LEVELS) - 1)))
            chars.append(SPARK_LEVELS[max(0, min(len(SPARK_LEVELS) - 1, level))])
    spark.text = "".join(chars)
    return spark


def _spark_t(v: float, log: bool) -> float:
    return math.log10(v) if log else v


def spark_marker_line(spark: Spark, step: int, label: str, room: int = 90) -> str:
    """A line with `^` under the column of `step`, the label beside it on whichever side has room."""
    col = spark.column_of(step)
    if col is None:
        return ""
    right = f"^ {label}"
    if col + len(right) <= room:
        return " " * col + right
    left = f"{label} ^"
    return " " * max(0, col - len(left) + 1) + left


def loss_caption(spark: Spark, envelope: Any) -> list[str]:
    """Two short lines: what the scale and the columns are, then the numbers worth quoting."""
    how = ("log scale" if spark.log else "linear scale") + "; each column shows the highest loss of its steps"
    parts = []
    if envelope.first_step is not None:
        parts.append(f"steps {envelope.first_step}–{envelope.last_step}")
    if envelope.has_finite:
        parts.append(f"min {fmt_num(envelope.min_value)} @{envelope.min_step}")
    parts.append(f"last {fmt_num(envelope.last_value)}")
    if envelope.n_bad:
        n = envelope.n_bad
        parts.append(f"{SPARK_NONFINITE} = NaN/inf ({n} step{'s' if n > 1 else ''}, first @{envelope.first_bad_step})")
    return [how, " · ".join(parts)]


# -- per-layer rows shared by every format ------------------------------------------------------


LAYER_HEADERS = ("layer", "activation", "activation range", "dead start/worst/end",
                 "‖gW‖ start", "‖gW‖ worst", "‖gW‖ end")
LAYER_CAPTION = "worst = highest value over the run (or the first NaN/inf), @ the step it happened"


def layer_rows(digest: Any) -> list[tuple[str, ...]]:
    """The per-layer table's cells as text, the same for terminal, markdown and HTML."""
    rows = []
    for s in digest.layer_summaries():
        rng = f"[{fmt_num(s.act_min)}, {fmt_num(s.act_max)}]"
        if s.act_nonfinite_step is not None:
            rng += f" NaN/inf @{s.act_nonfinite_step}"
        if s.dead_applies:
            dead = (f"{fmt_pct(s.dead_start)} / {fmt_at(fmt_pct(s.dead_worst), s.dead_worst_step)}"
                    f" / {fmt_pct(s.dead_end)}")
        else:
            dead = "n/a"
        rows.append((s.name, s.activation, rng, dead, fmt_num(s.grad_start),
                     fmt_at(fmt_num(s.grad_worst), s.grad_worst_step), fmt_num(s.grad_end)))
    return rows


def fix_line(finding: Finding, overrides: bool = False) -> str:
    """The first fix; with `overrides`, a config change also as the --set arguments that try it."""
    if not finding.fixes:
        return ""
    more = len(finding.fixes) - 1
    extra = f" (+{more} more: nnprobe explain {finding.code})" if more > 0 else ""
    first = finding.fixes[0]
    return f"fix: {first.shown() if overrides else first}{extra}"


# -- terminal ----------------------------------------------------------------------------------


def render_text(result: RunResult) -> RenderableType:
    """The terminal report: status, findings, per-layer table, loss sparkline, checks, log problems."""
    parts: list[RenderableType] = [_status_text(result)]
    findings = sort_findings(result.findings)
    parts.append(_findings_table(findings) if findings else Text("No findings.", style="green"))
    digest = result.digest
    if digest is not None and digest.has_layer_stats:
        parts.append(_layers_table(digest))
    if digest is not None and not digest.loss.empty:
        parts.append(_loss_text(digest, findings))
    if result.checks:
        parts.append(_checks_text(result))
    if result.skipped:
        parts.append(_skipped_text(result.skipped))
    if result.log_problems:
        parts.append(_problems_text(result.log_problems))
    spaced: list[RenderableType] = []
    for part in parts:
        if spaced:
            spaced.append(Text(""))
        spaced.append(part)
    return Group(*spaced)


def accuracy_words(result: RunResult) -> str:
    """' · accuracy: 92.7% (val 90.1%)' for classification runs, '' otherwise."""
    digest = result.digest
    acc = getattr(digest, "accuracy", None)
    if acc is None or acc.last_value is None:
        return ""
    words = f" · accuracy: {fmt_pct(acc.last_value)}"
    val = getattr(digest, "val_accuracy", None)
    if val is not None and val.last_value is not None:
        words += f" (validation {fmt_pct(val.last_value)})"
    return words


def _status_text(result: RunResult) -> Text:
    t = Text()
    t.append("Run ", style="bold")
    t.append(printable(result.run_dir), style="bold")
    t.append("\nstatus: ")
    t.append(printable(status_words(result)), style=_STATUS_STYLE.get(result.status, ""))
    t.append(f" · steps: {result.steps} · final loss: {fmt_num(result.final_loss)}{accuracy_words(result)}")
    return t


def severity_counts(findings: Sequence[Finding]) -> str:
    out = []
    for sev in ("error", "warning", "info"):
        n = sum(1 for f in findings if f.severity == sev)
        if n:
            out.append(f"{n} {sev}{'s' if n > 1 else ''}")
    return ", ".join(out)


def _findings_table(findings: Sequence[Finding]) -> Table:
    table = Table(title=f"Findings ({severity_counts(findings)})", title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False, collapse_padding=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("what happened / first fix", ratio=1, overflow="fold")
    for f in findings:
        details = Text(printable(f.message))
        fix = fix_line(f)
        if fix:
            details.append("\n")
            details.append(printable(fix), style="green")
        table.add_row(Text(printable(f.severity), style=_SEVERITY_STYLE.get(f.severity, "")), Text(printable(f.code)),
                      "static" if f.step is None else str(f.step), Text(printable(f.layer or "—")), details)
    return table


def _layers_table(digest: Any) -> Table:
    table = Table(title="Layers", title_justify="left", title_style="bold", caption=LAYER_CAPTION,
                  caption_justify="left", caption_style="dim", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for i, header in enumerate(LAYER_HEADERS):
        # the numbers keep their line; the activation range (the one free-form cell) wraps
        table.add_column(header, justify="left" if i < 4 else "right", overflow="fold", no_wrap=i != 2)
    for row in layer_rows(digest):
        table.add_row(*(Text(printable(cell)) for cell in row))
    return table


def _loss_text(digest: Any, findings: Sequence[Finding]) -> Text:
    spark = sparkline(digest.loss)
    label = "loss  "
    t = Text()
    t.append("Loss\n", style="bold")
    t.append(label)
    for ch in spark.text:
        t.append(ch, style="bold red" if ch == SPARK_NONFINITE else "")
    first = first_finding(findings)
    if first is not None:
        t.append("\n" + " " * len(label))
        t.append(spark_marker_line(spark, first.step, f"step {first.step}: first finding ({first.code})"),
                 style=_SEVERITY_STYLE.get(first.severity, ""))
    for line in loss_caption(spark, digest.loss):
        t.append("\n" + " " * len(label))
        t.append(line, style="dim")
    return t


def _checks_text(result: RunResult) -> Group:
    grid = Table.grid(padding=(0, 1), pad_edge=True)
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    for c in result.checks:
        kind = f"[{c.kind}] " if c.kind != "expect" else ""
        grid.add_row(Text("PASS" if c.ok else "FAIL", style="green" if c.ok else "bold red"),
                     Text(printable(f"{kind}{c.name}: {c.message}")))
    return Group(Text("Checks", style="bold"), grid)


SKIPPED_TITLE = "Not checked (the recorded loop did not hand over what these detectors read)"


def _skipped_text(skipped: Sequence[Any]) -> Group:
    lines: list[RenderableType] = [Text(f"{SKIPPED_TITLE}:", style="bold yellow")]
    lines += [Text(f"  {s.text}") for s in skipped]
    return Group(*lines)


def _problems_text(problems: Sequence[str]) -> Group:
    shown = list(problems[:MAX_LOG_PROBLEMS])
    if len(problems) > len(shown):
        shown.append(f"... and {len(problems) - len(shown)} more")
    return Group(Text(f"Log problems ({len(problems)})", style="bold yellow"), _bullets(shown))


# -- markdown ----------------------------------------------------------------------------------


def md_code(text: Any) -> str:
    """A code span that holds `text` literally, whatever backticks it contains (CommonMark's rule)."""
    body = " ".join(printable(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall("`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def md_cell(text: Any) -> str:
    """Text safe inside a GitHub table cell: pipes escaped, no raw HTML, one line."""
    s = printable(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return "<br>".join(part.strip() for part in s.strip().splitlines()) if "\n" in s else s.strip()


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(result: RunResult) -> str:
    """The report as GitHub-flavoured markdown, for an issue or a CI job summary."""
    out = [f"### nnprobe: {md_code(result.run_dir)}", ""]
    stopped = f" (stopped by {md_code(result.stopped_by)})" if result.stopped_by else ""
    out += [f"**status:** {md_cell(result.status)}{stopped} · **steps:** {result.steps} · "
            f"**final loss:** {fmt_num(result.final_loss)}{accuracy_words(result)}", ""]
    findings = sort_findings(result.findings)
    if findings:
        out += [f"#### Findings ({severity_counts(findings)})", ""]
        rows = [(f.severity, md_code(f.code), "static" if f.step is None else f.step, f.layer or "—",
                 f.message, fix_line(f, overrides=True).removeprefix("fix: ")) for f in findings]
        out += _md_table(("severity", "code", "step", "layer", "what happened", "first fix"), rows) + [""]
    else:
        out += ["No findings.", ""]
    digest = result.digest
    if digest is not None and digest.has_layer_stats:
        out += ["#### Layers", ""]
        out += _md_table(LAYER_HEADERS, layer_rows(digest))
        out += ["", f"_{LAYER_CAPTION}_", ""]
    if digest is not None and not digest.loss.empty:
        spark = sparkline(digest.loss)
        out += ["#### Loss", "", f"`{spark.text}`", "", " · ".join(loss_caption(spark, digest.loss))]
        first = first_finding(findings)
        if first is not None:
            col = spark.column_of(first.step)
            out[-1] += f" · first finding {md_code(first.code)} at step {first.step} (column {col + 1})"
        out.append("")
    if result.checks:
        out += ["#### Checks", ""]
        for c in result.checks:
            kind = f"[{c.kind}] " if c.kind != "expect" else ""
            out.append(f"- **{'PASS' if c.ok else 'FAIL'}** {md_cell(f'{kind}{c.name}: {c.message}')}")
        out.append("")
    if result.skipped:
        out += [f"#### {SKIPPED_TITLE}", ""]
        out += [f"- `{s.code}`: not given {', '.join(s.missing)}; enable with {s.enable}" for s in result.skipped]
        out.append("")
    if result.log_problems:
        out += [f"#### Log problems ({len(result.log_problems)})", ""]
        out += [f"- {md_cell(p)}" for p in result.log_problems[:MAX_LOG_PROBLEMS]]
        if len(result.log_problems) > MAX_LOG_PROBLEMS:
            out.append(f"- ... and {len(result.log_problems) - MAX_LOG_PROBLEMS} more")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


# -- explain -----------------------------------------------------------------------------------


REPAIRS_TITLE = "What `nnprobe fix` tries, after the finding's own fixes"


def repair_lines(code: str) -> list[str]:
    """The repair catalogue's entries for a code, in the order `nnprobe fix` tries them."""
    from nnprobe.repair.catalogue import REPAIRS, describe_repair

    return [describe_repair(r) for r in REPAIRS.get(code, ())]


#: rules taken from the literature: which condition of the source is kept, which is changed, and why
PROVENANCE_TITLE = "From the literature: kept and changed"


def render_explain(detector_cls: Any) -> RenderableType:
    """`nnprobe explain CODE`: what the finding means, its thresholds and why, causes, fixes, references."""
    ex = detector_cls.explanation
    head = Text()
    head.append(detector_cls.code, style="bold")
    head.append("  default severity: ")
    head.append(detector_cls.severity, style=_SEVERITY_STYLE.get(detector_cls.severity, ""))
    head.append(f"\n{detector_cls.summary}")
    parts: list[RenderableType] = [head, _section("Meaning", [ex.meaning], bullet=False)]
    if detector_cls.thresholds:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("setting", no_wrap=True)
        table.add_column("default", justify="right", no_wrap=True)
        table.add_column("why this default", ratio=1)
        for name, th in detector_cls.thresholds.items():
            table.add_row(Text(f"detectors.{detector_cls.code}.{name}"), fmt_num(th.default), Text(th.doc))
        parts += [Text(""), Text("Thresholds", style="bold"), table]
    parts.append(_section("Causes", ex.causes))
    parts.append(_section("Fixes", ex.fixes))
    repairs = repair_lines(detector_cls.code)
    if repairs:
        parts.append(_section(REPAIRS_TITLE, repairs))
    if ex.references:
        parts.append(_section("References", ex.references))
    if ex.provenance:
        parts.append(_section(PROVENANCE_TITLE, ex.provenance))
    return Group(*parts)


def _section(title: str, lines: Sequence[str], bullet: bool = True) -> Group:
    """A bold title, then the lines indented; wrapped lines keep the indent."""
    if bullet:
        body: RenderableType = _bullets(lines)
    else:
        body = Padding(Text("\n".join(lines)), (0, 0, 0, 2))
    return Group(Text(""), Text(title, style="bold"), body)


def _bullets(lines: Sequence[str]) -> Table:
    grid = Table.grid(padding=(0, 1), pad_edge=True)
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    for line in lines:
        grid.add_row("-", Text(printable(line)))
    return grid


def render_explain_list(classes: Sequence[Any]) -> RenderableType:
    """`nnprobe explain` without a code: one row per finding code."""
    table = Table(title="Finding codes", title_justify="left", caption="details: nnprobe explain CODE",
                  caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("code", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("what it means", ratio=1)
    for cls in classes:
        table.add_row(Text(cls.code), Text(cls.severity, style=_SEVERITY_STYLE.get(cls.severity, "")),
                      Text(cls.summary))
    return table


def render_explain_markdown(classes: Sequence[Any]) -> str:
    """`nnprobe explain --format markdown`: every code's meaning, thresholds and sources (docs/findings.md)."""
    out = ["# Finding codes", "",
           "Generated by `nnprobe explain --format markdown`; `nnprobe explain CODE` shows the same in a terminal.",
           "Every threshold can be overridden in a config under `detectors: {CODE: {NAME: value}}`,",
           "a code's severity with `severity:`, and a detector switched off with `enabled: false`.", ""]
    out += _md_table(["code", "default severity", "what it means"],
                     [(f"[`{c.code}`](#{c.code})", c.severity, c.summary) for c in classes])
    for cls in classes:
        ex = cls.explanation
        out += ["", f"## {cls.code}", "", f"Default severity: **{cls.severity}**. {cls.summary}", "", ex.meaning, ""]
        if cls.thresholds:
            out += _md_table(["setting", "default", "why this default"],
                             [(f"`detectors.{cls.code}.{name}`", fmt_num(th.default), th.doc)
                              for name, th in cls.thresholds.items()])
            out.append("")
        for title, lines in (("Usual causes", ex.causes), ("Fixes", ex.fixes),
                             (f"{REPAIRS_TITLE} (docs/fix.md)", repair_lines(cls.code)),
                             ("References", ex.references), (PROVENANCE_TITLE, ex.provenance)):
            if lines:
                out += [f"**{title}**", ""] + [f"- {line}" for line in lines] + [""]
    return "\n".join(out).rstrip() + "\n"


__all__ = [
    "Spark", "fmt_num", "fmt_pct", "first_finding", "layer_rows", "render_explain", "render_explain_list",
    "render_explain_markdown",
    "md_code", "printable", "render_markdown", "render_text", "sparkline",
]
