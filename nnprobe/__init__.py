"""nnprobe: train a NumPy MLP from YAML, probe every layer at every step, explain what went wrong."""

__version__ = "0.1.0"
