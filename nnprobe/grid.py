"""`--grid KEY=VALUES`: one axis of a stability map, a list `0.1,1,10` or a range `START:STOP:N` / `START:STOP:Nlog`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from nnprobe.errors import ConfigError

MAX_VALUES = 1000
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*:\s*(\d+)\s*(log)?\s*$")
_INTEGER = re.compile(r"^\s*[-+]?\d+\s*$")


@dataclass(frozen=True)
class Axis:
    """A config key (dotted path) and the values the map tries for it, in order."""

    key: str
    values: tuple

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "values": list(self.values)}


def _readable(x: float) -> float:
    """Six significant digits: the value shown is the value trained (1e-4:10:11log gives 0.000316228, not ...277)."""
    return float(f"{x:.6g}")


def _range(text: str, start_text: str, stop_text: str, n: int, log: bool) -> tuple:
    start, stop = float(start_text), float(stop_text)
    if not 1 <= n <= MAX_VALUES:
        raise ConfigError(f"--grid {text!r}: a range needs between 1 and {MAX_VALUES} values, got N = {n}.")
    if log and (start <= 0 or stop <= 0):
        raise ConfigError(f"--grid {text!r}: a log range needs START and STOP above 0 (got {start_text} and "
                          f"{stop_text}); write a linear range START:STOP:N instead.")
    if n == 1:
        raw = [start]
    elif log:
        lo, hi = math.log10(start), math.log10(stop)
        raw = [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    else:
        raw = [start + (stop - start) * i / (n - 1) for i in range(n)]
    integral = all(abs(x - round(x)) < 1e-9 * max(1.0, abs(x)) for x in raw)
    if _INTEGER.match(start_text) and _INTEGER.match(stop_text) and integral:
        return tuple(int(round(x)) for x in raw)  # batch sizes, widths: 16:256:5log is 16, 32, ..., 256
    return tuple(_readable(x) for x in raw)


def _list(text: str, values_text: str) -> tuple:
    values = []
    for item in values_text.split(","):
        if not item.strip():
            raise ConfigError(f"--grid {text!r}: an empty value in the list; write values separated by commas, "
                              "e.g. optimizer.lr=0.01,0.1,1.")
        try:
            value = yaml.safe_load(item)
        except yaml.YAMLError:
            raise ConfigError(f"--grid {text!r}: the value {item.strip()!r} is not valid YAML.") from None
        if isinstance(value, (dict, list)):
            raise ConfigError(f"--grid {text!r}: the value {item.strip()!r} is a {type(value).__name__}; each grid "
                              "value is a single number, name or boolean.")
        values.append(value)
    return tuple(values)


def parse_grid(text: str) -> Axis:
    """One --grid argument as an Axis; a malformed one raises ConfigError saying how to write it."""
    key, sep, values_text = text.partition("=")
    key = key.strip()
    if not sep or not key or not values_text.strip():
        raise ConfigError(f"--grid {text!r}: expected KEY=VALUES, a list (optimizer.lr=0.01,0.1,1) or a range "
                          "(optimizer.lr=1e-4:10:11log, data.noise=0:1:5).")
    if any(not part for part in key.split(".")):
        raise ConfigError(f"--grid {text!r}: the key must be a dotted config path such as optimizer.lr.")
    match = _RANGE.match(values_text)
    values = _range(text, match[1], match[2], int(match[3]), bool(match[4])) if match else _list(text, values_text)
    if len(values) > MAX_VALUES:
        raise ConfigError(f"--grid {text!r}: {len(values)} values; at most {MAX_VALUES} per axis.")
    return Axis(key, values)


def parse_grids(texts: tuple[str, ...] | list[str]) -> list[Axis]:
    """One or two axes with distinct keys."""
    if not 1 <= len(texts) <= 2:
        raise ConfigError(f"map needs one or two --grid KEY=VALUES axes, got {len(texts)}.")
    axes = [parse_grid(t) for t in texts]
    if len(axes) == 2 and axes[0].key == axes[1].key:
        raise ConfigError(f"--grid: the two axes are both {axes[0].key!r}; give two different keys.")
    return axes


__all__ = ["Axis", "MAX_VALUES", "parse_grid", "parse_grids"]
