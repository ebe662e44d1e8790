"""A stability map rendered: a terminal grid that reads without colour, and a self-contained HTML heatmap."""

from __future__ import annotations

import io
from typing import Any

from nnprobe.errors import NnprobeError
from nnprobe.stability import CLASSES, LETTERS, MEANINGS, StabilityMap

# one colour per class, also told apart by the letter printed in every cell
CLASS_COLOURS = {"error": "#9e9e9e", "diverged": "#b71c1c", "unstable": "#ef6c00", "stalled": "#1565c0",
                 "healthy": "#2e7d32"}


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"  # as the YAML config writes it
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def fmt_loss(v: Any) -> str:
    return "-" if v is None else f"{v:.2g}"


def cell_text(m: StabilityMap, *values) -> str:
    cell = m.cell(*values)
    return f"{LETTERS[cell.cls]} {fmt_loss(cell.deciding.final_loss)}"


def _rows(m: StabilityMap) -> list[Any]:
    """The second axis' values (one row each), or [None] for a one-axis map."""
    return list(m.axes[1].values) if len(m.axes) == 2 else [None]


def _at(m: StabilityMap, column: Any, row: Any) -> tuple:
    return (column,) if row is None else (column, row)


def legend() -> list[str]:
    return [f"{LETTERS[c]} {c}: {MEANINGS[c]}" for c in CLASSES[1:] + CLASSES[:1]]


def codes_seen(m: StabilityMap) -> list[str]:
    """Per class, the finding codes behind it and in how many cells."""
    lines = []
    for cls in CLASSES:
        counts: dict[str, int] = {}
        for c in m.cells:
            if c.cls == cls:
                for code in c.codes:
                    counts[code] = counts.get(code, 0) + 1
        if counts:
            lines.append(f"{cls}: " + ", ".join(f"{code} ({n} cell{'s' if n > 1 else ''})"
                                                for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    return lines


def summary(m: StabilityMap) -> str:
    seeds = len(m.cells[0].runs) if m.cells else 0
    counts = ", ".join(f"{m.count(c)} {c}" for c in CLASSES if m.count(c))
    steps = f", {m.steps} steps each" if m.steps else ""
    return f"{len(m.cells)} cell(s) x {seeds} seed(s){steps}: {counts}."


def render_map_text(m: StabilityMap):
    """A rich renderable: a row per first-axis value, a column per second-axis value (letter and final loss per
    cell), and below each column the largest first-axis value that was healthy."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    first, rows = m.axes[0], _rows(m)
    table = Table(box=box.SIMPLE_HEAD, title=f"{m.config}: stability over {' x '.join(a.key for a in m.axes)}",
                  title_justify="left")
    table.add_column(first.key, no_wrap=True, justify="right")
    for row in rows:
        table.add_column("class, final loss" if row is None else f"{m.axes[1].key}={fmt_value(row)}", no_wrap=True)
    for v in first.values:
        table.add_row(fmt_value(v), *(cell_text(m, *_at(m, v, row)) for row in rows))
    table.add_section()
    table.add_row("largest healthy", *("none" if (b := m.largest_healthy(row)) is None else fmt_value(b)
                                       for row in rows))
    parts: list[Any] = [table, *(Text(line) for line in legend()),
                        Text("beside each letter: the final loss of the seed that decided the cell", style="dim")]
    parts += [Text(line) for line in codes_seen(m)]
    parts.append(Text(summary(m), style="bold"))
    if m.run_root:
        parts.append(Text(f"runs: {m.run_root} (map.json holds every cell)", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------- HTML


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise NnprobeError("nnprobe map -o needs matplotlib to draw the heatmap, and it is not installed; install "
                           "it with: pip install 'nnprobe[plot]' (or leave -o off for the terminal grid).") from None
    return matplotlib


def require_plotting() -> None:
    """Fail before any training when -o was asked for and matplotlib is missing."""
    _matplotlib()


def _heatmap_svg(m: StabilityMap) -> str:
    mpl = _matplotlib()
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from nnprobe.reports.html import _svg

    rows, first = _rows(m), m.axes[0]
    grid = [[CLASSES.index(m.cell(*_at(m, v, row)).cls) for v in first.values] for row in rows]
    style = {"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "nnprobe-map"}
    with mpl.rc_context(style):
        fig = Figure(figsize=(max(4.0, 0.75 * len(first.values) + 2), max(2.0, 0.5 * len(rows) + 1.6)),
                     layout="constrained")
        ax = fig.add_subplot()
        ax.imshow(grid, cmap=ListedColormap([CLASS_COLOURS[c] for c in CLASSES]), vmin=-0.5,
                  vmax=len(CLASSES) - 0.5, aspect="auto", origin="lower")
        for y, row in enumerate(rows):
            for x, v in enumerate(first.values):
                ax.text(x, y, cell_text(m, *_at(m, v, row)).replace(" ", "\n"), ha="center", va="center",
                        color="white", fontsize=7)
        ax.set_xticks(range(len(first.values)), [fmt_value(v) for v in first.values], rotation=45, ha="right")
        ax.set_xlabel(first.key)
        if len(m.axes) == 2:
            ax.set_yticks(range(len(rows)), [fmt_value(r) for r in rows])
            ax.set_ylabel(m.axes[1].key)
        else:
            ax.set_yticks([])
        present = [c for c in CLASSES if m.count(c)]
        fig.legend(handles=[Patch(color=CLASS_COLOURS[c], label=f"{LETTERS[c]} {c}") for c in present],
                   loc="outside upper center", ncols=len(present), frameon=False)
        return _svg(fig, "map")


def render_map_html(m: StabilityMap) -> str:
    """One self-contained HTML page (inline SVG, no scripts, no network), the same bytes for the same map."""
    from nnprobe.reports.html import _CSS, _e

    out = io.StringIO()
    title = f"nnprobe map: {m.config}"
    out.write(f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
              f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n")
    out.write(f"<p>{_e(summary(m))}</p>\n")
    out.write(f"<figure>{_heatmap_svg(m)}<figcaption>{_e('; '.join(legend()))}</figcaption></figure>\n")
    out.write("<h2>Largest healthy value</h2>\n<ul>\n")
    for row in _rows(m):
        best = m.largest_healthy(row)
        where = "" if row is None else f"{m.axes[1].key}={fmt_value(row)}: "
        out.write(f"<li>{_e(where)}{_e(m.axes[0].key)} = {_e('none' if best is None else fmt_value(best))}</li>\n")
    out.write("</ul>\n<h2>Findings behind the classes</h2>\n<ul>\n")
    out.writelines(f"<li>{_e(line)}</li>\n" for line in codes_seen(m))
    out.write("</ul>\n")
    errors = [(c, r) for c in m.cells for r in c.runs if r.error]
    if errors:
        out.write("<h2>Cells without a result</h2>\n<ul>\n")
        out.writelines(f"<li><code>{_e(c.values)}</code> seed {r.seed}: {_e(r.error)}</li>\n" for c, r in errors)
        out.write("</ul>\n")
    out.write('<p class="caption">Made by nnprobe.</p>\n</body>\n</html>\n')
    return out.getvalue()


__all__ = ["render_map_html", "render_map_text", "require_plotting"]
