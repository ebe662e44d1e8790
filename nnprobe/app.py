"""Use-cases shared by the command line and `check`: train one config, and its static findings.

The CLI only parses arguments and prints; `check` (and every later front door) calls the same
functions, so that a config behaves alike whichever command ran it.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Callable, Iterator, Optional

from nnprobe.config import Config
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.findings import Finding
from nnprobe.nn.activations import Identity
from nnprobe.result import RunResult


def user_activation(config: Config, config_dir: Path, check: bool = True):
    """Load a 'module:name' activation (explicitly configured, never by a YAML tag): (activation, user_code)."""
    if ":" not in config.model.activation:
        return None, []
    from nnprobe.nn.user_activations import prepare_user_activation

    return prepare_user_activation(config, config_dir, check=check)


def train_config(config: Config, *, config_path: Optional[Path] = None, out_dir: Optional[Path] = None,
                 runs_root: Path = Path("runs"), progress: Optional[Callable[[int, int, float], None]] = None,
                 check_user_code: bool = True, config_dir: Optional[Path] = None) -> RunResult:
    """Train one loaded config into a fresh run directory: what `train`, `check`, `fix` and `map` run.

    User activation modules resolve against `config_dir` (default: the config file's folder).
    """
    from nnprobe.train.run import train

    if config_dir is None:
        config_dir = Path(config_path).parent if config_path is not None else Path(".")
    with user_output_to_stderr():
        hidden, user_code = user_activation(config, config_dir, check=check_user_code)
        return train(config, out_dir, progress=progress, config_path=config_path, runs_root=runs_root,
                     hidden_activation=hidden, user_code=user_code)


@contextmanager
def user_output_to_stderr() -> Iterator[None]:
    """What user code prints goes to stderr: stdout carries only nnprobe's report (one JSON document)."""
    with redirect_stdout(sys.stderr):
        yield


def start_record_for(config: Config, source: str = "config") -> dict:
    """The start record `train` would write, built without training (data generated, model initialised)."""
    from nnprobe.train.loop import Trainer
    from nnprobe.train.run import load_data

    data = load_data(config, source)
    placeholder = Identity() if ":" in config.model.activation else None
    return Trainer(config, data, hidden_activation=placeholder).start_record()


def static_findings(config: Config, source: str = "config") -> list[Finding]:
    """The findings that follow from a config and its data before any training step."""
    return DetectorSuite(config, start_record_for(config, source)).static_findings()
