"""The one executor behind `check`, `fix` and `map`: plain-data tasks in, plain-data results out.

A `Task` is a resolved config (a dict) and where its run goes; a `TaskResult` is the document
`nnprobe train --format json` prints plus what the callers judge by. Both cross process and
machine boundaries unchanged, so the same tasks run on long-lived local worker processes
(`LocalExecutor`, the default) or on a Dask cluster (`DaskExecutor`).

Promises, whatever the tasks do: results come back in input order; a task whose worker dies
is marked `ok=False` with the reason and the others go on (the worker is replaced); Ctrl-C or
SIGTERM cancels what has not started, lets running tasks stop at their next step boundary
(for a few seconds at most), and returns what finished; no worker outlives the parent.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import tempfile
import threading
import traceback
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from nnprobe.errors import NnprobeError

# Why a task has no result; None when it has one.
INVALID = "invalid"      # the config, its data or its user activation is unusable (a clear message says why)
CRASHED = "crashed"      # training raised: a bug in nnprobe or in user code it ran
DIED = "died"            # the worker process running it died (os._exit, a signal, a crash in native code)
CANCELLED = "cancelled"  # Ctrl-C / SIGTERM: not started, or stopped at a step boundary

DASK_SCHEDULER_VARIABLE = "NNPROBE_DASK_SCHEDULER"
EXECUTORS = ("local", "dask")
READY = "ready"  # a local worker's first message: it started and waits for tasks


class ExecutorError(NnprobeError):
    """The executor cannot start: an unknown kind, Dask not installed, an unreachable scheduler."""


@dataclass(frozen=True)
class Task:
    """One training: a resolved config (what a run's config.yaml holds) and where its run directory goes.

    Relative `data.path` and user activation modules resolve against `config_dir`. `out_dir` is
    the run directory to create; None with `runs_root` set gets a fresh directory under it; None
    with neither is a run that is not kept.
    """

    key: str
    config: dict
    config_dir: str
    out_dir: Optional[str]
    fail_on: str = "error"
    runs_root: Optional[str] = None
    source: Optional[str] = None  # the config file it came from, for messages and the run's metadata
    ci_reports: bool = False  # also render the JUnit suite and GitHub annotations (they read the run directory)


@dataclass
class TaskResult:
    """What one task came to. `doc` is train's JSON document plus `name`, `seed`, `total_steps`,
    `failing` (a finding at or above the task's fail_on, or an unmet expect:), `final_accuracy`
    (classification), and with `ci_reports` `junit` and `annotations`."""

    key: str
    ok: bool
    doc: Optional[dict]
    error: Optional[str]
    reason: Optional[str] = None  # INVALID | CRASHED | DIED | CANCELLED when not ok


# ---------------------------------------------------------------- one task (runs inside a worker)


def _crash_message(label: str, exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" ({Path(where[0].filename).name}, line {where[0].lineno})" if where else ""
    return (f"{label}: training stopped with {type(exc).__name__}: {exc}{at}. This is a bug in nnprobe (or in user "
            "code it ran); `nnprobe train` on this config shows the traceback.")


def _finite_or_none(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _result_document(result, config, task: Task) -> dict:
    from nnprobe.findings import at_or_above

    doc = result.to_json()
    accuracy = getattr(result.digest, "accuracy", None) if config.task == "classification" else None
    doc.update(
        name=config.name, seed=config.seed, total_steps=result.start.get("total_steps"),
        failing=task.fail_on != "never" and (bool(at_or_above(result.findings, task.fail_on))
                                             or any(not c.ok for c in result.checks)),
        final_accuracy=_finite_or_none(accuracy.last_value) if accuracy is not None else None,
    )
    if task.ci_reports:
        import xml.etree.ElementTree as ET

        from nnprobe.reports.junit import github_annotations, junit_suite

        label = task.source or task.key
        doc["junit"] = ET.tostring(junit_suite(result, fail_on=task.fail_on, name=f"nnprobe {label}"),
                                   encoding="unicode")
        doc["annotations"] = github_annotations(result, config_file=label)
    return doc


def run_task(task: Task) -> TaskResult:
    """Validate and train one task in this process; never raises for anything the task does."""
    from nnprobe.app import train_config
    from nnprobe.config import validate_config

    label = task.source or task.key
    try:
        config = validate_config(dict(task.config), source=label, base_dir=Path(task.config_dir),
                                 default_name=Path(label).stem or "run")
        with _run_root(task) as (out_dir, runs_root):
            result = train_config(config, config_path=Path(task.source) if task.source else None,
                                  config_dir=Path(task.config_dir), out_dir=out_dir, runs_root=runs_root)
            doc = _result_document(result, config, task)
        if task.out_dir is None and task.runs_root is None:
            doc["run_dir"] = None  # the run was not kept
    except NnprobeError as exc:
        return TaskResult(task.key, False, None, str(exc), INVALID)
    except KeyboardInterrupt:
        return TaskResult(task.key, False, None, f"{label}: interrupted before training started.", CANCELLED)
    except Exception as exc:  # noqa: BLE001 - a crash is this task's result, never the executor's
        return TaskResult(task.key, False, None, _crash_message(label, exc), CRASHED)
    if doc["status"] == "interrupted":
        return TaskResult(task.key, False, doc, f"{label}: training was interrupted at step {doc['steps']}.",
                          CANCELLED)
    return TaskResult(task.key, True, doc, None)


@contextmanager
def _run_root(task: Task) -> Iterator[tuple[Optional[Path], Path]]:
    """(out_dir, runs_root) for train_config; a run that is not kept goes to a temporary directory."""
    if task.out_dir is not None or task.runs_root is not None:
        yield (Path(task.out_dir) if task.out_dir else None), Path(task.runs_root or "runs")
        return
    with tempfile.TemporaryDirectory(prefix="nnprobe-") as tmp:
        yield Path(tmp) / "run", Path(tmp)


# ---------------------------------------------------------------- local worker processes


def _exit_with_parent() -> None:
    """A worker whose parent is gone (even by SIGKILL) exits at once instead of training on."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="nnprobe-parent-watch", daemon=True).start()


def _worker_main(conn) -> None:
    """Long-lived worker: receive a task, train it in this process, send its result; None or EOF ends it."""
    # the parent decides when to stop; while training, the run's own handler turns SIGINT/SIGTERM into a clean stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    conn.send(READY)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(run_task(task))


@contextmanager
def _environment(**values: Optional[str]) -> Iterator[None]:
    """Set environment variables for the processes started inside (None: leave as is)."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is not None:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _death(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


@dataclass
class _Worker:
    process: Any
    conn: Any
    running: Optional[int] = None  # index of the task it is training


class _Interrupted(Exception):
    """Raised in the parent by SIGINT or SIGTERM while tasks run."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def _raise_interrupted(signum, frame) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def _signals_interrupt():
    """In the main thread, SIGINT and SIGTERM raise _Interrupted (SIGTERM would otherwise kill the parent
    mid-run, without a summary and leaving the workers training)."""
    from nnprobe.train.signals import catch_signals

    return catch_signals(_raise_interrupted)


class LocalExecutor:
    """Long-lived worker processes on this machine, each training its tasks in-process (spawned, so no
    threaded parent is forked; one BLAS thread each when there are several)."""

    grace_s = 3.0  # how long running tasks get to stop at a step boundary after Ctrl-C/SIGTERM
    startup_timeout_s = 120.0  # a spawned worker imports Python afresh; on a loaded machine that takes seconds

    def __init__(self, jobs: Optional[int] = None) -> None:
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.interrupted: Optional[str] = None  # "SIGINT" / "SIGTERM" once a run was cut short
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._size = 0

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe()
        from nnprobe.train.rundir import BLAS_THREAD_VARIABLES  # the set meta.json records

        one_thread = "1" if self._size > 1 else None
        # PYTHONSAFEPATH: a spawned worker must not import the current directory's multiprocessing.py (or any
        # other module shadowing the standard library) before nnprobe is loaded
        blas = {name: (os.environ.get(name) or one_thread) for name in BLAS_THREAD_VARIABLES}
        with _environment(PYTHONSAFEPATH="1", **blas):
            process = self._ctx.Process(target=_worker_main, args=(child_end,), name="nnprobe-worker", daemon=True)
            process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def _grow(self, n: int) -> None:
        self._size = max(self._size, n)
        started = [self._start_worker() for _ in range(n - len(self._workers))]  # they start up side by side
        self._workers += started
        for worker in started:
            self._await_ready(worker)

    def _replacement(self) -> _Worker:
        worker = self._start_worker()
        self._workers.append(worker)
        self._await_ready(worker)
        return worker

    def _await_ready(self, worker: _Worker) -> None:
        """A worker that dies before it is ready failed to start (no task ran in it yet): say so once, plainly,
        rather than mark every task as killed by a worker that never lived."""
        ready = wait([worker.conn, worker.process.sentinel], timeout=self.startup_timeout_s)
        try:
            if worker.conn in ready and worker.conn.recv() == READY:
                return
        except (EOFError, OSError):
            pass
        worker.process.join(1.0)
        how = _death(worker.process.exitcode) if ready else f"no answer within {self.startup_timeout_s:g} s"
        self.close()
        raise ExecutorError(
            f"the local worker processes cannot start ({how}). Python's spawn start method re-imports the main "
            "module in each worker: run nnprobe as the `nnprobe` command (or from a script or module file, with its "
            "code under `if __name__ == '__main__':`), and check that `python -c 'import nnprobe'` works."
        )

    def _retire(self, worker: _Worker) -> None:
        worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(1.0)
        self._workers.remove(worker)

    def run(self, tasks: Iterable[Task], on_result: Optional[Callable[[TaskResult], None]] = None) -> list[TaskResult]:
        """Run every task; results in input order, `on_result` called as each finishes."""
        tasks = list(tasks)
        results: list[Optional[TaskResult]] = [None] * len(tasks)
        pending = deque(range(len(tasks)))

        def finish(i: int, result: TaskResult) -> None:
            results[i] = result
            if on_result is not None:
                on_result(result)

        if tasks:
            self._grow(min(self.jobs, len(tasks)))
            try:
                with _signals_interrupt():
                    self._drive(tasks, pending, finish)
            except _Interrupted as exc:
                self.interrupted = exc.signame
                self._stop_running(tasks, finish)
        for i in range(len(tasks)):
            if results[i] is None:
                label = tasks[i].source or tasks[i].key
                finish(i, TaskResult(tasks[i].key, False, None,
                                     f"{label}: not run: interrupted ({self.interrupted}) before it started.",
                                     CANCELLED))
        return [r for r in results if r is not None]

    def _drive(self, tasks: list[Task], pending: deque, finish: Callable[[int, TaskResult], None]) -> None:
        def dispatch(worker: _Worker) -> None:
            if pending:
                worker.running = pending.popleft()
                worker.conn.send(tasks[worker.running])

        for worker in list(self._workers):
            dispatch(worker)
        while any(w.running is not None for w in self._workers):
            busy = [w for w in self._workers if w.running is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                result = self._receive(worker, tasks[worker.running])
                if result is None:
                    continue  # the sentinel fired first; the pipe will say the rest
                finish(worker.running, result)
                worker.running = None
                if result.reason == DIED:
                    self._retire(worker)
                    if not pending:
                        continue
                    worker = self._replacement()
                dispatch(worker)

    def _receive(self, worker: _Worker, task: Task) -> Optional[TaskResult]:
        """The worker's result, or a DIED result when its process is gone without one."""
        try:
            if worker.conn.poll():
                return worker.conn.recv()
        except (EOFError, OSError):
            pass
        if worker.process.is_alive():
            return None
        worker.process.join(1.0)
        label = task.source or task.key
        return TaskResult(task.key, False, None,
                          f"{label}: the worker process running it died ({_death(worker.process.exitcode)}); "
                          "the other tasks went on. Run it alone with `nnprobe train` to see why.", DIED)

    def _stop_running(self, tasks: list[Task], finish: Callable[[int, TaskResult], None]) -> None:
        """Ask running tasks to stop at their next step; keep what they return within the grace period."""
        busy = [w for w in self._workers if w.running is not None]
        for worker in busy:
            try:
                os.kill(worker.process.pid, signal.SIGINT)  # the run's own handler: finish the step, write, stop
            except OSError:
                pass
        deadline = _monotonic() + self.grace_s
        try:
            with _signals_interrupt():
                while busy and _monotonic() < deadline:
                    ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                                     timeout=max(0.0, deadline - _monotonic())))
                    for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                        result = self._receive(worker, tasks[worker.running])
                        if result is not None:
                            finish(worker.running, result)
                            worker.running = None
                            busy.remove(worker)
        except _Interrupted:
            pass  # a second Ctrl-C: stop waiting
        for worker in busy:  # stuck (in user code, in start-up): they cannot stop cleanly
            label = tasks[worker.running].source or tasks[worker.running].key
            finish(worker.running, TaskResult(tasks[worker.running].key, False, None,
                                              f"{label}: stopped: interrupted ({self.interrupted}) while it ran.",
                                              CANCELLED))
            worker.running = None
            self._retire(worker)

    def close(self) -> None:
        """Stop every worker: ask politely, then kill what does not exit within a second."""
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in list(self._workers):
            worker.process.join(1.0)
            self._retire(worker)
        self._workers = []


def _monotonic() -> float:
    import time

    return time.monotonic()


# ---------------------------------------------------------------- Dask


class DaskExecutor:
    """The same tasks on a Dask cluster (`dask.distributed`); run directories must be on a path every worker shares."""

    connect_timeout = 10.0  # seconds to reach the scheduler before giving up with a clear message

    def __init__(self, scheduler: Optional[str] = None, connect_timeout: Optional[float] = None) -> None:
        self.address = scheduler or os.environ.get(DASK_SCHEDULER_VARIABLE)
        if not self.address:
            raise ExecutorError(f"--executor dask needs a scheduler address: --scheduler tcp://HOST:8786, or set "
                                f"{DASK_SCHEDULER_VARIABLE}.")
        if connect_timeout is not None:
            self.connect_timeout = connect_timeout
        self.interrupted: Optional[str] = None
        self.client = None

    def __enter__(self) -> "DaskExecutor":
        try:
            from distributed import Client
        except ImportError:
            raise ExecutorError("--executor dask needs Dask: pip install 'nnprobe[dask]' (dask.distributed).") from None
        try:
            self.client = Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ExecutorError(
                f"--scheduler {self.address}: cannot reach the Dask scheduler within {self.connect_timeout:g} s "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}). Check the address "
                "and that `dask scheduler` runs there, or leave --executor off to use local worker processes."
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def run(self, tasks: Iterable[Task], on_result: Optional[Callable[[TaskResult], None]] = None) -> list[TaskResult]:
        from distributed import as_completed

        tasks = list(tasks)
        results: list[Optional[TaskResult]] = [None] * len(tasks)
        batch = uuid.uuid4().hex[:12]
        futures = [self.client.submit(run_task, t, key=f"nnprobe-{batch}-{i}", pure=False, retries=0)
                   for i, t in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}

        def finish(i: int, result: TaskResult) -> None:
            results[i] = result
            if on_result is not None:
                on_result(result)

        try:
            with _signals_interrupt(), self.client.as_current():
                for future in as_completed(futures):
                    i = index[future.key]
                    label = tasks[i].source or tasks[i].key
                    try:
                        finish(i, future.result())
                    except Exception as exc:  # noqa: BLE001 - the worker died (KilledWorker) or the task was lost
                        finish(i, TaskResult(tasks[i].key, False, None,
                                             f"{label}: the Dask worker running it failed ({type(exc).__name__}: "
                                             f"{exc}); the other tasks went on.", DIED))
        except _Interrupted as exc:
            self.interrupted = exc.signame
            self.client.cancel([f for f in futures if not f.done()])
        for i, t in enumerate(tasks):
            if results[i] is None:
                finish(i, TaskResult(t.key, False, None, f"{t.source or t.key}: not run: interrupted "
                                     f"({self.interrupted}).", CANCELLED))
        return [r for r in results if r is not None]


def make_executor(kind: str = "local", jobs: Optional[int] = None, scheduler: Optional[str] = None):
    """The executor for `--executor KIND`: a context manager with `run(tasks, on_result=None)`."""
    if kind == "local":
        return LocalExecutor(jobs)
    if kind == "dask":
        return DaskExecutor(scheduler)
    raise ExecutorError(f"--executor {kind!r}: expected one of {', '.join(EXECUTORS)}.")


__all__ = ["CANCELLED", "CRASHED", "DIED", "INVALID", "DaskExecutor", "ExecutorError", "LocalExecutor", "Task",
           "TaskResult", "make_executor", "run_task"]
