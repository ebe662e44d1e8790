"""JUnit XML and GitHub workflow annotations: a run's verdict in the forms CI systems read.

JUnit layout (one `testsuite` per run, inside `testsuites`):

- every detector that ran is a test case `nnprobe.detectors / CODE` that passes when the run has
  no finding of that code; each finding of it is its own test case `CODE [layer]`, failing when
  its severity is at or above `fail_on` (passing, with the finding in `system-out`, below it);
- every `expect:` line and every baseline comparison is a test case `nnprobe.expect / NAME` or
  `nnprobe.baseline / NAME`, failing when the check failed.

With fail_on "never" nothing fails, matching the exit status. Counts on `testsuite` and
`testsuites` are computed from the cases actually written.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Optional

from nnprobe.findings import Finding, severity_rank
from nnprobe.reports.terminal import printable
from nnprobe.result import RunResult

ANNOTATION_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


def _detector_codes(result: RunResult) -> list[str]:
    """The codes whose detectors watched this run, as the result says; every registered one that watches runs
    when the result does not know (built by hand)."""
    if result.detector_codes is not None:
        return list(result.detector_codes)
    from nnprobe.diagnose.detectors import REGISTRY, all_codes, watches_runs

    return [c for c in all_codes() if watches_runs(REGISTRY[c])]


def _run_name(result: RunResult) -> str:
    return str(result.start.get("name") or Path(result.run_dir).name or "run")


def _duration(result: RunResult) -> Optional[float]:
    d = result.meta.get("duration_s")
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def _finding_title(f: Finding) -> str:
    return f"{f.code} [{f.layer}]" if f.layer else f.code


def _where(f: Finding) -> str:
    parts = ["static (before training)" if f.step is None else f"step {f.step}"]
    if f.layer:
        parts.append(f"layer {f.layer}")
    return ", ".join(parts)


def finding_text(f: Finding) -> str:
    """The body of a failure: message, where, evidence and fixes, one per line."""
    lines = [f"{f.code} ({f.severity}) at {_where(f)}", f.message]
    if f.evidence:
        lines.append("evidence: " + json.dumps(f.evidence, sort_keys=True, default=str, allow_nan=True))
    if f.fixes:
        lines.append("fixes:")
        lines += [f"  - {fix.shown()}" for fix in f.fixes]
    return "\n".join(lines)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", {"classname": classname, "name": name, "time": "0"})


def junit_suite(result: RunResult, *, fail_on: str = "error", name: Optional[str] = None) -> ET.Element:
    """One `testsuite` element for a run (see the module docstring for the layout)."""
    enforce = fail_on != "never"
    threshold = severity_rank(fail_on)
    suite = ET.Element("testsuite", {"name": name or f"nnprobe {_run_name(result)}"})
    props = ET.SubElement(suite, "properties")
    loss = result.final_loss if result.final_loss is not None and math.isfinite(result.final_loss) else None
    for key, value in (("run_dir", result.run_dir), ("status", result.status), ("steps", result.steps),
                       ("final_loss", loss), ("stopped_by", result.stopped_by), ("fail_on", fail_on)):
        ET.SubElement(props, "property", {"name": key, "value": "" if value is None else str(value)})

    by_code: dict[str, list[Finding]] = {}
    for f in result.findings:
        by_code.setdefault(f.code, []).append(f)
    skipped = {s.code: s for s in result.skipped}
    codes = _detector_codes(result)
    codes += [c for c in (*by_code, *skipped) if c not in codes]
    for code in codes:
        found = by_code.get(code, [])
        if code in skipped:  # a recorded loop did not hand over what it reads: not a pass
            ET.SubElement(_case(suite, "nnprobe.detectors", code), "skipped", {"message": skipped[code].text})
        elif not found:
            _case(suite, "nnprobe.detectors", code)
            continue
        for f in found:
            case = _case(suite, "nnprobe.detectors", _finding_title(f))
            text = finding_text(f)
            if enforce and severity_rank(f.severity) >= threshold:
                failure = ET.SubElement(case, "failure", {"message": _one_line(f.message), "type": f.severity})
                failure.text = text
            else:
                out = ET.SubElement(case, "system-out")
                out.text = f"{text}\n(below --fail-on {fail_on}: reported, not failed)"
    for check in result.checks:
        case = _case(suite, f"nnprobe.{check.kind}", check.name)
        if not check.ok and enforce:
            failure = ET.SubElement(case, "failure", {"message": _one_line(check.message), "type": check.kind})
            failure.text = f"{check.name}: {check.message}"
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"{check.name}: {check.message}"
    _count(suite, _duration(result))
    return suite


def _count(suite: ET.Element, duration: Optional[float] = None) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", f"{duration:.3f}" if duration is not None else "0")


def error_suite(name: str, message: str, *, classname: str = "nnprobe.config") -> ET.Element:
    """A testsuite for a config that could not be checked at all (invalid, or crashed): one case with an `error`."""
    suite = ET.Element("testsuite", {"name": f"nnprobe {name}"})
    case = _case(suite, classname, "config")
    err = ET.SubElement(case, "error", {"message": _one_line(message), "type": "invalid"})
    err.text = message
    _count(suite)
    return suite


def render_suites(suites: Iterable[ET.Element]) -> str:
    """A `testsuites` document with totals summed over its suites."""
    root = ET.Element("testsuites", {"name": "nnprobe"})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    time = 0.0
    for suite in suites:
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        time += float(suite.get("time", "0") or 0)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{time:.3f}")
    _xml_safe(root)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


#: a line that GitHub Actions would run as a workflow command (`::error::...`), should the XML reach its log
_COMMAND_LINE = re.compile(r"^(\s*):(?=:)", re.MULTILINE)


def _safe_text(text: str) -> str:
    """Printable (XML 1.0 holds no control characters) and no line starting with '::' (a zero-width space between)."""
    return _COMMAND_LINE.sub("\\1:\u200b", printable(text))


def _xml_safe(root: ET.Element) -> None:
    """A config name with \\x01 made the file unreadable: every text and attribute is made safe, control
    characters shown escaped (\\x01) the way the terminal shows them."""
    for element in root.iter():
        if element.text:
            element.text = _safe_text(element.text)
        if element.tail:
            element.tail = _safe_text(element.tail)
        for key, value in element.attrib.items():
            element.set(key, _safe_text(value))


def render_junit(result: RunResult, *, fail_on: str = "error") -> str:
    """JUnit XML for one run: detectors, expectations and baseline comparisons as test cases."""
    return render_suites([junit_suite(result, fail_on=fail_on)])


# ---------------------------------------------------------------- GitHub workflow annotations


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, title: str, message: str, *, file: Optional[str] = None) -> str:
    """One workflow command line: `::error file=F,title=T::message` with GitHub's escaping."""
    props = []
    if file:
        props.append(f"file={_escape_property(file)}")
    props.append(f"title={_escape_property(title)}")
    return f"::{level} {','.join(props)}::{_escape_data(message)}"


def _config_file(result: RunResult) -> Optional[str]:
    path = result.meta.get("config_file")
    return str(path) if isinstance(path, str) and path and not Path(path).is_absolute() else None


def github_annotations(result: RunResult, *, config_file: Optional[str] = None) -> list[str]:
    """Workflow commands for GitHub Actions: a finding as ::error/::warning/::notice, a failed check as ::error.

    Each names the config file (as given on the command line, when it was relative) so that the
    annotation is attached to it in a pull request. GitHub reads these from stdout (stderr works too).
    """
    file = config_file or _config_file(result)
    lines = []
    for f in result.findings:
        level = ANNOTATION_LEVEL.get(f.severity, "warning")
        where = "static" if f.step is None else f"step {f.step}"
        if f.layer:
            where += f", {f.layer}"
        body = f"{f.message} [{where}; {result.run_dir}]"
        if f.fixes:
            body += "\n" + "\n".join(f"fix: {fix.shown()}" for fix in f.fixes)
        lines.append(annotation(level, f"nnprobe {f.code}", body, file=file))
    for c in result.checks:
        if not c.ok:
            lines.append(annotation("error", f"nnprobe {c.name}", f"{c.message} [{result.run_dir}]", file=file))
    return lines


__all__ = ["annotation", "error_suite", "finding_text", "github_annotations", "junit_suite", "render_junit",
           "render_suites"]
