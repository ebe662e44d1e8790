"""The run directory: a fresh folder per run, never one that already holds a run, and its JSON files."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

import nnprobe
from nnprobe.config import Config
from nnprobe.errors import RunDirError
from nnprobe.probes import kernel


#: the environment variables that set how many threads NumPy's BLAS uses (OpenBLAS, OpenMP builds, MKL)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def new_run_dir(config: Config, out_dir: Optional[Path], runs_root: Path = Path("runs"),
                argument: str = "--out") -> Path:
    """A fresh directory for this run; never one that already holds a run. `argument`: what the caller
    calls `out_dir` in its messages (the CLI's --out; a library's own argument)."""
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists():
            if not out_dir.is_dir():
                raise RunDirError(f"{argument} {out_dir}: exists and is not a directory; choose a new directory name.")
            if any(out_dir.iterdir()):
                fresh = ", or leave --out off to get a fresh one under runs/" if argument == "--out" else ""
                raise RunDirError(
                    f"{argument} {out_dir}: the directory is not empty; nnprobe never overwrites a run. "
                    f"Choose a new directory{fresh}."
                )
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"{argument} {out_dir}: cannot create the directory ({exc.strerror}).") from None
        return out_dir
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{runs_root}: cannot create the runs directory ({exc.strerror}); use --out DIR.") from None
    return fresh_dir(runs_root, f"{config.name}-{stamp}")


def fresh_dir(parent: Path, stem: str) -> Path:
    """parent/stem (else stem-2, stem-3, ...): a directory this call created, never one that already existed."""
    for i in range(1, 1000):
        candidate = parent / (stem + (f"-{i}" if i > 1 else ""))
        if candidate.parent != parent or candidate.name in ("", ".", ".."):  # config validation refuses such names
            raise RunDirError(f"{stem!r}: cannot name a directory under {parent}; use letters, digits, '-', '_'.")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(
                f"{candidate}: cannot create the run directory ({exc.strerror}); choose another name or use --out DIR."
            ) from None
    raise RunDirError(f"{parent}: could not find a free directory name for {stem!r}.")


def next_free_dir(path: Path) -> Path:
    """`path` itself when it is missing or empty, else the first free `path-2`, `path-3`, ...: never a used one."""
    path = Path(path)
    for i in range(1, 1000):
        candidate = path if i == 1 else path.with_name(f"{path.name}-{i}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()):
                return candidate
        except OSError as exc:
            raise RunDirError(f"{candidate}: cannot create the run directory ({exc.strerror}).") from None
    raise RunDirError(f"{path}: could not find a free run directory name next to it.")


def write_json(path: Path, doc: dict) -> None:
    """Write `doc` whole or not at all (a temporary file renamed over the old one); no .tmp is left behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def metadata(config: Config, config_path: Optional[Path], user_code: list[dict]) -> dict:
    return {
        "nnprobe": nnprobe.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        # which code took the statistics: the one-pass C kernel or NumPy passes (the same numbers)
        "stats": "kernel" if kernel.in_use() else "numpy",
        # the step log is bit-identical for a given BLAS thread count (docs/robustness.md): record what was asked for
        "blas_threads": {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES},
        "name": config.name,
        "seed": config.seed,
        "config_file": str(config_path) if config_path else None,
        "status": "running",
        "started": now(),
        "ended": None,
        "duration_s": None,
        "steps": 0,
        "user_code": user_code,
    }


