"""`check` under faults: a worker that dies, Ctrl-C and SIGTERM, a shadowing multiprocessing.py in the working directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnprobe.cli import cli

GOOD = """\
name: {name}
seed: {seed}
data: {{source: moons, n_samples: 40, normalize: standardize}}
model: {{hidden: [4], activation: tanh, output: sigmoid, init: xavier_normal, bias_init: zeros}}
loss: {{kind: bce, from_logits: true}}
optimizer: {{kind: adam, lr: 0.01}}
training: {{steps: 15}}
"""

USER = GOOD.replace("activation: tanh", "activation: \"{module}:act\"")

SCRIPT = Path(sys.executable).parent / "nnprobe"
needs_script = pytest.mark.skipif(not SCRIPT.is_file(), reason="the nnprobe console script is not installed")


def good(d: Path, name: str, seed: int = 0) -> Path:
    path = d / f"{name}.yaml"
    path.write_text(GOOD.format(name=name, seed=seed))
    return path


def with_module(d: Path, name: str, module_text: str) -> Path:
    (d / f"{name.replace('-', '_')}_mod.py").write_text(module_text)
    path = d / f"{name}.yaml"
    path.write_text(USER.format(name=name, seed=0, module=f"{name.replace('-', '_')}_mod"))
    return path


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_worker_dying_at_import_does_not_take_the_other_configs_down(tmp_path, jobs):
    """One config whose user activation module called os._exit(3) at import broke the process pool: every pending
    config was reported as an error (BrokenProcessPool), one that had completed on disk among them."""
    d = tmp_path / "configs"
    d.mkdir()
    good(d, "a-good")
    with_module(d, "b-dies", "import os\nos._exit(3)\n")
    good(d, "c-good", seed=1)
    result = CliRunner().invoke(cli, ["check", str(d), "--jobs", jobs, "--out-root", str(tmp_path / "runs"),
                                      "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    rows = {Path(c["config"]).stem: c for c in json.loads(result.stdout)["configs"]}
    assert rows["a-good"]["verdict"] == "pass" and rows["c-good"]["verdict"] == "pass"
    assert rows["a-good"]["status"] == "completed" and Path(rows["c-good"]["run_dir"]).is_dir()
    assert rows["b-dies"]["verdict"] == "error"
    assert "worker process running it died (exit status 3)" in rows["b-dies"]["message"]


def _start_check(tmp_path: Path, extra_env=None) -> tuple[subprocess.Popen, Path]:
    """`nnprobe check` on a config stuck in user code (its module sleeps at import) and three queued ones."""
    d = tmp_path / "configs"
    d.mkdir()
    pid_file = tmp_path / "stuck.pid"
    with_module(d, "a-stuck", f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                              "time.sleep(600)\n")
    for i in range(3):
        good(d, f"q{i}", seed=i)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen([str(SCRIPT), "check", str(d), "--jobs", "1", "--out-root", str(tmp_path / "runs")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **(extra_env or {}))
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the stuck config never started: {proc.communicate()}")
        time.sleep(0.05)
    return proc, pid_file


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@needs_script
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_check_stops_cleanly_with_a_summary_and_leaves_no_worker(tmp_path, sig):
    """Ctrl-C with a config stuck in user code never exited and let queued configs start; SIGTERM killed the parent
    without a summary and left the workers training."""
    proc, pid_file = _start_check(tmp_path)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("check did not stop within 30 s of the signal")
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert f"check interrupted ({sig.name})" in err
    assert "4 config(s)" in out and "ERROR" in out  # the summary table was printed
    assert "q0" in out and "before it started" in out  # the queued configs were cancelled, not run
    assert not any((tmp_path / "runs").glob("q*"))
    worker = int(pid_file.read_text())
    for _ in range(50):
        if _gone(worker):
            break
        time.sleep(0.1)
    assert _gone(worker), "the worker outlived check"


@needs_script
@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH, which keeps the working directory off the "
                    "workers' import path, is Python 3.11+")
def test_check_ignores_a_multiprocessing_py_in_the_working_directory(tmp_path):
    """A multiprocessing.py in the current directory was imported by the spawned workers, running its code."""
    marker = tmp_path / "shadow-ran"
    (tmp_path / "multiprocessing.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(9)\n")
    d = tmp_path / "configs"
    d.mkdir()
    good(d, "a")
    good(d, "b", seed=1)
    proc = subprocess.run([str(SCRIPT), "check", str(d), "--jobs", "2", "--out-root", str(tmp_path / "runs"),
                           "--format", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [c["verdict"] for c in json.loads(proc.stdout)["configs"]] == ["pass", "pass"]
    assert not marker.exists()
