"""The step log: JSON Lines, one record per line, written in small batches (docs/log-schema.md).

JSON has no NaN or infinity, so non-finite floats are written as the strings "NaN",
"Infinity" and "-Infinity" and turned back into floats on reading. Only lines that contain
one of those strings are walked, so a healthy log is read at the speed of `json.loads`.
"""

from __future__ import annotations

import json
import math
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from nnprobe.errors import RunDirError
from nnprobe.probes.records import SCHEMA_VERSION  # the writer's version, which readers check

try:
    import orjson
except ImportError:  # a declared dependency; the stdlib encoder does the same, slower
    orjson = None

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

# orjson writes a NaN or an infinity as null, like a None. These are the places where a healthy step
# record holds None (a probes-off record's grad_norm too): when the line has exactly as many nulls as
# there are Nones here, none of its floats was non-finite. Any other null (or the word inside a name)
# sends the record through the walk that tells the two apart.
def _known_nones(record: dict) -> int:
    get = record.get
    count = (get("nonfinite", 0) is None) + (get("loss_in", 0) is None) + (get("grad_norm", 0) is None)
    layers = get("layers")
    if type(layers) is list:
        for layer in layers:
            z = layer.get("z") if type(layer) is dict else None
            if type(z) is dict and "sat_frac" in z and z["sat_frac"] is None:
                count += 1
    return count


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
    nulls = out.count(b"null")  # one scan (~1 ns a byte): a line is 1.5-3 KB
    if nulls and nulls != _known_nones(record) and _has_nonfinite(record):
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


#: step records held back and written together (one write(), the encoder run warm) ...
HOLD_RECORDS = 32
#: ... or fewer, once the oldest of them has waited this long: a kill -9 loses at most this much
HOLD_SECONDS = 1.0


class LogWriter:
    """Appends records to steps.jsonl, healthy step records in batches of up to HOLD_RECORDS.

    A probed step of a small network spends ~20 us on its own line (encoding it with caches
    cold from the step, then a write() system call); 32 lines encoded back to back and written
    at once cost a tenth of that. Records are held by reference: nnprobe never changes a
    record once written. What is held goes out at once with any record that is not a healthy
    step (the start and end records, a step with a non-finite value), at the first write
    HOLD_SECONDS after the oldest held one, and
    on close, which the run does on every way it ends (completed, stopped, Ctrl-C, SIGTERM, an
    exception). Only a process killed outright (SIGKILL, out of memory) loses what was held.
    Each batch is whole lines, so a killed run still leaves a log whose every complete line parses.
    """

    def __init__(self, path: Path, hold: int = HOLD_RECORDS, hold_seconds: float = HOLD_SECONDS) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "xb", buffering=0)
        self.hold = max(1, hold)
        self.hold_seconds = hold_seconds
        self._held: list[dict] = []
        self._deadline = 0.0
        self.steps_written = 0  # step records whose whole batch reached the file
        self._cut = False  # the file ends in part of a line
        self._done = 0

    def write(self, record: dict, flush: bool = True) -> None:
        """Add one record; `flush=False` leaves a full batch for the caller to flush (the bench times it apart)."""
        held = self._held
        held.append(record)
        if not flush:
            return
        if len(held) == 1:
            self._deadline = time.monotonic() + self.hold_seconds
        if (len(held) >= self.hold or record.get("nonfinite") is not None or record.get("type") != "step"
                or time.monotonic() >= self._deadline):
            self.flush()

    @property
    def full(self) -> bool:
        return len(self._held) >= self.hold

    def flush(self) -> None:
        """Everything held, now, in one write()."""
        if not self._held:
            return
        held, self._held = self._held, []
        lines: list[bytes] = []
        try:
            for record in held:
                lines.append(encode_line(record))
        finally:  # a record that cannot be encoded still leaves the ones before it on disk
            if lines:
                self._done = 0
                try:
                    self._write_all(b"\n".join(lines) + b"\n")
                finally:  # after a failed write, count the lines that reached the file whole
                    whole, end = 0, 0
                    for line in lines:
                        end += len(line) + 1
                        if end > self._done:
                            break
                        whole += 1
                    self.steps_written += sum(1 for r in held[:whole] if r.get("type") == "step")

    def _write_all(self, data: bytes) -> None:
        """Write all of `data`; `_done` says how much of it reached the file, also when a write fails."""
        prefix = b"\n" if self._cut else b""  # a failed write left half a line: end it, so the lines after it parse
        data = prefix + data
        done = 0
        try:
            done = self._fh.write(data)
            while done < len(data):  # a regular file takes it all at once, short of a full disk or a signal
                done += self._fh.write(memoryview(data)[done:])
        finally:
            self._cut = 0 < done < len(data) or (self._cut and done == 0)
            self._done = max(done - len(prefix), 0)

    def discard_held(self) -> None:
        """Forget the records not yet written (after a failed write, so that the end record can still go out)."""
        self._held = []

    def abandon(self) -> None:
        """Close the file without writing what is held."""
        self._held = []
        if not self._fh.closed:
            self._fh.close()

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self.flush()
            finally:
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


#: the start record's fields the detectors and the digest read, with the JSON types they must have
_START_FIELDS: dict[str, tuple[type, ...]] = {
    "layers": (list,), "loss": (dict, type(None)), "optimizer": (dict, type(None)), "data": (dict, type(None)),
    "name": (str, type(None)),
    "dtype": (str, type(None)), "total_steps": (int, type(None)), "task": (str, type(None)),
}
_LAYER_FIELDS: dict[str, tuple[type, ...]] = {"name": (str,), "units": (int,), "fan_in": (int,),
                                             "activation": (str, type(None))}  # None: a recorded loop did not say


def start_record_problem(record: dict) -> Optional[str]:
    """What makes a start record unusable (a crafted or damaged log), or None."""
    for key, types in _START_FIELDS.items():
        if key in record and not isinstance(record[key], types):
            return f"its {key!r} is {_kind(record.get(key))}, expected {' or '.join(_json_name(t) for t in types)}"
    for i, layer in enumerate(record.get("layers", [])):
        if not isinstance(layer, dict):
            return f"layer {i} is {_kind(layer)}, expected an object"
        for key, types in _LAYER_FIELDS.items():  # present, even where null is allowed (the readers index them)
            if key not in layer or not isinstance(layer[key], types) or isinstance(layer[key], bool):
                return f"layer {i}'s {key!r} is {_kind(layer.get(key))}, expected {_json_name(types[0])}"
    return None


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a JSON {_json_name(type(value))}"


def _json_name(t: type) -> str:
    return {list: "array", dict: "object", str: "string", int: "integer", float: "number", type(None): "null",
            bool: "boolean"}.get(t, t.__name__)


def _open_log(path: Path):
    """The log opened for reading; a FIFO or a device is refused (reading it would hang or never end)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise RunDirError(f"{path}: is not a regular file (a pipe or a device?); a step log is a file.")
        return open(path, "r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise RunDirError(f"{path}: no step log here; is this a run directory made by `nnprobe train`?") from None
    except OSError as exc:
        raise RunDirError(f"{path}: the step log cannot be read ({exc.strerror or exc}).") from None


def iter_records(path: Path, contents: LogContents) -> Iterator[dict]:
    """Yield step records in order; the start/end records and any unreadable lines go to `contents`.

    Memory stays flat: one line at a time. A line that is not a JSON object with a known
    `type`, or a last line cut off mid-write, is skipped and described in `contents.problems`.
    """
    fh = _open_log(path)
    try:
        with fh:
            yield from _records(fh, path, contents)
    except OSError as exc:
        raise RunDirError(f"{path}: reading the step log failed ({exc.strerror or exc}).") from None


def _records(fh, path: Path, contents: LogContents) -> Iterator[dict]:
    last_step = -1
    for lineno, line in enumerate(fh, 1):
        if line[0] != "{" and not line.strip():  # a record line starts with "{": no strip() copy for it
            continue
        try:  # inline, not a helper call: this loop is diagnose's hot path
            record = loads(line)
            why = None
        except ValueError as exc:  # JSONDecodeError has msg/colno; the int-digits limit is a plain ValueError
            why = f"{exc.msg} at column {exc.colno}" if hasattr(exc, "msg") else str(exc).split(";")[0][:100]
        except RecursionError:
            why = "nested too deep"
        if why is not None:
            if not line.endswith("\n"):
                contents.add_problem(f"line {lineno}: cut off mid-write (the run was probably killed); skipped")
            else:
                contents.add_problem(f"line {lineno}: not valid JSON ({why}); skipped")
            continue
        kind = record.get("type") if isinstance(record, dict) else None
        if kind == "step":
            step = record.get("step")
            if not isinstance(step, int) or isinstance(step, bool):
                contents.add_problem(f"line {lineno}: step record without an integer 'step'; skipped")
                continue
            if contents.start is None:
                contents.add_problem(f"line {lineno}: step record before the start record; skipped")
                continue
            if contents.end is not None:
                contents.add_problem(f"line {lineno}: step record after the end record; skipped")
                continue
            if step <= last_step:  # a log concatenated with itself, or records shuffled
                contents.add_problem(
                    f"line {lineno}: step {step} after step {last_step}: repeated or out of order; skipped")
                continue
            last_step = step
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
            problem = start_record_problem(record)
            if problem is not None:
                raise RunDirError(
                    f"{path}, line {lineno}: the start record is unusable: {problem}. The log was damaged or not "
                    "written by nnprobe; it cannot be analysed without knowing its layers."
                )
            contents.start = record
        elif kind == "end":
            if contents.end is not None:
                contents.add_problem(f"line {lineno}: a second end record; skipped")
                continue
            contents.end = record
        else:
            contents.add_problem(f"line {lineno}: not a start, step or end record; skipped")
