"""The executor: plain-data tasks on local worker processes and on a real Dask LocalCluster."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from nnprobe.config import validate_config
from nnprobe.executor import (CANCELLED, CRASHED, DIED, INVALID, DaskExecutor, ExecutorError, LocalExecutor, Task,
                              make_executor, run_task)

SMALL = {
    "name": "small", "seed": 0,
    "data": {"source": "moons", "n_samples": 48, "normalize": "standardize"},
    "model": {"hidden": [5], "activation": "tanh", "output": "sigmoid", "init": "xavier_normal", "bias_init": "zeros"},
    "loss": {"kind": "bce", "from_logits": True},
    "optimizer": {"kind": "adam", "lr": 0.02},
    "training": {"steps": 25},
}

DIES_AT_IMPORT = "import os\nos._exit(3)\n"

RAISES = """\
class Act:
    def forward(self, z):
        raise RuntimeError("boom in forward")

    def derivative(self, z):
        return z * 0 + 1

act = Act()
"""

SLEEPS_FOREVER = "import time\ntime.sleep(3600)\n"


def resolved(**changes) -> dict:
    """A config as a run's config.yaml holds it (every key explicit)."""
    raw = {**SMALL, **changes}
    return validate_config(raw, source="small.yaml").model_dump()


def task(key: str, tmp_path: Path, **changes) -> Task:
    return Task(key=key, config=resolved(**changes), config_dir=str(tmp_path), out_dir=None)


def comparable(result) -> dict:
    """What must not depend on where a task ran."""
    doc = dict(result.doc)
    return {k: doc[k] for k in ("status", "steps", "final_loss", "findings", "final_accuracy", "seed", "failing")}


def test_run_task_in_process_gives_train_document_plus_judgement(tmp_path):
    out = tmp_path / "kept"
    result = run_task(Task("k", resolved(), str(tmp_path), str(out), fail_on="info"))
    assert result.ok and result.error is None and result.reason is None
    assert result.doc["run_dir"] == str(out) and (out / "steps.jsonl").is_file()
    assert result.doc["status"] == "completed" and result.doc["steps"] == 25
    assert result.doc["total_steps"] == 25 and result.doc["name"] == "small"
    assert 0.0 <= result.doc["final_accuracy"] <= 1.0


def test_run_not_kept_leaves_nothing_behind(tmp_path):
    before = set(os.listdir(tmp_path))
    result = run_task(task("k", tmp_path))
    assert result.ok and result.doc["run_dir"] is None
    assert set(os.listdir(tmp_path)) == before


def test_invalid_config_and_crash_are_results_not_exceptions(tmp_path):
    (tmp_path / "raising.py").write_text(RAISES)
    bad = Task("bad", {**resolved(), "optimizer": {"lr": -1}}, str(tmp_path), None)
    crash = task("crash", tmp_path, model={**SMALL["model"], "activation": "raising:act"})
    r_bad, r_crash = run_task(bad), run_task(crash)
    assert (r_bad.ok, r_bad.reason) == (False, INVALID) and "optimizer.lr" in r_bad.error
    assert not r_crash.ok and r_crash.reason in (CRASHED, INVALID) and "boom in forward" in r_crash.error


def test_local_results_in_input_order_and_same_as_in_process(tmp_path):
    tasks = [task(f"s{s}", tmp_path, seed=s) for s in range(4)]
    seen = []
    with make_executor("local", jobs=2) as ex:
        results = ex.run(tasks, on_result=lambda r: seen.append(r.key))
    assert [r.key for r in results] == ["s0", "s1", "s2", "s3"]
    assert sorted(seen) == ["s0", "s1", "s2", "s3"]
    assert [comparable(r) for r in results] == [comparable(run_task(t)) for t in tasks]
    assert len({r.doc["final_loss"] for r in results}) == 4  # the seeds really differ


def test_worker_that_dies_marks_only_its_task_and_the_rest_go_on(tmp_path):
    """A user activation module calling os._exit at import used to take every pending task down (BrokenProcessPool)."""
    (tmp_path / "dies.py").write_text(DIES_AT_IMPORT)
    dying = task("dies", tmp_path, model={**SMALL["model"], "activation": "dies:act"})
    tasks = [task("a", tmp_path), dying, task("b", tmp_path, seed=1), task("c", tmp_path, seed=2)]
    for jobs in (1, 2):
        with LocalExecutor(jobs) as ex:
            results = ex.run(tasks)
        by_key = {r.key: r for r in results}
        assert by_key["dies"].reason == DIED and not by_key["dies"].ok
        assert "exit status 3" in by_key["dies"].error and "worker process" in by_key["dies"].error
        assert all(by_key[k].ok and by_key[k].doc["status"] == "completed" for k in "abc"), jobs


def test_executor_is_reusable_and_closes_its_workers(tmp_path):
    ex = LocalExecutor(2)
    with ex:
        first = ex.run([task("a", tmp_path), task("b", tmp_path)])
        pids = [w.process.pid for w in ex._workers]
        second = ex.run([task("c", tmp_path)])
        assert [w.process.pid for w in ex._workers] == pids  # long-lived: no new process per task
        processes = [w.process for w in ex._workers]
    assert all(r.ok for r in first + second)
    assert not any(p.is_alive() for p in processes)


def test_interrupt_cancels_what_has_not_started_and_stops_stuck_tasks(tmp_path):
    """Ctrl-C with a task stuck in user code used to never return; queued tasks used to start anyway."""
    (tmp_path / "stuck.py").write_text(SLEEPS_FOREVER)
    stuck = task("stuck", tmp_path, model={**SMALL["model"], "activation": "stuck:act"})
    tasks = [stuck] + [task(f"q{i}", tmp_path, seed=i) for i in range(3)]
    ex = LocalExecutor(1)
    ex.grace_s = 0.5
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    with ex:
        timer.start()
        try:
            results = ex.run(tasks)
        finally:
            timer.cancel()
        processes = [w.process for w in ex._workers]
    assert ex.interrupted == "SIGINT"
    assert [r.reason for r in results] == [CANCELLED] * 4
    assert "while it ran" in results[0].error and "before it started" in results[1].error
    assert not any(p.is_alive() for p in processes)


def test_workers_that_cannot_start_are_one_clear_error_not_a_dead_worker_per_task():
    """From a program read on stdin, spawned workers cannot re-import the main module and die at start; each task
    used to start (and lose) a worker of its own, and every task was reported as killed."""
    import subprocess
    import sys

    program = ("from nnprobe.executor import ExecutorError, LocalExecutor, Task\n"
               "try:\n"
               "    with LocalExecutor(2) as ex:\n"
               "        ex.run([Task(str(i), {}, '.', None) for i in range(6)])\n"
               "except ExecutorError as exc:\n"
               "    print('ERROR', exc)\n")
    proc = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("ERROR the local worker processes cannot start (exit status 1)"), proc
    assert proc.stderr.count("FileNotFoundError") <= 2  # the two workers that tried, not one per task


def test_unknown_executor_kind_and_missing_scheduler_are_errors(monkeypatch):
    with pytest.raises(ExecutorError, match="expected one of local, dask"):
        make_executor("spark")
    monkeypatch.delenv("NNPROBE_DASK_SCHEDULER", raising=False)
    with pytest.raises(ExecutorError, match="NNPROBE_DASK_SCHEDULER"):
        make_executor("dask")


# ---------------------------------------------------------------- Dask

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c:
        yield c


def test_dask_gives_the_same_results_as_local_workers(cluster, tmp_path):
    tasks = [task(f"s{s}", tmp_path, seed=s) for s in range(3)]
    with make_executor("dask", scheduler=cluster.scheduler_address) as ex:
        on_dask = ex.run(tasks)
    with make_executor("local", jobs=2) as ex:
        local = ex.run(tasks)
    assert [r.key for r in on_dask] == ["s0", "s1", "s2"]
    assert [comparable(r) for r in on_dask] == [comparable(r) for r in local]


def test_dask_scheduler_from_environment(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("NNPROBE_DASK_SCHEDULER", cluster.scheduler_address)
    with make_executor("dask") as ex:
        (result,) = ex.run([task("env", tmp_path)])
    assert result.ok


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ExecutorError, match="cannot reach the Dask scheduler"):
        with DaskExecutor("tcp://127.0.0.1:9", connect_timeout=1.0):
            pass


def test_the_same_map_through_local_workers_and_dask_gives_identical_cells(cluster, tmp_path):
    from nnprobe.grid import parse_grids
    from nnprobe.stability import plan_map, run_map

    config = Path(__file__).resolve().parent.parent / "configs" / "relu-regression.yaml"
    axes = parse_grids(["optimizer.lr=1e-5:1:3log", "data.normalize=none,standardize"])
    plan = plan_map(config, axes, seeds=2, steps=40, out=None)
    local = run_map(plan, executor="local", jobs=2).to_json()
    on_dask = run_map(plan, executor="dask", scheduler=cluster.scheduler_address).to_json()
    assert on_dask == local
    assert {c["class"] for c in local["cells"]} >= {"diverged"}


def test_check_on_dask_keeps_its_verdicts_and_run_directories(cluster, tmp_path):
    import yaml

    from nnprobe.check import run_check

    for name, lr in (("a", 0.02), ("b", 0.05)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**SMALL, "name": name,
                                                                "optimizer": {"kind": "adam", "lr": lr}}))
    report = run_check([tmp_path], out_root=tmp_path / "runs", executor="dask", scheduler=cluster.scheduler_address)
    assert [o.verdict for o in report.outcomes] == ["pass", "pass"] and report.exit_status == 0
    assert all(Path(o.run_dir).is_absolute() and (Path(o.run_dir) / "steps.jsonl").is_file() for o in report.outcomes)
    assert all(o.junit.startswith("<testsuite") for o in report.outcomes)


def test_check_with_an_unreachable_scheduler_is_exit_2(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from nnprobe.cli import cli

    monkeypatch.setattr(DaskExecutor, "connect_timeout", 1.0)
    (tmp_path / "a.yaml").write_text("data: {source: moons}\n")
    result = CliRunner().invoke(cli, ["check", str(tmp_path), "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"],
                                catch_exceptions=False)
    assert result.exit_code == 2 and "cannot reach the Dask scheduler" in result.stderr
