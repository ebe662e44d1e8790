"""A patch: config changes by dotted key (`{"optimizer.lr": 0.01}`), applied to a config as a plain dict."""

from __future__ import annotations

import copy
from typing import Any, Iterable

from nnprobe.errors import ConfigError
from nnprobe.findings import yaml_scalar

Patch = dict[str, Any]


def get_dotted(config: dict, key: str, default: Any = None) -> Any:
    """config["optimizer"]["lr"] for "optimizer.lr", or `default` when a part of the path is missing."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def apply_patch(config: dict, patch: Patch) -> dict:
    """A copy of `config` with every key of `patch` set; missing mappings on the way are created."""
    out = copy.deepcopy(config)
    for key, value in patch.items():
        *parents, leaf = key.split(".")
        node = out
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parents[: i + 1])
                raise ConfigError(f"patch {key}: {prefix!r} is {child!r}, not a mapping, so it has no key "
                                  f"{key.split('.')[i + 1]!r}.")
            node = child
        node[leaf] = copy.deepcopy(value)
    return out


def changes_anything(config: dict, patch: Patch) -> bool:
    """Whether applying the patch changes the config (a patch that sets what is already there is no repair)."""
    missing = object()
    return any(get_dotted(config, key, missing) != value for key, value in patch.items())


def combine(patches: Iterable[Patch]) -> Patch:
    """The patches applied one after the other, as one patch (a later value for a key wins)."""
    out: Patch = {}
    for patch in patches:
        for key, value in patch.items():
            out.pop(key, None)  # a key set again moves to where it was last set
            out[key] = value
    return out


def describe(patch: Patch) -> str:
    """'data.normalize: standardize, optimizer.lr: 0.01' (the YAML each value is written as)."""
    return ", ".join(f"{key}: {yaml_scalar(value)}" for key, value in patch.items()) or "(no change)"


def patch_key(patch: Patch) -> tuple:
    """A hashable identity of a patch, the same whatever order its keys were given in."""
    return tuple(sorted((key, repr(value)) for key, value in patch.items()))


__all__ = ["Patch", "apply_patch", "changes_anything", "combine", "describe", "get_dotted", "patch_key"]
