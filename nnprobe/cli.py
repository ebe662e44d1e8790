"""The command line: the only module that knows about click, exit codes and the terminal.

Exit status: 0 nothing at or above --fail-on and every expectation met; 1 otherwise;
2 bad usage, bad config, unreadable input or an interrupted run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import click

import nnprobe
from nnprobe.errors import NnprobeError
from nnprobe.reports.formats import DOCUMENTS

FORMATS_RUN = ("text", "json")
FAIL_ON = ("error", "warning", "info", "never")


class UserError(click.ClickException):
    """A problem the user can fix: one paragraph on stderr, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"nnprobe: error: {self.format_message()}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NnprobeError as exc:
            raise UserError(str(exc)) from None
        except KeyboardInterrupt:
            raise UserError("interrupted (Ctrl-C) before anything was recorded.") from None


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")) or None, highlight=False,
                   width=None if (sys.stderr if stderr else sys.stdout).isatty() else 100)


def fail_on_option(f):
    return click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
                        help="Exit 1 when a finding at or above this severity is found ('never': always 0).")(f)


def set_option(f):
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key by its dotted path, e.g. --set optimizer.lr=0.01 (repeatable).")(f)


def _exit_status(result, fail_on: str) -> int:
    from nnprobe.findings import at_or_above

    if fail_on == "never":
        return 0
    if at_or_above(result.findings, fail_on) or any(not c.ok for c in result.checks):
        return 1
    return 0


def _emit(result, fmt: str, fail_on: str = "error") -> None:
    """Print the result in the chosen format on stdout (json: exactly one document)."""
    if fmt == "text":
        from nnprobe.reports.terminal import render_text

        _console().print(render_text(result))
    else:
        click.echo(DOCUMENTS[fmt](result, fail_on), nl=False)
    if os.environ.get("GITHUB_ACTIONS"):
        from nnprobe.reports.junit import github_annotations

        # workflow commands are read from both streams; keep stdout a clean document for json/markdown/junit
        for line in github_annotations(result):
            click.echo(line, err=fmt != "text")


@click.group(name="nnprobe", cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(nnprobe.__version__, "--version", prog_name="nnprobe")
def cli() -> None:
    """Train a NumPy MLP from a YAML file, probe every layer at every step, and explain what went wrong.

    \b
    nnprobe train configs/relu-regression.yaml      # reproduce a diverging run, see why
    nnprobe diagnose runs/relu-regression-*/        # re-check a saved run
    nnprobe explain nonfinite                       # what a finding means and how to fix it
    """


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory to create (must not hold a run). Default: a fresh one under runs/.")
@set_option
@click.option("--format", "fmt", type=click.Choice(FORMATS_RUN), default="text", show_default=True)
@fail_on_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--no-gradcheck", is_flag=True, help="Train with a user activation even if its derivative is wrong.")
@click.pass_context
def train(ctx, config: Path, out_dir: Optional[Path], overrides, fmt: str, fail_on: str, quiet: bool,
          no_gradcheck: bool) -> None:
    """Train CONFIG, recording every step, and report the findings.

    \b
    nnprobe train configs/nan-cost.yaml
    nnprobe train configs/quickstart.yaml --set optimizer.lr=0.1 --format json
    """
    from nnprobe.app import train_config
    from nnprobe.config import load_config

    cfg = load_config(config, overrides)
    show_progress = not quiet and fmt != "json" and sys.stderr.isatty()
    with _progress(show_progress, cfg.name) as progress:
        result = train_config(cfg, config_path=config, out_dir=out_dir, progress=progress,
                              check_user_code=not no_gradcheck)
    _emit(result, fmt, fail_on)
    if result.status == "interrupted":
        raise UserError(
            f"training was interrupted at step {result.steps}; the {result.steps} step records written are kept in "
            f"{result.run_dir}/steps.jsonl. Run `nnprobe diagnose {result.run_dir}` to analyse them again."
        )
    ctx.exit(_exit_status(result, fail_on))


class _progress:
    """A rich progress bar with the live loss on stderr, or nothing."""

    def __init__(self, enabled: bool, name: str) -> None:
        self.enabled, self.name, self._bar, self._task = enabled, name, None, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                             console=_console(stderr=True), transient=True)
        self._bar.__enter__()
        self._task = self._bar.add_task(self.name, total=None, loss="-")
        return self.update

    def update(self, step: int, total: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == total:
            self._bar.update(self._task, completed=step, total=total, loss=f"{loss:.6g}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(("text", *DOCUMENTS)), default="text",
              show_default=True)
@fail_on_option
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="A reference run of the same config: exit 1 on any regression against it.")
@click.option("--tolerance", type=float, default=0.10, show_default=True,
              help="With --baseline: relative final-loss increase allowed.")
@click.pass_context
def diagnose(ctx, run_dir: Path, fmt: str, fail_on: str, baseline: Optional[Path], tolerance: float) -> None:
    """Recompute every finding of a saved run from its log alone.

    \b
    nnprobe diagnose runs/nan-cost-20261123-101500
    nnprobe diagnose RUN --baseline BASE_RUN --format junit > report.xml
    """
    from nnprobe.diagnose.load import load_run

    result = load_run(run_dir)
    if baseline is not None:
        from nnprobe.diagnose.baseline import compare_to_baseline

        result.checks += compare_to_baseline(result, load_run(baseline), tolerance=tolerance)
    for problem in result.log_problems:
        click.echo(f"nnprobe: warning: {run_dir}/steps.jsonl {problem}", err=True)
    _emit(result, fmt, fail_on)
    ctx.exit(_exit_status(result, fail_on))


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path), required=False)
@set_option
@click.option("--schema", is_flag=True, help="Print the config's JSON Schema (for editor completion) and exit.")
@fail_on_option
@click.pass_context
def validate(ctx, config: Optional[Path], overrides, schema: bool, fail_on: str) -> None:
    """Check CONFIG against the schema and run the static checks, without training.

    \b
    nnprobe validate configs/relu-output-ce.yaml
    nnprobe validate --schema > nnprobe.schema.json
    """
    from nnprobe.config import json_schema, load_config

    if schema:
        click.echo(json.dumps(json_schema(), indent=2))
        return
    if config is None:
        raise UserError("validate needs a CONFIG file (or --schema).")
    from nnprobe.app import static_findings, user_activation

    cfg = load_config(config, overrides)
    user_activation(cfg, config.parent, check=True)

    findings = static_findings(cfg)
    click.echo(f"{config}: valid ({cfg.name}: {cfg.data.source} data, hidden {cfg.model.hidden} "
               f"{cfg.model.activation}, output {cfg.model.output}, loss {cfg.loss.kind}).")
    for f in findings:
        click.echo(f"  {f.severity}: {f.code}: {f.message}")
        for fix in f.fixes:
            click.echo(f"      fix: {fix}")
    from nnprobe.findings import at_or_above

    ctx.exit(1 if at_or_above(findings, fail_on) else 0)


@cli.command()
@click.argument("code", required=False)
@click.option("--format", "fmt", type=click.Choice(("text", "markdown")), default="text", show_default=True)
def explain(code: Optional[str], fmt: str) -> None:
    """What a finding code means, its thresholds, usual causes and fixes (no CODE: the list).

    \b
    nnprobe explain
    nnprobe explain dead-relu
    nnprobe explain --format markdown > findings.md
    """
    from nnprobe.diagnose.detectors import REGISTRY, all_codes, explain as lookup
    from nnprobe.reports.terminal import render_explain, render_explain_list, render_explain_markdown

    all_codes()
    try:
        classes = [lookup(code)] if code is not None else list(REGISTRY.values())
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if fmt == "markdown":
        click.echo(render_explain_markdown(classes), nl=False)
    elif code is None:
        _console().print(render_explain_list(classes))
    else:
        _console().print(render_explain(classes[0]))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write. Default: RUN_DIR/report.html.")
def report(run_dir: Path, output: Optional[Path]) -> None:
    """Write a self-contained HTML report with plots (needs the 'plot' extra: matplotlib).

    \b
    nnprobe report runs/nan-cost-20261123-101500 -o nan-cost.html
    """
    from nnprobe.diagnose.load import load_run
    from nnprobe.reports.html import render_html

    result = load_run(run_dir)
    html = render_html(result)
    target = output or Path(run_dir) / "report.html"
    try:
        target.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{target}: cannot write the report ({exc.strerror}); choose another path with -o.") from None
    click.echo(f"wrote {target}", err=True)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@set_option
@click.option("--format", "fmt", type=click.Choice(FORMATS_RUN), default="text", show_default=True)
@click.pass_context
def gradcheck(ctx, config: Path, overrides, fmt: str) -> None:
    """Compare backprop with finite differences in every layer, and each activation's derivative with its forward.

    Runs in float64 on 8 examples of the config's data; exit 1 on a gradient-mismatch.

    \b
    nnprobe gradcheck examples/user_activations/sigmoid-bug.yaml
    nnprobe gradcheck configs/relu-regression.yaml --format json
    """
    from nnprobe.config import load_config
    from nnprobe.app import gradcheck_config
    from nnprobe.reports.gradcheck import render_gradcheck

    cfg = load_config(config, overrides)
    report = gradcheck_config(cfg, config.parent, config_label=str(config))
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        _console().print(render_gradcheck(report))
    ctx.exit(0 if report.ok else 1)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="CONFIG_OR_DIR...")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Configs trained at once, each in its own process. Default: the CPU count.")
@fail_on_option
@click.option("--format", "fmt", type=click.Choice(FORMATS_RUN), default="text", show_default=True)
@click.option("--out-root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Directory under which each config gets a fresh run directory.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write JUnit XML (one testsuite per config) to this file.")
@click.pass_context
def check(ctx, paths, jobs: Optional[int], fail_on: str, fmt: str, out_root: Path, junit_path: Optional[Path]) -> None:
    """Train many configs (a directory: its *.yaml) in parallel and print one table; for CI.

    Exit 1 when a config fails its expect: or --fail-on, 2 when one is invalid (the others still run).

    \b
    nnprobe check configs/ --fail-on warning
    nnprobe check configs/a.yaml configs/b.yaml --jobs 2 --junit nnprobe.xml
    """
    from nnprobe.check import run_check

    def done(outcome) -> None:
        if fmt != "json":
            click.echo(f"  {outcome.verdict:7} {outcome.config}", err=True)

    try:
        report = run_check(paths, jobs=jobs, fail_on=fail_on, out_root=out_root, on_done=done)
    except KeyboardInterrupt:
        raise UserError(f"check interrupted (Ctrl-C); the run directories written so far are under {out_root}/.") from None
    if junit_path is not None:
        try:
            junit_path.write_text(report.junit(), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--junit {junit_path}: cannot write the file ({exc.strerror}).") from None
    if os.environ.get("GITHUB_ACTIONS"):
        for line in report.annotations():
            click.echo(line, err=fmt == "json")  # workflow commands are read from stdout (stderr in json mode)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        from nnprobe.reports.check_table import render_check

        _console().print(render_check(report))
    ctx.exit(report.exit_status)


def main() -> None:
    cli(prog_name="nnprobe")
