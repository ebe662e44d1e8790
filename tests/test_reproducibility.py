"""What is reproducible across what (docs/robustness.md): the step log, for one config, seed, nnprobe,
NumPy/BLAS build and BLAS thread count, whichever command trained it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from nnprobe.train.rundir import BLAS_THREAD_VARIABLES

# wide enough that OpenBLAS splits the products between threads (a 1-3-1 network never does)
WIDE = {"name": "wide", "data": {"source": "blobs", "n_samples": 256, "n_features": 32, "normalize": "standardize"},
        "loss": {"kind": "cross_entropy", "from_logits": True},
        "model": {"output": "softmax", "hidden": [128, 128], "init": "he_normal", "bias_init": "zeros"},
        "optimizer": {"kind": "sgd", "lr": 0.05}, "training": {"steps": 12}}
SMALL = {"name": "small", "data": {"source": "xor", "n_samples": 16}, "loss": {"kind": "bce"},
         "model": {"output": "sigmoid", "hidden": [4]}, "training": {"steps": 12}}


def nnprobe(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES} | env
    return subprocess.run([sys.executable, "-m", "nnprobe", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=300)


def configs(tmp_path: Path) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir()
    for doc in (WIDE, SMALL):
        (folder / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc))
    return folder


def test_check_and_train_write_identical_logs_at_the_same_blas_thread_count(tmp_path):
    """`check --jobs 2` gives each worker one BLAS thread; `train` with one BLAS thread writes the very same log."""
    folder = configs(tmp_path)
    one = {name: "1" for name in BLAS_THREAD_VARIABLES}
    assert nnprobe("check", str(folder), "--jobs", "2", "--out-root", "checked", env={}, cwd=tmp_path).returncode == 0
    for name in ("wide", "small"):
        trained = nnprobe("train", str(folder / f"{name}.yaml"), "--out", f"trained-{name}", "-q", env=one,
                          cwd=tmp_path)
        assert trained.returncode == 0, trained.stderr
        (checked,) = (tmp_path / "checked").glob(f"{name}-*")
        assert (checked / "steps.jsonl").read_bytes() == (tmp_path / f"trained-{name}" / "steps.jsonl").read_bytes()


def test_meta_records_the_blas_thread_settings_of_the_run(tmp_path):
    """A log that differs from another in its last bits is explained by meta.json: the thread settings it ran with."""
    folder = configs(tmp_path)
    nnprobe("train", str(folder / "small.yaml"), "--out", "default", "-q", env={}, cwd=tmp_path)
    nnprobe("train", str(folder / "small.yaml"), "--out", "two", "-q", env={"OPENBLAS_NUM_THREADS": "2"}, cwd=tmp_path)
    nnprobe("check", str(folder), "--jobs", "2", "--out-root", "checked", env={}, cwd=tmp_path)
    default = json.loads((tmp_path / "default" / "meta.json").read_text())["blas_threads"]
    two = json.loads((tmp_path / "two" / "meta.json").read_text())["blas_threads"]
    (checked,) = (tmp_path / "checked").glob("small-*")
    in_check = json.loads((checked / "meta.json").read_text())["blas_threads"]
    assert default == {name: None for name in BLAS_THREAD_VARIABLES}
    assert two["OPENBLAS_NUM_THREADS"] == "2"
    assert in_check == {name: "1" for name in BLAS_THREAD_VARIABLES}
