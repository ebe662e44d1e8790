"""The document formats a finished run is printed in (`diagnose --format`): a registry, name -> renderer.

Each renderer takes a finished RunResult and the `--fail-on` threshold (junit marks failures by it)
and returns the whole document as text, newline-terminated; it opens no file and prints nothing.
`text`, the terminal rendering, is a rich renderable that cli.py prints (reports.terminal.render_text).
Adding a format is one function here plus its test (docs/contributing.md).
"""

from __future__ import annotations

import json
from typing import Callable

from nnprobe.result import RunResult


def _json(result: RunResult, fail_on: str) -> str:
    """The SPEC.md document, identical for train and diagnose (non-finite numbers are already null)."""
    return json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"


def _markdown(result: RunResult, fail_on: str) -> str:
    from nnprobe.reports.terminal import render_markdown

    return render_markdown(result)


def _junit(result: RunResult, fail_on: str) -> str:
    from nnprobe.reports.junit import render_junit

    return render_junit(result, fail_on=fail_on)


#: format name -> renderer (the renderers import their modules when called: the CLI starts fast)
DOCUMENTS: dict[str, Callable[[RunResult, str], str]] = {"json": _json, "markdown": _markdown, "junit": _junit}
