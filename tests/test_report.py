"""Terminal and markdown reports, the sparkline, and the explain pages, rendered without colour."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from nnprobe.diagnose.detectors import REGISTRY, all_codes
from nnprobe.diagnose.detectors.base import Detector, Explanation, Threshold
from nnprobe.diagnose.digest import Digest, Envelope
from nnprobe.findings import Finding
from nnprobe.reports.terminal import (
    fmt_num, render_explain, render_explain_list, render_markdown, render_text, sparkline,
)
from nnprobe.result import Check, RunResult
from conftest import plain_layer, step_record, start_record as _start_record

# -- records as docs/log-schema.md writes them ------------------------------------------------


UNNORMALIZED = {"n_train": 100, "n_val": 0, "n_features": 2, "n_classes": None,
                "input_mean": [49.5, 0.0], "input_std": [28.9, 1.0], "input_min": [0.0, -2.0],
                "input_max": [99.0, 2.0], "target_mean": 50.5, "target_std": 28.9, "target_min": 1.0,
                "target_max": 100.0}


def start_record(layers=(("dense1", 2, 4, "relu"), ("dense2", 4, 1, "identity"))):
    return _start_record(list(layers), total_steps=4, loss={"reduction": "sum"}, data=UNNORMALIZED)


def envelope_of(values) -> Envelope:
    env = Envelope()
    for step, v in enumerate(values):
        env.add(step, v)
    return env


def diverging_result(with_digest: bool = True) -> RunResult:
    """A 4-step run that blows up: loss 1 -> 10 -> 100 -> inf, dense1 dying on the way."""
    start = start_record()
    digest = Digest(start)
    losses, grads, deads = [1.0, 10.0, 100.0, math.inf], [0.5, 5.0, 50.0, math.inf], [0, 1, 3, 4]
    for step in range(4):
        bad = step == 3
        digest.observe(step_record(start, step, loss=losses[step], grad_norm=grads[step], layers=[
            plain_layer("dense1", dead=deads[step], a_min=-0.5 * step, a_max=2.0 * 10 ** step, grad=grads[step],
                        nan=2 if bad else 0),
            plain_layer("dense2", a_min=-1.0, a_max=3.0, grad=0.25 * (step + 1))],
            nonfinite={"pass": "forward", "tensor": "loss", "layer": None} if bad else None))
    end = {"type": "end", "status": "diverged", "steps": 4, "final_loss": None, "stopped_by": "nonfinite"}
    digest.finish(end)
    findings = [
        Finding("loss-plateau", "info", 1, None, "loss stuck at 10 for 2 steps", {}, []),
        Finding("dead-relu", "warning", 2, "dense1", "3 of 4 units of dense1 (75%) output 0 | since step 2",
                {"fraction": 0.75}, ["model.init: he_normal", "optimizer.lr: 0.001"]),
        Finding("nonfinite", "error", 3, None, "+inf first appeared at step 3 in the loss (forward pass)",
                {}, ["data.normalize: standardize", "loss.reduction: mean", "model.init: he_normal"]),
        Finding("unnormalized-inputs", "warning", None, None, "feature 0 spans [0, 99] (mean 49.5, std 28.9)",
                {}, ["data.normalize: standardize"]),
    ]
    return RunResult(
        run_dir="runs/relu-regression-test", status="diverged", steps=4, final_loss=None, findings=findings,
        start=start, digest=digest if with_digest else None, stopped_by="nonfinite",
        checks=[Check("max_severity", False, "error finding nonfinite is above info"),
                Check("final_loss", True, "0.5 <= 0.6 (baseline 0.6)", kind="baseline")],
        log_problems=["line 6: cut off mid-write (the run was probably killed); skipped"],
    )


@pytest.fixture(autouse=True)
def no_colour(monkeypatch):
    """Render as a pipe or a CI log would: no colour, no terminal."""
    monkeypatch.setenv("NO_COLOR", "1")
    for var in ("FORCE_COLOR", "TERM", "COLUMNS", "LINES", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def render(renderable) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def flat(text: str) -> str:
    """The text with every run of whitespace made one space, so wrapped table cells read as one line."""
    return " ".join(text.split())


def assert_fits(text: str, width: int = 100) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"lines longer than {width}: {long}"


# -- sparkline --------------------------------------------------------------------------------


def test_sparkline_linear():
    spark = sparkline(envelope_of([1, 2, 3, 4, 5, 6, 7, 8]))
    assert spark.text == "▁▂▃▄▅▆▇█"
    assert not spark.log


def test_sparkline_log_scale_when_the_loss_spans_decades():
    spark = sparkline(envelope_of([10.0 ** k for k in range(8)]))
    assert spark.text == "▁▂▃▄▅▆▇█"
    assert spark.log


def test_sparkline_marks_nonfinite_and_flat_series():
    assert sparkline(envelope_of([4.0, 2.0, 1.0, math.nan, math.inf])).text == "█▃▁××"
    assert sparkline(envelope_of([3.0, 3.0, 3.0])).text == "▄▄▄"
    assert sparkline(envelope_of([None, math.nan])).text == "××"
    assert sparkline(Envelope()).text == ""


def test_sparkline_compresses_long_series_and_keeps_the_spike():
    values = [1.0] * 10_000
    values[7_777] = 50.0
    spark = sparkline(envelope_of(values), width=40)
    assert len(spark.text) == 40
    assert spark.text.count("█") == 1 and set(spark.text) == {"▁", "█"}
    spike_col = spark.text.index("█")
    first, last = spark.columns[spike_col]
    assert first <= 7_777 <= last
    assert spark.column_of(7_777) == spike_col


@pytest.mark.parametrize("value,text", [
    (None, "—"), (0, "0"), (0.0, "0"), (12, "12"), (0.5, "0.5"), (1234.5678, "1235"), (0.00123456, "0.001235"),
    (12345.0, "1.23e+04"), (1e-7, "1.00e-07"), (-2.5e300, "-2.50e+300"), (math.nan, "nan"), (math.inf, "inf"),
    (-math.inf, "-inf"),
])
def test_fmt_num(value, text):
    assert fmt_num(value) == text


# -- terminal ----------------------------------------------------------------------------------


def test_text_report_shows_findings_layers_loss_checks_and_problems():
    out = render(render_text(diverging_result()))
    assert_fits(out)
    assert "\x1b[" not in out  # no escape codes without a terminal
    text = flat(out)
    assert "Run runs/relu-regression-test" in text
    assert "status: diverged (stopped by nonfinite) · steps: 4 · final loss: —" in text
    assert "Findings (1 error, 2 warnings, 1 info)" in text
    for code in ("nonfinite", "dead-relu", "unnormalized-inputs", "loss-plateau"):
        assert code in text
    assert "fix: data.normalize: standardize (+2 more: nnprobe explain nonfinite)" in text
    assert "fix: model.init: he_normal (+1 more: nnprobe explain dead-relu)" in text
    assert "+inf first appeared at step 3 in the loss (forward pass)" in text
    assert "3 of 4 units of dense1 (75%) output 0 | since step 2" in text
    assert "static" in text
    # per-layer table: activation range, dead fraction and gradient norm at start / worst / end
    dense1 = next(line for line in out.splitlines() if line.startswith(" dense1"))
    assert "[-1.5, 2000]" in dense1 and "0% / 100% @3 / 100%" in dense1
    assert dense1.split()[-3:] == ["inf", "@3", "inf"] and "0.5" in dense1
    dense2 = next(line for line in out.splitlines() if line.startswith(" dense2"))
    assert dense2.split() == ["dense2", "identity", "[-1,", "3]", "n/a", "0.25", "1", "@3", "1"]
    # loss sparkline, with the first finding's step marked under its column
    lines = out.splitlines()
    spark_row = lines.index("loss  ▁▅█×")
    assert lines[spark_row + 1] == "       ^ step 1: first finding (loss-plateau)"
    assert "log scale" in lines[spark_row + 2]
    assert "× = NaN/inf (1 step, first @3)" in text
    assert "FAIL max_severity: error finding nonfinite is above info" in text
    assert "PASS [baseline] final_loss: 0.5 <= 0.6 (baseline 0.6)" in text
    assert "Log problems (1) - line 6: cut off mid-write" in text


def test_text_report_orders_findings_by_severity():
    """Most severe first, then earliest step (static findings first), whatever order they came in."""
    result = diverging_result()
    result.findings.reverse()
    out = render(render_text(result))
    rows = [line.split()[:3] for line in out.splitlines()
            if line.split()[:1] in (["error"], ["warning"], ["info"])]
    assert rows == [["error", "nonfinite", "3"], ["warning", "unnormalized-inputs", "static"],
                    ["warning", "dead-relu", "2"], ["info", "loss-plateau", "1"]]


def test_text_report_without_digest_skips_the_digest_parts():
    out = render(render_text(diverging_result(with_digest=False)))
    assert_fits(out)
    assert "nonfinite" in out and "Layers" not in out and "Loss" not in out


def test_text_report_with_no_findings():
    result = RunResult(run_dir="runs/ok", status="completed", steps=10, final_loss=0.0123, findings=[])
    out = render(render_text(result))
    assert "No findings." in out and "final loss: 0.0123" in out


def test_long_messages_and_paths_still_fit_100_columns():
    result = diverging_result()
    result.run_dir = "runs/" + "a-very-long-run-name-" * 8
    result.findings.append(Finding("exploding-gradients", "warning", 0, "dense1",
                                   "gradient norm " + "1.23e+45 " * 40, {}, ["optimizer.clip_grad_norm: 1.0"]))
    out = render(render_text(result))
    assert_fits(out)
    assert "fix: optimizer.clip_grad_norm: 1.0" in flat(out)
    assert flat(result.run_dir) in flat(out).replace(" ", "")


# -- markdown ----------------------------------------------------------------------------------

EXPECTED_MARKDOWN = """\
### nnprobe: `runs/relu-regression-test`

**status:** diverged (stopped by `nonfinite`) · **steps:** 4 · **final loss:** —

#### Findings (1 error, 2 warnings, 1 info)

| severity | code | step | layer | what happened | first fix |
|---|---|---|---|---|---|
| error | `nonfinite` | 3 | — | +inf first appeared at step 3 in the loss (forward pass) | data.normalize: standardize (+2 more: nnprobe explain nonfinite) |
| warning | `unnormalized-inputs` | static | — | feature 0 spans [0, 99] (mean 49.5, std 28.9) | data.normalize: standardize |
| warning | `dead-relu` | 2 | dense1 | 3 of 4 units of dense1 (75%) output 0 \\| since step 2 | model.init: he_normal (+1 more: nnprobe explain dead-relu) |
| info | `loss-plateau` | 1 | — | loss stuck at 10 for 2 steps |  |

#### Layers

| layer | activation | activation range | dead start/worst/end | ‖gW‖ start | ‖gW‖ worst | ‖gW‖ end |
|---|---|---|---|---|---|---|
| dense1 | relu | [-1.5, 2000] NaN/inf @3 | 0% / 100% @3 / 100% | 0.5 | inf @3 | inf |
| dense2 | identity | [-1, 3] | n/a | 0.25 | 1 @3 | 1 |

_worst = highest value over the run (or the first NaN/inf), @ the step it happened_

#### Loss

`▁▅█×`

log scale; each column shows the highest loss of its steps · steps 0–3 · min 1 @0 · last inf · × = NaN/inf (1 step, first @3) · first finding `loss-plateau` at step 1 (column 2)

#### Checks

- **FAIL** max_severity: error finding nonfinite is above info
- **PASS** [baseline] final_loss: 0.5 <= 0.6 (baseline 0.6)

#### Log problems (1)

- line 6: cut off mid-write (the run was probably killed); skipped
"""


def test_markdown_report_exact():
    assert render_markdown(diverging_result()) == EXPECTED_MARKDOWN


def test_markdown_cells_stay_one_line_and_escape_table_syntax():
    result = diverging_result(with_digest=False)
    result.findings = [Finding("poor-init", "warning", 0, "dense1", "a|b\nc <d>", {}, ["x|y"])]
    md = render_markdown(result)
    row = next(line for line in md.splitlines() if "`poor-init`" in line)
    assert row == "| warning | `poor-init` | 0 | dense1 | a\\|b<br>c &lt;d&gt; | x\\|y |"
    assert "#### Layers" not in md and "#### Loss" not in md


# -- explain -----------------------------------------------------------------------------------


class FakeDetector(Detector):
    code = "fake-code"
    severity = "warning"
    summary = "a made-up pathology for the renderer"
    thresholds = {"fraction": Threshold(0.5, "half the units: CS231n's rule of thumb"),
                  "patience": Threshold(20, "steps it must persist")}
    explanation = Explanation(
        meaning="Units that never fire pass no gradient.",
        causes=["too large a learning rate", "negative bias init"],
        fixes=["optimizer.lr: 0.001", "model.init: he_normal"],
        references=["CS231n, Neural Networks Part 1"],
    )


def test_explain_shows_thresholds_causes_fixes_and_references():
    out = render(render_explain(FakeDetector))
    assert_fits(out)
    for text in ("fake-code", "default severity: warning", "a made-up pathology for the renderer",
                 "Units that never fire pass no gradient.", "detectors.fake-code.fraction", "0.5",
                 "half the units: CS231n's rule of thumb", "detectors.fake-code.patience", "20",
                 "too large a learning rate", "optimizer.lr: 0.001", "CS231n, Neural Networks Part 1"):
        assert text in out
    assert out.index("Causes") < out.index("Fixes") < out.index("References")


@pytest.mark.parametrize("code", all_codes())
def test_explain_every_registered_code_fits(code):
    cls = REGISTRY[code]
    out = render(render_explain(cls))
    assert_fits(out)
    assert code in out and cls.explanation.fixes[0].split()[0] in out


def test_explain_list_has_one_row_per_code():
    out = render(render_explain_list([FakeDetector] + [REGISTRY[c] for c in all_codes()]))
    assert_fits(out)
    assert "fake-code" in out and "a made-up pathology" in out
    for code in all_codes():
        assert code in out


def test_square_brackets_in_run_text_are_printed_not_parsed_as_markup():
    """A check kind rendered as `[baseline]` vanished: rich read it as a style tag."""
    result = diverging_result()
    result.findings = [Finding("poor-init", "warning", 0, "dense1", "weights in [bold]0, 1[/bold] [red]", {},
                               ["model.init: [he_normal]"])]
    text = flat(render(render_text(result)))
    assert "weights in [bold]0, 1[/bold] [red]" in text
    assert "fix: model.init: [he_normal]" in text
    assert "PASS [baseline] final_loss" in text


def test_status_line_and_markdown_quote_the_final_accuracy():
    """The third seed case is about accuracy collapsing: the summary must say what it ended at."""
    start = start_record()
    digest = Digest(start)
    for step, acc in enumerate([0.5, 0.25, 0.333]):
        digest.observe(step_record(start, step, loss=1.0, grad_norm=1.0,
                                   layers=[plain_layer("dense1"), plain_layer("dense2")], accuracy=acc))
    digest.finish(None)
    result = RunResult("runs/acc", "completed", 3, 1.0, [], start=start, digest=digest)
    assert "accuracy: 33%" in render(render_text(result)).splitlines()[1]
    assert "accuracy: 33%" in render_markdown(result)
    no_acc = RunResult("runs/reg", "completed", 3, 1.0, [], start=start, digest=Digest(start))
    assert "accuracy" not in render(render_text(no_acc))
