"""The HTML report: self-contained, one SVG per plot, findings on the loss plot, deterministic."""

from __future__ import annotations

import math
import re
import sys
from html.parser import HTMLParser

import pytest

from nnprobe.diagnose.digest import Digest
from nnprobe.errors import NnprobeError
from nnprobe.findings import Finding
from nnprobe.result import Check, RunResult

pytest.importorskip("matplotlib")

from nnprobe.reports.html import render_html  # noqa: E402
from conftest import plain_layer, step_record, start_record as _start_record  # noqa: E402

# -- records as docs/log-schema.md writes them ------------------------------------------------


def start_record(layers=(("dense1", 2, 4, "relu"), ("dense2", 4, 3, "tanh"), ("dense3", 3, 1, "identity")),
                 task="regression"):
    return _start_record(list(layers), task=task, total_steps=50, optimizer={"lr": 0.5})


def diverging_result(n_steps: int = 50, accuracy: bool = False) -> RunResult:
    """ReLU units die and the loss goes to inf at the last step; three findings at two steps, one static."""
    start = start_record()
    digest = Digest(start)
    for step in range(n_steps):
        last = step == n_steps - 1
        loss = math.inf if last else 2.0 * 0.95 ** step + (5.0 if step == 30 else 0.0)
        grad = 1e-2 * 1.3 ** step
        extra = {"accuracy": min(1.0, step / n_steps)} if accuracy else {}
        digest.observe(step_record(start, step, loss=loss, grad_norm=math.nan if last else grad, layers=[
            plain_layer("dense1", dead=min(4, step // 10), a_min=0.0, a_max=1.5 ** step, grad=grad,
                        ratio=1e-3 * 1.1 ** step, nan=1 if last else 0),
            plain_layer("dense2", a_min=-0.99, a_max=0.99, grad=grad / 100, ratio=0.0 if step == 0 else 1e-4),
            plain_layer("dense3", a_min=-3.0, a_max=float(step), grad=None if last else grad * 2)],
            nonfinite={"pass": "forward", "tensor": "loss", "layer": None} if last else None, **extra))
    end = {"type": "end", "status": "diverged", "steps": n_steps, "final_loss": None, "stopped_by": "nonfinite"}
    digest.finish(end)
    findings = [
        Finding("nonfinite", "error", n_steps - 1, None, "+inf first appeared in the loss", {},
                ["data.normalize: standardize"]),
        Finding("dead-relu", "warning", 20, "dense1", "2 of 4 units <dead> & silent", {},
                ["model.init: he_normal"]),
        Finding("exploding-gradients", "warning", 20, None, "gradient norm grew 1.3x per step", {},
                ["optimizer.clip_grad_norm: 1.0"]),
        Finding("unnormalized-inputs", "warning", None, None, "inputs far from unit scale", {},
                ["data.normalize: standardize"]),
    ]
    return RunResult(run_dir="runs/synthetic-test", status="diverged", steps=n_steps, final_loss=None,
                     findings=findings, start=start, digest=digest, stopped_by="nonfinite",
                     checks=[Check("max_severity", False, "error above info")],
                     log_problems=["line 9: not valid JSON (Expecting value at column 1); skipped"])


class Page(HTMLParser):
    """What the tests look at: every tag with its attributes, and the text inside each <svg> figure."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.figures: list[dict] = []  # {"id": figure id, "svgs": count, "text": [...]}
        self._figure = None
        self._in_svg = 0
        self.body_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "figure":
            self._figure = {"id": attrs.get("id"), "svgs": 0, "text": []}
            self.figures.append(self._figure)
        elif tag == "svg":
            self._in_svg += 1
            if self._figure is not None:
                self._figure["svgs"] += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self._in_svg -= 1
        elif tag == "figure":
            self._figure = None

    def handle_data(self, data):
        if self._in_svg and self._figure is not None:
            self._figure["text"].append(data)
        elif not self._in_svg:
            self.body_text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def svg_text(figure: dict) -> str:
    return " ".join(" ".join(figure["text"]).split())


@pytest.fixture(scope="module")
def report() -> str:
    return render_html(diverging_result())


def test_report_is_self_contained(report):
    page = parse(report)
    assert report.startswith("<!DOCTYPE html>")
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action"):
                assert value.startswith("#"), f"<{tag} {name}={value!r}> points outside the page"
    without_namespaces = re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", report)  # XML namespace names, never fetched
    assert "://" not in without_namespaces
    assert "@import" not in report


def test_one_svg_per_plot(report):
    page = parse(report)
    assert [f["id"] for f in page.figures] == ["fig-loss", "fig-gradients", "fig-activations", "fig-update-ratio"]
    assert all(f["svgs"] == 1 for f in page.figures)
    assert sum(1 for tag, _ in page.tags if tag == "svg") == 4


def test_findings_are_labelled_on_the_loss_plot(report):
    loss = svg_text(parse(report).figures[0])
    assert "nonfinite @49" in loss
    assert "exploding-gradients, dead-relu @20" in loss  # two findings at one step share one marker
    assert "unnormalized-inputs" not in loss  # static: no step to mark


def test_plots_show_the_guide_line_and_layer_names(report):
    figures = {f["id"]: svg_text(f) for f in parse(report).figures}
    assert "1e-3 guide" in figures["fig-update-ratio"]
    for name in ("dense1", "dense2", "dense3"):
        assert name in figures["fig-gradients"]
    assert "dense1" in figures["fig-activations"] and "Dead units" in figures["fig-activations"]


def test_tables_and_text_are_escaped(report):
    page = parse(report)
    text = " ".join(" ".join(page.body_text).split())
    assert "2 of 4 units <dead> & silent" in text  # decoded back from &lt;dead&gt; &amp;
    assert "<dead>" not in report
    for code in ("nonfinite", "dead-relu", "exploding-gradients", "unnormalized-inputs"):
        assert code in text
    assert "fix: optimizer.clip_grad_norm: 1.0" in text
    assert "FAIL" in text and "line 9: not valid JSON" in text
    assert "0% / 100% @40 / 100%" in text


def test_element_ids_are_unique_across_figures(report):
    ids = [attrs["id"] for _, attrs in parse(report).tags if "id" in attrs]
    assert len(ids) == len(set(ids))


def test_same_run_renders_identically(report):
    again = render_html(diverging_result())
    assert again == report
    assert not re.search(r"20\d\d-\d\d-\d\d", report)  # no dates embedded


def test_accuracy_panel_when_the_log_has_accuracy():
    page = parse(render_html(diverging_result(accuracy=True)))
    assert "Accuracy" in svg_text(page.figures[0])
    assert len(page.figures) == 4


def test_run_that_diverged_at_step_zero():
    start = start_record()
    digest = Digest(start)
    digest.observe(step_record(start, 0, loss=math.nan, grad_norm=math.nan, layers=[
        plain_layer(name, a_min=None, a_max=None, grad=None, ratio=None, nan=3)
        for name in ("dense1", "dense2", "dense3")],
        nonfinite={"pass": "forward", "tensor": "pre-activation", "layer": "dense1"}))
    digest.finish({"type": "end", "status": "diverged", "steps": 1, "final_loss": None, "stopped_by": "nonfinite"})
    result = RunResult("runs/zero", "diverged", 1, None,
                       [Finding("nonfinite", "error", 0, "dense1", "NaN at step 0", {}, [])],
                       start=start, digest=digest, stopped_by="nonfinite")
    page = parse(render_html(result))
    assert len(page.figures) == 4
    texts = {f["id"]: svg_text(f) for f in page.figures}
    assert "no finite loss was recorded" in texts["fig-loss"] and "nonfinite @0" in texts["fig-loss"]
    assert "no finite gradient norm was recorded" in texts["fig-gradients"]
    assert "no finite update ratio was recorded" in texts["fig-update-ratio"]


def test_loss_only_run_has_one_plot():
    """probes.enabled: false writes light records only: the loss plot, no per-layer plots."""
    start = start_record()
    digest = Digest(start)
    for step in range(20):
        digest.observe(step_record(start, step, loss=1.0 / (step + 1), grad_norm=1.0, full=False))
    digest.finish(None)
    page = parse(render_html(RunResult("runs/plain", "interrupted", 20, 0.05, [], start=start, digest=digest)))
    assert [f["id"] for f in page.figures] == ["fig-loss"]


def test_no_digest_means_no_plots():
    html = render_html(RunResult("runs/nothing", "failed", 0, None, [], start=start_record()))
    assert "<svg" not in html and "no plots" in html


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(NnprobeError, match=re.escape("pip install 'nnprobe[plot]'")):
        render_html(diverging_result(n_steps=3))
