"""`diagnose` throughput against the bare parse of the same log, where its time goes, and its peak memory.

Long logs are made from a real `nnprobe train` run whose step records are repeated with
their step numbers rewritten (training 100k steps of a 784-64x3-10 network, or a million
of the 1-3-1, would take the bench minutes). Throughput is compared side by side with
`json.loads` on every line of the same file (the same JSON library `diagnose` uses), in
alternating rounds; memory is the peak RSS of a separate process running `load_run`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from bench.steps import Network, network_config
from nnprobe.diagnose.load import load_run
from nnprobe.diagnose.detectors import DetectorSuite
from nnprobe.diagnose.digest import Digest
from nnprobe.train.runlog import LogContents, dumps, iter_records
from nnprobe.train.run import train


def real_run(net: Network, steps: int, out: Path) -> Path:
    """A genuine run directory: config.yaml, meta.json, steps.jsonl with `steps` full records."""
    config = network_config(net, probes=True, steps=steps)
    config.stop_on = []  # the bench wants every step, whatever the detectors think of this synthetic task
    train(config, out_dir=out, progress=None)
    return out


def tiled_log(src: Path, dst: Path, n_records: int) -> Path:
    """dst: src's config and start record, then n_records step records cycling through src's, then its end record."""
    dst.mkdir(parents=True, exist_ok=False)
    (dst / "config.yaml").write_bytes((src / "config.yaml").read_bytes())
    lines = (src / "steps.jsonl").read_text(encoding="utf-8").splitlines()
    start, end = json.loads(lines[0]), json.loads(lines[-1])
    templates = []
    for line in lines[1:-1]:
        step = json.loads(line)["step"]
        head, sep, tail = line.partition(f'"step":{step},')
        assert sep, "a step record without its step number where expected"
        templates.append((head + '"step":', "," + tail + "\n"))
    start["total_steps"] = n_records
    end["steps"] = n_records
    with open(dst / "steps.jsonl", "w", encoding="utf-8") as fh:
        fh.write(dumps(start) + "\n")
        chunk = []
        k = len(templates)
        for i in range(n_records):
            head, tail = templates[i % k]
            chunk.append(f"{head}{i}{tail}")
            if len(chunk) == 10000:
                fh.write("".join(chunk))
                chunk = []
        fh.write("".join(chunk))
        fh.write(dumps(end) + "\n")
    return dst


def bare_parse(path: Path) -> int:
    """The floor: json.loads on every line, nothing else."""
    n = 0
    loads = json.loads
    with open(path, "r", encoding="utf-8") as fh:
        for line in fh:
            loads(line)
            n += 1
    return n


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(run_dir: Path, rounds: int, log: Callable[[str], None] = lambda s: None) -> dict:
    """diagnose (load_run) and the bare parse of its steps.jsonl, alternating; records per second and their ratio."""
    path = run_dir / "steps.jsonl"
    n_lines = bare_parse(path)  # also warms the page cache
    n_records = n_lines - 2
    ratios, t_bare, t_diag = [], [], []
    for r in range(rounds):
        pair = [("bare", lambda: bare_parse(path)), ("diag", lambda: load_run(run_dir))]
        if r % 2:
            pair.reverse()
        got = {name: _timed(fn) for name, fn in pair}
        t_bare.append(got["bare"])
        t_diag.append(got["diag"])
        ratios.append(got["bare"] / got["diag"])
        log(f"  diagnose round {r + 1}/{rounds}: {n_records / got['diag']:,.0f} records/s, "
            f"bare parse {n_lines / got['bare']:,.0f} lines/s, ratio {ratios[-1]:.3f}")
    return {"records": n_records, "file_mb": round(path.stat().st_size / 2**20, 1), "rounds": rounds,
            "bare_records_per_s": round(n_lines / statistics.median(t_bare)),
            "diagnose_records_per_s": round(n_records / statistics.median(t_diag)),
            "ratio": round(statistics.median(ratios), 4),
            "ratio_range": [round(min(ratios), 4), round(max(ratios), 4)]}


def diagnose_breakdown(run_dir: Path, sample_size: int = 2000) -> dict:
    """Milliseconds per 1000 records for each stage of diagnose: read+parse+checks, the digest, each detector.

    The read is timed over the whole log without keeping records (as load_run does); the
    digest and each detector are then fed a sample of records on their own.
    """
    from nnprobe.diagnose.load import load_run_config

    path = run_dir / "steps.jsonl"
    config = load_run_config(run_dir)
    contents = LogContents()
    t0 = time.perf_counter()
    for _ in iter_records(path, contents):
        pass
    t_read = time.perf_counter() - t0
    n = contents.n_steps
    sample = []
    for record in iter_records(path, LogContents()):
        sample.append(record)
        if len(sample) == sample_size:
            break
    k = len(sample) or 1
    digest = Digest(contents.start)
    parts = {"read + json.loads + checks (runlog.iter_records)": t_read / n,
             "digest.observe": _timed(lambda: [digest.observe(r) for r in sample]) / k}
    suite = DetectorSuite(config, contents.start)
    for det in suite.detectors:
        parts[f"detector {det.code}"] = _timed(lambda det=det: [det.observe(r) for r in sample]) / k
    bare = _timed(lambda: bare_parse(path)) / (n + 2)
    return {"ms_per_1000_records": {name: round(v * 1e6, 2) for name, v in sorted(parts.items(), key=lambda kv: -kv[1])},
            "total_ms_per_1000_records": round(sum(parts.values()) * 1e6, 2),
            "bare_json_loads_ms_per_1000_records": round(bare * 1e6, 2)}


_RSS_SCRIPT = (
    "import resource, sys\n"
    "from nnprobe.analysis import load_run\n"
    "result = load_run(sys.argv[1])\n"
    "hwm = -1\n"
    "try:\n"
    "    with open('/proc/self/status') as fh:\n"
    "        hwm = next(int(l.split()[1]) for l in fh if l.startswith('VmHWM:'))\n"
    "except (OSError, StopIteration):\n"
    "    pass\n"
    "print(result.steps, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm)\n"
)


def peak_rss_mb(run_dir: Path) -> dict:
    """Steps read, peak RSS (MiB) and seconds of `load_run` in a fresh process.

    Linux's getrusage(RUSAGE_SELF).ru_maxrss survives exec: a child started by a process as
    big as this bench reports the bench's own peak. VmHWM (/proc/self/status) is the peak of
    the child's own address space, so it is the number used where it exists.
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(run_dir)], capture_output=True, text=True,
                         env=env, check=True)
    seconds = time.perf_counter() - t0
    steps, maxrss, hwm = (int(v) for v in out.stdout.split())
    maxrss_mb = maxrss / 1024 if sys.platform != "darwin" else maxrss / 2**20  # KiB on Linux, bytes on macOS
    peak = hwm / 1024 if hwm > 0 else maxrss_mb
    return {"records": steps, "peak_rss_mb": round(peak, 1), "ru_maxrss_mb": round(maxrss_mb, 1),
            "seconds": round(seconds, 1)}


def memory(run_small: Path, run_long: Path) -> dict:
    short, long = peak_rss_mb(run_small), peak_rss_mb(run_long)
    return {"short_records": short["records"], "short_peak_rss_mb": short["peak_rss_mb"],
            "long_records": long["records"], "long_peak_rss_mb": long["peak_rss_mb"],
            "long_ru_maxrss_mb": long["ru_maxrss_mb"], "long_seconds": long["seconds"],
            "growth_mb": round(long["peak_rss_mb"] - short["peak_rss_mb"], 1)}


