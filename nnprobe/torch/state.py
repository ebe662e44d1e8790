"""What the probe holds of one step while it runs: the tensors its hooks saw, in computation order,
and what each non-finite check would name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from nnprobe.torch import host, stats

#: the keys of a `nonfinite` origin; hooks keep it as a tuple and make the dict only when one is named
WHERE = ("pass", "tensor", "layer", "module")


class Check:
    """One tensor of the step's non-finite check, in computation order, and what it would name.

    On CPU the check runs in the hook (`finite`), or comes from statistics that count NaN and inf
    (a full step's z), or from the check of the output of the Linear it feeds (`decided_by`: finite
    if that is); elsewhere `tensor` is checked at the end of the step, with every other tensor, by
    one fused reduction.
    """

    __slots__ = ("where", "tensor", "finite", "decided_by")

    def __init__(self, where: tuple, tensor: torch.Tensor, finite: Optional[bool] = None) -> None:
        self.where = where
        self.tensor = tensor
        self.finite = finite
        self.decided_by: Optional[Check] = None

    def resolved(self) -> bool:
        """Whether the tensor is finite, reading it only if nothing else has said so."""
        if self.finite is None:
            by = self.decided_by
            self.finite = True if by is not None and by.resolved() else host.finite(self.tensor)
        return self.finite


@dataclass(slots=True)
class StepState:
    index: int
    full: bool
    host: bool  # the model's parameters are on the CPU: checks and statistics on NumPy views (host.py)
    forward: list[Check] = field(default_factory=list)
    backward: list[tuple[tuple, torch.Tensor]] = field(default_factory=list)
    z: dict[str, torch.Tensor] = field(default_factory=dict)
    a: dict[str, torch.Tensor] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # layers in execution order
    follows: dict[str, str] = field(default_factory=dict)  # activation module path -> its layer
    pending: Optional[str] = None  # the last layer whose activation output is not known yet
    last_output: Optional[torch.Tensor] = None
    last_layer: Optional[str] = None
    unchecked: Optional[Check] = None  # on the host: a Linear's input, decided by its output's check
    first_input: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None
    outputs: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None
    grads: Optional[dict[str, tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]] = None
    optimizer: Any = None
    z_version: dict[str, int] = field(default_factory=dict)  # z's version counter in its hook
    # a full step's statistics in the log's per-tensor schema, per layer
    entries: dict[str, dict] = field(default_factory=dict)
    loss_in: Optional[dict] = None
    accuracy: Optional[float] = None
    # on the host: every parameter gradient's sum of squares, by id(parameter); the deferred z of a full step
    grad_sq: dict[int, float] = field(default_factory=dict)
    z_later: dict[str, torch.Tensor] = field(default_factory=dict)
    z_check: dict[str, Check] = field(default_factory=dict)  # a full step's z checks, decided by z's statistics
    dead: dict[str, int] = field(default_factory=dict)
    # on a device: the norms and parts queued for the step's one transfer
    grad_norms: dict[int, torch.Tensor] = field(default_factory=dict)  # id(parameter) -> its gradient's norm
    all_grad_norms: list[torch.Tensor] = field(default_factory=list)  # every parameter's, for grad_norm
    w_before: dict[str, torch.Tensor] = field(default_factory=dict)
    batch: Optional[stats.Batch] = None
    forward_parts: dict[tuple[str, str], list[torch.Tensor]] = field(default_factory=dict)
