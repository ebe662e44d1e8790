"""`nnprobe fix` on the four seed cases against their shipped `-fixed` twins: python -m bench.fix_cases

Not a speed measurement: it checks the issue's bar. For each seed case, `fix` must find a config
with nothing at or above warning whose final loss (accuracy, for classification) is at least as
good as the twin's over the same seeds, within the twin's seed spread; on the healthy configs it
must change nothing. Prints one line per config and exits 1 when a bar is missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nnprobe.executor import make_executor
from nnprobe.repair.fixer import fix_config
from nnprobe.repair.verdicts import Spread, compare

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CASES = ["relu-regression", "nan-cost", "relu-accuracy", "relu-output-ce"]
HEALTHY = ["quickstart"] + [f"{c}-fixed" for c in CASES]


def _spreads(runs):
    loss = Spread.of(r.final_loss for r in runs)
    acc = Spread.of(r.final_accuracy for r in runs) if all(r.final_accuracy is not None for r in runs) else None
    return loss, acc


def main() -> int:
    missed = 0
    with make_executor("local") as executor:
        for case in CASES:
            fixed = fix_config(CONFIGS / f"{case}.yaml", run_tasks=executor.run).result
            twin = fix_config(CONFIGS / f"{case}-fixed.yaml", run_tasks=executor.run).result
            loss, acc = _spreads(fixed.final)
            t_loss, t_acc = _spreads(twin.control)
            words = [compare(t_loss, loss, log=True)] + ([compare(t_acc, acc, higher_is_better=True)] if acc else [])
            ok = fixed.ok and all(w in ("ok", "better") for w in words)
            missed += not ok
            chain = "; ".join(f"{a.finding}: {', '.join(f'{k}={v}' for k, v in a.candidate.patch.items())}"
                              for a in fixed.chain)
            print(f"{'ok  ' if ok else 'MISS'} {case}: loss {loss} vs twin {t_loss}"
                  + (f", accuracy {acc} vs twin {t_acc}" if acc else "")
                  + f" ({'/'.join(words)}); {fixed.runs_used} runs; chain: {chain}")
        for name in HEALTHY:
            result = fix_config(CONFIGS / f"{name}.yaml", run_tasks=executor.run).result
            ok = result.ok and not result.attempts and not result.patch
            missed += not ok
            print(f"{'ok  ' if ok else 'MISS'} {name}: {len(result.attempts)} attempts, patch {result.patch}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
