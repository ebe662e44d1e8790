"""The step log: JSON Lines, one record per line, flushed as it goes (docs/log-schema.md).

JSON has no NaN or infinity, so non-finite floats are written as the strings "NaN",
"Infinity" and "-Infinity" and turned back into floats on reading. Only lines that contain
one of those strings are walked, so a healthy log is read at the speed of `json.loads`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from nnprobe.errors import RunDirError

try:
    import orjson
except ImportError:  # a declared dependency; the stdlib encoder does the same, slower
    orjson = None

SCHEMA_VERSION = 1
_NONFINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode(value: Any) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        return _NONFINITE_TEXT.get(value, value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


# The fallback encoder, for a record orjson cannot take. One encoder for every line (json.dumps builds
# a new one per call); records are trees built by nnprobe, never cyclic, and skipping the
# circular-reference bookkeeping halves the encoding time.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), check_circular=False)

# orjson writes a NaN or an infinity as null, like a None. These keys hold None or a finite value, never
# a non-finite float: a null under one of them is a None. Any other null sends the record through the
# walk that tells the two apart.
_NONE_ONLY_NULLS = (b'"nonfinite":null', b'"loss_in":null', b'"sat_frac":null')


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_has_nonfinite, value.values()))
    if isinstance(value, (list, tuple)):
        return any(map(_has_nonfinite, value))
    return False


def _orjson_line(record: dict) -> Optional[bytes]:
    try:
        out = orjson.dumps(record)
    except TypeError:  # a numpy scalar, a huge int, a non-string key: the stdlib encoder takes those
        return None
    nulls = out.count(b"null")
    if nulls and nulls != sum(map(out.count, _NONE_ONLY_NULLS)) and _has_nonfinite(record):
        out = orjson.dumps(_encode(record))
    return out


def encode_line(record: dict) -> bytes:
    """One line of strict JSON, without its newline. orjson (Ryu's shortest round-trip digits) takes
    a record ~15x faster than the stdlib encoder, whose float repr is most of a probed step's record
    cost; both write the same float64 values bit for bit."""
    if orjson is not None:
        out = _orjson_line(record)
        if out is not None:
            return out
    try:
        text = _ENCODER.encode(record)
    except ValueError:
        text = _ENCODER.encode(_encode(record))
    return text.encode("utf-8")


def dumps(record: dict) -> str:
    return encode_line(record).decode("utf-8")


def loads(line: str) -> dict:
    record = json.loads(line)
    # A capital N or I is rare in a record (names and keys are lower case) and one-character scans are
    # ~50x cheaper than the substring searches, which then settle whether the decoding walk is needed.
    if ("N" in line or "I" in line) and ('"NaN"' in line or 'Infinity"' in line):
        record = _decode(record)
    return record


class LogWriter:
    """Appends records to steps.jsonl, each line in one write() of an unbuffered file, so a killed run
    leaves whole lines and nothing waits in a buffer."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "xb", buffering=0)

    def write(self, record: dict) -> None:
        line = encode_line(record) + b"\n"
        done = self._fh.write(line)
        while done < len(line):  # a regular file takes it all at once, short of a full disk or a signal
            done += self._fh.write(memoryview(line)[done:])

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "LogWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


MAX_PROBLEMS = 50


@dataclass
class LogContents:
    """What a streaming read found besides the step records themselves (bounded in size)."""

    start: Optional[dict] = None
    end: Optional[dict] = None
    problem_list: list[str] = field(default_factory=list)
    n_problems: int = 0
    n_steps: int = 0
    last_step: Optional[dict] = None

    def add_problem(self, text: str) -> None:
        self.n_problems += 1
        if len(self.problem_list) < MAX_PROBLEMS:
            self.problem_list.append(text)

    @property
    def problems(self) -> list[str]:
        hidden = self.n_problems - len(self.problem_list)
        return self.problem_list + ([f"... and {hidden} more unreadable lines skipped"] if hidden else [])


def iter_records(path: Path, contents: LogContents) -> Iterator[dict]:
    """Yield step records in order; the start/end records and any unreadable lines go to `contents`.

    Memory stays flat: one line at a time. A line that is not a JSON object with a known
    `type`, or a last line cut off mid-write, is skipped and described in `contents.problems`.
    """
    try:
        fh = open(path, "r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise RunDirError(f"{path}: no step log here; is this a run directory made by `nnprobe train`?") from None
    except OSError as exc:
        raise RunDirError(f"{path}: the step log cannot be read ({exc}).") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if line[0] != "{" and not line.strip():  # a record line starts with "{": no strip() copy for it
                continue
            try:
                record = loads(line)
            except ValueError as exc:
                if not line.endswith("\n"):
                    contents.add_problem(f"line {lineno}: cut off mid-write (the run was probably killed); skipped")
                else:
                    contents.add_problem(f"line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}); skipped")
                continue
            kind = record.get("type") if isinstance(record, dict) else None
            if kind == "step":
                if not isinstance(record.get("step"), int):
                    contents.add_problem(f"line {lineno}: step record without an integer 'step'; skipped")
                    continue
                if contents.start is None:
                    contents.add_problem(f"line {lineno}: step record before the start record; skipped")
                    continue
                contents.n_steps += 1
                contents.last_step = record
                yield record
            elif kind == "start":
                if contents.start is not None:
                    contents.add_problem(f"line {lineno}: a second start record; skipped")
                    continue
                schema = record.get("schema")
                if isinstance(schema, int) and schema > SCHEMA_VERSION:
                    raise RunDirError(
                        f"{path}: log schema {schema} is newer than this nnprobe reads ({SCHEMA_VERSION}); "
                        "upgrade nnprobe to read it."
                    )
                contents.start = record
            elif kind == "end":
                contents.end = record
            else:
                contents.add_problem(f"line {lineno}: not a start, step or end record; skipped")
