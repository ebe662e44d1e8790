"""Instructions per step under valgrind's callgrind: the probe cost without the machine's noise.

On a shared 2-core machine the same step's time moves by 30 % from minute to minute, which
hides a change of a few percent. callgrind counts the instructions a process executes, the
same count however busy the machine is, so two versions (or the parts of one step) can be
compared exactly. It counts user-space instructions only (a write's time in the kernel is
not in it) and an instruction is not a fixed time (a GEMM's run faster than the
interpreter's), so this complements the timed bench for the Python-bound small networks; it
does not replace it.

    python -m bench.instructions          # needs valgrind; ~3 min

Each figure is (instructions of a run of N + 1000 steps - those of a run of N) / 1000, so the
start-up (imports, data, first steps) cancels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python bench/instructions.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
WARM, COUNTED = 100, 1000
# what each variant leaves out of the probed step (StepLoop.one), to attribute its instructions
VARIANTS = {
    "off": "probes off: the loss-only record, written and observed",
    "on": "probes on: the whole probed step",
    "trainer": "probes on, Trainer.step only (no log line, no observers)",
    "no-observers": "probes on, without the digest and the detectors",
}


def _child(network: int, variant: str, steps: int) -> None:
    """The measured process: one StepLoop (bench/steps.py), `steps` steps of the variant."""
    from bench.steps import NETWORKS, StepLoop, network_config

    loop = StepLoop(network_config(NETWORKS[network], probes=variant != "off"), Path(tempfile.mkdtemp()))
    batches, trainer, writer = loop.batches, loop.trainer, loop.writer
    for number in range(steps):
        if variant == "trainer":
            trainer.step(number, next(batches))
        elif variant == "no-observers":
            writer.write(trainer.step(number, next(batches)))
        else:
            loop.one()
    loop.close()


def _instructions(network: int, variant: str, steps: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                        "-m", "bench.instructions", "--child", str(network), variant, str(steps)],
                       cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        for line in out.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no instruction total")


def per_step(network: int, variant: str) -> float:
    return (_instructions(network, variant, WARM + COUNTED) - _instructions(network, variant, WARM)) / COUNTED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("NETWORK", "VARIANT", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--networks", default="0",
                        help="indices into bench.steps.NETWORKS, comma-separated (default: 0, the 1-3-1; 1, W=64, takes ~10 min)")
    args = parser.parse_args(argv)
    if args.child:
        network, variant, steps = args.child
        _child(int(network), variant, int(steps))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not installed: nothing to count", file=sys.stderr)
        return 0
    from bench.steps import NETWORKS

    print("Instructions per step (callgrind, user space, OPENBLAS_NUM_THREADS=1):")
    print(f"{'network':16s} {'variant':14s} {'instructions':>14s} {'x off':>7s}")
    for index in (int(i) for i in args.networks.split(",")):
        counts = {variant: per_step(index, variant) for variant in VARIANTS}
        for variant, count in counts.items():
            print(f"{NETWORKS[index].name:16s} {variant:14s} {count:14,.0f} {count / counts['off']:7.2f}")
        on, trainer, no_obs = counts["on"], counts["trainer"], counts["no-observers"]
        print(f"  probed step: Trainer.step {trainer:,.0f}, log line {no_obs - trainer:,.0f}, "
              f"digest + detectors {on - no_obs:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
