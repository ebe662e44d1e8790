"""nnprobe: train a NumPy MLP from YAML, probe every layer at every step, explain what went wrong."""

__version__ = "0.1.0"

# Public names that need the whole stack load on first use: `import nnprobe` stays fast, and the CLI
# never pays for them.
_LAZY = {
    "Recorder": "nnprobe.train.recorder",
    "RecorderError": "nnprobe.errors",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nnprobe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
