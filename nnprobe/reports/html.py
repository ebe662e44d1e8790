"""`nnprobe report`: one self-contained HTML file with the summary, the findings and the plots.

No network, no external files, no scripts: CSS is inline and every figure is an SVG drawn
by matplotlib and embedded in the page. matplotlib is an optional extra, imported only
here. The same run renders to the same bytes (fixed SVG hash salt, no dates), so reports
can be diffed and cached.
"""

from __future__ import annotations

import html
import io
import math
import re
from typing import Any, Optional, Sequence

from nnprobe.diagnose.digest import has_dead_units
from nnprobe.errors import NnprobeError
from nnprobe.findings import Finding, sort_findings
from nnprobe.reports.terminal import (
    LAYER_CAPTION, LAYER_HEADERS, LOG_SCALE_RATIO, MAX_LOG_PROBLEMS, SKIPPED_TITLE, fix_line, fmt_num, layer_rows,
    printable, severity_counts, status_words,
)
from nnprobe.result import RunResult

# The rule of thumb for ‖ΔW‖/‖W‖ per step (CS231n, "Babysitting the learning process").
UPDATE_RATIO_GUIDE = 1e-3
SYMLOG_ABOVE = 1e3  # activation ranges reaching past this are drawn on a symmetric log scale

_SEVERITY_COLOUR = {"error": "#c62828", "warning": "#e65100", "info": "#1565c0"}
_LAYER_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"]
_NONFINITE_COLOUR = "#b71c1c"

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       max-width: 1000px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.4em; margin-bottom: .2em; word-break: break-all; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { text-align: left; vertical-align: top; padding: .35em .6em; border-bottom: 1px solid #e4e4e4; }
th { background: #f5f5f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .92em; }
.sev { font-weight: 700; text-transform: uppercase; font-size: .85em; white-space: nowrap; }
.sev-error { color: #c62828; } .sev-warning { color: #e65100; } .sev-info { color: #1565c0; }
.fix { color: #2e7d32; margin-top: .25em; }
.status { font-size: 1.05em; }
.ok { color: #2e7d32; font-weight: 700; } .fail { color: #c62828; font-weight: 700; }
.caption { color: #555; font-size: .9em; }
figure { margin: 1.2em 0; }
figure svg { width: 100%; height: auto; }
figcaption { color: #444; font-size: .9em; }
"""


def _load_matplotlib() -> Any:
    """matplotlib, or a message naming the extra that provides it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401  (the object-oriented API: no pyplot, no global state)
    except ImportError:
        raise NnprobeError(
            "nnprobe report needs matplotlib to draw its plots, and it is not installed; "
            "install it with: pip install 'nnprobe[plot]'"
        ) from None
    return matplotlib


def render_html(result: RunResult) -> str:
    """The whole report as one HTML document (deterministic for a given run)."""
    mpl = _load_matplotlib()
    figures = _figures(mpl, result)
    return _page(result, figures)


# -- page ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Text from a run as HTML: escaped, its control characters (and undecodable path bytes) shown as \\xNN."""
    return html.escape(printable(value), quote=True)


def _page(result: RunResult, figures: Sequence[tuple[str, str, str]]) -> str:
    name = result.start.get("name") or result.run_dir
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>nnprobe report: {_e(name)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>nnprobe report: <code>{_e(result.run_dir)}</code></h1>",
    ]
    out.append(_summary_html(result))
    out.append(_findings_html(result.findings))
    digest = result.digest
    if digest is not None and digest.has_layer_stats:
        out.append("<h2>Layers</h2>")
        out.append(_table_html(LAYER_HEADERS, layer_rows(digest), numeric_from=4))
        out.append(f'<p class="caption">{_e(LAYER_CAPTION)}</p>')
    if result.checks:
        out.append("<h2>Checks</h2><ul>")
        for c in result.checks:
            kind = f"[{_e(c.kind)}] " if c.kind != "expect" else ""
            mark = '<span class="ok">PASS</span>' if c.ok else '<span class="fail">FAIL</span>'
            out.append(f"<li>{mark} {kind}<code>{_e(c.name)}</code>: {_e(c.message)}</li>")
        out.append("</ul>")
    if result.skipped:
        out.append(f"<h2>{_e(SKIPPED_TITLE)}</h2><ul>")
        out += [f"<li>{_e(s.text)}</li>" for s in result.skipped]
        out.append("</ul>")
    if result.log_problems:
        out.append(f"<h2>Log problems ({len(result.log_problems)})</h2><ul>")
        out += [f"<li>{_e(p)}</li>" for p in result.log_problems[:MAX_LOG_PROBLEMS]]
        if len(result.log_problems) > MAX_LOG_PROBLEMS:
            out.append(f"<li>... and {len(result.log_problems) - MAX_LOG_PROBLEMS} more</li>")
        out.append("</ul>")
    if figures:
        out.append("<h2>Plots</h2>")
        for fig_id, caption, svg in figures:
            out.append(f'<figure id="{fig_id}">{svg}<figcaption>{_e(caption)}</figcaption></figure>')
    elif digest is None:
        out.append('<p class="caption">No step statistics were available, so there are no plots.</p>')
    version = result.start.get("nnprobe")
    out.append(f'<p class="caption">Made by nnprobe{" " + _e(version) if version else ""}.</p>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _summary_html(result: RunResult) -> str:
    start = result.start
    bits = [f"<b>status:</b> {_e(status_words(result))}", f"<b>steps:</b> {result.steps}",
            f"<b>final loss:</b> {_e(fmt_num(result.final_loss))}"]
    rows = []
    if start.get("layers"):
        widths = [str(start["layers"][0].get("fan_in", "?"))]
        widths += [str(spec.get("units", "?")) for spec in start["layers"]]
        acts = ", ".join(sorted({str(spec.get("activation")) for spec in start["layers"][:-1]})) or "—"
        rows.append(f"<b>network:</b> {_e('-'.join(widths))} (hidden: {_e(acts)}, "
                    f"output: {_e(start['layers'][-1].get('activation'))})")
    loss, opt = start.get("loss") or {}, start.get("optimizer") or {}
    if loss:
        rows.append(f"<b>loss:</b> {_e(loss.get('kind'))}, reduction {_e(loss.get('reduction'))}, "
                    f"from_logits {'true' if loss.get('from_logits') else 'false'}")
    if opt:
        rows.append(f"<b>optimizer:</b> {_e(opt.get('kind'))}, lr {_e(fmt_num(opt.get('lr')))}")
    digest = result.digest
    if digest is not None and digest.first_nonfinite:
        nf = digest.first_nonfinite
        where = f" in layer {nf['layer']}" if nf.get("layer") else ""
        rows.append(f"<b>first non-finite value:</b> step {_e(nf['step'])}, {_e(nf.get('tensor'))}{_e(where)}, "
                    f"{_e(nf.get('pass'))} pass")
    return (f'<p class="status">{" · ".join(bits)}</p>'
            + ("<p>" + "<br>".join(rows) + "</p>" if rows else ""))


def _findings_html(findings: Sequence[Finding]) -> str:
    findings = sort_findings(list(findings))
    if not findings:
        return "<h2>Findings</h2><p>No findings.</p>"
    out = [f"<h2>Findings ({_e(severity_counts(findings))})</h2>", "<table>",
           "<tr><th>severity</th><th>code</th><th>step</th><th>layer</th><th>what happened / first fix</th></tr>"]
    for f in findings:
        fix = fix_line(f)
        fix_html = f'<div class="fix">{_e(fix)}</div>' if fix else ""
        out.append(
            f'<tr><td class="sev sev-{_e(f.severity)}">{_e(f.severity)}</td><td><code>{_e(f.code)}</code></td>'
            f'<td class="num">{"static" if f.step is None else f.step}</td><td>{_e(f.layer or "—")}</td>'
            f"<td>{_e(f.message)}{fix_html}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        cells = [f'<td class="num">{_e(c)}</td>' if i >= numeric_from else f"<td>{_e(c)}</td>"
                 for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


# -- figures ----------------------------------------------------------------------------------


def _figures(mpl: Any, result: RunResult) -> list[tuple[str, str, str]]:
    """(id, caption, inline svg) per plot; none without a digest, only the loss without layer stats."""
    digest = result.digest
    if digest is None:
        return []
    from matplotlib.figure import Figure

    style = {"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
             "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8, "legend.frameon": False}
    out = []
    makers = [("fig-loss", _plot_loss)]
    if digest.has_layer_stats:
        makers += [("fig-gradients", _plot_gradients), ("fig-activations", _plot_activations),
                   ("fig-update-ratio", _plot_update_ratio)]
    for fig_id, make in makers:
        with mpl.rc_context({**style, "svg.hashsalt": f"nnprobe-{fig_id}"}):
            fig = Figure(figsize=(8.0, 3.4), layout="constrained")
            caption = make(fig, result)
            out.append((fig_id, caption, _svg(fig, fig_id)))
    return out


def _svg(fig: Any, prefix: str) -> str:
    """The figure as an inline <svg> element: no XML prologue, ids unique across the page, scalable."""
    buf = io.StringIO()
    # no metadata block: no date (determinism) and no URLs in a page meant to be self-contained
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = svg.replace("url(#", f"url(#{prefix}-").replace('href="#', f'href="#{prefix}-')
    svg = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1', svg, count=1)
    return svg.strip()


def _series(envelope: Any) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """x (bucket centre), lo, hi, mean for buckets with finite values; x of buckets holding NaN/inf."""
    xs, lo, hi, mean, bad_x = [], [], [], [], []
    for b in envelope.buckets():
        x = (b.first + b.last) / 2
        if b.bad:
            bad_x.append(x)
        if b.lo is not None:
            xs.append(x)
            lo.append(b.lo)
            hi.append(b.hi)
            mean.append(b.mean)
    return xs, lo, hi, mean, bad_x


def _band(ax: Any, envelope: Any, colour: str, label: str, *, line: str = "mean",
          floor: Optional[float] = None) -> bool:
    """Min/max band and a line through it; NaN/inf buckets as crosses on the top edge. False if empty.

    On a log axis (`floor` given) zeros are drawn at the floor, the bottom of the plot: left to
    matplotlib they would be dropped and the band polygon drawn across the gap.
    """
    xs, lo, hi, mean, bad_x = _series(envelope)
    if floor is not None:
        lo, hi, mean = ([v if v > floor else floor for v in vs] for vs in (lo, hi, mean))
    if xs:
        if any(a != b for a, b in zip(lo, hi)):
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.22, linewidth=0)
        ys = hi if line == "hi" else mean
        ax.plot(xs, ys, color=colour, linewidth=1.2, label=label, marker="o" if len(xs) == 1 else None,
                markersize=3)
    if bad_x:
        ax.plot(bad_x, [0.97] * len(bad_x), linestyle="none", marker="x", color=colour, markersize=6,
                markeredgewidth=1.5, transform=ax.get_xaxis_transform(), clip_on=False,
                label=None if xs else f"{label} (NaN/inf only)")
    return bool(xs or bad_x)


def _log_if_spans(ax: Any, envelopes: Sequence[Any], ratio: float = LOG_SCALE_RATIO) -> bool:
    """Log y when every value is positive and they span `ratio` or more (the sparkline's rule)."""
    finite = [e for e in envelopes if e.has_finite]
    if not finite:
        return False
    lo, hi = min(e.min_value for e in finite), max(e.max_value for e in finite)
    if lo > 0 and hi / lo >= ratio:
        ax.set_yscale("log")
        return True
    return False


def _log_floor(envelopes: Sequence[Any]) -> Optional[float]:
    """Half the smallest positive value any bucket holds: where zeros go on a log axis (None: nothing positive)."""
    smallest = math.inf
    for env in envelopes:
        for b in env.buckets():
            for v in (b.lo, b.mean, b.hi):
                if v is not None and 0 < v < smallest:
                    smallest = v
    return smallest / 2 if math.isfinite(smallest) else None


def _legend(ax: Any) -> None:
    """Below the axes, so it never hides data or the finding labels."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(4, len(handles)))


def _symlog(ax: Any, big: float) -> None:
    """Symmetric log scale with at most about five labelled decades on each side of zero."""
    ax.set_yscale("symlog", linthresh=1.0)
    top = max(1, math.ceil(math.log10(big)))
    stride = max(1, math.ceil(top / 5))
    lo, hi = ax.get_ylim()
    ticks = [0.0]
    for k in range(stride if stride > 1 else 0, top + 1, stride):  # ±1 would crowd 0 on a wide axis
        if hi > 0:
            ticks.append(10.0 ** k)
        if lo < 0:
            ticks.append(-(10.0 ** k))
    ax.set_yticks(sorted(ticks))


def _empty_note(ax: Any, text: str) -> None:
    ax.set_yticks([])  # no finite value: the axis would only show matplotlib's default range
    ax.text(0.5, 0.12, text, transform=ax.transAxes, ha="center", va="center", color="#666",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 1.0})


def _step_axis(ax: Any, digest: Any) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
    if digest.first_step is not None:
        lo, hi = digest.first_step, digest.last_step
        pad = 1.0 if hi - lo < 2 else max(0.5, (hi - lo) * 0.01)  # a 1-step run still gets integer ticks
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel("step")


def _step_label(x: float, _pos: Any = None) -> str:
    """20000 -> 20k, so step ticks stay short on narrow panels."""
    if abs(x) >= 1000:
        return f"{x / 1000:g}k"
    return f"{x:g}"


def _layer_colour(i: int) -> str:
    return _LAYER_COLOURS[i % len(_LAYER_COLOURS)]


def _plot_loss(fig: Any, result: RunResult) -> str:
    digest = result.digest
    has_acc = not digest.accuracy.empty or not digest.val_accuracy.empty
    axes = fig.subplots(1, 2, width_ratios=[3, 1]) if has_acc else [fig.subplots()]
    ax = axes[0]
    drew = _band(ax, digest.loss, "#1f77b4", "loss (train batch)")
    if not digest.val_loss.empty:
        _band(ax, digest.val_loss, "#ff7f0e", "validation loss")
    log = _log_if_spans(ax, [digest.loss, digest.val_loss])
    if not digest.loss.has_finite:
        _empty_note(ax, "no finite loss was recorded" if drew else "no loss was recorded")
    ax.set_ylabel("loss" + (" (log scale)" if log else ""))
    ax.set_title("Loss")
    _step_axis(ax, digest)
    _mark_findings(ax, result.findings)
    if digest.loss.n_bad and digest.loss.has_finite:
        ax.plot([], [], linestyle="none", marker="x", color="#1f77b4", label="NaN/inf loss")
    _legend(ax)
    if has_acc:
        acc_ax = axes[1]
        _band(acc_ax, digest.accuracy, "#1f77b4", "train batch")
        if not digest.val_accuracy.empty:
            _band(acc_ax, digest.val_accuracy, "#ff7f0e", "validation")
        acc_ax.set_ylim(-0.02, 1.02)
        acc_ax.set_title("Accuracy")
        _step_axis(acc_ax, digest)
        _legend(acc_ax)
    return ("Loss of each step's batch: the line is the mean of the steps in each bucket, the shaded band "
            "their minimum to maximum (a spike stays visible however long the run). Dashed vertical lines mark "
            "the step at which each finding first held, labelled with its code; crosses on the top edge "
            "mark steps where the loss was NaN or infinite.")


def _mark_findings(ax: Any, findings: Sequence[Finding]) -> None:
    """A dashed line at each finding's first step; findings too close to label apart share one label."""
    by_step: dict[int, list[Finding]] = {}
    for f in sort_findings(list(findings)):
        if f.step is not None:
            by_step.setdefault(f.step, []).append(f)
    if not by_step:
        return
    lo, hi = ax.get_xlim()
    near = (hi - lo) * 0.03
    clusters: list[list[int]] = []
    for step in sorted(by_step):
        if clusters and step - clusters[-1][0] <= near:
            clusters[-1].append(step)
        else:
            clusters.append([step])
    for cluster in clusters:
        group = [f for step in cluster for f in by_step[step]]
        worst = sort_findings(group)[0]
        for step in cluster:
            ax.axvline(step, color=_SEVERITY_COLOUR.get(sort_findings(by_step[step])[0].severity, "#444"),
                       linestyle="--", linewidth=1.0, alpha=0.85)
        label = ", ".join(", ".join(dict.fromkeys(f.code for f in by_step[step])) + f" @{step}"
                          for step in cluster)
        at_left_edge = cluster[0] - lo < near  # keep a label at the left edge inside the axes
        ax.text(cluster[0], 0.9, label, transform=ax.get_xaxis_transform(), rotation=90,
                ha="left" if at_left_edge else "right", va="top", fontsize=8,
                color=_SEVERITY_COLOUR.get(worst.severity, "#444"),
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 1.0})


def _plot_gradients(fig: Any, result: RunResult) -> str:
    digest = result.digest
    ax = fig.subplots()
    envs = [ls.grad_norm for ls in digest.layers]
    floor = _log_floor(envs)
    for i, ls in enumerate(digest.layers):
        _band(ax, ls.grad_norm, _layer_colour(i), ls.name, floor=floor)
    if floor is not None:
        ax.set_yscale("log")
    if not any(e.has_finite for e in envs):
        _empty_note(ax, "no finite gradient norm was recorded")
    ax.set_title("Weight-gradient norm per layer")
    ax.set_ylabel("‖gW‖ (log scale)" if floor is not None else "‖gW‖")
    _step_axis(ax, digest)
    _legend(ax)
    return ("L2 norm of each layer's weight gradient (log scale): line = bucket mean, band = min to max; a band "
            "reaching the bottom edge means the norm was exactly 0 (no gradient at all). Norms that climb "
            "steadily or differ by orders of magnitude between layers point to exploding or vanishing "
            "gradients; crosses on the top edge mark NaN or infinite gradients.")


def _plot_activations(fig: Any, result: RunResult) -> str:
    digest = result.digest
    dead_ax, rng_ax = fig.subplots(1, 2)
    dead_layers = [(i, ls) for i, ls in enumerate(digest.layers) if ls.dead.count and has_dead_units(ls.activation)]
    for i, ls in dead_layers:
        _band(dead_ax, ls.dead, _layer_colour(i), ls.name, line="hi")
    if not dead_layers:
        _empty_note(dead_ax, "no ReLU-family layer")
    dead_ax.set_ylim(-0.03, 1.03)
    dead_ax.yaxis.set_major_formatter(_percent_formatter())
    dead_ax.set_title("Dead units (fraction of the layer)")
    _step_axis(dead_ax, digest)
    if dead_layers:
        _legend(dead_ax)
    big = 0.0
    for i, ls in enumerate(digest.layers):
        colour = _layer_colour(i)
        lo_xs, lo, _, _, bad_lo = _series(ls.a_min)
        hi_xs, _, hi, _, bad_hi = _series(ls.a_max)
        common = sorted(set(lo_xs) & set(hi_xs))
        lo_by, hi_by = dict(zip(lo_xs, lo)), dict(zip(hi_xs, hi))
        if common:
            band_lo, band_hi = [lo_by[x] for x in common], [hi_by[x] for x in common]
            dot = "o" if len(common) == 1 else None  # a one-step run has no line to draw
            rng_ax.fill_between(common, band_lo, band_hi, color=colour, alpha=0.2, linewidth=0)
            rng_ax.plot(common, band_hi, color=colour, linewidth=1.0, label=ls.name, marker=dot, markersize=3)
            rng_ax.plot(common, band_lo, color=colour, linewidth=1.0, linestyle=":", marker=dot, markersize=3)
            big = max(big, max(abs(v) for v in band_lo + band_hi))
        bad = sorted(set(bad_lo) | set(bad_hi))
        if bad:
            rng_ax.plot(bad, [0.97] * len(bad), linestyle="none", marker="x", color=colour, markersize=6,
                        markeredgewidth=1.5, transform=rng_ax.get_xaxis_transform(), clip_on=False,
                        label=None if common else ls.name)
    if big > SYMLOG_ABOVE and math.isfinite(big):
        _symlog(rng_ax, big)
    if not any(ls.a_max.count for ls in digest.layers):
        _empty_note(rng_ax, "no activation statistics")
    rng_ax.set_title("Activation range (min to max)" + (" (symlog)" if big > SYMLOG_ABOVE else ""))
    _step_axis(rng_ax, digest)
    _legend(rng_ax)
    return ("Left: fraction of each ReLU-family layer's units whose pre-activation is at most 0 for every "
            "example of the batch (dead: no output, no gradient); the line is the highest value in each bucket. "
            "Right: the band from the smallest to the largest activation of each layer (solid line = max, "
            "dotted = min); a range that grows by orders of magnitude precedes an overflow. Crosses mark NaN "
            "or infinite activations.")


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def _plot_update_ratio(fig: Any, result: RunResult) -> str:
    digest = result.digest
    ax = fig.subplots()
    envs = [ls.update_ratio for ls in digest.layers]
    floor = _log_floor(envs)
    if floor is not None:
        floor = min(floor, UPDATE_RATIO_GUIDE / 2)
    for i, ls in enumerate(digest.layers):
        _band(ax, ls.update_ratio, _layer_colour(i), ls.name, floor=floor)
    ax.axhline(UPDATE_RATIO_GUIDE, color="#444", linestyle=":", linewidth=1.2, label="1e-3 guide")
    ax.set_yscale("log")  # the guide line alone is enough for a log axis
    if not any(e.has_finite for e in envs):
        _empty_note(ax, "no finite update ratio was recorded")
    ax.set_title("Update ratio ‖ΔW‖ / ‖W‖ per layer")
    ax.set_ylabel("ratio (log scale)")
    _step_axis(ax, digest)
    _legend(ax)
    return ("Size of each step's weight update relative to the weights (log scale), against the usual guide of "
            "about 1e-3: far above it, the learning rate is too high (updates overwrite the weights); far "
            "below, learning crawls. Line = bucket mean, band = min to max; the bottom edge stands for 0.")


__all__ = ["render_html"]
