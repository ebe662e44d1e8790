"""nnprobe.runlog: strict JSON lines, exact round-trips of every float64 (non-finite included), and
reading damaged logs: cut-off last line, garbage, no start record, a newer schema."""

from __future__ import annotations

import json
import math
import struct

import pytest

from nnprobe.train import runlog
from nnprobe.errors import RunDirError
from nnprobe.train.runlog import SCHEMA_VERSION, LogContents, LogWriter, dumps, iter_records, loads


@pytest.fixture(params=["orjson", "stdlib"])
def encoder(request, monkeypatch):
    """Every writing test runs on both encoders: orjson, and the stdlib one it falls back to."""
    if request.param == "stdlib":
        monkeypatch.setattr(runlog, "orjson", None)
    else:
        pytest.importorskip("orjson")
    return request.param


def strict(line: str):
    """Parse as RFC 8259 JSON: a bare NaN / Infinity token is an error."""

    def refuse(token):
        raise ValueError(f"bare {token} in the log")

    return json.loads(line, parse_constant=refuse)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


FLOATS = [0.1 + 0.2, 1e-320, 5e-324, -0.0, 2.0**-1074, 1.7976931348623157e308, -123456.789e-300,
          1 / 3, 4.35, 1e16, 0.0]


@pytest.mark.parametrize("value", FLOATS, ids=[repr(v) for v in FLOATS])
def test_finite_floats_round_trip_bit_for_bit(value, encoder):
    line = dumps({"type": "step", "loss": value, "nested": [{"x": value}]})
    back = loads(line)
    assert bits(back["loss"]) == bits(value)
    assert bits(back["nested"][0]["x"]) == bits(value)
    strict(line)


def test_non_finite_values_round_trip_and_every_line_is_strict_json(encoder):
    record = {"type": "step", "step": 3, "loss": math.nan, "grad_norm": math.inf,
              "layers": [{"name": "dense1", "z": {"min": -math.inf, "max": math.inf, "mean": math.nan}}],
              "pair": (math.nan, 1.5), "nonfinite": None}
    line = dumps(record)
    assert "\n" not in line
    parsed = strict(line)  # no bare NaN / Infinity
    assert parsed["loss"] == "NaN" and parsed["grad_norm"] == "Infinity"
    assert parsed["layers"][0]["z"]["min"] == "-Infinity"
    back = loads(line)
    assert math.isnan(back["loss"])
    assert back["grad_norm"] == math.inf
    z = back["layers"][0]["z"]
    assert z["min"] == -math.inf and z["max"] == math.inf and math.isnan(z["mean"])
    assert math.isnan(back["pair"][0]) and back["pair"][1] == 1.5
    assert back["nonfinite"] is None and back["step"] == 3


def test_numpy_scalars_encode_like_floats(encoder):
    np = pytest.importorskip("numpy")
    line = dumps({"a": np.float64("nan"), "b": np.float64(0.1)})
    strict(line)
    back = loads(line)
    assert math.isnan(back["a"]) and back["b"] == 0.1


def test_healthy_records_are_compact_and_untouched(encoder):
    record = {"type": "step", "step": 0, "full": False, "loss": 0.5, "name": "Infinity and beyond"}
    line = dumps(record)
    assert line == '{"type":"step","step":0,"full":false,"loss":0.5,"name":"Infinity and beyond"}'
    assert loads(line) == record


def test_random_float64_bit_patterns_round_trip_through_the_stdlib_parser(encoder):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(7)
    values = rng.integers(0, 2**64, size=4000, dtype=np.uint64).view(np.float64)
    values = [float(v) for v in values[np.isfinite(values)]]
    values += [float(v) for v in rng.standard_normal(1000).astype(np.float32)]  # float32 statistics
    line = dumps({"type": "step", "values": values})
    back = json.loads(line)["values"]  # diagnose reads with the stdlib parser
    assert [bits(v) for v in back] == [bits(v) for v in values]


NONE_ONLY = {"nonfinite": None, "loss_in": None, "sat_frac": None}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["top", "nested", "list"])
def test_a_non_finite_float_is_never_written_as_null(bad, where, encoder):
    """orjson writes NaN as null: beside None values (under the keys that hold one on every healthy step,
    and under others), a non-finite float must still come out as its string."""
    record = {"type": "step", **NONE_ONLY, "grad_norm": None, "loss": 1.0,
              "layers": [{"name": "dense1", "z": {"sat_frac": None, "mean": 0.5}, "update_ratio": None}],
              "pair": [1.0, 2.0]}
    if where == "top":
        record["loss"] = bad
    elif where == "nested":
        record["layers"][0]["z"]["mean"] = bad
    else:
        record["pair"][1] = bad
    line = dumps(record)
    assert line.count("null") == 6  # the six None values, nothing else
    strict(line)
    back = loads(line)
    got = {"top": back["loss"], "nested": back["layers"][0]["z"]["mean"], "list": back["pair"][1]}[where]
    assert bits(got) == bits(bad) or (math.isnan(bad) and math.isnan(got))
    assert back["nonfinite"] is None and back["grad_norm"] is None and back["layers"][0]["update_ratio"] is None


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
@pytest.mark.parametrize("key", ["nonfinite", "loss_in", "grad_norm", "sat_frac"])
def test_a_non_finite_float_under_a_key_that_usually_holds_none_is_not_taken_for_one(bad, key, encoder):
    """The writer skips its walk when the line's nulls are as many as the Nones under these keys: a float
    there must not make the count come out even."""
    record = {"type": "step", "nonfinite": None, "loss_in": None, "grad_norm": None,
              "layers": [{"name": "dense1", "z": {"sat_frac": None}}, {"name": "dense2", "z": {"sat_frac": None}}]}
    if key == "sat_frac":
        record["layers"][1]["z"]["sat_frac"] = bad
    else:
        record[key] = bad
    back = loads(dumps(record))
    got = back["layers"][1]["z"]["sat_frac"] if key == "sat_frac" else back[key]
    assert bits(got) == bits(bad) or (math.isnan(bad) and math.isnan(got))
    record["layers"][0]["name"] = "null"  # the word in a name only adds to the count: the walk decides
    back = loads(dumps(record))
    got = back["layers"][1]["z"]["sat_frac"] if key == "sat_frac" else back[key]
    assert back["layers"][0]["name"] == "null"
    assert bits(got) == bits(bad) or (math.isnan(bad) and math.isnan(got))


@pytest.mark.parametrize("nones", [NONE_ONLY, {**NONE_ONLY, "grad_norm": None}, {"val_loss": None}])
def test_none_values_stay_null_beside_finite_floats(nones, encoder):
    record = {"type": "step", "loss": 0.25, "layers": [{"z": {"mean": -1.5, "sat_frac": None}}], **nones}
    line = dumps(record)
    assert line.count("null") == len(nones) + 1
    assert loads(line) == record


# ---------------------------------------------------------------- writing


def _lines(path) -> list[dict]:
    return [strict(line) for line in path.read_text(encoding="utf-8").splitlines()]


def healthy(step: int) -> dict:
    return {"type": "step", "step": step, "loss": 0.5, "nonfinite": None}


def test_writer_holds_healthy_steps_and_writes_each_batch_whole(tmp_path, encoder, monkeypatch):
    path = tmp_path / "steps.jsonl"
    writes = []
    writer = LogWriter(path, hold=3)
    inner = writer._fh.write
    monkeypatch.setattr(writer._fh, "write", lambda data: writes.append(bytes(data)) or inner(data))
    writer.write({"type": "start", "schema": SCHEMA_VERSION})
    assert path.read_text(encoding="utf-8") == '{"type":"start","schema":1}\n'  # not a step: out at once
    writer.write(healthy(0))
    writer.write(healthy(1))
    assert len(_lines(path)) == 1  # held
    writer.write(healthy(2))
    assert [r.get("step") for r in _lines(path)] == [None, 0, 1, 2]
    assert len(writes) == 2 and writes[1].count(b"\n") == 3  # the batch in one write()
    writer.write(healthy(3))
    writer.write({"type": "step", "step": 4, "loss": math.nan, "nonfinite": {"pass": "forward"}})
    # a non-finite step goes out at once, with what was held before it, in order
    assert [r.get("step") for r in _lines(path)] == [None, 0, 1, 2, 3, 4]
    assert math.isnan(loads(path.read_text(encoding="utf-8").splitlines()[-1])["loss"])
    writer.write(healthy(5))
    writer.close()
    writer.close()  # idempotent
    assert [r.get("step") for r in _lines(path)] == [None, 0, 1, 2, 3, 4, 5]
    with pytest.raises(FileExistsError):
        LogWriter(path)


def test_writer_sends_what_it_holds_once_the_oldest_has_waited_hold_seconds(tmp_path, monkeypatch):
    from nnprobe.train import runlog

    now = [100.0]
    monkeypatch.setattr(runlog.time, "monotonic", lambda: now[0])
    path = tmp_path / "steps.jsonl"
    writer = LogWriter(path, hold=100, hold_seconds=2.0)
    writer.write(healthy(0))
    now[0] += 1.5
    writer.write(healthy(1))
    assert path.read_text(encoding="utf-8") == ""
    now[0] += 0.5  # the first has now waited 2 s
    writer.write(healthy(2))
    assert [r["step"] for r in _lines(path)] == [0, 1, 2]
    now[0] += 1.9  # the clock restarts with the next held record
    writer.write(healthy(3))
    now[0] += 1.9
    writer.write(healthy(4))
    assert len(_lines(path)) == 3
    writer.close()
    assert [r["step"] for r in _lines(path)] == [0, 1, 2, 3, 4]


def test_a_record_that_cannot_be_encoded_leaves_the_ones_held_before_it_on_disk(tmp_path):
    path = tmp_path / "steps.jsonl"
    writer = LogWriter(path, hold=10)
    writer.write(healthy(0))
    writer.write(healthy(1))
    writer.write({**healthy(2), "bad": object()})
    with pytest.raises(TypeError):
        writer.close()
    assert [r["step"] for r in _lines(path)] == [0, 1]
    assert writer._fh.closed


# ---------------------------------------------------------------- reading


def write_log(tmp_path, lines: list[str], tail: str = "") -> object:
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(line + "\n" for line in lines) + tail, encoding="utf-8")
    return path


START = dumps({"type": "start", "schema": SCHEMA_VERSION, "name": "t"})


def step(i: int, loss: float = 1.0) -> str:
    return dumps({"type": "step", "step": i, "full": True, "loss": loss})


def read(path) -> tuple[list[dict], LogContents]:
    contents = LogContents()
    return list(iter_records(path, contents)), contents


def test_a_whole_log_reads_cleanly(tmp_path):
    end = dumps({"type": "end", "status": "completed", "steps": 3, "final_loss": None, "stopped_by": None})
    records, contents = read(write_log(tmp_path, [START, step(0), step(1, math.inf), step(2, math.nan), end]))
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[1]["loss"] == math.inf and math.isnan(records[2]["loss"])
    assert contents.start["name"] == "t" and contents.end["status"] == "completed"
    assert contents.problems == [] and contents.n_steps == 3
    assert contents.last_step["step"] == 2


def test_truncated_last_line_is_skipped_and_reported(tmp_path):
    cut = step(2)[:17]
    records, contents = read(write_log(tmp_path, [START, step(0), step(1)], tail=cut))
    assert [r["step"] for r in records] == [0, 1]
    assert contents.end is None
    assert len(contents.problems) == 1
    assert contents.problems[0].startswith("line 4: cut off mid-write")


def test_garbage_line_in_the_middle_is_skipped_and_reading_goes_on(tmp_path):
    records, contents = read(write_log(tmp_path, [START, step(0), "{not json", step(1), "[1, 2]", "", step(2)]))
    assert [r["step"] for r in records] == [0, 1, 2]
    assert len(contents.problems) == 2
    assert contents.problems[0].startswith("line 3: not valid JSON")
    assert contents.problems[1].startswith("line 5: not a start, step or end record")


def test_step_without_integer_step_is_skipped(tmp_path):
    records, contents = read(write_log(tmp_path, [START, dumps({"type": "step", "step": "x"}), step(1)]))
    assert [r["step"] for r in records] == [1]
    assert contents.problems == ["line 2: step record without an integer 'step'; skipped"]


def test_missing_start_record(tmp_path):
    records, contents = read(write_log(tmp_path, [step(0), step(1)]))
    assert records == []
    assert contents.start is None
    assert contents.problems[0] == "line 1: step record before the start record; skipped"
    assert len(contents.problems) == 2


def test_second_start_record_is_reported(tmp_path):
    records, contents = read(write_log(tmp_path, [START, step(0), START, step(1)]))
    assert len(records) == 2
    assert contents.problems == ["line 3: a second start record; skipped"]


def test_newer_schema_is_refused(tmp_path):
    future = dumps({"type": "start", "schema": SCHEMA_VERSION + 1})
    with pytest.raises(RunDirError, match=rf"schema {SCHEMA_VERSION + 1} is newer .*upgrade nnprobe"):
        read(write_log(tmp_path, [future, step(0)]))


def test_missing_log_is_a_run_dir_error(tmp_path):
    with pytest.raises(RunDirError, match="no step log here"):
        read(tmp_path / "steps.jsonl")


def test_invalid_utf8_does_not_stop_the_reader(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_bytes((START + "\n").encode() + b'{"type": "st\xffep"}\n' + (step(0) + "\n").encode())
    records, contents = read(path)
    assert [r["step"] for r in records] == [0]
    assert len(contents.problems) == 1


def test_problem_list_stays_bounded_on_a_log_of_garbage(tmp_path):
    """A long corrupt log used to grow one problem line per bad line, unbounded."""
    path = tmp_path / "steps.jsonl"
    path.write_text("garbage\n" * 5000)
    contents = LogContents()
    assert list(iter_records(path, contents)) == []
    assert contents.n_problems == 5000
    assert len(contents.problems) <= 51
    assert "4950 more" in contents.problems[-1]
