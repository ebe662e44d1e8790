"""A write to the run directory that failed (a full disk, a file-size limit, a read-only or failing
file system): what every run does about it, whoever owns the loop.

The records already written stay whole and readable; the log gets an end record and meta.json says
`failed` where the file system still allows it; the error that is raised names the file, the
cause, how many step records survive, and what to do.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

from nnprobe.errors import RunDirError
from nnprobe.train.rundir import now, write_json
from nnprobe.train.runlog import LogWriter

#: what a full disk, a file-size limit, a quota or a read-only or failing file system raise
WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRORS


def record_failure(run_dir: Path, meta: dict, writer: Optional[LogWriter], steps: int, error: str) -> None:
    """Best effort after a failed write: end the log and mark meta.json failed, never hiding the first error."""
    if writer is not None:
        try:
            writer.discard_held()
            writer.write({"type": "end", "status": "failed", "steps": steps, "final_loss": None, "stopped_by": None})
        except (OSError, ValueError):  # ValueError: the failed write was the one that closed the file
            pass
        finally:
            writer.abandon()
    meta.update(status="failed", ended=now(), steps=steps, error=error)
    try:
        write_json(run_dir / "meta.json", meta)
    except OSError:
        pass


def could_not_write(run_dir: Path, exc: OSError, written: int, remedy: str) -> RunDirError:
    """The one-paragraph error of a failed write; `remedy`: where to choose another directory."""
    name = f": {Path(exc.filename).name}" if exc.filename else ""
    return RunDirError(
        f"{run_dir}: could not write the run ({exc.strerror or exc}{name}); training stopped. "
        f"{written} step records are complete in steps.jsonl and `nnprobe diagnose {run_dir}` reads them. "
        f"Free disk space, raise the file-size limit, or {remedy}."
    )
