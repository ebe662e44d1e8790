"""nnprobe.observers: the digest and the detectors fed in batches reach exactly the state they reach
record by record, and the stop_on detectors still fire at the record that triggers them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from nnprobe.config import load_config
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.diagnose.observers import BATCH, RecordObservers
from nnprobe.train.runlog import LogContents, iter_records
from nnprobe.train.run import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _records(name: str, tmp_path: Path):
    config = load_config(CONFIGS / f"{name}.yaml")
    result = train(config, out_dir=tmp_path / name, progress=None)
    contents = LogContents()
    records = list(iter_records(tmp_path / name / "steps.jsonl", contents))
    return config, contents.start, records, contents.end, result


def _digest_state(digest: Digest) -> str:
    envelopes = {name: [asdict(b) for b in getattr(digest, name).buckets()]
                 for name in ("loss", "grad_norm", "accuracy", "val_loss", "val_accuracy")}
    layers = [asdict(s) for s in digest.layer_summaries()]
    return json.dumps({"envelopes": envelopes, "layers": layers, "n": digest.n_records, "full": digest.n_full,
                       "first_nonfinite": digest.first_nonfinite, "max_grad_norm": digest.max_grad_norm},
                      default=str, sort_keys=True)


@pytest.mark.parametrize("name", ["relu-accuracy", "nan-cost"])
@pytest.mark.parametrize("stop_codes", [set(), {"nonfinite"}, {"dead-relu", "nonfinite"}])
def test_batches_give_the_state_records_one_by_one_give(tmp_path, name, stop_codes):
    config, start, records, end, _ = _records(name, tmp_path)
    assert len(records) > BATCH + 1 and len(records) % BATCH  # whole batches and a partial one
    ref_suite, ref_digest = DetectorSuite(config, start), Digest(start)
    ref_fired: list[tuple[int, str]] = []
    for i, record in enumerate(records):
        ref_digest.observe(record)
        ref_fired += [(i, code) for code in ref_suite.observe(record) if code in stop_codes]
    suite, digest = DetectorSuite(config, start), Digest(start)
    observers = RecordObservers(suite, digest, stop_codes)
    fired = [(i, code) for i, record in enumerate(records) for code in observers.observe(record)]
    observers.flush()
    assert fired == ref_fired
    ref_digest.finish(end)
    digest.finish(end)
    assert _digest_state(digest) == _digest_state(ref_digest)
    got = [f.to_dict() for f in suite.finish(end)]
    want = [f.to_dict() for f in ref_suite.finish(end)]
    assert json.dumps(got, default=str, sort_keys=True) == json.dumps(want, default=str, sort_keys=True)
    assert want  # both configs have findings to compare


def test_train_stops_at_the_step_the_stop_on_detector_fires(tmp_path):
    _, _, records, end, result = _records("nan-cost", tmp_path)
    assert result.status == "diverged" and result.stopped_by == "nonfinite"
    # the last record written is the first one with a non-finite origin: nothing was held back past it
    assert records[-1]["nonfinite"] is not None
    assert all(r["nonfinite"] is None for r in records[:-1])
    assert end["steps"] == len(records)
