"""`python -m bench --vs REV`: another commit's step benchmark and this tree's, side by side in one session.

REV is exported (bench.same_logs.export: `git archive`, its C kernel built there) and each tree runs
its own `python -m bench --only steps` in a subprocess, the two alternating ROUNDS times so that
both see the same machine (load moves by tens of percent between minutes on a shared machine;
alternating spreads it over both). Each figure is the median over the rounds; the table gives both
trees and the issue's bounds. Ratios (probes on/off, NumPy/PyTorch) are what to read: absolute
times move with the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.same_logs import ROOT, commit_of, export

ROUNDS = 2
BOUNDS = {  # (what, field, network, bound): the done-when figures
    "probes_w256": ("full probes every step, W=256: on/off", "on_off_ratio", "784-256x3-10", 1.10),
    "probes_w1024": ("full probes every step, W=1024: on/off", "on_off_ratio", "784-1024x3-10", 1.05),
    "tiny_step": ("probed 1-3-1 step, us", "on_us", "1-3-1", 150.0),
    "torch_w256": ("unprobed NumPy / PyTorch CPU, W=256", "numpy_torch_ratio", "784-256x3-10", 1.0),
    "torch_w1024": ("unprobed NumPy / PyTorch CPU, W=1024", "numpy_torch_ratio", "784-1024x3-10", 1.0),
}


def _run(tree: Path, out: Path, quick: bool, numpy_stats: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NNPROBE_NUMPY_STATS"}
    env["PYTHONPATH"] = str(tree)
    if numpy_stats:
        env["NNPROBE_NUMPY_STATS"] = "1"
    cmd = [sys.executable, "-m", "bench", "--only", "steps", "--out", str(out)] + (["--quick"] if quick else [])
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text(encoding="utf-8"))


def _median(runs: list[dict], network: str, field: str):
    values = [r[field] for run in runs for r in run.get("steps", []) if r["network"] == network
              and r.get(field) is not None]
    return statistics.median(values) if values else None


def main(rev: str, quick: bool, numpy_stats: bool, say) -> None:
    commit = commit_of(rev)
    old_tree = export(commit, Path(tempfile.gettempdir()) / f"nnprobe-same-logs-{commit[:12]}")
    work = Path(tempfile.mkdtemp(prefix="nnprobe-bench-vs-"))
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(ROUNDS):
        for side, tree in (("old", old_tree), ("new", ROOT)) if i % 2 == 0 else (("new", ROOT), ("old", old_tree)):
            say(f"round {i + 1}/{ROUNDS}: {rev if side == 'old' else 'working tree'} ...")
            runs[side].append(_run(tree, work / f"{side}-{i}.json", quick, numpy_stats))
    networks = [r["network"] for r in runs["new"][0]["steps"]]
    print(f"Step time, {rev} ({commit[:10]}) against the working tree, medians of {ROUNDS} alternating runs "
          f"({'NumPy passes' if numpy_stats else 'default statistics path'}{', --quick' if quick else ''}):")
    head = f"{'network':<15}" + "".join(f"{h:>12}" for h in ("off us", "on us", "on/off", "np/torch")) * 2
    print(f"{'':<15}{'-- ' + rev + ' --':^48}{'-- working tree --':^48}")
    print(head)
    for net in networks:
        cells = []
        for side in ("old", "new"):
            for field, spec in (("off_us", ".1f"), ("on_us", ".1f"), ("on_off_ratio", ".3f"),
                                ("numpy_torch_ratio", ".3f")):
                v = _median(runs[side], net, field)
                cells.append("n/a" if v is None else format(v, spec))
        print(f"{net:<15}" + "".join(f"{c:>12}" for c in cells))
    print("\nThe issue's bounds:")
    for text, field, net, bound in BOUNDS.values():
        old, new = _median(runs["old"], net, field), _median(runs["new"], net, field)
        verdict = "not measured" if new is None else ("met" if new <= bound else f"NOT met by {new / bound - 1:.0%}")
        print(f"  {text} <= {bound:g}: {rev} {'n/a' if old is None else format(old, '.3f')}, "
              f"working tree {'n/a' if new is None else format(new, '.3f')}  [{verdict}]")
