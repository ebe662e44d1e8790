"""A patch written into the original YAML text: comments, key order and layout kept, only values changed.

PyYAML's composer gives every node its position in the text, so an existing value is replaced
where it stands and a missing key is added after the last entry of its mapping, at that
mapping's indentation (block style) or before its closing brace (flow style). The result is
parsed back and compared with the patched config; anything this cannot edit faithfully
(anchors, a scalar where a mapping should be, ...) falls back to a plain re-dump of the
patched config, which loses the comments, and says so.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from nnprobe.findings import yaml_scalar
from nnprobe.repair.patches import Patch, apply_patch


class _CannotEdit(Exception):
    """The text cannot be edited in place for this key."""


@dataclass(frozen=True)
class PatchedText:
    text: str
    kept_layout: bool  # False: re-dumped, comments lost


def patch_yaml_text(text: str, patch: Patch) -> PatchedText:
    """The config text with the patch applied, as close to the original as the text allows."""
    original = yaml.safe_load(text) or {}
    expected = apply_patch(original, patch)
    edited: Optional[str] = text
    try:
        for key, value in patch.items():
            edited = _set(edited, key.split("."), value)
        if yaml.safe_load(edited) == expected:
            return PatchedText(edited, True)
    except (_CannotEdit, yaml.YAMLError):
        pass
    return PatchedText(yaml.safe_dump(expected, sort_keys=False, allow_unicode=True), False)


def unified_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=before_name, tofile=after_name))


def _set(text: str, parts: list[str], value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise _CannotEdit("only scalar values are edited in place")
    root = yaml.compose(text)
    if root is None:
        return _nested(parts, value, 0) + "\n"
    node = root
    for i, part in enumerate(parts):
        if not isinstance(node, yaml.MappingNode):
            raise _CannotEdit(f"{'.'.join(parts[:i])} is not a mapping")
        child = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        if child is None:
            return _insert(text, node, parts[i:], value)
        node = child
    if not isinstance(node, yaml.ScalarNode):
        raise _CannotEdit(f"{'.'.join(parts)} holds a {node.id}")
    return text[:node.start_mark.index] + yaml_scalar(value) + text[node.end_mark.index:]


def _insert(text: str, mapping: yaml.MappingNode, parts: list[str], value: Any) -> str:
    """Add `parts: value` (nested as needed) as the last entry of `mapping`."""
    if mapping.flow_style:
        close = mapping.end_mark.index - 1
        if text[close] != "}":
            raise _CannotEdit("flow mapping without its closing brace")
        entry = _flow(parts, value)
        sep = ", " if mapping.value else ""
        return text[:close].rstrip() + sep + entry + text[close:]
    if not mapping.value:
        raise _CannotEdit("empty block mapping")
    indent = mapping.value[0][0].start_mark.column
    end = _last_index(mapping)
    line_end = text.find("\n", end)
    addition = "\n" + _nested(parts, value, indent)
    if line_end == -1:
        return text + addition + "\n"
    return text[:line_end] + addition + text[line_end:]


def _last_index(node: yaml.Node) -> int:
    """Where the last scalar of a block node's subtree ends (a block node's own end is the next token)."""
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        return _last_index(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        return _last_index(node.value[-1])
    return node.end_mark.index


def _nested(parts: list[str], value: Any, indent: int) -> str:
    lines = [" " * (indent + 2 * i) + f"{part}:" for i, part in enumerate(parts)]
    lines[-1] += f" {yaml_scalar(value)}"
    return "\n".join(lines)


def _flow(parts: list[str], value: Any) -> str:
    inner = yaml_scalar(value)
    for part in reversed(parts[1:]):
        inner = f"{{{part}: {inner}}}"
    return f"{parts[0]}: {inner}"


__all__ = ["PatchedText", "patch_yaml_text", "unified_diff"]
