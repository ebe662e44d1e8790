"""Behaviour unchanged: every shipped config trains to the same steps.jsonl, byte for byte, at REV and here.

    python -m bench.same_logs REV [--keep] [--jobs N]

REV (a commit, branch or tag) is exported with `git archive` into a temporary directory and its
optional C kernel built there; the working tree is used as it is. Every config under configs/,
tests/cases/ and examples/user_activations/ (the working tree's copies, so both sides read the same
inputs) is trained by both trees, on both statistics paths: the default (the C kernel where it is
built) and NNPROBE_NUMPY_STATS=1. Exit status 0 when every pair of logs is identical, 1 otherwise.
REV's logs are kept between invocations (keyed by the commit) so that a second comparison only
trains the working tree.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIRS = ("configs", "tests/cases", "examples/user_activations")
PATHS = {"default": {}, "numpy": {"NNPROBE_NUMPY_STATS": "1"}}


def shipped_configs() -> list[Path]:
    return sorted(p for d in CONFIG_DIRS for p in (ROOT / d).glob("*.yaml"))


def commit_of(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def export(commit: str, dest: Path) -> Path:
    """REV's files in dest/tree, its kernel built in place (once: a marker says it is done)."""
    tree = dest / "tree"
    if (tree / ".built").exists():
        return tree
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, check=True,
                             capture_output=True).stdout
    tar_path = dest / "tree.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tree)
    tar_path.unlink()
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True,
                   capture_output=True)
    (tree / ".built").write_text(commit)
    return tree


def train(tree: Path, config: Path, out: Path, env_extra: dict) -> tuple[Path, str]:
    """Train `config` with the nnprobe in `tree`: the run's steps.jsonl, and what the command said when
    it made none (a config that nnprobe refuses, such as a user activation with a wrong derivative)."""
    log, said = out / "steps.jsonl", out.with_suffix(".refused")
    if log.exists() or said.exists():
        return log, said.read_text() if said.exists() else ""
    env = {k: v for k, v in os.environ.items() if k != "NNPROBE_NUMPY_STATS"}
    env.update(PYTHONPATH=str(tree), **env_extra)
    code = "import sys; from nnprobe.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, "train", str(config), "--out", str(out), "--fail-on",
                           "never", "--quiet"], cwd=config.parent, env=env, capture_output=True, text=True)
    if log.exists():
        return log, ""
    out.parent.mkdir(parents=True, exist_ok=True)
    said.write_text(f"exit {done.returncode}: {done.stderr.strip()}")
    return log, said.read_text()


def key_of(config: Path) -> str:
    rel = config.relative_to(ROOT).as_posix()
    return rel.replace("/", "_").removesuffix(".yaml") + "-" + hashlib.sha1(config.read_bytes()).hexdigest()[:8]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.same_logs", description=__doc__.split("\n")[0])
    parser.add_argument("rev", help="the commit to compare the working tree with")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once (default 2)")
    args = parser.parse_args(argv)

    commit = commit_of(args.rev)
    cache = Path(tempfile.gettempdir()) / f"nnprobe-same-logs-{commit[:12]}"
    old_tree = export(commit, cache)
    here = Path(tempfile.mkdtemp(prefix="nnprobe-same-logs-here-"))
    jobs = []
    for config in shipped_configs():
        for path, env in PATHS.items():
            name = f"{key_of(config)}-{path}"
            jobs.append((config, path, (old_tree, config, cache / "runs" / name, env),
                         (ROOT, config, here / name, env)))

    def run(job):
        config, path, old, new = job
        return config, path, train(*old), train(*new)

    failures = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for config, path, (old_log, old_said), (new_log, new_said) in pool.map(run, jobs):
            rel = config.relative_to(ROOT).as_posix()
            if not old_log.exists() and not new_log.exists() and old_said == new_said:
                verdict = f"refused alike ({old_said.split(':')[0]}, the same message)"
            elif not old_log.exists() or not new_log.exists():
                verdict = "no log (" + ("REV" if not old_log.exists() else "working tree") + " did not train it)"
                failures += 1
            else:
                a, b = old_log.read_bytes(), new_log.read_bytes()
                if a == b:
                    verdict = f"identical ({len(a.splitlines())} records)"
                else:
                    failures += 1
                    old_lines, new_lines = a.splitlines(), b.splitlines()
                    first = next((i for i, (x, y) in enumerate(zip(old_lines, new_lines)) if x != y),
                                 min(len(old_lines), len(new_lines)))
                    verdict = f"DIFFERENT from line {first + 1} ({len(old_lines)} vs {len(new_lines)} records)"
            print(f"{rel:48} {path:8} {verdict}", flush=True)
    print(f"{len(jobs) - failures} of {len(jobs)} logs identical to {args.rev} ({commit[:10]})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
