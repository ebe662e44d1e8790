"""nnprobe's benchmark suite: `python -m bench` (or `python bench/run.py`) from the repository root.

Every comparison is a ratio of two things timed side by side in one process, in alternating
blocks, reduced with medians: absolute times on a shared 2-core machine drift by tens of
percent between minutes, ratios measured this way do not. No test asserts a time.
"""
